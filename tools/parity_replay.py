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
import math

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
    INIT_TOL,
    MIXED_DISCRETE_RTOL,
    NETWORKS,
    NUM_CLASSES,
    OUTPUT_RTOL,
    PARAM_RTOL,
    SHIFT_INVARIANT,
    T,
    batches,
    init_deviation,
    init_statistics,
    initial_weights,
    phase_of_step,
    plan_from_meta,
    sample_positions,
    steps_per_epoch,
    tables,
    token_projection,
)

INIT_GROUP = "initial weights, torch's init (statistics: deviation / allowed)"


def parity_config(batch_size: int, anchor: str = "cmpae"):
    """``configs/llp.py`` (the authors' recipe; ``:coleaf_han`` for the HAN Anchor) with
    every dropout off."""
    c = load_config_file("configs/llp.py" + (":coleaf_han" if anchor == "han" else ""))
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
    plan = plan_from_meta(meta)
    batch_size, seed, anchor_kind = plan.batch_size, meta["seed"], plan.anchor
    dtype = np.float64 if meta.get("float64") and not float32 else np.float32
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    shapes = {n: {k: tuple(v) for k, v in meta["shapes"][n].items()} for n in NETWORKS}
    table = tables(anchor_kind)
    weights = initial_weights(shapes, seed, anchor_kind)
    positions = sample_positions(shapes, seed, anchor_kind)
    proj = token_projection(seed)
    data = batches(plan)
    config = parity_config(batch_size, anchor_kind)
    cli.setup_jax(config)  # the project's compilation cache: a second replay compiles nothing
    spe = steps_per_epoch(plan)
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

    def to_authors(anchor_tree, ref_tree):
        out = {"anchor": aw.to_authors(anchor_tree, table["anchor"])}
        out["audio"], out["visual"] = aw.reference_to_authors(ref_tree)
        return out

    sum_squares = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: jnp.sum(x * x), tree))

    def summaries(anchor_tree, ref_tree):
        """Our trees in the authors' layout (views where a transpose does it) and each
        tensor's norm, its sum of squares taken on the device."""
        sq_a, sq_r = jax.device_get(sum_squares((anchor_tree, ref_tree)))
        norms = {
            "anchor": _table_norms(sq_a, table["anchor"]),
            "audio": _table_norms(sq_r, table["audio"]),
            "visual": _table_norms(sq_r, table["visual"]),
        }
        return to_authors(*jax.device_get((anchor_tree, ref_tree))), norms

    cast = lambda tree: jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), tree)  # noqa: E731
    anchor_params = cast(aw.from_authors(weights["anchor"], table["anchor"], "anchor"))
    ref_params = cast(aw.reference_from_authors(weights["audio"], weights["visual"]))
    state, anchor, reference, tx = step_lib.create_train_state(
        config, jax.random.key(seed), to_batch(data[0]), spe, NUM_CLASSES
    )
    _check_tree(state.anchor_params, anchor_params, "anchor")
    _check_tree(state.ref_params, ref_params, "reference")
    # Our initialisation (config.model.init = 'torch') against the one the authors' code
    # drew: other generators, so compared in law (tools/parity_inputs.py:init_deviation).
    if any(k.startswith("init/") for k in ref):
        ours_init = to_authors(*jax.device_get((state.anchor_params, state.ref_params)))
        for network, named in ours_init.items():
            for name, x in named.items():
                theirs = ref[f"init/{network}/{name}"]
                errors[INIT_GROUP] = max(
                    errors.get(INIT_GROUP, 0.0), init_deviation(init_statistics(x), theirs)
                )
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
        "a_prob": a_out["video_prob_a"],
        "v_prob": a_out["video_prob_v"],
        "frame_prob": a_out["seg_prob"],
        "tok_a": unit(np.asarray(a_out["tokens_a"])) @ proj,
        "tok_v": unit(np.asarray(a_out["tokens_v"])) @ proj,
    }
    if anchor_kind == "han":
        ours["global_prob"] = a_out["video_prob"]
    else:
        ours.update(
            global_prob=a_out["global_prob"],
            global_uct=a_out["global_unc"],
            a_uct=a_out["video_unc"][:, 0],
            v_uct=a_out["video_unc"][:, 1],
        )
        err(
            "forward: Anchor no-CA p^a",
            a_out["noca_video_prob_a"],
            ref["forward/anchor_noca/a_prob"],
        )
        err(
            "forward: Anchor no-CA p^v",
            a_out["noca_video_prob_v"],
            ref["forward/anchor_noca/v_prob"],
        )
    for k, v in ours.items():
        err(f"forward: Anchor {k}", v, ref[f"forward/anchor/{k}"])
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
    for s, epoch in enumerate(phase_of_step(plan)):
        state, logs, diag = step_fn(
            state, to_batch(data[s]), jnp.int32(epoch - 1), jax.random.key(0)
        )
        logs, diag = jax.device_get((logs, diag))  # one transfer, not one per value
        tag = "step 1" if s == 0 else f"epoch {epoch}"
        for k in [k for k in ref if k.startswith(f"step{s}/loss/")]:
            name = k.rsplit("/", 1)[1]
            err(f"loss {name} ({tag})", logs[name], ref[k], scale=max(abs(float(ref[k])), 1e-3))
        for m in ("a", "v"):
            err(f"JoMoLD labels ({tag})", diag[f"y_{m}"], ref[f"step{s}/denoised_{m}"], scale=1.0)
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
        done = s + 1
        if done in plan.grad_steps:
            grads, norms = summaries(diag["anchor_grads"], diag["ref_grads"])
            _compare_summaries(
                err, grads, norms, ref, positions, f"grads_{done}", f"gradients after step {done}"
            )
        if done in plan.snapshots:
            for prefix, group, trees in (
                ("params", "parameters", (state.anchor_params, state.ref_params)),
                ("exp_avg", "Adam exp_avg", (state.anchor_opt.mu, state.ref_opt.mu)),
                ("exp_avg_sq", "Adam exp_avg_sq", (state.anchor_opt.nu, state.ref_opt.nu)),
            ):
                tensors, norms = summaries(*trees)
                _compare_summaries(
                    err,
                    tensors,
                    norms,
                    ref,
                    positions,
                    f"{prefix}_{done}",
                    f"{group} after step {done}",
                )
    return errors


