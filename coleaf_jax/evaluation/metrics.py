"""The AVVP evaluation protocol (docs/method.md §8), vectorised.

Everything here is plain numpy on whole datasets: no per-video, per-class or
per-segment Python loop. The numbers are those of the public evaluation code
(HAN's ``eval_metrics.py`` and CoLeaF's audible-only / visible-only extension):

* segment level: per video and class, ``F_c = 2TP / (2TP + FP + FN)`` over the
  classes with ``TP + FP > 0`` or ``TP + FN > 0``; the video's score is the mean
  of those, or 1.0 when there is none; the dataset score is the mean over
  videos, in percent.
* event level: events are maximal runs of 1s; a predicted event is a TP when
  some true event has ``|p ∩ g| >= 0.5 |p ∪ g|``, else an FP; a true event
  matched by no predicted event is an FN (TP and FN are counted independently,
  exactly as the reference code does).
* ``Event@AV`` pools the A and V counts per class before forming ``F_c``;
  ``Event@AVo`` pools Ao and Vo; ``Type@AV = (A + V + AV) / 3`` and
  ``Type@AVo = (Ao + Vo + AV) / 3``.

Arrays are ``(N, T, C)``: videos, segments, classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

ArrayLike = np.ndarray

# The nine scores of one level, in the order of the paper's tables.
SCORE_NAMES: tuple[str, ...] = (
    "a",
    "ao",
    "v",
    "vo",
    "av",
    "type",
    "type_o",
    "event",
    "event_o",
)
LEVELS: tuple[str, ...] = ("seg", "evt")
SCORE_KEYS: tuple[str, ...] = tuple(f"{lvl}_{n}" for lvl in LEVELS for n in SCORE_NAMES)
# Column titles for printed tables.
SCORE_TITLES: dict[str, str] = {
    "a": "A",
    "ao": "Ao",
    "v": "V",
    "vo": "Vo",
    "av": "AV",
    "type": "T@",
    "type_o": "T@o",
    "event": "E@",
    "event_o": "E@o",
}
# Model selection (docs/method.md §7): Ao, Vo, AV, Type@AVo, Event@AVo at both levels.
SELECTION_KEYS: tuple[str, ...] = tuple(
    f"{lvl}_{n}" for lvl in LEVELS for n in ("ao", "vo", "av", "type_o", "event_o")
)

# Event-level counting compares every predicted run with every true run; the
# comparison tensor is (chunk, C, R, R) booleans, so bound it.
_EVENT_CHUNK_ELEMENTS = 1 << 24


def _as_binary(x: ArrayLike, name: str, ndim: int = 3) -> np.ndarray:
    """Returns ``x`` as a bool array after checking it holds only 0s and 1s."""
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array (N, T, C), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)].ravel()[:5]
        raise ValueError(f"{name}: expected binary values (0/1), found e.g. {bad.tolist()}")
    return arr.astype(bool)


# ---------------------------------------------------------------------------
# Counts


def segment_counts(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment-level TP, FP, FN per video and class.

    Args:
      pred, gt: bool ``(N, T, C)``.
    Returns:
      ``(tp, fp, fn)``, each int64 ``(N, C)``.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    tp = np.count_nonzero(pred & gt, axis=1)
    fp = np.count_nonzero(pred & ~gt, axis=1)
    fn = np.count_nonzero(~pred & gt, axis=1)
    return tp.astype(np.int64), fp.astype(np.int64), fn.astype(np.int64)


def runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of 1s along T.

    Args:
      x: bool ``(N, C, T)``.
    Returns:
      ``(start, end, valid)``, each ``(N, C, R)`` with ``R = ceil(T / 2)`` (the
      most runs a length-T sequence can hold); ``end`` is exclusive; runs are
      sorted by start and ``valid`` marks the ones that exist.
    """
    t_len = x.shape[-1]
    max_runs = (t_len + 1) // 2
    pad = np.zeros(x.shape[:-1] + (1,), dtype=bool)
    prev = np.concatenate([pad, x[..., :-1]], axis=-1)
    nxt = np.concatenate([x[..., 1:], pad], axis=-1)
    dtype = np.int16 if t_len < 2**14 else np.int32
    t = np.arange(t_len, dtype=dtype)
    start = np.sort(np.where(x & ~prev, t, dtype(t_len)), axis=-1)[..., :max_runs]
    end = np.sort(np.where(x & ~nxt, t + 1, dtype(t_len + 1)), axis=-1)[..., :max_runs]
    valid = start < t_len
    return start, end, valid


