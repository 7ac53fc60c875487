"""XLA settings the package applies to every process that imports it.

**YNN fusions off on the CPU.** jaxlib 0.10.2's XLA:CPU hands some fusions to
the YNNPACK library (``YnnFusionThunk``). On CPUs without AVX-512 (AMD Zen 3,
Intel before Ice Lake: AVX2 only) the CoLeaF step with the CMPAE Anchor under
the seed ``vmap`` (``config.num_seeds >= 2``) dies with SIGSEGV inside
YNNPACK's transpose (``ynn::make_transpose_impl`` →
``slinky::fuse_contiguous_dims``); on AVX-512 CPUs the same program runs.
Turning YNN fusions off (``--xla_cpu_experimental_ynn_fusion_type=``, an empty
list) makes it run everywhere, at no measurable cost for our programs
(``docs/performance.md``, "YNN fusions"). The flag only concerns the CPU
backend; a GPU run ignores it.

The flag is added to ``XLA_FLAGS`` when ``coleaf_jax`` is imported, before JAX
starts its CPU backend (JAX reads ``XLA_FLAGS`` then). A user's own setting of
the flag wins: ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=...`` is left
as it is (any value, e.g. ``+dot`` to turn some fusions back on).
"""

from __future__ import annotations

import os
import sys
import warnings

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def ynn_fusions_off(environ=None) -> bool:
    """Adds ``--xla_cpu_experimental_ynn_fusion_type=`` to ``environ['XLA_FLAGS']``
    (default ``os.environ``) unless the flag is already there; returns whether it
    added it. Warns when JAX's backends already started (the flag then has no effect
    in this process)."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if YNN_FUSION_FLAG in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {YNN_FUSION_FLAG}=".strip()
    if environ is os.environ and _backends_started():
        warnings.warn(
            "coleaf_jax was imported after JAX started its backends, so XLA:CPU's YNN "
            "fusions stay on in this process (they crash the CMPAE multi-seed step on "
            "CPUs without AVX-512): import coleaf_jax before running JAX code, or set "
            f"XLA_FLAGS={YNN_FUSION_FLAG}= yourself",
            stacklevel=3,
        )
    return True


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge  # already imported with jax: no cost

    return xla_bridge.backends_are_initialized()
