"""Video parsing: segment decisions → audible-only / visible-only / audible-visible events.

An event is a maximal run of one-second segments where a class is, for the
whole run, heard and not seen (``audible-only``), seen and not heard
(``visible-only``) or both (``audible-visible``) — the same partition the Ao,
Vo and AV metrics score (docs/method.md §8). Each event carries the mean over its
segments of the probability behind it: ``P_a`` for audible-only, ``P_v`` for
visible-only and ``min(P_a, P_v)`` for audible-visible.

Records: ``{video, class, type, onset, offset, score}``, onset/offset in
seconds (offset exclusive), written as JSONL and CSV, each file whole or not
at all (:mod:`coleaf_jax.fileio`). :func:`output_lock` holds
``OUTPUT/parse.lock`` while ``parse.py`` writes: a second ``parse.py`` into the
same folder is refused, naming the first.
"""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from coleaf_jax import fileio
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import evaluate, metrics, plots, runs
from coleaf_jax.training.workdir import folder_lock

EVENT_TYPES = ("audible-only", "visible-only", "audible-visible")
RECORD_FIELDS = ("video", "class", "type", "onset", "offset", "score")
LOCK_FILE = "parse.lock"


def output_lock(output: str):
    """Holds ``OUTPUT/parse.lock`` while the block runs (``workdir.folder_lock``): one
    ``parse.py`` per output folder at a time."""
    return folder_lock(output, "--output", "parse.py", LOCK_FILE)


def event_tracks(
    pred_a: np.ndarray, pred_v: np.ndarray, prob_a: np.ndarray, prob_v: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per event type, its decisions and the probability behind them.

    Args:
      pred_a, pred_v: bool ``(N, T, C)`` segment decisions.
      prob_a, prob_v: ``(N, T, C)`` segment probabilities.
    Returns:
      ``{type: (decisions (N, T, C) bool, probabilities (N, T, C))}``.
    """
    d = metrics.modality_decisions(np.asarray(pred_a, bool), np.asarray(pred_v, bool))
    return {
        "audible-only": (d["ao"], prob_a),
        "visible-only": (d["vo"], prob_v),
        "audible-visible": (d["av"], np.minimum(prob_a, prob_v)),
    }


def merge_events(
    pred_a: np.ndarray,
    pred_v: np.ndarray,
    prob_a: np.ndarray,
    prob_v: np.ndarray,
    video_ids,
    class_names,
    mask: np.ndarray | None = None,
    segment_seconds: float = 1.0,
) -> list[dict]:
    """Event records of every video from its segment decisions (module docstring).

    Runs are found for all videos, classes and types at once; ``mask (N, T)``
    removes padded segments first. Records are sorted by video (input order),
    onset, class and type.
    """
    pred_a = np.asarray(pred_a, bool)
    pred_v = np.asarray(pred_v, bool)
    if mask is not None:
        m = np.asarray(mask, bool)[:, :, None]
        pred_a, pred_v = pred_a & m, pred_v & m
    n, t, c = pred_a.shape
    if len(video_ids) != n or len(class_names) != c:
        raise ValueError(
            f"{len(video_ids)} video ids and {len(class_names)} class names for "
            f"decisions of shape (N={n}, T={t}, C={c})"
        )
    columns = []
    for k, (dec, prob) in enumerate(event_tracks(pred_a, pred_v, prob_a, prob_v).values()):
        start, end, valid = metrics.runs(np.swapaxes(dec, 1, 2))  # (N, C, R)
        vi, ci, ri = np.nonzero(valid)
        s, e = start[vi, ci, ri].astype(np.int64), end[vi, ci, ri].astype(np.int64)
        # Mean probability over each run, from a cumulative sum along T.
        csum = np.concatenate([np.zeros((n, 1, c)), np.cumsum(prob, axis=1)], axis=1)
        score = (csum[vi, e, ci] - csum[vi, s, ci]) / (e - s)
        columns.append((vi, s, ci, np.full(len(vi), k), e, score))
    vi, s, ci, ki, e, score = (np.concatenate(x) for x in zip(*columns))
    order = np.lexsort((ki, ci, s, vi))
    return [
        {
            "video": str(video_ids[vi[j]]),
            "class": str(class_names[ci[j]]),
            "type": EVENT_TYPES[ki[j]],
            "onset": float(s[j] * segment_seconds),
            "offset": float(e[j] * segment_seconds),
            "score": round(float(score[j]), 4),
        }
        for j in order
    ]


def write_events(records: list[dict], out_dir: str, stem: str = "events") -> tuple[str, str]:
    """Writes ``OUT/events.jsonl`` and ``OUT/events.csv`` (each whole or not at all);
    returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    jsonl, csv_path = (os.path.join(out_dir, f"{stem}.{ext}") for ext in ("jsonl", "csv"))
    fileio.atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in records))
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=RECORD_FIELDS)
    w.writeheader()
    w.writerows(records)
    fileio.atomic_write_text(csv_path, text.getvalue())
    return jsonl, csv_path


def read_events(path: str) -> list[dict]:
    """Reads records back from a JSONL or CSV file written by ``write_events``."""
    if path.endswith(".jsonl"):
        with open(path, "rb") as f:
            lines = [line for line in f.read().split(b"\n") if line.strip()]
        return [
            fileio.loads_json(line, f"{path}:{n}", "an event record", require_object=True)
            for n, line in enumerate(lines, 1)
        ]
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["onset"], r["offset"], r["score"] = (
            float(r["onset"]),
            float(r["offset"]),
            float(r["score"]),
        )
    return rows


