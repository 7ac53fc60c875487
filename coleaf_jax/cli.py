"""What the entry scripts (train.py, eval.py) share: quiet libraries, checkpoint evaluation."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import numpy as np

from coleaf_jax import evaluate, metrics
from coleaf_jax.data import pipeline
from coleaf_jax.checkpoints import checkpoint_manager, restore_checkpoint
from coleaf_jax.step import create_train_state, validate_config


def quiet_libraries() -> None:
    """Keeps the console to our progress bar and tables (TFDS and orbax are chatty)."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    for name in ("absl", "orbax", "tensorflow_datasets", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)


def exit_on_user_error(fn, *args, **kwargs):
    """Runs ``fn``; a data or configuration error ends the program with its message, no traceback."""
    from coleaf_jax.data.llp import LLPDataError

    try:
        return fn(*args, **kwargs)
    except (LLPDataError, FileNotFoundError, KeyError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def dashes_to_underscores(argv, prefixes=("--select-", "--compare-")):
    """Accepts ``--select-thresholds`` etc. as well as absl's ``--select_thresholds``."""
    out = []
    for arg in argv:
        if arg.startswith(tuple(prefixes)):
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        out.append(arg)
    return out


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
                                                pipeline.num_classes(config))
    state = restore_checkpoint(mngr, step, template)
    mngr.close()
    return state, anchor, state.anchor_params, int(step)


def thresholds_path(workdir: str, step: int) -> str:
    """Where the thresholds selected for checkpoint ``step`` are stored."""
    return os.path.join(workdir, "checkpoints", f"selected_thresholds_{step}.json")


def select_thresholds(config, workdir: str, step: int, anchor, params,
                      verbose: bool = True) -> metrics.Thresholds:
    """Per-class visual video-level thresholds for checkpoint ``step`` (SPEC §8).

    Searched on the validation split with this checkpoint's predictions and
    stored next to it; a stored file for the same step is reused.
    """
    base = evaluate.thresholds_from_config(config)
    path = thresholds_path(workdir, step)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved["base"] != base.name:
            raise ValueError(f"{path} was selected with base thresholds {saved['base']!r}, "
                             f"but config.eval.thresholds is {base.name!r}; delete it to re-select")
        if verbose:
            print(f"reusing the thresholds selected on validation for epoch {step}: {path}")
    else:
        val = pipeline.load_splits(config, workdir, splits=("val",))["val"]
        probs = evaluate.predict_with_config(config, anchor, params, val)
        gate = probs["video_prob"] if base.gate == "joint" else probs["video_prob_v"]
        chosen = metrics.search_visual_thresholds(probs["seg_prob"][:, :, 1], gate,
                                                  val["label_visual"], base)
        saved = {"base": base.name, "epoch": step, "split": "val",
                 "grid": list(metrics.DEFAULT_THRESHOLD_GRID), "video_v": chosen.tolist()}
        with open(path, "w") as f:
            json.dump(saved, f, indent=2)
        if verbose:
            print(f"selected per-class visual thresholds on validation for epoch {step}: {path}")
    return dataclasses.replace(base, video_v=np.asarray(saved["video_v"]),
                               name=f"{base.name}+selected")


def evaluate_checkpoint(config, workdir: str, split: str = "test", step: int | None = None,
                        output: str | None = None, verbose: bool = True,
                        select: bool = False) -> dict:
    """Restores the best (or ``step``) checkpoint of ``workdir`` and scores ``split``.

    With ``select``, per-class visual thresholds are chosen on validation for
    this checkpoint (``select_thresholds``) and used for ``split``.
    """
    validate_config(config)
    data = pipeline.load_splits(config, workdir, splits=(split,))[split]
    state, anchor, params, step = restore_anchor(config, workdir, data, step)
    thresholds = evaluate.thresholds_from_config(config)
    if select:
        thresholds = select_thresholds(config, workdir, step, anchor, params, verbose)
    scores = evaluate.evaluate_params(config, anchor, params, data, thresholds)
    output = output or os.path.join(
        workdir, f"{split}_metrics{'_selected' if select else ''}.json")
    result = evaluate.write_result(output, scores, config, split, step, state.step, thresholds.name)
    if verbose:
        print(metrics.format_table({config.name: scores},
                                   title=f"{split}, epoch {step}, {thresholds.name} (%)"))
        print(f"wrote {output}")
    return result


def noise_ratios_main(argv=None) -> int:
    """``python -m coleaf_jax.noise_ratios``: estimate JoMoLD ratios from a trained run."""
    import argparse

    from coleaf_jax.config import load_config_file
    from coleaf_jax.noise_ratios import __doc__ as doc, estimate_noise_ratios

    parser = argparse.ArgumentParser(prog="python -m coleaf_jax.noise_ratios", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file (optionally FILE:variant)")
    parser.add_argument("--workdir", required=True, help="the trained run")
    parser.add_argument("--output", required=True, help=".npz to write (keys audio, visual)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set data.root=/path/to/LLP")
    args = parser.parse_args(argv)
    quiet_libraries()
    config = load_config_file(args.config, args.set)
    data = pipeline.load_splits(config, args.workdir, splits=("train",))["train"]
    _, anchor, params, step = restore_anchor(config, args.workdir, data)
    probs = evaluate.predict_with_config(config, anchor, params, data)
    r_a, r_v = estimate_noise_ratios(probs["video_prob_a"], probs["video_prob_v"], data["label"])
    np.savez(args.output, audio=r_a, visual=r_v)
    print(f"wrote {args.output} from checkpoint {step} ({len(data['label'])} training videos); "
          f"mean audio {r_a.mean():.3f}, visual {r_v.mean():.3f}")
    return 0
