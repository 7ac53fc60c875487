"""Public checkpoints -> flax variables of the extractors, saved with orbax.

    python -m coleaf_jax.features.convert weights/

converts every checkpoint of :data:`coleaf_jax.features.weights.SOURCES`
found in ``weights/`` (torchvision's ResNet-152 and R(2+1)D-18 ``.pth``,
torchvggish's VGGish ``.pth`` and PCA ``.pth``, Google's ``vggish_model.ckpt``
when TensorFlow is installed, ``vggish_pca_params.npz``) into
``weights/<model>/`` (orbax) plus ``weights/<model>.json`` (source file,
size, SHA-256 prefix). Extraction also converts a checkpoint it finds
unconverted. Nothing is downloaded.

``.pth`` files are read without torch (:func:`read_pth`): both of torch's
formats (the zip archive of torch >= 1.6 and the older single-stream one of
the 2017-2019 torchvision checkpoints) are unpickled with a restricted
unpickler that only builds tensors, ordered dicts and numpy arrays.

The state-dict mappings (:func:`resnet152_variables`, :func:`r2plus1d_variables`,
:func:`vggish_variables`) check that every expected key is present with
its shape, and name missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import codecs
import collections
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import pickletools
import struct
import sys
import zipfile

import jax
import ml_dtypes
import numpy as np

from coleaf_jax.features import r2plus1d, resnet, vggish


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and keys."""


# ----------------------------------------------------------------------------- .pth reader
#
# Every number below comes from the file and is checked before it touches memory: the
# persistent ids' types and sizes against the archive's entries, each tensor's offset,
# sizes and strides against its storage (its last element inside it), the bytes read
# and built against a budget proportional to the file's size (MEMORY_FACTOR), and the
# nesting of containers. A file that breaks a rule is a ConversionError naming it.

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_STORAGE_TYPES = {id(t): name for name, t in _STORAGE_DTYPES.items()}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_NDIM = 32  # numpy's limit is 64; no published model's tensor has more than 6 axes
# What unpickling may build, charged to the budget before it runs: every opcode creates
# at most one object (~100 bytes with its container slot), every byte of text at most 4.
PICKLE_OP_COST = 128
PICKLE_BYTE_COST = 4
MAX_ELEMENTS = 1 << 48  # a tensor's shape, its zero dimensions taken as 1
# Bytes a checkpoint may make this reader allocate (storages read plus tensors built):
# MEMORY_FACTOR x the file's size + MEMORY_SLACK. A state dict's tensors are its
# storages (1x), tied weights share one storage (a little more); a crafted file whose
# tensors all view one storage would need far more.
MEMORY_FACTOR = 4
MEMORY_SLACK = 64 << 20
# The largest expansion deflate allows (~1032:1); torch stores its entries uncompressed.
_MAX_DEFLATE_RATIO = 1100


