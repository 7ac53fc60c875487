"""From a config to in-memory splits, and from splits to fixed-shape batches.

A batch is a dict of numpy arrays with a fixed leading size ``B`` (the last
batch of an epoch is padded; a batch size larger than the split is cut to the split,
``fit_batch_size``), so one compiled step serves every batch:

* ``audio (B, T, 128)``, ``video_2d (B, T or T*8, 2048)``, ``video_3d (B, T, 512)``
  (LLP widths; UnAV-100 has its own),
* ``label (B, C)`` weak labels,
* ``mask (B, T)`` valid segments (0 for padding videos and, with variable-length
  data, for the padded tail of shorter videos),
* ``video_mask (B,)`` 1 for real videos, 0 for padding.

Variable-length splits (UnAV-100) are stored padded to their longest video
with a ``mask (N, T)``; ``make_batch(..., bucket=k)`` crops a batch to the
smallest multiple of ``k`` segments that holds its longest video, so short
batches cost less and a handful of shapes get compiled.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import numpy as np

from coleaf_jax import registry
from coleaf_jax.data.splits import SplitArrays, StreamedSplit

logger = logging.getLogger(__name__)

FEATURE_KEYS = ("audio", "video_2d", "video_3d")
BATCH_KEYS = FEATURE_KEYS + ("label",)
# Carried into batches when the split has them: segment pseudo-labels (docs/method.md §9).
OPTIONAL_KEYS = ("pl_audio", "pl_visual")


def can_pool_frames(config) -> bool:
    """Whether frames may be averaged at load time: exact unless the Anchor puts a
    nonlinearity between the frame projection and the average (its registry entry's
    ``pool_frames_first``: not CMPAE's ELU), or ``config.model.pool_frames_first`` asks
    for the per-frame projection."""
    return registry.anchor(config.model.anchor).pool_frames_first and bool(
        config.model.pool_frames_first
    )


def load_splits(
    config, workdir: str, splits=("train", "val", "test"), pool_frames: bool | None = None
) -> dict[str, SplitArrays]:
    """The named splits of ``config.data.dataset`` (its registry entry's ``load_splits``).

    ``pool_frames`` averages each second's 8 ResNet frames at load time (default:
    ``can_pool_frames(config)``). Val/test videos without feature files are an error
    unless ``config.data.allow_missing``; each split is a ``splits.SplitArrays`` whose
    ``skipped`` lists the videos left out (``skipped_ids``).
    """
    if pool_frames is None:
        pool_frames = can_pool_frames(config)
    dataset = registry.dataset(config.data.dataset)
    return registry.resolve(dataset.load_splits)(config, workdir, tuple(splits), pool_frames)


def skipped_ids(data) -> tuple[str, ...]:
    """Videos of a split left out for missing feature files (``llp.SplitArrays.skipped``)."""
    return tuple(getattr(data, "skipped", ()))


def also_in_other_splits(data) -> int:
    """Videos of a split also listed in another split (``config.data.allow_split_overlap``)."""
    return int(getattr(data, "also_in_other_splits", 0))


def load_feature_dir(config, directory: str, ids=None) -> dict[str, np.ndarray]:
    """Features of the videos in ``directory`` in ``config.data``'s layout, no annotations
    needed (LLP: ``vggish/``, ``res152/``, ``r2plus1d_18/``; UnAV-100: ``<id>_*.npy``)."""
    reader = registry.dataset(config.data.dataset).load_feature_dir
    return registry.resolve(reader)(config, directory, ids)


def class_names(config, workdir: str) -> list[str]:
    """Class names of ``config.data`` in index order."""
    return registry.resolve(registry.dataset(config.data.dataset).class_names)(config, workdir)


def num_batches(num_videos: int, batch_size: int) -> int:
    return -(-num_videos // batch_size)


def fit_batch_size(batch_size: int, num_videos: int, multiple: int = 1) -> int:
    """The batch size used on a split of ``num_videos``: ``batch_size``, or when that is
    larger than the split, the split's size rounded up to a multiple of ``multiple`` (the
    devices a batch is split over). Batches are never padded beyond that: a batch of
    1e8 on 64 videos is one batch of 64, not 1e8 rows of padding (which runs out of
    memory), with the same results (losses and scores count real videos only)."""
    whole = num_batches(max(num_videos, 1), multiple) * multiple
    return min(batch_size, whole)


def batch_size_note(
    batch_size: int, num_videos: int, multiple: int = 1, what: str = "config.batch_size"
) -> str | None:
    """One line for the user when :func:`fit_batch_size` changes ``batch_size``, else None."""
    used = fit_batch_size(batch_size, num_videos, multiple)
    if used == batch_size:
        return None
    return (
        f"{what} = {batch_size} is larger than the {num_videos} videos of the split: one "
        f"batch of {used} per epoch instead (the same results)"
    )


def batch_keys(data: dict) -> tuple[str, ...]:
    """The keys of ``data`` a batch carries (no ``label`` for unannotated videos)."""
    return tuple(k for k in BATCH_KEYS + OPTIONAL_KEYS if k in data)


def resident_fields(data: dict) -> dict[str, np.ndarray]:
    """The arrays of a split that training keeps on the device: the batch keys and,
    for variable-length data, ``mask``."""
    if is_streamed(data):
        raise ValueError(
            "a streamed split (larger than config.data.resident_max_gib) cannot "
            "be kept on the device"
        )
    return {k: data[k] for k in (*batch_keys(data), "mask") if k in data}


def num_classes(config) -> int:
    """Classes of ``config.data`` (25 for the LLP layout, ``data.num_classes`` for UnAV-100)."""
    return registry.resolve(registry.dataset(config.data.dataset).num_classes)(config)


def bucket_length(lengths: np.ndarray, bucket: int, max_length: int) -> int:
    """The smallest multiple of ``bucket`` holding ``max(lengths)``, at most ``max_length``."""
    longest = int(np.max(lengths)) if len(lengths) else 1
    return min(max_length, -(-max(longest, 1) // bucket) * bucket)


def make_batch(
    data: dict[str, np.ndarray], idx: np.ndarray, batch_size: int, bucket: int = 0
) -> dict[str, np.ndarray]:
    """Gathers videos ``idx`` (at most ``batch_size``) and pads to ``batch_size``.

    With ``bucket > 0`` and a split ``mask``, the time axis is cropped to
    ``bucket_length`` of the batch's valid lengths (only padding is removed).
    """
    n = len(idx)
    pad = batch_size - n
    t = data["audio"].shape[1]
    seg_mask = data["mask"][idx] if "mask" in data else np.ones((n, t), bool)
    t_batch = bucket_length(seg_mask.sum(1), bucket, t) if bucket and "mask" in data else t
    batch = {}
    for k in batch_keys(data):
        x = data[k][idx]
        if t_batch < t and k != "label":
            x = x[:, : t_batch * (x.shape[1] // t)]
        batch[k] = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    seg_mask = seg_mask[:, :t_batch]
    batch["mask"] = np.concatenate([seg_mask, np.zeros((pad, t_batch), bool)]) if pad else seg_mask
    batch["video_mask"] = (np.arange(batch_size) < n).astype(np.float32)
    return batch


def epoch_batches(
    data: dict[str, np.ndarray],
    batch_size: int,
    perm: np.ndarray | None = None,
    bucket: int = 0,
    prefetch: int | None = None,
    multiple: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches over a split in the order ``perm`` (default: as stored).

    A ``batch_size`` larger than the split gives one batch of the split's size rounded
    up to ``multiple`` (:func:`fit_batch_size`), not one padded to ``batch_size``.
    A streamed split (``is_streamed``) is read ``prefetch`` batches ahead by a
    background thread (default ``PREFETCH_BATCHES``), so reading overlaps training.
    """
    n = len(data["audio"])
    order = np.arange(n) if perm is None else np.asarray(perm)
    batch_size = fit_batch_size(batch_size, len(order), multiple)
    batches = (
        make_batch(data, order[i : i + batch_size], batch_size, bucket)
        for i in range(0, n, batch_size)
    )
    if prefetch is None:
        prefetch = PREFETCH_BATCHES if is_streamed(data) else 0
    return background(batches, prefetch) if prefetch else batches


PREFETCH_BATCHES = 2  # batches a streamed split is read ahead


def is_streamed(data) -> bool:
    """Whether a split's features are read from disk on demand (``splits.StreamedSplit``)."""
    return isinstance(data, StreamedSplit)


def background(items: Iterator, size: int) -> Iterator:
    """Iterates ``items`` in a background thread, ``size`` items ahead; an exception
    there is raised here, and leaving the loop early stops the thread."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put((done, e))

    thread = threading.Thread(target=produce, name="coleaf-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
