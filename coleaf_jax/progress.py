"""Progress display that suits its output: a bar on a terminal, nothing per step in a log.

A redirected log (``train.py ... > log 2>&1``) would otherwise fill with the
bar's carriage-return frames; there the loops print one line per epoch
instead (which they do anyway).
"""

from __future__ import annotations

import sys
from typing import Iterable, TextIO

from tqdm import tqdm


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class _Silent:
    """tqdm's interface, showing nothing."""

    def __init__(self, iterable: Iterable):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def bar(iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool = True,
        stream: TextIO | None = None):
    """A tqdm bar over ``iterable`` when ``enabled`` and ``stream`` (default stderr) is a
    terminal; otherwise the iterable as is (same ``set_postfix`` / ``close`` methods)."""
    stream = sys.stderr if stream is None else stream
    if not (enabled and is_terminal(stream)):
        return _Silent(iterable)
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=stream)
