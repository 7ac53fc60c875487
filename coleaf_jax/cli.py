"""What the entry scripts (train.py, eval.py, parse.py) share: flag parsing with one-line
errors, quiet libraries, checkpoint evaluation."""

from __future__ import annotations

import difflib
import logging
import os

import jax
import tensorflow_datasets as tfds
from absl import flags

from coleaf_jax.config import load_config_file
from coleaf_jax.config import validate as validate_config_values
from coleaf_jax.data.llp import LLPDataError
from coleaf_jax.training import workdir as workdir_lib


def quiet_libraries() -> None:
    """Keeps the console to our progress bar and tables (TFDS and orbax are chatty)."""

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
