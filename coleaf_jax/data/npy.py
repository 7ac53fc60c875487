"""Reading one feature file (``.npy``) and checking its values, for every dataset.

* :func:`read_npy`: a ``.npy`` array, or an error naming the file and what it is
  instead, found from its header before any data is read: a text or pickle file
  renamed ``.npy``, an array of Python objects (never numpy's ``allow_pickle``
  advice, which would run code from the file), a shape or dtype other than the
  caller's (a 2 GB file of the wrong shape costs one header read, not 2 GB), or a
  file shorter or longer than its header's shape × itemsize (truncated, or another
  array appended). Then exactly those bytes are read. Headers of any length the
  format 1.0 allows are read (numpy's ``np.load`` refuses those over 10,000 bytes
  with advice to trust the file with ``allow_pickle``): up to 65,535 bytes, in
  format 1.0 or 2.0 (:data:`MAX_HEADER_BYTES`: parsing a header takes hundreds of
  times its size in memory, and an array of numbers needs under 1 kB). The header's
  dtype must be plain numbers (no object, structured, sub-array or empty dtype), its
  shape at most 32 axes and 2**48 elements. Fortran-order files are returned C-ordered.
* :func:`read_header`: the header alone (:class:`NpyHeader`), the same checks.
* :func:`check_values`: finite, and no value beyond :data:`FEATURE_MAX_ABS`
  (an error naming the file); whether the array is all zeros (the callers warn
  once per split with the count and the first ids).

The rule: the released LLP features (VGGish embeddings, ResNet-152 and
R(2+1)D-18 pooled activations, VGGish's 8-bit PCA codes at most 255) and the
UnAV-100 I3D / ONE-PEACE features are all far below 1e4 in magnitude; a file
beyond it holds another unit, a wrong dtype reinterpreted or a corrupt write,
and would dominate training (a loss of 1e30 stops it, naming no file).
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

FEATURE_MAX_ABS = 1e4
NPY_MAGIC = b"\x93NUMPY"
# Format 2.0 stores the header's length in 4 bytes; a plain numeric array's header is
# well under 1 kB (numpy writes 2.0 only past 65,535 bytes: huge structured dtypes), so
# a longer one is refused before it is read rather than parsed (ast.literal_eval of a
# 1 MB header peaked at 495 MB).
MAX_HEADER_BYTES = 65535
MAX_NDIM = 32
MAX_ELEMENTS = 1 << 48  # a shape's size, its zero dimensions taken as 1
# What each version stores the header's length in (numpy.lib.format's layout).
_HEADER_LENGTH = {(1, 0): "<H", (2, 0): "<I"}
# dtype kinds by name, for ``read_npy(kinds=...)`` and its messages.
KIND_WORDS = {"f": "a float dtype", "fiu": "a numeric dtype", "fiub": "numbers"}


class FeatureFileError(ValueError):
    """A feature file that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says: the array's shape, dtype and order, and where its
    data starts (``offset`` bytes into the file)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"shape {self.shape} {self.dtype}"


def read_header(path: str | os.PathLike) -> NpyHeader:
    """The header of the ``.npy`` file ``path``, checked (module docstring);
    :class:`FeatureFileError` naming the file when it is not a usable numeric array."""
    with _open(path) as f:
        return _header(path, f)


def read_npy(
    path: str | os.PathLike,
    shape: Sequence[int | None] | None = None,
    kinds: str | None = None,
    check: Callable[[NpyHeader], str | None] | None = None,
) -> np.ndarray:
    """The array in ``path``, its header checked before its data is read.

    Args:
      shape: the expected shape (``None`` for an axis of any length).
      kinds: the accepted dtype kinds (``"f"``: floats; ``"fiub"``: numbers and bools).
      check: more checks on the header: returns the problem (the file is prepended)
        or None.

    Raises:
      FeatureFileError: naming the file: not a ``.npy`` array, Python objects, another
        shape or dtype, or a size that disagrees with the header (module docstring).
    """
    with _open(path) as f:
        header = _header(path, f)
        problem = None
        if shape is not None and not _shape_matches(header.shape, shape):
            expected = "(" + ", ".join("any" if s is None else str(s) for s in shape)
            expected += ",)" if len(shape) == 1 else ")"
            problem = f"expected shape {expected}, got {header.shape}"
        elif kinds is not None and header.dtype.kind not in kinds:
            words = KIND_WORDS.get(kinds, f"a dtype of kind {kinds!r}")
            problem = f"expected {words}, got {header.dtype}"
        elif check is not None:
            problem = check(header)
        if problem:
            raise FeatureFileError(f"{path}: {problem}")
        return _data(path, f, header)


