"""From a config to in-memory splits, and from splits to fixed-shape batches.

A batch is a dict of numpy arrays with a fixed leading size ``B`` (the last
batch of an epoch is padded), so one compiled step serves every batch:

* ``audio (B, T, 128)``, ``video_2d (B, T or T*8, 2048)``, ``video_3d (B, T, 512)``,
* ``label (B, C)`` weak labels,
* ``mask (B, T)`` valid segments (0 for padding videos),
* ``video_mask (B,)`` 1 for real videos, 0 for padding.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from coleaf_jax.data import llp, synthetic

FEATURE_KEYS = ("audio", "video_2d", "video_3d")
BATCH_KEYS = FEATURE_KEYS + ("label",)


def synthetic_root(config, workdir: str) -> str:
    """Where ``data.dataset = 'synthetic'`` lives: ``data.root`` or ``<workdir>/data``."""
    return config.data.root or os.path.join(workdir, "data")


def ensure_synthetic(config, workdir: str) -> str:
    """Generates the synthetic dataset once (a ``.complete`` marker records it)."""
    root = synthetic_root(config, workdir)
    marker = os.path.join(root, ".complete")
    if not os.path.exists(marker):
        cfg = synthetic.SyntheticConfig(num_videos=config.data.synthetic_videos,
                                        seed=config.data.synthetic_seed)
        synthetic.generate(root, cfg, verbose=True)
        with open(marker, "w") as f:
            f.write(f"{cfg}\n")
    return root


def can_pool_frames(config) -> bool:
    """Whether frames may be averaged at load time: exact unless the Anchor puts a
    nonlinearity between the frame projection and the average (CMPAE's ELU)."""
    return config.model.anchor != "cmpae"


def load_splits(config, workdir: str, splits=("train", "val", "test"),
                pool_frames: bool | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Loads the named splits of ``config.data`` into memory (``llp.load_split``).

    ``pool_frames`` averages each second's 8 ResNet frames at load time
    (default: ``can_pool_frames(config)``).
    """
    if pool_frames is None:
        pool_frames = can_pool_frames(config)
    if config.data.dataset == "synthetic":
        root = ensure_synthetic(config, workdir)
        tfds_dir = config.data.tfds_dir or os.path.join(root, "tfds")
    elif config.data.dataset == "llp":
        if not config.data.root:
            raise ValueError("config.data.root is required for LLP: the folder holding vggish/, "
                             "res152/ and r2plus1d_18/ (pass --config.data.root=/path/to/LLP)")
        root = config.data.root
        tfds_dir = config.data.tfds_dir or None
    else:
        raise ValueError(f"config.data.dataset = {config.data.dataset!r}: expected 'llp' or 'synthetic'")
    return {s: llp.load_split(root, s, annotation_dir=config.data.annotation_dir or None,
                              tfds_dir=tfds_dir, pool_frames=pool_frames) for s in splits}


def num_batches(num_videos: int, batch_size: int) -> int:
    return -(-num_videos // batch_size)


def make_batch(data: dict[str, np.ndarray], idx: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Gathers videos ``idx`` (at most ``batch_size``) and pads to ``batch_size``."""
    n = len(idx)
    pad = batch_size - n
    batch = {}
    for k in BATCH_KEYS:
        x = data[k][idx]
        batch[k] = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    t = data["audio"].shape[1]
    valid = np.arange(batch_size) < n
    seg_mask = data["mask"][idx] if "mask" in data else np.ones((n, t), bool)
    batch["mask"] = np.concatenate([seg_mask, np.zeros((pad, t), bool)]) if pad else seg_mask
    batch["video_mask"] = valid.astype(np.float32)
    return batch


def epoch_batches(data: dict[str, np.ndarray], batch_size: int,
                  perm: np.ndarray | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches over a split in the order ``perm`` (default: as stored)."""
    n = len(data["label"])
    order = np.arange(n) if perm is None else np.asarray(perm)
    for i in range(0, n, batch_size):
        yield make_batch(data, order[i:i + batch_size], batch_size)
