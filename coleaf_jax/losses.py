"""The losses of CoLeaF (SPEC §4.2, §5, §6), one pure function per term.

Conventions:
* ``B`` videos, ``T`` segments, ``C`` classes, ``D`` width.
* Every loss takes ``video_mask (B,)`` (1 = a real video, 0 = batch padding)
  and, where segments matter, ``mask (B, T)``.
* Means over the batch are taken with ``batch_mean``: the local sum divided by
  the *global* count (``psum`` over ``axis_name`` under ``pmap``), so that the
  data-parallel step, whose gradients are ``psum``-ed, equals the
  single-device step exactly.
* All pseudo-labels and teacher tensors are wrapped in ``stop_gradient`` here,
  inside the loss, so no caller can forget it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS_PROB = 1e-7  # BCE clamps probabilities to [EPS, 1 - EPS] (SPEC §4.2)
sg = jax.lax.stop_gradient


def _global_sum(x: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
    return jax.lax.psum(x, axis_name) if axis_name else x


def batch_mean(per_item: jnp.ndarray, weights: jnp.ndarray, axis_name: str | None = None) -> jnp.ndarray:
    """``Σ w·x / Σ w`` with the denominator summed over all devices of ``axis_name``.

    Args:
      per_item: any shape; weights: same shape (or broadcastable), 0/1.
    """
    weights = jnp.broadcast_to(weights, per_item.shape).astype(per_item.dtype)
    count = _global_sum(weights.sum(), axis_name)
    return (per_item * weights).sum() / jnp.maximum(count, 1.0)


def _video_weights(video_mask: jnp.ndarray, ndim: int) -> jnp.ndarray:
    return video_mask.reshape(video_mask.shape + (1,) * (ndim - 1)).astype(jnp.float32)


# ---------------------------------------------------------------------------
# Weak (video-level) losses


def binary_cross_entropy(p, y):
    """Elementwise BCE with ``p`` clamped to ``[1e-7, 1 - 1e-7]``."""
    p = jnp.clip(p, EPS_PROB, 1.0 - EPS_PROB)
    return -(y * jnp.log(p) + (1.0 - y) * jnp.log(1.0 - p))


def bce(p, y, video_mask, axis_name=None):
    """Mean BCE over videos and classes (SPEC §4.2). ``p, y: (B, C)``."""
    return batch_mean(binary_cross_entropy(p, y), _video_weights(video_mask, p.ndim), axis_name)


def asymmetric_loss(p, y, video_mask, gamma_pos=1.0, gamma_neg=1.0, clip=0.05):
    """The official code's asymmetric loss for the Reference (SPEC §5), summed.

    With ``p⁻ = min(1 - p + clip, 1)``:
    ``-Σ [y·log p·(1-p)^γ+ + (1-y)·log p⁻·(1-p⁻)^γ-]``; the focusing factors are
    constants (no gradient), logs clamped at 1e-8; summed over batch and
    classes (a sum is exact under ``psum``-ed gradients without a count).
    ``p, y: (B, C)``.
    """
    p_neg = jnp.minimum(1.0 - p + clip, 1.0)
    pos = y * jnp.log(jnp.maximum(p, 1e-8)) * sg((1.0 - p) ** gamma_pos)
    neg = (1.0 - y) * jnp.log(jnp.maximum(p_neg, 1e-8)) * sg((1.0 - p_neg) ** gamma_neg)
    return -((pos + neg) * _video_weights(video_mask, p.ndim)).sum()


def modality_labels(y, visual_smoothing=(0.9, 0.05)):
    """HAN's modality label smoothing: ``ȳ_a = y``, ``ȳ_v = 0.9·y + 0.05`` (SPEC §4.2)."""
    scale, shift = visual_smoothing
    return y, scale * y + shift


def han_loss(anchor_out, y, y_a, y_v, video_mask, axis_name=None):
    """HAN's backbone loss ``BCE(p, y) + BCE(p^a, ȳ_a) + BCE(p^v, ȳ_v)`` (SPEC §4.2)."""
    return (bce(anchor_out["video_prob"], y, video_mask, axis_name)
            + bce(anchor_out["video_prob_a"], y_a, video_mask, axis_name)
            + bce(anchor_out["video_prob_v"], y_v, video_mask, axis_name))


