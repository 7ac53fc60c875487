"""LLP's feature files: one video's three arrays (checked), a folder of them without
annotations, and VALOR's segment pseudo-labels (docs/method.md §2, §9).

    <root>/vggish/<id>.npy        (10, 128)   VGGish, 1 per second
    <root>/res152/<id>.npy        (80, 2048)  ResNet-152, 8 frames per second
    <root>/r2plus1d_18/<id>.npy   (10, 512)   R(2+1)D-18, 1 clip per second
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from coleaf_jax.data import npy
from coleaf_jax.data.classes import (
    FEATURE_FOLDERS,
    LLP_CLASSES,
    LLP_FEATURES,
    LLP_FRAMES_PER_SEGMENT,
    LLP_NUM_SEGMENTS,
)
from coleaf_jax.data.llp_annotations import (
    _MAX_SHOWN_IDS,
    LLPDataError,
    MissingFeatureError,
    PathLike,
)

logger = logging.getLogger("coleaf_jax.data.llp")  # one logger for the LLP dataset


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
    missing = [npy.describe_missing(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise MissingFeatureError(
            f"missing feature file(s) for video {video_id!r}: {', '.join(missing)}"
        )
    features, zero = {}, []
    for key, path in paths.items():
        try:  # shape and dtype checked from the header, before the data is read
            array = npy.read_npy(path, shape=LLP_FEATURES[FEATURE_FOLDERS[key]], kinds="f")
        except npy.FeatureFileError as e:
            raise LLPDataError(str(e)) from None
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


# VALOR's offline segment pseudo-labels (docs/method.md §9): CLAP on audio, CLIP on frames.
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
        missing = [npy.describe_missing(p) for p in paths if not p.is_file()]
        if missing:
            raise MissingFeatureError(
                f"{len(missing)} of {len(paths)} pseudo-label files missing under {Path(root) / folder} "
                f"(e.g. {', '.join(missing[:3])}); config.data.pseudo_labels needs one per "
                f"training video"
            )
        arrays = np.empty((len(paths), *shape), np.float32)
        for i, path in enumerate(paths):
            try:
                x = npy.read_npy(path, check=_pseudo_label_header)
            except npy.FeatureFileError as e:
                raise LLPDataError(str(e)) from None
            bad = x[(x != 0) & (x != 1)]
            if bad.size:
                raise LLPDataError(
                    f"{path}: expected binary values 0/1, found {bad.size} others "
                    f"(e.g. {bad.ravel()[:3].tolist()})"
                )
            arrays[i] = x
        out[key] = arrays
    return out


def _pseudo_label_header(header: npy.NpyHeader) -> str | None:
    """What is wrong with a pseudo-label file's header (``load_pseudo_labels``), if anything."""
    shape = (LLP_NUM_SEGMENTS, len(LLP_CLASSES))
    if header.shape != shape:
        return f"expected shape {shape} (segments, classes), got {header.shape}"
    if header.dtype.kind not in "biuf":
        return f"expected 0/1 numbers, got dtype {header.dtype}"
    return None


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
