"""Many seeds in one compiled program: ``config.num_seeds = K``.

Trains K independent models — seeds ``config.seed + k``, each with its own
initialisation, dropout and shuffling keys derived exactly as a single run
derives them — by ``vmap``-ing the device-resident training step over the
seed axis. Every epoch each model is validated and keeps its own best
parameters; at the end each is scored on test. Writes
``WORKDIR/seeds_metrics.json``: the per-seed scores, and the mean and
standard deviation of the 18 scores over seeds, each seed's best epoch and
its validation curve (the selection score of every epoch).

Single device only; no checkpoints (a multi-seed run is a measurement of
variance: rerun it to repeat it). Holds the workdir's ``train.lock`` (one writer);
``seeds_metrics.json`` is written whole or not at all (``coleaf_jax.fileio``).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax import fileio, progress
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import evaluate, metrics
from coleaf_jax.training import train as train_lib
from coleaf_jax.training import workdir as workdir_lib
from coleaf_jax.training.device_data import make_device_step, padded_order
from coleaf_jax.training.step import create_train_state, make_train_step, matmul_precision
from coleaf_jax.training.train import validate_run_config

RESULT_FILE = "seeds_metrics.json"


def run_keys(seed: int):
    """``(init, train, shuffle)`` keys of a run, as ``train_and_evaluate`` derives them."""
    return jax.random.split(jax.random.key(seed), 3)


def vmap_seeds(device_step):
    """``device_step`` (``device_data.make_device_step``) over a leading seed axis of the
    state, the epoch order and the key; the split and the step index are shared."""
    return jax.vmap(device_step, in_axes=(0, None, 0, None, None, 0))


def predict_seeds(anchor, params, data: dict, batch_size: int) -> dict[str, np.ndarray]:
    """Anchor outputs of K stacked parameter sets: each ``(K, N, ...)``."""

    @jax.jit
    def predict(p, batch):
        def one(q):
            out = anchor.apply(
                {"params": q},
                batch["audio"],
                batch["video_2d"],
                batch["video_3d"],
                batch["mask"],
                train=False,
            )
            return {k: out[k] for k in evaluate.PREDICTION_KEYS}

        return jax.vmap(one)(p)

    n = len(data["label"])
    chunks = [
        jax.device_get(predict(params, {k: jnp.asarray(v) for k, v in b.items()}))
        for b in pipeline.epoch_batches(data, min(batch_size, n))
    ]
    return {
        k: np.concatenate([c[k] for c in chunks], axis=1)[:, :n] for k in evaluate.PREDICTION_KEYS
    }


def _score_seeds(config, anchor, params, data) -> list[dict[str, float]]:
    probs = predict_seeds(anchor, params, data, config.eval.batch_size)
    thresholds = evaluate.thresholds_from_config(config)
    k = next(iter(probs.values())).shape[0]
    return [
        evaluate.score_split({key: v[i] for key, v in probs.items()}, data, thresholds)
        for i in range(k)
    ]


def train_seeds(config, workdir: str, *, data: dict | None = None, verbose: bool = True) -> dict:
    """Trains ``config.num_seeds`` models at once; returns (and writes) their scores.

    Holds the workdir's lock (``workdir.lock``) like ``train_and_evaluate``."""
    validate_run_config(config)
    with workdir_lib.lock(workdir, verbose), matmul_precision(config):
        return _train_seeds(config, workdir, data, verbose)


def _train_seeds(config, workdir: str, data: dict | None, verbose: bool) -> dict:
    if jax.local_device_count() > 1 and verbose:
        print("num_seeds > 1 runs on one device (the seeds are the parallel axis)")
    os.makedirs(workdir, exist_ok=True)
    data = data or pipeline.load_splits(config, workdir)
    train, val, test = data["train"], data["val"], data["test"]
    n_train, num_classes = train["label"].shape
    spe = pipeline.num_batches(n_train, config.batch_size)
    seeds = [config.seed + k for k in range(config.num_seeds)]
    keys = [run_keys(s) for s in seeds]
    sample = {
        k: jnp.asarray(v)
        for k, v in pipeline.make_batch(train, np.arange(min(2, n_train)), 2).items()
    }
    states = []
    for init_key, _, _ in keys:
        state, anchor, reference, tx = create_train_state(
            config, init_key, sample, spe, num_classes
        )
        states.append(state)
    state = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *states)
    train_keys = jnp.stack([k[1] for k in keys])
    step = make_device_step(
        make_train_step(config, anchor, reference, tx, None, spe), config.batch_size
    )
    vstep = jax.jit(vmap_seeds(step))
    if pipeline.is_streamed(train):
        raise ValueError(
            f"config.num_seeds = {len(seeds)} trains the seeds in one program on the "
            f"device-resident training split, but it is streamed from disk (larger "
            f"than config.data.resident_max_gib = {config.data.resident_max_gib} GiB): "
            f"raise that budget if the memory allows, or train the seeds as separate "
            f"runs (python -m coleaf_jax.sweep)"
        )
    train_dev = jax.device_put(pipeline.resident_fields(train))

    best_score = [-np.inf] * len(seeds)
    best_params = [None] * len(seeds)
    best_epoch = [0] * len(seeds)
    curves = [[] for _ in seeds]  # the validation selection score of every epoch, per seed
    for epoch in range(config.num_epochs):
        t0 = time.time()
        orders = jnp.stack(
            [
                jnp.asarray(
                    padded_order(
                        np.asarray(
                            jax.random.permutation(jax.random.fold_in(k[2], epoch), n_train)
                        ),
                        config.batch_size,
                    )
                )
                for k in keys
            ]
        )
        record = None  # on device: summed logs and the first non-finite step
        for i in progress.bar(
            range(spe),
            total=spe,
            enabled=verbose,
            desc=f"epoch {epoch + 1}/{config.num_epochs} ({len(seeds)} seeds)",
        ):
            state, logs = vstep(
                state, train_dev, orders, jnp.int32(i), jnp.int32(epoch), train_keys
            )
            record = train_lib.track(record, logs, i)
        record["params_finite"] = train_lib.finite_params(state, per_seed=True)
        train_lib.check_finite(record, epoch, spe, config, None, seeds)  # any seed diverged: stop
        val_scores = _score_seeds(config, anchor, state.anchor_params, val)
        host_params = jax.device_get(state.anchor_params)
        for k, scores in enumerate(val_scores):
            sel = metrics.selection_score(scores, config.eval.selection)
            curves[k].append(sel)
            if sel >= best_score[k]:  # a tie keeps the later epoch, as train_and_evaluate
                best_score[k], best_epoch[k] = sel, epoch + 1
                best_params[k] = jax.tree_util.tree_map(lambda x, k=k: x[k], host_params)
        if verbose:
            print(
                f"epoch {epoch + 1}/{config.num_epochs} ({time.time() - t0:.1f}s): val selection "
                + ", ".join(
                    f"{metrics.selection_score(s, config.eval.selection):.1f}" for s in val_scores
                )
            )

    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *best_params)
    per_seed = _score_seeds(config, anchor, stacked, test)
    result = {
        "config": config.name,
        "split": "test",
        "seeds": seeds,
        "best_epochs": best_epoch,
        "val_selection_per_epoch": curves,
        "per_seed": per_seed,
        **metrics.mean_std(per_seed),
        **evaluate.video_counts(test),
    }
    fileio.atomic_write_json(os.path.join(workdir, RESULT_FILE), result)
    if verbose:
        print(metrics.format_mean_std(result, f"test, {len(seeds)} seeds: mean ± std (%)"))
    return result
