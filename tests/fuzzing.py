"""What the fuzz tests (``tests/test_fuzz_*.py``) share: hypothesis settings, byte-level
mutations of a valid file, a memory bound and the one-line check of a command's output.

Profiles (``COLEAF_FUZZ``):

* unset (CI, ``make test``): few examples per property, derandomized (the same inputs
  every run: a failure is reproducible, CI is not flaky), no example database;
* ``long``: ``COLEAF_FUZZ=long make test`` or ``COLEAF_FUZZ=long .venv/bin/python -m
  pytest -n 2 tests/test_fuzz_*.py``: 50x the examples, random, with hypothesis's database
  in ``.hypothesis/`` (a failure found once is tried first next time);
* ``COLEAF_FUZZ_EXAMPLES=N`` sets the number of examples of every property outright.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tracemalloc

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

LONG = os.environ.get("COLEAF_FUZZ", "") == "long"


def fuzz_settings(examples: int, **kwargs) -> settings:
    """Settings for a property run ``examples`` times in CI (see the module docstring)."""
    n = int(os.environ.get("COLEAF_FUZZ_EXAMPLES", "0")) or (examples * 50 if LONG else examples)
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=not LONG,
        database=settings.default.database if LONG else None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
        **kwargs,
    )


_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 31, 1 << 40, (1 << 63) - 1]


@st.composite
def mutations(draw, data: bytes, max_ops: int = 4) -> bytes:
    """``data`` with 1 to ``max_ops`` edits: a byte replaced, a little-endian 4- or 8-byte
    field overwritten with an extreme value (sizes, offsets and counts are such fields),
    a span deleted or duplicated, or the file cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        if not out:
            break
        op = draw(st.sampled_from(["byte", "field", "delete", "duplicate", "truncate"]))
        pos = draw(st.integers(0, len(out) - 1))
        if op == "byte":
            out[pos] = draw(st.integers(0, 255))
        elif op == "field":
            width = draw(st.sampled_from([4, 8]))
            value = draw(st.sampled_from(_INTERESTING)) % (1 << (8 * width))
            out[pos : pos + width] = struct.pack("<I" if width == 4 else "<Q", value)
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            end = pos + draw(st.integers(1, 64))
            out[pos:pos] = out[pos:end]
        else:
            del out[pos:]
    return bytes(out)


@contextlib.contextmanager
def memory_bound(limit_bytes: int):
    """Fails when the block allocates more than ``limit_bytes`` at its peak (Python and
    numpy allocations, as ``tracemalloc`` sees them)."""
    tracemalloc.start()
    try:
        yield
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= limit_bytes, f"peak {peak} bytes, bound {limit_bytes}"


def assert_one_error_line(proc, name: str) -> str:
    """A command that failed on a bad file: exit status 1 (no signal), stderr one line
    ``error: ...`` naming ``name``, no traceback. Returns that line."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ") and name in lines[0], lines[0]
    return lines[0]