def _open(path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as e:
        if os.path.islink(path) and not os.path.exists(path):
            raise FeatureFileError(
                f"{path}: a broken symbolic link (to {os.readlink(path)}, which does not exist): "
                f"restore its target or remove the link"
            ) from None
        raise FeatureFileError(f"{path}: cannot read ({e.strerror or e})") from None


def describe_missing(path: str | os.PathLike) -> str:
    """``path``, and for a broken symbolic link what it points to (a missing file's
    name in the callers' messages)."""
    if os.path.islink(path):
        try:
            return f"{path} (a broken symbolic link to {os.readlink(path)})"
        except OSError:
            pass
    return str(path)


def _shape_matches(got: tuple[int, ...], expected: Sequence[int | None]) -> bool:
    return len(got) == len(expected) and all(e is None or g == e for g, e in zip(got, expected))


def _cannot(path, reason: str) -> FeatureFileError:
    return FeatureFileError(f"{path}: cannot read as a .npy array ({reason})")


def _header(path, f: BinaryIO) -> NpyHeader:
    head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        kind = "an empty file" if not head else "not a .npy array (it lacks NumPy's header"
        kind += "" if not head else "; a text, pickle or other file named .npy?)"
        raise FeatureFileError(f"{path}: {kind}")
    version = tuple(f.read(2))
    if len(version) < 2:
        raise _cannot(path, "its header is cut short")
    length_format = _HEADER_LENGTH.get(version)
    if length_format is None:
        raise _cannot(
            path,
            f"format version {'.'.join(map(str, version))}; expected 1.0 or 2.0, what NumPy "
            f"writes for arrays of numbers",
        )
    raw = f.read(struct.calcsize(length_format))
    if len(raw) < struct.calcsize(length_format):
        raise _cannot(path, "its header is cut short")
    length = struct.unpack(length_format, raw)[0]
    size = os.fstat(f.fileno()).st_size
    if length > MAX_HEADER_BYTES:
        raise _cannot(
            path,
            f"a header of {length} bytes, beyond the {MAX_HEADER_BYTES} read: an array of "
            f"numbers needs well under 1 kB (a damaged file?)",
        )
    if f.tell() + length > size:
        raise _cannot(path, f"its header of {length} bytes is cut short ({size} bytes in all)")
    f.seek(-len(raw), os.SEEK_CUR)
    read = (
        npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    )
    try:
        shape, fortran, dtype = read(f, max_header_size=max(length, 1))
    except Exception as e:  # noqa: BLE001 -- numpy's parser raises ValueError, SyntaxError,
        # TypeError, tokenize.TokenError (found by tests/test_fuzz_files.py)...: the file's
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise _cannot(path, f"its header is not NumPy's: {why}") from None
    if dtype.hasobject:
        raise _cannot(
            path,
            "it holds Python objects, not numbers; reading them would run code from the file",
        )
    if dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
        raise _cannot(path, f"its dtype {dtype} is not plain numbers")
    if len(shape) > MAX_NDIM or math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
        raise _cannot(path, f"its header's shape has {len(shape)} axes of up to {max(shape)}")
    if any(s < 0 for s in shape):
        raise _cannot(path, f"its header's shape {shape} has a negative length")
    header = NpyHeader(tuple(shape), dtype, bool(fortran), f.tell())
    held = size - header.offset
    if held != header.nbytes:
        more = held - header.nbytes
        why = (
            "truncated?" if more < 0 else f"{more} bytes more: another array appended, or damaged?"
        )
        raise _cannot(
            path,
            f"its header says {header.describe()}, {header.nbytes} bytes of data; the file holds "
            f"{held} ({why})",
        )
    return header


def _data(path, f: BinaryIO, header: NpyHeader) -> np.ndarray:
    """Reads the header's ``nbytes`` from ``f`` (at ``header.offset``) into the array."""
    flat = np.empty(math.prod(header.shape), header.dtype)
    if header.nbytes:
        f.seek(header.offset)
        buffer = memoryview(flat.view(np.uint8))
        done = 0
        while done < header.nbytes:
            got = f.readinto(buffer[done:])
            if not got:  # the file shrank since its size was checked
                raise _cannot(path, f"it ended after {done} of {header.nbytes} bytes of data")
            done += got
    if header.fortran_order:
        return np.ascontiguousarray(flat.reshape(header.shape[::-1]).transpose())
    return flat.reshape(header.shape)


def check_values(path: str | os.PathLike, array: np.ndarray) -> bool:
    """Raises :class:`FeatureFileError` naming ``path`` on NaN/inf or a value beyond
    ``FEATURE_MAX_ABS``; returns whether every value is zero."""
    finite = np.isfinite(array)
    if not finite.all():
        raise FeatureFileError(
            f"{path}: expected finite values, got {np.count_nonzero(~finite)} NaN/inf"
        )
    peak = float(np.abs(array).max()) if array.size else 0.0
    if peak > FEATURE_MAX_ABS:
        raise FeatureFileError(
            f"{path}: values up to {peak:.3g}, beyond the plausible {FEATURE_MAX_ABS:.0e} for "
            f"extracted features (another unit, a wrong dtype or a corrupt write?): fix or "
            f"remove the file"
        )
    return peak == 0.0
