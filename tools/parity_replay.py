"""The JAX half of the parity harness: replays a fixture's weights and batches through
``coleaf_jax.training.step``'s jitted step and compares, group by group, what the
step computed (its losses, the JoMoLD labels, KD targets, event-aware weights and
correlation teachers its objectives used, its gradients, parameters and Adam
moments) with what the authors' step recorded. Nothing compared is recomputed here.

The command is ``python tools/parity.py compare`` (the project's venv; no torch);
``tests/test_parity.py`` and the docs' parity scenario replay the committed
fixtures in CI.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax import cli
from coleaf_jax.config import load_config_file
from coleaf_jax.models import authors_weights as aw
from coleaf_jax.training import step as step_lib
from tools.parity_inputs import (
    DISCRETE,
    DRIFT_RTOL,
    EXACT_RTOL,
    GRAD_STEPS,
    MIXED_DISCRETE_RTOL,
    NETWORKS,
    NUM_CLASSES,
    OUTPUT_RTOL,
    PARAM_RTOL,
    PHASES,
    SHIFT_INVARIANT,
    SNAPSHOTS,
    T,
    batches,
    comparable,
    initial_weights,
    sample_positions,
    token_projection,
)


def parity_config(batch_size: int):
    """``configs/llp.py`` (the authors' recipe) with every dropout off."""
    c = load_config_file("configs/llp.py")
    c.batch_size = batch_size
    c.model.dropout = 0.0
    c.model.reference_head_dropout = 0.0
    c.model.cmpae_visual_dropout = 0.0
    c.model.cmpae_residual_dropout = 0.0
    c.data.on_device = False
    return c


def replay(fixture: str, float32: bool = False) -> dict[str, float]:
    """Runs our step on the fixture's weights and batches; returns the worst relative
    error per compared group (see ``report``). The fixture's precision is used unless
    ``float32`` (e.g. our float32 step against a float64 recording: the rounding noise)."""
    ref = dict(np.load(fixture))
    meta = json.loads(str(ref.pop("meta")))
    batch_size, seed = meta["batch_size"], meta["seed"]
    dtype = np.float64 if meta.get("float64") and not float32 else np.float32
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    shapes = {n: {k: tuple(v) for k, v in meta["shapes"][n].items()} for n in NETWORKS}
    weights = initial_weights(shapes, seed)
    positions = sample_positions(shapes, seed)
    proj = token_projection(seed)
    data = batches(batch_size, seed)
    config = parity_config(batch_size)
    cli.setup_jax(config)  # the project's compilation cache: a second replay compiles nothing
    spe = PHASES[0][1]
    errors: dict[str, float] = {}

    def err(group, ours, theirs, scale=None):
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        if ours.shape != theirs.shape:
            raise ValueError(f"{group}: shape {ours.shape} vs the authors' {theirs.shape}")
        scale = np.abs(theirs).max() if scale is None else scale
        e = float(np.abs(ours - theirs).max() / max(scale, 1e-30)) if theirs.size else 0.0
        errors[group] = max(errors.get(group, 0.0), e)

    def to_batch(b):
        out = {k: jnp.asarray(v.astype(dtype)) for k, v in b.items()}
        out["mask"] = jnp.ones((batch_size, T), bool)
        out["video_mask"] = jnp.ones(batch_size, dtype)
        return out

    cast = lambda tree: jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), tree)  # noqa: E731
    anchor_params = cast(aw.anchor_from_authors(weights["anchor"]))
    ref_params = cast(aw.reference_from_authors(weights["audio"], weights["visual"]))
    state, anchor, reference, tx = step_lib.create_train_state(
        config, jax.random.key(0), to_batch(data[0]), spe, NUM_CLASSES
    )
    _check_tree(state.anchor_params, anchor_params, "anchor")
    _check_tree(state.ref_params, ref_params, "reference")
    state = state.replace(
        anchor_params=anchor_params,
        ref_params=ref_params,
        anchor_opt=tx.init(anchor_params),
        ref_opt=tx.init(ref_params),
    )

    # Forward outputs at the initial weights.
    b0 = to_batch(data[0])
    inputs = (b0["audio"], b0["video_2d"], b0["video_3d"], b0["mask"])
    a_out = jax.jit(lambda p, *x: anchor.apply({"params": p}, *x, train=True))(
        anchor_params, *inputs
    )
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    ours = {
        "global_prob": a_out["global_prob"],
        "a_prob": a_out["video_prob_a"],
        "v_prob": a_out["video_prob_v"],
        "frame_prob": a_out["seg_prob"],
        "tok_a": unit(np.asarray(a_out["tokens_a"])) @ proj,
        "tok_v": unit(np.asarray(a_out["tokens_v"])) @ proj,
        "global_uct": a_out["global_unc"],
        "a_uct": a_out["video_unc"][:, 0],
        "v_uct": a_out["video_unc"][:, 1],
    }
    for k, v in ours.items():
        err(f"forward: Anchor {k}", v, ref[f"forward/anchor/{k}"])
    err("forward: Anchor no-CA p^a", a_out["noca_video_prob_a"], ref["forward/anchor_noca/a_prob"])
    err("forward: Anchor no-CA p^v", a_out["noca_video_prob_v"], ref["forward/anchor_noca/v_prob"])
    r_out = jax.jit(lambda p, *x: reference.apply({"params": p}, *x, train=True))(
        ref_params, *inputs
    )
    for m, n in (("a", "audio"), ("v", "visual")):
        for k in ("video_prob", "seg_prob", "class_prob"):
            err(f"forward: Reference {n} {k}", r_out[m][k], ref[f"forward/{n}/{k}"])
        err(
            f"forward: Reference {n} tokens",
            unit(np.asarray(r_out[m]["tokens"])) @ proj,
            ref[f"forward/{n}/tokens"],
        )

    step_fn = jax.jit(
        step_lib.make_train_step(config, anchor, reference, tx, None, spe, diagnostics=True)
    )
    s = 0
    for epoch, n in PHASES:
        for _ in range(n):
            state, logs, diag = step_fn(
                state, to_batch(data[s]), jnp.int32(epoch - 1), jax.random.key(0)
            )
            logs, diag = jax.device_get((logs, diag))  # one transfer, not one per value
            tag = "step 1" if s == 0 else f"epoch {epoch}"
            for k in [k for k in ref if k.startswith(f"step{s}/loss/")]:
                name = k.rsplit("/", 1)[1]
                err(f"loss {name} ({tag})", logs[name], ref[k], scale=max(abs(float(ref[k])), 1e-3))
            for m in ("a", "v"):
                err(
                    f"JoMoLD labels ({tag})",
                    diag[f"y_{m}"],
                    ref[f"step{s}/denoised_{m}"],
                    scale=1.0,
                )
                if f"step{s}/kd_target_{m}" in ref:
                    err(
                        f"KD targets ({tag})",
                        diag[f"kd_target_{m}"],
                        ref[f"step{s}/kd_target_{m}"],
                        1.0,
                    )
                err(
                    f"event-aware weights ({tag})",
                    diag[f"event_weight_{m}"],
                    ref[f"step{s}/event_weight_{m}"],
                    1.0,
                )
                err(
                    f"correlation teachers ({tag})",
                    diag[f"cc_teacher_{m}"],
                    ref[f"step{s}/cc_teacher_{m}"],
                )
            s += 1
            if s in GRAD_STEPS:
                grads = {"anchor": aw.anchor_to_authors(jax.device_get(diag["anchor_grads"]))}
                grads["audio"], grads["visual"] = aw.reference_to_authors(
                    jax.device_get(diag["ref_grads"])
                )
                _compare_summaries(
                    err, grads, ref, positions, f"grads_{s}", f"gradients after step {s}"
                )
            if s in SNAPSHOTS:
                host = jax.device_get(state)
                params = {"anchor": aw.anchor_to_authors(host.anchor_params)}
                params["audio"], params["visual"] = aw.reference_to_authors(host.ref_params)
                _compare_summaries(
                    err, params, ref, positions, f"params_{s}", f"parameters after step {s}"
                )
                for moment, ours_m in (("exp_avg", "mu"), ("exp_avg_sq", "nu")):
                    mom = {"anchor": aw.anchor_to_authors(getattr(host.anchor_opt, ours_m))}
                    mom["audio"], mom["visual"] = aw.reference_to_authors(
                        getattr(host.ref_opt, ours_m)
                    )
                    _compare_summaries(
                        err, mom, ref, positions, f"{moment}_{s}", f"Adam {moment} after step {s}"
                    )
    return errors


