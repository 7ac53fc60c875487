"""UnAV-100 (docs/method.md §2): untrimmed videos of variable length, audio-visual events.

Layout (as distributed by the UnAV-100 authors)::

    ROOT/annotations/unav100_annotations.json
    ROOT/av_features/<id>_vggish.npy   (N_a, 128)   VGGish, one step every 0.32 s
    ROOT/av_features/<id>_rgb.npy      (N_v, 1024)  I3D RGB, one step every 0.32 s
    ROOT/av_features/<id>_flow.npy     (N_v, 1024)  I3D flow, one step every 0.32 s

The annotation JSON is ActivityNet-style::

    {"database": {"<id>": {"duration": 37.2, "subset": "train" | "validation" | "test",
                           "annotations": [{"segment": [s, e], "label": "...",
                                            "label_id": k}, ...]}, ...}}

A video of ``duration`` seconds gets ``T = ceil(duration)`` one-second
segments. Each feature sequence is pooled into them: feature ``i`` is centred
at ``(i + offset)·step`` seconds (``offset = 0.5`` by default: the middle of its
step) and segment ``t`` averages the features centred in ``[t, t+1)``; a
segment without any (features shorter than the video) takes the feature
centred nearest to ``t + 0.5``. Features map onto the model's inputs as
``audio`` ← VGGish (or the ONE-PEACE audio), ``video_2d`` ← RGB (or the
ONE-PEACE visual), ``video_3d`` ← flow (empty ``(T, 0)`` when the feature set
has no second visual stream).

Labels are audio-visual only: the video-level label is the union of the
annotated classes, and the dense truth ``label_audio = label_visual`` marks
``(t, c)`` when an event of class ``c`` covers second ``t`` under the overlap
rule (``OVERLAP_RULES``). Splits are padded to their longest video with a
``mask (N, T)`` of valid segments.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings

import numpy as np

from coleaf_jax import fileio
from coleaf_jax.data import npy

UNAV_NUM_CLASSES = 100
UNAV_FEATURE_STEP = 0.32  # seconds between consecutive feature vectors
SUBSETS = {"train": "train", "val": "validation", "test": "test"}
ANNOTATION_FILE = os.path.join("annotations", "unav100_annotations.json")
FEATURE_DIR = "av_features"

# Overlap rules: when does an event [s, e) (seconds) mark the segment [t, t+1)?
OVERLAP_RULES = {
    "any": "the event overlaps the second by a positive length (s < t+1 and e > t)",
    "half": "the event covers at least half of the second",
    "centre": "the event contains the middle of the second, t + 0.5",
}


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """File name patterns (``{id}`` is the video id) and widths of one feature set."""

    audio: tuple[str, int]
    video_2d: tuple[str, int]
    video_3d: tuple[str, int] | None


FEATURE_SETS = {
    "i3d": FeatureSet(("{id}_vggish.npy", 128), ("{id}_rgb.npy", 1024), ("{id}_flow.npy", 1024)),
    # ONE-PEACE audio and visual encoders (UniAV release), 1536-d each.
    "onepeace": FeatureSet(("{id}_audio.npy", 1536), ("{id}_visual.npy", 1536), None),
}


@dataclasses.dataclass
class Event:
    label_id: int
    onset: float
    offset: float


@dataclasses.dataclass
class VideoRecord:
    video_id: str
    duration: float
    subset: str
    events: list[Event]

    @property
    def num_segments(self) -> int:
        return max(1, math.ceil(self.duration - 1e-9))


@dataclasses.dataclass
class AnnotationReport:
    """What ``read_annotations`` skipped or clipped (each also a warning)."""

    clipped_events: int = 0  # offset past the duration: clipped to it
    skipped_events: int = 0  # empty after clipping, or starting at/after the end


def read_annotations(
    path: str, num_classes: int = UNAV_NUM_CLASSES
) -> tuple[dict[str, VideoRecord], list[str], AnnotationReport]:
    """Parses the annotation JSON; returns ``(videos by id, class names, report)``.

    Raises ``ValueError`` naming the video and field on anything malformed:
    missing keys, a non-positive duration, an unknown subset, a segment that is
    not ``[start, end]`` with ``0 <= start < end``, a ``label_id`` out of
    ``[0, num_classes)`` or a ``label`` that disagrees with its ``label_id``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: UnAV-100 annotation file not found (expected ROOT/{ANNOTATION_FILE})"
        )
    raw = fileio.load_json(path, "UnAV-100's annotation object")  # one line when damaged
    if not isinstance(raw, dict) or not isinstance(raw.get("database"), dict):
        raise ValueError(f"{path}: expected an object with a 'database' mapping of video ids")
    subsets = set(SUBSETS.values())
    names: dict[int, str] = {}
    report = AnnotationReport()
    videos = {}
    for vid, entry in raw["database"].items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        for key in ("duration", "subset", "annotations"):
            if key not in entry:
                raise ValueError(f"{where}: missing field {key!r}")
        try:
            duration = float(entry["duration"])
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: field 'duration' = {entry['duration']!r} is not a number"
            ) from None
        if not duration > 0 or not math.isfinite(duration):
            raise ValueError(f"{where}: field 'duration' = {duration} must be a positive number")
        subset = entry["subset"]
        if subset not in subsets:
            raise ValueError(
                f"{where}: field 'subset' = {subset!r}, expected one of {sorted(subsets)}"
            )
        events = []
        for j, ann in enumerate(entry["annotations"]):
            here = f"{where}, annotations[{j}]"
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if (
                not isinstance(seg, (list, tuple))
                or len(seg) != 2
                or not all(isinstance(x, (int, float)) for x in seg)
            ):
                raise ValueError(
                    f"{here}: field 'segment' = {seg!r}, expected [start, end] in seconds"
                )
            start, end = float(seg[0]), float(seg[1])
            if not (0 <= start < end):
                raise ValueError(f"{here}: segment {seg} must satisfy 0 <= start < end")
            label_id, label = ann.get("label_id"), ann.get("label")
            if not isinstance(label_id, int) or not 0 <= label_id < num_classes:
                raise ValueError(
                    f"{here}: field 'label_id' = {label_id!r}, expected an integer "
                    f"in [0, {num_classes})"
                )
            if label is not None:
                if names.setdefault(label_id, label) != label:
                    raise ValueError(
                        f"{here}: label {label!r} for label_id {label_id}, which "
                        f"elsewhere is {names[label_id]!r}"
                    )
            if end > duration:
                if start >= duration:
                    report.skipped_events += 1
                    continue
                report.clipped_events += 1
                end = duration
            events.append(Event(label_id, start, end))
        videos[vid] = VideoRecord(vid, duration, subset, events)
    if report.clipped_events:
        warnings.warn(
            f"{path}: {report.clipped_events} event(s) end after their video's "
            f"duration; clipped to it"
        )
    if report.skipped_events:
        warnings.warn(
            f"{path}: {report.skipped_events} event(s) start at or after their video's end; skipped"
        )
    class_names = [names.get(k, f"class_{k}") for k in range(num_classes)]
    return videos, class_names, report


