"""A trained run, restored and scored: ``eval.py``'s and ``parse.py``'s library.

* :func:`restore_anchor`: the Anchor of a checkpoint (default: best on validation);
* :func:`select_thresholds`: per-class visual thresholds chosen on validation for
  one checkpoint and stored beside it (docs/method.md §8);
* :func:`evaluate_checkpoint`: a checkpoint scored on a split, written to
  ``WORKDIR/eval/<split>_epoch<E>_<thresholds>.json`` or ``--output`` (never a run's
  records: ``workdir.check_output``; one writer per output: ``workdir.output_lock``).

A run may be training while it is evaluated: only finished checkpoints are read, and
one deleted by the training while it was read is not called damaged
(``checkpoints.restore_for_reading``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
import numpy as np

from coleaf_jax import config as config_lib
from coleaf_jax import fileio
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import evaluate, metrics
from coleaf_jax.training import workdir as workdir_lib
from coleaf_jax.training.checkpoints import restore_for_reading, training_in
from coleaf_jax.training.step import create_train_state, matmul_precision
from coleaf_jax.training.train import validate_run_config


def require_run(workdir: str) -> None:
    """Fails (creating nothing) unless ``workdir`` holds a training run's checkpoints."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(
            f"--workdir {workdir}: no such folder (the run's --workdir from train.py)"
        )
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(
            f"--workdir {workdir}: no checkpoints/ folder in it (not a "
            f"train.py --workdir, or no epoch finished yet)"
        )


def run_config(config, workdir: str):
    """The config to read the run in ``workdir`` with: ``config`` when given (``--config``:
    checked against the run's stored one where that matters), else the run's own
    ``config.json`` (over ``configs/llp.py``'s values for keys an older file lacks) --
    ``eval.py``, ``parse.py`` and the report on ``--workdir`` alone, trained or imported
    (``python -m coleaf_jax.imports``)."""
    if config is not None:
        return config
    require_run(workdir)
    if not os.path.exists(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
        raise FileNotFoundError(
            f"--workdir {workdir}: no config.json in it (a run from an older version?); "
            f"give its --config"
        )
    config = workdir_lib.apply_stored_config(config_lib.defaults(), workdir)
    config_lib.validate(config)
    return config


def restore_anchor(config, workdir: str, data: dict, step: int | None = None, verbose: bool = True):
    """Restores checkpoint ``step`` (default: best on validation) of a run, which may be
    training meanwhile (``checkpoints.restore_for_reading``: finished checkpoints only;
    with ``verbose``, which one was read is said when a training is running).

    Returns ``(state, anchor, anchor_params, step)``.
    """
    require_run(workdir)
    sample = pipeline.make_batch(data, np.arange(1), 1)
    template, anchor, _, _ = create_train_state(
        config, jax.random.key(0), sample, 1, pipeline.num_classes(config)
    )
    asked = step
    step, state = restore_for_reading(workdir, template, config, step, verbose)
    training = training_in(workdir)
    if training and verbose:  # which checkpoint was read, of a run still changing
        which = "its best on validation so far" if asked is None else "the one asked for"
        print(
            f"note: {workdir} is training (process {training.get('pid')} on "
            f"{training.get('host')}); read its finished checkpoint {step} ({which})"
        )
    return state, anchor, state.anchor_params, int(step)


def thresholds_path(workdir: str, step: int) -> str:
    """Where the thresholds selected for checkpoint ``step`` are stored."""
    return os.path.join(workdir, "checkpoints", f"selected_thresholds_{step}.json")


def select_thresholds(
    config, workdir: str, step: int, anchor, params, verbose: bool = True
) -> metrics.Thresholds:
    """Per-class visual video-level thresholds for checkpoint ``step`` (docs/method.md §8).

    Searched on the validation split with this checkpoint's predictions and
    stored next to it; a stored file for the same step is reused.
    """
    base = evaluate.thresholds_from_config(config)
    path = thresholds_path(workdir, step)
    if os.path.exists(path):
        saved = _read_selected(path, pipeline.num_classes(config))
        if saved["base"] != base.name:
            raise ValueError(
                f"{path} was selected with base thresholds {saved['base']!r}, "
                f"but config.eval.thresholds is {base.name!r}; delete it to re-select"
            )
        if verbose:
            print(f"reusing the thresholds selected on validation for epoch {step}: {path}")
    else:
        val = pipeline.load_splits(config, workdir, splits=("val",))["val"]
        probs = evaluate.predict_with_config(config, anchor, params, val)
        gate = probs["video_prob"] if base.gate == "joint" else probs["video_prob_v"]
        chosen = metrics.search_visual_thresholds(
            probs["seg_prob"][:, :, 1], gate, val["label_visual"], base
        )
        saved = {
            "base": base.name,
            "epoch": step,
            "split": "val",
            "grid": list(metrics.DEFAULT_THRESHOLD_GRID),
            "video_v": chosen.tolist(),
        }
        fileio.atomic_write_json(path, saved)
        if verbose:
            print(f"selected per-class visual thresholds on validation for epoch {step}: {path}")
    return dataclasses.replace(
        base, video_v=np.asarray(saved["video_v"]), name=f"{base.name}+selected"
    )


def _read_selected(path: str, num_classes: int) -> dict:
    """The thresholds stored at ``path`` by :func:`select_thresholds`, checked: anything
    else (damaged JSON, deep nesting, other fields) is one ValueError naming the file."""
    what = f"the thresholds select_thresholds stores (base, and {num_classes} numbers video_v)"
    remedy = "delete it to re-select"
    try:
        saved = fileio.load_json(path, what, require_object=True)
    except fileio.JSONFileError as e:
        raise ValueError(f"{e}; {remedy}") from None
    video_v = saved.get("video_v")
    if (
        not isinstance(saved.get("base"), str)
        or not isinstance(video_v, list)
        or len(video_v) != num_classes
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in video_v)
    ):
        raise ValueError(f"{path}: not {what}; {remedy}")
    return saved


