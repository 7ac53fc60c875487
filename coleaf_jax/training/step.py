"""The CoLeaF training step: state, models, optimiser and the jitted/pmapped step.

One step (docs/method.md §6; the authors' ``main.py`` ``train``) on a batch:

1. the Anchor's forward pass (train mode) runs once, and its VJP is kept; its
   no-cross-attention probabilities drive JoMoLD's label denoising, its
   ``p^a, p^v`` the Reference's KD targets;
2. the Reference is updated on ``L_R`` (``objectives.reference_objective``);
3. the updated Reference runs again (no gradient, train mode) to give the
   teachers: pseudo-labels, event-aware weights, tokens, class probabilities;
4. the Anchor's ``L_A`` (``objectives.anchor_objective``) is differentiated
   w.r.t. the Anchor's outputs and pulled back through the stored VJP; the
   Anchor is updated.

Each branch has its own Adam state (the Reference's audio and visual nets
share one optax state, which is the same as two: Adam is elementwise). The
learning rate is a function of the epoch, as torch's ``StepLR`` stepped once
per epoch. Dropout draws one key per example from its position in the global
batch, so a data-parallel step equals the one-device step with dropout on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from coleaf_jax import config as config_lib
from coleaf_jax import registry
from coleaf_jax.models import reference as reference_lib
from coleaf_jax.training import losses, objectives
from coleaf_jax.training.noise_ratios import load_noise_ratios


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: parameters and optimizer states of both branches."""

    step: jnp.ndarray
    anchor_params: Any
    anchor_opt: Any
    ref_params: Any  # {} for method='anchor_only'
    ref_opt: Any


def validate_config(config) -> None:
    """Every key against its declared check (``config.validate``), then what depends on
    this machine: ``config.num_devices`` and the batch split over them."""
    config_lib.validate(config)
    available = jax.local_device_count()
    if not 0 <= config.num_devices <= available:
        raise ValueError(
            f"config.num_devices = {config.num_devices}: expected 0 (all) to "
            f"{available}, the local devices"
        )
    if config.batch_size % num_devices(config):
        raise ValueError(
            f"config.batch_size = {config.batch_size} must be divisible by the "
            f"{num_devices(config)} devices used (config.num_devices)"
        )


def matmul_precision(config):
    """A context in which jitted code uses ``config.matmul_precision`` for its matmuls
    (``'highest'``: full float32 on every backend, as the authors' torch; without it a
    GPU may run float32 matmuls as TF32)."""
    return jax.default_matmul_precision(config.get("matmul_precision", "highest"))


def num_devices(config) -> int:
    """Devices a run uses: ``config.num_devices``, 0 meaning all local devices."""
    return config.num_devices or jax.local_device_count()


def build_models(config, num_classes: int):
    """``(anchor, reference)``; the Reference is None for ``method='anchor_only'``."""
    anchor = registry.anchor(config.model.anchor).build(config.model, num_classes)
    if config.method == "anchor_only":
        return anchor, None
    return anchor, reference_lib.build(config.model, num_classes)


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """torch's ``nn.utils.clip_grad_norm_(params, max_norm)``: every gradient scaled by
    ``min(1, max_norm / (‖g‖ + 1e-6))``, ``‖g‖`` the global L2 norm (optax's own
    ``clip_by_global_norm`` has no 1e-6)."""

    def update(updates, state, params=None):
        del params
        # torch: the norm of the per-tensor norms (torch.nn.utils.clip_grad_norm_)
        leaves = jax.tree_util.tree_leaves(updates)
        norm = jnp.linalg.norm(jnp.stack([jnp.linalg.norm(g.reshape(-1)) for g in leaves]))
        scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config) -> optax.GradientTransformation:
    """The update direction; the step scales it by ``-learning_rate(config, epoch)``.

    ``config.optimizer = 'adam'`` (CoLeaF, HAN, CMPAE: torch's ``Adam``, no weight decay,
    no clipping, docs/method.md §7) or ``'adamw'`` (VALOR, UWAV: torch's ``AdamW``, the
    decay ``weight_decay · θ`` added to the direction, i.e. ``θ ← θ − lr·wd·θ − lr·Adam``).
    ``adam_betas``, ``adam_eps``; ``grad_clip_norm > 0`` clips the gradients first as
    torch's ``clip_grad_norm_`` does (:func:`clip_by_global_norm_torch`)."""
    b1, b2 = config.adam_betas
    parts = []
    if config.grad_clip_norm > 0:
        parts.append(clip_by_global_norm_torch(config.grad_clip_norm))
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=config.adam_eps))
    if config.optimizer == "adamw" and config.weight_decay > 0:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


