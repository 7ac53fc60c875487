"""Orbax checkpoints of a run: ``WORKDIR/checkpoints/<epoch>``.

* Retention is exactly "best on validation + latest" (:func:`prune_checkpoints`
  deletes every other epoch after each save and when a run starts); on a tie of the selection
  score the later epoch is the best, as the authors' code (``>=``) keeps it.
* :func:`restore_checkpoint` tells a checkpoint that does not fit the config
  (:class:`CheckpointMismatchError`, naming the config keys that differ from
  the run's stored ``config.json``) from one whose files are damaged
  (:class:`CheckpointDamagedError`, naming it; :func:`is_damage` says what
  counts) and from one that cannot be read for another reason, e.g. no
  permission (:class:`CheckpointReadError`); :func:`restore_latest_intact`
  moves a damaged checkpoint (only) to ``WORKDIR/damaged_checkpoints/`` and
  falls back to the previous one.
* Only finished checkpoints are read. Orbax writes ``<epoch>.orbax-checkpoint-tmp``
  and renames it to ``<epoch>`` when complete (its ``commit_success.txt`` inside);
  retention deletes by renaming ``<epoch>`` to ``.deleting-<epoch>`` first. So a
  reader sees a checkpoint whole or not at all. :func:`restore_for_reading`
  (``eval.py``, ``parse.py``, the report), which may run while the run trains, reads
  the one it chose through hard links (``.reading-<pid>@<host>-…``, removed after), so
  that the training may delete it meanwhile; where links cannot be made it reads in
  place and reads again when the checkpoints changed under it, never calling one
  damaged for that. What a stopped save, delete or reader left is removed when the
  next training starts.
* A failed save (disk full: :class:`coleaf_jax.fileio.DiskFullError` naming the
  checkpoint; anything else: :class:`CheckpointWriteError`) removes the unfinished
  folder; the reports orbax's background threads make of the same failure are not
  printed (the main thread raises it once).
* A checkpoint that is a symbolic link is read through it; retention removes the
  link and leaves what it points to in place (saying so).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from coleaf_jax import fileio, locks
from coleaf_jax.training import workdir as workdir_lib

CHECKPOINT_DIR = "checkpoints"
UNFINISHED = ".orbax-checkpoint-tmp"  # orbax's name for a checkpoint being written
DELETING = ".deleting-"  # ours for one being deleted (never a step name for orbax)
DAMAGED_DIR = "damaged_checkpoints"
ITEM_DIR = "default"  # orbax's folder of the one saved item (the state's arrays)
# What reading damaged files raises, and only that counts as damage (a damaged checkpoint
# is moved away): tensorstore's ValueError "<STATUS>: ..." with DATA_LOSS (undecodable
# data), OUT_OF_RANGE (a truncated file) or NOT_FOUND (a missing file or key); a JSON
# file (_METADATA, the score) that does not parse; a missing file (ENOENT) or a failing
# disk (EIO), from Python or from tensorstore ("[OS error N: ..."). Anything else (no
# permission, no memory, a bug) leaves the checkpoint in place and is raised naming it.
DAMAGE_STATUSES = frozenset({"DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND"})
DAMAGE_ERRNOS = frozenset({errno.ENOENT, errno.EIO})
_TENSORSTORE_STATUS = re.compile(r"([A-Z_]+): ")
_OS_ERROR = re.compile(r"\[OS error (\d+)")


class CheckpointDamagedError(workdir_lib.RunError):
    """A checkpoint's files cannot be read back (``epoch``: which checkpoint)."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


class CheckpointMismatchError(workdir_lib.RunError):
    """A checkpoint holds another model than the config describes."""


class CheckpointReadError(workdir_lib.RunError):
    """A checkpoint cannot be read for a reason other than damage (e.g. no permission):
    it is left in place."""


class CheckpointWriteError(workdir_lib.RunError):
    """A checkpoint could not be written (other than a full disk); nothing of it is kept."""


def _chain(e: BaseException) -> list[BaseException]:
    chain = [e]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 10:
        chain.append(nxt)
    return chain