def fixture_is_float64(fixture: str) -> bool:
    with np.load(fixture) as f:
        return bool(json.loads(str(f["meta"])).get("float64"))


def compare_recordings(a: str, b: str) -> dict[str, float]:
    """The same groups as ``replay`` between two recordings (``a`` against ``b``)."""
    ra, rb = dict(np.load(a)), dict(np.load(b))
    ra.pop("meta")
    epochs = phase_of_step(plan_from_meta(json.loads(str(rb.pop("meta")))))
    errors: dict[str, float] = {}
    for key in sorted(rb, key=_group_order):
        if key.endswith(("/norm", "/scale")) or key not in ra or key.startswith("init/"):
            continue  # the initial draws differ by design (torch's float32 / float64 streams)
        group = _group_name(key, epochs)
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


def _group_name(key: str, epochs: list[int]) -> str:
    head = key.split("/")[0]
    if head == "forward":
        return "forward outputs"
    if head.startswith("step"):
        s = int(head[4:])
        tag = "step 1" if s == 0 else f"epoch {epochs[s]}"
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


def _table_norms(sum_squares, table) -> dict[str, float]:
    """Each authors' entry's norm from our leaves' sums of squares, the parts no output
    depends on left out as ``comparable`` leaves them (the key third of in_proj_bias)."""
    out = {}
    for name, path, kind in table:
        parts = aw._qkv_paths(path) if kind.startswith("qkv") else [path]
        if kind == "qkv":  # in_proj_bias: query and value thirds only
            parts = [parts[0], parts[2]]
        out[name] = math.sqrt(sum(float(aw._get(sum_squares, p)) for p in parts))
    return out


def _compare_summaries(err, tensors, norms, ref, positions, prefix: str, group: str) -> None:
    for network, named in tensors.items():
        for name, x in named.items():
            key = f"{network}/{name}"
            if f"{prefix}/{key}/sample" not in ref or key in SHIFT_INVARIANT:
                continue
            pos = positions[key]
            values = np.asarray(x).flat[pos].astype(np.float64)  # no copy of a transposed view
            if key.endswith("in_proj_bias"):  # as ``comparable``: the key third zeroed
                d = np.size(x) // 3
                values[(pos >= d) & (pos < 2 * d)] = 0.0
            scale = float(ref[f"{prefix}/{key}/scale"])
            err(group, values, ref[f"{prefix}/{key}/sample"], scale)
            err(group, norms[network][name], ref[f"{prefix}/{key}/norm"])


def tolerance(group: str, float64: bool, mixed: bool = False) -> float:
    """The bound on a group's relative error.

    float64: ``EXACT_RTOL`` everywhere (the maths). float32: ``OUTPUT_RTOL`` on the
    forward outputs and the first step's losses and gradients, ``PARAM_RTOL`` on the
    parameters and Adam moments after it, 0 for the discrete decisions (denoised labels,
    KD targets, event weights; ``MIXED_DISCRETE_RTOL`` when ``mixed``: our float32
    against a float64 recording), after the first step the observable's own
    ``DRIFT_RTOL`` (float32 rounding amplified by training, measured). The initial
    weights' statistics: ``INIT_TOL`` in either precision.
    """
    if group.startswith(INIT_GROUP):
        return INIT_TOL
    if float64:
        return EXACT_RTOL
    if group.startswith(DISCRETE):
        return MIXED_DISCRETE_RTOL if mixed else 0.0
    first = group.startswith("forward") or group.endswith(("(step 1)", "after step 1"))
    if first:
        return PARAM_RTOL if group.startswith(("parameters", "Adam")) else OUTPUT_RTOL
    return DRIFT_RTOL[drift_observable(group)]


def drift_observable(group: str) -> str:
    """The observable of a group after the first step (a key of ``DRIFT_RTOL``)."""
    for name in sorted(DRIFT_RTOL, key=len, reverse=True):  # 'Adam exp_avg_sq' first
        if group.startswith(name):
            return name
    raise KeyError(f"no float32 drift bound for {group!r}")


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
