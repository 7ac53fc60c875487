"""Dropout whose random bits come from a counter-based hash, not from threefry.

``Dropout(rate)(x, deterministic)`` is ``flax.linen.Dropout``'s contract (inverted
dropout: kept values scaled by ``1 / (1 - rate)``, the key from
``make_rng('dropout')``), with cheaper bits: element ``i`` of the tensor keeps its
value when ``hash(key, i) < (1 - rate) · 2³²``, where ``hash`` is two rounds of
MurmurHash3's 32-bit finaliser over the element's index and the two 32-bit words
of the key (:func:`hash_bits`). Threefry-2x32 costs 20 rounds per pair of
outputs; on a CPU drawing the masks was a quarter of the CoLeaF step, and its
loops a third of the step's compile time (``docs/performance.md``).

The bits depend only on the key and the element's position in the tensor, so a
model applied to one example at a time with that example's key
(``step.apply_per_example``) gets the same masks on one device or split over
many: the data-parallel step still equals the one-device step.
``tests/test_models.py`` checks the masks' statistics (keep rate, independence
of neighbouring elements, of examples and of call sites).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)  # 2³² / φ: spreads consecutive counters


def _fmix32(h: jnp.ndarray) -> jnp.ndarray:
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with
    probability ≈ 1/2."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jnp.ndarray:
    """``uint32`` bits of ``shape``: element ``i`` (row-major) gets
    ``fmix32(fmix32(i·φ + k₀) ^ k₁)`` for the key's words ``k₀, k₁``."""
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    k0, k1 = words[0], words[-1] ^ np.uint32(0x5BD1E995)
    size = int(np.prod(shape)) if shape else 1
    if size >= 2**32:
        raise ValueError(f"dropout on {size} elements: at most 2**32 - 1 per call")
    index = jax.lax.iota(jnp.uint32, size).reshape(shape)
    return _fmix32(_fmix32(index * _GOLDEN + k0) ^ k1)


def keep_mask(key: jax.Array, keep: float, shape: tuple[int, ...]) -> jnp.ndarray:
    """``bool`` mask of ``shape``, each element True with probability ``keep``."""
    threshold = min(int(round(keep * 2.0**32)), 2**32 - 1)
    return hash_bits(key, shape) < np.uint32(threshold)


class Dropout(nn.Module):
    """Inverted dropout with :func:`hash_bits` masks (``flax.linen.Dropout``'s contract).

    ``rate`` is the probability of zeroing an element, in ``[0, 1)``.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool) -> jnp.ndarray:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"dropout rate {self.rate}: expected a value in [0, 1)")
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = keep_mask(self.make_rng("dropout"), keep, x.shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
