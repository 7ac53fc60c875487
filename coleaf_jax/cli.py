"""What the entry scripts (train.py, eval.py) share: quiet libraries, checkpoint evaluation."""

from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np

from coleaf_jax import metrics
from coleaf_jax.data import pipeline
from coleaf_jax.train import (
    checkpoint_manager, create_train_state, evaluate_params, restore_checkpoint, validate_config,
)


def quiet_libraries() -> None:
    """Keeps the console to our progress bar and tables (TFDS and orbax are chatty)."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    for name in ("absl", "orbax", "tensorflow_datasets", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)


def restore_anchor(config, workdir: str, data: dict, step: int | None = None):
    """Restores checkpoint ``step`` (default: best on validation) of a run.

    Returns ``(state, anchor, anchor_params, step)``.
    """
    mngr = checkpoint_manager(workdir)
    step = mngr.best_step() if step is None else step
    if step is None or step not in mngr.all_steps():
        raise FileNotFoundError(f"no checkpoint {'(best)' if step is None else step} in "
                                f"{os.path.join(workdir, 'checkpoints')}; available: {mngr.all_steps()}")
    sample = pipeline.make_batch(data, np.arange(1), 1)
    template, anchor, _, _ = create_train_state(config, jax.random.key(0), sample, 1,
                                                data["label"].shape[1])
    state = restore_checkpoint(mngr, step, template)
    mngr.close()
    return state, anchor, state.anchor_params, int(step)


def evaluate_checkpoint(config, workdir: str, split: str = "test", step: int | None = None,
                        output: str | None = None, verbose: bool = True) -> dict:
    """Restores the best (or ``step``) checkpoint of ``workdir`` and scores ``split``."""
    validate_config(config)
    data = pipeline.load_splits(config, workdir, splits=(split,),
                                pool_frames=config.model.anchor != "cmpae")[split]
    state, anchor, params, step = restore_anchor(config, workdir, data, step)
    scores = evaluate_params(config, anchor, params, data)
    result = dict(scores, config=config.name, method=config.method, split=split, epoch=step,
                  step=int(state.step), thresholds=config.eval.thresholds)
    output = output or os.path.join(workdir, f"{split}_metrics.json")
    with open(output, "w") as f:
        json.dump(result, f, indent=2)
    if verbose:
        print(metrics.format_table({config.name: scores}, title=f"{split}, epoch {step} (%)"))
        print(f"wrote {output}")
    return result
