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
* :func:`check_output` is the one place every tool's output path goes through
  (``eval.py --output``, ``parse.py --output``, ``bench --json``, the sweep's and the
  weights' folders, ``train.py --workdir`` itself): a run's records
  (:data:`RECORD_FILES` in a run's folder, anything in its :data:`RECORD_DIRS`) are
  never an output, whatever the spelling (symbolic links and ``..`` resolved).
  :func:`output_lock`: one writer per output file.

This module imports neither JAX nor TFDS (the lock test starts a process on it).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from coleaf_jax import fileio, locks
from coleaf_jax.config import flatten

LOCK_FILE = "train.lock"
CONFIG_FILE = "config.json"
IMPORT_RECORD = "imported.json"  # a run imported from a released checkpoint (coleaf_jax.imports)
# A run's records, by name (the modules that write them import these names or are
# tested to agree: tests/test_records_hardening.py): in a run's folder (a train.py
# --workdir, a sweep's run, a sweep's own folder) none of them is ever another tool's
# output, nor anything inside RECORD_DIRS.
RECORD_FILES = frozenset(
    {
        CONFIG_FILE,
        LOCK_FILE,
        IMPORT_RECORD,
        "metrics.jsonl",  # records.METRICS_FILE
        "test_metrics.json",  # records.RESULT_FILE
        "seeds_metrics.json",  # seeds.RESULT_FILE
        "report.html",  # evaluation.report
        "train.log",  # sweep.LOG: each run's log
        "sweep.json",  # sweep.MANIFEST
        "summary.json",  # sweep.SUMMARY
        "sweep.lock",  # sweep.LOCK_FILE: in each run's folder, held by its sweep driver
    }
)
RECORD_DIRS = frozenset({"checkpoints", "damaged_checkpoints"})
# What makes a folder a run's (or a sweep's): any one of these in it.
RUN_MARKERS = (
    CONFIG_FILE,
    LOCK_FILE,
    "metrics.jsonl",
    "test_metrics.json",
    "seeds_metrics.json",
    "checkpoints",
    "sweep.json",
)

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
        "data.prepare_processes",  # how many processes write it: the same files
    }
)


class RunError(RuntimeError):
    """A run cannot go on as asked (the CLIs print it as ``error: …``)."""


class WorkdirLockedError(RunError):
    """Another process is training in this workdir."""


class ConfigMismatchError(RunError):
    """The config differs from the run's stored config in keys that matter."""


class ProtectedOutputError(RunError):
    """An output path that would overwrite (or write into) a run's records."""


class OutputInUseError(RunError):
    """Another process is writing the same output."""


def is_run_folder(path: str) -> bool:
    """Whether ``path`` is a folder holding a run's (or a sweep's) records."""
    return os.path.isdir(path) and any(
        os.path.lexists(os.path.join(path, name)) for name in RUN_MARKERS
    )


def protected_record(path: str, own_run: bool = False) -> str | None:
    """What of a run's records the output ``path`` would overwrite or write into, or None.

    ``path`` is resolved first (symbolic links, ``..``, relative to the working
    directory). Protected: anything inside a run's :data:`RECORD_DIRS` (its
    checkpoints, with their selected thresholds), a file of :data:`RECORD_FILES` in a
    run's folder, and a run's folder itself unless ``own_run`` (``train.py --workdir``)."""
    real = os.path.realpath(path)
    node = real
    while os.path.dirname(node) != node:
        parent = os.path.dirname(node)
        if is_run_folder(parent):
            record = _record_named(node, RECORD_DIRS)
            if record is not None:
                return f"inside {record}/ of the run in {parent}"
        node = parent
    parent = os.path.dirname(real)
    if is_run_folder(parent):
        record = _record_named(real, RECORD_FILES)
        if record is not None:
            return f"the record {record} of the run in {parent}"
    if not own_run and is_run_folder(real):
        return f"the folder of the run in {real}"
    return None


