"""Progress display that suits its output: a bar on a terminal, nothing per step in a log.

A redirected log (``train.py ... > log 2>&1``) would otherwise fill with the
bar's carriage-return frames; there tqdm disables itself (``disable=None``)
and the loops print one line per epoch instead (which they do anyway).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm


def bar(
    iterable: Iterable,
    *,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    stream: TextIO | None = None,
) -> tqdm:
    """A tqdm bar over ``iterable`` on ``stream`` (default stderr), shown when ``enabled``
    and the stream is a terminal; otherwise disabled (``bar.disable``): it iterates and
    shows nothing."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        leave=False,
        dynamic_ncols=True,
        file=stream,
        disable=None if enabled else True,
    )