def _shown(value) -> str:
    """A value from the file, for a message: short whatever it is (``str()`` of a pickle's
    shared structure can be exponentially larger than the file)."""
    if isinstance(value, str):
        return repr(value[:60])
    if type(value) is int:
        return (
            str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
        )
    if isinstance(value, (tuple, list, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, np.dtype):
        return repr(str(value)[:40])
    return f"a {type(value).__name__}"


def _int(value, what: str) -> int:
    """A size, offset or stride from the file: an int (not a bool) below 2**63."""
    if type(value) is not int:  # bool is an int subclass: not a size either
        raise ConversionError(f"{what} is a {type(value).__name__}, expected an integer")
    if abs(value) >= 1 << 63:
        raise ConversionError(f"{what} is {_shown(value)}, beyond 64 bits")
    return value


class _Budget:
    """The bytes this reader may still allocate for one file (see MEMORY_FACTOR)."""

    def __init__(self, path: str, file_size: int):
        self.path, self.file_size = path, file_size
        self.left = MEMORY_FACTOR * file_size + MEMORY_SLACK

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise ConversionError(
                f"{self.path}: {what} needs {nbytes} bytes, more than a {self.file_size}-byte "
                f"checkpoint can hold (what reading it builds is limited to {MEMORY_FACTOR}x "
                f"the file's size in all); a damaged or crafted file"
            )
        self.left -= nbytes


class _Storage:
    """A torch storage: its dtype, its element count as the checkpoint declares it, and,
    once read, its flat data (``reader``: reads it when first needed, so a checkpoint's
    tensors that are not kept are never read). ``data`` always holds ``numel`` elements."""

    def __init__(self, key: str, dtype, numel: int, reader=None):
        self.key, self.dtype, self.numel = key, np.dtype(dtype), numel
        self._data: np.ndarray | None = None
        self._reader = reader

    @property
    def data(self) -> np.ndarray | None:
        if self._data is None and self._reader is not None:
            self.data, self._reader = self._reader(), None
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        if value.shape != (self.numel,):
            raise ConversionError(
                f"storage {self.key} holds {value.size} elements, its header says {self.numel}"
            )
        self._data = value


class _StorageView:
    """A legacy-format view of ``size`` elements of ``root`` from ``offset``."""

    def __init__(self, root: _Storage, offset: int, size: int):
        if offset < 0 or size < 0 or offset + size > root.numel:
            raise ConversionError(
                f"a view of storage {root.key} (elements {offset} to {offset + size}) lies "
                f"outside its {root.numel} elements"
            )
        self.root, self.offset, self.numel = root, offset, size
        self.key, self.dtype = root.key, root.dtype


class _LazyTensor:
    """A tensor whose storage is read after unpickling. Built by :func:`_rebuild_tensor`,
    which checks that every element lies inside the storage."""

    def __init__(self, storage, offset: int, size: tuple, stride: tuple, numel: int):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.numel = numel

    def materialize(self, budget: _Budget) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            offset += storage.offset
            storage = storage.root
        budget.take(self.numel * storage.dtype.itemsize, f"a {self.size} tensor")
        if self.numel == 0:
            return np.zeros(self.size, storage.dtype)
        data = storage.data
        if data is None:
            raise ConversionError(f"storage {storage.key} of a tensor is never stored")
        if not self.size:
            return data[offset].copy()
        # Safe: _rebuild_tensor checked offset + sum((size - 1) * stride) < numel.
        strides = tuple(s * data.itemsize for s in self.stride)
        return np.lib.stride_tricks.as_strided(data[offset:], self.size, strides).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """torch._utils._rebuild_tensor(_v2): checks every number before anything is read."""
    if not isinstance(storage, (_Storage, _StorageView)):
        raise ConversionError(f"a tensor's storage is a {type(storage).__name__}")
    offset = _int(storage_offset, "a tensor's storage offset")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise ConversionError("a tensor's size or stride is not a tuple")
    if len(size) > MAX_NDIM or len(stride) != len(size):
        raise ConversionError(
            f"a tensor with {len(size)} sizes and {len(stride)} strides (at most {MAX_NDIM}, "
            f"one stride per size)"
        )
    size = tuple(_int(d, "a tensor's size") for d in size)
    stride = tuple(_int(s, "a tensor's stride") for s in stride)
    if offset < 0 or any(d < 0 for d in size) or any(s < 0 for s in stride):
        raise ConversionError(
            f"a tensor with a negative offset, size or stride ({offset}, {size}, {stride})"
        )
    if math.prod(max(d, 1) for d in size) > MAX_ELEMENTS:  # an empty tensor's too
        raise ConversionError(f"a tensor of shape {size} (more than 2**48 elements)")
    numel = math.prod(size)
    if numel:
        last = offset + sum((d - 1) * s for d, s in zip(size, stride))
        if last >= storage.numel:
            raise ConversionError(
                f"a {size} tensor (offset {offset}, strides {stride}) reaches element {last} "
                f"of storage {storage.key}, which holds {storage.numel}"
            )
    return _LazyTensor(storage, offset, size, stride, numel)


def _rebuild_parameter(data, *unused):
    return data


def _latin1(text, encoding="latin1"):
    """``_codecs.encode`` as numpy arrays pickled with protocol 2 use it (bytes as a
    latin-1 string); any other codec is refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than of a latin-1 string")
    return codecs.encode(text, "latin1")


# numpy arrays and scalars pickled inside a checkpoint (torchvggish's PCA parameters):
# ``_reconstruct(ndarray, (0,), b'b')`` then ``__setstate__`` with the array's bytes from
# the pickle, ``scalar(dtype, bytes)``. Each global is a wrapper that allows exactly that:
# ``ndarray`` is a marker only ``_reconstruct`` accepts (called, it would allocate any
# shape), dtypes are plain numbers of at most 16 bytes (a ``V300000000`` dtype makes
# ``scalar`` allocate 300 MB), ``_reconstruct`` builds the empty array only; the array's
# data then comes from the pickle's bytes (numpy checks their length).
_NDARRAY = object()
_NUMERIC_KINDS = "biufc"


def _multiarray(name: str):
    try:
        return getattr(importlib.import_module("numpy._core.multiarray"), name)
    except ImportError:  # numpy < 2
        return getattr(importlib.import_module("numpy.core.multiarray"), name)


def _numeric(dtype) -> np.dtype:
    if not (
        isinstance(dtype, np.dtype)
        and dtype.kind in _NUMERIC_KINDS
        and 0 < dtype.itemsize <= 16
        and dtype.fields is None
        and dtype.subdtype is None
    ):
        raise ConversionError(f"a numpy dtype {_shown(dtype)} (numbers of at most 16 bytes)")
    return dtype


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str) or len(spec) > 8:
        raise ConversionError(f"a numpy dtype {_shown(spec)} (numbers of at most 16 bytes)")
    return _numeric(np.dtype(spec))


def _np_reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise ConversionError("a numpy array pickled otherwise than numpy pickles arrays")
    return _multiarray("_reconstruct")(np.ndarray, (0,), b"b")


def _np_scalar(dtype, data=None):
    dtype = _numeric(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise ConversionError(f"a numpy scalar of {_shown(data)} for a {dtype} dtype")
    return _multiarray("scalar")(dtype, data)


class _Unpickler(pickle.Unpickler):
    """Builds only what a state dict holds; any other global is refused."""

    def __init__(self, file, persistent_load):
        super().__init__(file)
        self._persistent_load = persistent_load

    def persistent_load(self, pid):
        return self._persistent_load(pid)

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name in (
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        ):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            return _np_reconstruct if name == "_reconstruct" else _np_scalar
        if module == "numpy" and name == "ndarray":
            return _NDARRAY
        if module == "numpy" and name == "dtype":
            return _np_dtype
        if module == "torch" and name == "Size":
            return tuple
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles of numpy arrays
            return _latin1
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of a state dict)")


class _PlainUnpickler(pickle.Unpickler):
    """The legacy format's bookkeeping records (magic number, protocol, sys info, storage
    keys) hold only numbers, strings, lists and dicts: every global and persistent id is
    refused, so nothing in them can run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} (a torch checkpoint's header holds plain values)"
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id in a torch checkpoint's header")


class _Capped:
    """A file whose reads never ask for more than it has left: pickle's C unpickler
    asks for (and allocates) a string's declared length before reading it."""

    def __init__(self, f, size: int):
        self._f, self.size = f, size

    def read(self, n: int = -1) -> bytes:
        left = max(self.size - self._f.tell(), 0)
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        return self._f.readline(limit)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)


_MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT")


def _check_pickle(f, end: int, budget: _Budget) -> None:
    """Walks one pickle's opcodes from ``f``'s position to its STOP (``pickletools.genops``:
    nothing is built, each argument is read as far as the data goes) and seeks back. What
    makes the C unpickler allocate from a number before reading is refused first: a
    length that runs past the data (``end``: the stream's size), a frame longer than
    what is left, a memo index beyond the opcodes' position (the memo table is sized by
    the largest index: ``LONG_BINPUT 2**31`` alone asks for 32 GB), an unknown opcode."""
    start = f.tell()
    ops = 0
    try:
        for op, arg, pos in pickletools.genops(f):
            ops += 1
            if op.name in _MEMO_PUTS and not 0 <= arg <= pos:
                raise ConversionError(f"a pickle memo index {arg} at byte {pos}")
            if op.name == "FRAME" and arg > end - pos:
                raise ConversionError(f"a pickle frame of {arg} bytes at byte {pos}")
    except ValueError as e:  # genops: truncated argument, bad opcode, bad text
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"a damaged pickle ({' '.join(str(e).split())[:200]})") from None
    budget.take(
        PICKLE_OP_COST * ops + PICKLE_BYTE_COST * (f.tell() - start),
        f"unpickling {ops} opcodes",
    )
    f.seek(start)


def _plain_load(f, what: str, path: str, expected: type | tuple[type, ...], budget: _Budget):
    _check_pickle(f, f.size, budget)
    obj = _PlainUnpickler(f).load()
    if not isinstance(obj, expected):
        raise ConversionError(
            f"{path}: not a torch checkpoint (its {what} is a {type(obj).__name__})"
        )
    return obj


def _storage_pid(pid, length: int) -> tuple:
    """A persistent id ``('storage', StorageType, key, location, numel, ...)``, checked."""
    if not isinstance(pid, tuple) or len(pid) != length:
        raise ConversionError(
            f"a persistent id is {_shown(pid)}, expected a tuple of "
            f"{length} ('storage', type, key, location, size...)"
        )
    kind, storage_type, key, _location, numel = pid[:5]
    if kind != "storage":
        raise ConversionError(f"unknown persistent id {_shown(kind)}")
    if id(storage_type) not in _STORAGE_TYPES:
        raise ConversionError(f"a storage of type {_shown(storage_type)} (not a torch storage)")
    if not isinstance(key, str) or not key or len(key) > 256:
        raise ConversionError(f"a storage key {_shown(key)} (expected a short string)")
    if _int(numel, f"storage {key}'s size") < 0:
        raise ConversionError(f"storage {key} has a negative size {numel}")
    return storage_type, key, numel