def segment_truth(
    events: list[Event], num_segments: int, num_classes: int, rule: str = "any"
) -> np.ndarray:
    """``(T, C)`` bool: which one-second segments each event class covers (``OVERLAP_RULES``)."""
    if rule not in OVERLAP_RULES:
        raise ValueError(f"overlap rule {rule!r}: expected one of {sorted(OVERLAP_RULES)}")
    truth = np.zeros((num_segments, num_classes), bool)
    if not events:
        return truth
    t = np.arange(num_segments, dtype=np.float64)[:, None]  # (T, 1)
    on = np.array([e.onset for e in events])[None]  # (1, E)
    off = np.array([e.offset for e in events])[None]
    if rule == "any":
        hit = (on < t + 1) & (off > t)
    elif rule == "half":
        hit = (np.minimum(off, t + 1) - np.maximum(on, t)) >= 0.5
    else:
        hit = (on <= t + 0.5) & (off > t + 0.5)
    labels = np.array([e.label_id for e in events])
    np.logical_or.at(truth.T, labels, hit.T)
    return truth


def pool_to_segments(
    x: np.ndarray, num_segments: int, step: float = UNAV_FEATURE_STEP, offset: float = 0.5
) -> np.ndarray:
    """Averages ``x (N, D)`` (one vector every ``step`` s) into ``(num_segments, D)``.

    Feature ``i`` is centred at ``(i + offset)·step``; segment ``t`` averages the
    features centred in ``[t, t+1)`` (those past the last segment are dropped),
    and a segment with none takes the feature centred nearest to ``t + 0.5``.
    """
    n, d = x.shape
    if n == 0:
        raise ValueError("an empty feature sequence cannot be pooled")
    centres = (np.arange(n) + offset) * step
    seg = np.floor(centres).astype(np.int64)
    keep = seg < num_segments
    sums = np.zeros((num_segments, d), np.float64)
    np.add.at(sums, seg[keep], x[keep])
    counts = np.bincount(seg[keep], minlength=num_segments)[:num_segments]
    out = sums / np.maximum(counts, 1)[:, None]
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        nearest = np.abs(centres[None, :] - (empty[:, None] + 0.5)).argmin(axis=1)
        out[empty] = x[nearest]
    return out.astype(np.float32)