def is_damage(e: BaseException) -> bool | None:
    """Whether ``e``, raised reading a checkpoint, says that its files are damaged
    (:data:`DAMAGE_STATUSES`, :data:`DAMAGE_ERRNOS`, unparsable JSON): True; an I/O error
    that does not (no permission, ...): False; anything else (not an I/O error): None.
    The outermost error that tells decides."""
    for x in _chain(e):
        if isinstance(x, (json.JSONDecodeError, UnicodeDecodeError)):  # an unparsable file
            return True
        if isinstance(x, RecursionError) and "decoding a JSON" in str(x):  # json's own,
            return True  # on a file of 100,000 "[": no file orbax writes nests so deep
        if isinstance(x, OSError):
            return isinstance(x, FileNotFoundError) or x.errno in DAMAGE_ERRNOS
        status = _TENSORSTORE_STATUS.match(str(x)) if isinstance(x, ValueError) else None
        if status:
            os_error = _OS_ERROR.search(str(x))
            if os_error:
                return int(os_error.group(1)) in DAMAGE_ERRNOS
            return status.group(1) in DAMAGE_STATUSES
    return None


def _raise_read_error(epoch: int, path: str, what: str, e: Exception):
    """Raises what reading ``what`` of checkpoint ``epoch`` failing with ``e`` means:
    ``CheckpointDamagedError`` (damage), ``CheckpointReadError`` (another I/O error), or
    ``e`` itself with a note naming the checkpoint (not an I/O error: a bug)."""
    damage = is_damage(e)
    if damage:
        raise CheckpointDamagedError(
            f"checkpoint {epoch} ({path}) is damaged: cannot read its {what} ({_short(e)})", epoch
        ) from e
    if damage is False:
        raise CheckpointReadError(
            f"checkpoint {epoch} ({path}): cannot read its {what} ({_short(e)}). This is not "
            f"damage of its files, so it is left in place: fix the cause and run again"
        ) from e
    e.add_note(f"checkpoint {epoch} ({path}): raised reading its {what}")
    raise e


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def checkpoint_manager(workdir: str, create: bool = True) -> ocp.CheckpointManager:
    """The run's checkpoints under ``WORKDIR/checkpoints`` (kept: see :func:`save_checkpoint`).

    ``create=False`` (evaluation) requires the folder to exist and creates nothing.
    """
    directory = checkpoint_dir(workdir)
    if not create and not os.path.isdir(directory):
        raise FileNotFoundError(
            f"{directory}: no checkpoints (is {workdir} a training run's --workdir?)"
        )
    # Orbax keeps everything (max_to_keep=None): its best_fn retention keeps the
    # N best and may delete the latest; save_checkpoint prunes to best + latest.
    extra = {}
    if jax.process_count() > 1:  # multi-process: process 0 alone checkpoints (no barriers)
        extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
            primary_host=0, active_processes={0}
        )
        if create:  # orbax does not create the folder with active_processes
            os.makedirs(directory, exist_ok=True)
            create = False
    # Evaluation reads (read_only: orbax writes and deletes nothing, not even its root
    # metadata), possibly while the run trains in the same folder.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None,
        best_fn=lambda m: m["selection"],
        best_mode="max",
        create=create,
        read_only=not create and not extra,
        save_interval_steps=1 if create or extra else 0,
        **extra,
    )
    with _quiet_read_only_notice():
        return ocp.CheckpointManager(
            directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )


@contextlib.contextmanager
def _quiet_read_only_notice():
    """Drops orbax's warning that a reader's manager is read only (the point of it)."""

    def drop(record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING
            and f"{os.sep}orbax{os.sep}" in (record.pathname or "")
            and "read only" in record.getMessage()
        )

    logger = logging.getLogger("absl")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def selection_scores(mngr: ocp.CheckpointManager) -> dict[int, float]:
    """``{epoch: validation selection score}`` of the stored checkpoints.

    Raises:
      CheckpointDamagedError: a checkpoint's stored score cannot be read.
    """
    out = {}
    for epoch in mngr.all_steps():
        path = os.path.join(str(mngr.directory), str(epoch))
        try:
            metrics = mngr.metrics(epoch)
        except Exception as e:  # noqa: BLE001 -- classified: damage, I/O error or a bug
            _raise_read_error(epoch, path, "validation score", e)
        if not isinstance(metrics, dict) or not isinstance(metrics.get("selection"), (int, float)):
            raise CheckpointDamagedError(
                f"checkpoint {epoch} ({path}) is damaged: its validation score is missing", epoch
            )
        out[epoch] = float(metrics["selection"])
    return out


