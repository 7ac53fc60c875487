"""The losses of CoLeaF (docs/method.md §4.2, §5, §6), one pure function per term.

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
import numpy as np

EPS_PROB = 1e-7  # BCE clamps probabilities to [EPS, 1 - EPS] (docs/method.md §4.2)
sg = jax.lax.stop_gradient


def _global_sum(x: jnp.ndarray, axis_name: str | None) -> jnp.ndarray:
    return jax.lax.psum(x, axis_name) if axis_name else x


def batch_mean(
    per_item: jnp.ndarray, weights: jnp.ndarray, axis_name: str | None = None
) -> jnp.ndarray:
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
    """Mean BCE over videos and classes (docs/method.md §4.2). ``p, y: (B, C)``."""
    return batch_mean(binary_cross_entropy(p, y), _video_weights(video_mask, p.ndim), axis_name)


def asymmetric_loss(p, y, video_mask, gamma_pos=1.0, gamma_neg=1.0, clip=0.05):
    """The official code's asymmetric loss for the Reference (docs/method.md §5), summed.

    With ``p⁻ = min(1 - p + clip, 1)``, ``p_t = p·y + p⁻·(1 - y)`` and
    ``γ = γ+·y + γ-·(1 - y)``:
    ``-Σ [y·log p + (1-y)·log p⁻]·(1 - p_t)^γ`` — one focusing weight shared by
    both sides (with the soft visual targets 0.95/0.05 a per-side weight would
    move the fixed points), treated as a constant (no gradient); logs clamped
    at 1e-8; summed over batch and classes (a sum is exact under ``psum``-ed
    gradients without a count). As ``AsymmetricLoss`` of the authors'
    ``utils/eval_metrics.py``. ``p, y: (B, C)``.
    """
    p_neg = jnp.minimum(1.0 - p + clip, 1.0)
    loss = y * jnp.log(jnp.maximum(p, 1e-8)) + (1.0 - y) * jnp.log(jnp.maximum(p_neg, 1e-8))
    p_t = p * y + p_neg * (1.0 - y)
    gamma = gamma_pos * y + gamma_neg * (1.0 - y)
    return -(loss * sg((1.0 - p_t) ** gamma) * _video_weights(video_mask, p.ndim)).sum()


def modality_labels(y, visual_smoothing=(0.9, 0.05)):
    """HAN's modality label smoothing: ``ȳ_a = y``, ``ȳ_v = 0.9·y + 0.05`` (docs/method.md §4.2)."""
    scale, shift = visual_smoothing
    return y, scale * y + shift


def pseudo_modality_labels(pl_audio, pl_visual):
    """docs/method.md §9: ``ȳ_a = max_t PL_a[t]``, ``ȳ_v = max_t PL_v[t]`` (replacing the smoothed
    weak labels). ``pl_*: (B, T, C)`` with zeros on padded segments; returns ``(B, C)`` each."""
    return pl_audio.max(axis=1), pl_visual.max(axis=1)


def pseudo_label_segment_bce(
    seg, pl_audio, pl_visual, mask, video_mask, axis_name=None, logits: bool = False
):
    """docs/method.md §9's extra Anchor loss: BCE between the segment probabilities ``P[:,0]``,
    ``P[:,1]`` and the pseudo-labels, averaged over valid segments, classes and both
    modalities. ``seg: (B, T, 2, C)``, ``pl_*: (B, T, C)``, ``mask: (B, T)``.

    ``logits=True``: ``seg`` holds the segment logits and the BCE is torch's
    ``binary_cross_entropy_with_logits`` (``softplus(x) - y·x``: no clamp, exact where a
    probability saturates), VALOR's; its ``loss_valor_a + loss_valor_v`` is twice this mean
    (``loss.pseudo_label_segment_weight = 2``)."""
    target = jnp.stack([pl_audio, pl_visual], axis=2)
    weights = (mask.astype(jnp.float32) * video_mask[:, None])[:, :, None, None]
    if logits:
        per_entry = jax.nn.softplus(seg) - target * seg
    else:
        per_entry = binary_cross_entropy(seg, target)
    return batch_mean(per_entry, weights, axis_name)


