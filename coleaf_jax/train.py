"""Training: the epoch loop (validation every epoch, checkpoints, test of the best).

The step itself is in ``coleaf_jax.step``, checkpoints in ``coleaf_jax.checkpoints``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from coleaf_jax import evaluate, metrics
from coleaf_jax.checkpoints import checkpoint_manager, restore_checkpoint, save_checkpoint
from coleaf_jax.data import pipeline
from coleaf_jax.step import TrainState, create_train_state, make_train_step, num_devices, validate_config



def make_device_step(step: Callable, batch_size: int, n_devices: int = 1,
                     axis_name: str | None = None) -> Callable:
    """Wraps ``step`` to gather its batch on device from a resident split.

    ``device_step(state, data, order, i, epoch, key)``: ``data`` holds the whole
    split (``BATCH_KEYS`` arrays and optionally ``mask``), ``order`` the
    epoch's permutation padded with -1 to a whole number of batches, ``i`` the
    step within the epoch. Under ``pmap`` each device takes its slice of the
    global batch, exactly as the host pipeline reshapes it, and padding videos
    are zeros with ``video_mask = 0`` as there: both paths train identically.
    """
    per_device = batch_size // n_devices

    def device_step(state, data, order, i, epoch, key):
        start = i * batch_size
        if axis_name:
            start = start + jax.lax.axis_index(axis_name) * per_device
        idx = jax.lax.dynamic_slice_in_dim(order, start, per_device)
        valid = idx >= 0
        safe = jnp.where(valid, idx, 0)
        batch = {}
        for k in pipeline.batch_keys(data):
            x = data[k][safe]
            batch[k] = jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0).astype(x.dtype)
        seg = data["mask"][safe] if "mask" in data else jnp.ones(data["audio"].shape[1:2], bool)
        batch["mask"] = seg & valid[:, None]
        batch["video_mask"] = valid.astype(jnp.float32)
        return step(state, batch, epoch, key)

    return device_step


def make_scan_epoch(device_step: Callable, steps_per_epoch: int) -> Callable:
    """A whole epoch as one ``lax.scan`` over ``device_step`` (``make_device_step``).

    ``run_epoch(state, data, order, epoch, key) -> (state, summed logs)``: no
    host round trip between steps.
    """

    def run_epoch(state, data, order, epoch, key):
        def body(carry, i):
            carry, logs = device_step(carry, data, order, i, epoch, key)
            return carry, logs

        state, logs = jax.lax.scan(body, state, jnp.arange(steps_per_epoch, dtype=jnp.int32))
        return state, jax.tree_util.tree_map(lambda x: x.sum(0), logs)

    return run_epoch


def padded_order(perm: np.ndarray, batch_size: int) -> np.ndarray:
    """The permutation padded with -1 to a whole number of batches."""
    n = len(perm)
    total = pipeline.num_batches(n, batch_size) * batch_size
    return np.concatenate([np.asarray(perm, np.int32), np.full(total - n, -1, np.int32)])


def split_bytes(data: dict) -> int:
    return sum(data[k].nbytes for k in pipeline.batch_keys(data))


def _device_batch(batch, n_devices: int):
    if n_devices == 1:
        return {k: jnp.asarray(v) for k, v in batch.items()}
    return {k: jnp.asarray(v.reshape((n_devices, -1) + v.shape[1:])) for k, v in batch.items()}


def _append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: dict | None = None,
                       on_epoch_end: Callable[[int, TrainState], None] | None = None,
                       verbose: bool = True) -> dict:
    """Trains, validates every epoch, keeps checkpoints, then scores the best on test.

    Re-running with the same ``workdir`` resumes from the latest checkpoint.
    Writes ``workdir/config.json``, ``workdir/metrics.jsonl`` (per-epoch losses
    and validation scores) and ``workdir/test_metrics.json``; returns the latter.
    """
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    data = data or pipeline.load_splits(config, workdir)
    train, val, test = data["train"], data["val"], data["test"]
    num_classes = train["label"].shape[1]
    n_train = len(train["label"])
    steps_per_epoch = pipeline.num_batches(n_train, config.batch_size)
    n_dev = num_devices(config)

    root_key = jax.random.key(config.seed)
    init_key, train_key, shuffle_key = jax.random.split(root_key, 3)
    sample = _device_batch(pipeline.make_batch(train, np.arange(min(2, n_train)), 2), 1)
    state, anchor, reference, tx = create_train_state(config, init_key, sample, steps_per_epoch,
                                                      num_classes)
    mngr = checkpoint_manager(workdir)
    start_epoch = 0
    if mngr.latest_step() is not None:
        start_epoch = mngr.latest_step()
        state = restore_checkpoint(mngr, start_epoch, state)
        if verbose:
            print(f"resuming from the checkpoint after epoch {start_epoch}")

    step = make_train_step(config, anchor, reference, tx, "batch" if n_dev > 1 else None,
                           steps_per_epoch)
    on_device = config.data.on_device and split_bytes(train) <= config.data.on_device_max_gib * 2**30
    if on_device:  # the split lives on every device; batches are gathered there
        step = make_device_step(step, config.batch_size, n_dev, "batch" if n_dev > 1 else None)
        train_dev = pipeline.resident_fields(train)
        devices = jax.local_devices()[:n_dev]
        train_dev = (flax.jax_utils.replicate(train_dev, devices) if n_dev > 1
                     else jax.device_put(train_dev))
        in_axes = (0, 0, None, None, None, None)
        if config.scan_epoch:  # one compiled program per epoch: lax.scan over its steps
            step = make_scan_epoch(step, steps_per_epoch)
            in_axes = (0, 0, None, None, None)
    else:
        in_axes = (0, 0, None, None)
    if n_dev > 1:
        step_fn = jax.pmap(step, axis_name="batch", in_axes=in_axes,
                           devices=jax.local_devices()[:n_dev])
        state = flax.jax_utils.replicate(state, jax.local_devices()[:n_dev])
    else:
        step_fn = jax.jit(step)
    if verbose:
        print(f"training on {n_dev} device(s) ({jax.devices()[0].platform}), "
              f"{'data on device' if on_device else 'host input pipeline'}, "
              f"{steps_per_epoch} steps per epoch")
    predict_fn = evaluate.make_predict_fn(anchor)
    metrics_path = os.path.join(workdir, "metrics.jsonl")

    for epoch in range(start_epoch, config.num_epochs):
        t0 = time.time()
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n_train))
        epoch_arg = jnp.int32(epoch)
        if on_device:
            order = jnp.asarray(padded_order(perm, config.batch_size))
            calls = ((train_dev, order, jnp.int32(i), epoch_arg, train_key)
                     for i in range(steps_per_epoch))
            if config.scan_epoch:
                calls = [(train_dev, order, epoch_arg, train_key)]
        else:
            calls = ((_device_batch(b, n_dev), epoch_arg, train_key)
                     for b in pipeline.epoch_batches(train, config.batch_size, perm,
                                                      config.data.bucket))
        bar = tqdm(calls, total=1 if on_device and config.scan_epoch else steps_per_epoch, desc=f"epoch {epoch + 1}/{config.num_epochs}",
                   disable=not verbose, leave=False, dynamic_ncols=True)
        sums = None  # summed on device; fetched only when shown
        for i, args in enumerate(bar):
            state, logs = step_fn(state, *args)
            sums = logs if sums is None else jax.tree_util.tree_map(jnp.add, sums, logs)
            if i % config.log_every_steps == 0 and verbose and not (on_device and config.scan_epoch):
                shown = jax.device_get({k: logs[k] for k in ("anchor_loss", "ref_loss") if k in logs})
                bar.set_postfix({k: f"{float(np.ravel(v)[0]):.3f}" for k, v in shown.items()})
        sums = {k: float(np.ravel(v)[0]) for k, v in jax.device_get(sums).items()}
        bar.close()
        host_state = flax.jax_utils.unreplicate(state) if n_dev > 1 else state
        val_scores = evaluate.evaluate_params(config, anchor, host_state.anchor_params, val,
                                              predict_fn=predict_fn)
        selection = metrics.selection_score(val_scores, config.eval.selection)
        save_checkpoint(mngr, epoch + 1, host_state, selection)
        train_logs = {k: v / steps_per_epoch for k, v in sums.items()}
        _append_jsonl(metrics_path, {"epoch": epoch + 1, "step": int(host_state.step),
                                     "seconds": time.time() - t0, "train": train_logs,
                                     "val": val_scores, "val_selection": selection})
        if verbose:
            print(f"epoch {epoch + 1}/{config.num_epochs} ({time.time() - t0:.1f}s): "
                  f"anchor loss {train_logs['anchor_loss']:.4f}"
                  + (f", reference loss {train_logs['ref_loss']:.4f}" if "ref_loss" in train_logs else "")
                  + f" | val selection {selection:.2f}, seg AV {val_scores['seg_av']:.1f}, "
                  f"Ao {val_scores['seg_ao']:.1f}, Vo {val_scores['seg_vo']:.1f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, host_state)

    best = mngr.best_step()
    host_state = restore_checkpoint(mngr, best, flax.jax_utils.unreplicate(state) if n_dev > 1 else state)
    test_scores = evaluate.evaluate_params(config, anchor, host_state.anchor_params, test,
                                          predict_fn=predict_fn)
    result = evaluate.write_result(os.path.join(workdir, "test_metrics.json"), test_scores, config,
                                   "test", best, host_state.step, config.eval.thresholds)
    if verbose:
        print(metrics.format_table({config.name: test_scores},
                                   title=f"test, best epoch {best} (%)"))
        if config.eval.selection == "av":  # UnAV-100: audio-visual labels, AV is the score
            print(f"audio-visual events (UnAV-100 metric): segment AV {test_scores['seg_av']:.1f}, "
                  f"event AV {test_scores['evt_av']:.1f}")
    mngr.close()
    return result
