"""From a config to in-memory splits, and from splits to fixed-shape batches.

A batch is a dict of numpy arrays with a fixed leading size ``B`` (the last
batch of an epoch is padded), so one compiled step serves every batch:

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
import os
import queue
import threading
from collections.abc import Iterator

import numpy as np

from coleaf_jax.data import llp, synthetic, unav100
from coleaf_jax.data.classes import LLP_CLASSES

logger = logging.getLogger(__name__)

FEATURE_KEYS = ("audio", "video_2d", "video_3d")
BATCH_KEYS = FEATURE_KEYS + ("label",)
# Carried into batches when the split has them: segment pseudo-labels (SPEC §9).
OPTIONAL_KEYS = ("pl_audio", "pl_visual")
DATASETS = ("llp", "synthetic", "unav100", "synthetic_unav100")


def synthetic_root(config, workdir: str) -> str:
    """Where ``data.dataset = 'synthetic'`` lives: ``data.root`` or ``<workdir>/data``."""
    return config.data.root or os.path.join(workdir, "data")


def ensure_synthetic(config, workdir: str) -> str:
    """Generates the synthetic dataset once (the generator's ``.complete`` marker records
    it, so a folder written by the CLI with other settings is used as it is).

    ``data.dataset = 'synthetic'`` writes the LLP layout; ``'synthetic_unav100'``
    the variable-length UnAV-100 layout.
    """
    root = synthetic_root(config, workdir)
    if not os.path.exists(os.path.join(root, synthetic.COMPLETE_MARKER)):
        if config.data.dataset == "synthetic_unav100":
            cfg = synthetic.SyntheticUnavConfig(
                num_videos=config.data.synthetic_videos,
                num_classes=config.data.num_classes,
                seed=config.data.synthetic_seed,
            )
            synthetic.generate_unav(root, cfg, verbose=True)
        else:
            cfg = synthetic.SyntheticConfig(
                num_videos=config.data.synthetic_videos, seed=config.data.synthetic_seed
            )
            synthetic.generate(root, cfg, verbose=True)
    return root


def can_pool_frames(config) -> bool:
    """Whether frames may be averaged at load time: exact unless the Anchor puts a
    nonlinearity between the frame projection and the average (CMPAE's ELU), or
    ``config.model.pool_frames_first`` asks for the per-frame projection."""
    return config.model.anchor != "cmpae" and config.model.pool_frames_first


def load_splits(
    config, workdir: str, splits=("train", "val", "test"), pool_frames: bool | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Loads the named splits of ``config.data`` into memory (``llp.load_split``).

    ``pool_frames`` averages each second's 8 ResNet frames at load time
    (default: ``can_pool_frames(config)``). Val/test videos without feature
    files are an error unless ``config.data.allow_missing``; each split is an
    ``llp.SplitArrays`` whose ``skipped`` lists the videos left out
    (``skipped_ids``).
    """
    allow_missing = config.data.get("allow_missing", False)
    if pool_frames is None:
        pool_frames = can_pool_frames(config)
    dataset = config.data.dataset
    if dataset in ("unav100", "synthetic_unav100"):
        if dataset == "synthetic_unav100":
            root = ensure_synthetic(config, workdir)
        elif not config.data.root:
            raise ValueError(
                "config.data.root is required for UnAV-100: the folder holding "
                "annotations/unav100_annotations.json and av_features/ (pass "
                "--config.data.root=/path/to/unav100)"
            )
        else:
            root = config.data.root
        out = {}
        for s in splits:
            split = llp.SplitArrays(
                unav100.load_split(
                    root,
                    s,
                    features=config.data.unav_features,
                    overlap=config.data.unav_overlap,
                    annotation_file=config.data.unav_annotation_file or None,
                    num_classes=config.data.num_classes,
                )
            )
            split.skipped = _unav_skipped(config, root, s, split["id"])
            if split.skipped and s != "train" and not allow_missing:
                raise llp.MissingFeatureError(
                    f"UnAV-100 {s}: {len(split.skipped)} videos have no feature files under "
                    f"{os.path.join(root, unav100.FEATURE_DIR)} (first: "
                    f"{', '.join(split.skipped[:5])}); their scores would be missing from every "
                    f"{s} result. Restore the files, or pass --config.data.allow_missing=True to "
                    f"score the remaining videos (the counts are then recorded in every metrics "
                    f"file)"
                )
            out[s] = split
        return out
    if dataset == "synthetic":
        root = ensure_synthetic(config, workdir)
        tfds_dir = config.data.tfds_dir or os.path.join(root, "tfds")
    elif config.data.dataset == "llp":
        if not config.data.root:
            raise ValueError(
                "config.data.root is required for LLP: the folder holding vggish/, "
                "res152/ and r2plus1d_18/ (pass --config.data.root=/path/to/LLP)"
            )
        root = config.data.root
        tfds_dir = config.data.tfds_dir or None
    else:
        raise ValueError(
            f"config.data.dataset = {config.data.dataset!r}: expected one of {list(DATASETS)}"
        )
    common = dict(
        annotation_dir=config.data.annotation_dir or None,
        tfds_dir=tfds_dir,
        pool_frames=pool_frames,
    )
    streamed = streamed_splits(config, splits, lambda s: llp.split_feature_bytes(root, s, **common))
    out = {
        s: llp.load_split(
            root,
            s,
            allow_missing=allow_missing,
            allow_split_overlap=config.data.allow_split_overlap,
            stream=s in streamed,
            **common,
        )
        for s in splits
    }
    if config.data.pseudo_labels and "train" in out:
        out["train"].update(llp.load_pseudo_labels(root, out["train"]["id"]))
    return out


def streamed_splits(config, splits, feature_bytes) -> set[str]:
    """The splits to stream: held in memory, val and test first (read every epoch), then
    train, while their features fit ``config.data.resident_max_gib`` together; the rest
    are read from disk batch by batch. ``feature_bytes(split)`` gives a split's size."""
    budget = config.data.resident_max_gib * 2**30
    streamed = set()
    for split in sorted(splits, key=lambda s: s == "train"):
        size = feature_bytes(split)
        if size <= budget:
            budget -= size
        else:
            streamed.add(split)
    if streamed:
        logger.info(
            "streaming %s from disk (features over config.data.resident_max_gib = %g GiB)",
            ", ".join(sorted(streamed)),
            config.data.resident_max_gib,
        )
    return streamed


def _unav_skipped(config, root: str, split: str, loaded_ids) -> tuple[str, ...]:
    """The annotated videos of an UnAV-100 split that ``unav100.load_split`` left out."""
    path = config.data.unav_annotation_file or os.path.join(root, unav100.ANNOTATION_FILE)
    videos = unav100.read_annotations(path, config.data.num_classes)[0]
    expected = {v.video_id for v in videos.values() if v.subset == unav100.SUBSETS[split]}
    return tuple(sorted(expected - set(np.asarray(loaded_ids).tolist())))


def skipped_ids(data) -> tuple[str, ...]:
    """Videos of a split left out for missing feature files (``llp.SplitArrays.skipped``)."""
    return tuple(getattr(data, "skipped", ()))


def also_in_other_splits(data) -> int:
    """Videos of a split also listed in another split (``config.data.allow_split_overlap``)."""
    return int(getattr(data, "also_in_other_splits", 0))


def load_feature_dir(config, directory: str, ids=None) -> dict[str, np.ndarray]:
    """Features of the videos in ``directory`` in ``config.data``'s layout, no annotations
    needed (LLP: ``vggish/``, ``res152/``, ``r2plus1d_18/``; UnAV-100: ``<id>_*.npy``)."""
    if config.data.dataset in ("unav100", "synthetic_unav100"):
        return unav100.load_feature_dir(directory, ids, features=config.data.unav_features)
    return llp.load_feature_dir(directory, ids, pool_frames=can_pool_frames(config))


def class_names(config, workdir: str) -> list[str]:
    """Class names of ``config.data`` in index order."""
    if config.data.dataset in ("unav100", "synthetic_unav100"):
        root = (
            synthetic_root(config, workdir)
            if config.data.dataset.startswith("synthetic")
            else config.data.root
        )
        path = config.data.unav_annotation_file or os.path.join(root, unav100.ANNOTATION_FILE)
        return unav100.read_annotations(path, config.data.num_classes)[1]
    return list(LLP_CLASSES)


def num_batches(num_videos: int, batch_size: int) -> int:
    return -(-num_videos // batch_size)


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
    """Classes of ``config.data``: 25 for the LLP layout, ``data.num_classes`` for UnAV-100."""
    if config.data.dataset in ("unav100", "synthetic_unav100"):
        return config.data.num_classes
    return len(LLP_CLASSES)


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
) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches over a split in the order ``perm`` (default: as stored).

    A streamed split (``is_streamed``) is read ``prefetch`` batches ahead by a
    background thread (default ``PREFETCH_BATCHES``), so reading overlaps training.
    """
    n = len(data["audio"])
    order = np.arange(n) if perm is None else np.asarray(perm)
    batches = (
        make_batch(data, order[i : i + batch_size], batch_size, bucket)
        for i in range(0, n, batch_size)
    )
    if prefetch is None:
        prefetch = PREFETCH_BATCHES if is_streamed(data) else 0
    return background(batches, prefetch) if prefetch else batches


PREFETCH_BATCHES = 2  # batches a streamed split is read ahead


def is_streamed(data) -> bool:
    """Whether a split's features are read from disk on demand (``llp.StreamedSplit``)."""
    return isinstance(data, llp.StreamedSplit)


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
