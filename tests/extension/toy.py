"""A toy Anchor (``'toy_anchor'``) and a toy dataset (``'toy'``): one file plus its
registration, the two extension points of ``coleaf_jax.registry``.

The dataset has 3 classes, 6 segments and small feature widths (not LLP's): class
``c`` present in a modality adds a fixed pattern to that modality's features in the
segments where it sounds or is seen. The Anchor is a per-segment linear classifier
with max pooling over segments: no attention, nothing of HAN.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from coleaf_jax import registry
from coleaf_jax.data.splits import SplitArrays
from coleaf_jax.training import losses

CLASSES = ("bell", "drum", "whistle")
T, AUDIO, FRAMES, VIDEO_2D, VIDEO_3D = 6, 12, 2, 10, 8


# ----------------------------------------------------------------------------- the Anchor


class ToyAnchor(nn.Module):
    num_classes: int
    d_model: int

    @nn.compact
    def __call__(self, audio, video_2d, video_3d, mask=None, *, train: bool = False):
        if mask is None:
            mask = jnp.ones(audio.shape[:2], bool)
        tokens_a = nn.relu(nn.Dense(self.d_model, name="embed_a")(audio))
        frames = video_2d.reshape(*video_3d.shape[:2], -1, video_2d.shape[-1]).mean(axis=2)
        visual = jnp.concatenate([frames, video_3d], axis=-1)
        tokens_v = nn.relu(nn.Dense(self.d_model, name="embed_v")(visual))
        tokens_v = nn.Dropout(0.1, deterministic=not train)(tokens_v)
        head = nn.Dense(self.num_classes, name="head")
        seg_prob = nn.sigmoid(jnp.stack([head(tokens_a), head(tokens_v)], axis=2))
        pooled = jnp.where(mask[:, :, None, None], seg_prob, 0.0).max(axis=1)  # (B, 2, C)
        return {
            "seg_prob": seg_prob,
            "video_prob": pooled.max(axis=1),
            "video_prob_a": pooled[:, 0],
            "video_prob_v": pooled[:, 1],
            "tokens_a": tokens_a,
            "tokens_v": tokens_v,
        }


def build(model_config, num_classes):
    return ToyAnchor(num_classes=num_classes, d_model=model_config.d_model)


def backbone_loss(out, labels, loss_config, axis_name=None):
    """BCE of the video-level and modality predictions (the HAN loss's form)."""
    del loss_config
    loss = losses.han_loss(out, labels.y, labels.y_a, labels.y_v, labels.video_mask, axis_name)
    return loss, {}


# ----------------------------------------------------------------------------- the dataset


def _split(name: str, n: int, seed: int) -> SplitArrays:
    rng = np.random.default_rng(seed)
    c = len(CLASSES)
    seg_a = rng.random((n, T, c)) < 0.25
    seg_v = rng.random((n, T, c)) < 0.25
    pattern_a = np.random.default_rng(0).normal(size=(c, AUDIO))
    pattern_2d = np.random.default_rng(1).normal(size=(c, VIDEO_2D))
    pattern_3d = np.random.default_rng(2).normal(size=(c, VIDEO_3D))
    audio = seg_a @ pattern_a + 0.3 * rng.normal(size=(n, T, AUDIO))
    video_2d = np.repeat(seg_v @ pattern_2d, FRAMES, axis=1)  # (n, T x FRAMES, VIDEO_2D)
    video_2d = video_2d + 0.3 * rng.normal(size=(n, T * FRAMES, VIDEO_2D))
    video_3d = seg_v @ pattern_3d + 0.3 * rng.normal(size=(n, T, VIDEO_3D))
    out = SplitArrays(
        id=np.array([f"{name}{i:03d}" for i in range(n)]),
        audio=audio.astype(np.float32),
        video_2d=video_2d.astype(np.float32),
        video_3d=video_3d.astype(np.float32),
        label=(seg_a | seg_v).any(axis=1).astype(np.float32),
    )
    if name != "train":
        out["label_audio"] = seg_a.astype(np.float32)
        out["label_visual"] = seg_v.astype(np.float32)
    return out


def load_splits(config, workdir, splits, pool_frames):
    del workdir, pool_frames
    sizes = {"train": config.data.synthetic_videos, "val": 24, "test": 24}
    seeds = {"train": 0, "val": 1, "test": 2}
    return {s: _split(s, sizes[s], seeds[s]) for s in splits}


def class_names(config, workdir):
    return list(CLASSES)


def num_classes(config):
    return len(CLASSES)


def load_feature_dir(config, directory, ids=None):
    raise NotImplementedError("the toy dataset has no feature folders")


registry.register_anchor(
    registry.Anchor(name="toy_anchor", module=build, backbone_loss=backbone_loss)
)
registry.register_dataset(
    registry.Dataset(
        name="toy",
        load_splits=load_splits,
        class_names=class_names,
        num_classes=num_classes,
        load_feature_dir=load_feature_dir,
        feature_layout="toy",
    )
)
