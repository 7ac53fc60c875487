"""Exclusive file locks with the holder's record (pid, host, start, command).

:func:`exclusive` holds an ``flock`` on a file for a block of code and writes this
process's record into it, so a process that finds the lock taken can name the
holder. The kernel drops the lock of a process that dies, so a lock is never
stale; a record left in a free lock file tells the next holder that its previous
owner was killed. Used for one training per workdir (``train.lock``), one
preparation per dataset copy (``data.llp.prepare``), one writer per output
(``eval.py --output``: a lock file beside it, removed after, ``remove=True``), one
sweep driver per run (``sweep.lock`` in each run's folder).

The record is written unbuffered (``fileio.write_all``): a full disk is one
``fileio.DiskFullError`` naming the lock file, raised by the write that met it (a buffered
file raised it again from ``close()``, replacing it). A record that does not read (cut,
damaged, deeply nested, not an object) is read as an unnamed holder, never an error.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from coleaf_jax import fileio

INFO_WAIT_S = 2.0  # how long a refused process waits for the holder's record


class LockHeldError(RuntimeError):
    """The lock is held by another process (``holder``: its record)."""

    def __init__(self, path: str, holder: dict[str, Any]):
        super().__init__(f"{path} is held by {describe(holder)}")
        self.path, self.holder = path, holder


class LockUnsupportedError(RuntimeError):
    """``flock`` fails on the file's filesystem."""


def describe(info: dict[str, Any]) -> str:
    """``process PID on HOST (started …: COMMAND)``."""
    return (
        f"process {info.get('pid', '?')} on {info.get('host', '?')} "
        f"(started {info.get('started', '?')}: {info.get('command', '?')})"
    )


MAX_RECORD_BYTES = 64 * 1024  # a holder's record is ~200 bytes; more is not one


def _read_info(f) -> dict[str, Any]:
    """The record in the open lock file ``f``: always a dict (``{}`` for an empty file).
    Anything but a record's JSON object (cut short while written, damaged, a list, deep
    nesting, not UTF-8, huge) is ``{"pid": "?", "host": "?", "command": <its start>}``."""
    data = os.pread(f.fileno(), MAX_RECORD_BYTES + 1, 0)  # unbuffered: no stale buffer
    if not data.strip():
        return {}
    try:
        info = fileio.loads_json(data[:MAX_RECORD_BYTES], "a lock file")
    except ValueError:  # JSON, UTF-8 or nesting: fileio.JSONFileError
        info = None
    if isinstance(info, dict) and len(data) <= MAX_RECORD_BYTES:
        return info
    text = data[:200].decode("utf-8", "replace")
    return {"pid": "?", "host": "?", "command": " ".join(text.split())[:200]}


def holder_info(f, wait_s: float = INFO_WAIT_S) -> dict[str, Any]:
    """The holder's record. The holder writes it right after taking the lock, so an empty
    or cut record is read again for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        info = _read_info(f)
        if info.get("pid", "?") != "?" or time.monotonic() >= deadline:
            return info
        time.sleep(0.05)


def _same_file(f, path: str) -> bool:
    """Whether ``path`` still names the file open as ``f`` (a lock file removed by its last
    holder and created again is another lock)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _acquire(path: str, wait: bool, on_busy, remove: bool):
    """The open, locked lock file (see :func:`exclusive`)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        f = os.fdopen(fd, "r+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise LockUnsupportedError(f"{path}: flock fails ({e.strerror or e})") from e
                holder = holder_info(f)
                if on_busy is not None:
                    on_busy(holder)
                if not wait:
                    raise LockHeldError(path, holder) from None
                fcntl.flock(f, fcntl.LOCK_EX)
            if not remove or _same_file(f, path):
                return f
        except BaseException:
            f.close()
            raise
        f.close()  # its holder removed it as we locked it: lock the file there now


@contextmanager
def exclusive(
    path: str,
    *,
    wait: bool = False,
    on_busy: Callable[[dict[str, Any]], None] | None = None,
    remove: bool = False,
) -> Iterator[dict[str, Any]]:
    """Holds an exclusive ``flock`` on ``path`` (created if missing) while the block runs.

    Yields the record a previous holder left (empty unless it died holding the lock).
    When another process holds it: ``on_busy(its record)`` is called, then with
    ``wait`` this blocks until it is free, otherwise :class:`LockHeldError`.
    :class:`LockUnsupportedError` when the filesystem has no ``flock``. With ``remove``
    the lock file is deleted on release (a lock beside an output file, not a record of
    its own); a process that locked the removed file takes the new one instead.
    """
    f = _acquire(path, wait, on_busy, remove)
    fd = f.fileno()  # the record is written to it unbuffered: an error is raised by the
    try:  # write that met it, not again by close() (which would replace it)
        previous = _read_info(f)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            fileio.write_all(fd, json.dumps(record).encode("utf-8"))
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no cut record: the lock is released below
            if fileio.is_disk_full(e):
                raise fileio.DiskFullError(path, e) from None
            raise
        try:
            yield previous
        finally:
            if remove:
                try:
                    os.unlink(path)  # while still locked: see _acquire
                except OSError:
                    pass
            else:
                with contextlib.suppress(OSError):  # an empty file: released normally
                    os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        f.close()  # nothing was written through f: its close flushes nothing


def current_holder(path: str) -> dict[str, Any] | None:
    """The record in lock file ``path`` if a process on this host that holds it is alive
    (a lock released normally is empty; one left by a killed process names a dead pid);
    None otherwise. Reads only: it never takes the lock (a reader must not make the
    holder's next start fail)."""
    try:
        with open(path) as f:
            info = _read_info(f)
    except OSError:
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname():
        return info if isinstance(pid, int) else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return info
