"""Training: the epoch loop (validation every epoch, checkpoints, test of the best).

The step itself is in ``coleaf_jax.training.step``, the split on the device in
``device_data``, the non-finite checks in ``finite``, ``metrics.jsonl`` and
``test_metrics.json`` in ``records``, checkpoints in ``checkpoints``, the workdir
lock and stored config in ``workdir``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from coleaf_jax import config as config_lib
from coleaf_jax import fileio, progress
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import evaluate, metrics
from coleaf_jax.training import distributed
from coleaf_jax.training import workdir as workdir_lib
from coleaf_jax.training.checkpoints import (
    CheckpointDamagedError,
    best_epoch,
    open_checkpoints,
    prune_checkpoints,
    restore_checkpoint,
    restore_latest_intact,
    save_checkpoint,
    selection_scores,
)
from coleaf_jax.training.device_data import (
    device_batch,
    make_device_step,
    make_scan_epoch,
    padded_order,
    split_bytes,
)
from coleaf_jax.training.finite import (
    check_finite,
    finite_params,
    scalar,
    track,
    track_stacked,
)
from coleaf_jax.training.records import (
    METRICS_FILE,
    RESULT_FILE,
    append_jsonl,
    finished_result,
    keep_metrics_rows,
)
from coleaf_jax.training.step import (
    TrainState,
    create_train_state,
    make_train_step,
    matmul_precision,
    num_devices,
    validate_config,
)


@dataclasses.dataclass
class RunStatus:
    """Where a run is (``train_and_evaluate`` keeps it up to date), so that a Ctrl-C can
    say in one line where it stopped and where re-running resumes."""

    phase: str = "starting"  # loading, compiling, training, validating, saving, testing...
    epoch: int = 0  # the epoch in progress (1-based), 0 before the first
    resume_epoch: int = 1  # the epoch a re-run starts with (1-based)
    num_epochs: int = 0
    best_epoch: int = 0  # while testing: the checkpoint tested


def validate_run_config(config) -> None:
    """The config (``config.validate``: every key against its declared check), the
    devices (``step.validate_config``) and the processes (``distributed.validate``)."""
    validate_config(config)
    distributed.validate(config)


def host_batches(train, batch_size: int, perm, bucket: int, n_all: int):
    """The host pipeline's batches of one epoch, each of ``batch_size`` rows: the size
    fitted to the split over all ``n_all`` devices (``pipeline.fit_batch_size(...,
    n_all)``), which the rows of this process's devices (``distributed.local_rows``)
    index. A batch larger than the split is one batch of the split rounded up to
    ``n_all``, padded (``video_mask`` 0), never cut back to the split's size."""
    return pipeline.epoch_batches(train, batch_size, perm, bucket, multiple=n_all)


def prune_left_over(mngr, verbose: bool) -> None:
    """Keeps only the best and the latest checkpoint when a run starts: a kill between a
    save and its deletes leaves a third one (on the last epoch, for good). A damaged
    score is left to ``restore_latest_intact``, which names it and moves it away."""
    try:
        deleted = prune_checkpoints(mngr)
    except CheckpointDamagedError:
        return
    if deleted and verbose:
        print(
            f"removed checkpoint(s) {deleted}: neither the best on validation nor the latest "
            f"(left by a run stopped while saving)"
        )


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    data: dict | None = None,
    on_epoch_end: Callable[[int, TrainState], None] | None = None,
    on_test: Callable[[dict, dict, int], None] | None = None,
    status: RunStatus | None = None,
    verbose: bool = True,
) -> dict:
    """Trains, validates every epoch, keeps checkpoints, then scores the best on test.

    ``on_test(test, probabilities, epoch)`` is called with the test split, the best
    checkpoint's predictions on it (``evaluate.predict_split``'s dict) and its epoch
    once they are scored (``train.py`` builds the run report from them). ``status``, if
    given, is kept up to date with the phase and epoch (``train.py`` reports it on Ctrl-C).

    One training per workdir at a time (``WORKDIR/train.lock``). Re-running
    with the same ``workdir`` resumes from the latest intact checkpoint, if the
    config differs from the stored one only in ``workdir.RESUMABLE_KEYS``; a
    finished run is not trained again (its stored result is returned). Writes
    ``workdir/config.json``, ``workdir/metrics.jsonl`` (one row per epoch:
    losses, validation scores) and ``workdir/test_metrics.json``; returns the
    latter. Stops with ``NonFiniteLossError`` at the first non-finite loss, and with
    ``fileio.DiskFullError`` naming the file (or checkpoint) when the disk is full: what
    was being written is removed (a checkpoint's folder, its epoch's row), so re-running
    resumes from the last complete checkpoint.
    """
    validate_run_config(config)
    status = status if status is not None else RunStatus()
    status.num_epochs = config.num_epochs
    if not distributed.is_primary():  # multi-process: process 0 alone holds the workdir
        with matmul_precision(config):
            return _train_and_evaluate(
                config, workdir, None, data, on_epoch_end, None, status, False
            )
    with (
        distributed.announce_failure(),
        workdir_lib.lock(workdir, verbose),
        matmul_precision(config),
    ):
        mngr = open_checkpoints(workdir, move=True, verbose=verbose)
        try:
            return _train_and_evaluate(
                config, workdir, mngr, data, on_epoch_end, on_test, status, verbose
            )
        except Exception as e:  # a full disk however it was raised: one error naming a path
            if fileio.is_disk_full(e) and not isinstance(e, fileio.DiskFullError):
                raise fileio.as_disk_full(e, workdir) from e
            raise
        finally:
            if sys.exc_info()[1] is None:
                mngr.close()
            else:  # the error on its way out is the one to report, not close()'s echo of it
                with contextlib.suppress(Exception):
                    mngr.close()


