"""R(2+1)D-18 (Kinetics-400, torchvision's layout) in flax: 8-frame clips -> 512-d features.

torchvision's ``r2plus1d_18`` (``r2plus1d_18-91a641e6.pth``): the stem is a
(1, 7, 7) convolution to 45 channels, stride (1, 2, 2), then a (3, 1, 1) one
to 64, each with batch norm and ReLU; four stages of two ``BasicBlock`` s
(widths 64, 128, 256, 512; stride 2 in time and space on the first block of
stages 2-4, with a 1x1x1 projection + batch norm) whose convolutions are
"(2+1)D": a (1, 3, 3) spatial convolution to ``mid`` channels, batch norm,
ReLU, then a (3, 1, 1) temporal one, ``mid = (in * out * 27) // (in * 9 + 3 *
out)`` with ``in`` the block's input width for both of its convolutions;
then the global average pool. HAN drops the classifier (``children()[:-1]``,
``scripts/extract_3D_feat.py``): the pooled 512-d vector is the feature.

Input ``(N, T, H, W, 3)`` normalised clips (HAN: T = 8 frames of 112 x 112).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (width, stride of the first block)
BLOCKS_PER_STAGE = 2
FEATURE_SIZE = 512
BN_EPSILON = 1e-5


def midplanes(in_planes: int, out_planes: int) -> int:
    """torchvision's ``(in * out * 3 * 3 * 3) // (in * 3 * 3 + 3 * out)``."""
    return (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)


def batch_norm(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, momentum=0.9, name=name)


def conv3d(features, kernel, stride, pad, name, precision):
    return nn.Conv(
        features,
        kernel,
        strides=stride,
        padding=tuple((p, p) for p in pad),
        use_bias=False,
        precision=precision,
        name=name,
    )


class Conv2Plus1D(nn.Module):
    """Spatial (1, 3, 3) conv to ``mid``, batch norm, ReLU, temporal (3, 1, 1) conv."""

    features: int
    mid: int
    stride: int = 1
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x):
        s = self.stride
        x = conv3d(self.mid, (1, 3, 3), (1, s, s), (0, 1, 1), "spatial", self.precision)(x)
        x = nn.relu(batch_norm("spatial_bn")(x))
        return conv3d(self.features, (3, 1, 1), (s, 1, 1), (1, 0, 0), "temporal", self.precision)(x)


class BasicBlock(nn.Module):
    in_planes: int
    planes: int
    stride: int = 1
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x):
        mid = midplanes(self.in_planes, self.planes)
        y = Conv2Plus1D(self.planes, mid, self.stride, self.precision, name="conv1")(x)
        y = nn.relu(batch_norm("bn1")(y))
        y = Conv2Plus1D(self.planes, mid, 1, self.precision, name="conv2")(y)
        y = batch_norm("bn2")(y)
        if self.stride != 1 or self.in_planes != self.planes:
            s = self.stride
            x = conv3d(
                self.planes, (1, 1, 1), (s, s, s), (0, 0, 0), "downsample_conv", self.precision
            )(x)
            x = batch_norm("downsample_bn")(x)
        return nn.relu(x + y)


class R2Plus1D18(nn.Module):
    """``(N, T, H, W, 3)`` normalised clips -> ``(N, 512)`` pooled features."""

    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x):
        x = conv3d(45, (1, 7, 7), (1, 2, 2), (0, 3, 3), "stem_spatial", self.precision)(x)
        x = nn.relu(batch_norm("stem_spatial_bn")(x))
        x = conv3d(64, (3, 1, 1), (1, 1, 1), (1, 0, 0), "stem_temporal", self.precision)(x)
        x = nn.relu(batch_norm("stem_temporal_bn")(x))
        in_planes = 64
        for k, (width, stride) in enumerate(STAGES, start=1):
            for b in range(BLOCKS_PER_STAGE):
                x = BasicBlock(
                    in_planes, width, stride if b == 0 else 1, self.precision, name=f"layer{k}_{b}"
                )(x)
                in_planes = width
        return jnp.mean(x, axis=(1, 2, 3))
