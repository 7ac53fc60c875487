"""The two objectives of a CoLeaF step, as pure functions of the branches' outputs.

``reference_objective`` is the Reference's loss ``L_R`` (docs/method.md §5 + §6b) and
``anchor_objective`` the Anchor's ``L_A`` (docs/method.md §4 / Appendix A + §6a, §6c).
The training step (``coleaf_jax.training.step``) only runs the forward passes, calls
these, and applies the optimiser updates. Each objective also returns the teachers
it used (KD targets, event-aware weights, correlation teachers), which the step
hands out in its diagnostics: the parity harness against the authors' code
(``tools/parity_replay.py``) compares those, not a recomputation. Each term is one
function of ``coleaf_jax.training.losses``; the weights and their epoch schedule are
``reference_weights`` / ``anchor_weights``, as the authors' ``main.py`` sets
them (``train``, lines 186-273).

Shapes: ``B`` videos, ``T`` segments, ``C`` classes, ``D`` width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from coleaf_jax.training import losses

Outputs = dict[str, Any]


class ReferenceWeights(NamedTuple):
    """Weights of ``L_R`` at one epoch: ``weak`` on ``L(q^m, ȳ_m)``, ``token_a``/``token_v``
    on the class-token terms ``L(k^m, ȳ_m)``, ``kd`` on ``L(q^m, ỹ^m)`` (docs/method.md §5, §6b)."""

    weak: jnp.ndarray
    token_a: jnp.ndarray
    token_v: jnp.ndarray
    kd: jnp.ndarray


class Labels(NamedTuple):
    """What an Anchor's backbone loss is trained against, for one batch: weak labels ``y``
    and modality labels ``y_a, y_v`` ``(B, C)`` (after denoising), ``mask`` ``(B, T)``,
    ``video_mask`` ``(B,)``, and the batch index's ``parity`` (CMPAE's mutual-learning
    direction)."""

    y: jnp.ndarray
    y_a: jnp.ndarray
    y_v: jnp.ndarray
    mask: jnp.ndarray
    video_mask: jnp.ndarray
    parity: jnp.ndarray


def _clamp(p):
    """Probabilities into ``[1e-7, 1 - 1e-7]``, as the authors clamp them before every use."""
    return jnp.clip(p, losses.EPS_PROB, 1.0 - losses.EPS_PROB)


def han_backbone(out: Outputs, labels: Labels, lc, axis_name: str | None = None):
    """HAN's backbone loss ``BCE(p, y) + BCE(p^a, ȳ_a) + BCE(p^v, ȳ_v)`` (docs/method.md
    §4.2); ``registry``'s ``'han'``."""
    loss = losses.han_loss(out, labels.y, labels.y_a, labels.y_v, labels.video_mask, axis_name)
    return loss, {}


def valor_backbone(out: Outputs, labels: Labels, lc, axis_name: str | None = None):
    """VALOR's video-level loss ``BCE(clamp(p), y)`` (``main_avvp.py:72-75`` of
    Franklin905/VALOR; :func:`losses.bce` clamps as VALOR does): its modality terms are the
    segment pseudo-label BCEs on logits (``loss.pseudo_label_segment_form = 'logits'``,
    added by :func:`anchor_objective`); ``registry``'s ``'valor'``."""
    return losses.bce(out["video_prob"], labels.y, labels.video_mask, axis_name), {}


def cmpae_backbone(out: Outputs, labels: Labels, lc, axis_name: str | None = None):
    """CMPAE's backbone loss ``2·BCE(p^a) + BCE(p^v) + 2·BCE(p_glob) + NCE_av + L_mutual``
    (docs/method.md Appendix A) on clamped probabilities; ``registry``'s ``'cmpae'``."""
    clamped = dict(
        out,
        video_prob_a=_clamp(out["video_prob_a"]),
        video_prob_v=_clamp(out["video_prob_v"]),
        global_prob=_clamp(out["global_prob"]),
    )
    return losses.cmpae_loss(
        clamped,
        labels.y,
        labels.y_a,
        labels.y_v,
        labels.mask,
        labels.video_mask,
        labels.parity,
        tuple(lc.cmpae_weights),
        lc.nce_temperature,
        lc.nce_smoothing,
        axis_name,
    )


class AnchorWeights(NamedTuple):
    """Whether the collaborative Anchor terms are on (``collab``, 0/1) and the CMPAE
    mutual-learning direction (``parity``: 1 on odd batch indices within an epoch)."""

    collab: jnp.ndarray
    parity: jnp.ndarray


