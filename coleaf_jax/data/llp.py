"""LLP (Look, Listen and Parse) reader: annotation CSVs, HAN features, TFDS builder.

Layout (SPEC §2), as distributed by the HAN authors::

    <feature root>/vggish/<id>.npy        (10, 128)   VGGish, 1 per second
    <feature root>/res152/<id>.npy        (80, 2048)  ResNet-152, 8 frames per second
    <feature root>/r2plus1d_18/<id>.npy   (10, 512)   R(2+1)D-18, 1 clip per second
    <annotation dir>/AVVP_{train,val_pd,test_pd}.csv        filename  event_labels
    <annotation dir>/AVVP_eval_{audio,visual}.csv           filename  onset  offset  event_labels

``<id>`` is the first 11 characters of the CSV ``filename`` (the YouTube id).
The annotation dir defaults to the feature root.

* :func:`read_weak_csv`, :func:`read_dense_csv` and :func:`load_features` parse
  and validate one file each; malformed input raises :class:`LLPDataError` with
  the file, the 1-based line and the field.
* :class:`Llp` is a TFDS builder (``array_record`` files, usable without
  TensorFlow) that calls those readers.
* :func:`load_split` prepares the dataset on first use (cached per feature root
  and annotation dir) and returns one split as stacked numpy arrays.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import functools
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from coleaf_jax import locks
from coleaf_jax.data import npy
from coleaf_jax.data.classes import (
    LLP_CLASS_INDEX,
    LLP_CLASSES,
    LLP_DENSE_CSV,
    LLP_FEATURES,
    LLP_FRAMES_PER_SEGMENT,
    LLP_NUM_SEGMENTS,
    LLP_SPLIT_CSV,
    VIDEO_ID_LENGTH,
)

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Example key -> feature folder (SPEC §2).
FEATURE_FOLDERS: dict[str, str] = {
    "audio": "vggish",
    "video_2d": "res152",
    "video_3d": "r2plus1d_18",
}
# Splits whose videos carry segment-level (dense) audio/visual labels.
DENSE_SPLITS: tuple[str, ...] = ("val", "test")

_WEAK_HEADER = ("filename", "event_labels")
_DENSE_HEADER = ("filename", "onset", "offset", "event_labels")
_INT_RE = re.compile(r"[+-]?\d+")
_MAX_SHOWN_LINES = 3  # offending lines quoted in a warning summary
_MAX_SHOWN_IDS = 5  # video ids quoted in a warning or error
_READ_CHUNK = 128  # examples decoded per data-source call in load_split
# Dense cross-check (:func:`check_dense_coverage`): a val/test split fails when more
# than this share of its videos has a weak-labelled class without any segment in
# either dense CSV. The real LLP CSVs give 12 of 649 val and 23 of 1,200 test videos
# (≈ 1.9 %); a dense CSV cut at a line boundary or left header-only gives 8-55 %.
DENSE_UNCOVERED_MAX_SHARE = 0.05
# Per modality (:func:`check_dense_rows`), the share of a val/test split's videos with
# no row at all in that modality's dense CSV. The released files leave 4 of 649 val and
# 6 of 1,200 test videos without an audio row (≤ 0.62 %) and 70 and 121 without a visual
# row (≤ 10.8 %); cutting the last 1 % of the audio CSV's rows leaves 2.9 % of val without
# one, the last 2 % of the visual CSV's 15.6 %. But a dataset may legitimately hold more
# visible-only (or audible-only) videos: the project's synthetic LLP-layout sets leave
# 3.4-4.0 % without an audio row and 18-21 % without a visual row. Above the WARN share a
# warning names the file and the count; above the MAX share (a file cut to well under
# what any dataset leaves, or header-only) preparation fails naming it.
DENSE_NO_ROW_WARN_SHARE = {"audio": 0.02, "visual": 0.15}
DENSE_NO_ROW_MAX_SHARE = {"audio": 0.25, "visual": 0.50}
DENSE_NO_ROW_RELEASED = {
    "audio": "4 of 649 val and 6 of 1,200 test videos",
    "visual": "70 of 649 val and 121 of 1,200 test videos",
}
# Both checks allow this many videos whatever the share: in a small split one
# video is already several percent (1 of 19 is above 5 %).
DENSE_FEW_VIDEOS = 5
# Dense rows of videos in no split CSV: the released files have 8 such filenames
# (0.4 % of the 1,849 val + test videos); a val/test CSV that lost rows leaves its
# videos' dense rows orphaned. More than this share of the val + test videos, and
# more than DENSE_ORPHANS_ALLOWED videos, fails.
DENSE_ORPHAN_MAX_SHARE = 0.05
DENSE_ORPHANS_ALLOWED = 10


class LLPDataError(ValueError):
    """Malformed LLP annotation or feature file."""


class MissingFeatureError(LLPDataError):
    """A video's feature ``.npy`` file does not exist."""


class SplitArrays(dict):
    """One split as returned by :func:`load_split`: ``{key: array}`` with, as the
    attribute ``skipped``, the ids of the split's videos that were left out
    (missing feature files); an attribute, so that every key stays per-video."""

    skipped: tuple[str, ...] = ()


@dataclasses.dataclass
class DenseReport:
    """Row counts of a dense CSV, as read by :func:`read_dense_csv`.

    Attributes:
      rows: data rows read (header and blank lines excluded).
      zero_length: rows with ``onset == offset`` (empty mask; skipped).
      reversed: rows with ``onset > offset`` (empty mask; skipped).
      duplicates: exact repeats of an earlier row (no effect).
      unknown_video: rows whose filename is not in ``known_ids`` (skipped).
      id_conflicts: rows whose filename differs from an earlier filename with the
        same 11-character video id (skipped).
      unknown_files: the distinct filenames of the ``unknown_video`` rows (not
        compared).
    """

    rows: int = 0
    zero_length: int = 0
    reversed: int = 0
    duplicates: int = 0
    unknown_video: int = 0
    id_conflicts: int = 0
    unknown_files: set[str] = dataclasses.field(default_factory=set, compare=False, repr=False)

    @property
    def skipped(self) -> int:
        """Rows that did not contribute to any label (duplicates excluded)."""
        return self.zero_length + self.reversed + self.unknown_video + self.id_conflicts


def video_id(filename: str) -> str:
    """The YouTube id (first 11 characters) that names a video's feature files."""
    return filename[:VIDEO_ID_LENGTH]


def _where(path: Path, line: int, field: str) -> str:
    return f"{path}: line {line}: field '{field}'"