def learning_rate(config, epoch):
    """The learning rate of 0-based ``epoch`` (traced or not).

    ``lr_schedule = 'step'`` (docs/method.md §7): ``lr · factor^⌊epoch / every⌋``, as torch's
    ``StepLR`` stepped after every epoch (computed in the default float precision, so a
    float64 run gets the exact value). ``'warmup_cosine'`` (VALOR's
    ``lr_warm_up_cos_anneal``, ``main_avvp.py:38-45``, set before each 1-based epoch
    ``e``): ``e / W · lr`` while ``e < W`` (``W = lr_warmup_epochs``), then
    ``lr_min + ½ (lr − lr_min)(1 + cos(π (e − W) / (num_epochs − W)))``."""
    if config.lr_schedule == "warmup_cosine":
        e = jnp.asarray(epoch, jnp.result_type(float)) + 1.0  # the default float (x64: exact)
        warm = config.lr_warmup_epochs
        lr, lr_min = config.learning_rate, config.lr_min
        cosine = lr_min + 0.5 * (lr - lr_min) * (
            1.0 + jnp.cos((e - warm) / max(config.num_epochs - warm, 1) * jnp.pi)
        )
        return jnp.where(e < warm, e / max(warm, 1) * lr, cosine)
    return config.learning_rate * config.lr_decay_factor ** (epoch // config.lr_decay_every_epochs)


def create_train_state(config, key, batch, steps_per_epoch: int, num_classes: int):
    """Initialises both branches and their optimizers from ``key`` and a sample batch.

    ``steps_per_epoch`` is not used (the learning rate follows the epoch).
    """
    del steps_per_epoch
    anchor, reference = build_models(config, num_classes)
    tx = make_optimizer(config)
    k_anchor, k_ref = jax.random.split(key)
    inputs = (batch["audio"], batch["video_2d"], batch["video_3d"], batch["mask"])
    # jitted: one compiled program instead of ~180 eager ops (same values).
    anchor_params = jax.jit(anchor.init)(k_anchor, *inputs)["params"]
    ref_params = jax.jit(reference.init)(k_ref, *inputs)["params"] if reference is not None else {}
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        anchor_params=anchor_params,
        anchor_opt=tx.init(anchor_params),
        ref_params=ref_params,
        ref_opt=tx.init(ref_params) if reference is not None else {},
    )
    return state, anchor, reference, tx


def denoise_scale(loss_config, step, epoch, steps_per_epoch: int):
    """JoMoLD's ratio multiplier: the official code's 0 for the whole first epoch and 1
    after (``'official'``: its running minimum of ``r·progress`` restarts at 0 every
    epoch), or annealed ``min(1, step / (0.9 · steps_per_epoch))`` (``'anneal'``)."""
    if loss_config.denoise_schedule == "official":
        return jnp.where(epoch >= 1, 1.0, 0.0)
    warm = max(loss_config.denoise_anneal_epochs * steps_per_epoch, 1e-6)
    return jnp.minimum(1.0, step.astype(jnp.float32) / warm)


