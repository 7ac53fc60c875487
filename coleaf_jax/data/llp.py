"""LLP (Look, Listen and Parse) with HAN's features: the dataset's public face.

Layout (docs/method.md §2), as distributed by the HAN authors::

    <feature root>/vggish/<id>.npy        (10, 128)   VGGish, 1 per second
    <feature root>/res152/<id>.npy        (80, 2048)  ResNet-152, 8 frames per second
    <feature root>/r2plus1d_18/<id>.npy   (10, 512)   R(2+1)D-18, 1 clip per second
    <annotation dir>/AVVP_{train,val_pd,test_pd}.csv        filename  event_labels
    <annotation dir>/AVVP_eval_{audio,visual}.csv           filename  onset  offset  event_labels

``<id>`` is the first 11 characters of the CSV ``filename`` (the YouTube id).
The annotation dir defaults to the feature root. :func:`load_split` prepares the
dataset on first use (``llp_prepared``: TFDS ``array_record`` files, cached per
feature root, annotation dir and inputs) and returns one split as stacked numpy
arrays, or opened for streaming. The parts, by concern:

* ``llp_annotations``: the CSVs (reading, validation, cross-checks, split overlap);
* ``llp_features``: the feature files (and VALOR's pseudo-labels);
* ``llp_prepared``: the TFDS builder, the fingerprinted cache, its verification;
* ``splits``: the split types every dataset returns.

Their public names are available here too (``llp.read_weak_csv``, ``llp.prepare``…).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from coleaf_jax.data.classes import (
    DENSE_SPLITS,
    FEATURE_FOLDERS,
    LLP_FRAMES_PER_SEGMENT,
    LLP_SPLIT_CSV,
)
from coleaf_jax.data.llp_annotations import (  # noqa: F401 - the dataset's API
    _MAX_SHOWN_IDS,
    DENSE_FEW_VIDEOS,
    DENSE_NO_ROW_MAX_SHARE,
    DENSE_NO_ROW_WARN_SHARE,
    DENSE_ORPHAN_MAX_SHARE,
    DENSE_ORPHANS_ALLOWED,
    DENSE_UNCOVERED_MAX_SHARE,
    DenseReport,
    LLPDataError,
    MissingFeatureError,
    PathLike,
    check_dense_coverage,
    check_dense_orphans,
    check_dense_rows,
    check_split_overlap,
    read_dense_csv,
    read_weak_csv,
    split_overlap,
    video_id,
)
from coleaf_jax.data.llp_features import (  # noqa: F401 - the dataset's API
    PSEUDO_LABEL_FOLDERS,
    FeatureArrays,
    feature_path,
    load_feature_dir,
    load_features,
    load_pseudo_labels,
)
from coleaf_jax.data.llp_prepared import (  # noqa: F401 - the dataset's API
    EXAMPLES_PER_SHARD,
    DamagedCopyError,
    Llp,
    _labels_path,
    _quarantine,
    cache_dir,
    feature_shapes,
    input_fingerprint,
    preparation_processes,
    prepare,
    prepared_copy,
    read_examples,
    split_feature_bytes,
    streamed_reader,
    verify_prepared,
)
from coleaf_jax.data.splits import FeatureColumn, SplitArrays, StreamedSplit  # noqa: F401

logger = logging.getLogger(__name__)
_READ_CHUNK = 128  # examples decoded per data-source call in load_split
_LOG_EVERY_SECONDS = 5.0  # load_split's progress lines: this often, and at the end


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
    prepare_processes: int = 0,
    prepared: Llp | None = None,
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
      prepare_processes: processes that write the prepared copy if there is none
        (0: one per core for large inputs; :func:`preparation_processes`).
      prepared: the builder :func:`prepare` returned for these inputs, when the
        caller has it (loading several splits fingerprints the inputs once).

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
    builder = prepared or prepare(root, annotation_dir, tfds_dir, prepare_processes)
    try:
        return _load_prepared(builder, *args)
    except DamagedCopyError as e:  # a read failed: move the copy aside, prepare it once more
        _quarantine(e.data_dir, e.problem)
    builder = prepare(root, annotation_dir, tfds_dir, prepare_processes)
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
        out = StreamedSplit(streamed_reader(source, copy), labels, shapes, pool_frames)
        out.skipped = tuple(skipped)
        out.also_in_other_splits = int(np.isin(labels["id"], list(also)).sum())
        return out
    frames = LLP_FRAMES_PER_SEGMENT
    shapes.update({key: builder.info.features[key].shape for key in keys if key not in shapes})
    n = len(source)
    out = {key: np.empty((n, *shape), np.float32) for key, shape in shapes.items()}
    ids: list[str] = []
    logged = time.monotonic()
    for start in range(0, n, _READ_CHUNK):
        examples = read_examples(source, range(start, min(start + _READ_CHUNK, n)), copy)
        rows = slice(start, start + len(examples))
        ids.extend(example["id"].decode() for example in examples)
        for key in keys:
            if key == "video_2d" and pool_frames:
                batch = np.stack([example[key] for example in examples])
                out[key][rows] = batch.reshape(len(examples), -1, frames, batch.shape[-1]).mean(2)
            else:
                np.stack([example[key] for example in examples], out=out[key][rows])
        if rows.stop == n or time.monotonic() - logged >= _LOG_EVERY_SECONDS:
            logged = time.monotonic()
            logger.info("LLP %s: read %d/%d examples", split, rows.stop, n)
    out["id"] = np.array(ids, dtype=str)
    out = SplitArrays(out)
    out.skipped = tuple(skipped)
    out.also_in_other_splits = int(np.isin(out["id"], list(also)).sum())
    return out
