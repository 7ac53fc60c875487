"""ResNet-152 (ImageNet, torchvision's layout) in flax: frames -> 2048-d features.

torchvision's ``resnet152`` (the weights ``resnet152-b121ed2d.pth`` that
pretrainedmodels' ``resnet152(pretrained='imagenet')`` loads): a 7x7/2 stem
convolution, batch norm, ReLU, 3x3/2 max pool, then bottleneck stages of
3, 8, 36 and 3 blocks (widths 64, 128, 256, 512, expansion 4; the stride on
the 3x3 convolution, "ResNet v1.5"; a 1x1 projection with batch norm on the
first block of each stage), and the global average pool. HAN replaces the
classifier (``last_linear``) by the identity: the pooled 2048-d vector is
the feature (``scripts/extract_rgb_feat.py``).

Input ``(N, H, W, 3)`` normalised frames (NHWC); batch norm uses the stored
running statistics (inference), epsilon 1e-5 as torch. The repeated blocks
of a stage run as one ``nn.scan`` (parameters stacked on a leading axis), so
the 50 blocks compile as 8 distinct ones.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

STAGES = ((64, 3, 1), (128, 8, 2), (256, 36, 2), (512, 3, 2))  # (width, blocks, stride)
EXPANSION = 4
FEATURE_SIZE = 512 * EXPANSION
BN_EPSILON = 1e-5


def batch_norm(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, momentum=0.9, name=name)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck``: 1x1, 3x3 (stride), 1x1 (x4) with batch norms, plus
    the shortcut (a 1x1 projection + batch norm when ``project``)."""

    width: int
    stride: int = 1
    project: bool = False
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x):
        def conv(features, kernel, stride, pad, name):
            return nn.Conv(
                features,
                (kernel, kernel),
                strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                use_bias=False,
                precision=self.precision,
                name=name,
            )

        y = nn.relu(batch_norm("bn1")(conv(self.width, 1, 1, 0, "conv1")(x)))
        y = nn.relu(batch_norm("bn2")(conv(self.width, 3, self.stride, 1, "conv2")(y)))
        y = batch_norm("bn3")(conv(self.width * EXPANSION, 1, 1, 0, "conv3")(y))
        if self.project:
            x = batch_norm("downsample_bn")(
                conv(self.width * EXPANSION, 1, self.stride, 0, "downsample_conv")(x)
            )
        return nn.relu(x + y)


class _ScanBlock(nn.Module):
    width: int
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x, _):
        return Bottleneck(self.width, precision=self.precision, name="block")(x), None


class ResNet152(nn.Module):
    """``(N, H, W, 3)`` normalised frames -> ``(N, 2048)`` pooled features.

    Parameters: ``stem_conv``, ``stem_bn``, and per stage ``layer<k>_0`` (the first
    block) and ``layer<k>_rest`` (the others, stacked: ``block/...`` with a
    leading axis of ``blocks - 1``).
    """

    stages: tuple = STAGES
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(
            64,
            (7, 7),
            strides=(2, 2),
            padding=((3, 3), (3, 3)),
            use_bias=False,
            precision=self.precision,
            name="stem_conv",
        )(x)
        x = nn.relu(batch_norm("stem_bn")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for k, (width, blocks, stride) in enumerate(self.stages, start=1):
            x = Bottleneck(
                width, stride, project=True, precision=self.precision, name=f"layer{k}_0"
            )(x)
            if blocks > 1:
                rest = nn.scan(
                    _ScanBlock,
                    variable_axes={"params": 0, "batch_stats": 0},
                    split_rngs={"params": True},
                    length=blocks - 1,
                )
                x, _ = rest(width, self.precision, name=f"layer{k}_rest")(x, None)
        return jnp.mean(x, axis=(1, 2))