def _record_named(path: str, names) -> str | None:
    """Which of ``names`` (records in the folder of ``path``) ``path`` is, or None: by its
    name, or, when it exists, by being the same file as one of them (``os.path.samefile``)
    however it is spelt. That covers a case-insensitive filesystem (macOS's, Windows'
    default), where ``Config.json`` opens ``config.json`` (realpath keeps the case given),
    and a hard link to a record."""
    name = os.path.basename(path)
    if name in names:
        return name
    if not os.path.lexists(path):  # nothing there: on a case-insensitive filesystem a
        return None  # case-swapped record exists, so a missing path is no record
    parent = os.path.dirname(path)
    for record in sorted(names):
        try:
            if os.path.samefile(path, os.path.join(parent, record)):
                return record
        except OSError:  # that record does not exist (or cannot be stat'ed)
            continue
    return None


def check_output(path: str, flag: str, *, folder: bool = False, own_run: bool = False) -> str:
    """The one check every tool's output path goes through; returns ``path``.

    Args:
      path: the output (a file, or with ``folder`` a folder the tool writes into).
      flag: how the user gave it (``--output``, ``--json``…), for the message.
      folder: ``path`` is a folder (for the message).
      own_run: ``path`` is a run's own workdir (``train.py --workdir``): a run's folder
        is allowed, a folder inside another run's records is not.

    Raises:
      ProtectedOutputError: the output would overwrite or write into a run's records
        (:func:`protected_record`); one line naming both.
    """
    what = protected_record(path, own_run=own_run)
    if what is None:
        return path
    real = os.path.realpath(path)
    shown = f"{path} (= {real})" if real != os.path.abspath(path) else path
    raise ProtectedOutputError(
        f"{flag} {shown} is {what}: a run's records are never another output. Give "
        f"{'a folder' if folder else 'a file'} outside them"
    )


@contextmanager
def _exclusive(path: str, held, what: str, advice: str, **kwargs) -> Iterator:
    """``locks.exclusive(path, **kwargs)`` (yielding what it yields) with its two failures
    as this module's errors: ``held(holder)`` (the error to raise, given the holder's
    description) when another process holds the lock; a :class:`RunError` ``"PATH: cannot
    lock WHAT (reason); ADVICE"`` when the filesystem does not support flock."""
    try:
        with locks.exclusive(path, **kwargs) as previous:
            yield previous
    except locks.LockHeldError as e:
        raise held(locks.describe(e.holder)) from None
    except locks.LockUnsupportedError as e:
        raise RunError(f"{path}: cannot lock {what} ({e}); {advice}") from None


