"""Orbax checkpoints of a run: ``WORKDIR/checkpoints/<epoch>``."""

from __future__ import annotations

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from coleaf_jax.step import TrainState



def checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
    """Keeps the best-on-validation and the latest checkpoint under ``WORKDIR/checkpoints``."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, best_fn=lambda m: m["selection"], best_mode="max", create=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def save_checkpoint(mngr: ocp.CheckpointManager, epoch: int, state: TrainState, selection: float):
    mngr.save(epoch, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
              metrics={"selection": float(selection)})
    mngr.wait_until_finished()


def restore_checkpoint(mngr: ocp.CheckpointManager, epoch: int, template: TrainState) -> TrainState:
    """Restores checkpoint ``epoch`` into the structure of ``template``."""
    target = flax.serialization.to_state_dict(template)
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), target)
    restored = mngr.restore(epoch, args=ocp.args.StandardRestore(abstract))
    return flax.serialization.from_state_dict(template, restored)