def han_loss(anchor_out, y, y_a, y_v, video_mask, axis_name=None):
    """HAN's backbone loss ``BCE(p, y) + BCE(p^a, ȳ_a) + BCE(p^v, ȳ_v)`` (docs/method.md §4.2)."""
    return (
        bce(anchor_out["video_prob"], y, video_mask, axis_name)
        + bce(anchor_out["video_prob_a"], y_a, video_mask, axis_name)
        + bce(anchor_out["video_prob_v"], y_v, video_mask, axis_name)
    )


def reference_loss_fn(kind, video_mask, axis_name=None):
    """The Reference's loss ``L(p, y)`` of docs/method.md §5, used for its weak, class-token and
    KD terms alike: ``'asl'`` (the authors' asymmetric loss, summed) or ``'bce'``
    (mean BCE). ``p, y: (B, C)``; returns a function ``L(p, y) -> scalar``."""
    if kind == "bce":
        return lambda p, y: bce(p, y, video_mask, axis_name)
    if kind == "asl":
        return lambda p, y: asymmetric_loss(p, y, video_mask)
    raise ValueError(f"config.loss.reference = {kind!r}: expected 'bce' or 'asl'")


# ---------------------------------------------------------------------------
# (a) Event-aware contrastive loss: the Anchor learns from the Reference


def event_aware_weights(q_a, q_v, threshold=0.5):
    """Per-video encouragement ``w^a, w^v`` from the Reference's pseudo-labels (docs/method.md §6a).

    ``r^m = 1[q^m >= 0.5]``; ``w^a = N_ao / max(N_ao + N_av, 1)``,
    ``w^v = N_vo / max(N_vo + N_av, 1)``.

    Args:
      q_a, q_v: ``(B, C)`` Reference video-level probabilities.
    Returns:
      ``(w_a, w_v)``, each ``(B,)`` in [0, 1], without gradient.
    """
    r_a = (sg(q_a) >= threshold).astype(q_a.dtype)
    r_v = (sg(q_v) >= threshold).astype(q_a.dtype)
    n_ao = (r_a * (1 - r_v)).sum(-1)
    n_vo = (r_v * (1 - r_a)).sum(-1)
    n_av = (r_a * r_v).sum(-1)
    return n_ao / jnp.maximum(n_ao + n_av, 1.0), n_vo / jnp.maximum(n_vo + n_av, 1.0)


def segment_nce(
    queries,
    keys,
    weights,
    mask,
    video_mask,
    tau=0.2,
    smoothing=0.1,
    form="expected",
    axis_name=None,
    stop_query_gradient=True,
):
    """Smoothed segment-level InfoNCE between two token sequences of the same videos (docs/method.md §6a).

    ``s_{t,t'} = <û_t, ẑ_t'>/τ`` (unit-normalised), ``π = softmax_{t'}(s)`` over
    valid segments; target ``q_{t,t} = 1 - ε``, ``q_{t,t'≠t} = ε/(T_valid - 1)``.
    ``form='expected'`` (default, official): ``-w·log Σ_t' q π``;
    ``form='cross_entropy'``: ``-w·Σ_t' q·log π``. ``ε = 0`` is plain InfoNCE.
    The mean runs over valid (video, segment) pairs. Queries get no gradient
    unless ``stop_query_gradient=False`` (CMPAE's own audio-visual NCE).

    Args:
      queries: ``(B, T, D)`` (teacher, stop-gradient); keys: ``(B, T, D)``.
      weights: ``(B,)`` per-video weight ``w``.
      mask: ``(B, T)``; video_mask: ``(B,)``.
    """
    u = sg(queries) if stop_query_gradient else queries
    u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), 1e-12)
    z = keys / jnp.maximum(jnp.linalg.norm(keys, axis=-1, keepdims=True), 1e-12)
    logits = jnp.einsum("btd,bsd->bts", u, z) / tau
    valid = mask.astype(bool) & video_mask.astype(bool)[:, None]
    pair = valid[:, :, None] & valid[:, None, :]
    logits = jnp.where(pair, logits, -1e9)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    t_valid = valid.sum(-1).astype(logits.dtype)[:, None, None]
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


