"""The training split on the device(s): batches gathered there from a resident split
(``make_device_step``), whole epochs as one ``lax.scan`` (``make_scan_epoch``), and the
host pipeline's batches put on the device(s) (``device_batch``).

Shapes: ``N`` videos of the split, ``B`` the global batch, ``T`` segments.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax.data import pipeline


def make_device_step(
    step: Callable, batch_size: int, n_devices: int = 1, axis_name: str | None = None
) -> Callable:
    """Wraps ``step`` to gather its batch on device from a resident split.

    ``device_step(state, data, order, i, epoch, key)``: ``data`` holds the whole
    split (``BATCH_KEYS`` arrays and optionally ``mask``), ``order`` the
    epoch's permutation padded with -1 to a whole number of batches, ``i`` the
    step within the epoch. Under ``pmap`` each device takes its slice of the
    global batch, exactly as the host pipeline reshapes it, and padding videos
    are zeros with ``video_mask = 0`` as there: both paths train identically. A
    ``batch_size`` larger than ``order`` (a small split) takes the split's size rounded
    up to ``n_devices`` (``pipeline.fit_batch_size``), as ``padded_order`` and the host
    pipeline do, instead of gathering that many rows of padding.
    """

    def device_step(state, data, order, i, epoch, key):
        size = pipeline.fit_batch_size(batch_size, order.shape[0], n_devices)  # static
        if order.shape[0] < size:  # one batch, short of the devices' multiple
            order = jnp.pad(order, (0, size - order.shape[0]), constant_values=-1)
        per_device = size // n_devices
        start = i * size
        if axis_name:
            start = start + jax.lax.axis_index(axis_name) * per_device
        idx = jax.lax.dynamic_slice_in_dim(order, start, per_device)
        valid = idx >= 0
        safe = jnp.where(valid, idx, 0)
        batch = {}
        for k in pipeline.batch_keys(data):
            x = data[k][safe]
            batch[k] = jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0).astype(x.dtype)
        seg = data["mask"][safe] if "mask" in data else jnp.ones(data["audio"].shape[1:2], bool)
        batch["mask"] = seg & valid[:, None]
        batch["video_mask"] = valid.astype(jnp.float32)
        return step(state, batch, epoch, key)

    return device_step


def make_scan_epoch(
    device_step: Callable, steps_per_epoch: int, per_step: bool = False
) -> Callable:
    """A whole epoch as one ``lax.scan`` over ``device_step`` (``make_device_step``).

    ``run_epoch(state, data, order, epoch, key) -> (state, logs)``: no host
    round trip between steps. ``logs`` are summed over the epoch, or with
    ``per_step`` stacked ``(steps_per_epoch, ...)``.
    """

    def run_epoch(state, data, order, epoch, key):
        def body(carry, i):
            carry, logs = device_step(carry, data, order, i, epoch, key)
            return carry, logs

        state, logs = jax.lax.scan(body, state, jnp.arange(steps_per_epoch, dtype=jnp.int32))
        if per_step:
            return state, logs
        return state, jax.tree_util.tree_map(lambda x: x.sum(0), logs)

    return run_epoch


def padded_order(perm: np.ndarray, batch_size: int, n_devices: int = 1) -> np.ndarray:
    """The permutation padded with -1 to a whole number of batches (of at most the
    split's size rounded up to ``n_devices``: ``pipeline.fit_batch_size``)."""
    n = len(perm)
    batch_size = pipeline.fit_batch_size(batch_size, n, n_devices)
    total = pipeline.num_batches(n, batch_size) * batch_size
    return np.concatenate([np.asarray(perm, np.int32), np.full(total - n, -1, np.int32)])


def split_bytes(data: dict) -> int:
    return sum(data[k].nbytes for k in pipeline.batch_keys(data))


def device_batch(batch, n_devices: int, rows: np.ndarray | None = None):
    """A host batch on the device(s): split ``(n_devices, B / n_devices, ...)`` over them;
    a batch cut to a small split (``pipeline.fit_batch_size``) is padded to a multiple of
    ``n_devices`` first (zeros, ``video_mask`` 0: padding videos)."""
    short = -len(next(iter(batch.values()))) % n_devices if rows is None else 0
    if short:
        batch = {
            k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)])
            for k, v in batch.items()
        }
    if rows is not None:  # multi-process: this process's devices' rows (distributed.local_rows)
        return {k: jnp.asarray(v[rows]) for k, v in batch.items()}
    if n_devices == 1:
        return {k: jnp.asarray(v) for k, v in batch.items()}
    return {k: jnp.asarray(v.reshape((n_devices, -1) + v.shape[1:])) for k, v in batch.items()}