def _switch(epoch, start: int, before, after):
    """``before`` until 0-based epoch ``start``, ``after`` from then on (traced ``epoch``)."""
    return jnp.where(epoch >= start, after, before)


def reference_weights(lc, epoch) -> ReferenceWeights:
    """The Reference's weights at 0-based ``epoch`` (official: until epoch 3 the weak and
    class-token terms at 1 and 1.2 / 1.0; from epoch 4 weak and KD at 0.5 each and the
    class tokens at 0.001 / 0)."""
    kd_on = _switch(epoch, lc.kd_warmup_epochs, 0.0, 1.0) if lc.kd else 0.0
    return ReferenceWeights(
        weak=1.0 - kd_on * (1.0 - lc.kd_weight),
        token_a=_switch(epoch, lc.class_token_warmup_epochs, *lc.class_token_weight_audio),
        token_v=_switch(epoch, lc.class_token_warmup_epochs, *lc.class_token_weight_visual),
        kd=kd_on * lc.kd_weight,
    )


def anchor_weights(lc, epoch, index_in_epoch) -> AnchorWeights:
    """The Anchor's switches at 0-based ``epoch`` and batch ``index_in_epoch``."""
    return AnchorWeights(
        collab=_switch(epoch, lc.collab_start_epoch, 0.0, 1.0),
        parity=(index_in_epoch % 2 == 1).astype(jnp.float32),
    )


def reference_objective(
    ref_out: Outputs,
    y_a,
    y_v,
    anchor_prob_a,
    anchor_prob_v,
    video_mask,
    weights: ReferenceWeights,
    lc,
    axis_name: str | None = None,
):
    """The Reference's loss ``L_R`` and its terms.

    ``L_R = Σ_m w_weak·L(q^m, ȳ_m) + w_tok^m·L(k^m, ȳ_m) + w_kd·L(q^m, ỹ^m)`` with
    ``L`` the Reference loss of ``lc.reference`` (``'asl'``: the authors'
    asymmetric loss, summed; ``'bce'``: mean BCE) — the same ``L`` for the KD
    term, as the authors' ``criterion_bce_2`` — and the KD targets
    ``ỹ^a = 1[p^a >= θ_a]·ȳ_a``, ``ỹ^v = 1[p^v >= θ_v]·ȳ_v`` from the Anchor
    (docs/method.md §6b).

    Args:
      ref_out: the Reference's outputs ``{'a': {...}, 'v': {...}}`` (``video_prob``
        ``(B, C)``, ``class_prob`` ``(B, C)`` with class tokens).
      y_a, y_v: ``(B, C)`` modality labels (after denoising).
      anchor_prob_a, anchor_prob_v: ``(B, C)`` the Anchor's ``p^a, p^v`` (teacher;
        no gradient).
      video_mask: ``(B,)``.
    Returns:
      ``(L_R, terms, teachers)``; terms ``ref_weak_{a,v}``, ``ref_token_{a,v}``,
      ``ref_kd_{a,v}`` and their sum ``ref_kd``, unweighted; teachers the KD targets
      ``kd_target_{a,v}`` ``(B, C)`` (what the parity harness compares).
    """
    loss = losses.reference_loss_fn(lc.reference, video_mask, axis_name)
    terms = {}
    for m, y_m in (("a", y_a), ("v", y_v)):
        out = ref_out[m]
        terms[f"ref_weak_{m}"] = loss(out["video_prob"], y_m)
        terms[f"ref_token_{m}"] = (
            loss(out["class_prob"], y_m) if "class_prob" in out else jnp.zeros((), jnp.float32)
        )
    targets = losses.kd_targets(
        anchor_prob_a, anchor_prob_v, y_a, y_v, lc.kd_threshold_audio, lc.kd_threshold_visual
    )
    for m, t_m in zip(("a", "v"), targets):
        terms[f"ref_kd_{m}"] = loss(ref_out[m]["video_prob"], t_m)
    terms["ref_kd"] = terms["ref_kd_a"] + terms["ref_kd_v"]
    total = (
        weights.weak * (terms["ref_weak_a"] + terms["ref_weak_v"])
        + weights.token_a * terms["ref_token_a"]
        + weights.token_v * terms["ref_token_v"]
        + weights.kd * terms["ref_kd"]
    )
    return total, terms, {"kd_target_a": targets[0], "kd_target_v": targets[1]}