def default_output(workdir: str, split: str, epoch: int, thresholds: str) -> str:
    """``WORKDIR/eval/<split>_epoch<E>_<thresholds>.json``: one file per checkpoint and
    thresholds, never training's ``WORKDIR/test_metrics.json``."""
    return os.path.join(workdir, "eval", f"{split}_epoch{epoch}_{thresholds}.json")


def evaluate_checkpoint(
    config,
    workdir: str,
    split: str = "test",
    step: int | None = None,
    output: str | None = None,
    verbose: bool = True,
    select: bool = False,
) -> dict:
    """Restores the best (or ``step``) checkpoint of ``workdir`` and scores ``split``.

    With ``select``, per-class visual thresholds are chosen on validation for
    this checkpoint (``select_thresholds``) and used for ``split``.
    """
    validate_run_config(config)
    require_run(workdir)
    # A run's records are never an output; one writer per output, from the start (a
    # second eval.py with the same --output is refused, not silently overwritten).
    lock = contextlib.nullcontext()
    if output:
        workdir_lib.check_output(output, "--output")
        lock = workdir_lib.output_lock(output, "--output")
    with lock, matmul_precision(config):
        return _evaluate_checkpoint(config, workdir, split, step, output, verbose, select)


def _evaluate_checkpoint(config, workdir, split, step, output, verbose, select) -> dict:
    data = pipeline.load_splits(config, workdir, splits=(split,))[split]
    state, anchor, params, step = restore_anchor(config, workdir, data, step, verbose)
    thresholds = evaluate.thresholds_from_config(config)
    lock = contextlib.nullcontext()
    if not output:  # the default output is known now: WORKDIR/eval/<split>_epoch<E>_<t>.json
        name = thresholds.name + ("+selected" if select else "")  # as select_thresholds names it
        output = default_output(workdir, split, step, name)
        workdir_lib.check_output(output, "--output")
        lock = workdir_lib.output_lock(output, "the output")
    with lock:
        if select:
            thresholds = select_thresholds(config, workdir, step, anchor, params, verbose)
        scores = evaluate.evaluate_params(config, anchor, params, data, thresholds)
        result = evaluate.write_result(
            output,
            scores,
            config,
            split,
            step,
            state.step,
            thresholds.name,
            evaluate.video_counts(data),
        )
    if verbose:
        print(
            metrics.format_table(
                {config.name: scores}, title=f"{split}, epoch {step}, {thresholds.name} (%)"
            )
        )
        print(f"wrote {output}")
    return result