def _read_rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, str, list[str]]]:
    """Yields ``(line number, raw line, fields)`` of a tab-separated file after its header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LLPDataError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LLPDataError(f"{path}: cannot read annotation file: {e}") from e
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    got = tuple(lines[0].split("\t")) if lines else ()
    if got != header:
        raise LLPDataError(
            f"{path}: line 1: header: expected {'<TAB>'.join(header)!r}, got {'<TAB>'.join(got)!r}"
        )
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():  # blank lines carry nothing (pandas skips them too)
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise LLPDataError(
                f"{path}: line {number}: fields: expected {len(header)} tab-separated fields "
                f"({', '.join(header)}), got {len(fields)}"
            )
        yield number, line, fields


def _check_filename(path: Path, line: int, filename: str) -> None:
    vid = video_id(filename)
    if not vid or "/" in vid or "\\" in vid or vid in (".", ".."):
        raise LLPDataError(
            f"{_where(path, line, 'filename')}: expected a video name (YouTube id first, "
            f"no path separators), got {filename!r}"
        )


def _class_index(path: Path, line: int, name: str) -> int:
    if not name:
        raise LLPDataError(f"{_where(path, line, 'event_labels')}: expected a class name, got ''")
    index = LLP_CLASS_INDEX.get(name)
    if index is None:
        close = difflib.get_close_matches(name, LLP_CLASSES, n=3)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise LLPDataError(
            f"{_where(path, line, 'event_labels')}: unknown class {name!r} "
            f"(expected one of the {len(LLP_CLASSES)} LLP classes){hint}"
        )
    return index


def read_weak_csv(path: PathLike) -> tuple[list[str], np.ndarray]:
    """Reads a weak-label CSV (``filename<TAB>event_labels``, comma-separated classes).

    Returns:
      The filenames in file order and their ``(N, 25)`` float32 multi-hot labels
      (class order of ``LLP_CLASSES``). A class repeated within a row counts
      once (the real ``AVVP_test_pd.csv`` has ``Clapping,Clapping``).

    Raises:
      LLPDataError: bad header, field count, empty or unknown class name, or a
        video id (first 11 characters) listed twice.
    """
    path = Path(path)
    filenames: list[str] = []
    rows: list[list[int]] = []
    first_line: dict[str, int] = {}
    for line, _, (filename, labels) in _read_rows(path, _WEAK_HEADER):
        _check_filename(path, line, filename)
        vid = video_id(filename)
        if vid in first_line:
            raise LLPDataError(
                f"{_where(path, line, 'filename')}: expected each video once, but video id "
                f"{vid!r} already appears on line {first_line[vid]}"
            )
        first_line[vid] = line
        if not labels:
            raise LLPDataError(
                f"{_where(path, line, 'event_labels')}: expected at least one class name, got ''"
            )
        rows.append([_class_index(path, line, name) for name in labels.split(",")])
        filenames.append(filename)
    labels_out = np.zeros((len(rows), len(LLP_CLASSES)), np.float32)
    for i, indices in enumerate(rows):
        labels_out[i, indices] = 1.0
    return filenames, labels_out


def _parse_second(path: Path, line: int, field: str, value: str, num_segments: int) -> int:
    if not _INT_RE.fullmatch(value):
        raise LLPDataError(
            f"{_where(path, line, field)}: expected an integer second, got {value!r}"
        )
    second = int(value)
    if not 0 <= second <= num_segments:
        raise LLPDataError(
            f"{_where(path, line, field)}: expected a second in [0, {num_segments}], got {second}"
        )
    return second


def read_dense_csv(
    path: PathLike,
    num_segments: int = LLP_NUM_SEGMENTS,
    *,
    known_ids: Collection[str] | None = None,
) -> tuple[dict[str, np.ndarray], DenseReport]:
    """Reads a segment-level CSV (``filename<TAB>onset<TAB>offset<TAB>event_labels``).

    Each row marks segments ``[onset, offset)`` of one class; rows of a video are
    OR-ed together. Rows that cannot change any label are skipped, counted in
    the report and summarised in one ``logging`` warning:

    * ``onset == offset`` (``zero_length``) or ``onset > offset`` (``reversed``):
      an empty mask; the reference evaluation's ``gt[c, onset:offset] = 1`` is
      a no-op for them, so scores are unchanged;
    * the filename is not in ``known_ids`` (``unknown_video``, when given);
    * the filename differs from an earlier one with the same video id
      (``id_conflicts``; the first filename wins, so pass ``known_ids`` to
      resolve by split membership instead).

    A row is counted under the first reason in this order. Exact duplicate
    rows are only counted (OR makes them harmless).

    Args:
      path: the CSV.
      num_segments: T, the number of one-second segments.
      known_ids: full ``filename`` values of the split videos (as returned by
        :func:`read_weak_csv`); rows are matched by full filename, like the
        reference evaluation (``df['filename'] == name``).

    Returns:
      ``{video id: (T, 25) float32 0/1 array}`` for videos with at least one
      non-empty row, and the :class:`DenseReport`.

    Raises:
      LLPDataError: bad header or field count, non-integer onset/offset, a
        second outside ``[0, T]``, or an unknown class name.
    """
    path = Path(path)
    known = None if known_ids is None else frozenset(known_ids)
    report = DenseReport()
    shown: dict[str, list[str]] = collections.defaultdict(list)
    labels: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}  # video id -> the filename its rows come from
    seen: set[tuple[str, int, int, int]] = set()

    def skip(kind: str, line: int, text: str) -> None:
        setattr(report, kind, getattr(report, kind) + 1)
        if len(shown[kind]) < _MAX_SHOWN_LINES:
            shown[kind].append(f"line {line}: {text!r}")

    for line, text, (filename, onset_s, offset_s, name) in _read_rows(path, _DENSE_HEADER):
        report.rows += 1
        _check_filename(path, line, filename)
        onset = _parse_second(path, line, "onset", onset_s, num_segments)
        offset = _parse_second(path, line, "offset", offset_s, num_segments)
        cls = _class_index(path, line, name)
        vid = video_id(filename)
        if onset == offset:
            skip("zero_length", line, text)
        elif onset > offset:
            skip("reversed", line, text)
        elif known is not None and filename not in known:
            skip("unknown_video", line, text)
            report.unknown_files.add(filename)
        elif owner.setdefault(vid, filename) != filename:
            skip("id_conflicts", line, text)
        elif (key := (filename, onset, offset, cls)) in seen:
            skip("duplicates", line, text)
        else:
            seen.add(key)
            labels.setdefault(vid, np.zeros((num_segments, len(LLP_CLASSES)), np.float32))
            labels[vid][onset:offset, cls] = 1.0

    if report.skipped or report.duplicates:
        details = "; ".join(f"{kind}: {', '.join(lines)}" for kind, lines in shown.items())
        logger.log(
            logging.WARNING if report.skipped else logging.INFO,
            "%s: %d rows; skipped %d zero-length, %d reversed (onset > offset), "
            "%d unknown-video and %d id-conflict rows; %d exact duplicates (harmless). "
            "First offending lines: %s",
            path,
            report.rows,
            report.zero_length,
            report.reversed,
            report.unknown_video,
            report.id_conflicts,
            report.duplicates,
            details,
        )
    return labels, report


def check_dense_coverage(
    split: str,
    filenames: list[str],
    labels: np.ndarray,
    dense: Mapping[str, Mapping[str, np.ndarray]],
    dense_paths: Mapping[str, PathLike],
    max_share: float = DENSE_UNCOVERED_MAX_SHARE,
    allowed: int | None = None,
) -> list[str]:
    """Cross-checks a dense split's weak labels against the dense CSV rows.

    A video is *uncovered* when one of its weak-labelled classes has no segment
    in either dense CSV (``dense``: ``{'audio': {id: (T, C)}, 'visual': ...}``
    as read by :func:`read_dense_csv`). A few such videos are in the real
    annotation (a warning with the count and the first ids); many mean that a
    dense CSV lost rows, which would score every affected video against
    all-zero truth.

    Returns:
      The uncovered video ids, in CSV order.

    Raises:
      LLPDataError: more than ``max_share`` of the split's videos and more than
        ``allowed`` (default :data:`DENSE_FEW_VIDEOS`) are uncovered; the message
        names both dense CSVs and how many of the split's videos each one covers.
    """
    allowed = DENSE_FEW_VIDEOS if allowed is None else allowed
    uncovered = []
    covered_by = {modality: 0 for modality in dense}
    for filename, label in zip(filenames, labels):
        vid = video_id(filename)
        present = np.zeros(label.shape, bool)
        for modality, rows in dense.items():
            if vid in rows:
                covered_by[modality] += 1
                present |= rows[vid].max(axis=0) > 0
        if np.any((label > 0) & ~present):
            uncovered.append(vid)
    n = len(filenames)
    if not uncovered:
        return uncovered
    first = ", ".join(uncovered[:_MAX_SHOWN_IDS])
    if len(uncovered) > max(max_share * n, allowed):
        files = "; ".join(f"{dense_paths[m]} has rows for {covered_by[m]} of them" for m in dense)
        raise LLPDataError(
            f"LLP {split}: {len(uncovered)} of {n} videos ({100 * len(uncovered) / n:.0f} %) "
            f"have a weak-labelled class with no segment in either dense annotation CSV "
            f"(expected at most {100 * max_share:.0f} % or {allowed} videos; the real LLP "
            f"files: under 2 %). "
            f"A dense CSV probably lost rows (truncated or header-only): {files}. "
            f"Their truth would be all zeros. First videos: {first}"
        )
    logger.warning(
        "LLP %s: %d of %d videos have a weak-labelled class with no segment in either dense "
        "CSV (as in the released annotation; scored as annotated). First: %s",
        split,
        len(uncovered),
        n,
        first,
    )
    return uncovered


def check_dense_rows(
    split: str,
    filenames: list[str],
    dense: Mapping[str, Mapping[str, np.ndarray]],
    dense_paths: Mapping[str, PathLike],
    allowed: int | None = None,
) -> None:
    """Warns, or fails, when a dense CSV has no row for many of a split's videos.

    :func:`check_dense_coverage` counts a class as covered by either modality, so
    an audio CSV that lost a few percent of its rows would pass it; here each
    modality's CSV is checked on its own: above :data:`DENSE_NO_ROW_WARN_SHARE`
    (about 3x the released files) a warning names the file and the count, above
    :data:`DENSE_NO_ROW_MAX_SHARE` it is an error.

    Raises:
      LLPDataError: more than the MAX share of the split's videos and more than
        ``allowed`` (default :data:`DENSE_FEW_VIDEOS`) have no row in one dense
        CSV; the message names it.
    """
    allowed = DENSE_FEW_VIDEOS if allowed is None else allowed
    n = len(filenames)
    for modality, rows in dense.items():
        missing = [video_id(f) for f in filenames if video_id(f) not in rows]
        if len(missing) <= max(DENSE_NO_ROW_WARN_SHARE[modality] * n, allowed):
            continue
        what = (
            f"LLP {split}: {len(missing)} of {n} videos ({100 * len(missing) / n:.1f} %) have "
            f"no row in {dense_paths[modality]} (the released file leaves "
            f"{DENSE_NO_ROW_RELEASED[modality]} without one)"
        )
        first = ", ".join(missing[:_MAX_SHOWN_IDS])
        if len(missing) > DENSE_NO_ROW_MAX_SHARE[modality] * n:
            raise LLPDataError(
                f"{what}, more than {100 * DENSE_NO_ROW_MAX_SHARE[modality]:.0f} %: it probably "
                f"lost rows (truncated or header-only); their {modality} truth would be all "
                f"zeros. First videos: {first}"
            )
        logger.warning(
            "%s: if the file lost rows, their %s truth is all zeros; check it (first videos: %s)",
            what,
            modality,
            first,
        )


def check_dense_orphans(
    orphans: Collection[str],
    split_sizes: Mapping[str, int],
    split_paths: Mapping[str, PathLike],
    dense_paths: Collection[PathLike],
    max_share: float = DENSE_ORPHAN_MAX_SHARE,
) -> None:
    """Fails when many videos have dense rows but are in no split CSV.

    ``orphans``: those filenames (``DenseReport.unknown_files`` of both dense
    CSVs); ``split_sizes``: videos per dense split (val, test). A few exist in
    the released annotation; many mean that a val or test CSV lost rows, and
    its scores would silently come from fewer videos.

    Raises:
      LLPDataError: more than ``max_share`` of the dense splits' videos and more
        than ``DENSE_ORPHANS_ALLOWED``.
    """
    total = sum(split_sizes.values())
    if len(orphans) <= max(max_share * total, DENSE_ORPHANS_ALLOWED):
        return
    sizes = ", ".join(f"{split_paths[s]} lists {n}" for s, n in split_sizes.items())
    raise LLPDataError(
        f"LLP: {len(orphans)} videos have rows in {' and '.join(map(str, dense_paths))} but are "
        f"in no split CSV (expected a handful: 8 in the released files; at most "
        f"{DENSE_ORPHANS_ALLOWED} or {100 * max_share:.0f} % of the {total} val and test videos). "
        f"A split CSV probably lost "
        f"rows: {sizes}. First: {', '.join(sorted(orphans)[:_MAX_SHOWN_IDS])}"
    )


def split_overlap(ids: Mapping[str, Collection[str]]) -> dict[str, list[str]]:
    """``{'train/test': [ids in both], ...}`` for every pair of splits sharing videos."""
    names = list(ids)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(set(ids[a]) & set(ids[b]))
            if shared:
                out[f"{a}/{b}"] = shared
    return out


def check_split_overlap(
    overlap: Mapping[str, list[str]], files: Mapping[str, Path], allow: bool
) -> None:
    """Fails naming the videos and the CSVs when a video is in two splits (a test video
    seen in training inflates its scores), unless ``allow``; then warns."""
    if not overlap:
        return
    pairs = "; ".join(
        f"{files[a].name} and {files[b].name} share {len(v)} (first: "
        f"{', '.join(v[:_MAX_SHOWN_IDS])})"
        for pair, v in overlap.items()
        for a, b in [pair.split("/")]
    )
    if not allow:
        raise LLPDataError(
            f"videos listed in two splits: {pairs}. A video in two splits leaks what it "
            f"teaches into what it scores: remove it from one CSV, or set "
            f"--config.data.allow_split_overlap=True to train and score anyway (the counts "
            f"are then recorded in every metrics file)"
        )
    logger.warning("LLP: videos listed in two splits (config.data.allow_split_overlap): %s", pairs)


def feature_path(root: PathLike, key: str, vid: str) -> Path:
    """Path of one feature file, e.g. ``feature_path(root, 'audio', id)``."""
    return Path(root) / FEATURE_FOLDERS[key] / f"{vid}.npy"


def load_features(root: PathLike, video_id: str) -> dict[str, np.ndarray]:
    """Loads and validates the three feature arrays of one video.

    Returns:
      ``{'audio': (10, 128), 'video_2d': (80, 2048), 'video_3d': (10, 512)}``,
      all float32; ``all_zero_features(features)`` tells whether a file was all zeros.

    Raises:
      MissingFeatureError: a feature file does not exist (all missing paths are
        named).
      LLPDataError: unreadable or not a ``.npy`` file, wrong shape, non-float dtype,
        NaN/inf, or values beyond ``npy.FEATURE_MAX_ABS``.
    """
    paths = {key: feature_path(root, key, video_id) for key in FEATURE_FOLDERS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise MissingFeatureError(
            f"missing feature file(s) for video {video_id!r}: {', '.join(missing)}"
        )
    features, zero = {}, []
    for key, path in paths.items():
        expected = LLP_FEATURES[FEATURE_FOLDERS[key]]
        try:
            array = npy.read_npy(path)
        except npy.FeatureFileError as e:
            raise LLPDataError(str(e)) from None
        if array.shape != expected:
            raise LLPDataError(f"{path}: expected shape {expected}, got {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise LLPDataError(
                f"{path}: expected a float dtype (stored as float32), got {array.dtype}"
            )
        with np.errstate(over="ignore"):  # overflow becomes inf, reported just below
            array = array.astype(np.float32, copy=False)
        try:
            if npy.check_values(path, array):
                zero.append(str(path))
        except npy.FeatureFileError as e:
            raise LLPDataError(str(e)) from None
        features[key] = array
    return FeatureArrays(features, all_zero=tuple(zero))


class FeatureArrays(dict):
    """One video's features (``{key: array}``); ``all_zero``: its files that hold only
    zeros (allowed, but worth a warning: an extractor that failed writes zeros)."""

    def __init__(self, arrays, all_zero: tuple[str, ...] = ()):
        super().__init__(arrays)
        self.all_zero = all_zero


def warn_all_zero(where: str, ids: list[str]) -> None:
    """One warning for the videos of ``where`` with an all-zero feature file."""
    if ids:
        logger.warning(
            "%s: %d video(s) have a feature file of zeros only (first: %s); an extractor "
            "that failed writes zeros: check those files",
            where,
            len(ids),
            ", ".join(ids[:_MAX_SHOWN_IDS]),
        )


class Llp(tfds.core.ShardBasedBuilder):
    """LLP with HAN features; the manual dir is the feature root.

    One ``FeaturesDict`` serves all splits: train examples carry all-zero
    ``label_audio``/``label_visual`` and ``has_dense = False``. Examples keep the
    CSV order. Videos whose feature files are missing are skipped; their ids
    per split are in ``info.metadata['skipped_videos']``. Val and test are
    cross-checked against the dense CSVs (:func:`check_dense_rows`,
    :func:`check_dense_coverage`); the
    ids of their videos with a weak class but no dense segment are in
    ``info.metadata['dense_uncovered']``.

    Each split is written shard by shard (``EXAMPLES_PER_SHARD`` videos each,
    in CSV order) straight to ``array_record`` files: memory stays bounded by
    one shard whatever the split's size, and nothing needs TensorFlow (TFDS's
    ``GeneratorBasedBuilder`` buffers a whole split in memory and spills it to
    disk through TensorFlow above ≈ 1 GB).

    The prepared files do not record which feature root they came from: give
    each root its own ``data_dir`` (:func:`cache_dir` does, and :func:`load_split`
    uses it).
    """

    VERSION = tfds.core.Version("1.4.0")
    RELEASE_NOTES = {
        "1.4.0": "Videos listed in two split CSVs recorded (metadata split_overlap).",
        "1.0.0": "HAN features with weak and dense LLP labels.",
        "1.1.0": "Written shard by shard: bounded memory and no TensorFlow for any split size.",
        "1.2.0": "Dense CSVs cross-checked against the weak labels (lost rows fail).",
        "1.3.0": "Per-split labels sidecar (labels_<split>.npz) for streaming splits.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the LLP features released with HAN ("Unified Multisensory Perception:
    Weakly-Supervised Audio-Visual Video Parsing", Tian et al., ECCV 2020; links in
    the README of github.com/YapengTian/AVVP-ECCV20) and place them as
      <manual_dir>/vggish/<id>.npy        (10, 128)
      <manual_dir>/res152/<id>.npy        (80, 2048)
      <manual_dir>/r2plus1d_18/<id>.npy   (10, 512)
    where <id> is the first 11 characters of a CSV filename. Put the five
    annotation CSVs of that repository's data/ folder (AVVP_train.csv,
    AVVP_val_pd.csv, AVVP_test_pd.csv, AVVP_eval_audio.csv, AVVP_eval_visual.csv)
    in <manual_dir> too, or pass annotation_dir= to the builder.
    """

    # TFDS derives `code_path` for package modules through the optional
    # `importlib_resources` package; this file's path is what it would find.
    code_path = Path(__file__)

    def __init__(self, *, annotation_dir: PathLike | None = None, **kwargs: Any) -> None:
        """``annotation_dir``: folder of the CSVs (default: the manual dir); the rest go to TFDS."""
        self._annotation_dir = None if annotation_dir is None else Path(annotation_dir)
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown
    # size, ...)" before and "downloaded and prepared" after: nothing is downloaded
    # here, and :func:`prepare` logs the inputs, the rate and the output size itself.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        num_classes = len(LLP_CLASSES)
        dense = (LLP_NUM_SEGMENTS, num_classes)
        return tfds.core.DatasetInfo(
            builder=self,
            description="LLP audio-visual video parsing with HAN features (SPEC §2).",
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(doc="YouTube id (feature file stem)"),
                    **{
                        # BYTES: raw buffer; the default float_list proto costs ~50 ms per
                        # (80, 2048) example to serialize, BYTES ~2 ms (same size on disk).
                        key: tfds.features.Tensor(
                            shape=LLP_FEATURES[folder],
                            dtype=np.float32,
                            encoding=tfds.features.Encoding.BYTES,
                        )
                        for key, folder in FEATURE_FOLDERS.items()
                    },
                    "label": tfds.features.Tensor(shape=(num_classes,), dtype=np.float32),
                    "label_audio": tfds.features.Tensor(shape=dense, dtype=np.float32),
                    "label_visual": tfds.features.Tensor(shape=dense, dtype=np.float32),
                    "has_dense": tfds.features.Scalar(dtype=np.bool_),
                }
            ),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _shard_iterators_per_split(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, list[Callable[[], Iterator[tuple[str, dict[str, Any]]]]]]:
        root = Path(dl_manager.manual_dir)
        annotations = self._annotation_dir or root
        weak = {split: read_weak_csv(annotations / csv) for split, csv in LLP_SPLIT_CSV.items()}
        self.info.metadata["split_overlap"] = split_overlap(
            {split: [video_id(f) for f in filenames] for split, (filenames, _) in weak.items()}
        )
        known = [name for filenames, _ in weak.values() for name in filenames]
        dense, orphans = {}, set()
        for modality, csv in LLP_DENSE_CSV.items():
            dense[modality], report = read_dense_csv(annotations / csv, known_ids=known)
            orphans |= report.unknown_files
        dense_paths = {modality: annotations / csv for modality, csv in LLP_DENSE_CSV.items()}
        if all(weak[s][0] for s in DENSE_SPLITS):  # an empty split fails below, naming it
            check_dense_orphans(
                orphans,
                {s: len(weak[s][0]) for s in DENSE_SPLITS},
                {s: annotations / LLP_SPLIT_CSV[s] for s in DENSE_SPLITS},
                list(dense_paths.values()),
            )
        self.info.metadata["dense_uncovered"] = {}
        for split in DENSE_SPLITS:
            if weak[split][0]:
                check_dense_rows(split, weak[split][0], dense, dense_paths)
                self.info.metadata["dense_uncovered"][split] = check_dense_coverage(
                    split, *weak[split], dense, dense_paths
                )
        self.info.metadata["skipped_videos"] = {}
        shards = {}
        for split, (filenames, labels) in weak.items():
            present, skipped = [], []
            for filename, label in zip(filenames, labels):
                vid = video_id(filename)
                if all(feature_path(root, key, vid).is_file() for key in FEATURE_FOLDERS):
                    present.append((vid, label))
                else:
                    skipped.append(vid)
            self.info.metadata["skipped_videos"][split] = skipped
            csv = annotations / LLP_SPLIT_CSV[split]
            if not present:
                raise LLPDataError(
                    f"{csv}: no video of the {split} split to prepare: "
                    + (
                        f"none of its {len(filenames)} videos has all three feature files under "
                        f"{root}"
                        if filenames
                        else "the file has a header but no video rows"
                    )
                )
            if skipped:
                logger.warning(
                    "LLP %s: skipped %d of %d videos without feature files under %s (first: %s)",
                    split,
                    len(skipped),
                    len(filenames),
                    root,
                    ", ".join(skipped[:_MAX_SHOWN_LINES]),
                )
            _write_labels(Path(self.data_dir), split, present, dense)
            progress = _PrepareProgress(split, len(present))
            shards[split] = [
                functools.partial(
                    self._generate_shard,
                    root,
                    split,
                    present[i : i + EXAMPLES_PER_SHARD],
                    dense,
                    progress,
                )
                for i in range(0, len(present), EXAMPLES_PER_SHARD)
            ]
        return shards

    def _generate_shard(
        self,
        root: Path,
        split: str,
        videos: list[tuple[str, np.ndarray]],
        dense: Mapping[str, Mapping[str, np.ndarray]],
        progress: _PrepareProgress,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The examples of one shard: ``videos`` are ``(id, weak label)`` pairs in CSV order."""
        has_dense = split in DENSE_SPLITS
        empty = np.zeros((LLP_NUM_SEGMENTS, len(LLP_CLASSES)), np.float32)
        for vid, label in videos:
            features = load_features(root, vid)
            progress.add(
                sum(f.nbytes for f in features.values()), vid if features.all_zero else None
            )
            yield (
                vid,
                {
                    "id": vid,
                    **features,
                    "label": label,
                    "label_audio": dense["audio"].get(vid, empty) if has_dense else empty,
                    "label_visual": dense["visual"].get(vid, empty) if has_dense else empty,
                    "has_dense": has_dense,
                },
            )


def _labels_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"labels_{split}.npz"


def _write_labels(
    data_dir: Path,
    split: str,
    videos: list[tuple[str, np.ndarray]],
    dense: Mapping[str, Mapping[str, np.ndarray]],
) -> None:
    """The per-video labels of a split in prepared order, beside its array_record files,
    so a streamed split knows its labels without reading any features."""
    ids = [vid for vid, _ in videos]
    arrays = {
        "id": np.array(ids, dtype=str),
        "label": np.stack([label for _, label in videos]).astype(np.float32),
    }
    if split in DENSE_SPLITS:
        empty = np.zeros((LLP_NUM_SEGMENTS, len(LLP_CLASSES)), np.float32)
        for modality in ("audio", "visual"):
            arrays[f"label_{modality}"] = np.stack([dense[modality].get(v, empty) for v in ids])
    np.savez(_labels_path(data_dir, split), **arrays)


# Videos per array_record shard: preparation holds one shard's examples in memory
# (≈ 90 MB of LLP features), reading picks shards by index.
EXAMPLES_PER_SHARD = 128


class _PrepareProgress:
    """Logs the preparation of one split: videos done, videos/s, feature bytes read."""

    def __init__(self, split: str, total: int, every_seconds: float = 10.0) -> None:
        self.split, self.total, self.every = split, total, every_seconds
        self.done = self.bytes = 0
        self.start = self.last = time.monotonic()
        self.all_zero: list[str] = []  # videos with a feature file of zeros only

    def add(self, nbytes: int, all_zero: str | None = None) -> None:
        """One video prepared (``all_zero``: its id if one of its files is all zeros)."""
        self.done += 1
        self.bytes += nbytes
        if all_zero is not None:
            self.all_zero.append(all_zero)
        if self.done == self.total:
            warn_all_zero(f"LLP {self.split}", self.all_zero)
        now = time.monotonic()
        if self.done == self.total or now - self.last >= self.every:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            logger.info(
                "LLP %s: prepared %d/%d videos (%.0f videos/s, %.2f GB of features)",
                self.split,
                self.done,
                self.total,
                rate,
                self.bytes / 1e9,
            )


def cache_dir(
    root: PathLike, annotation_dir: PathLike | None = None, tfds_dir: PathLike | None = None
) -> Path:
    """The folder of one (feature root, annotation dir) pair's prepared datasets.

    ``<tfds_dir or the TFDS default>/llp_<hash>``, where ``<hash>`` is 12 hex
    digits of the SHA-256 of both absolute paths. The TFDS ``data_dir`` is a
    subfolder named by :func:`input_fingerprint`, so edited inputs are
    prepared again.
    """
    root = Path(root).resolve()
    annotations = Path(annotation_dir).resolve() if annotation_dir is not None else root
    digest = hashlib.sha256(f"{root}\n{annotations}".encode()).hexdigest()[:12]
    base = Path(tfds_dir) if tfds_dir is not None else Path(tfds.core.constants.DATA_DIR)
    return base.expanduser() / f"llp_{digest}"


def input_fingerprint(root: PathLike, annotation_dir: PathLike | None = None) -> str:
    """16 hex digits naming what a prepared dataset was built from.

    Hashes the bytes of the five annotation CSVs and, for every file of the
    three feature folders, its name, size and modification time: editing a
    CSV, or adding, removing or replacing a feature file, changes it. Costs
    one ``stat`` per feature file (≈ 0.1 s for the 35,547 files of LLP).
    """
    root = Path(root)
    annotations = Path(annotation_dir) if annotation_dir is not None else root
    h = hashlib.sha256()
    for csv in [*LLP_SPLIT_CSV.values(), *LLP_DENSE_CSV.values()]:
        path = annotations / csv
        h.update(f"{csv}\n".encode())
        try:
            h.update(path.read_bytes())
        except FileNotFoundError:
            h.update(b"<missing>")
        except OSError as e:
            raise LLPDataError(f"{path}: cannot read annotation file: {e.strerror or e}") from e
    for folder in FEATURE_FOLDERS.values():
        try:
            with os.scandir(root / folder) as entries:
                listing = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries)
        except OSError as e:
            raise LLPDataError(
                f"{root / folder}: cannot list the feature folder: {e.strerror or e}"
            ) from e
        h.update(f"{folder}\n".encode())
        h.update("\n".join(f"{n}\t{s}\t{t}" for n, s, t in listing).encode())
    return h.hexdigest()[:16]


def _not_unprepared_variant(record: logging.LogRecord) -> bool:
    return "has no dataset_info.json" not in record.getMessage()


@contextlib.contextmanager
def _no_unprepared_variant_warning():
    """Hides TFDS's "Variant folder … has no dataset_info.json" while :func:`prepare` looks
    for a prepared copy: not finding one is expected, and :func:`prepare` logs itself which
    copy is used or why one is built."""
    absl = logging.getLogger("absl")
    absl.addFilter(_not_unprepared_variant)
    try:
        yield
    finally:
        absl.removeFilter(_not_unprepared_variant)


class DamagedCopyError(LLPDataError):
    """The prepared copy cannot be read (``data_dir``: its folder)."""

    def __init__(self, data_dir: Path, problem: str):
        super().__init__(f"the prepared copy in {data_dir} cannot be used: {problem}")
        self.data_dir, self.problem = Path(data_dir), problem


def prepared_copy(builder: Llp) -> Path:
    """The folder of one prepared copy (``cache_dir(...)/<fingerprint>``): what is moved
    aside when damaged (the builder's ``data_dir`` is its ``llp/<version>`` inside)."""
    return Path(builder.data_dir).parents[1]


def verify_prepared(builder: Llp) -> str | None:
    """Cheap checks of a prepared copy, run each time it is opened: every shard file there
    with the split's recorded byte count (a truncated, emptied or deleted shard), the
    labels sidecar readable with one row per example. The first problem, or None."""
    for split, info in builder.info.splits.items():
        paths = [Path(p) for p in info.filepaths]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            return f"{missing[0].name} is missing"
        size = sum(p.stat().st_size for p in paths)
        if size != int(info.num_bytes):
            return f"the {split} shards hold {size} bytes, {int(info.num_bytes)} were written"
        labels = _labels_path(builder.data_dir, split)
        try:
            with np.load(labels, allow_pickle=False) as z:
                rows = len(z["id"])
        except Exception as e:  # noqa: BLE001 - zip, npy and key errors alike: unreadable
            return f"{labels.name} cannot be read ({type(e).__name__}: {e})"
        if rows != info.num_examples:
            return f"{labels.name} holds {rows} videos, the {split} split {info.num_examples}"
    return None


def _quarantine(data_dir: Path, problem: str, rebuild: bool = True) -> Path:
    """Moves a damaged copy aside (removed with the other stale copies once a new one is
    prepared); returns where it went."""
    aside = data_dir.with_name(f"{data_dir.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(data_dir, aside)
    logger.warning(
        "LLP: the prepared copy in %s cannot be used (%s); moved it to %s%s",
        data_dir,
        problem,
        aside,
        " and preparing it again from the inputs" if rebuild else "",
    )
    return aside


def _open_prepared(annotation_dir, data_dir: Path) -> tuple[Llp | None, bool, str | None]:
    """``(builder, prepared, problem)`` for ``data_dir``: ``problem`` when it holds a copy
    that fails :func:`verify_prepared` or whose ``dataset_info.json`` cannot be read."""
    try:
        with _no_unprepared_variant_warning():
            builder = Llp(annotation_dir=annotation_dir, data_dir=data_dir)
            prepared = builder.is_prepared()
    except Exception as e:  # noqa: BLE001 - TFDS raises JSON, protobuf and OS errors alike
        return None, False, f"its dataset_info.json cannot be read ({type(e).__name__}: {e})"
    problem = verify_prepared(builder) if prepared else None
    return builder, prepared and problem is None, problem


def _remove_incomplete(data_dir: Path) -> None:
    """Removes what a killed preparation of these inputs left (TFDS's
    ``llp/incomplete.*`` folders); only called while holding the preparation lock, so no
    live process is writing them."""
    for left in sorted((data_dir / "llp").glob("incomplete.*")):
        logger.warning("LLP: removing %s, left by a preparation that did not finish", left)
        shutil.rmtree(left, ignore_errors=True)


def prepare(
    root: PathLike, annotation_dir: PathLike | None = None, tfds_dir: PathLike | None = None
) -> Llp:
    """Builds the TFDS dataset of ``root`` unless one built from the same inputs exists.

    The dataset lives in ``cache_dir(...)/<input_fingerprint(...)>``. A cache
    built from other inputs (a CSV edited, a feature file replaced) is
    replaced; which one is used, or why it is rebuilt, is logged. One process at a
    time prepares the same inputs (``<fingerprint>.lock``): another waits for it and
    uses its copy. A copy that fails :func:`verify_prepared` is moved aside and
    prepared again; what a killed preparation left is removed.

    Returns:
      The builder, ready for ``as_data_source``.
    """
    missing = [folder for folder in FEATURE_FOLDERS.values() if not (Path(root) / folder).is_dir()]
    if missing:
        raise LLPDataError(
            f"{root}: expected the LLP feature folders {sorted(FEATURE_FOLDERS.values())} there, "
            f"missing {missing}. {' '.join(Llp.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}"
        )
    parent = cache_dir(root, annotation_dir, tfds_dir)
    fingerprint = input_fingerprint(root, annotation_dir)
    data_dir = parent / fingerprint
    builder, prepared, problem = _open_prepared(annotation_dir, data_dir)
    if prepared:
        logger.info("LLP: using the dataset prepared from these inputs in %s", data_dir)
        return builder

    def waiting(holder: dict) -> None:
        logger.warning(
            "LLP: waiting for %s, which is preparing the same inputs into %s",
            locks.describe(holder),
            data_dir,
        )

    parent.mkdir(parents=True, exist_ok=True)
    try:
        with locks.exclusive(os.fspath(parent / f"{fingerprint}.lock"), wait=True, on_busy=waiting):
            builder, prepared, problem = _open_prepared(annotation_dir, data_dir)  # holding it
            if prepared:
                logger.info("LLP: using the dataset prepared from these inputs in %s", data_dir)
                return builder
            if problem is not None:
                _quarantine(data_dir, problem)
                builder, _, _ = _open_prepared(annotation_dir, data_dir)
            _remove_incomplete(data_dir)
            return _build(builder, root, parent, fingerprint)
    except locks.LockUnsupportedError as e:
        raise LLPDataError(f"cannot prepare into {parent}: {e}") from None


def _build(builder: Llp, root: PathLike, parent: Path, fingerprint: str) -> Llp:
    data_dir = parent / fingerprint
    stale = sorted(p for p in parent.glob("*") if p.is_dir() and p.name != fingerprint)
    changed = [p for p in stale if ".damaged-" not in p.name]
    logger.warning(
        "LLP: preparing %s into %s%s",
        root,
        data_dir,
        f" (the annotation CSVs or feature files changed since {changed[-1]} was prepared; "
        "it will be replaced)"
        if changed
        else "",
    )
    start = time.monotonic()
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(root), try_download_gcs=False)
    builder.download_and_prepare(download_config=config)
    seconds = time.monotonic() - start
    videos = sum(split.num_examples for split in builder.info.splits.values())
    logger.warning(
        "LLP: prepared %d videos in %.0f s (%.0f videos/s), %.2f GB in %s",
        videos,
        seconds,
        videos / max(seconds, 1e-9),
        builder.info.dataset_size / 1e9,
        data_dir,
    )
    problem = verify_prepared(builder)
    if problem is not None:
        raise DamagedCopyError(
            prepared_copy(builder), f"{problem} right after preparing it (disk full?)"
        )
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)
    return builder


# VALOR's offline segment pseudo-labels (SPEC §9): CLAP on audio, CLIP on frames.
PSEUDO_LABEL_FOLDERS = {
    "pl_audio": "CLAP/segment_pseudo_labels",
    "pl_visual": "CLIP/segment_pseudo_labels",
}


def load_pseudo_labels(root: PathLike, ids) -> dict[str, np.ndarray]:
    """The CLAP (audio) and CLIP (visual) segment pseudo-labels of videos ``ids``.

    Reads ``ROOT/CLAP/segment_pseudo_labels/<id>.npy`` and
    ``ROOT/CLIP/segment_pseudo_labels/<id>.npy``, each ``(10, 25)`` in {0, 1}.

    Returns:
      ``{'pl_audio': (N, 10, 25), 'pl_visual': (N, 10, 25)}`` float32.

    Raises:
      MissingFeatureError: files are missing (the count and the first ones named).
      LLPDataError: unreadable file, wrong shape, or values other than 0 and 1.
    """
    shape = (LLP_NUM_SEGMENTS, len(LLP_CLASSES))
    out = {}
    for key, folder in PSEUDO_LABEL_FOLDERS.items():
        paths = [Path(root) / folder / f"{vid}.npy" for vid in ids]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise MissingFeatureError(
                f"{len(missing)} of {len(paths)} pseudo-label files missing under {Path(root) / folder} "
                f"(e.g. {', '.join(missing[:3])}); config.data.pseudo_labels needs one per "
                f"training video"
            )
        arrays = np.empty((len(paths), *shape), np.float32)
        for i, path in enumerate(paths):
            try:
                x = npy.read_npy(path)
            except npy.FeatureFileError as e:
                raise LLPDataError(str(e)) from None
            if x.shape != shape:
                raise LLPDataError(
                    f"{path}: expected shape {shape} (segments, classes), got {x.shape}"
                )
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise LLPDataError(f"{path}: expected 0/1 numbers, got dtype {x.dtype}")
            bad = x[(x != 0) & (x != 1)]
            if bad.size:
                raise LLPDataError(
                    f"{path}: expected binary values 0/1, found {bad.size} others "
                    f"(e.g. {bad.ravel()[:3].tolist()})"
                )
            arrays[i] = x
        out[key] = arrays
    return out


def load_feature_dir(
    root: PathLike, ids=None, *, pool_frames: bool = False
) -> dict[str, np.ndarray]:
    """Features of the videos under ``root`` (``vggish/``, ``res152/``, ``r2plus1d_18/``),
    without any annotation CSV: every id with a ``vggish/<id>.npy``, or ``ids``.

    Videos missing a feature file are skipped with one warning (count and
    first example); a malformed file raises ``LLPDataError`` naming it.
    Returns ``audio``, ``video_2d``, ``video_3d`` as ``load_split`` and ``id``.
    """
    audio_dir = Path(root) / FEATURE_FOLDERS["audio"]
    if ids is None:
        if not audio_dir.is_dir():
            raise MissingFeatureError(f"{audio_dir}: feature folder not found")
        ids = sorted(p.stem for p in audio_dir.glob("*.npy"))
    if not len(ids):
        raise MissingFeatureError(f"{audio_dir}: no .npy feature files")
    rows, missing = [], []
    for vid in ids:
        try:
            rows.append((vid, load_features(root, vid)))
        except MissingFeatureError as e:
            missing.append(str(e))
    if missing:
        logger.warning(
            "%s: skipped %d video(s) with missing feature files (first: %s)",
            root,
            len(missing),
            missing[0],
        )
    if not rows:
        raise MissingFeatureError(f"{root}: no video has all three feature files")
    warn_all_zero(str(root), [vid for vid, f in rows if f.all_zero])
    out = {key: np.stack([f[key] for _, f in rows]) for key in FEATURE_FOLDERS}
    if pool_frames:
        v = out["video_2d"]
        out["video_2d"] = v.reshape(len(v), -1, LLP_FRAMES_PER_SEGMENT, v.shape[-1]).mean(2)
    out["id"] = np.array([vid for vid, _ in rows], dtype=str)
    return out


def feature_shapes(builder: Llp, pool_frames: bool = False) -> dict[str, tuple[int, ...]]:
    """Per-video feature shapes of the prepared dataset (``video_2d`` with the frames of
    each second averaged when ``pool_frames``)."""
    shapes = {key: tuple(builder.info.features[key].shape) for key in FEATURE_FOLDERS}
    if pool_frames:
        steps, dim = shapes["video_2d"]
        shapes["video_2d"] = (steps // LLP_FRAMES_PER_SEGMENT, dim)
    return shapes


def split_feature_bytes(
    root: PathLike,
    split: str,
    *,
    annotation_dir: PathLike | None = None,
    tfds_dir: PathLike | None = None,
    pool_frames: bool = False,
) -> int:
    """Bytes the features of one split take in memory (float32), without reading them."""
    builder = prepare(root, annotation_dir, tfds_dir)
    per_video = sum(
        4 * int(np.prod(shape)) for shape in feature_shapes(builder, pool_frames).values()
    )
    return builder.info.splits[split].num_examples * per_video


def _read_examples(source, indices, data_dir: Path) -> list:
    """``source``'s examples ``indices``; :class:`DamagedCopyError` when a read fails (a
    corrupted or truncated shard: Riegeli's errors name no dataset)."""
    try:
        return source.__getitems__(list(indices)) if len(indices) else []
    except Exception as e:  # noqa: BLE001 - array_record/Riegeli raise RuntimeError, OSError...
        raise DamagedCopyError(data_dir, f"reading it failed ({type(e).__name__}: {e})") from None


class StreamedSplit(SplitArrays):
    """A split whose features stay on disk: ``id`` and the labels are arrays, each feature
    key (``audio``, ``video_2d``, ``video_3d``) a :class:`FeatureColumn` that reads the
    rows it is indexed with from the prepared ``array_record`` files.

    ``gather(idx)`` reads the rows ``idx`` of every feature in one pass (the last
    gather is cached, so ``split['audio'][idx]`` then ``split['video_2d'][idx]`` read
    once). Thread-safe: a background prefetcher may read while the main thread
    trains. Memory: one batch of features, whatever the split's size.
    """

    def __init__(
        self,
        source,
        labels: Mapping[str, np.ndarray],
        shapes: Mapping[str, tuple[int, ...]],
        pool_frames: bool,
        data_dir: Path | None = None,
    ) -> None:
        super().__init__(labels)
        self._source = source
        self._data_dir = data_dir
        self._pool = pool_frames
        self._lock = threading.Lock()
        self._cached: tuple[bytes, dict[str, np.ndarray]] | None = None
        n = len(labels["id"])
        for key, shape in shapes.items():
            self[key] = FeatureColumn(self, key, (n, *shape))

    def gather(self, idx) -> dict[str, np.ndarray]:
        """``{key: (len(idx), ...) float32}`` for every feature key, rows ``idx`` in order."""
        idx = np.asarray(idx, np.int64).ravel()
        tag = idx.tobytes()
        with self._lock:
            if self._cached is not None and self._cached[0] == tag:
                return self._cached[1]
            try:
                examples = _read_examples(self._source, idx.tolist(), self._data_dir)
            except DamagedCopyError as e:  # found while training: repaired by the next run
                if e.data_dir.exists():
                    aside = _quarantine(e.data_dir, e.problem, rebuild=False)
                    raise DamagedCopyError(
                        e.data_dir,
                        f"{e.problem}; moved it to {aside}: re-run the same command to prepare "
                        f"it again (training resumes from its last checkpoint)",
                    ) from None
                raise
            out = {}
            for key in FEATURE_FOLDERS:
                column = self[key]
                batch = (
                    np.stack([example[key] for example in examples])
                    if examples
                    else np.zeros((0, *column.shape[1:]), np.float32)
                )
                if key == "video_2d" and self._pool and batch.shape[1] != column.shape[1]:
                    batch = batch.reshape(len(idx), column.shape[1], -1, batch.shape[-1]).mean(2)
                out[key] = batch
            self._cached = (tag, out)
            return out


class FeatureColumn:
    """One feature of a :class:`StreamedSplit`, indexable like an ``(N, ...)`` array
    (``shape``, ``dtype``, ``nbytes`` are those the array would have)."""

    def __init__(self, split: StreamedSplit, key: str, shape: tuple[int, ...]) -> None:
        self._split, self.key, self.shape = split, key, shape
        self.dtype = np.dtype(np.float32)
        self.ndim = len(shape)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return self._split.gather(np.arange(*index.indices(len(self))))[self.key]
        if np.ndim(index) == 0:
            return self._split.gather([int(index)])[self.key][0]
        return self._split.gather(index)[self.key]

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"the '{self.key}' feature of a streamed split is not held in memory: "
            f"index it with the rows you need"
        )


def load_split(
    root: PathLike,
    split: str,
    *,
    annotation_dir: PathLike | None = None,
    tfds_dir: PathLike | None = None,
    pool_frames: bool = False,
    allow_missing: bool = False,
    allow_split_overlap: bool = False,
    stream: bool = False,
) -> SplitArrays:
    """Loads one LLP split into memory (or opens it for streaming), preparing the TFDS
    cache on first use.

    Args:
      root: feature root (``vggish/``, ``res152/``, ``r2plus1d_18/``).
      split: ``'train'``, ``'val'`` or ``'test'``.
      annotation_dir: folder of the five CSVs (default: ``root``).
      tfds_dir: TFDS data dir (default: the TFDS default); the cache lives in
        :func:`cache_dir`.
      pool_frames: average each second's 8 ResNet frames, giving ``video_2d`` of
        shape (N, 10, 2048); exact for models whose frame projection is linear.
      allow_missing: for val and test, leave out videos whose feature files are
        missing instead of failing (their ids are in ``.skipped``). Training
        videos without features are always left out, with a warning.
      allow_split_overlap: train and score although a video is listed in two split
        CSVs (a warning; ``.also_in_other_splits`` counts this split's such videos);
        otherwise that is an error naming the videos and the CSVs.
      stream: return a :class:`StreamedSplit`: the labels in memory, the features
        read from the prepared ``array_record`` files when a batch asks for them.

    Returns:
      A :class:`SplitArrays`: ``id`` (N,) str, ``audio`` (N, 10, 128),
      ``video_2d`` (N, 80, 2048) or (N, 10, 2048), ``video_3d`` (N, 10, 512),
      ``label`` (N, 25), and for val and test ``label_audio``, ``label_visual``
      (N, 10, 25); float32, CSV order. ``.skipped``: ids left out.

    Raises:
      MissingFeatureError: a val/test video has no feature files and
        ``allow_missing`` is false (its scores would silently come from fewer
        videos).
    """
    if split not in LLP_SPLIT_CSV:
        raise ValueError(f"split: expected one of {sorted(LLP_SPLIT_CSV)}, got {split!r}")
    args = (root, split, annotation_dir, pool_frames, allow_missing, allow_split_overlap, stream)
    builder = prepare(root, annotation_dir, tfds_dir)
    try:
        return _load_prepared(builder, *args)
    except DamagedCopyError as e:  # a read failed: move the copy aside, prepare it once more
        _quarantine(e.data_dir, e.problem)
    builder = prepare(root, annotation_dir, tfds_dir)
    try:
        return _load_prepared(builder, *args)
    except DamagedCopyError as e:
        raise LLPDataError(
            f"{e}, after preparing it again from the inputs: check the disk holding it"
        ) from None


def _load_prepared(
    builder: Llp,
    root: PathLike,
    split: str,
    annotation_dir: PathLike | None,
    pool_frames: bool,
    allow_missing: bool,
    allow_split_overlap: bool,
    stream: bool,
) -> SplitArrays:
    """``load_split`` on a prepared copy; :class:`DamagedCopyError` when it cannot be read."""
    overlap = dict(builder.info.metadata.get("split_overlap", {}))
    annotations = Path(annotation_dir) if annotation_dir is not None else Path(root)
    check_split_overlap(
        overlap, {s: annotations / csv for s, csv in LLP_SPLIT_CSV.items()}, allow_split_overlap
    )
    also = {v for pair, ids in overlap.items() if split in pair.split("/") for v in ids}
    skipped = list(builder.info.metadata["skipped_videos"][split])
    if skipped and split in DENSE_SPLITS and not allow_missing:
        raise MissingFeatureError(
            f"LLP {split}: {len(skipped)} videos of {LLP_SPLIT_CSV[split]} have no feature files "
            f"under {root} (first: {', '.join(skipped[:_MAX_SHOWN_IDS])}); their scores would "
            f"be missing from every {split} result. Restore the files, or pass "
            f"--config.data.allow_missing=True to score the remaining videos (the counts are "
            f"then recorded in every metrics file)"
        )
    if skipped:
        logger.warning("LLP %s: %d videos skipped (missing feature files)", split, len(skipped))
    uncovered = builder.info.metadata.get("dense_uncovered", {}).get(split, [])
    if uncovered:
        logger.info(
            "LLP %s: %d videos have a weak-labelled class with no dense segment (first: %s)",
            split,
            len(uncovered),
            ", ".join(uncovered[:_MAX_SHOWN_IDS]),
        )
    keys = [*FEATURE_FOLDERS, "label"]
    if split in DENSE_SPLITS:
        keys += ["label_audio", "label_visual"]
    shapes = feature_shapes(builder, pool_frames)
    data_dir = Path(builder.data_dir)  # <copy>/llp/<version>
    copy = prepared_copy(builder)
    try:
        source = builder.as_data_source(split=split)
    except Exception as e:  # noqa: BLE001 - array_record raises RuntimeError, OS errors...
        raise DamagedCopyError(copy, f"opening the {split} split failed ({e})") from None
    if stream:
        try:
            with np.load(_labels_path(data_dir, split), allow_pickle=False) as z:
                labels = dict(z)
        except Exception as e:  # noqa: BLE001 - zip, npy and key errors alike: unreadable
            raise DamagedCopyError(copy, f"labels_{split}.npz cannot be read ({e})") from None
        if len(labels["id"]) != len(source):
            raise DamagedCopyError(
                copy,
                f"labels_{split}.npz holds {len(labels['id'])} videos, the split {len(source)}",
            )
        out = StreamedSplit(source, labels, shapes, pool_frames, copy)
        out.skipped = tuple(skipped)
        out.also_in_other_splits = int(np.isin(labels["id"], list(also)).sum())
        return out
    frames = LLP_FRAMES_PER_SEGMENT
    shapes.update({key: builder.info.features[key].shape for key in keys if key not in shapes})
    n = len(source)
    out = {key: np.empty((n, *shape), np.float32) for key, shape in shapes.items()}
    ids: list[str] = []
    for start in range(0, n, _READ_CHUNK):
        examples = _read_examples(source, range(start, min(start + _READ_CHUNK, n)), copy)
        rows = slice(start, start + len(examples))
        ids.extend(example["id"].decode() for example in examples)
        for key in keys:
            if key == "video_2d" and pool_frames:
                batch = np.stack([example[key] for example in examples])
                out[key][rows] = batch.reshape(len(examples), -1, frames, batch.shape[-1]).mean(2)
            else:
                np.stack([example[key] for example in examples], out=out[key][rows])
        logger.info("LLP %s: read %d/%d examples", split, rows.stop, n)
    out["id"] = np.array(ids, dtype=str)
    out = SplitArrays(out)
    out.skipped = tuple(skipped)
    out.also_in_other_splits = int(np.isin(out["id"], list(also)).sum())
    return out