def fixture_is_float64(fixture: str) -> bool:
    with np.load(fixture) as f:
        return bool(json.loads(str(f["meta"])).get("float64"))


def compare_recordings(a: str, b: str) -> dict[str, float]:
    """The same groups as ``replay`` between two recordings (``a`` against ``b``)."""
    ra, rb = dict(np.load(a)), dict(np.load(b))
    ra.pop("meta"), rb.pop("meta")
    errors: dict[str, float] = {}
    for key in sorted(rb, key=_group_order):
        if key.endswith(("/norm", "/scale")) or key not in ra:
            continue
        group = _group_name(key)
        scale = (
            float(rb[key.rsplit("/", 1)[0] + "/scale"])
            if key.endswith("/sample")
            else max(abs(float(rb[key])), 1e-3)
            if "/loss/" in key
            else np.abs(rb[key]).max()
        )
        if any(
            key.startswith(f"{p}_")
            and key.split("/")[1] + "/" + key.split("/")[2] in SHIFT_INVARIANT
            for p in ("params", "grads", "exp_avg", "exp_avg_sq")
        ):
            continue
        e = float(np.abs(np.asarray(ra[key], np.float64) - rb[key]).max() / max(scale, 1e-30))
        errors[group] = max(errors.get(group, 0.0), e)
    return errors