def write_probabilities(probs: dict, ids, mask, output: str) -> str:
    """``OUTPUT/probabilities/<id>.npz`` per video: ``video_prob (C,)`` (``p``),
    ``audio_prob`` and ``visual_prob`` ``(T, C)`` (the segment probabilities ``P`` of
    each modality, the video's ``T`` valid segments), ``video_prob_a`` / ``video_prob_v``
    ``(C,)`` (``p^a``, ``p^v``): the network's outputs as evaluation reads them (CMPAE:
    its inference mix), before any threshold. float32. Returns the folder."""
    folder = os.path.join(output, "probabilities")
    os.makedirs(folder, exist_ok=True)
    seg = np.asarray(probs["seg_prob"], np.float32)
    for i, vid in enumerate(ids):
        length = int(mask[i].sum()) if mask is not None else seg.shape[1]
        arrays = {
            "video_prob": probs["video_prob"][i],
            "audio_prob": seg[i, :length, 0],
            "visual_prob": seg[i, :length, 1],
            "video_prob_a": probs["video_prob_a"][i],
            "video_prob_v": probs["video_prob_v"][i],
        }
        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in arrays.items()})
        fileio.atomic_write_bytes(os.path.join(folder, f"{vid}.npz"), buffer.getvalue())
    return folder


def parse_videos(
    config,
    workdir: str,
    output: str,
    *,
    features: str | None = None,
    split: str | None = None,
    ids=None,
    step: int | None = None,
    select_thresholds: bool = False,
    timelines: int = 0,
    compare: tuple | None = None,
    verbose: bool = True,
    data: dict | None = None,
    probabilities: bool = False,
) -> list[dict]:
    """Parses videos with a trained run and writes ``OUTPUT/events.{jsonl,csv}``.

    Videos come from a feature directory (``features``, no annotations needed),
    an annotated ``split`` (then the timelines show the truth too), or ``data``:
    features already in memory (``audio``, ``video_2d``, ``video_3d``, ``id``,
    optional ``mask``; ``parse.py --video`` extracts them). The
    thresholds are evaluation's: ``config.eval.thresholds``, or with
    ``select_thresholds`` the per-class visual thresholds selected on
    validation for the checkpoint (``runs.select_thresholds``). ``timelines``
    PNGs go to ``OUTPUT/timelines/<id>.png``; ``compare = (config, workdir,
    step)`` of a second run or checkpoint (step None: its best) draws its
    prediction side by side. ``probabilities`` also writes the network's outputs before
    any threshold (:func:`write_probabilities`).
    """

    if data is not None:
        if features is not None or split is not None:
            raise ValueError("give features in memory or a feature directory / split, not both")
    elif (features is None) == (split is None):
        raise ValueError(
            "give exactly one of a feature directory (--features) or a split (--split)"
        )
    elif features is not None:
        data = pipeline.load_feature_dir(config, features, ids)
    else:
        data = pipeline.load_splits(config, workdir, (split,))[split]
        if ids is not None:
            keep = np.isin(data["id"], list(ids))
            if not keep.any():
                raise ValueError(f"none of the ids {list(ids)[:5]} is in the {split} split")
            data = {k: v[keep] for k, v in data.items()}
    names = pipeline.class_names(config, workdir)

    def predict(cfg, wdir, step_):
        _, anchor, params, restored = runs.restore_anchor(cfg, wdir, data, step_)
        thresholds = evaluate.thresholds_from_config(cfg)
        if select_thresholds:
            thresholds = runs.select_thresholds(cfg, wdir, restored, anchor, params, verbose)
        probs = evaluate.predict_with_config(cfg, anchor, params, data)
        return probs, evaluate.decisions(probs, thresholds), restored, thresholds

    probs, (pred_a, pred_v), restored, thresholds = predict(config, workdir, step)
    mask = data.get("mask")
    seg = probs["seg_prob"]
    records = merge_events(pred_a, pred_v, seg[:, :, 0], seg[:, :, 1], data["id"], names, mask)
    jsonl, csv_path = write_events(records, output)
    if probabilities:
        folder = write_probabilities(probs, data["id"], mask, output)
        if verbose:
            print(f"wrote the probabilities of {len(data['id'])} videos to {folder}")
    if verbose:
        print(
            f"parsed {len(data['id'])} videos with epoch {restored} of {workdir} "
            f"({thresholds.name} thresholds): {len(records)} events -> {jsonl}, {csv_path}"
        )
    if timelines:
        columns = {f"{config.name} (epoch {restored})": (pred_a, pred_v)}
        if compare is not None:
            _, (ca, cv), c_step, _ = predict(*compare)
            columns[f"{compare[0].name} (epoch {c_step})"] = (ca, cv)
        folder = os.path.join(output, "timelines")
        os.makedirs(folder, exist_ok=True)
        has_truth = "label_audio" in data
        for i in range(min(timelines, len(data["id"]))):
            length = int(mask[i].sum()) if mask is not None else None
            fig = plots.plot_timeline(
                data["id"][i],
                names,
                {k: (a[i], v[i]) for k, (a, v) in columns.items()},
                (data["label_audio"][i], data["label_visual"][i]) if has_truth else None,
                length,
            )
            png = plots.save_png(fig)
            fileio.atomic_write_bytes(os.path.join(folder, f"{data['id'][i]}.png"), png)
        if verbose:
            print(f"wrote {min(timelines, len(data['id']))} timelines to {folder}")
    return records
