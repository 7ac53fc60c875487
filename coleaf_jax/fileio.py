"""Writing the files the tools produce: whole or not at all.

* :func:`atomic_write_text` / :func:`atomic_write_json`: the content goes to a hidden
  temporary file beside ``path``, is flushed to disk, then renamed over ``path``
  (``os.replace``: atomic on POSIX filesystems). A reader sees the old file or the new
  one, never a cut one; an interrupted or failed write (disk full) leaves the old file
  and no temporary file behind.
* :class:`DiskFullError`: ``ENOSPC`` / ``EDQUOT`` as one line naming the path and the
  free space there (what the command-line tools print instead of a traceback);
  :func:`is_disk_full` recognises it however it was raised (an ``OSError``, or
  tensorstore's ``ValueError`` "... No space left on device [os_error_code='28']" from
  an orbax checkpoint write), :func:`full_path` the file it names.
* :func:`append_line`: an append (``metrics.jsonl``) that is whole or not at all: a
  failed append is cut back to the file's previous size. :func:`write_all`: bytes
  written unbuffered to a descriptor (no buffer left to fail again on close).
* :func:`load_json` / :func:`loads_json`: the one reader of every JSON file a user or a
  crash can damage: whatever does not read (not UTF-8, not JSON, cut short, nested
  deeper than :data:`MAX_JSON_DEPTH`; with ``require_object`` anything but an object) is
  one :class:`JSONFileError` (a ``ValueError``) naming the file and what was expected,
  never a ``RecursionError`` or ``TypeError`` traceback.
* :func:`read_jsonl`: the rows of a JSONL file; a last line cut by a kill or a full
  disk mid-append is skipped with a warning naming the file, as is any other line
  that is not a JSON object (never silently).
* :func:`remove_tree`: a folder a failed write left, removed (retried while the
  writer's background threads finish).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import time
from typing import Any

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# The same failure in the text of errors that carry no errno: tensorstore (orbax's
# checkpoint writes) raises ValueError("RESOURCE_EXHAUSTED: ... Failed to write N bytes
# to file F: No space left on device [os_error_code='28']"); other libraries "[OS error 28".
_NO_SPACE_TEXT = re.compile(
    r"No space left on device|Disk quota exceeded|\bENOSPC\b|\bEDQUOT\b"
    rf"|os_error_code='(?:{errno.ENOSPC}|{errno.EDQUOT})'"
    rf"|\[OS error (?:{errno.ENOSPC}|{errno.EDQUOT})\b"
)
# Where such a message names the file it was writing.
_FAILED_PATH = re.compile(r'(?:Failed writing|local file|Failed to open):? "([^"]+)"')


class DiskFullError(OSError):
    """No space left (or the quota reached) while writing ``path``; one line naming it."""

    def __init__(self, path: str, cause: BaseException | None = None):
        self.path = os.fspath(path)
        free = free_bytes(self.path)
        where = f" ({format_bytes(free)} free there)" if free is not None else ""
        code = getattr(cause, "errno", None)
        super().__init__(
            code if code in NO_SPACE_ERRNOS else errno.ENOSPC,
            f"{self.path}: no space left on the device{where}; free some space (or point the "
            f"output elsewhere) and run the command again: it goes on from what is complete",
        )

    def __str__(self) -> str:  # OSError's default prefixes "[Errno 28]"
        return self.strerror

    def __reduce__(self):  # picklable: a preparation worker's error reaches its parent
        return (DiskFullError, (self.path,))


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a full disk or quota."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return True
        if not isinstance(e, OSError) and _NO_SPACE_TEXT.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def full_path(e: BaseException, default: str) -> str:
    """The file a disk-full error ``e`` (or one it was raised from) names, else ``default``."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return e.path
        if isinstance(e, OSError) and e.filename:
            return os.fspath(e.filename)
        found = _FAILED_PATH.search(str(e))
        if found:
            return found.group(1)
        e = e.__cause__ or e.__context__
    return default


def as_disk_full(e: BaseException, default: str) -> DiskFullError:
    """``e`` (a full disk: :func:`is_disk_full`) as one :class:`DiskFullError` naming
    ``default`` when it names no file itself."""
    if isinstance(e, DiskFullError):
        return e
    return DiskFullError(full_path(e, default), e)