def _load_feature(path: str, dim: int) -> np.ndarray:
    def header_problem(header: npy.NpyHeader) -> str | None:  # before the data is read
        shape = header.shape
        if len(shape) != 2 or shape[1] != dim or shape[0] == 0:
            return f"shape {shape}, expected (steps >= 1, {dim})"
        if header.dtype.kind != "f":
            return f"dtype {header.dtype}, expected floating point"
        return None

    x = npy.read_npy(path, check=header_problem)
    npy.check_values(path, x)
    return x


def load_split(
    root: str,
    split: str,
    *,
    features: str = "i3d",
    overlap: str = "any",
    step: float = UNAV_FEATURE_STEP,
    offset: float = 0.5,
    annotation_file: str | None = None,
    num_classes: int = UNAV_NUM_CLASSES,
    max_videos: int | None = None,
) -> dict[str, np.ndarray]:
    """Loads one UnAV-100 split (``'train'``, ``'val'`` or ``'test'``) into memory.

    Returns, for the ``N`` videos of the split with all feature files, padded
    to ``T = max ceil(duration)``: ``audio (N, T, Da)``, ``video_2d (N, T, Dv)``,
    ``video_3d (N, T, Dv3)``, ``label (N, C)``, ``label_audio`` =
    ``label_visual (N, T, C)``, ``mask (N, T)``, ``duration (N,)`` and
    ``id (N,)``. Videos with a missing feature file are skipped with
    one warning giving the count and an example.
    """
    if split not in SUBSETS:
        raise ValueError(f"split {split!r}: expected one of {sorted(SUBSETS)}")
    if features not in FEATURE_SETS:
        raise ValueError(
            f"UnAV-100 feature set {features!r}: expected one of {sorted(FEATURE_SETS)}"
        )
    fs = FEATURE_SETS[features]
    ann_path = annotation_file or os.path.join(root, ANNOTATION_FILE)
    videos, _, _ = read_annotations(ann_path, num_classes)
    chosen = sorted(
        (v for v in videos.values() if v.subset == SUBSETS[split]), key=lambda v: v.video_id
    )
    if max_videos:
        chosen = chosen[:max_videos]
    feat_dir = os.path.join(root, FEATURE_DIR)
    if not os.path.isdir(feat_dir):
        raise FileNotFoundError(
            f"{feat_dir}: UnAV-100 feature folder not found (expected "
            f"ROOT/{FEATURE_DIR}/<id>_*.npy)"
        )
    rows, missing, zeros = [], [], []
    for v in chosen:
        raw, absent = _read_streams(feat_dir, v.video_id, fs)
        if raw is None:
            missing.append(absent)
            continue
        if any(a.size and not a.any() for a in raw.values()):
            zeros.append(v.video_id)
        t = v.num_segments
        row = _pooled_features(raw, t, step, offset)
        row["truth"] = segment_truth(v.events, t, num_classes, overlap)
        row["label"] = np.zeros(num_classes, np.float32)
        row["label"][[e.label_id for e in v.events]] = 1.0  # the union of annotated classes
        rows.append((v, row))
    if missing:
        warnings.warn(
            f"UnAV-100 {split}: skipped {len(missing)} of {len(chosen)} videos with a "
            f"missing feature file (first: {missing[0]})"
        )
    if zeros:
        warnings.warn(
            f"UnAV-100 {split}: {len(zeros)} video(s) have a feature file of zeros only "
            f"(first: {', '.join(zeros[:5])}); an extractor that failed writes zeros: check them"
        )
    if not rows:
        raise ValueError(f"UnAV-100 {split}: no video with all feature files under {feat_dir}")
    return _pad_split(rows, num_classes)


