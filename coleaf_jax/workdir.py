"""One run per workdir: the lock, and the config a run was started with.

* :func:`lock` holds ``WORKDIR/train.lock`` (``fcntl.flock``) for the life of a
  training: a second training on the same workdir fails naming the process
  that holds it. The kernel drops the lock when its process dies, so a lock
  left by a killed run is taken over (with a message naming it). On
  filesystems whose flock is local to a host it holds per host; where flock
  fails, the error names ``train.lock``.
* :func:`check_resume` compares a config with the one stored in
  ``WORKDIR/config.json`` when the run started: resuming is refused unless
  only keys of :data:`RESUMABLE_KEYS` changed.
* :func:`config_differences` names the keys in which two configs differ (also
  used when a checkpoint does not fit a config).

This module imports neither JAX nor TFDS (the lock test starts a process on it).
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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOCK_FILE = "train.lock"
LOCK_INFO_WAIT_S = 2.0  # how long a refused process waits for the holder's record
CONFIG_FILE = "config.json"

# Keys that may change between the start of a run and its resumption: they do not
# change what an epoch computes (or, for num_epochs, only how many epochs there are).
RESUMABLE_KEYS = frozenset(
    {
        "num_epochs",  # extend a run (not below the epochs already trained)
        "log_every_steps",  # console only
        "eval.batch_size",  # evaluation batching: the same scores
        "data.on_device",  # where batches are gathered: tested equal to the host pipeline
        "data.on_device_max_gib",
        "data.resident_max_gib",  # streamed or held in memory: tested to give identical batches
        "compilation_cache_dir",  # where compiled programs are cached: the same programs
        "scan_epoch",  # an epoch as one lax.scan: tested equal to the step loop
        "num_devices",  # data-parallel devices: the step equals the one-device step
        "data.tfds_dir",  # where the prepared copy of the same inputs is cached
    }
)


class RunError(RuntimeError):
    """A run cannot go on as asked (the CLIs print it as ``error: …``)."""


class WorkdirLockedError(RunError):
    """Another process is training in this workdir."""


class ConfigMismatchError(RunError):
    """The config differs from the run's stored config in keys that matter."""


def _process_description(info: dict[str, Any]) -> str:
    return (
        f"process {info.get('pid', '?')} on {info.get('host', '?')} "
        f"(started {info.get('started', '?')}: {info.get('command', '?')})"
    )


def _read_lock_info(f) -> dict[str, Any]:
    f.seek(0)
    text = f.read()
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {"pid": "?", "host": "?", "command": text.strip()[:200]}


def _holder_info(f, wait_s: float = LOCK_INFO_WAIT_S) -> dict[str, Any]:
    """The lock holder's record. The holder writes it right after taking the lock, so an
    empty or cut record is read again for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        info = _read_lock_info(f)
        if info.get("pid", "?") != "?" or time.monotonic() >= deadline:
            return info
        time.sleep(0.05)


@contextmanager
def lock(workdir: str, verbose: bool = True) -> Iterator[str]:
    """Holds ``WORKDIR/train.lock`` while the block runs (creating ``workdir``).

    Raises:
      WorkdirLockedError: another process holds it; the message names that
        process (pid, host, start time and command line).
      RunError: flock is not supported on the workdir's filesystem.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    f = os.fdopen(fd, "r+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunError(
                    f"{path}: cannot lock the workdir (flock: {e.strerror or e}); its filesystem "
                    f"does not support flock. Use a --workdir on one that does (a local disk, "
                    f"NFS)"
                ) from e
            holder = _holder_info(f)
            raise WorkdirLockedError(
                f"{workdir} is in use by {_process_description(holder)}: one training per "
                f"workdir. Wait for it to finish, stop it, or use another --workdir"
            ) from None
        previous = _read_lock_info(f)
        if previous and verbose:
            print(
                f"{path}: taking over the lock of {_process_description(previous)}, which "
                f"is no longer running (killed?); resuming its run"
            )
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
            yield path
        finally:
            f.seek(0)
            f.truncate()  # an empty file: released normally
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}`` (tuples as lists, as JSON stores them)."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    if isinstance(tree, tuple):
        tree = list(tree)
    return {prefix[:-1]: tree}


