"""Data-parallel training across processes and hosts (``jax.distributed``).

``train.py`` on P processes (one per host, or several on one host), all with
the same config and ``--workdir``::

    python train.py --config ... --workdir W \\
        --coordinator_address HOST0:1234 --num_processes P --process_id I

(or the environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``; ``--distributed`` lets JAX detect them on SLURM, Open MPI,
Kubernetes or a TPU pod; ``JAX_LOCAL_DEVICE_IDS`` picks a process's GPUs).
Without any of them nothing is initialised and training is the one-process run.

How a run is split:

* every process holds the same data and draws the same permutation; the
  global batch (``config.batch_size``) is split over all processes' devices
  (``pmap`` over the local devices, collectives over all), and each device
  gathers only its rows, so a step equals the one-device step on the same
  global batch (losses normalised by global counts, gradients summed, dropout
  keys from each example's global position: ``coleaf_jax.training.step``);
* process 0 (the *primary*) alone touches the workdir: the lock, ``config.json``,
  the checkpoints (orbax runs on it alone: ``active_processes={0}``),
  ``metrics.jsonl``, ``test_metrics.json`` and the report; it alone validates and
  tests. Validation needs no broadcast: its result only decides what process 0
  saves, and the other processes, which go on to the next step, wait for
  process 0 inside that step's gradient ``psum`` (the lock-step of the run);
* process 0 decides how the run starts (fresh, resumed from epoch E, finished,
  or failed, with its message) and publishes it in the coordination service's
  key-value store; the others wait for it before they load the data (so that a
  generated or prepared dataset is written by process 0 alone) and, on a
  resume, receive process 0's restored state (``broadcast``).

A failure of process 0 before training (locked workdir, other config, damaged
checkpoints) ends every process with one line; a process that dies later ends
the others through the distributed runtime (its shutdown barrier, 5 minutes).
"""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np
from absl import flags
from jax._src import distributed as jax_distributed
from jax.experimental import multihost_utils

from coleaf_jax.training.workdir import RunError

ENV_ADDRESS = "JAX_COORDINATOR_ADDRESS"  # read by jax.distributed itself too
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
START_KEY = "coleaf_jax/start"
WAIT_MS = 24 * 3600 * 1000  # process 0 may prepare a dataset for a long time
_runs = [0]  # train_and_evaluate calls in this process: one start key each


def define_flags(flag_values=None) -> None:
    """``--coordinator_address``, ``--num_processes``, ``--process_id``, ``--distributed``."""

    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string(
        "coordinator_address",
        None,
        f"host:port of process 0 for a multi-process run (or ${ENV_ADDRESS})",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_processes",
        None,
        f"processes of a multi-process run (or ${ENV_NUM_PROCESSES})",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "process_id",
        None,
        f"this process's index, 0 to num_processes - 1 (or ${ENV_PROCESS_ID})",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "distributed",
        False,
        "jax.distributed.initialize() with the cluster's own variables (SLURM, "
        "Open MPI, Kubernetes, TPU pods)",
        flag_values=fv,
    )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} = {value!r}: expected a whole number") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> bool:
    """Starts ``jax.distributed`` when a multi-process run is asked for; returns whether it was.

    Arguments fall back to ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES`` and
    ``$JAX_PROCESS_ID``. With none of them (and not ``auto``) nothing happens: the
    one-process run is unchanged. Must run before JAX's first computation. On CPU the
    cross-process collectives are gloo's.
    """
    address = coordinator_address or os.environ.get(ENV_ADDRESS) or None
    num = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    pid = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if not (address or num or pid is not None or auto):
        return False
    if not auto and (address is None or num is None or pid is None):
        missing = [
            name
            for name, value in (
                ("--coordinator_address", address),
                ("--num_processes", num),
                ("--process_id", pid),
            )
            if value is None
        ]
        raise ValueError(
            f"a multi-process run needs --coordinator_address, --num_processes and "
            f"--process_id (or ${ENV_ADDRESS}, ${ENV_NUM_PROCESSES}, "
            f"${ENV_PROCESS_ID}; or --distributed on a cluster); missing "
            f"{', '.join(missing)}"
        )
    if num is not None and pid is not None and not 0 <= pid < num:
        raise ValueError(f"--process_id = {pid}: expected 0 to {num - 1} (--num_processes = {num})")
    if jax.config.jax_cpu_collectives_implementation is None:  # older JAX: none by default
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    jax.devices()  # every process's backend joins the global topology now (a collective)
    # The first collective over all devices sets gloo's connections up, within 30 s on
    # every process: now, while all are here, and not at the first training step, which
    # they reach at different times (process 0 loads the data first).
    n = jax.local_device_count()
    jax.block_until_ready(jax.pmap(lambda x: jax.lax.psum(x, "all"), axis_name="all")(np.ones(n)))
    return True