def _materialize(obj, budget: _Budget):
    """The state dict with its lazy tensors read: only the top level's values (a state
    dict holds tensors; anything else in it is refused by :func:`read_pth`). Nothing is
    copied or walked below: a pickle can nest and share containers at will."""
    if not isinstance(obj, dict):
        return obj
    return {k: v.materialize(budget) if isinstance(v, _LazyTensor) else v for k, v in obj.items()}


def _zip_entry(z: zipfile.ZipFile, name: str, path: str) -> zipfile.ZipInfo:
    """``name``'s entry, refused when its declared size could not come from its bytes."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise ConversionError(f"{path}: the archive lacks {name}") from None
    if info.compress_type == zipfile.ZIP_STORED:
        plausible = info.file_size == info.compress_size
    else:
        plausible = info.file_size <= _MAX_DEFLATE_RATIO * max(info.compress_size, 1)
    if not plausible:
        raise ConversionError(
            f"{path}: entry {name} declares {info.file_size} bytes from {info.compress_size} "
            f"stored (a damaged or crafted archive)"
        )
    return info


def _read_zip(path: str, budget: _Budget) -> dict:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise ConversionError(f"{path}: a zip file without data.pkl (not a torch checkpoint)")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            _zip_entry(z, prefix + "byteorder", path)
            byteorder = z.read(prefix + "byteorder")[:16].decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise ConversionError(f"{path}: byteorder {byteorder!r} (little or big)")
        storages: dict[str, _Storage] = {}

        def load(pid):
            storage_type, key, numel = _storage_pid(pid, 5)
            if key in storages:
                if storages[key].dtype != np.dtype(storage_type):
                    raise ConversionError(f"storage {key} is used with two dtypes")
                return storages[key]
            dtype = np.dtype(storage_type).newbyteorder("<" if byteorder == "little" else ">")
            name = f"{prefix}data/{key}"
            info = _zip_entry(z, name, path)
            if info.file_size != numel * dtype.itemsize:
                raise ConversionError(
                    f"storage {key}: {info.file_size} bytes in the archive for {numel} "
                    f"{_STORAGE_TYPES[id(storage_type)]} elements"
                )

            def read():
                budget.take(info.file_size, f"storage {key}")
                return np.frombuffer(z.read(name), dtype=dtype).astype(dtype.newbyteorder("="))

            storages[key] = _Storage(key, storage_type, numel, read)
            return storages[key]

        info = _zip_entry(z, pkl[0], path)
        budget.take(info.file_size, pkl[0])
        main = io.BytesIO(z.read(pkl[0]))
        _check_pickle(main, info.file_size, budget)
        # Materialised inside the open archive, after unwrapping: the storages of what is
        # not kept (a training checkpoint's optimiser state) are never read.
        obj = _Unpickler(main, load).load()
        return _materialize(_unwrap(obj), budget)


def _unwrap(obj):
    """``{'state_dict': ...}`` / ``{'model': ...}`` containers -> the state dict."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return obj


def _read_legacy(path: str, budget: _Budget) -> dict:
    with open(path, "rb") as raw:
        f = _Capped(raw, budget.file_size)
        # Every record goes through a restricted unpickler: plain values for the header
        # and the storage keys, state-dict objects only for the main record.
        magic = _plain_load(f, "magic number", path, int, budget)
        if magic != _LEGACY_MAGIC:
            raise ConversionError(f"{path}: not a torch checkpoint (bad magic number)")
        _plain_load(f, "protocol version", path, int, budget)
        _plain_load(f, "sys info", path, dict, budget)
        storages: dict[str, _Storage] = {}

        def load(pid):
            storage_type, root_key, numel = _storage_pid(pid, 6)
            view = pid[5]
            if root_key not in storages:
                storages[root_key] = _Storage(root_key, storage_type, numel)
            root = storages[root_key]
            if root.dtype != np.dtype(storage_type) or root.numel != numel:
                raise ConversionError(f"storage {root_key} is declared twice differently")
            if view is not None:
                if not isinstance(view, tuple) or len(view) != 3:
                    raise ConversionError(
                        f"a view of storage {root_key} is not (key, offset, size)"
                    )
                _view_key, offset, size = view
                return _StorageView(
                    root, _int(offset, "a view's offset"), _int(size, "a view's size")
                )
            return root

        _check_pickle(f, f.size, budget)
        obj = _Unpickler(f, load).load()
        keys = _plain_load(f, "storage key list", path, (list, tuple), budget)
        remaining = budget.file_size - f.tell()
        for key in keys:
            if not isinstance(key, str) or key not in storages:
                raise ConversionError(f"{path}: stores storage {_shown(key)}, which no tensor uses")
            st = storages[key]
            if st.data is not None:
                raise ConversionError(f"{path}: stores storage {key} twice")
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * st.dtype.itemsize
            remaining -= 8
            if numel != st.numel or nbytes > remaining:
                raise ConversionError(
                    f"{path}: storage {key} declares {numel} elements ({st.numel} in its "
                    f"header, {max(remaining, 0)} bytes left in the file)"
                )
            budget.take(nbytes, f"storage {key}")
            raw = f.read(nbytes)
            remaining -= nbytes
            if len(raw) != nbytes:
                raise ConversionError(f"{path}: truncated (storage {key} ends early)")
            st.data = np.frombuffer(raw, dtype=st.dtype.newbyteorder("<")).astype(st.dtype)
        if remaining:
            raise ConversionError(f"{path}: {remaining} bytes after its last storage")
    return obj