def free_bytes(path: str) -> int | None:
    """Free bytes on the filesystem of ``path`` (or of its nearest existing parent)."""
    path = os.path.abspath(os.fspath(path))
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` whole or not at all (module docstring). A full disk
    raises :class:`DiskFullError` naming ``path``."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            raise DiskFullError(path, e) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """``obj`` as JSON (with a final newline), written by :func:`atomic_write_bytes`."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_all(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to the descriptor ``fd`` (``os.write`` until done: it may
    write less than asked). Unbuffered: an error is raised here, by the write that met
    it, never again later by a buffer's flush on close."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_line(path: str | os.PathLike, line: str) -> None:
    """Appends ``line`` (a newline added) to ``path`` and flushes it to disk. A failed
    append (disk full, interrupted) is cut back to the file's previous size: the file
    never ends in a partial line written by this call. A full disk raises
    :class:`DiskFullError` naming ``path``."""
    path = os.fspath(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # as open(): umask
    size = None
    try:
        size = os.fstat(fd).st_size
        write_all(fd, data)  # unbuffered: an error is met here, not again in close()
        os.fsync(fd)
    except BaseException as e:
        if size is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)  # frees blocks: needs no space
        with contextlib.suppress(OSError):
            os.close(fd)
        if is_disk_full(e):
            raise DiskFullError(path, e) from None
        raise
    os.close(fd)


def truncate(path: str | os.PathLike, size: int) -> None:
    """Cuts ``path`` back to ``size`` bytes (a record appended by a step that then failed)."""
    os.truncate(path, size)


MAX_JSON_DEPTH = 100  # nesting of any JSON read: the files the tools write nest < 10


class JSONFileError(ValueError):
    """A JSON file (or one line of a JSONL file) that does not read as expected: one line
    ``WHERE: REASON; expected WHAT``. ``where``, ``reason`` and ``what`` are kept for
    callers that phrase the message their own way."""

    def __init__(self, where: str, reason: str, what: str):
        self.where, self.reason, self.what = os.fspath(where), reason, what
        super().__init__(f"{self.where}: {reason}; expected {what}")


_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def json_type(value: Any) -> str:
    """How a JSON value is named in a message (``a list``, ``a string``, ``null``…)."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels (iterative:
    a deep value cannot exhaust the stack here)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads_json(
    data: bytes | str, where: str, what: str = "JSON", *, require_object: bool = False
) -> Any:
    """``data`` (UTF-8 bytes or text) parsed as JSON. Whatever does not read is one
    :class:`JSONFileError` naming ``where`` (a file, or a file's line) and ``what`` was
    expected: not UTF-8, empty, not JSON or cut short, nested more than
    :data:`MAX_JSON_DEPTH` levels (the parser's ``RecursionError`` included), or with
    ``require_object`` any value but an object."""
    where = os.fspath(where)
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    except UnicodeDecodeError:
        raise JSONFileError(where, "not UTF-8 text", what) from None
    if not text.strip():
        raise JSONFileError(where, "empty, cut short or damaged", what)
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        too_deep = True
    except ValueError as e:  # JSON (and int digits beyond Python's limit)
        detail = (
            f"{e.msg}: line {e.lineno} column {e.colno}"
            if isinstance(e, json.JSONDecodeError)
            else str(e)
        )
        raise JSONFileError(
            where, f"not valid JSON ({detail}), cut short or damaged", what
        ) from None
    else:
        too_deep = _too_deep(value, MAX_JSON_DEPTH)
    if too_deep:
        raise JSONFileError(
            where,
            f"JSON nested more than {MAX_JSON_DEPTH} levels deep (damaged, or not a file "
            f"this tool writes)",
            what,
        )
    if require_object and not isinstance(value, dict):
        raise JSONFileError(where, f"{json_type(value)}, not a JSON object", what)
    return value


def load_json(path: str | os.PathLike, what: str = "JSON", *, require_object: bool = False) -> Any:
    """The JSON in file ``path`` (:func:`loads_json`: anything that does not read is one
    :class:`JSONFileError` naming it); ``OSError`` when it cannot be opened."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return loads_json(data, path, what, require_object=require_object)


def read_jsonl(path: str | os.PathLike, warn=None) -> list[dict]:
    """The JSON objects of a JSONL file, in order. A line that does not parse (the last
    one cut by a kill or a full disk mid-append; any other, damage, deep nesting
    included) or is not an object is skipped with one warning naming the file and the
    lines (``warn(message)``; default: :func:`warning`). A missing file is no rows."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    cut = bool(lines) and lines[-1] != b""  # no final newline: the last write was cut
    rows, bad = [], []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rows.append(loads_json(raw, f"{path}:{number}", require_object=True))
        except JSONFileError:
            bad.append(number)
    if bad:
        last = len(lines)
        if bad == [last] and cut:
            what = (
                f"its last line ({last}) is cut short (a write interrupted by a kill or a "
                f"full disk)"
            )
        else:
            shown = ", ".join(map(str, bad[:10])) + (" …" if len(bad) > 10 else "")
            what = f"line(s) {shown} are not JSON objects"
        (warn or warning)(f"{path}: {what}; skipped")
    return rows


def warning(message: str) -> None:
    """``warning: message`` on stderr (what a reader says about a line it skipped)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def remove_tree(path: str | os.PathLike, attempts: int = 20, wait_s: float = 0.05) -> bool:
    """Removes the folder ``path`` (what a failed write left), retrying while files still
    appear in it (a writer's background threads finishing); a symbolic link is unlinked,
    never followed. Returns whether it is gone."""
    path = os.fspath(path)
    for _ in range(attempts):
        if os.path.islink(path):
            os.unlink(path)
            return True
        if not os.path.lexists(path):
            return True
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return True
        time.sleep(wait_s)
    return not os.path.lexists(path)
