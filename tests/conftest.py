"""Test-session setup: a persistent XLA compilation cache shared by the tests.

Several tests compile the same training step (fresh runs, resumed runs, eval):
with the cache, each distinct program is compiled once per session.
"""

import os
import tempfile

# Tests run tiny shapes: XLA's backend optimisations cost more compile time than they
# save (about half of each compile). Set before jax creates its CPU client.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def compilation_cache():
    with tempfile.TemporaryDirectory(prefix="coleaf-jax-xla-cache-") as d:
        jax.config.update("jax_compilation_cache_dir", d)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        yield d