def anchor_objective(
    out: Outputs,
    teacher: Outputs | None,
    labels: Labels,
    weights: AnchorWeights,
    lc,
    backbone_loss,
    pseudo_labels=None,
    axis_name: str | None = None,
):
    """The Anchor's loss ``L_A`` and its terms.

    ``L_A = L_backbone [+ L_pseudo] + collab·(λ_a·L_nce^a + λ_v·L_nce^v + λ_cc·L_cc)``:

    * backbone: the Anchor's own loss (its registry entry: HAN's three BCEs,
      docs/method.md §4.2, or CMPAE's, Appendix A);
    * ``L_nce^m``: the event-aware NCE with the Reference's tokens as queries
      (§6a; ``lc.contrastive`` picks the ablations);
    * ``L_cc``: the class-correlation MSE against the Reference (``'reference'``)
      or the authors' confident mix (``'confident'``) (§6c).

    The Anchor's probabilities are clamped to ``[1e-7, 1 - 1e-7]`` once, as the
    authors clamp them before every use (BCE, mutual learning, correlation).

    Args:
      out: the Anchor's outputs in train mode (``coleaf_jax.models.han``'s contract).
      teacher: the updated Reference's outputs ``{'a': ..., 'v': ...}`` (treated
        as constants), or None for the Anchor alone.
      labels: the batch's :class:`Labels`.
      backbone_loss: ``(out, labels, lc, axis_name) -> (loss, terms)``
        (``registry.Anchor.loss``).
      pseudo_labels: ``(pl_audio, pl_visual)`` ``(B, T, C)`` for §9 training.
    Returns:
      ``(L_A, terms, teachers)``; teachers (what the parity harness compares, empty
      without a Reference): the event-aware weights ``event_weight_{a,v}`` ``(B,)``
      and the correlation teachers ``cc_teacher_{a,v}`` ``(B, C)``.
    """
    y_a, y_v, mask, video_mask = labels.y_a, labels.y_v, labels.mask, labels.video_mask
    p_a, p_v = _clamp(out["video_prob_a"]), _clamp(out["video_prob_v"])
    backbone, terms = backbone_loss(out, labels, lc, axis_name)
    terms = dict(terms)
    terms["backbone"] = backbone
    total = backbone
    if pseudo_labels is not None:
        logits = lc.pseudo_label_segment_form == "logits"  # VALOR: BCE with logits
        terms["pseudo_segment"] = losses.pseudo_label_segment_bce(
            out["seg_logits" if logits else "seg_prob"],
            *pseudo_labels,
            mask,
            video_mask,
            axis_name,
            logits=logits,
        )
        total = total + lc.pseudo_label_segment_weight * terms["pseudo_segment"]
    teachers = {}
    if teacher is None:
        return total, terms, teachers
    teacher = jax.lax.stop_gradient(teacher)
    q = {m: teacher[m]["video_prob"] for m in ("a", "v")}
    if lc.contrastive in ("event_aware", "standard"):
        if lc.contrastive == "event_aware":
            w = dict(
                zip(
                    ("a", "v"),
                    losses.event_aware_weights(q["a"], q["v"], lc.pseudo_label_threshold),
                )
            )
        else:
            w = {m: jnp.ones_like(video_mask) for m in ("a", "v")}
        teachers.update(event_weight_a=w["a"], event_weight_v=w["v"])
        for m in ("a", "v"):
            terms[f"nce_{m}"] = losses.event_aware_nce(
                teacher[m]["tokens"],
                out[f"tokens_{m}"],
                w[m],
                mask,
                video_mask,
                lc.nce_temperature,
                lc.nce_smoothing,
                lc.nce_form,
                axis_name,
            )
    elif lc.contrastive == "bce":
        for m, p_m in (("a", p_a), ("v", p_v)):
            terms[f"nce_{m}"] = losses.pseudo_label_bce(
                p_m, q[m], video_mask, lc.pseudo_label_threshold, axis_name
            )
    if lc.contrastive != "none":
        total = total + weights.collab * (
            lc.nce_weight_audio * terms["nce_a"] + lc.nce_weight_visual * terms["nce_v"]
        )
    if lc.correlation:
        for m, p_m, y_m, conf in (
            ("a", p_a, y_a, lc.correlation_confidence_audio),
            ("v", p_v, y_v, lc.correlation_confidence_visual),
        ):
            t_m = (
                q[m]
                if lc.correlation_teacher == "reference"
                else losses.confident_teacher(q[m], p_m, y_m, *conf)
            )
            teachers[f"cc_teacher_{m}"] = t_m
            terms[f"correlation_{m}"] = losses.class_correlation_mse(
                p_m, t_m, video_mask, lc.correlation_scaling, axis_name
            )
        terms["correlation"] = terms["correlation_a"] + terms["correlation_v"]
        total = total + weights.collab * lc.correlation_weight * terms["correlation"]
    return total, terms, teachers