def best_epoch(scores: dict[int, float]) -> int | None:
    """The best-scoring epoch; on a tie the later one (the authors' ``>=``)."""
    if not scores:
        return None
    return max(scores, key=lambda epoch: (scores[epoch], epoch))


def kept_epochs(scores: dict[int, float]) -> set[int]:
    """What retention keeps: the best and the latest epoch."""
    return {best_epoch(scores), max(scores)} if scores else set()


def save_checkpoint(mngr: ocp.CheckpointManager, epoch: int, state, selection: float) -> None:
    """Saves ``state`` as checkpoint ``epoch``, then deletes all but the best and latest."""
    if not np.isfinite(selection):
        raise ValueError(
            f"epoch {epoch}: validation selection score {selection} is not finite; not saving it"
        )
    _forget_selected_thresholds(str(mngr.directory), epoch)  # chosen for an older epoch-N
    tree = flax.serialization.to_state_dict(state)
    if jax.process_count() > 1:  # orbax refuses process-local jax.Arrays in multi-process runs
        tree = jax.device_get(tree)
    reports = _OrbaxReports()
    try:
        # from the first failed write on, whichever thread sees it
        with _quiet_closed_loop_reports(), reports.held():
            mngr.save(
                epoch,
                args=ocp.args.StandardSave(tree),
                metrics={"selection": float(selection)},
                force=True,
            )
            mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 -- any failure: the unfinished folder goes
        raise _failed_save(mngr, epoch, e, reports) from e
    finally:  # whatever ended the save (a KeyboardInterrupt too): orbax's logs shown again
        reports.release()  # (after _failed_save's own release, or held()'s: a no-op)
    prune_checkpoints(mngr)


class _OrbaxReports(logging.Filter):
    """Holds back the warnings and errors orbax logs while it saves (from its
    background threads too): when the save fails they all report that one failure,
    which the main thread raises; when it succeeds they are emitted after all."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and f"{os.sep}orbax{os.sep}" in (
            record.pathname or ""
        ):
            if not any(r is record for r in self.records):  # absl filters a record twice
                self.records.append(record)
            return False
        return True

    @contextlib.contextmanager
    def held(self):
        logger = logging.getLogger("absl")  # orbax logs through absl.logging
        self.records = []
        logger.addFilter(self)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if not failed:
                logger.removeFilter(self)
                for record in self.records:
                    logger.handle(record)
            # after a failure the filter stays until _failed_save has waited for the threads

    def release(self) -> None:
        logging.getLogger("absl").removeFilter(self)


@contextlib.contextmanager
def _quiet_closed_loop_reports():
    """While a checkpoint is saved, a ``sys.unraisablehook`` that drops asyncio's "Event
    loop is closed" RuntimeErrors (and passes anything else to the hook it replaced):
    tensorstore's writes still in flight when a save fails complete after orbax closed
    their event loop, and each printed a traceback (139 of them for one full disk).

    Scoped: a save that succeeds restores the previous hook (nothing is in flight then).
    A save that fails (any exception, a KeyboardInterrupt too) leaves it installed on
    purpose, with :func:`_quiet_left_over_writes`: the writes in flight report whenever
    they are collected, after the error has been raised, until the process exits (a
    failed save ends the command); only those messages are dropped. An earlier failed
    save's hook is not installed twice."""
    previous = sys.unraisablehook
    installed = None
    if not getattr(previous, "_coleaf_quiet", False):

        def installed(unraisable):
            value = unraisable.exc_value
            if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
                return
            previous(unraisable)

        installed._coleaf_quiet = True
        sys.unraisablehook = installed
    try:
        yield
    except BaseException:
        _quiet_left_over_writes()
        raise  # the hook stays (above)
    if installed is not None and sys.unraisablehook is installed:  # not replaced meanwhile
        sys.unraisablehook = previous