def _group_order(key: str):
    head = key.split("/")[0]
    return (0 if head == "forward" else 1, int(head[4:]) if head.startswith("step") else 0, key)


def _group_name(key: str) -> str:
    head = key.split("/")[0]
    if head == "forward":
        return "forward outputs"
    if head.startswith("step"):
        s = int(head[4:])
        tag = (
            "step 1" if s == 0 else f"epoch {next(e for e, first in _phase_starts() if s >= first)}"
        )
        what = {
            "denoised_a": "JoMoLD labels",
            "denoised_v": "JoMoLD labels",
            "kd_target_a": "KD targets",
            "kd_target_v": "KD targets",
            "event_weight_a": "event-aware weights",
            "event_weight_v": "event-aware weights",
            "cc_teacher_a": "correlation teachers",
            "cc_teacher_v": "correlation teachers",
        }.get(key.split("/")[1], key.split("/")[1])
        return f"loss {key.split('/')[2]} ({tag})" if what == "loss" else f"{what} ({tag})"
    kind, step = head.rsplit("_", 1)
    return {
        "params": "parameters",
        "grads": "gradients",
        "exp_avg": "Adam exp_avg",
        "exp_avg_sq": "Adam exp_avg_sq",
    }[kind] + f" after step {step}"


def _phase_starts():
    starts, s = [], 0
    for epoch, n in PHASES:
        starts.append((epoch, s))
        s += n
    return sorted(starts, key=lambda x: -x[1])


def _check_tree(template, converted, what: str) -> None:
    a = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(template)
    }
    b = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(converted)
    }
    if a != b:
        raise ValueError(
            f"{what}: converted parameters do not match the model: "
            f"missing {sorted(set(a) - set(b))[:5]}, extra {sorted(set(b) - set(a))[:5]}, "
            f"shapes {[k for k in a if k in b and a[k] != b[k]][:5]}"
        )


def _compare_summaries(err, tensors, ref, positions, prefix: str, group: str) -> None:
    for network, named in tensors.items():
        for name, x in named.items():
            key = f"{network}/{name}"
            if f"{prefix}/{key}/sample" not in ref or key in SHIFT_INVARIANT:
                continue
            flat = comparable(key, x)
            scale = float(ref[f"{prefix}/{key}/scale"])
            err(group, flat[positions[key]], ref[f"{prefix}/{key}/sample"], scale)
            err(group, np.linalg.norm(flat), ref[f"{prefix}/{key}/norm"])


def tolerance(group: str, float64: bool, mixed: bool = False) -> float:
    """The bound on a group's relative error.

    float64: ``EXACT_RTOL`` everywhere (the maths). float32: ``OUTPUT_RTOL`` on the
    forward outputs and the first step's losses and gradients, ``PARAM_RTOL`` on the
    parameters and Adam moments after it, 0 for the discrete decisions (denoised labels,
    KD targets, event weights; ``MIXED_DISCRETE_RTOL`` when ``mixed``: our float32
    against a float64 recording), ``DRIFT_RTOL`` after the first step.
    """
    if float64:
        return EXACT_RTOL
    if group.startswith(DISCRETE):
        return MIXED_DISCRETE_RTOL if mixed else 0.0
    first = group.startswith("forward") or group.endswith(("(step 1)", "after step 1"))
    if not first:
        return DRIFT_RTOL
    return PARAM_RTOL if group.startswith(("parameters", "Adam")) else OUTPUT_RTOL


def report(errors: dict[str, float], float64: bool, mixed: bool = False) -> tuple[str, bool]:
    """A table of the worst relative error per group, and whether all are within tolerance."""
    width = max(len(g) for g in errors)
    lines, ok = [], True
    for group, e in errors.items():
        tol = tolerance(group, float64, mixed)
        good = e <= tol
        ok &= good
        lines.append(f"{group:<{width}}  {e:9.2e}  (tol {tol:.0e}) {'ok' if good else 'FAIL'}")
    return "\n".join(lines), ok