def config_dict(config) -> dict[str, Any]:
    """A config as the JSON of ``config.json`` reads back (ConfigDict or dict)."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def config_differences(stored: dict, config, defaults=None) -> dict[str, tuple[Any, Any]]:
    """``{key: (stored value, new value)}`` for every dotted key whose value differs.

    A key missing from ``stored`` (a config written before the key existed) counts
    only when the new value differs from its value in ``defaults``.
    """
    old, new = flatten(stored), flatten(config_dict(config))
    base = flatten(config_dict(defaults)) if defaults is not None else {}
    missing = object()
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a is missing and key in base and base[key] == b:
            continue
        if a != b:
            out[key] = (None if a is missing else a, None if b is missing else b)
    return out


def format_differences(diffs: dict[str, tuple[Any, Any]], limit: int = 8) -> str:
    shown = [f"{k} ({a!r} -> {b!r})" for k, (a, b) in list(diffs.items())[:limit]]
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return ", ".join(shown) + more


def read_stored_config(workdir: str) -> dict | None:
    """The config a run in ``workdir`` was started with (``config.json``), or None."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise RunError(
            f"{path}: cannot read the run's stored config ({e}); restore it, or "
            f"use another --workdir"
        ) from e


def apply_stored_config(config, workdir: str):
    """``config`` with every value the run in ``workdir`` was started with (its
    ``config.json``): the run's own effective config, whatever overrides trained it.
    Keys the stored file lacks (an older run) keep ``config``'s values. Returns
    ``config`` (changed in place), or it unchanged when there is no ``config.json``."""
    stored = read_stored_config(workdir)
    if stored is None:
        return config
    current = flatten(config_dict(config))
    for key, value in flatten(stored).items():
        if key not in current or value == current[key]:
            continue
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
    return config


def write_config(workdir: str, config) -> None:
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)


def check_resume(workdir: str, config, trained_epochs: int, defaults=None) -> dict:
    """Refuses to resume a run with a config that changes what it computes.

    Args:
      workdir: the run's folder (its ``config.json`` is the stored config).
      config: the config asked for now.
      trained_epochs: epochs the run's latest checkpoint holds.
      defaults: the default config (keys absent from an older ``config.json``
        count as unchanged when the new value is their default).

    Returns:
      The keys that differ (all of them in :data:`RESUMABLE_KEYS`).

    Raises:
      ConfigMismatchError: other keys differ (named with both values), or
        ``num_epochs`` is below ``trained_epochs``.
    """
    stored = read_stored_config(workdir)
    if stored is None:
        raise ConfigMismatchError(
            f"{workdir} holds checkpoints but no {CONFIG_FILE}: there is no way to check that "
            f"this config is the run's. Restore {os.path.join(workdir, CONFIG_FILE)}, or use "
            f"another --workdir"
        )
    diffs = config_differences(stored, config, defaults)
    blocking = {k: v for k, v in diffs.items() if k not in RESUMABLE_KEYS}
    if blocking:
        raise ConfigMismatchError(
            f"{workdir} holds a run started with another config ({os.path.join(workdir, CONFIG_FILE)}); "
            f"resuming it would mix two runs. Differing keys: {format_differences(blocking)}. "
            f"Use another --workdir, or the run's values (only "
            f"{', '.join(sorted(RESUMABLE_KEYS))} may change on resume)"
        )
    if config.num_epochs < trained_epochs:
        raise ConfigMismatchError(
            f"{workdir}: num_epochs = {config.num_epochs}, but the run already trained "
            f"{trained_epochs} epochs (its checkpoints and scores cover them); use "
            f"num_epochs >= {trained_epochs} or another --workdir"
        )
    return diffs
