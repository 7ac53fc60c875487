"""Predict → binarise → score: the Anchor on a split with the AVVP metrics (docs/method.md §8)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax import fileio
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import metrics

PREDICTION_KEYS = ("seg_prob", "video_prob", "video_prob_a", "video_prob_v")


def make_predict_fn(anchor) -> Callable:
    """A jitted inference forward: ``(params, batch) -> probabilities`` (no dropout)."""

    @jax.jit
    def predict(params, batch):
        out = anchor.apply(
            {"params": params},
            batch["audio"],
            batch["video_2d"],
            batch["video_3d"],
            batch["mask"],
            train=False,
        )
        return {k: out[k] for k in PREDICTION_KEYS}

    return predict


def predict_split(
    predict_fn: Callable, params, data: dict[str, np.ndarray], batch_size: int, bucket: int = 0
) -> dict[str, np.ndarray]:
    """Runs ``predict_fn`` over a split in fixed-size batches.

    ``bucket`` crops each batch's time axis as ``pipeline.make_batch`` does;
    segment outputs are padded back to the split's length ``T`` (with zeros).
    Returns ``seg_prob (N, T, 2, C)``, ``video_prob``, ``video_prob_a``,
    ``video_prob_v`` ``(N, C)`` as numpy.
    """
    n, t = data["audio"].shape[:2]
    batch_size = pipeline.fit_batch_size(batch_size, n)  # never padded beyond the split
    chunks = []
    for batch in pipeline.epoch_batches(data, batch_size, bucket=bucket):
        chunks.append(predict_fn(params, {k: jnp.asarray(v) for k, v in batch.items()}))
    out = jax.device_get(chunks)
    for c in out:
        short = t - c["seg_prob"].shape[1]
        if short:
            c["seg_prob"] = np.pad(c["seg_prob"], [(0, 0), (0, short)] + [(0, 0)] * 2)
    return {k: np.concatenate([c[k] for c in out])[:n] for k in PREDICTION_KEYS}


def predict_with_config(
    config, anchor, params, data: dict[str, np.ndarray], predict_fn: Callable | None = None
) -> dict[str, np.ndarray]:
    """``predict_split`` with the batch size and bucketing of ``config``."""
    predict_fn = predict_fn or make_predict_fn(anchor)
    return predict_split(predict_fn, params, data, config.eval.batch_size, config.data.bucket)


def evaluate_params(
    config,
    anchor,
    params,
    data: dict[str, np.ndarray],
    thresholds: metrics.Thresholds | None = None,
    predict_fn: Callable | None = None,
) -> dict[str, float]:
    """The 18 scores of Anchor ``params`` on a split; ``thresholds`` default to
    ``config.eval.thresholds``."""
    probs = predict_with_config(config, anchor, params, data, predict_fn)
    return score_split(probs, data, thresholds or thresholds_from_config(config))


def decisions(
    probs: dict[str, np.ndarray], thresholds: metrics.Thresholds
) -> tuple[np.ndarray, np.ndarray]:
    """Binary audio/visual segment decisions ``(N, T, C)`` from Anchor probabilities."""
    if thresholds.gate == "joint":
        gate_a = gate_v = probs["video_prob"]
    elif thresholds.gate == "modality":
        gate_a, gate_v = probs["video_prob_a"], probs["video_prob_v"]
    else:
        raise ValueError(f"thresholds.gate = {thresholds.gate!r}: expected 'joint' or 'modality'")
    seg = probs["seg_prob"]
    return metrics.binarize(seg[:, :, 0], seg[:, :, 1], gate_a, gate_v, thresholds)


def score_split(
    probs: dict[str, np.ndarray], data: dict[str, np.ndarray], thresholds: metrics.Thresholds
) -> dict[str, float]:
    """The 18 scores of a split from its predictions and dense truth."""
    if "label_audio" not in data:
        raise ValueError("this split has no dense audio/visual labels to score against")
    pred_a, pred_v = decisions(probs, thresholds)
    return metrics.avvp_scores(
        pred_a, pred_v, data["label_audio"], data["label_visual"], mask=data.get("mask")
    )


def thresholds_from_config(config) -> metrics.Thresholds:
    name = config.eval.thresholds
    if name not in metrics.THRESHOLD_PRESETS:
        raise ValueError(
            f"config.eval.thresholds = {name!r}: expected one of "
            f"{sorted(metrics.THRESHOLD_PRESETS)}"
        )
    preset = metrics.THRESHOLD_PRESETS[name]
    per_class = tuple(config.eval.get("visual_thresholds", ()))
    if per_class:  # checked against data.num_classes by config.validate
        preset = dataclasses.replace(preset, video_v=np.asarray(per_class, np.float64))
    return preset


def video_counts(data) -> dict[str, int]:
    """How many videos a split's scores come from, and how many of its annotated videos
    were left out for missing features (``config.data.allow_missing``)."""
    counts = {
        "videos_scored": int(len(data["label"])),
        "videos_skipped": len(pipeline.skipped_ids(data)),
    }
    shared = pipeline.also_in_other_splits(data)
    if shared:  # config.data.allow_split_overlap: said in every metrics file
        counts["videos_also_in_other_splits"] = shared
    return counts


def write_result(
    path: str,
    scores: dict[str, float],
    config,
    split: str,
    epoch: int,
    step: int,
    thresholds: str,
    counts: dict[str, int] | None = None,
) -> dict:
    """Writes the scores JSON of ``train.py`` / ``eval.py``: the 18 scores as top-level
    floats plus what produced them (``counts``: ``video_counts`` of the split, and any
    other fields such as timings); returns the record. The file is written whole or not
    at all (``fileio.atomic_write_json``; a full disk: ``fileio.DiskFullError``)."""
    result = dict(
        scores,
        config=config.name,
        method=config.method,
        split=split,
        epoch=int(epoch),
        step=int(step),
        thresholds=thresholds,
        **(counts or {}),
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fileio.atomic_write_json(path, result)
    return result