def read_pth(path: str) -> dict[str, np.ndarray]:
    """A torch ``.pth`` state dict as ``{key: numpy array}``, without torch.

    Unwraps ``{'state_dict': ...}`` / ``{'model': ...}`` containers. Raises
    :class:`ConversionError` naming the file when it cannot be read, breaks one of the
    reader's checks (see the comment above :data:`MEMORY_FACTOR`) or holds anything but
    tensors, numbers and numpy arrays of numbers under string keys. Memory: at most
    ``MEMORY_FACTOR`` x the file's size (+ ``MEMORY_SLACK``) for the tensors.
    """
    path = os.fspath(path)
    try:
        budget = _Budget(path, os.path.getsize(path))
        if zipfile.is_zipfile(path):
            obj = _read_zip(path, budget)
        else:
            obj = _materialize(_unwrap(_read_legacy(path, budget)), budget)
    except ConversionError as e:
        if str(e).startswith(path):
            raise
        raise ConversionError(f"{path}: not a usable torch checkpoint ({e})") from None
    except OSError as e:
        raise ConversionError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 -- any other failure is the file's: name it
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConversionError(f"{path}: cannot be read as a torch checkpoint ({why})") from None
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ConversionError(
                f"{path}: a state dict key is {type(key).__name__} {_shown(key)}, expected a string"
            )
        if isinstance(value, (bool, int, float)):
            value = np.asarray(value)
        if not isinstance(value, (np.ndarray, np.generic)) or value.dtype.hasobject:
            raise ConversionError(
                f"{path}: entry {key[:80]!r} holds a {type(value).__name__}, not a tensor"
            )
        state[key] = np.asarray(value)
    return state


# ----------------------------------------------------------------------------- .npz reader

MAX_NPZ_ARRAY_BYTES = 64 << 20  # the arrays read from a downloaded .npz (PCA: 132 kB)


def read_npz(path: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a downloaded ``.npz`` (Google's ``vggish_pca_params.npz``):
    each entry's size checked in the archive's directory, each array's header (numbers,
    its shape's bytes equal to what follows) before its data; only ``keys`` are read. A
    missing key or anything else is a :class:`ConversionError` naming the file."""
    path = os.fspath(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for key in keys:
                name = key + ".npy"
                if name not in z.namelist():
                    raise ConversionError(f"{path}: no {key} array (expected {', '.join(keys)})")
                info = _zip_entry(z, name, path)
                if info.file_size > MAX_NPZ_ARRAY_BYTES:
                    raise ConversionError(f"{path}: {key} declares {info.file_size} bytes")
                f = io.BytesIO(z.read(name))
                version = np.lib.format.read_magic(f)
                read = {
                    (1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0,
                }.get(version)
                if read is None:
                    raise ConversionError(f"{path}: {key} is .npy format {version}")
                shape, fortran, dtype = read(f)
                try:
                    _numeric(dtype)
                except ConversionError as e:
                    raise ConversionError(f"{path}: {key}: {e}") from None
                if len(shape) > MAX_NDIM or math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
                    raise ConversionError(f"{path}: {key} has shape {shape[:8]}")
                data = f.read()
                if len(data) != math.prod(shape) * dtype.itemsize:
                    raise ConversionError(
                        f"{path}: {key}'s header says {shape} {dtype}, {len(data)} bytes follow"
                    )
                array = np.frombuffer(data, dtype).reshape(shape[::-1] if fortran else shape)
                out[key] = array.T if fortran else array.copy()
    except ConversionError:
        raise
    except OSError as e:
        raise ConversionError(f"{path}: cannot be read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 -- zipfile, numpy's header parser: the file's
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConversionError(f"{path}: cannot be read as .npz ({why})") from None
    return out


# ----------------------------------------------------------------------------- configs


def check_sizes(config, limits: dict[str, tuple[int, int]], what: str) -> None:
    """Each field of ``config`` named in ``limits`` (an int, or a tuple of ints) is an
    integer in ``[low, high]``; ``ValueError`` naming ``what``, the field and its value.

    For the model configurations read from files (a ``config.json``, the record beside
    converted weights): checked when the dataclass is built, before a key list, a
    parameter or a buffer is sized from them (``num_hidden_layers: 1e9`` would loop and
    allocate for a billion layers). The limits are far above every published model."""
    for field, (low, high) in limits.items():
        value = getattr(config, field)
        for v in value if isinstance(value, tuple) else (value,):
            if type(v) is not int or not low <= v <= high:
                raise ValueError(
                    f"{what} {field} = {str(v)[:40]}: expected an integer from {low} to {high}"
                )


MAX_CONFIG_BYTES = 1 << 20  # a model's config.json is a few kB
MAX_TOKENIZER_BYTES = 64 << 20  # CLIP's tokenizer.json is 2.2 MB, RoBERTa's vocab 0.9 MB


def read_config_json(path: str, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    """A model's ``config.json`` (or another JSON file of a download) as a dict: at most
    ``max_bytes``, UTF-8 JSON, an object; :class:`ConversionError` naming the file
    otherwise."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise ConversionError(
                f"{path}: {size} bytes, more than such a file holds (at most {max_bytes})"
            )
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"{path}: not JSON ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(value, dict):
        raise ConversionError(f"{path}: a JSON {type(value).__name__}, expected an object")
    return value


# ----------------------------------------------------------------------------- mappings


def _set(tree: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _conv(w: np.ndarray) -> np.ndarray:
    """torch ``(out, in, *kernel)`` -> flax ``(*kernel, in, out)``."""
    return np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))


