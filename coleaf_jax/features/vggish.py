"""VGGish (audio, 128-d per example) in flax, and the AudioSet post-processor.

The network of tensorflow/models ``research/audioset/vggish/vggish_slim.py``
(and harritaylor/torchvggish, which ports its checkpoint): input ``(N, 96,
64)`` log-mel examples (:func:`coleaf_jax.features.preprocess.vggish_examples`)
as NHWC images (time x mel x 1); 3x3 'SAME' convolutions conv1 (64), pool,
conv2 (128), pool, conv3_1/conv3_2 (256), pool, conv4_1/conv4_2 (512), pool
(2x2, stride 2), flattened in NHWC order (6 x 4 x 512 = 12288); fc1_1, fc1_2
(4096) and fc2 (128), every layer followed by a ReLU. ``relu_embedding=False``
drops fc2's ReLU (the TF code since 2020, ``activation_fn=None``); the
extractor HAN links (AVE-ECCV18's scripts, 2018) had it.

:func:`postprocess` is VGGish's PCA + 8-bit quantisation
(``vggish_postprocess.py``) for the AudioSet-style release format. HAN's
released LLP features do **not** go through it (``docs/features.md``): the
extractor stores the raw ``vggish/embedding`` output.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

EMBEDDING_SIZE = 128
CONV_LAYERS = (
    ("conv1", 64),
    "pool",
    ("conv2", 128),
    "pool",
    ("conv3_1", 256),
    ("conv3_2", 256),
    "pool",
    ("conv4_1", 512),
    ("conv4_2", 512),
    "pool",
)
FC_LAYERS = (("fc1_1", 4096), ("fc1_2", 4096), ("fc2", EMBEDDING_SIZE))
QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0


class VGGish(nn.Module):
    """``(N, 96, 64)`` log-mel examples -> ``(N, 128)`` embeddings (module docstring)."""

    relu_embedding: bool = True
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, examples: jnp.ndarray) -> jnp.ndarray:
        x = examples[..., None]
        for layer in CONV_LAYERS:
            if layer == "pool":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                name, width = layer
                x = nn.relu(
                    nn.Conv(
                        width, (3, 3), padding=((1, 1), (1, 1)), precision=self.precision, name=name
                    )(x)
                )
        x = x.reshape(x.shape[0], -1)
        for name, width in FC_LAYERS:
            x = nn.Dense(width, precision=self.precision, name=name)(x)
            if name != "fc2" or self.relu_embedding:
                x = nn.relu(x)
        return x


def postprocess(embeddings, pca_eigen_vectors, pca_means):
    """AudioSet's PCA (with whitening) and 8-bit quantisation of ``(N, 128)`` embeddings:
    ``round((clip(E (x - mu), -2, 2) + 2) * 255 / 4)`` as float values in ``[0, 255]``
    (torchvggish's ``Postprocessor``; TF's ``vggish_postprocess`` casts to uint8,
    the same numbers)."""
    xp = jnp if isinstance(embeddings, jax.Array) else np
    means = xp.reshape(xp.asarray(pca_means), (1, -1))
    pca = xp.dot(embeddings - means, xp.asarray(pca_eigen_vectors).T)
    clipped = xp.clip(pca, QUANTIZE_MIN, QUANTIZE_MAX)
    return xp.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))
