"""Splits as the data pipeline sees them, for every dataset.

* :class:`SplitArrays`: a split held in memory, ``{key: (N, ...) array}``, with the
  ids left out (``skipped``) and, where a user allowed it, how many of its videos
  are also in another split (``also_in_other_splits``) as attributes.
* :class:`StreamedSplit`: a split whose labels are in memory and whose features are
  read from disk batch by batch (``FeatureColumn``), through a ``read`` function of
  the dataset (LLP: its prepared ``array_record`` files).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np

from coleaf_jax.data.classes import FEATURE_FOLDERS


class SplitArrays(dict):
    """One split: ``{key: array}`` with, as the attribute ``skipped``, the ids of the
    split's videos that were left out (missing feature files), and as
    ``also_in_other_splits`` the number of its videos listed in another split too
    (``config.data.allow_split_overlap``); attributes, so every key stays per-video."""

    skipped: tuple[str, ...] = ()
    also_in_other_splits: int = 0


class StreamedSplit(SplitArrays):
    """A split whose features stay on disk: ``id`` and the labels are arrays, each feature
    key (``audio``, ``video_2d``, ``video_3d``) a :class:`FeatureColumn` that reads the
    rows it is indexed with through ``read(indices) -> [example dict]``.

    ``gather(idx)`` reads the rows ``idx`` of every feature in one pass (the last
    gather is cached, so ``split['audio'][idx]`` then ``split['video_2d'][idx]`` read
    once). Thread-safe: a background prefetcher may read while the main thread
    trains. Memory: one batch of features, whatever the split's size.
    """

    def __init__(
        self,
        read: Callable[[list[int]], list[Mapping[str, np.ndarray]]],
        labels: Mapping[str, np.ndarray],
        shapes: Mapping[str, tuple[int, ...]],
        pool_frames: bool,
    ) -> None:
        super().__init__(labels)
        self._read = read
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
            examples = self._read(idx.tolist()) if len(idx) else []
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