def reference_weak_loss(q, k, y_m, video_mask, class_token_weight, kind="bce", axis_name=None):
    """One modality's Reference weak loss: ``L(q^m, ȳ_m) + w·L(k^m, ȳ_m)`` (SPEC §5).

    Args:
      q: ``(B, C)`` video-level ``q^m``; k: ``(B, C)`` class-token ``k^m`` or None.
      kind: ``'bce'`` (default) or ``'asl'`` (official code).
    Returns:
      ``(video_term, class_token_term)``, the latter already weighted.
    """
    if kind == "bce":
        fn = lambda p: bce(p, y_m, video_mask, axis_name)  # noqa: E731
    elif kind == "asl":
        fn = lambda p: asymmetric_loss(p, y_m, video_mask)  # noqa: E731
    else:
        raise ValueError(f"reference loss {kind!r}: expected 'bce' or 'asl'")
    token_term = class_token_weight * fn(k) if k is not None else jnp.zeros(())
    return fn(q), token_term


# ---------------------------------------------------------------------------
# (a) Event-aware contrastive loss: the Anchor learns from the Reference


def event_aware_weights(q_a, q_v, threshold=0.5):
    """Per-video encouragement ``w^a, w^v`` from the Reference's pseudo-labels (SPEC §6a).

    ``r^m = 1[q^m >= 0.5]``; ``w^a = N_ao / max(N_ao + N_av, 1)``,
    ``w^v = N_vo / max(N_vo + N_av, 1)``.

    Args:
      q_a, q_v: ``(B, C)`` Reference video-level probabilities.
    Returns:
      ``(w_a, w_v)``, each ``(B,)`` in [0, 1], without gradient.
    """
    r_a = (sg(q_a) >= threshold).astype(jnp.float32)
    r_v = (sg(q_v) >= threshold).astype(jnp.float32)
    n_ao = (r_a * (1 - r_v)).sum(-1)
    n_vo = (r_v * (1 - r_a)).sum(-1)
    n_av = (r_a * r_v).sum(-1)
    return n_ao / jnp.maximum(n_ao + n_av, 1.0), n_vo / jnp.maximum(n_vo + n_av, 1.0)


def segment_nce(queries, keys, weights, mask, video_mask, tau=0.2, smoothing=0.1,
                form="expected", axis_name=None):
    """Smoothed segment-level InfoNCE between two token sequences of the same videos (SPEC §6a).

    ``s_{t,t'} = <û_t, ẑ_t'>/τ`` (unit-normalised), ``π = softmax_{t'}(s)`` over
    valid segments; target ``q_{t,t} = 1 - ε``, ``q_{t,t'≠t} = ε/(T_valid - 1)``.
    ``form='expected'`` (default, official): ``-w·log Σ_t' q π``;
    ``form='cross_entropy'``: ``-w·Σ_t' q·log π``. ``ε = 0`` is plain InfoNCE.
    The mean runs over valid (video, segment) pairs. Queries get no gradient.

    Args:
      queries: ``(B, T, D)`` (teacher, stop-gradient); keys: ``(B, T, D)``.
      weights: ``(B,)`` per-video weight ``w``.
      mask: ``(B, T)``; video_mask: ``(B,)``.
    """
    u = sg(queries)
    u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), 1e-12)
    z = keys / jnp.maximum(jnp.linalg.norm(keys, axis=-1, keepdims=True), 1e-12)
    logits = jnp.einsum("btd,bsd->bts", u, z) / tau
    valid = mask.astype(bool) & video_mask.astype(bool)[:, None]
    pair = valid[:, :, None] & valid[:, None, :]
    logits = jnp.where(pair, logits, -1e9)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    t_valid = valid.sum(-1).astype(jnp.float32)[:, None, None]
    eye = jnp.eye(logits.shape[1], dtype=bool)[None]
    off = jnp.where(t_valid > 1, smoothing / jnp.maximum(t_valid - 1, 1.0), 0.0)
    target = jnp.where(eye, 1.0 - jnp.where(t_valid > 1, smoothing, 0.0), off) * pair
    if form == "expected":
        per_seg = -jnp.log(jnp.maximum((target * jnp.exp(log_pi)).sum(-1), 1e-12))
    elif form == "cross_entropy":
        per_seg = -(target * jnp.where(pair, log_pi, 0.0)).sum(-1)
    else:
        raise ValueError(f"NCE form {form!r}: expected 'expected' or 'cross_entropy'")
    per_seg = sg(weights)[:, None] * per_seg
    return batch_mean(per_seg, valid.astype(jnp.float32), axis_name)


