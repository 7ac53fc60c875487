"""What the entry scripts (train.py, eval.py, parse.py) share: flag parsing with one-line
errors, quiet libraries, checkpoint evaluation.

* :func:`parse_flags`: absl's flags with every flag or config error as one ``error:``
  line. The config file is Python and runs once (as with every ml_collections
  ``--config`` file): a misspelt ``--config.KEY`` is described from the config already
  loaded, never by running the file again.
* :func:`exit_on_user_error`: what an entry script can name at its boundary (bad data,
  config or run; a file error; a full disk: ``fileio.DiskFullError``; out of memory,
  with the size asked and the config keys to lower) ends it with one line ``error: …``
  and exit status 1.
"""

from __future__ import annotations

import difflib
import logging
import os
import re

import jax
import tensorflow_datasets as tfds
from absl import flags

from coleaf_jax import fileio
from coleaf_jax.config import validate as validate_config_values
from coleaf_jax.data.llp import LLPDataError
from coleaf_jax.training import workdir as workdir_lib

# The one check of every output path (a run's records are never an output), for the
# entry scripts: cli.check_output(path, flag, folder=...).
check_output = workdir_lib.check_output

# The config keys an out-of-memory error tells the user to lower, and their values:
# set by setup_jax (or remember_config) for the script that runs.
_MEMORY = {"keys": ("eval.batch_size",), "values": {}}