def _bn(state: dict, prefix: str) -> tuple[dict, dict]:
    return (
        {"scale": state[prefix + ".weight"], "bias": state[prefix + ".bias"]},
        {"mean": state[prefix + ".running_mean"], "var": state[prefix + ".running_var"]},
    )


class _Mapping:
    """Collects (torch key -> flax path) assignments and checks the state dict's keys."""

    def __init__(self, state: dict, source: str, what: str, ignore_prefixes=("fc.",)):
        self.state, self.source, self.what = state, source, what
        self.ignore_prefixes = ignore_prefixes
        self.used: set[str] = set()
        self.expected_shapes: dict[str, tuple] = {}
        self.variables: dict = {"params": {}, "batch_stats": {}}

    def get(self, key: str, shape: tuple | None = None) -> np.ndarray:
        self.used.add(key)
        if shape is not None:
            self.expected_shapes[key] = tuple(shape)
        return self.state.get(key)

    def conv(self, key: str, path: tuple, shape: tuple):
        w = self.get(key + ".weight", shape)
        if w is not None:
            _set(self.variables["params"], path + ("kernel",), _conv(w))

    def bn(self, key: str, path: tuple, width: int):
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            self.get(f"{key}.{suffix}", (width,))
        self.used.add(f"{key}.num_batches_tracked")
        if all(
            f"{key}.{s}" in self.state for s in ("weight", "bias", "running_mean", "running_var")
        ):
            params, stats = _bn(self.state, key)
            _set(self.variables["params"], path, params)
            _set(self.variables["batch_stats"], path, stats)

    def dense(self, key: str, path: tuple, shape: tuple):
        w, b = self.get(key + ".weight", shape), self.get(key + ".bias", shape[:1])
        if w is not None and b is not None:
            _set(self.variables["params"], path, {"kernel": np.ascontiguousarray(w.T), "bias": b})

    def check(self) -> dict:
        missing = sorted(k for k in self.expected_shapes if k not in self.state)
        wrong = sorted(
            f"{k} {tuple(self.state[k].shape)} (expected {self.expected_shapes[k]})"
            for k in self.expected_shapes
            if k in self.state and tuple(self.state[k].shape) != self.expected_shapes[k]
        )
        unexpected = sorted(
            k for k in self.state if k not in self.used and not k.startswith(self.ignore_prefixes)
        )
        problems = []
        for label, keys in (
            ("missing", missing),
            ("wrong shape", wrong),
            ("unexpected", unexpected),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (
                    f" and {len(keys) - 5} more" if len(keys) > 5 else ""
                )
                problems.append(f"{len(keys)} {label}: {shown}")
        if problems:
            raise ConversionError(
                f"{self.source}: not a {self.what} state dict ({'; '.join(problems)})"
            )
        return self.variables


def _stack_blocks(variables: dict, stage: str, count: int) -> None:
    """Moves ``<stage>_<1..count-1>`` into ``<stage>_rest/block`` stacked on axis 0."""
    for col in ("params", "batch_stats"):
        tree = variables[col]
        blocks = [tree.pop(f"{stage}_{i}") for i in range(1, count)]
        if blocks:
            tree[f"{stage}_rest"] = {
                "block": jax.tree_util.tree_map(lambda *xs: np.stack(xs), *blocks)
            }


def _resnet152_map(m: _Mapping) -> None:
    m.conv("conv1", ("stem_conv",), (64, 3, 7, 7))
    m.bn("bn1", ("stem_bn",), 64)
    in_planes = 64
    for k, (width, blocks, _stride) in enumerate(resnet.STAGES, start=1):
        out = width * resnet.EXPANSION
        for b in range(blocks):
            key, path = f"layer{k}.{b}", (f"layer{k}_{b}",)
            m.conv(key + ".conv1", path + ("conv1",), (width, in_planes, 1, 1))
            m.bn(key + ".bn1", path + ("bn1",), width)
            m.conv(key + ".conv2", path + ("conv2",), (width, width, 3, 3))
            m.bn(key + ".bn2", path + ("bn2",), width)
            m.conv(key + ".conv3", path + ("conv3",), (out, width, 1, 1))
            m.bn(key + ".bn3", path + ("bn3",), out)
            if b == 0:
                m.conv(key + ".downsample.0", path + ("downsample_conv",), (out, in_planes, 1, 1))
                m.bn(key + ".downsample.1", path + ("downsample_bn",), out)
            in_planes = out


def resnet152_variables(state: dict, source: str = "state dict") -> dict:
    """torchvision ResNet-152 state dict -> :class:`~coleaf_jax.features.resnet.ResNet152`
    variables (``fc.*``, the ImageNet classifier HAN drops, is ignored)."""
    m = _Mapping(state, source, "torchvision ResNet-152")
    _resnet152_map(m)
    variables = m.check()
    for k, (_w, blocks, _s) in enumerate(resnet.STAGES, start=1):
        _stack_blocks(variables, f"layer{k}", blocks)
    return variables


def _r2plus1d_map(m: _Mapping) -> None:
    m.conv("stem.0", ("stem_spatial",), (45, 3, 1, 7, 7))
    m.bn("stem.1", ("stem_spatial_bn",), 45)
    m.conv("stem.3", ("stem_temporal",), (64, 45, 3, 1, 1))
    m.bn("stem.4", ("stem_temporal_bn",), 64)
    in_planes = 64
    for k, (width, stride) in enumerate(r2plus1d.STAGES, start=1):
        for b in range(r2plus1d.BLOCKS_PER_STAGE):
            key, path = f"layer{k}.{b}", (f"layer{k}_{b}",)
            mid = r2plus1d.midplanes(in_planes, width)
            for c, cin in (("conv1", in_planes), ("conv2", width)):
                m.conv(f"{key}.{c}.0.0", path + (c, "spatial"), (mid, cin, 1, 3, 3))
                m.bn(f"{key}.{c}.0.1", path + (c, "spatial_bn"), mid)
                m.conv(f"{key}.{c}.0.3", path + (c, "temporal"), (width, mid, 3, 1, 1))
                m.bn(f"{key}.{c}.1", path + ("bn1" if c == "conv1" else "bn2",), width)
            if b == 0 and (stride != 1 or in_planes != width):
                m.conv(
                    f"{key}.downsample.0", path + ("downsample_conv",), (width, in_planes, 1, 1, 1)
                )
                m.bn(f"{key}.downsample.1", path + ("downsample_bn",), width)
            in_planes = width


def r2plus1d_variables(state: dict, source: str = "state dict") -> dict:
    """torchvision R(2+1)D-18 state dict -> :class:`~coleaf_jax.features.r2plus1d.R2Plus1D18`
    variables (``fc.*``, the Kinetics classifier HAN drops, is ignored)."""
    m = _Mapping(state, source, "torchvision R(2+1)D-18")
    _r2plus1d_map(m)
    return m.check()


_VGGISH_TORCH_CONVS = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3_1": "features.6",
    "conv3_2": "features.8",
    "conv4_1": "features.11",
    "conv4_2": "features.13",
}
_VGGISH_TORCH_FCS = {"fc1_1": "embeddings.0", "fc1_2": "embeddings.2", "fc2": "embeddings.4"}


def _vggish_shapes():
    """``{layer: (torch weight shape)}`` of VGGish."""
    shapes, cin = {}, 1
    for layer in vggish.CONV_LAYERS:
        if layer != "pool":
            name, width = layer
            shapes[name] = (width, cin, 3, 3)
            cin = width
    fin = 6 * 4 * cin
    for name, width in vggish.FC_LAYERS:
        shapes[name] = (width, fin)
        fin = width
    return shapes


def _vggish_map(m: _Mapping) -> None:
    shapes = _vggish_shapes()
    for name, key in _VGGISH_TORCH_CONVS.items():
        m.conv(key, (name,), shapes[name])
        b = m.get(key + ".bias", shapes[name][:1])
        if b is not None:
            _set(m.variables["params"], (name, "bias"), b)
    for name, key in _VGGISH_TORCH_FCS.items():
        m.dense(key, (name,), shapes[name])


def vggish_variables(state: dict, source: str = "state dict") -> dict:
    """torchvggish ``vggish-10086976.pth`` state dict -> :class:`~coleaf_jax.features.vggish.VGGish`
    variables. torchvggish flattens in TF's (NHWC) order, as the flax module does."""
    m = _Mapping(state, source, "torchvggish VGGish", ignore_prefixes=())
    _vggish_map(m)
    variables = m.check()
    variables.pop("batch_stats")
    return variables


_MAPS = {"resnet152": _resnet152_map, "r2plus1d_18": _r2plus1d_map, "vggish": _vggish_map}


def torch_shapes(name: str) -> dict[str, tuple]:
    """``{key: shape}`` of the state dict a model converts from (``num_batches_tracked``
    and the dropped classifier ``fc.*`` left out): ``'resnet152'``, ``'r2plus1d_18'``,
    ``'vggish'``."""
    m = _Mapping({}, "", "")
    _MAPS[name](m)
    return dict(m.expected_shapes)


def vggish_tf_variables(reader, source: str = "vggish_model.ckpt") -> dict:
    """Google's TF-slim checkpoint (``reader.get_tensor(name)``, e.g.
    ``tf.train.load_checkpoint``) -> VGGish variables; TF kernels are already HWIO / (in, out)."""
    shapes = _vggish_shapes()
    params = {}
    try:
        for name in shapes:
            scope = {
                "conv3_1": "conv3/conv3_1",
                "conv3_2": "conv3/conv3_2",
                "conv4_1": "conv4/conv4_1",
                "conv4_2": "conv4/conv4_2",
                "fc1_1": "fc1/fc1_1",
                "fc1_2": "fc1/fc1_2",
            }.get(name, name)
            w = np.asarray(reader.get_tensor(f"vggish/{scope}/weights"))
            b = np.asarray(reader.get_tensor(f"vggish/{scope}/biases"))
            want = shapes[name]
            want = (want[2], want[3], want[1], want[0]) if len(want) == 4 else (want[1], want[0])
            if w.shape != want:
                raise ConversionError(
                    f"{source}: vggish/{scope}/weights has shape {w.shape}, expected {want}"
                )
            params[name] = {"kernel": w.astype(np.float32), "bias": b.astype(np.float32)}
    except (KeyError, ValueError) as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"{source}: not a VGGish checkpoint ({e})") from e
    return {"params": params}


def pca_params(state: dict, source: str = "PCA parameters") -> dict:
    """``{'pca_eigen_vectors' (128, 128), 'pca_means' (128,)}`` from torchvggish's
    ``vggish_pca_params-970ea276.pth`` or Google's ``vggish_pca_params.npz``."""
    try:
        vectors = np.asarray(state["pca_eigen_vectors"], np.float32)
        means = np.asarray(state["pca_means"], np.float32).reshape(-1)
    except KeyError as e:
        raise ConversionError(
            f"{source}: no {e} array (expected pca_eigen_vectors and pca_means)"
        ) from e
    if vectors.shape != (128, 128) or means.shape != (128,):
        raise ConversionError(
            f"{source}: PCA shapes {vectors.shape} and {means.shape}, expected "
            f"(128, 128) and (128,)"
        )
    return {"pca_eigen_vectors": vectors, "pca_means": means}


# ----------------------------------------------------------------------------- helpers


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    # The command line lives with the weights folder it converts (weights.py imports this
    # module; importing it from here keeps the two free of an import cycle). Its errors
    # are the classes weights.py sees, not copies in this ``__main__`` module.
    from coleaf_jax.features.weights import convert_main

    sys.exit(convert_main())


def read_json(path: str) -> dict:
    """A tokenizer's JSON file (``vocab.json``, ``tokenizer.json``, ...): at most
    :data:`MAX_TOKENIZER_BYTES`, UTF-8 JSON, an object; otherwise an error naming it."""
    return read_config_json(path, MAX_TOKENIZER_BYTES)


def read_merges(path: str) -> list[tuple[str, str]]:
    """A BPE ``merges.txt``: one pair per line after an optional ``#version`` line; any
    other line is an error naming the file and line."""
    merges = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line or (number == 1 and line.startswith("#version")):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ConversionError(f"{path}:{number}: not a merge (two tokens): {line!r}")
            merges.append((parts[0], parts[1]))
    return merges