def event_aware_nce(
    ref_tokens,
    anchor_tokens,
    w,
    mask,
    video_mask,
    tau=0.2,
    smoothing=0.1,
    form="expected",
    axis_name=None,
):
    """Event-aware NCE of one modality: Reference tokens as queries, Anchor tokens as keys.

    ``L^m = mean_{b,t}[-w^m_b log Σ_t' q_{t,t'} π_{t,t'}]`` (docs/method.md §6a); pass
    ``w = 1`` for the "standard NCE" ablation.
    """
    return segment_nce(
        ref_tokens, anchor_tokens, w, mask, video_mask, tau, smoothing, form, axis_name
    )


def pseudo_label_bce(anchor_prob, ref_prob, video_mask, threshold=0.5, axis_name=None):
    """Ablation of §6a: BCE of the Anchor's ``p^m`` on the Reference's pseudo-labels ``r^m``."""
    r = (sg(ref_prob) >= threshold).astype(jnp.float32)
    return bce(anchor_prob, r, video_mask, axis_name)


# ---------------------------------------------------------------------------
# (b) Self-modality-aware knowledge distillation: the Reference learns from the Anchor


def kd_targets(p_a, p_v, y_a, y_v, threshold_a=0.5, threshold_v=0.6):
    """The Reference's KD targets ``ỹ^a = 1[p^a >= θ_a]·ȳ_a``, ``ỹ^v = 1[p^v >= θ_v]·ȳ_v``
    from the Anchor's ``p^a, p^v`` (docs/method.md §6b), without gradient. All ``(B, C)``."""
    return (
        (sg(p_a) >= threshold_a).astype(jnp.float32) * y_a,
        (sg(p_v) >= threshold_v).astype(jnp.float32) * y_v,
    )


def self_modality_kd(
    q_a,
    q_v,
    p_a,
    p_v,
    y_a,
    y_v,
    video_mask,
    threshold_a=0.5,
    threshold_v=0.6,
    kind="bce",
    axis_name=None,
):
    """``L(q^a, ỹ^a) + L(q^v, ỹ^v)`` with the targets of ``kd_targets`` (docs/method.md §6b) and
    ``L`` the Reference loss ``kind`` (``reference_loss_fn``).

    Args:
      q_a, q_v: ``(B, C)`` Reference (student); p_a, p_v: ``(B, C)`` Anchor (teacher).
    """
    loss = reference_loss_fn(kind, video_mask, axis_name)
    t_a, t_v = kd_targets(p_a, p_v, y_a, y_v, threshold_a, threshold_v)
    return loss(q_a, t_a) + loss(q_v, t_v)


# ---------------------------------------------------------------------------
# (c) Co-occurrence class knowledge distillation


def class_correlation(p):
    """``K(p) = p pᵀ`` per video: ``(B, C) -> (B, C, C)``."""
    return p[:, :, None] * p[:, None, :]


def confident_teacher(q, p_anchor, y, high, low):
    """The official code's correlation teacher: ``m·q + (1 - m)·p`` with
    ``m = 1[q >= high or q <= low]·ȳ`` — the Reference's ``q`` where it is
    confident, weighted by the modality label (so 0.95 / 0.05 for the smoothed
    visual label, 1 / 0 for audio), else the Anchor's own detached ``p``.
    ``q, p_anchor, y: (B, C)``."""
    m = ((q >= high) | (q <= low)).astype(q.dtype) * y
    return m * q + (1.0 - m) * sg(p_anchor)