def quiet_libraries() -> None:
    """Keeps the console to our progress bar and tables (TFDS and orbax are chatty)."""

    tfds.disable_progress_bar()
    for name in ("absl", "orbax", "tensorflow_datasets", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # (asyncio's reports of a damaged checkpoint's failed reads are silenced where they
    # happen: checkpoints.restore_checkpoint.)


def setup_jax(config, memory_keys: tuple[str, ...] = ("eval.batch_size",)) -> None:
    """What an entry script does first: checks every config value (``config.validate``;
    a bad one ends the program with one ``error:`` line) and sets the process-wide JAX
    settings: the persistent compilation cache (``config.compilation_cache_dir``;
    programs compiled once are reused by later runs). ``memory_keys``: the config keys
    an out-of-memory error names as the ones to lower (``train.py``: the training and
    the evaluation batch sizes)."""
    remember_config(config, memory_keys)
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


def remember_config(config, memory_keys: tuple[str, ...]) -> None:
    """Which config keys (and their values now) an out-of-memory error names."""
    values = {}
    for key in memory_keys:
        node = config
        try:
            for name in key.split("."):
                node = node[name]
        except (KeyError, TypeError, AttributeError):
            continue
        values[key] = node
    _MEMORY.update(keys=tuple(memory_keys), values=values)


# XLA (CPU and GPU), jaxlib and numpy on an allocation that fails.
_OUT_OF_MEMORY = re.compile(
    r"out of memory|Unable to allocate|OOM when allocating|failed to allocate|"
    r"RESOURCE_EXHAUSTED.*alloc",
    re.IGNORECASE | re.DOTALL,
)
_ASKED = (
    re.compile(r"allocat\w*\s+(?:request for\s+)?(\d+)\s*bytes", re.IGNORECASE),
    re.compile(r"\((\d+)B\)"),  # XLA GPU: "Failed to allocate request for 1.2GiB (1288490188B)"
    re.compile(r"allocat\w*\s+(?:request for\s+)?([\d.]+\s*[KMGTP]i?B)\b", re.IGNORECASE),
)


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a failed allocation: numpy's
    ``MemoryError``, XLA's ``RESOURCE_EXHAUSTED: Out of memory …`` (a full disk is not)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError):
            return True
        if not isinstance(e, OSError) and _OUT_OF_MEMORY.search(str(e)):
            return not fileio.is_disk_full(e)
        e = e.__cause__ or e.__context__
    return False


def memory_asked(e: BaseException) -> str | None:
    """The size the failed allocation asked for, as its message gives it (or None)."""
    text = str(e)
    for pattern in _ASKED:
        found = pattern.search(text)
        if found:
            size = found.group(1)
            return fileio.format_bytes(int(size)) if size.isdigit() else " ".join(size.split())
    return None


def out_of_memory_line(e: BaseException) -> str:
    """One line for a failed allocation: the size asked and the config keys to lower."""
    asked = memory_asked(e)
    what = f"an allocation of {asked} failed" if asked else "an allocation failed"
    keys = [f"config.{k} (now {v})" for k, v in _MEMORY["values"].items()] or [
        f"config.{k}" for k in _MEMORY["keys"]
    ]
    return (
        f"out of memory: {what} ({type(e).__name__}: {_first_words(e)}); lower "
        f"{' or '.join(keys)} (e.g. halve it: --config.{_MEMORY['keys'][0]}=...), or use a "
        f"smaller model, or free memory"
    )


def _first_words(e: BaseException, limit: int = 120) -> str:
    text = " ".join(str(e).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def user_error_line(e: BaseException, where: str | None = None) -> str | None:
    """The one line for an error a command-line tool can name at its boundary, or None for
    one it cannot (a bug: its traceback is printed). ``where``: the path a full disk is
    reported on when the error names none (default: the working directory)."""
    if fileio.is_disk_full(e):
        return one_line(fileio.as_disk_full(e, where or os.getcwd()))
    if is_out_of_memory(e):
        return out_of_memory_line(e)
    if isinstance(e, (LLPDataError, workdir_lib.RunError, OSError, KeyError, ValueError)):
        return one_line(e)
    return None


def exit_on_user_error(fn, *args, **kwargs):
    """Runs ``fn``; a data, configuration, run or file error, a full disk or an allocation
    that fails ends the program with one line ``error: …`` (exit status 1), no traceback
    (:func:`user_error_line`)."""

    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 -- named in one line, or re-raised
        line = user_error_line(e)
        if line is None:
            raise
        raise SystemExit(f"error: {line}") from None


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


def _config_file_error(error: BaseException) -> str:
    """The config file's own error, from what ml_collections raised: it re-raises a
    ``ValueError``/``TypeError`` of the file with the traceback as text (its last line is
    the error), and reports a missing file as ``IOError`` when the config is used."""
    text = str(error)
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else text
        text = re.sub(r"^(?:[\w.]+(?:Error|Exception)): ", "", text)
        return " ".join(text.split())
    return one_line(error)


def describe_config_error(argv, error: BaseException, loaded: dict | None = None) -> str:
    """What went wrong loading ``--config`` and its overrides, in one line. ``loaded``:
    what :func:`parse_flags` saw the flag load (``{"config": …}`` or ``{"error": …}``);
    the config file is never run again here (it is Python: it runs once)."""

    spec, keys = _config_overrides(argv)
    loaded = loaded or {}
    if spec:
        path = spec.partition(":")[0]
        if not os.path.exists(path):
            return f"--config={spec}: config file {path!r} not found"
        config = loaded.get("config")
        if config is None or "error" in loaded:
            return f"--config={spec}: {_config_file_error(loaded.get('error', error))}"
        try:
            known = set(workdir_lib.flatten(workdir_lib.config_dict(config)))
        except Exception as e:  # noqa: BLE001 -- an _ErrorConfig: the file's error on use
            return f"--config={spec}: {_config_file_error(e)}"
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
    loaded = _remember_loaded_config(fv)
    try:
        rest = fv(argv)
        if "config" in fv and fv["config"].value is not None:
            fv["config"].value.keys()  # a failed load surfaces on first use
    except flags.Error as e:
        if str(e).startswith("flag --config=") or "Traceback" in str(e):  # the config file's error
            raise SystemExit(f"error: {describe_config_error(argv, e, loaded)}") from None
        raise SystemExit(f"error: {one_line(e)} (--helpshort lists the flags)") from None
    except Exception as e:  # noqa: BLE001 -- config files raise anything
        raise SystemExit(f"error: {describe_config_error(argv, e, loaded)}") from None
    return rest


def _remember_loaded_config(fv) -> dict:
    """Has the ``--config`` flag's parser keep what it loads (``{"config": …}``, or
    ``{"error": …}`` with the file's own exception), so that an error in the overrides is
    described without running the config file a second time."""
    loaded: dict = {}
    if "config" not in fv:
        return loaded
    parser = fv["config"].parser
    if getattr(parser, "_coleaf_loaded", None) is not None:
        parser._coleaf_loaded.clear()
        return parser._coleaf_loaded
    original = parser.parse

    def parse(argument):
        loaded.clear()
        try:
            config = original(argument)
        except BaseException as e:
            loaded["error"] = e
            raise
        loaded["config"] = config
        return config

    parser.parse = parse
    parser._coleaf_loaded = loaded
    return loaded


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
