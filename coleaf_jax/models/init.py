"""Parameter initialisation: as the authors' PyTorch modules (``'torch'``), or flax's defaults.

The authors' networks are built from ``nn.Linear``, ``nn.MultiheadAttention``
and ``nn.LayerNorm`` with PyTorch's default initialisation, which differs
from flax's (fidelity-notes: initial attention and evidential logits on
another scale; initialisation was most of the measured audio gap):

==========================  =================================  ==========================
parameter                   ``'torch'`` (default)              ``'flax'``
==========================  =================================  ==========================
Linear weight (in → out)    U(±1/√in)  (kaiming_uniform, a=√5)  LeCun normal, std 1/√in
Linear bias                 U(±1/√in)                           0
attention q, k, v weights   xavier_uniform of the fused         LeCun normal
                            (3D, D) in_proj: U(±√(6/4D))
attention out weight        U(±1/√D)                            LeCun normal
attention biases            0                                   0
LayerNorm                   1, 0                                1, 0
class tokens                0                                   0
==========================  =================================  ==========================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

INITS = ("torch", "flax")
Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def uniform(bound: float) -> Initializer:
    """``U(-bound, bound)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _check(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"config.model.init = {init!r}: expected one of {list(INITS)}")


def linear_initializers(init: str, fan_in: int) -> tuple[Initializer, Initializer]:
    """``(kernel_init, bias_init)`` of a linear layer with ``fan_in`` inputs."""
    _check(init)
    if init == "flax":
        return jax.nn.initializers.lecun_normal(), jax.nn.initializers.zeros
    bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    return uniform(bound), uniform(bound)


def attention_initializers(init: str, d_model: int) -> tuple[Initializer, Initializer, Initializer]:
    """``(in_proj_init, out_proj_init, bias_init)`` of a ``d_model``-wide attention."""
    _check(init)
    if init == "flax":
        lecun = jax.nn.initializers.lecun_normal()
        return lecun, lecun, jax.nn.initializers.zeros
    # torch: xavier_uniform_ on in_proj_weight (3D, D): fan_in D, fan_out 3D.
    in_bound = math.sqrt(6.0 / (d_model + 3 * d_model))
    return uniform(in_bound), uniform(1.0 / math.sqrt(d_model)), jax.nn.initializers.zeros