def _drop_left_over_writes(record: logging.LogRecord) -> bool:
    """asyncio's "<Task, Future, _GatheringFuture…> exception was never retrieved"."""
    return not record.getMessage().split("\n", 1)[0].endswith("exception was never retrieved")


def _quiet_left_over_writes() -> None:
    """After a failed save (its command ends with the save's error), drops asyncio's "Task
    (or _GatheringFuture) exception was never retrieved", with a traceback, for the writes
    that failed with it, and Python's "coroutine ... was never awaited" for each write
    never started: they came whenever those were collected, at exit too, after the error
    line. Installed once, left in place for the same reason as the unraisablehook."""
    logger = logging.getLogger("asyncio")
    if _drop_left_over_writes not in logger.filters:
        logger.addFilter(_drop_left_over_writes)
    warnings.filterwarnings(
        "ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning
    )


def _failed_save(mngr, epoch: int, error: Exception, reports: _OrbaxReports) -> Exception:
    """What a failed save of checkpoint ``epoch`` raises, once its unfinished folder is
    removed: ``DiskFullError`` naming it on a full disk, else ``CheckpointWriteError``."""
    try:
        with contextlib.suppress(Exception):
            mngr.wait_until_finished()  # the background threads: done (failed) before cleanup
        gc.collect()  # their coroutines' reports, while they are silenced
        directory = str(mngr.directory)
        for name in _unfinished(directory):
            if name.split(".", 1)[0] == str(epoch):
                fileio.remove_tree(os.path.join(directory, name))
        with contextlib.suppress(Exception):
            mngr.reload()
    finally:
        reports.release()
    path = os.path.join(str(mngr.directory), str(epoch))
    if fileio.is_disk_full(error):
        return fileio.DiskFullError(path, error)
    return CheckpointWriteError(
        f"checkpoint {epoch} ({path}) could not be written ({_short(error)}); nothing of it "
        f"was kept: fix the cause and run the command again (it resumes from the last "
        f"complete checkpoint)"
    )


def _unfinished(directory: str) -> list[str]:
    """What a stopped save (``<epoch>.orbax-checkpoint-tmp…``) or delete (``.deleting-…``)
    left in ``directory``."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if UNFINISHED in n or n.startswith(DELETING))


def remove_unfinished(workdir: str, verbose: bool = True) -> list[str]:
    """Removes what a stopped save or delete left in ``WORKDIR/checkpoints`` (training,
    holding the workdir lock, when it starts); returns the names removed."""
    directory = checkpoint_dir(workdir)
    _remove_dead_readers(directory)
    removed = []
    for name in _unfinished(directory):
        if fileio.remove_tree(os.path.join(directory, name)):
            removed.append(name)
    if removed and verbose:
        print(
            f"removed {', '.join(removed)} from {directory}: unfinished checkpoint writes or "
            f"deletes of a run that stopped while saving"
        )
    return removed


def prune_checkpoints(mngr: ocp.CheckpointManager) -> list[int]:
    """Deletes every checkpoint but the best and the latest (:func:`kept_epochs`), with the
    thresholds selected for them; returns the deleted epochs. After each save, and when
    a run starts (a kill between a save and its deletes leaves a third checkpoint)."""
    scores = selection_scores(mngr)
    deleted = sorted(set(scores) - kept_epochs(scores))
    for old in deleted:
        _delete_checkpoint(str(mngr.directory), old)
        _forget_selected_thresholds(str(mngr.directory), old)
    if deleted:
        mngr.reload()
    return deleted


def _delete_checkpoint(directory: str, epoch: int) -> None:
    """Deletes checkpoint ``epoch`` so that a reader never sees it half deleted: renamed
    to ``.deleting-<epoch>`` (atomic), then removed. A symbolic link is removed, not
    followed: what it points to is left in place (and said so)."""
    path = os.path.join(directory, str(epoch))
    if os.path.islink(path):
        target = os.path.realpath(path)
        os.unlink(path)
        print(
            f"checkpoint {epoch} ({path}) was a symbolic link to {target}: retention "
            f"removed the link and left {target} in place (delete it yourself if unneeded)"
        )
        return
    gone = os.path.join(directory, f"{DELETING}{epoch}")
    if os.path.lexists(gone):
        fileio.remove_tree(gone)
    os.rename(path, gone)
    fileio.remove_tree(gone)


def _forget_selected_thresholds(directory: str, epoch: int) -> None:
    """Removes the thresholds ``eval.py --select-thresholds`` chose for checkpoint ``epoch``
    (``selected_thresholds_<epoch>.json``), which belong to that checkpoint only."""
    path = os.path.join(directory, f"selected_thresholds_{epoch}.json")
    if os.path.exists(path):
        os.remove(path)


def _short(e: BaseException, limit: int = 300) -> str:
    """The most specific message of ``e`` and its causes, without tensorstore's spec dumps."""
    innermost = _chain(e)[-1]
    text = " ".join(str(innermost).split())
    for cut in (" [tensorstore_spec", " See full TensorStore details"):
        text = text.split(cut)[0]
    return f"{type(innermost).__name__}: {text[:limit]}{'…' if len(text) > limit else ''}"


