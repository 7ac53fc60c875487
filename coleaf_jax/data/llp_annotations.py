"""LLP's annotation CSVs: reading, validation, and the checks between them.

* :func:`read_weak_csv`, :func:`read_dense_csv` parse one file each; malformed
  input raises :class:`LLPDataError` with the file, the 1-based line and the field.
* :func:`check_dense_coverage`, :func:`check_dense_rows`,
  :func:`check_dense_orphans` cross-check the dense (segment-level) CSVs against the
  weak labels, so that a file that lost rows is named before it scores videos
  against all-zero truth (thresholds below, measured on the released files).
* :func:`split_overlap`, :func:`check_split_overlap`: a video listed in two split CSVs.

Layout (docs/method.md §2): ``AVVP_{train,val_pd,test_pd}.csv`` (``filename
event_labels``) and ``AVVP_eval_{audio,visual}.csv`` (``filename onset offset
event_labels``), tab-separated; ``<id>`` is the first 11 characters of a filename.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import numpy as np

from coleaf_jax.data.classes import (
    LLP_CLASS_INDEX,
    LLP_CLASSES,
    LLP_NUM_SEGMENTS,
    VIDEO_ID_LENGTH,
)

logger = logging.getLogger("coleaf_jax.data.llp")  # one logger for the LLP dataset

PathLike = str | os.PathLike[str]


_WEAK_HEADER = ("filename", "event_labels")
_DENSE_HEADER = ("filename", "onset", "offset", "event_labels")
_INT_RE = re.compile(r"[+-]?\d+")
_MAX_SHOWN_LINES = 3  # offending lines quoted in a warning summary
_MAX_SHOWN_IDS = 5  # video ids quoted in a warning or error
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
