"""coleaf-jax: CoLeaF for weakly supervised audio-visual video parsing, in JAX/Flax."""

from coleaf_jax import xla_flags

__version__ = "0.1.0"

# Before anything imports JAX: XLA:CPU's YNN fusions off (they crash on AVX2-only CPUs;
# coleaf_jax/xla_flags.py). A user's own XLA_FLAGS setting of the flag is kept.
xla_flags.ynn_fusions_off()
