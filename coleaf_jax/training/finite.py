"""Non-finite losses and parameters: tracking the first bad step on the device without a
host round trip per step, and the error that names the epoch, the step and the terms
(and, with many seeds, which seed diverged).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax.training import workdir as workdir_lib


class NonFiniteLossError(workdir_lib.RunError):
    """A training loss or the parameters became NaN or infinite."""


def _finite(logs) -> jnp.ndarray:
    """Whether every logged term is finite (on every device)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(logs)]))


@jax.jit
def _track_first(logs):
    """Starts an epoch's on-device record: summed logs, the first step (0-based) whose
    logs are not all finite (-1: none yet) and that step's logs."""
    return {
        "sums": logs,
        "first_bad": jnp.where(_finite(logs), -1, 0).astype(jnp.int32),
        "bad_logs": logs,
    }


@jax.jit
def _track(record, logs, i):
    """Adds step ``i``'s logs to the record (no host round trip)."""
    first = (record["first_bad"] < 0) & ~_finite(logs)
    return {
        "sums": jax.tree_util.tree_map(jnp.add, record["sums"], logs),
        "first_bad": jnp.where(first, i, record["first_bad"]).astype(jnp.int32),
        "bad_logs": jax.tree_util.tree_map(
            lambda b, v: jnp.where(first, v, b), record["bad_logs"], logs
        ),
    }


def track(record: dict | None, logs, i: int) -> dict:
    """The epoch's on-device record after step ``i`` (0-based; ``record`` None at the
    first step): summed logs, the first step whose logs are not all finite and its logs.
    No host round trip; :func:`check_finite` reads it once per epoch."""
    return _track_first(logs) if record is None else _track(record, logs, jnp.int32(i))


@jax.jit
def track_stacked(logs):
    """The record of an epoch from its per-step logs ``(steps, ...)`` (``lax.scan``)."""
    leaves = jax.tree_util.tree_leaves(logs)
    ok = jnp.stack([jnp.isfinite(v).reshape(v.shape[0], -1).all(1) for v in leaves]).all(0)
    first = jnp.argmin(ok)  # the first False
    return {
        "sums": jax.tree_util.tree_map(lambda v: v.sum(0), logs),
        "first_bad": jnp.where(ok.all(), -1, first).astype(jnp.int32),
        "bad_logs": jax.tree_util.tree_map(lambda v: v[first], logs),
    }


@functools.partial(jax.jit, static_argnames="per_seed")
def finite_params(state, per_seed: bool = False) -> dict:
    """Whether the Anchor's and the Reference's parameters are all finite, on device
    (``per_seed``: one flag per entry of the leading seed axis). A step's loss is
    computed before its update, so the last update of an epoch shows only here."""

    def check(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        if not leaves:  # no Reference (method='anchor_only')
            return jnp.array(True)
        if per_seed:
            return jnp.stack([jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in leaves]).all(
                0
            )
        return jnp.stack([jnp.isfinite(x).all() for x in leaves]).all()

    return {"anchor": check(state.anchor_params), "reference": check(state.ref_params)}


def scalar(v) -> float:
    """One logged value (the first device's copy under pmap: all hold the psum)."""
    return float(np.ravel(v)[0])


def _non_finite_terms(logs: dict, seeds: list[int] | None) -> str:
    """``name = value`` of the non-finite logged values; with ``seeds`` (a leading seed
    axis) grouped by seed, else the first non-finite copy (pmap: one per device)."""
    if seeds is None:
        values = {k: np.ravel(v) for k, v in logs.items()}
        return ", ".join(
            f"{k} = {v[~np.isfinite(v)][0]}" for k, v in values.items() if not np.isfinite(v).all()
        )
    parts = []
    for index, seed in enumerate(seeds):
        bad = [
            f"{k} = {np.ravel(v[index])[0]}"
            for k, v in logs.items()
            if not np.isfinite(v[index]).all()
        ]
        if bad:
            parts.append(f"seed {seed} (index {index} of {len(seeds)}): {', '.join(bad)}")
    return "; ".join(parts)


def check_finite(
    record: dict,
    epoch: int,
    steps_per_epoch: int,
    config,
    workdir: str | None,
    seeds: list[int] | None = None,
) -> dict:
    """Raises ``NonFiniteLossError`` when a step of ``epoch`` (0-based) logged a non-finite
    loss, or the epoch left non-finite parameters (``record["params_finite"]``, from
    :func:`finite_params`; ``workdir``: where the earlier epochs' checkpoints are, if
    any); returns the epoch's summed logs otherwise. ``seeds``: the record has a
    leading seed axis (``coleaf_jax.training.seeds``); the message names the diverged seeds."""
    record = jax.device_get(record)
    first_bad = int(np.ravel(record["first_bad"])[0])
    params_ok = {k: np.asarray(v) for k, v in record.get("params_finite", {}).items()}
    if first_bad < 0 and all(v.all() for v in params_ok.values()):
        if seeds is not None:
            return {k: np.asarray(v) for k, v in record["sums"].items()}
        return {k: scalar(v) for k, v in record["sums"].items()}
    kept = (
        f"; the checkpoints of epochs up to {epoch} are kept in "
        f"{os.path.join(workdir, 'checkpoints')}"
        if epoch and workdir
        else ""
    )
    advice = (
        f"Stopped before validation: nothing of epoch {epoch + 1} is scored, selected or "
        f"saved{kept}. Lower --config.learning_rate (now {config.learning_rate}) in a new "
        f"--workdir, or check the inputs"
    )
    if first_bad >= 0:
        raise NonFiniteLossError(
            f"training diverged: non-finite loss at step "
            f"{epoch * steps_per_epoch + first_bad + 1} (epoch {epoch + 1}, step {first_bad + 1} "
            f"of {steps_per_epoch}): {_non_finite_terms(record['bad_logs'], seeds)}. {advice}"
        )
    names = {"anchor": "the Anchor's", "reference": "the Reference's"}
    which = " and ".join(names[k] for k, v in params_ok.items() if not v.all()) + " parameters"
    if seeds is not None:
        bad_seeds = sorted(
            {
                seeds[i]
                for v in params_ok.values()
                for i in np.flatnonzero(~np.broadcast_to(v, (len(seeds),)))
            }
        )
        which += f" (seed{'s' if len(bad_seeds) > 1 else ''} {', '.join(map(str, bad_seeds))})"
    raise NonFiniteLossError(
        f"training diverged: {which} are NaN/inf after step "
        f"{(epoch + 1) * steps_per_epoch} (the last of epoch {epoch + 1}), although every "
        f"logged loss of the epoch is finite (a step logs its loss before its update). {advice}"
    )