def _signature(tree) -> dict[str, tuple]:
    """``{leaf path: shape}`` of a state tree or of orbax's metadata tree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): tuple(
            getattr(leaf, "shape", np.shape(leaf))
        )
        for path, leaf in leaves
    }


def restore_checkpoint(
    mngr: ocp.CheckpointManager,
    epoch: int,
    template,
    workdir: str | None = None,
    config=None,
    shown: str | None = None,
):
    """Restores checkpoint ``epoch`` into the structure of ``template`` (``shown``: the
    folder named in errors, when ``mngr`` reads a view of it).

    Raises:
      CheckpointMismatchError: the checkpoint holds other parameters than
        ``template`` (built from ``config``); the message names the config keys
        that differ from ``WORKDIR/config.json`` (with ``workdir`` and ``config``).
      CheckpointDamagedError: its files are damaged (truncated, missing, unparsable:
        see :func:`is_damage`).
      CheckpointReadError: they cannot be read for another reason (no permission…).
    """
    path = os.path.join(shown or str(mngr.directory), str(epoch))
    target = flax.serialization.to_state_dict(template)
    if not os.path.isdir(os.path.join(str(mngr.directory), str(epoch), ITEM_DIR)):
        raise CheckpointDamagedError(
            f"checkpoint {epoch} ({path}) is damaged: its arrays' folder {ITEM_DIR}/ is missing",
            epoch,
        )
    try:
        metadata = mngr.item_metadata(epoch)
    except Exception as e:  # noqa: BLE001 -- classified: damage, I/O error or a bug
        _raise_read_error(epoch, path, "metadata", e)
    if getattr(metadata, "tree", None) is None:
        raise CheckpointDamagedError(
            f"checkpoint {epoch} ({path}) is damaged: no array metadata", epoch
        )
    stored = _signature(metadata.tree)
    wanted = _signature(target)
    if stored != wanted:
        raise CheckpointMismatchError(
            _mismatch_message(epoch, path, stored, wanted, workdir, config)
        )
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), target
    )
    if jax.process_count() > 1:  # numpy, as saved (a jax.Array here would need a sharding)
        abstract = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), abstract)
    # A failed read leaves orbax's other pending reads to fail later, each printing a
    # tensorstore dump (asyncio log, "Exception ignored in <coroutine>"): the error
    # below, which names the checkpoint, says it all.
    asyncio_logger = logging.getLogger("asyncio")
    level, hook = asyncio_logger.level, sys.unraisablehook
    asyncio_logger.setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None
    try:
        restored = mngr.restore(epoch, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # noqa: BLE001 -- classified: damage, I/O error or a bug
        gc.collect()  # the failed reads' coroutines, while their reports are silenced
        _raise_read_error(epoch, path, "arrays", e)
    finally:
        asyncio_logger.setLevel(level)
        sys.unraisablehook = hook
    return flax.serialization.from_state_dict(template, restored)


def _mismatch_message(epoch, path, stored, wanted, workdir, config) -> str:
    head = f"checkpoint {epoch} ({path}) does not fit this config"
    if workdir is not None and config is not None:
        saved = workdir_lib.read_stored_config(workdir)
        if saved is not None:
            diffs = workdir_lib.config_differences(saved, config)
            diffs = {
                k: v
                for k, v in diffs.items()
                if k not in workdir_lib.RESUMABLE_KEYS and not k.startswith("eval.")
            }
            if diffs:
                return (
                    f"{head}: the config differs from the run's "
                    f"({os.path.join(workdir, workdir_lib.CONFIG_FILE)}) in "
                    f"{workdir_lib.format_differences(diffs)}; pass the run's values"
                )
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    examples = [f"{k}: stored {stored.get(k)}, expected {wanted.get(k)}" for k in keys[:3]]
    return (
        f"{head}: its parameters differ ({'; '.join(examples)}), but no model key of the "
        f"run's stored config does (saved by another version of the code?)"
    )


def move_damaged(workdir: str, epoch: int) -> str:
    """Moves checkpoint ``epoch`` to ``WORKDIR/damaged_checkpoints/<epoch>-<time>``
    (``-2``, ``-3``… appended when that name is taken: never into an existing folder)."""
    src = os.path.join(checkpoint_dir(workdir), str(epoch))
    dst_dir = os.path.join(workdir, DAMAGED_DIR)
    os.makedirs(dst_dir, exist_ok=True)
    name = f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}"
    dst, n = os.path.join(dst_dir, name), 1
    while os.path.lexists(dst):  # the workdir lock: no other process moves in here
        n += 1
        dst = os.path.join(dst_dir, f"{name}-{n}")
    shutil.move(src, dst)
    _forget_selected_thresholds(checkpoint_dir(workdir), epoch)
    return dst


def _unparsable_score(directory: str) -> int | None:
    """The first checkpoint whose stored validation score (orbax's ``<epoch>/metrics/metrics``
    JSON) does not parse, or None."""
    epochs = (
        sorted(int(p) for p in os.listdir(directory) if p.isdigit())
        if os.path.isdir(directory)
        else []
    )
    for epoch in epochs:
        path = os.path.join(directory, str(epoch), "metrics", "metrics")
        try:
            fileio.load_json(path, "a checkpoint's validation score")
        except ValueError:  # JSON, UTF-8 or nesting (fileio.JSONFileError)
            return epoch
        except OSError:
            continue
    return None


def open_checkpoints(
    workdir: str, create: bool = True, move: bool = False, verbose: bool = True
) -> ocp.CheckpointManager:
    """:func:`checkpoint_manager`, naming a checkpoint whose validation score does not parse:
    orbax reads every score when it opens the folder, and its error names none. Raises
    ``CheckpointDamagedError`` (evaluation), or with ``move`` (training) moves it to
    ``WORKDIR/damaged_checkpoints/``, says so and opens the rest. With ``move`` (training,
    which holds the workdir lock), what a stopped save or delete left is removed first."""
    if move:
        remove_unfinished(workdir, verbose)
    while True:
        try:
            return checkpoint_manager(workdir, create)
        except Exception as e:  # noqa: BLE001 -- re-raised unless it is a damaged score
            epoch = _unparsable_score(checkpoint_dir(workdir))
            if epoch is None or not is_damage(e):
                raise
            path = os.path.join(checkpoint_dir(workdir), str(epoch))
            damaged = CheckpointDamagedError(
                f"checkpoint {epoch} ({path}) is damaged: cannot read its validation score "
                f"({_short(e)})",
                epoch,
            )
            if not move:
                raise damaged from e
            moved = move_damaged(workdir, epoch)
            if verbose:
                print(
                    f"warning: {damaged}. Moved it to {moved}; going on with the other checkpoints",
                    flush=True,
                )


def restore_latest_intact(
    mngr: ocp.CheckpointManager, workdir: str, template, config=None, verbose: bool = True
):
    """The latest checkpoint that can be read: ``(epoch, state)``, or ``(0, template)``.

    The best checkpoint is read too (the run's test scores come from it). A
    damaged checkpoint is named, moved to ``WORKDIR/damaged_checkpoints/`` and
    the previous one tried; a mismatching one is an error.
    """
    while True:
        epochs = sorted(mngr.all_steps(), reverse=True)
        if not epochs:
            return 0, template
        epoch = epochs[0]
        try:
            best = best_epoch(selection_scores(mngr))
            state = restore_checkpoint(mngr, epoch, template, workdir, config)
            if best != epoch:
                restore_checkpoint(mngr, best, template, workdir, config)
            return epoch, state
        except CheckpointDamagedError as e:
            damaged = e.epoch
            moved = move_damaged(workdir, damaged)
            mngr.reload()
            rest = sorted(mngr.all_steps(), reverse=True)
            if verbose:
                if not rest:
                    then = "no other checkpoint: training starts from scratch"
                elif damaged == epoch:
                    then = f"falling back to checkpoint {rest[0]}"
                else:
                    then = (
                        f"it was the best on validation; the best is now chosen among the "
                        f"remaining checkpoints {sorted(rest)} and the epochs still to train"
                    )
                print(f"warning: {e}. Moved it to {moved}; {then}", flush=True)


def _step_folders(directory: str) -> dict[str, tuple[int, int]]:
    """``{name: (device, inode)}`` of the checkpoint folders in ``directory``: what a
    reader compares to know whether they changed while it read."""
    try:
        names = [n for n in os.listdir(directory) if n.isdigit()]
    except OSError:
        return {}
    out = {}
    for name in names:
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        out[name] = (st.st_dev, st.st_ino)
    return out


def training_in(workdir: str) -> dict | None:
    """The record of the training running in ``workdir`` (``train.lock``'s holder), or
    None. Read only: a reader never takes the lock."""
    return locks.current_holder(os.path.join(workdir, workdir_lib.LOCK_FILE))


READING = ".reading-"  # a reader's hard-linked view of one checkpoint: .reading-<pid>@<host>-…
_READER = re.compile(r"^\.reading-(\d+)@(.+)-[^-]+$")


def _link_tree(src: str, dst: str) -> None:
    """``dst`` as a copy of the folder ``src`` made of hard links (no data copied): the
    files stay readable there when the training deletes ``src``. Raises OSError (``src``
    gone meanwhile: FileNotFoundError; links not possible here: another errno)."""
    for root, _dirs, files in os.walk(src, onerror=_raise):
        target = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            os.link(os.path.join(root, name), os.path.join(target, name), follow_symlinks=True)
    if not os.path.isdir(dst):
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint folder", src)


def _raise(e: OSError):
    raise e


def _remove_dead_readers(directory: str) -> None:
    """Removes the views of readers on this host that are no longer running (a reader
    killed, or stopped by Ctrl-C, which exits at once)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        found = _READER.match(name)
        if not found or found.group(2) != _HOST:
            continue
        try:
            os.kill(int(found.group(1)), 0)
        except ProcessLookupError:
            fileio.remove_tree(os.path.join(directory, name))
        except PermissionError:
            pass


_HOST = socket.gethostname().replace("-", "_")


@contextlib.contextmanager
def _reading_view(directory: str):
    """A private folder beside the checkpoints for hard-linked views (None where one
    cannot be made: a read-only workdir); removed after."""
    _remove_dead_readers(directory)
    try:
        view = tempfile.mkdtemp(prefix=f"{READING}{os.getpid()}@{_HOST}-", dir=directory)
    except OSError:
        yield None
        return
    try:
        yield view
    finally:
        fileio.remove_tree(view)


def _named_as(e: BaseException, view: str, directory: str) -> BaseException:
    """``e`` with the reader's view named as the checkpoint folder it stands for."""
    if e.args and isinstance(e.args[0], str) and view in e.args[0]:
        e.args = (e.args[0].replace(view, directory), *e.args[1:])
    return e


def restore_for_reading(
    workdir: str,
    template,
    config=None,
    step: int | None = None,
    verbose: bool = True,
    attempts: int = 10,
):
    """Checkpoint ``step`` (default: the best on validation) of the run in ``workdir``
    for evaluation, which may run while the run trains: ``(epoch, state)``.

    A checkpoint is visible only once complete (orbax's rename; ours on delete). The one
    chosen is read through a view of hard links beside it (``.reading-…``, removed
    after), so the training may delete it meanwhile: its files stay readable. Where no
    view can be made (a read-only workdir, links not supported), it is read in place,
    and a read that fails while the checkpoints changed is tried again (up to
    ``attempts`` times). An error while they stay unchanged is the checkpoint's
    (damaged, unreadable, mismatching) and is raised as it is.

    Raises:
      FileNotFoundError: no checkpoint yet, or no checkpoint ``step`` (naming those kept).
      CheckpointDamagedError, CheckpointReadError, CheckpointMismatchError: see
        :func:`restore_checkpoint`.
      workdir_lib.RunError: the checkpoints changed at every attempt.
    """
    directory = checkpoint_dir(workdir)
    with _reading_view(directory) as view:
        for _ in range(attempts):
            before = _step_folders(directory)
            chosen = None
            try:
                chosen = _choose(workdir, directory, step)
                if view is None:
                    return chosen, _restore_in_place(workdir, chosen, template, config)
                mine = os.path.join(view, str(chosen))
                fileio.remove_tree(mine)
                try:
                    _link_tree(os.path.join(directory, str(chosen)), mine)
                except FileNotFoundError:
                    continue  # deleted as it was linked: choose again
                except OSError:  # no hard links here: read in place
                    fileio.remove_tree(mine)
                    return chosen, _restore_in_place(workdir, chosen, template, config)
                try:
                    mngr = checkpoint_manager_at(view)
                    try:
                        return chosen, restore_checkpoint(
                            mngr, chosen, template, workdir, config, shown=directory
                        )
                    finally:
                        mngr.close()
                except Exception as e:  # noqa: BLE001 -- named as the checkpoint, re-raised
                    raise _named_as(e, view, directory) from e.__cause__
            except Exception:
                if _step_folders(directory) == before:
                    raise  # nothing changed while reading: the error is the checkpoint's
                if verbose:
                    print(
                        f"the checkpoints in {directory} changed while "
                        + (f"checkpoint {chosen} was read" if chosen else "they were listed")
                        + " (the run is training: it saves each epoch and keeps only the "
                        "best and the latest); reading again",
                        flush=True,
                    )
    raise workdir_lib.RunError(
        f"{directory}: the checkpoints changed at each of {attempts} attempts to read one "
        f"(a training in progress saving very often?); run the command again, or once the "
        f"training has finished"
    )


def _choose(workdir: str, directory: str, step: int | None) -> int:
    """The checkpoint to read: ``step``, or the best on validation of those finished."""
    mngr = open_checkpoints(workdir, create=False)
    try:
        steps = sorted(mngr.all_steps())
        chosen = best_epoch(selection_scores(mngr)) if step is None else step
    finally:
        mngr.close()
    if chosen is not None and chosen in steps:
        return chosen
    training, note = training_in(workdir), ""
    if training:
        state = "it keeps only the best and the latest" if steps else "no epoch is finished yet"
        who = f"process {training.get('pid')} on {training.get('host')}"
        note = f" (a training is running there, {who}: {state})"
    raise FileNotFoundError(
        f"no checkpoint {'(best)' if step is None else step} in {directory}; "
        f"available: {steps}{note}"
    )


def _restore_in_place(workdir: str, epoch: int, template, config):
    mngr = open_checkpoints(workdir, create=False)
    try:
        return restore_checkpoint(mngr, epoch, template, workdir, config)
    finally:
        mngr.close()


def checkpoint_manager_at(directory: str) -> ocp.CheckpointManager:
    """A read-only manager of the checkpoints in ``directory`` (a reader's view)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None,
        best_fn=lambda m: m["selection"],
        best_mode="max",
        create=False,
        read_only=True,
        save_interval_steps=0,
    )
    with _quiet_read_only_notice():
        return ocp.CheckpointManager(
            directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )
