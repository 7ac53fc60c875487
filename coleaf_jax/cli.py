"""What the entry scripts (train.py, eval.py, parse.py) share: flag parsing with one-line
errors, quiet libraries, checkpoint evaluation."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import sys

import jax
import numpy as np

from coleaf_jax import evaluate, metrics
from coleaf_jax import workdir as workdir_lib
from coleaf_jax.checkpoints import (
    best_epoch,
    open_checkpoints,
    restore_checkpoint,
    selection_scores,
)
from coleaf_jax.config import config_flags_as_set
from coleaf_jax.config import validate as validate_config_values
from coleaf_jax.data import pipeline
from coleaf_jax.step import create_train_state, matmul_precision


def quiet_libraries() -> None:
    """Keeps the console to our progress bar and tables (TFDS and orbax are chatty)."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    for name in ("absl", "orbax", "tensorflow_datasets", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # (asyncio's reports of a damaged checkpoint's failed reads are silenced where they
    # happen: checkpoints.restore_checkpoint.)


def setup_jax(config) -> None:
    """What an entry script does first: checks every config value (``config.validate``;
    a bad one ends the program with one ``error:`` line) and sets the process-wide JAX
    settings: the persistent compilation cache (``config.compilation_cache_dir``;
    programs compiled once are reused by later runs)."""
    exit_on_user_error(validate_config_values, config)
    cache = config.get("compilation_cache_dir", "")
    if cache:
        cache = os.path.expanduser(cache)
        os.makedirs(cache, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", cache)
        # every program, the small ones too (parameter init, evaluation): a second run
        # with the same shapes compiles nothing
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a KeyError without its quotes), with its notes
    (e.g. which checkpoint was being read) in parentheses."""
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    text = str(text) + "".join(f" ({note})" for note in getattr(e, "__notes__", ()))
    return " ".join(text.split()) or type(e).__name__


def exit_on_user_error(fn, *args, **kwargs):
    """Runs ``fn``; a data, configuration, run or file error ends the program with one line
    ``error: …`` (exit status 1), no traceback."""
    from coleaf_jax.data.llp import LLPDataError

    try:
        return fn(*args, **kwargs)
    except (LLPDataError, workdir_lib.RunError, OSError, KeyError, ValueError) as e:
        raise SystemExit(f"error: {one_line(e)}") from None


def _config_overrides(argv) -> tuple[str | None, list[str]]:
    """``--config`` (FILE[:variant]) and the dotted keys of ``--config.KEY=…`` in ``argv``."""
    spec, keys = None, []
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith("--config."):
            keys.append(arg[len("--config.") :].split("=", 1)[0])
    return spec, keys


def describe_config_error(argv, error: BaseException) -> str:
    """What went wrong loading ``--config`` and its overrides, in one line."""
    from coleaf_jax.config import load_config_file

    spec, keys = _config_overrides(argv)
    if spec:
        try:
            config = load_config_file(spec)
        except FileNotFoundError:
            return f"--config={spec}: config file {spec.partition(':')[0]!r} not found"
        except Exception as e:  # noqa: BLE001 -- the config file's own error
            return f"--config={spec}: {one_line(e)}"
        known = set(workdir_lib.flatten(workdir_lib.config_dict(config)))
        for key in keys:
            if key not in known and not any(k.startswith(key + ".") for k in known):
                close = difflib.get_close_matches(key, sorted(known), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                return f"--config.{key}: the config ({spec}) has no key {key!r}{hint}"
    return one_line(error)


def parse_flags(argv, flag_values=None):
    """absl's flag parsing for the entry scripts (``app.run(main, flags_parser=…)``), with
    every flag or config error (unknown key, missing config file or variant, bad value,
    missing flag) as one line ``error: …``. ``flag_values``: default ``absl.flags.FLAGS``."""
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    try:
        rest = fv(argv)
        if "config" in fv and fv["config"].value is not None:
            fv["config"].value.keys()  # a failed load surfaces on first use
    except flags.Error as e:
        if str(e).startswith("flag --config=") or "Traceback" in str(e):  # the config file's error
            raise SystemExit(f"error: {describe_config_error(argv, e)}") from None
        raise SystemExit(f"error: {one_line(e)} (--helpshort lists the flags)") from None
    except Exception as e:  # noqa: BLE001 -- config files raise anything
        raise SystemExit(f"error: {describe_config_error(argv, e)}") from None
    return rest


def require_run(workdir: str) -> None:
    """Fails (creating nothing) unless ``workdir`` holds a training run's checkpoints."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(
            f"--workdir {workdir}: no such folder (the run's --workdir from train.py)"
        )
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(
            f"--workdir {workdir}: no checkpoints/ folder in it (not a "
            f"train.py --workdir, or no epoch finished yet)"
        )


def dashes_to_underscores(argv):
    """Accepts ``--select-thresholds``, ``--frame-sizes`` etc. as well as absl's
    ``--select_thresholds`` (our flag names have no dashes; ``--config.*`` is left as is)."""
    out = []
    for arg in argv:
        if arg.startswith("--") and not arg.startswith("--config") and "-" in arg[2:]:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        out.append(arg)
    return out


def restore_anchor(config, workdir: str, data: dict, step: int | None = None):
    """Restores checkpoint ``step`` (default: best on validation) of a run.

    Returns ``(state, anchor, anchor_params, step)``.
    """
    require_run(workdir)
    mngr = open_checkpoints(workdir, create=False)
    try:
        step = best_epoch(selection_scores(mngr)) if step is None else step
        if step is None or step not in mngr.all_steps():
            raise FileNotFoundError(
                f"no checkpoint {'(best)' if step is None else step} in "
                f"{os.path.join(workdir, 'checkpoints')}; available: {mngr.all_steps()}"
            )
        sample = pipeline.make_batch(data, np.arange(1), 1)
        template, anchor, _, _ = create_train_state(
            config, jax.random.key(0), sample, 1, pipeline.num_classes(config)
        )
        state = restore_checkpoint(mngr, step, template, workdir, config)
    finally:
        mngr.close()
    return state, anchor, state.anchor_params, int(step)


def thresholds_path(workdir: str, step: int) -> str:
    """Where the thresholds selected for checkpoint ``step`` are stored."""
    return os.path.join(workdir, "checkpoints", f"selected_thresholds_{step}.json")


def select_thresholds(
    config, workdir: str, step: int, anchor, params, verbose: bool = True
) -> metrics.Thresholds:
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
            raise ValueError(
                f"{path} was selected with base thresholds {saved['base']!r}, "
                f"but config.eval.thresholds is {base.name!r}; delete it to re-select"
            )
        if verbose:
            print(f"reusing the thresholds selected on validation for epoch {step}: {path}")
    else:
        val = pipeline.load_splits(config, workdir, splits=("val",))["val"]
        probs = evaluate.predict_with_config(config, anchor, params, val)
        gate = probs["video_prob"] if base.gate == "joint" else probs["video_prob_v"]
        chosen = metrics.search_visual_thresholds(
            probs["seg_prob"][:, :, 1], gate, val["label_visual"], base
        )
        saved = {
            "base": base.name,
            "epoch": step,
            "split": "val",
            "grid": list(metrics.DEFAULT_THRESHOLD_GRID),
            "video_v": chosen.tolist(),
        }
        with open(path, "w") as f:
            json.dump(saved, f, indent=2)
        if verbose:
            print(f"selected per-class visual thresholds on validation for epoch {step}: {path}")
    return dataclasses.replace(
        base, video_v=np.asarray(saved["video_v"]), name=f"{base.name}+selected"
    )


def default_output(workdir: str, split: str, epoch: int, thresholds: str) -> str:
    """``WORKDIR/eval/<split>_epoch<E>_<thresholds>.json``: one file per checkpoint and
    thresholds, never training's ``WORKDIR/test_metrics.json``."""
    return os.path.join(workdir, "eval", f"{split}_epoch{epoch}_{thresholds}.json")


def evaluate_checkpoint(
    config,
    workdir: str,
    split: str = "test",
    step: int | None = None,
    output: str | None = None,
    verbose: bool = True,
    select: bool = False,
) -> dict:
    """Restores the best (or ``step``) checkpoint of ``workdir`` and scores ``split``.

    With ``select``, per-class visual thresholds are chosen on validation for
    this checkpoint (``select_thresholds``) and used for ``split``.
    """
    from coleaf_jax.train import RESULT_FILE, validate_run_config

    validate_run_config(config)
    require_run(workdir)
    trained = os.path.join(workdir, RESULT_FILE)
    if output and os.path.realpath(output) == os.path.realpath(trained):
        raise ValueError(
            f"--output {output} is training's result ({trained}), which eval.py "
            f"never overwrites: pass another --output, or none for "
            f"{default_output(workdir, split, 'E', 'THRESHOLDS')}"
        )
    with matmul_precision(config):
        return _evaluate_checkpoint(config, workdir, split, step, output, verbose, select)


def _evaluate_checkpoint(config, workdir, split, step, output, verbose, select) -> dict:
    data = pipeline.load_splits(config, workdir, splits=(split,))[split]
    state, anchor, params, step = restore_anchor(config, workdir, data, step)
    thresholds = evaluate.thresholds_from_config(config)
    if select:
        thresholds = select_thresholds(config, workdir, step, anchor, params, verbose)
    scores = evaluate.evaluate_params(config, anchor, params, data, thresholds)
    output = output or default_output(workdir, split, step, thresholds.name)
    result = evaluate.write_result(
        output,
        scores,
        config,
        split,
        step,
        state.step,
        thresholds.name,
        evaluate.video_counts(data),
    )
    if verbose:
        print(
            metrics.format_table(
                {config.name: scores}, title=f"{split}, epoch {step}, {thresholds.name} (%)"
            )
        )
        print(f"wrote {output}")
    return result


def noise_ratios_main(argv=None) -> int:
    """``python -m coleaf_jax.noise_ratios``: estimate JoMoLD ratios from a trained run."""
    import argparse

    from coleaf_jax.config import load_config_file
    from coleaf_jax.noise_ratios import __doc__ as doc
    from coleaf_jax.noise_ratios import estimate_noise_ratios

    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.noise_ratios",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="config file (optionally FILE:variant)")
    parser.add_argument("--workdir", required=True, help="the trained run")
    parser.add_argument("--output", required=True, help=".npz to write (keys audio, visual)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set data.root=/path/to/LLP",
    )
    args = parser.parse_args(config_flags_as_set(sys.argv[1:] if argv is None else argv))
    quiet_libraries()
    return exit_on_user_error(_noise_ratios, args, load_config_file, estimate_noise_ratios)


def _noise_ratios(args, load_config_file, estimate_noise_ratios) -> int:
    config = load_config_file(args.config, args.set)
    require_run(args.workdir)
    data = pipeline.load_splits(config, args.workdir, splits=("train",))["train"]
    _, anchor, params, step = restore_anchor(config, args.workdir, data)
    probs = evaluate.predict_with_config(config, anchor, params, data)
    r_a, r_v = estimate_noise_ratios(probs["video_prob_a"], probs["video_prob_v"], data["label"])
    np.savez(args.output, audio=r_a, visual=r_v)
    print(
        f"wrote {args.output} from checkpoint {step} ({len(data['label'])} training videos); "
        f"mean audio {r_a.mean():.3f}, visual {r_v.mean():.3f}"
    )
    return 0
