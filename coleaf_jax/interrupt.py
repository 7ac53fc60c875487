"""Ctrl-C in the entry scripts: one line saying where the run stopped, exit status 130.

Standard library only, so that an entry script can install
:func:`quiet_while_starting` before it imports JAX and the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

INTERRUPTED = 130  # the exit status of a program ended by SIGINT (128 + 2), as shells use


def interrupt_message(status=None) -> str:
    """The one line printed on Ctrl-C: where the run stopped and what re-running does
    (``status``: a ``train.RunStatus``; a string, the line itself; or None for a command
    that keeps no state)."""
    if status is None:
        return "interrupted; nothing was written: re-run the same command"
    if isinstance(status, str):
        return status
    if status.phase == "finished":
        return "interrupted after the run finished; re-running says it is finished"
    if status.phase == "reporting":
        return (
            "interrupted while writing the report; the run is finished (test_metrics.json): "
            "re-run the same command to write the report"
        )
    if status.phase == "testing":
        return (
            f"interrupted while testing the checkpoint of epoch {status.best_epoch}; re-run "
            f"the same command to test it (no epoch is trained again)"
        )
    resume = f"re-run the same command to resume from epoch {status.resume_epoch}"
    if status.resume_epoch <= 1:
        resume = "re-run the same command to start it again (no epoch was saved)"
    if status.epoch == 0 or status.phase in ("starting", "loading"):
        where = {"loading": "while loading the data", "compiling": "while compiling"}
        return f"interrupted {where.get(status.phase, 'while starting')}; {resume}"
    doing = {"compiling": " (compiling)", "validating": " (validating)", "saving": " (saving)"}
    return f"interrupted in epoch {status.epoch}{doing.get(status.phase, '')}; {resume}"


@contextlib.contextmanager
def stop_on_interrupt(status=None) -> Iterator[None]:
    """On Ctrl-C during the block (loading, compiling, training, saving, testing): one
    line, ``interrupt_message(status)`` as it is at that moment, on stderr and exit
    status 130, no traceback.

    The SIGINT handler ends the process itself (``os._exit``) rather than raising
    ``KeyboardInterrupt``, which Python drops when it lands in a weakref or ``__del__``
    callback (the run then went on) and which JAX chains into its own tracebacks. As
    after a SIGKILL, background threads are not waited for: a checkpoint cut short is
    found damaged and set aside by the next run, which resumes from the one before."""
    previous = signal.signal(signal.SIGINT, lambda *_: _exit_interrupted(interrupt_message(status)))
    try:
        yield
    except KeyboardInterrupt:  # raised by code that received the signal some other way
        _exit_interrupted(interrupt_message(status))
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_interrupted(message: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        os.write(2, f"\n{message}\n".encode())
    except OSError:
        pass
    os._exit(INTERRUPTED)


def quiet_while_starting() -> None:
    """For the entry scripts' first lines: a Ctrl-C while the libraries load ends the
    program with one line (no import traceback). :func:`stop_on_interrupt` takes over."""
    signal.signal(
        signal.SIGINT,
        lambda *_: _exit_interrupted("interrupted while starting; re-run the same command"),
    )