def initialize_from_flags(flag_values=None) -> bool:
    """``initialize`` from the flags of ``define_flags``."""

    fv = flags.FLAGS if flag_values is None else flag_values
    return initialize(fv.coordinator_address, fv.num_processes, fv.process_id, fv.distributed)


def process_count() -> int:
    return jax.process_count()


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always true in one process)."""
    return jax.process_index() == 0


def validate(config) -> None:
    """The config keys a multi-process run constrains (nothing in one process)."""
    if jax.process_count() == 1:
        return
    if config.num_devices not in (0, jax.local_device_count()):
        raise ValueError(
            f"config.num_devices = {config.num_devices}: a multi-process run uses "
            f"all local devices (0 or {jax.local_device_count()})"
        )
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"config.batch_size = {config.batch_size} must be divisible by the "
            f"{jax.device_count()} devices of the {jax.process_count()} processes"
        )
    if config.num_seeds != 1:
        raise ValueError(
            "config.num_seeds > 1 trains on one device; spread seeds over "
            "processes with python -m coleaf_jax.sweep --seeds K"
        )


def global_devices(n_local: int) -> int:
    """Devices the global batch is split over: ``n_local`` times the processes."""
    return n_local * jax.process_count()


def pmap_devices(n_local: int):
    """``pmap``'s ``devices``: the first ``n_local`` local devices in one process; in
    several, ``None`` (all devices of all processes, as ``pmap`` requires)."""
    return jax.local_devices()[:n_local] if jax.process_count() == 1 else None


def local_rows(batch_size: int, n_local: int) -> np.ndarray:
    """``(n_local, per_device)``: the rows of the global batch that this process's devices
    take, from each device's ``axis_index`` (the index ``make_device_step`` and the
    dropout keys use), so the host pipeline feeds exactly the on-device gather's rows."""
    per_device = batch_size // global_devices(n_local)
    index = jax.pmap(
        lambda x: jax.lax.axis_index("batch"), axis_name="batch", devices=pmap_devices(n_local)
    )(np.zeros(n_local, np.int32))
    return np.asarray(index)[:, None] * per_device + np.arange(per_device)


def broadcast(tree):
    """Process 0's ``tree`` (arrays of equal shapes on every process), as numpy arrays;
    unchanged in one process."""
    if jax.process_count() == 1:
        return tree

    return multihost_utils.broadcast_one_to_all(tree)


def _client():

    return jax_distributed.global_state.client


def _start_key() -> str:
    return f"{START_KEY}/{_runs[0]}"


def announce_start(epoch: int | None) -> None:
    """Process 0: training starts after ``epoch`` (``None``: the run is already finished)."""
    if jax.process_count() > 1:
        _client().key_value_set(_start_key(), "finished" if epoch is None else f"epoch {epoch}")
        _runs[0] += 1


@contextlib.contextmanager
def announce_failure():
    """Process 0: an error before ``announce_start`` is published to the other processes
    (which raise it as theirs) before it propagates."""
    run = _runs[0]
    try:
        yield
    except BaseException as e:
        if jax.process_count() > 1 and _runs[0] == run:
            text = " ".join(str(e).split()) or type(e).__name__
            _client().key_value_set(_start_key(), f"failed {text}")
            _runs[0] += 1
        raise


def wait_for_start() -> int | None:
    """Other processes: the epoch training starts after (``None``: finished), as process 0
    announced it. Raises ``workdir.RunError`` when process 0 failed before training."""

    value = _client().blocking_key_value_get(_start_key(), WAIT_MS)
    _runs[0] += 1
    if value == "finished":
        return None
    if value.startswith("failed "):
        raise RunError(f"process 0 stopped before training: {value[len('failed ') :]}")
    return int(value.split()[1])