def example_keys(key, batch_size: int, axis_name: str | None = None):
    """One key per example: ``key`` folded with the example's position in the global
    batch (under ``pmap``, the device's offset plus its local position). ``(B,)`` keys."""
    offset = jax.lax.axis_index(axis_name) * batch_size if axis_name else 0
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(batch_size))


def apply_per_example(module, params, inputs, keys, **kwargs):
    """``module.apply`` with its own dropout key per example (``vmap`` over the batch).

    The models have no op across videos, so this equals the batched apply with
    dropout off, and with dropout on each video's masks depend only on its key.
    """

    def one(example, key):
        out = module.apply(
            {"params": params}, *(x[None] for x in example), rngs={"dropout": key}, **kwargs
        )
        return jax.tree_util.tree_map(lambda x: x[0], out)

    return jax.vmap(one)(inputs, keys)


def _adam_step(tx, grads, opt_state, params, lr):
    direction, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(
        params, jax.tree_util.tree_map(lambda u: -lr * u, direction)
    ), opt_state


def make_train_step(
    config,
    anchor,
    reference,
    tx,
    axis_name: str | None = None,
    steps_per_epoch: int = 1,
    plain: bool = False,
    diagnostics: bool = False,
) -> Callable:
    """Builds ``step(state, batch, epoch, key) -> (state, logs)``.

    ``epoch`` is 0-based; ``steps_per_epoch`` gives the batch's index in its
    epoch (``state.step % steps_per_epoch``: CMPAE's mutual-learning direction
    alternates with it, as the authors' ``batch_idx % 2``) and the JoMoLD
    annealing length.

    ``plain=True`` builds the unoptimised form of the same step, as the
    authors' code is organised: the Anchor runs once for the pseudo-labels and
    again inside its own loss, which is differentiated through that second
    forward pass. Same maths and randomness (tested equal); for benchmarks.

    ``diagnostics=True`` makes the step return ``(state, logs, diag)`` with what
    the parity harness (``tools/parity.py``) compares against the authors' code:
    the Anchor's outputs before its update (``anchor_out``), the updated
    Reference's outputs (``teacher``), the denoised labels ``y_a, y_v``, the KD
    targets ``kd_target_{a,v}``, event-aware weights ``event_weight_{a,v}`` and
    correlation teachers ``cc_teacher_{a,v}`` the objectives used, and the gradients
    ``ref_grads``, ``anchor_grads`` (before any ``psum``).

    Pure: the randomness is ``key`` folded with ``state.step``, then with each
    example's position in the global batch. With ``axis_name`` the losses are
    normalised by global counts and gradients are ``psum``-ed, so the
    data-parallel step equals the single-device step on the same global batch.
    """
    lc = config.loss
    spec = registry.anchor(config.model.anchor)  # its backbone loss, the outputs JoMoLD ranks
    pseudo = config.data.pseudo_labels
    if lc.denoise:
        ratio_a, ratio_v = load_noise_ratios(lc.denoise_ratios, anchor.num_classes)

    def reduce_grads(g):
        return jax.lax.psum(g, axis_name) if axis_name else g

    def step(state: TrainState, batch, epoch, key):
        key = jax.random.fold_in(key, state.step)
        b = batch["audio"].shape[0]
        k_anchor, k_ref, k_teacher = (
            example_keys(k, b, axis_name) for k in jax.random.split(key, 3)
        )
        inputs = (batch["audio"], batch["video_2d"], batch["video_3d"], batch["mask"])
        vm, mask = batch["video_mask"], batch["mask"]
        lr = learning_rate(config, epoch)
        y = batch["label"]
        y_a, y_v = losses.modality_labels(y, tuple(lc.visual_label_smoothing))
        if pseudo:  # docs/method.md §9: modality labels from the segment pseudo-labels
            y_a, y_v = losses.pseudo_modality_labels(batch["pl_audio"], batch["pl_visual"])

        def anchor_forward(params):
            return apply_per_example(anchor, params, inputs, k_anchor, train=True)

        if plain:
            a_out = jax.lax.stop_gradient(anchor_forward(state.anchor_params))
        else:
            a_out, anchor_vjp = jax.vjp(anchor_forward, state.anchor_params)
        logs = {}
        if lc.denoise:  # JoMoLD: drop modality-inconsistent positives of this batch
            y_a, y_v = losses.jomold_denoise(
                a_out[spec.denoise_prob[0]],
                a_out[spec.denoise_prob[1]],
                y_a,
                y_v,
                ratio_a,
                ratio_v,
                vm,
                denoise_scale(lc, state.step, epoch, steps_per_epoch),
                axis_name,
            )
            positive = (y > 0.5).astype(jnp.float32)
            logs["denoised_share_v"] = losses.batch_mean(
                (y_v < 0.5) * positive, vm[:, None] * positive, axis_name
            )

        # -- Reference update (student of the Anchor) -------------------------
        if reference is not None:
            weights = objectives.reference_weights(lc, epoch)

            def ref_loss_fn(params):
                out = apply_per_example(reference, params, inputs, k_ref, train=True)
                loss, terms, teachers = objectives.reference_objective(
                    out,
                    y_a,
                    y_v,
                    a_out[spec.kd_prob[0]],
                    a_out[spec.kd_prob[1]],
                    vm,
                    weights,
                    lc,
                    axis_name,
                )
                return loss, (terms, teachers)

            (ref_loss, (ref_terms, ref_teachers)), ref_grads = jax.value_and_grad(
                ref_loss_fn, has_aux=True
            )(state.ref_params)
            ref_params, ref_opt = _adam_step(
                tx, reduce_grads(ref_grads), state.ref_opt, state.ref_params, lr
            )
            diag = {"ref_grads": ref_grads, **ref_teachers}
            teacher = jax.lax.stop_gradient(
                apply_per_example(reference, ref_params, inputs, k_teacher, train=True)
            )
            logs.update(ref_terms, ref_loss=ref_loss)
        else:
            ref_params, ref_opt, teacher = state.ref_params, state.ref_opt, None
            diag = {}

        # -- Anchor update (student of the Reference) --------------------------
        weights = objectives.anchor_weights(lc, epoch, state.step % steps_per_epoch)
        pl = (batch["pl_audio"], batch["pl_visual"]) if pseudo else None

        labels = objectives.Labels(y, y_a, y_v, mask, vm, weights.parity)

        def anchor_loss_fn(out):
            loss, terms, teachers = objectives.anchor_objective(
                out, teacher, labels, weights, lc, spec.loss, pl, axis_name
            )
            return loss, (terms, teachers)

        if plain:
            (anchor_loss, (anchor_terms, anchor_teachers)), anchor_grads = jax.value_and_grad(
                lambda p: anchor_loss_fn(anchor_forward(p)), has_aux=True
            )(state.anchor_params)
        else:
            (anchor_loss, (anchor_terms, anchor_teachers)), out_grads = jax.value_and_grad(
                anchor_loss_fn, has_aux=True
            )(a_out)
            (anchor_grads,) = anchor_vjp(out_grads)
        anchor_params, anchor_opt = _adam_step(
            tx, reduce_grads(anchor_grads), state.anchor_opt, state.anchor_params, lr
        )
        logs.update(anchor_terms, anchor_loss=anchor_loss)
        if axis_name:  # every term is a device-local share of the global loss
            logs = jax.lax.psum(logs, axis_name)
        new_state = TrainState(
            step=state.step + 1,
            anchor_params=anchor_params,
            anchor_opt=anchor_opt,
            ref_params=ref_params,
            ref_opt=ref_opt,
        )
        if diagnostics:
            diag.update(
                anchor_teachers,
                anchor_out=a_out,
                teacher=teacher,
                y_a=y_a,
                y_v=y_v,
                anchor_grads=anchor_grads,
            )
            return new_state, logs, diag
        return new_state, logs

    return step
