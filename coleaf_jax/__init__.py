"""coleaf-jax: CoLeaF for weakly supervised audio-visual video parsing, in JAX/Flax."""

__version__ = "0.1.0"
