"""The CoLeaF training step: state, models, optimiser and the jitted/pmapped step.

One step (SPEC §6) on a batch:

1. the Anchor's forward pass runs once, and its VJP is kept;
2. the Reference is updated on its weak loss (+ self-modality-aware KD from
   the Anchor's detached ``p^a, p^v`` after the warm-up);
3. the updated Reference runs again (no gradient) to give the teachers:
   pseudo-labels, event-aware weights, tokens, class probabilities;
4. the Anchor's loss (backbone + event-aware NCE + class-correlation MSE) is
   differentiated w.r.t. the Anchor's outputs and pulled back through the
   stored VJP; the Anchor is updated.

Each branch has its own Adam state (the Reference's audio and visual nets
share one optax state, which is the same as two: Adam is elementwise).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from coleaf_jax import losses
from coleaf_jax.models import ReferenceBranch, build_anchor
from coleaf_jax.noise_ratios import load_noise_ratios

METHODS = ("coleaf", "anchor_only")
CONTRASTIVE = ("event_aware", "standard", "bce", "none")


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: parameters and optimizer states of both branches."""

    step: jnp.ndarray
    anchor_params: Any
    anchor_opt: Any
    ref_params: Any  # {} for method='anchor_only'
    ref_opt: Any


def validate_config(config) -> None:
    """Fails early, naming the key, on values the step would misread."""
    checks = [
        ("method", config.method, METHODS),
        ("loss.contrastive", config.loss.contrastive, CONTRASTIVE),
        ("loss.reference", config.loss.reference, ("bce", "asl")),
        ("loss.nce_form", config.loss.nce_form, ("expected", "cross_entropy")),
        ("loss.correlation_teacher", config.loss.correlation_teacher, ("reference", "confident")),
        ("loss.correlation_scaling", config.loss.correlation_scaling, ("official", "mean")),
        ("loss.denoise_schedule", config.loss.denoise_schedule, ("anneal", "official")),
        ("model.anchor", config.model.anchor, ("han", "cmpae")),
    ]
    for key, value, allowed in checks:
        if value not in allowed:
            raise ValueError(f"config.{key} = {value!r}: expected one of {list(allowed)}")
    if config.data.pseudo_labels and config.data.dataset not in ("llp", "synthetic"):
        raise ValueError(f"config.data.pseudo_labels needs LLP-layout data (VALOR's CLAP/CLIP "
                         f"folders), not config.data.dataset = {config.data.dataset!r}")
    available = jax.local_device_count()
    if not 0 <= config.num_devices <= available:
        raise ValueError(f"config.num_devices = {config.num_devices}: expected 0 (all) to "
                         f"{available}, the local devices")
    if config.batch_size % num_devices(config):
        raise ValueError(f"config.batch_size = {config.batch_size} must be divisible by the "
                         f"{num_devices(config)} devices used (config.num_devices)")


def num_devices(config) -> int:
    """Devices a run uses: ``config.num_devices``, 0 meaning all local devices."""
    return config.num_devices or jax.local_device_count()


def build_models(config, num_classes: int):
    """``(anchor, reference)``; the Reference is None for ``method='anchor_only'``."""
    anchor = build_anchor(config.model, num_classes)
    if config.method == "anchor_only":
        return anchor, None
    reference = ReferenceBranch(
        num_classes=num_classes, d_model=config.model.d_model, ffn_dim=config.model.ffn_dim,
        dropout=config.model.dropout, head_dropout=config.model.reference_head_dropout,
        class_tokens=config.model.class_tokens,
        pool_frames_first=config.model.pool_frames_first)
    return anchor, reference


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with the piecewise-constant decay of SPEC §7 (×0.25 every 6 epochs)."""
    schedule = optax.exponential_decay(
        init_value=config.learning_rate,
        transition_steps=config.lr_decay_every_epochs * steps_per_epoch,
        decay_rate=config.lr_decay_factor, staircase=True)
    return optax.adam(schedule)


def create_train_state(config, key, batch, steps_per_epoch: int, num_classes: int):
    """Initialises both branches and their optimizers from ``key`` and a sample batch."""
    anchor, reference = build_models(config, num_classes)
    tx = make_optimizer(config, steps_per_epoch)
    k_anchor, k_ref = jax.random.split(key)
    inputs = (batch["audio"], batch["video_2d"], batch["video_3d"], batch["mask"])
    anchor_params = anchor.init(k_anchor, *inputs)["params"]
    ref_params = reference.init(k_ref, *inputs)["params"] if reference is not None else {}
    state = TrainState(step=jnp.zeros((), jnp.int32), anchor_params=anchor_params,
                       anchor_opt=tx.init(anchor_params), ref_params=ref_params,
                       ref_opt=tx.init(ref_params) if reference is not None else {})
    return state, anchor, reference, tx


def _epoch_switch(epoch, start, before, after):
    """``before`` until epoch ``start`` (0-based), ``after`` from then on (traced epoch)."""
    return jnp.where(epoch >= start, after, before)


def denoise_scale(loss_config, step, epoch, steps_per_epoch: int):
    """JoMoLD's ratio multiplier: annealed ``min(1, step / (0.9 · steps_per_epoch))``, or
    the official code's 0 for the whole first epoch and 1 after (``'official'``)."""
    if loss_config.denoise_schedule == "official":
        return jnp.where(epoch >= 1, 1.0, 0.0)
    warm = max(loss_config.denoise_anneal_epochs * steps_per_epoch, 1e-6)
    return jnp.minimum(1.0, step.astype(jnp.float32) / warm)