def class_correlation_mse(p_anchor, teacher, video_mask, scaling="official", axis_name=None):
    """``MSE(K(p^m_Anchor), stopgrad K(teacher^m))`` for one modality (docs/method.md §6c).

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


# ---------------------------------------------------------------------------
# The CMPAE Anchor's own losses (docs/method.md Appendix A)


def uncertainty_mutual_learning(
    p_a, p_v, u_a, u_v, p_glob, u_glob, y, video_mask, parity, axis_name=None
):
    """CMPAE's uncertainty-weighted mutual learning between global and modality branches.

    ``g = max(u_glob, 0.9)``; per class ``m* = argmax_m p^m``. When
    ``parity = 1`` (odd batch index within the epoch, as the authors'
    ``batch_idx % 2``) the global branch learns from the detached modality
    branches, weighted by ``g``; when 0 the reverse, weighted by ``1 - g``;
    both by the modality's confidence ``1 - u``. Positives use the most
    probable modality, negatives the modality mean. Only the target ``p`` is
    detached: ``g``, ``u_max`` and ``u_mean`` carry gradients, as in the
    authors' ``mutual_loss.py`` (the ``(1 - u)`` factor is the only direct
    pressure on the evidence scale).

    Args:
      p_a, p_v, u_a, u_v, p_glob, y: ``(B, C)``; u_glob: ``(B,)``; parity: 0/1 scalar.
    """
    g = jnp.maximum(u_glob, 0.9)[:, None]
    p = jnp.stack([p_a, p_v])
    u = jnp.stack([u_a, u_v])
    best = jnp.argmax(p, axis=0)
    p_max = jnp.take_along_axis(p, best[None], 0)[0]
    u_max = jnp.take_along_axis(u, best[None], 0)[0]
    p_mean, u_mean = p.mean(0), u.mean(0)
    o = jnp.asarray(parity, p_a.dtype)

    def term(target, weight_u):
        to_global = o * g * (1 - weight_u) * (p_glob - sg(target)) ** 2
        to_modality = (1 - o) * (1 - g) * (1 - weight_u) * (sg(p_glob) - target) ** 2
        return to_global + to_modality

    per = term(p_max, u_max) * y + term(p_mean, u_mean) * (1 - y)
    return batch_mean(per, _video_weights(video_mask, 2), axis_name)


def cmpae_loss(
    out,
    y,
    y_a,
    y_v,
    mask,
    video_mask,
    parity,
    weights=(2.0, 1.0, 2.0, 1.0, 1.0),
    nce_tau=0.2,
    nce_smoothing=0.1,
    axis_name=None,
):
    """CMPAE's backbone loss (docs/method.md Appendix A), official weights by default.

    ``2·BCE(p^a, ȳ_a) + BCE(p^v, ȳ_v) + 2·BCE(p_glob, y) + NCE_av + L_mutual``
    where ``NCE_av`` is the smoothed segment NCE between the Anchor's own audio
    tokens (queries) and visual tokens (keys), ``w = 1``.

    Returns ``(total, terms)``.
    """
    w_a, w_v, w_g, w_nce, w_mut = weights
    terms = {
        "bce_a": bce(out["video_prob_a"], y_a, video_mask, axis_name),
        "bce_v": bce(out["video_prob_v"], y_v, video_mask, axis_name),
        "bce_global": bce(out["global_prob"], y, video_mask, axis_name),
        "nce_av": segment_nce(
            out["tokens_a"],
            out["tokens_v"],
            jnp.ones_like(video_mask),
            mask,
            video_mask,
            nce_tau,
            nce_smoothing,
            "expected",
            axis_name,
            stop_query_gradient=False,
        ),
        "mutual": uncertainty_mutual_learning(
            out["video_prob_a"],
            out["video_prob_v"],
            out["video_unc"][:, 0],
            out["video_unc"][:, 1],
            out["global_prob"],
            out["global_unc"],
            y,
            video_mask,
            parity,
            axis_name,
        ),
    }
    total = (
        w_a * terms["bce_a"]
        + w_v * terms["bce_v"]
        + w_g * terms["bce_global"]
        + w_nce * terms["nce_av"]
        + w_mut * terms["mutual"]
    )
    return total, terms


# ---------------------------------------------------------------------------
# JoMoLD label denoising (docs/method.md Appendix A)


def _ascending_rank(values, eligible):
    """0-based rank of each entry along axis 0 in ascending order among the eligible
    ones (ties by index, as a stable sort), and the number eligible per column."""
    key = jnp.where(eligible, values, jnp.inf)
    order = jnp.argsort(key, axis=0, stable=True)
    return jnp.argsort(order, axis=0, stable=True), eligible.sum(0)


def drop_counts(ratio, count, scale=1.0, max_count=None):
    """``⌊r_c·s·n_c⌋`` per class: how many positives JoMoLD may drop.

    With a concrete (numpy) ``ratio`` and ``s = 1`` the product is taken in
    float64 from a precomputed table, as the authors' float64 ratios make it
    (float32 rounding moves ``⌊r·n⌋`` by one for some ``(c, n)``).

    Args:
      ratio: ``(C,)``; count: ``(C,)`` integers, at most ``max_count`` (the batch
        size; needed for the exact table); scale: scalar in [0, 1].
    """
    approx = jnp.floor(jnp.asarray(ratio, jnp.float32) * scale * count.astype(jnp.float32))
    if not isinstance(ratio, np.ndarray) or max_count is None:
        return approx
    table = np.floor(ratio.astype(np.float64)[:, None] * np.arange(max_count + 1))
    exact = jnp.asarray(table, jnp.float32)[
        jnp.arange(ratio.shape[0]), jnp.minimum(count, max_count)
    ]
    return jnp.where(jnp.asarray(scale) >= 1.0, exact, approx)


def jomold_denoise(p_a, p_v, y_a, y_v, ratio_a, ratio_v, video_mask, scale=1.0, axis_name=None):
    """JoMoLD: drop the modality labels whose loss pattern is modality-inconsistent.

    Per class ``c`` (vectorised over classes): with ``n^v_c = ⌊r^v_c·s·#{b: ȳ_v > 0.5}⌋``,
    the visual positives among both the ``n^v_c`` smallest audio losses and the
    ``n^v_c`` largest visual losses get ``ȳ_v = 0``; symmetrically for audio.
    Ranks follow the authors' ascending sort (ties by batch position: the
    "largest" are the last ``n`` of the ascending order). Under ``pmap`` the
    ranking runs over the global batch (``all_gather``).

    Args:
      p_a, p_v: ``(B, C)`` no-cross-attention probabilities (no gradient).
      y_a, y_v: ``(B, C)`` modality labels; ratio_a, ratio_v: ``(C,)`` (numpy for
        exact float64 counts, see ``drop_counts``).
      scale: the annealing factor in [0, 1].
    Returns:
      The denoised ``(y_a, y_v)``.
    """
    p_a, p_v = sg(p_a), sg(p_v)
    loss_a = binary_cross_entropy(p_a, y_a)
    loss_v = binary_cross_entropy(p_v, y_v)
    real = video_mask.astype(bool)[:, None]
    if axis_name:
        gather = lambda x: jax.lax.all_gather(x, axis_name, tiled=True)  # noqa: E731
        loss_a, loss_v, ga, gv, real = map(gather, (loss_a, loss_v, y_a, y_v, real))
    else:
        ga, gv = y_a, y_v

    def drop(y_m, loss_m, loss_other, ratio):
        pos = (y_m > 0.5) & real
        rank_other, count = _ascending_rank(loss_other, pos)
        rank_self, _ = _ascending_rank(loss_m, pos)
        n = drop_counts(ratio, count, scale, max_count=pos.shape[0])  # (C,)
        small_other = rank_other < n
        large_self = rank_self >= count - n
        return pos & small_other & large_self

    drop_v = drop(gv, loss_v, loss_a, ratio_v)
    drop_a = drop(ga, loss_a, loss_v, ratio_a)
    if axis_name:
        b = y_a.shape[0]
        start = jax.lax.axis_index(axis_name) * b
        drop_a = jax.lax.dynamic_slice_in_dim(drop_a, start, b)
        drop_v = jax.lax.dynamic_slice_in_dim(drop_v, start, b)
    return jnp.where(drop_a, 0.0, y_a), jnp.where(drop_v, 0.0, y_v)
