"""Test-session setup: a persistent XLA compilation cache shared by the tests.

Several tests compile the same training step (fresh runs, resumed runs, eval):
with the cache, each distinct program is compiled once per session.
"""

import tempfile

import jax
import pytest


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
    with tempfile.TemporaryDirectory(prefix="coleaf-jax-xla-cache-") as d:
        jax.config.update("jax_compilation_cache_dir", d)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        yield d