def event_aware_nce(ref_tokens, anchor_tokens, w, mask, video_mask, tau=0.2, smoothing=0.1,
                    form="expected", axis_name=None):
    """Event-aware NCE of one modality: Reference tokens as queries, Anchor tokens as keys.

    ``L^m = mean_{b,t}[-w^m_b log Σ_t' q_{t,t'} π_{t,t'}]`` (SPEC §6a); pass
    ``w = 1`` for the "standard NCE" ablation.
    """
    return segment_nce(ref_tokens, anchor_tokens, w, mask, video_mask, tau, smoothing, form, axis_name)


def pseudo_label_bce(anchor_prob, ref_prob, video_mask, threshold=0.5, axis_name=None):
    """Ablation of §6a: BCE of the Anchor's ``p^m`` on the Reference's pseudo-labels ``r^m``."""
    r = (sg(ref_prob) >= threshold).astype(jnp.float32)
    return bce(anchor_prob, r, video_mask, axis_name)


# ---------------------------------------------------------------------------
# (b) Self-modality-aware knowledge distillation: the Reference learns from the Anchor


def self_modality_kd(q_a, q_v, p_a, p_v, y_a, y_v, video_mask, threshold_a=0.5, threshold_v=0.6,
                     axis_name=None):
    """``BCE(q^a, 1[p^a >= θ_a]·ȳ_a) + BCE(q^v, 1[p^v >= θ_v]·ȳ_v)`` (SPEC §6b).

    Args:
      q_a, q_v: ``(B, C)`` Reference (student); p_a, p_v: ``(B, C)`` Anchor (teacher).
    """
    t_a = (sg(p_a) >= threshold_a).astype(jnp.float32) * y_a
    t_v = (sg(p_v) >= threshold_v).astype(jnp.float32) * y_v
    return bce(q_a, t_a, video_mask, axis_name) + bce(q_v, t_v, video_mask, axis_name)


# ---------------------------------------------------------------------------
# (c) Co-occurrence class knowledge distillation


def class_correlation(p):
    """``K(p) = p pᵀ`` per video: ``(B, C) -> (B, C, C)``."""
    return p[:, :, None] * p[:, None, :]


def confident_teacher(q, p_anchor, y, high, low):
    """The official code's teacher: ``q`` where the Reference is confident on a
    positive label (``q >= high`` or ``q <= low``), else the Anchor's own ``p``."""
    use_ref = (y > 0.5) & ((q >= high) | (q <= low))
    return jnp.where(use_ref, q, p_anchor)


def class_correlation_mse(p_anchor, teacher, video_mask, scaling="official", axis_name=None):
    """``MSE(K(p^m_Anchor), stopgrad K(teacher^m))`` for one modality (SPEC §6c).

    ``scaling='mean'``: the mean over videos and the ``C×C`` entries;
    ``scaling='official'``: the official code's sum of squared errors divided
    by ``C`` and multiplied by the (global) batch size.

    Args:
      p_anchor, teacher: ``(B, C)``.
    """
    err = (class_correlation(p_anchor) - sg(class_correlation(teacher))) ** 2
    weights = _video_weights(video_mask, 3)
    if scaling == "mean":
        return batch_mean(err, weights, axis_name)
    if scaling == "official":
        batch = _global_sum(video_mask.astype(jnp.float32).sum(), axis_name)
        return (err * weights).sum() / p_anchor.shape[-1] * batch
    raise ValueError(f"correlation scaling {scaling!r}: expected 'official' or 'mean'")