@contextmanager
def folder_lock(folder: str, flag: str, tool: str, lock_name: str) -> Iterator[str]:
    """Holds ``FOLDER/<lock_name>`` while the block writes into ``folder`` (created; the
    lock file removed on release; a folder this call created and left empty, the run
    having failed before writing, removed again): one ``tool`` per output folder at a
    time, else the last writer's files would win silently.

    Raises:
      OutputInUseError: another process holds it; the message names that process.
      ValueError: ``folder`` is a file.
      RunError: flock is not supported on its filesystem.
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{flag} {folder}: a file, not a folder")
    created = not os.path.exists(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, lock_name)

    def held(holder: str) -> OutputInUseError:
        return OutputInUseError(
            f"{folder} is in use by {holder}: one {tool} per {flag} folder at a time. Wait "
            f"for it to finish, stop it, or use another {flag}"
        )

    try:
        with _exclusive(
            path, held, "the folder", f"use a {flag} on a filesystem with flock", remove=True
        ):
            yield path
    finally:
        if created:
            with contextlib.suppress(OSError):  # only if empty: nothing was written
                os.rmdir(folder)


@contextmanager
def output_lock(path: str, flag: str) -> Iterator[str]:
    """Holds ``.<name>.lock`` beside the output file ``path`` while the block writes it
    (the lock file is removed after): a second writer of the same output is refused
    naming the first, as a second training in a workdir is.

    Raises:
      OutputInUseError: another process is writing ``path``.
    """
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    created = []  # folders made for the lock: removed again if nothing was written there
    node = parent
    while not os.path.isdir(node):
        created.append(node)
        node = os.path.dirname(node)
    os.makedirs(parent, exist_ok=True)
    lock_path = os.path.join(parent, f".{os.path.basename(real)}.lock")

    def held(holder: str) -> OutputInUseError:
        return OutputInUseError(
            f"{flag} {path} is being written by {holder}: one writer per output. Wait for "
            f"it to finish, or write elsewhere"
        )

    unsupported = "its filesystem does not support flock. Write it on one that does"
    try:
        with _exclusive(lock_path, held, "the output", unsupported, remove=True):
            yield lock_path
    finally:
        for folder in created:  # innermost first
            try:
                os.rmdir(folder)
            except OSError:
                break  # not empty: the output (or something else) is in it


@contextmanager
def lock(workdir: str, verbose: bool = True) -> Iterator[str]:
    """Holds ``WORKDIR/train.lock`` while the block runs (creating ``workdir``).

    Raises:
      WorkdirLockedError: another process holds it; the message names that
        process (pid, host, start time and command line).
      RunError: ``workdir`` is a file, or flock is not supported on its filesystem.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise RunError(
            f"--workdir {workdir}: a file, not a folder; give a folder (created if missing)"
        )
    check_output(workdir, "--workdir", folder=True, own_run=True)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)

    def held(holder: str) -> WorkdirLockedError:
        return WorkdirLockedError(
            f"{workdir} is in use by {holder}: one training per workdir. Wait for it to "
            f"finish, stop it, or use another --workdir"
        )

    unsupported = (
        "its filesystem does not support flock. Use a --workdir on one that does (a local "
        "disk, NFS)"
    )
    with _exclusive(path, held, "the workdir", unsupported) as previous:
        if previous and verbose:
            print(
                f"{path}: taking over the lock of {locks.describe(previous)}, which "
                f"is no longer running (killed?); resuming its run"
            )
        yield path


def config_dict(config) -> dict[str, Any]:
    """A config as the JSON of ``config.json`` reads back (ConfigDict or dict)."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config))


def config_differences(stored: dict, config, defaults=None) -> dict[str, tuple[Any, Any]]:
    """``{key: (stored value, new value)}`` for every dotted key whose value differs.

    A key missing from ``stored`` (a config written before the key existed) counts
    only when the new value differs from its value in ``defaults`` (a config, or a
    function returning it: called only when a key is missing, so that a config file
    is not run for nothing).
    """
    old, new = flatten(stored), flatten(config_dict(config))
    if callable(defaults) and not set(new) <= set(old):
        defaults = defaults()
    elif callable(defaults):
        defaults = None
        if not set(old) <= set(new):  # keys the project no longer has: not differences
            old = {k: v for k, v in old.items() if k in new}
    base = flatten(config_dict(defaults)) if defaults is not None else {}
    missing = object()
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a is missing and key in base and base[key] == b:
            continue
        if b is missing and defaults is not None and key not in base:
            continue  # a key the project no longer has (e.g. eval.every_epochs)
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
        return fileio.load_json(path, "the run's config (a JSON object)", require_object=True)
    except fileio.JSONFileError as e:  # JSON, UTF-8, nesting, not an object: one line
        raise RunError(
            f"{path}: cannot read the run's stored config ({e.reason}; expected {e.what}); "
            f"restore it, or use another --workdir"
        ) from None
    except OSError as e:
        raise RunError(
            f"{path}: cannot read the run's stored config ({e.strerror or e}); restore it, "
            f"or use another --workdir"
        ) from None


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
    """``WORKDIR/config.json``, written whole or not at all (a full disk: one
    ``fileio.DiskFullError`` naming it, the previous file intact)."""
    fileio.atomic_write_text(
        os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2) + "\n"
    )


def check_resume(workdir: str, config, trained_epochs: int, defaults=None) -> dict:
    """Refuses to resume a run with a config that changes what it computes.

    Args:
      workdir: the run's folder (its ``config.json`` is the stored config).
      config: the config asked for now.
      trained_epochs: epochs the run's latest checkpoint holds.
      defaults: the default config, or a function returning it (keys absent from an
        older ``config.json`` count as unchanged when the new value is their default).

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
