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
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import re
import shutil
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from coleaf_jax.training import workdir as workdir_lib

CHECKPOINT_DIR = "checkpoints"
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
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None, best_fn=lambda m: m["selection"], best_mode="max", create=create, **extra
    )
    return ocp.CheckpointManager(
        directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


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
    mngr.save(
        epoch, args=ocp.args.StandardSave(tree), metrics={"selection": float(selection)}, force=True
    )
    mngr.wait_until_finished()
    prune_checkpoints(mngr)


def prune_checkpoints(mngr: ocp.CheckpointManager) -> list[int]:
    """Deletes every checkpoint but the best and the latest (:func:`kept_epochs`), with the
    thresholds selected for them; returns the deleted epochs. After each save, and when
    a run starts (a kill between a save and its deletes leaves a third checkpoint)."""
    scores = selection_scores(mngr)
    deleted = sorted(set(scores) - kept_epochs(scores))
    for old in deleted:
        mngr.delete(old)
        _forget_selected_thresholds(str(mngr.directory), old)
    return deleted


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
    mngr: ocp.CheckpointManager, epoch: int, template, workdir: str | None = None, config=None
):
    """Restores checkpoint ``epoch`` into the structure of ``template``.

    Raises:
      CheckpointMismatchError: the checkpoint holds other parameters than
        ``template`` (built from ``config``); the message names the config keys
        that differ from ``WORKDIR/config.json`` (with ``workdir`` and ``config``).
      CheckpointDamagedError: its files are damaged (truncated, missing, unparsable:
        see :func:`is_damage`).
      CheckpointReadError: they cannot be read for another reason (no permission…).
    """
    path = os.path.join(str(mngr.directory), str(epoch))
    target = flax.serialization.to_state_dict(template)
    if not os.path.isdir(os.path.join(path, ITEM_DIR)):
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
            with open(path) as f:
                json.load(f)
        except ValueError:  # JSON or UTF-8
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
    ``WORKDIR/damaged_checkpoints/``, says so and opens the rest."""
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
