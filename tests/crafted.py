"""Crafted torch checkpoints for the hostile-file tests and the fuzzer: every number the
reader takes from a ``.pth`` (storage sizes, offsets, sizes, strides, persistent ids) is
the caller's, so a test can write what torch never would.

Written with pickle's opcodes (no torch): ``pickle.dumps(value, 2)`` fragments for plain
values, ``GLOBAL`` for torch's names, ``BINPERSID`` for the persistent ids.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.uint8): "ByteStorage",
}


def plain(value) -> bytes:
    """The opcodes that push ``value`` (ints, strings, tuples, None) on pickle's stack."""
    return pickle.dumps(value, protocol=2)[2:-1]


def glob(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


@dataclasses.dataclass
class Tensor:
    """One state-dict entry: ``size``/``stride``/``offset`` over storage ``storage``."""

    key: str
    storage: str
    size: tuple
    stride: tuple
    offset: int = 0


@dataclasses.dataclass
class Storage:
    """A storage's declared ``numel`` (persistent id; the legacy record too unless
    ``record_numel`` differs) and its bytes as written (``data``; may disagree)."""

    dtype: np.dtype
    numel: int
    data: bytes
    type_name: str | None = None  # default: STORAGE_NAMES[dtype]
    record_numel: int | None = None


def storage(array: np.ndarray) -> Storage:
    a = np.ascontiguousarray(array).reshape(-1)
    return Storage(a.dtype, a.size, a.astype(a.dtype.newbyteorder("<")).tobytes())


def contiguous_strides(size) -> tuple:
    strides, step = [], 1
    for d in reversed(size):
        strides.append(step)
        step *= max(int(d), 1)
    return tuple(reversed(strides))


def _pid(key: str, st: Storage, legacy: bool) -> bytes:
    name = st.type_name or STORAGE_NAMES[np.dtype(st.dtype)]
    fields = plain("storage") + glob("torch", name) + plain(key) + plain("cpu") + plain(st.numel)
    if legacy:
        fields += plain(None)  # no view
    return b"(" + fields + b"tQ"  # MARK ... TUPLE, BINPERSID


def state_dict_pickle(
    tensors: list[Tensor], storages: dict[str, Storage], legacy: bool = False, pid=None
) -> bytes:
    """The main record: an OrderedDict of ``_rebuild_tensor_v2`` calls. ``pid``: raw
    opcodes replacing every persistent id (for ids that are not tuples)."""
    body = [b"\x80\x02", glob("collections", "OrderedDict"), b")R"]
    for t in tensors:
        persistent = pid if pid is not None else _pid(t.storage, storages[t.storage], legacy)
        body += [
            plain(t.key),
            glob("torch._utils", "_rebuild_tensor_v2"),
            b"(" + persistent + plain(t.offset) + plain(tuple(t.size)),
            plain(tuple(t.stride)) + b"\x89" + glob("collections", "OrderedDict") + b")RtR",
            b"s",
        ]
    body.append(b".")
    return b"".join(body)


def write_zip(path, tensors, storages, pid=None, pickle_bytes=None) -> str:
    """torch >= 1.6's zip format with the given (possibly inconsistent) numbers."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "archive/data.pkl", pickle_bytes or state_dict_pickle(tensors, storages, pid=pid)
        )
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, st in storages.items():
            z.writestr(f"archive/data/{key}", st.data)
    return str(path)


def write_legacy(path, tensors, storages, keys=None) -> str:
    """The pre-1.6 single-stream format: magic, protocol, sys info, the state dict, the
    storage keys, then per storage its 8-byte element count and its bytes."""
    keys = list(storages) if keys is None else keys
    with open(path, "wb") as f:
        f.write(pickle.dumps(LEGACY_MAGIC, protocol=2))
        f.write(pickle.dumps(1001, protocol=2))
        f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
        f.write(state_dict_pickle(tensors, storages, legacy=True))
        f.write(pickle.dumps(keys, protocol=2))
        for key in keys:
            st = storages.get(key, Storage(np.dtype(np.float32), 0, b""))
            numel = st.numel if st.record_numel is None else st.record_numel
            f.write(struct.pack("<Q", numel % (1 << 64)) + st.data)  # read as "<q"
    return str(path)


def write(fmt: str, path, tensors, storages) -> str:
    return (write_zip if fmt == "zip" else write_legacy)(path, tensors, storages)


def simple(array: np.ndarray, key: str = "w") -> tuple[list[Tensor], dict[str, Storage]]:
    """One contiguous tensor on its own storage: a valid checkpoint to start from."""
    a = np.asarray(array)
    return [Tensor(key, "0", a.shape, contiguous_strides(a.shape))], {"0": storage(a)}