def _event_counts_chunk(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, ...]:
    ps, pe, pv = runs(np.swapaxes(pred, 1, 2))
    gs, ge, gv = runs(np.swapaxes(gt, 1, 2))
    # (N, C, Rp, Rg) overlap of every predicted run with every true run.
    inter = np.minimum(pe[..., :, None], ge[..., None, :]) - np.maximum(
        ps[..., :, None], gs[..., None, :]
    )
    inter = np.maximum(inter, 0)
    union = (pe - ps)[..., :, None] + (ge - gs)[..., None, :] - inter
    match = (2 * inter >= union) & pv[..., :, None] & gv[..., None, :]
    tp = np.count_nonzero(match.any(axis=-1), axis=-1)
    fp = np.count_nonzero(pv, axis=-1) - tp
    fn = np.count_nonzero(gv, axis=-1) - np.count_nonzero(match.any(axis=-2), axis=-1)
    return tp, fp, fn


def event_counts(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Event-level TP, FP, FN per video and class (IoU >= 0.5 matching).

    Args:
      pred, gt: bool ``(N, T, C)``.
    Returns:
      ``(tp, fp, fn)``, each int64 ``(N, C)``.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    n, t_len, c = pred.shape
    r = (t_len + 1) // 2
    chunk = max(1, _EVENT_CHUNK_ELEMENTS // max(1, c * r * r))
    parts = [
        _event_counts_chunk(pred[i : i + chunk], gt[i : i + chunk]) for i in range(0, n, chunk)
    ]
    if not parts:
        empty = np.zeros((0, c), np.int64)
        return empty, empty, empty
    return tuple(np.concatenate([p[k] for p in parts]).astype(np.int64) for k in range(3))


def video_f_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-video F-score: mean of ``2TP/(2TP+FP+FN)`` over the classes that occur.

    A class occurs when ``TP + FP > 0`` or ``TP + FN > 0``; a video in which no
    class occurs scores 1.0 (all true negatives).

    Args:
      tp, fp, fn: ``(N, C)`` counts.
    Returns:
      float64 ``(N,)`` in [0, 1].
    """
    tp = np.asarray(tp, np.float64)
    denom = 2 * tp + fp + fn
    occurs = denom > 0
    f = np.where(occurs, 2 * tp / np.where(occurs, denom, 1.0), 0.0)
    n_occ = occurs.sum(axis=-1)
    return np.where(n_occ > 0, f.sum(axis=-1) / np.maximum(n_occ, 1), 1.0)


# ---------------------------------------------------------------------------
# The 18 scores


def modality_decisions(a: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Audible, visible, audible-visible, audible-only and visible-only maps.

    Args:
      a, v: bool ``(N, T, C)`` audio and visual decisions (or truths).
    Returns:
      dict with keys ``a, v, av, ao, vo``, each bool ``(N, T, C)``.
    """
    return {"a": a, "v": v, "av": a & v, "ao": a & ~v, "vo": v & ~a}


def _masked_binary(named: Mapping[str, ArrayLike], mask: ArrayLike | None) -> dict[str, np.ndarray]:
    """Checks ``(N, T, C)`` binary arrays of one shape and clears padded segments
    (``mask (N, T)`` = 0) in each."""
    arrays = {name: _as_binary(x, name) for name, x in named.items()}
    first, shape = next(iter(arrays.items()))[0], next(iter(arrays.values())).shape
    for name, x in arrays.items():
        if x.shape != shape:
            raise ValueError(f"{name}: shape {x.shape} differs from {first}'s {shape}")
    if mask is not None:
        m = _as_binary(mask, "mask", ndim=2)
        if m.shape != shape[:2]:
            raise ValueError(f"mask: expected shape {shape[:2]} (N, T), got {m.shape}")
        arrays = {k: x & m[:, :, None] for k, x in arrays.items()}
    return arrays


def avvp_scores(
    pred_a: ArrayLike,
    pred_v: ArrayLike,
    gt_a: ArrayLike,
    gt_v: ArrayLike,
    mask: ArrayLike | None = None,
) -> dict[str, float]:
    """The 18 AVVP F-scores (percent) of docs/method.md §8, old and new metrics.

    Args:
      pred_a, pred_v: binary ``(N, T, C)`` audio / visual segment decisions
        (any bool, int or float dtype holding 0/1).
      gt_a, gt_v: binary ``(N, T, C)`` dense ground truth.
      mask: optional ``(N, T)``; segments where it is 0 are padding and count
        as neither prediction nor truth.
    Returns:
      ``{key: percent}`` for the keys ``SCORE_KEYS``: ``seg_a seg_ao seg_v
      seg_vo seg_av seg_type seg_type_o seg_event seg_event_o`` and the same
      with ``evt_``.
    """
    arrays = _masked_binary({"pred_a": pred_a, "pred_v": pred_v, "gt_a": gt_a, "gt_v": gt_v}, mask)
    if arrays["pred_a"].shape[0] == 0:
        raise ValueError("avvp_scores: no videos to score (N = 0)")

    pred = modality_decisions(arrays["pred_a"], arrays["pred_v"])
    gt = modality_decisions(arrays["gt_a"], arrays["gt_v"])
    scores: dict[str, float] = {}
    for level, count_fn in (("seg", segment_counts), ("evt", event_counts)):
        counts = {k: count_fn(pred[k], gt[k]) for k in ("a", "v", "av", "ao", "vo")}
        per_video = {k: video_f_scores(*c) for k, c in counts.items()}
        per_video["event"] = video_f_scores(*(x + y for x, y in zip(counts["a"], counts["v"])))
        per_video["event_o"] = video_f_scores(*(x + y for x, y in zip(counts["ao"], counts["vo"])))
        means = {k: 100.0 * float(np.mean(f)) for k, f in per_video.items()}
        means["type"] = (means["a"] + means["v"] + means["av"]) / 3.0
        means["type_o"] = (means["ao"] + means["vo"] + means["av"]) / 3.0
        for name in SCORE_NAMES:
            scores[f"{level}_{name}"] = means[name]
    return scores


def per_class_f_scores(
    pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None, level: str = "seg"
) -> np.ndarray:
    """Per-class F-score (percent): the mean, over the videos where class ``c``
    occurs (predicted or true), of that video's ``F_c`` — the per-class view of
    the per-video scores above. NaN for a class that occurs nowhere.

    Args:
      pred, gt: binary ``(N, T, C)``; mask: optional ``(N, T)``.
      level: ``'seg'`` or ``'evt'``.
    Returns:
      float64 ``(C,)``.
    """
    arrays = _masked_binary({"pred": pred, "gt": gt}, mask)
    tp, fp, fn = (segment_counts if level == "seg" else event_counts)(arrays["pred"], arrays["gt"])
    denom = 2 * tp + fp + fn
    f = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    n_occ = (denom > 0).sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(n_occ > 0, 100.0 * f.sum(axis=0) / n_occ, np.nan)


def per_video_scores(
    pred_a: ArrayLike,
    pred_v: ArrayLike,
    gt_a: ArrayLike,
    gt_v: ArrayLike,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Segment-level Type@AV of each video (percent, ``(N,)``): ranks videos for display."""
    x = _masked_binary({"pred_a": pred_a, "pred_v": pred_v, "gt_a": gt_a, "gt_v": gt_v}, mask)
    p = modality_decisions(x["pred_a"], x["pred_v"])
    g = modality_decisions(x["gt_a"], x["gt_v"])
    return 100.0 * np.mean(
        [video_f_scores(*segment_counts(p[k], g[k])) for k in ("a", "v", "av")], axis=0
    )


# ``config.eval.selection`` -> the scores averaged for model selection.
SELECTIONS: dict[str, tuple[str, ...]] = {
    "avvp": SELECTION_KEYS,
    "av": ("seg_av", "evt_av"),
    "type": ("seg_type",),  # VALOR: validation segment Type@AV (main_avvp.py:404)
}


def selection_score(scores: Mapping[str, float], selection: str = "avvp") -> float:
    """Model-selection criterion: the mean of ``SELECTIONS[selection]`` (``'avvp'``:
    the ten ``SELECTION_KEYS`` of docs/method.md §7; ``'av'``: segment and event AV, UnAV-100;
    ``'type'``: segment Type@AV, VALOR)."""
    if selection not in SELECTIONS:
        raise ValueError(
            f"config.eval.selection = {selection!r}: expected one of {sorted(SELECTIONS)}"
        )
    return float(np.mean([scores[k] for k in SELECTIONS[selection]]))


def format_table(
    rows: Mapping[str, Mapping[str, float]] | Mapping[str, float], title: str = ""
) -> str:
    """A readable 2×9 table (segment and event level) of one or more score dicts.

    Args:
      rows: either one score dict (keys ``SCORE_KEYS``) or ``{row_name: scores}``.
    """
    if rows and all(isinstance(v, (int, float)) for v in rows.values()):
        rows = {"": rows}  # type: ignore[dict-item]
    width = max([len(title) + 1, 12] + [len(f"{name} segment ") for name in rows])
    header = f"{title:<{width}}" + "".join(f"{SCORE_TITLES[n]:>7}" for n in SCORE_NAMES)
    lines = [header, "-" * len(header)]
    for name, scores in rows.items():
        for level, label in (("seg", "segment"), ("evt", "event")):
            row_name = f"{name} {label}".strip()
            lines.append(
                f"{row_name:<{width}}"
                + "".join(f"{scores[f'{level}_{n}']:>7.1f}" for n in SCORE_NAMES)
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Binarisation


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Decision thresholds of docs/method.md §8; each a scalar or a per-class ``(C,)`` array.

    ``video_*`` gate a class for the whole video, ``segment_*`` decide each
    segment; a segment is positive when both pass (``>=``). ``gate`` says which
    video-level probability gates: ``'joint'`` (HAN: the modality-agnostic
    ``p`` for both) or ``'modality'`` (official CMPAE/CoLeaF: ``p^a`` / ``p^v``).
    """

    video_a: float | np.ndarray = 0.5
    video_v: float | np.ndarray = 0.5
    segment_a: float | np.ndarray = 0.5
    segment_v: float | np.ndarray = 0.5
    gate: str = "joint"
    name: str = "custom"


# HAN's standard setting (every number of docs/method.md §8's table).
STANDARD = Thresholds(name="standard")
# The CMPAE / CoLeaF official code's inference thresholds.
OFFICIAL = Thresholds(
    video_a=0.52, video_v=0.52, segment_a=0.25, segment_v=0.25, gate="modality", name="official"
)
# JoMoLD's test rule (``main.py:299-307`` of MCG-NJU/JoMoLD; LSLD's too): each modality
# gated by its own video probability, 0.5 everywhere.
JOMOLD = Thresholds(gate="modality", name="jomold")
# CMPAE's test rule (``main.py:205-232`` of MengyuanChen21/CVPR2023-CMPAE): the two passes
# fused (the CMPAE Anchor's inference mix), audio gated at 0.45, visual at per-class
# thresholds (its ``*_early.xlsx``; 0.45 without one: ``config.eval.visual_thresholds``),
# segments at 0.25.
CMPAE = Thresholds(
    video_a=0.45, video_v=0.45, segment_a=0.25, segment_v=0.25, gate="modality", name="cmpae"
)
THRESHOLD_PRESETS: dict[str, Thresholds] = {
    "standard": STANDARD,
    "official": OFFICIAL,
    "jomold": JOMOLD,
    "cmpae": CMPAE,
}


def binarize(
    seg_prob_a: ArrayLike,
    seg_prob_v: ArrayLike,
    video_prob_a: ArrayLike,
    video_prob_v: ArrayLike | None = None,
    thresholds: Thresholds = STANDARD,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment decisions from probabilities: ``1[P_m >= θ_seg] ⊙ 1[p_m >= θ_video]``.

    HAN's standard protocol gates both modalities by the joint video-level
    probability ``p`` (pass it as ``video_prob_a`` and leave ``video_prob_v``
    out); the official CMPAE/CoLeaF code gates each modality by its own
    ``p^a`` / ``p^v``.

    Args:
      seg_prob_a, seg_prob_v: ``(N, T, C)`` segment probabilities.
      video_prob_a: ``(N, C)`` video-level probability gating audio.
      video_prob_v: ``(N, C)`` gating visual; defaults to ``video_prob_a``.
      thresholds: scalars or per-class ``(C,)`` arrays.
    Returns:
      ``(pred_a, pred_v)``, bool ``(N, T, C)``.
    """
    video_prob_v = video_prob_a if video_prob_v is None else video_prob_v
    gate_a = np.asarray(video_prob_a) >= np.asarray(thresholds.video_a)
    gate_v = np.asarray(video_prob_v) >= np.asarray(thresholds.video_v)
    pred_a = (np.asarray(seg_prob_a) >= np.asarray(thresholds.segment_a)) & gate_a[:, None, :]
    pred_v = (np.asarray(seg_prob_v) >= np.asarray(thresholds.segment_v)) & gate_v[:, None, :]
    return pred_a, pred_v


# Candidate per-class visual video-level thresholds (issue: 0.25, 0.30, ..., 0.70).
DEFAULT_THRESHOLD_GRID: tuple[float, ...] = tuple(np.round(np.arange(0.25, 0.7001, 0.05), 2))


def search_visual_thresholds(
    seg_prob_v: ArrayLike,
    video_prob_v: ArrayLike,
    gt_v: ArrayLike,
    base: Thresholds = STANDARD,
    grid: Sequence[float] = DEFAULT_THRESHOLD_GRID,
    mask: ArrayLike | None = None,
) -> np.ndarray:
    """Per-class visual video-level thresholds chosen on a validation split (docs/method.md §8).

    For each candidate ``θ`` and class ``c`` the visual decisions
    ``1[P_v >= base.segment_v] ⊙ 1[p^v >= θ]`` are scored by the class's
    F-score on segment- and event-level counts pooled over all videos
    (``F_seg + F_evt``); each class keeps its best candidate (ties: the one
    closest to ``base.video_v``). Classes never present in ``gt_v`` nor
    predicted keep ``base.video_v``. Fully vectorised over candidates and classes.

    Args:
      seg_prob_v: ``(N, T, C)``; video_prob_v: ``(N, C)``; gt_v: binary ``(N, T, C)``.
      mask: optional ``(N, T)`` valid-segment mask.
    Returns:
      float ``(C,)`` thresholds.
    """
    gt = _as_binary(gt_v, "gt_v")
    seg = np.asarray(seg_prob_v) >= np.asarray(base.segment_v)
    if mask is not None:
        m = _as_binary(mask, "mask", ndim=2)[:, :, None]
        gt, seg = gt & m, seg & m
    grid_arr = np.asarray(grid, np.float64)
    k, (n, t_len, c) = len(grid_arr), gt.shape
    # (K, N, T, C) decisions for every candidate, folded into the video axis.
    pred = seg[None] & (np.asarray(video_prob_v)[None, :, None, :] >= grid_arr[:, None, None, None])
    pred = pred.reshape(k * n, t_len, c)
    gt_k = np.broadcast_to(gt[None], (k, n, t_len, c)).reshape(k * n, t_len, c)
    total = np.zeros((k, c))
    for count_fn in (segment_counts, event_counts):
        tp, fp, fn = (x.reshape(k, n, c).sum(axis=1) for x in count_fn(pred, gt_k))
        denom = 2 * tp + fp + fn
        total += np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    base_v = np.broadcast_to(np.asarray(base.video_v, np.float64), (c,))
    # Prefer the highest score, then the candidate closest to the base threshold.
    closeness = -np.abs(grid_arr[:, None] - base_v[None, :])
    order = np.lexsort((closeness, np.round(total, 12)), axis=0)[-1]
    best = grid_arr[order]
    informative = total.max(axis=0) > 0
    return np.where(informative, best, base_v)


def mean_std(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (sample) standard deviation over seeds of each of the 18 scores."""
    table = np.array([[s[k] for k in SCORE_KEYS] for s in per_seed])
    std = table.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(len(SCORE_KEYS))
    return {
        "mean": dict(zip(SCORE_KEYS, table.mean(axis=0).tolist())),
        "std": dict(zip(SCORE_KEYS, std.tolist())),
    }


def format_mean_std(summary: dict, title: str) -> str:
    names = SCORE_NAMES
    lines = [title, f"{'':<10}" + "".join(f"{SCORE_TITLES[n]:>12}" for n in names)]
    for level, label in (("seg", "segment"), ("evt", "event")):
        lines.append(
            f"{label:<10}"
            + "".join(
                f"{summary['mean'][f'{level}_{n}']:>7.1f}±{summary['std'][f'{level}_{n}']:<4.1f}"
                for n in names
            )
        )
    return "\n".join(lines)