def _read_streams(directory: str, vid: str, fs: FeatureSet) -> tuple[dict | None, str | None]:
    """``({stream: (steps, dim) array}, None)`` for video ``vid``, each file checked by
    ``_load_feature``; ``(None, first missing path)`` when a file is absent."""
    streams = {"audio": fs.audio, "video_2d": fs.video_2d, "video_3d": fs.video_3d}
    paths = {
        k: os.path.join(directory, spec[0].format(id=vid)) for k, spec in streams.items() if spec
    }
    absent = [p for p in paths.values() if not os.path.exists(p)]
    if absent:
        return None, npy.describe_missing(absent[0])
    return {k: _load_feature(p, streams[k][1]) for k, p in paths.items()}, None


def _pooled_features(raw: dict, t: int, step: float, offset: float) -> dict:
    """Each stream pooled to ``t`` segments; a missing second visual stream
    becomes ``video_3d (t, 0)``."""
    row = {k: pool_to_segments(x, t, step, offset) for k, x in raw.items()}
    row.setdefault("video_3d", np.zeros((t, 0), np.float32))
    return row


def _pad_split(rows, num_classes: int) -> dict[str, np.ndarray]:
    n = len(rows)
    t_max = max(v.num_segments for v, _ in rows)
    out = {
        k: np.zeros((n, t_max, rows[0][1][k].shape[1]), np.float32)
        for k in ("audio", "video_2d", "video_3d")
    }
    truth = np.zeros((n, t_max, num_classes), np.float32)
    mask = np.zeros((n, t_max), bool)
    for i, (v, row) in enumerate(rows):
        t = v.num_segments
        for k in ("audio", "video_2d", "video_3d"):
            out[k][i, :t] = row[k]
        truth[i, :t] = row["truth"]
        mask[i, :t] = True
    out.update(
        label=np.stack([row["label"] for _, row in rows]),
        label_audio=truth,
        label_visual=truth.copy(),
        mask=mask,
        duration=np.array([v.duration for v, _ in rows], np.float32),
        id=np.array([v.video_id for v, _ in rows]),
    )
    return out


def load_feature_dir(
    directory: str,
    ids=None,
    *,
    features: str = "i3d",
    step: float = UNAV_FEATURE_STEP,
    offset: float = 0.5,
) -> dict[str, np.ndarray]:
    """Features of the videos in ``directory`` (or its ``av_features/``), no annotations.

    Videos are the ``<id>`` of every ``<id>_<audio suffix>`` file, or ``ids``;
    ``T = ceil(steps · step)`` of the longest stream. Returns the feature
    arrays, ``mask (N, T)``, ``duration (N,)`` (estimated) and ``id (N,)``.
    """
    fs = FEATURE_SETS[features]
    if os.path.isdir(os.path.join(directory, FEATURE_DIR)):
        directory = os.path.join(directory, FEATURE_DIR)
    suffix = fs.audio[0].replace("{id}", "")
    if ids is None:
        ids = sorted(f[: -len(suffix)] for f in os.listdir(directory) if f.endswith(suffix))
    if not len(ids):
        raise FileNotFoundError(f"{directory}: no '*{suffix}' feature files")
    rows, missing = [], []
    for vid in ids:
        raw, _ = _read_streams(directory, vid, fs)
        if raw is None:
            missing.append(vid)
            continue
        record = VideoRecord(vid, max(len(x) for x in raw.values()) * step, "test", [])
        row = _pooled_features(raw, record.num_segments, step, offset)
        row["truth"] = np.zeros((record.num_segments, 1), bool)
        row["label"] = np.zeros(1, np.float32)
        rows.append((record, row))
    if missing:
        warnings.warn(
            f"{directory}: skipped {len(missing)} video(s) with a missing feature file "
            f"(first: {missing[0]})"
        )
    if not rows:
        raise ValueError(f"{directory}: no video has all of its feature files")
    out = _pad_split(rows, 1)
    return {k: out[k] for k in ("audio", "video_2d", "video_3d", "mask", "duration", "id")}
