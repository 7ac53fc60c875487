"""Exclusive file locks with the holder's record (pid, host, start, command).

:func:`exclusive` holds an ``flock`` on a file for a block of code and writes this
process's record into it, so a process that finds the lock taken can name the
holder. The kernel drops the lock of a process that dies, so a lock is never
stale; a record left in a free lock file tells the next holder that its previous
owner was killed. Used for one training per workdir (``workdir.lock``) and one
preparation per dataset copy (``data.llp.prepare``).
"""

from __future__ import annotations

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


def _read_info(f) -> dict[str, Any]:
    f.seek(0)
    text = f.read()
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"pid": "?", "host": "?", "command": text.strip()[:200]}


def holder_info(f, wait_s: float = INFO_WAIT_S) -> dict[str, Any]:
    """The holder's record. The holder writes it right after taking the lock, so an empty
    or cut record is read again for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        info = _read_info(f)
        if info.get("pid", "?") != "?" or time.monotonic() >= deadline:
            return info
        time.sleep(0.05)


@contextmanager
def exclusive(
    path: str, *, wait: bool = False, on_busy: Callable[[dict[str, Any]], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Holds an exclusive ``flock`` on ``path`` (created if missing) while the block runs.

    Yields the record a previous holder left (empty unless it died holding the lock).
    When another process holds it: ``on_busy(its record)`` is called, then with
    ``wait`` this blocks until it is free, otherwise :class:`LockHeldError`.
    :class:`LockUnsupportedError` when the filesystem has no ``flock``.
    """
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
        previous = _read_info(f)
        f.seek(0)
        f.truncate()
        f.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": datetime.datetime.now().isoformat(timespec="seconds"),
                    "command": " ".join(sys.argv),
                }
            )
        )
        f.flush()
        try:
            yield previous
        finally:
            f.seek(0)
            f.truncate()  # an empty file: released normally
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()