def make_train_step(config, anchor, reference, tx, axis_name: str | None = None,
                    steps_per_epoch: int = 1, plain: bool = False) -> Callable:
    """Builds ``step(state, batch, epoch, key) -> (state, metrics)``.

    ``plain=True`` builds the unoptimised form of the same step, as the
    authors' code is organised: the Anchor runs once for the pseudo-labels and
    again inside its own loss, which is differentiated through that second
    forward pass. Same maths and randomness (tested equal); for benchmarks.

    Pure: the randomness is ``key`` folded with ``state.step`` (and the device
    index under ``pmap``). With ``axis_name`` the losses are normalised by
    global counts and gradients are ``psum``-ed, so the data-parallel step
    equals the single-device step on the same global batch.
    """
    lc = config.loss
    cmpae = config.model.anchor == "cmpae"
    pseudo = config.data.pseudo_labels
    if lc.denoise:
        ratio_a, ratio_v = load_noise_ratios(lc.denoise_ratios, anchor.num_classes)

    def reduce_grads(g):
        return jax.lax.psum(g, axis_name) if axis_name else g

    def step(state: TrainState, batch, epoch, key):
        key = jax.random.fold_in(key, state.step)
        if axis_name:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        k_anchor, k_ref, k_teacher = jax.random.split(key, 3)
        inputs = (batch["audio"], batch["video_2d"], batch["video_3d"], batch["mask"])
        vm, mask = batch["video_mask"], batch["mask"]
        y = batch["label"]
        y_a, y_v = losses.modality_labels(y, tuple(lc.visual_label_smoothing))
        if pseudo:  # SPEC §9: modality labels from the segment pseudo-labels
            y_a, y_v = losses.pseudo_modality_labels(batch["pl_audio"], batch["pl_visual"])

        def anchor_forward(params):
            return anchor.apply({"params": params}, *inputs, train=True, rngs={"dropout": k_anchor})

        if plain:
            a_out = jax.lax.stop_gradient(anchor_forward(state.anchor_params))
        else:
            a_out, anchor_vjp = jax.vjp(anchor_forward, state.anchor_params)
        logs = {}
        if lc.denoise:  # JoMoLD: drop modality-inconsistent positives of this batch
            src = "noca_video_prob" if cmpae else "video_prob"
            y_a, y_v = losses.jomold_denoise(
                a_out[f"{src}_a"], a_out[f"{src}_v"], y_a, y_v, ratio_a, ratio_v, vm,
                denoise_scale(lc, state.step, epoch, steps_per_epoch), axis_name)
            positive = (y > 0.5).astype(jnp.float32)
            logs["denoised_share_v"] = losses.batch_mean(
                (y_v < 0.5) * positive, vm[:, None] * positive, axis_name)

        # -- Reference update (student of the Anchor) -------------------------
        if reference is not None:
            kd_on = _epoch_switch(epoch, lc.kd_warmup_epochs, 0.0, 1.0) if lc.kd else 0.0
            w_weak = 1.0 - kd_on * (1.0 - lc.kd_weight)
            w_ct = {m: _epoch_switch(epoch, lc.class_token_warmup_epochs, *ws) for m, ws in
                    (("a", lc.class_token_weight_audio), ("v", lc.class_token_weight_visual))}

            def ref_loss_fn(params):
                r = reference.apply({"params": params}, *inputs, train=True, rngs={"dropout": k_ref})
                terms = {}
                for m, y_m in (("a", y_a), ("v", y_v)):
                    weak, tok = losses.reference_weak_loss(
                        r[m]["video_prob"], r[m].get("class_prob"), y_m, vm, w_ct[m],
                        lc.reference, axis_name)
                    terms[f"ref_weak_{m}"], terms[f"ref_token_{m}"] = weak, tok
                kd = losses.self_modality_kd(
                    r["a"]["video_prob"], r["v"]["video_prob"], a_out["video_prob_a"],
                    a_out["video_prob_v"], y_a, y_v, vm, lc.kd_threshold_audio,
                    lc.kd_threshold_visual, axis_name)
                terms["ref_kd"] = kd
                total = (w_weak * (terms["ref_weak_a"] + terms["ref_weak_v"])
                         + terms["ref_token_a"] + terms["ref_token_v"] + lc.kd_weight * kd_on * kd)
                return total, terms

            (ref_loss, ref_terms), ref_grads = jax.value_and_grad(ref_loss_fn, has_aux=True)(
                state.ref_params)
            updates, ref_opt = tx.update(reduce_grads(ref_grads), state.ref_opt, state.ref_params)
            ref_params = optax.apply_updates(state.ref_params, updates)
            teacher = jax.lax.stop_gradient(reference.apply(
                {"params": ref_params}, *inputs, train=True, rngs={"dropout": k_teacher}))
            logs.update(ref_terms, ref_loss=ref_loss)
        else:
            ref_params, ref_opt, teacher = state.ref_params, state.ref_opt, None

        # -- Anchor update (student of the Reference) --------------------------
        collab_on = _epoch_switch(epoch, lc.collab_start_epoch, 0.0, 1.0)

        parity = (state.step % 2 == 0).astype(jnp.float32)

        def anchor_loss_fn(out):
            if cmpae:
                backbone, terms = losses.cmpae_loss(
                    out, y, y_a, y_v, mask, vm, parity, tuple(lc.cmpae_weights),
                    lc.nce_temperature, lc.nce_smoothing, axis_name)
                terms["backbone"] = backbone
            else:
                terms = {"backbone": losses.han_loss(out, y, y_a, y_v, vm, axis_name)}
            total = terms["backbone"]
            if pseudo:
                terms["pseudo_segment"] = losses.pseudo_label_segment_bce(
                    out["seg_prob"], batch["pl_audio"], batch["pl_visual"], mask, vm, axis_name)
                total = total + lc.pseudo_label_segment_weight * terms["pseudo_segment"]
            if teacher is None:
                return total, terms
            q = {m: teacher[m]["video_prob"] for m in ("a", "v")}
            if lc.contrastive in ("event_aware", "standard"):
                if lc.contrastive == "event_aware":
                    w = dict(zip(("a", "v"), losses.event_aware_weights(
                        q["a"], q["v"], lc.pseudo_label_threshold)))
                else:
                    w = {m: jnp.ones_like(vm) for m in ("a", "v")}
                for m in ("a", "v"):
                    terms[f"nce_{m}"] = losses.event_aware_nce(
                        teacher[m]["tokens"], out[f"tokens_{m}"], w[m], mask, vm,
                        lc.nce_temperature, lc.nce_smoothing, lc.nce_form, axis_name)
            elif lc.contrastive == "bce":
                for m in ("a", "v"):
                    terms[f"nce_{m}"] = losses.pseudo_label_bce(
                        out[f"video_prob_{m}"], q[m], vm, lc.pseudo_label_threshold, axis_name)
            if lc.contrastive != "none":
                total = total + collab_on * (lc.nce_weight_audio * terms["nce_a"]
                                             + lc.nce_weight_visual * terms["nce_v"])
            if lc.correlation:
                cc = 0.0
                for m, y_m, conf in (("a", y_a, lc.correlation_confidence_audio),
                                     ("v", y_v, lc.correlation_confidence_visual)):
                    p_m = out[f"video_prob_{m}"]
                    t_m = q[m] if lc.correlation_teacher == "reference" else \
                        losses.confident_teacher(q[m], jax.lax.stop_gradient(p_m), y_m, *conf)
                    cc = cc + losses.class_correlation_mse(p_m, t_m, vm, lc.correlation_scaling,
                                                           axis_name)
                terms["correlation"] = cc
                total = total + collab_on * lc.correlation_weight * cc
            return total, terms

        if plain:
            (anchor_loss, anchor_terms), anchor_grads = jax.value_and_grad(
                lambda p: anchor_loss_fn(anchor_forward(p)), has_aux=True)(state.anchor_params)
        else:
            (anchor_loss, anchor_terms), out_grads = jax.value_and_grad(
                anchor_loss_fn, has_aux=True)(a_out)
            (anchor_grads,) = anchor_vjp(out_grads)
        updates, anchor_opt = tx.update(reduce_grads(anchor_grads), state.anchor_opt,
                                        state.anchor_params)
        anchor_params = optax.apply_updates(state.anchor_params, updates)
        logs.update(anchor_terms, anchor_loss=anchor_loss)
        if axis_name:  # every term is a device-local share of the global loss
            logs = jax.lax.psum(logs, axis_name)
        new_state = TrainState(step=state.step + 1, anchor_params=anchor_params,
                               anchor_opt=anchor_opt, ref_params=ref_params, ref_opt=ref_opt)
        return new_state, logs

    return step