def _train_and_evaluate(
    config, workdir, mngr, data, on_epoch_end, on_test, status, verbose
) -> dict:

    primary = mngr is not None  # False: another process of a multi-process run (no files)
    started = time.time()  # time to result: the phases are recorded in the metrics files
    start_epoch = 0 if primary else distributed.wait_for_start()  # process 0's decision
    if start_epoch is None:  # process 0 found the run finished
        return {}
    trained = max(mngr.all_steps(), default=0) if primary else 0
    if trained:
        changed = workdir_lib.check_resume(workdir, config, trained, defaults=config_lib.defaults)
        if changed and verbose:
            print(f"resuming with {workdir_lib.format_differences(changed)}")
    if primary:
        workdir_lib.write_config(workdir, config)
    if trained:
        prune_left_over(mngr, verbose)
    done = finished_result(mngr, workdir, config.num_epochs) if trained else None
    if done is not None:
        distributed.announce_start(None)
        if verbose:
            print(
                f"{workdir}: this run is finished ({trained} of {config.num_epochs} epochs, "
                f"test scores of epoch {done['epoch']} in {os.path.join(workdir, RESULT_FILE)}); "
                f"nothing to do (raise --config.num_epochs to train longer)"
            )
        return done

    status.phase = "loading"
    data = data or pipeline.load_splits(config, workdir)
    data_seconds = time.time() - started  # preparing (first run) and loading the splits
    status.phase = "compiling"
    train, val, test = data["train"], data["val"], data["test"]
    num_classes = train["label"].shape[1]
    n_train = len(train["label"])
    n_dev = num_devices(config)
    n_all = distributed.global_devices(n_dev)  # the global batch's shards: n_dev in one process
    axis = "batch" if n_all > 1 else None
    # never padded beyond the split: a batch of 1e8 on 64 videos is one batch of 64
    batch_size = pipeline.fit_batch_size(config.batch_size, n_train, n_all)
    note = pipeline.batch_size_note(config.batch_size, n_train, n_all)
    if note and verbose:
        print(note)
    steps_per_epoch = pipeline.num_batches(n_train, batch_size)

    root_key = jax.random.key(config.seed)
    init_key, train_key, shuffle_key = jax.random.split(root_key, 3)
    sample = device_batch(pipeline.make_batch(train, np.arange(min(2, n_train)), 2), 1)
    state, anchor, reference, tx = create_train_state(
        config, init_key, sample, steps_per_epoch, num_classes
    )
    template = state
    if primary:
        start_epoch, state = restore_latest_intact(mngr, workdir, template, config, verbose)
    if start_epoch and primary:  # again, once damaged checkpoints are out of the way
        prune_left_over(mngr, verbose)
    status.epoch = status.resume_epoch = start_epoch + 1
    if start_epoch and verbose:
        print(f"resuming from the checkpoint after epoch {start_epoch}")
    metrics_path = os.path.join(workdir, METRICS_FILE)
    if primary:
        keep_metrics_rows(metrics_path, start_epoch)
        distributed.announce_start(start_epoch)  # the other processes load the data now
    if start_epoch:  # multi-process: all continue from process 0's restored state
        state = distributed.broadcast(state)

    step = make_train_step(config, anchor, reference, tx, axis, steps_per_epoch)
    on_device = (
        config.data.on_device
        and not pipeline.is_streamed(train)
        and split_bytes(train) <= config.data.on_device_max_gib * 2**30
    )
    scan = on_device and config.scan_epoch
    if on_device:  # the split lives on every device; batches are gathered there
        step = make_device_step(step, batch_size, n_all, axis)
        train_dev = pipeline.resident_fields(train)
        devices = jax.local_devices()[:n_dev]
        train_dev = (
            flax.jax_utils.replicate(train_dev, devices) if axis else jax.device_put(train_dev)
        )
        in_axes = (0, 0, None, None, None, None)
        if scan:  # one compiled program per epoch: lax.scan over its steps
            step = make_scan_epoch(step, steps_per_epoch, per_step=True)
            in_axes = (0, 0, None, None, None)
    else:
        in_axes = (0, 0, None, None)
    if axis:
        step_fn = jax.pmap(
            step,
            axis_name="batch",
            in_axes=in_axes,
            donate_argnums=(0,),
            devices=distributed.pmap_devices(n_dev),
        )
        state = flax.jax_utils.replicate(state, jax.local_devices()[:n_dev])
    else:
        step_fn = jax.jit(step, donate_argnums=(0,))  # the state is replaced every step
    if verbose and start_epoch < config.num_epochs:
        print(
            f"training on {n_all} device(s) ({jax.devices()[0].platform}), "
            f"{'data on device' if on_device else 'host input pipeline'}, "
            f"{steps_per_epoch} steps per epoch"
        )
    rows = None
    if distributed.process_count() > 1:
        if not on_device:  # the host pipeline's global batch: this process's rows
            rows = distributed.local_rows(batch_size, n_dev)
        if verbose:
            print(
                f"{distributed.process_count()} processes, {n_all} devices in all, "
                f"{batch_size // n_all} videos of each batch per device"
            )
    predict_fn = evaluate.make_predict_fn(anchor)
    val_counts = evaluate.video_counts(val)

    first_step_seconds = None  # from the start to the first step's result (compilation)
    for epoch in range(start_epoch, config.num_epochs):
        t0 = time.time()
        if epoch == start_epoch:  # initialisation, data on the device(s), before the loop
            setup_seconds = t0 - started - data_seconds
        status.epoch = epoch + 1
        status.phase = "compiling" if first_step_seconds is None else "training"
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n_train))
        epoch_arg = jnp.int32(epoch)
        if on_device:
            order = jnp.asarray(padded_order(perm, batch_size))
            calls = (
                (train_dev, order, jnp.int32(i), epoch_arg, train_key)
                for i in range(steps_per_epoch)
            )
            if scan:
                calls = [(train_dev, order, epoch_arg, train_key)]
        else:
            calls = (
                (device_batch(b, n_dev, rows), epoch_arg, train_key)
                for b in host_batches(train, batch_size, perm, config.data.bucket, n_all)
            )
        bar = progress.bar(
            calls,
            total=1 if scan else steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.num_epochs}",
            enabled=verbose,
        )
        show = not bar.disable and not scan
        record = None  # on device: summed logs and the first non-finite step
        for i, args in enumerate(bar):
            state, logs = step_fn(state, *args)
            if first_step_seconds is None:  # once per run: one wait for the first result
                jax.block_until_ready(logs)
                first_step_seconds = time.time() - started
                status.phase = "training"
            if scan:
                if axis:  # every device holds the same (psum-ed) logs
                    logs = jax.tree_util.tree_map(lambda x: x[0], logs)
                record = track_stacked(logs)
            else:
                record = track(record, logs, i)
            if show and i % config.log_every_steps == 0:
                shown = jax.device_get(
                    {k: logs[k] for k in ("anchor_loss", "ref_loss") if k in logs}
                )
                bar.set_postfix({k: f"{scalar(v):.3f}" for k, v in shown.items()})
        bar.close()
        record["params_finite"] = finite_params(state)  # fetched with the record: no extra sync
        sums = check_finite(record, epoch, steps_per_epoch, config, workdir)
        train_seconds = time.time() - t0
        host_state = flax.jax_utils.unreplicate(state) if axis else state
        if not primary:  # validation, metrics and checkpoints are process 0's; the others
            if on_epoch_end is not None:  # wait for it in the next step's collectives
                on_epoch_end(epoch + 1, host_state)
            continue
        status.phase = "validating"
        val_scores = evaluate.evaluate_params(
            config, anchor, host_state.anchor_params, val, predict_fn=predict_fn
        )
        selection = metrics.selection_score(val_scores, config.eval.selection)
        train_logs = {k: v / steps_per_epoch for k, v in sums.items()}
        # The row first, then the checkpoint: a kill in between re-trains this epoch
        # and keep_metrics_rows drops the row, so metrics.jsonl never repeats an epoch.
        row_at = append_jsonl(
            metrics_path,
            {
                "epoch": epoch + 1,
                "step": int(host_state.step),
                "seconds": time.time() - t0,
                "train_seconds": train_seconds,
                "val_seconds": time.time() - t0 - train_seconds,
                **(
                    {
                        "data_seconds": data_seconds,
                        "setup_seconds": setup_seconds,
                        "first_step_seconds": first_step_seconds,
                    }
                    if epoch == start_epoch
                    else {}
                ),
                "train": train_logs,
                "val": val_scores,
                "val_selection": selection,
                **{f"val_{k}": v for k, v in val_counts.items()},
            },
        )
        status.phase = "saving"
        try:
            save_checkpoint(mngr, epoch + 1, host_state, selection)
        except Exception:  # not saved (disk full...): its row goes too, the epoch is redone
            with contextlib.suppress(OSError):
                fileio.truncate(metrics_path, row_at)
            raise
        status.resume_epoch = epoch + 2
        if epoch + 1 < config.num_epochs:  # saved: a Ctrl-C from here on is in the next epoch
            status.epoch, status.phase = epoch + 2, "training"
        if verbose:
            print(
                f"epoch {epoch + 1}/{config.num_epochs} ({time.time() - t0:.1f}s): "
                f"anchor loss {train_logs['anchor_loss']:.4f}"
                + (
                    f", reference loss {train_logs['ref_loss']:.4f}"
                    if "ref_loss" in train_logs
                    else ""
                )
                + f" | val selection {selection:.2f}, seg AV {val_scores['seg_av']:.1f}, "
                f"Ao {val_scores['seg_ao']:.1f}, Vo {val_scores['seg_vo']:.1f}",
                flush=True,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, host_state)

    if not primary:  # process 0 scores the best checkpoint on test and writes the result
        return {}
    best = best_epoch(selection_scores(mngr))
    status.phase, status.best_epoch = "testing", best
    t0 = time.time()
    host_state = restore_checkpoint(mngr, best, template, workdir, config)
    test_probs = evaluate.predict_with_config(
        config, anchor, host_state.anchor_params, test, predict_fn
    )
    test_scores = evaluate.score_split(test_probs, test, evaluate.thresholds_from_config(config))
    timing = {"test_seconds": time.time() - t0, "run_seconds": time.time() - started}
    result = evaluate.write_result(
        os.path.join(workdir, RESULT_FILE),
        test_scores,
        config,
        "test",
        best,
        host_state.step,
        config.eval.thresholds,
        {**evaluate.video_counts(test), **timing},
    )
    status.phase = "reporting"  # the test result is written: from here on, only reporting
    if verbose:
        print(
            metrics.format_table({config.name: test_scores}, title=f"test, best epoch {best} (%)")
        )
        skipped = result["videos_skipped"]
        if skipped:
            print(
                f"test scores from {result['videos_scored']} videos; {skipped} skipped for "
                f"missing features (config.data.allow_missing)"
            )
        if config.eval.selection == "av":  # UnAV-100: audio-visual labels, AV is the score
            print(
                f"audio-visual events (UnAV-100 metric): segment AV {test_scores['seg_av']:.1f}, "
                f"event AV {test_scores['evt_av']:.1f}"
            )
    if on_test is not None:
        on_test(test, test_probs, best)
    status.phase = "finished"
    return result
