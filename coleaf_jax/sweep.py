"""Seeds and ablations as one command: every (setting, seed) a train.py run, then one table.

    python -m coleaf_jax.sweep --config configs/ablations.py:no_kd,synthetic \\
        --config configs/ablations.py:event_aware_nce,synthetic --seeds 3 --workers 2 \\
        --workdir runs/sweep [--set num_epochs=4 ...]
    python -m coleaf_jax.sweep --table 2 --table 4 --options synthetic --seeds 3 --workdir runs/t24

Each run is ``python train.py --config SPEC --config.seed=S [--config.KEY=VALUE ...]
--workdir WORKDIR/<setting>/seed<S>`` (its output in ``train.log`` there), ``--workers``
of them at a time (the first alone until it has loaded its data, which it may generate
or prepare for the others); ``<setting>`` is the config's name (``no_kd_han_synthetic``).
A finished run is not trained again and an interrupted one resumes (train.py does both),
so re-running the command completes a sweep; a failed run is reported at the end. ``--seeds K`` trains seeds
``seed … seed+K-1`` (``--seed-start``, default the config's ``seed``).

Across machines sharing WORKDIR: run the same command with ``--worker I --num-workers N``
on each (worker I takes runs I, I+N, …), then ``--summarize`` once they are done. Data
that a run prepares (the TFDS copy of LLP, a generated synthetic set under a shared
``data.root``) should exist before the machines start: start worker 0 first.

The summary (``WORKDIR/summary.json``, printed as tables) gives, per setting, the mean and
standard deviation over seeds of the 18 test scores and of the headline, the mean of
the segment- and event-level Ao, Vo and AV F-scores.

One driver per run: a driver holds ``sweep.lock`` in the folder of every run it drives
(``WORKDIR/<setting>/seed<S>/sweep.lock``) for as long as it runs, so a second driver
of any of those runs is refused naming the first, whatever its ``--worker`` and
``--num-workers`` (a sweep driven whole and worker 0 of two share runs: refused; the
workers of one ``--num-workers`` share none: they run side by side). Each run is also
protected by its own ``train.lock``. ``--summarize`` drives no run and takes no lock.
``sweep.json`` and ``summary.json`` are written whole or not at all; ``--workdir`` may not
be a run's folder or lie among a run's records (``workdir.check_output``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

import numpy as np

from coleaf_jax import fileio, locks
from coleaf_jax.config import config_flags_as_set, load_config_file, resolve_config_path
from coleaf_jax.evaluation import metrics
from coleaf_jax.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
MANIFEST = "sweep.json"
SUMMARY = "summary.json"
LOG = "train.log"
LOCK_FILE = "sweep.lock"  # in each run's folder: held by the driver that drives the run
# What train.py prints once its data are loaded (or when it has nothing to train).
READY_MARKS = ("training on ", "this run is finished")
RESULT = "test_metrics.json"  # records.RESULT_FILE (not imported: this driver does not load JAX)
HEADLINE_KEYS = tuple(f"{level}_{n}" for level in metrics.LEVELS for n in ("ao", "vo", "av"))
# The paper's ablation tables (configs/ablations.py names); the full model is one row,
# shared by the tables, so it is trained once.
TABLES = {
    "2": ("event_aware_nce", "no_contrastive", "standard_nce", "pseudo_label_bce"),
    "3": ("event_aware_nce", "no_kd"),
    "4": ("event_aware_nce", "tokens_no_corr", "no_tokens_corr", "no_tokens_no_corr"),
}


def headline(scores: dict) -> float:
    """The mean of segment and event Ao, Vo and AV."""
    return float(np.mean([scores[k] for k in HEADLINE_KEYS]))


def table_specs(tables, options: str = "") -> list[str]:
    """``configs/ablations.py:<name>[,options]`` for the rows of the paper's ``tables``."""
    names = []
    for table in tables:
        if table not in TABLES:
            raise ValueError(f"--table {table}: expected one of {sorted(TABLES)}")
        names += [n for n in TABLES[table] if n not in names]
    suffix = f",{options}" if options else ""
    return [f"configs/ablations.py:{name}{suffix}" for name in names]


def settings(specs, overrides) -> list[dict]:
    """``[{name, config, num_epochs, seed}]``: each spec loaded with the overrides (an
    unknown key or spec fails here, before any run starts)."""

    out, seen = [], {}
    for spec in specs:
        config = load_config_file(spec, overrides)
        if config.num_seeds != 1:
            raise ValueError(
                f"{spec}: num_seeds = {config.num_seeds}; the sweep trains each "
                f"seed as its own run (--seeds)"
            )
        name = config.name
        if name in seen:
            raise ValueError(
                f"--config {spec} and --config {seen[name]} are the same setting ({name})"
            )
        seen[name] = spec
        out.append(
            {
                "name": name,
                "config": spec,
                "num_epochs": int(config.num_epochs),
                "seed": int(config.seed),
            }
        )
    return out


def run_dir(workdir: str, setting: str, seed: int) -> str:
    return os.path.join(workdir, setting, f"seed{seed}")


def plan(manifest: dict) -> list[tuple[dict, int]]:
    """Every (setting, seed) of the sweep, in a fixed order (settings, then seeds)."""
    return [(s, seed) for s in manifest["settings"] for seed in manifest["seeds"]]


def write_manifest(workdir: str, manifest: dict) -> None:
    """``WORKDIR/sweep.json``; another sweep's manifest in the same folder is an error."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, MANIFEST)
    if os.path.exists(path):
        if read_manifest(workdir) != manifest:
            raise ValueError(
                f"{path} describes another sweep (other configs, seeds or "
                f"overrides); use another --workdir, or delete it"
            )
        return
    fileio.atomic_write_json(path, manifest)


def read_manifest(workdir: str) -> dict:
    path = os.path.join(workdir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no sweep in {workdir} (run it first, or give --config)")
    try:
        manifest = fileio.load_json(path, "a sweep's manifest")
    except fileio.JSONFileError as e:  # JSON, UTF-8 or nesting
        raise ValueError(
            f"{path}: not the JSON of a sweep ({e.reason}); delete it, or use another --workdir"
        ) from None
    if not isinstance(manifest, dict) or not {"settings", "seeds", "overrides"} <= set(manifest):
        raise ValueError(
            f"{path}: not a sweep's manifest (expected settings, seeds, "
            f"overrides); delete it, or use another --workdir"
        )
    return manifest


def share(manifest: dict, worker: int = 0, num_workers: int = 1) -> list[tuple[dict, int]]:
    """The runs worker ``worker`` of ``num_workers`` drives: runs ``worker``,
    ``worker + num_workers``, … of :func:`plan`."""
    return [(s, seed) for i, (s, seed) in enumerate(plan(manifest)) if i % num_workers == worker]


def lock_path(workdir: str, setting: str, seed: int) -> str:
    """The lock a driver holds on run (``setting``, ``seed``): in the run's folder."""
    return os.path.join(run_dir(workdir, setting, seed), LOCK_FILE)


@contextlib.contextmanager
def driving(workdir: str, runs: list[tuple[dict, int]]):
    """Holds the lock of every run in ``runs`` (:func:`lock_path`, creating the runs'
    folders) while the block drives them; all or none: a run another driver holds is one
    ``OutputInUseError`` naming the run and that driver, and the locks taken so far are
    released."""
    with contextlib.ExitStack() as held:
        for setting, seed in runs:
            os.makedirs(run_dir(workdir, setting["name"], seed), exist_ok=True)
            path = lock_path(workdir, setting["name"], seed)
            try:
                held.enter_context(locks.exclusive(path))
            except locks.LockHeldError as e:
                raise workdir_lib.OutputInUseError(
                    f"--workdir {workdir}: run {setting['name']} seed {seed} is being driven "
                    f"by {locks.describe(e.holder)} ({path}): one driver per run (drivers "
                    f"share none only as different --worker of one --num-workers). Wait for "
                    f"it, stop it, or use another --workdir"
                ) from None
            except locks.LockUnsupportedError as e:
                raise workdir_lib.RunError(
                    f"{path}: cannot lock the sweep's run ({e}); use a --workdir on a "
                    f"filesystem with flock"
                ) from None
        yield


def _command(manifest: dict, setting: dict, seed: int, workdir: str) -> list[str]:
    sets = [f"--config.{item}" for item in manifest["overrides"]]
    return [
        sys.executable,
        TRAIN,
        "--config",
        resolve_config_path(setting["config"]),
        *sets,
        f"--config.seed={seed}",
        "--workdir",
        workdir,
    ]


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


def run_all(
    manifest: dict,
    workdir: str,
    workers: int = 1,
    worker: int = 0,
    num_workers: int = 1,
    gpus_per_worker: int = 0,
    verbose: bool = True,
) -> list[str]:
    """Runs this worker's share of the sweep, ``workers`` train.py processes at a time;
    returns the runs that failed (their workdirs)."""
    todo = share(manifest, worker, num_workers)
    queue = list(enumerate(todo, 1))
    running: dict[int, tuple] = {}  # slot -> (popen, log file, label, run dir, start)
    failed = []
    first = None  # the first run's log: the others start once it has its data ready

    def start(slot, index, setting, seed):
        directory = run_dir(workdir, setting["name"], seed)
        os.makedirs(directory, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # the log as it happens
        if gpus_per_worker:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(
                str(slot * gpus_per_worker + g) for g in range(gpus_per_worker)
            )
        log = open(os.path.join(directory, LOG), "a")
        log.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{' '.join(_command(manifest, setting, seed, directory))}\n"
        )
        log.flush()
        proc = subprocess.Popen(
            _command(manifest, setting, seed, directory),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        label = f"[{index}/{len(todo)}] {setting['name']} seed {seed}"
        running[slot] = (proc, log, label, directory, time.time())
        if verbose:
            print(f"{label}: started (log {os.path.join(directory, LOG)})", flush=True)

    def data_ready():
        """Whether the first run got past loading the data (which it may generate or
        prepare in a folder the runs share), or has ended."""
        nonlocal first
        if first is not None and (
            all(r[3] != first for r in running.values())
            or _log_says(os.path.join(first, LOG), READY_MARKS)
        ):
            first = None  # from now on, every free slot is filled
        return first is None

    try:
        while queue or running:
            for slot in range(workers):
                if slot not in running and queue and data_ready():
                    index, (setting, seed) = queue.pop(0)
                    start(slot, index, setting, seed)
                    if index == 1:
                        first = running[slot][3]
            time.sleep(0.2)
            for slot, (proc, log, label, directory, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[slot]
                if proc.returncode:
                    failed.append(directory)
                    if verbose:
                        print(
                            f"{label}: failed (exit {proc.returncode}): "
                            f"{_last_line(os.path.join(directory, LOG))}",
                            flush=True,
                        )
                elif verbose:
                    result = _read_result(directory)
                    score = f", test headline {headline(result):.2f}" if result else ""
                    print(f"{label}: done in {time.time() - t0:.0f} s{score}", flush=True)
    finally:  # interrupted: stop the runs (train.py resumes them next time)
        for proc, _log, *_ in running.values():
            proc.terminate()
        for proc, log, *_ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return failed


def _log_says(path: str, marks) -> bool:
    """Whether the last attempt logged in ``path`` printed one of ``marks``."""
    try:
        with open(path, errors="replace") as f:
            text = f.read().rsplit("\n=== ", 1)[-1]
    except OSError:
        return False
    return any(mark in text for mark in marks)


def _read_result(directory: str) -> dict | None:
    """A run's test scores (``test_metrics.json``), or None when there are none or the
    file does not read as scores (damaged: the run's train.py tests it again)."""
    try:
        result = fileio.load_json(os.path.join(directory, RESULT), "scores", require_object=True)
    except (OSError, ValueError):  # missing, or JSON, UTF-8, nesting, not an object
        return None
    scores = [result.get(k) for k in metrics.SCORE_KEYS]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
        return None
    return result


def finished_result(directory: str, num_epochs: int) -> dict | None:
    """A run's test scores, if it trained ``num_epochs`` epochs and was tested after them."""
    result = _read_result(directory)
    rows_path = os.path.join(directory, "metrics.jsonl")
    if result is None or not os.path.exists(rows_path):
        return None
    epochs = [r["epoch"] for r in fileio.read_jsonl(rows_path) if isinstance(r.get("epoch"), int)]
    if max(epochs, default=0) < num_epochs:
        return None
    if os.path.getmtime(os.path.join(directory, RESULT)) < os.path.getmtime(rows_path):
        return None  # a later epoch was trained but not yet tested (interrupted)
    return result


def summarize(workdir: str, manifest: dict | None = None) -> dict:
    """Mean ± std over seeds per setting; writes ``WORKDIR/summary.json``."""

    manifest = manifest or read_manifest(workdir)
    out = {"seeds": manifest["seeds"], "overrides": manifest["overrides"], "settings": {}}
    for setting in manifest["settings"]:
        per_seed, seeds, missing = [], [], []
        for seed in manifest["seeds"]:
            result = finished_result(run_dir(workdir, setting["name"], seed), setting["num_epochs"])
            if result is None:
                missing.append(seed)
                continue
            per_seed.append({k: float(result[k]) for k in metrics.SCORE_KEYS})
            seeds.append(seed)
        entry = {"config": setting["config"], "seeds": seeds, "missing_seeds": missing}
        if per_seed:
            heads = [headline(s) for s in per_seed]
            entry.update(
                metrics.mean_std(per_seed),
                per_seed=per_seed,
                headline={
                    "mean": float(np.mean(heads)),
                    "std": float(np.std(heads, ddof=1)) if len(heads) > 1 else 0.0,
                    "per_seed": heads,
                },
            )
        out["settings"][setting["name"]] = entry
    fileio.atomic_write_json(os.path.join(workdir, SUMMARY), out)
    return out


def format_summary(summary: dict) -> str:
    """The headline table (one row per setting), then each setting's 18 scores."""

    rows = summary["settings"]
    width = max([len("setting")] + [len(name) for name in rows]) + 2
    total = len(summary["seeds"])
    cols = [
        f"{'seg' if k.startswith('seg') else 'evt'} {metrics.SCORE_TITLES[k[4:]]}"
        for k in HEADLINE_KEYS
    ]
    lines = [
        "test scores (%), mean ± std over seeds",
        f"{'setting':<{width}}{'seeds':>7}"
        + "".join(f"{c:>13}" for c in cols)
        + f"{'headline':>15}",
    ]
    for name, entry in rows.items():
        line = f"{name:<{width}}{len(entry['seeds'])}/{total:<5}"
        if "mean" in entry:
            line += "".join(
                f"{entry['mean'][k]:>8.1f}±{entry['std'][k]:<4.1f}" for k in HEADLINE_KEYS
            )
            line += f"{entry['headline']['mean']:>9.2f}±{entry['headline']['std']:<5.2f}"
        else:
            line += "  (no finished run)"
        lines.append(line)
    lines.append("headline: the mean of segment and event Ao, Vo, AV")
    for name, entry in rows.items():
        if "mean" in entry:
            lines += ["", metrics.format_mean_std(entry, f"{name} ({len(entry['seeds'])} seeds)")]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE[:variant]",
        help="a setting (repeat for several)",
    )
    parser.add_argument(
        "--table",
        action="append",
        default=[],
        choices=sorted(TABLES),
        help="the rows of the paper's ablation Table 2, 3 or 4 (configs/ablations.py)",
    )
    parser.add_argument(
        "--options",
        default="",
        help="options appended to --table rows, e.g. 'synthetic' or 'synthetic,cmpae'",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. --set num_epochs=4",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds per setting")
    parser.add_argument(
        "--seed-start", type=int, default=None, help="first seed (default: the config's seed)"
    )
    parser.add_argument(
        "--workdir", required=True, help="the sweep's folder (one run per subfolder)"
    )
    parser.add_argument("--workers", type=int, default=1, help="runs at a time on this machine")
    parser.add_argument("--worker", type=int, default=0, help="this machine's index (0-based)")
    parser.add_argument("--num-workers", type=int, default=1, help="machines sharing the sweep")
    parser.add_argument(
        "--gpus-per-worker",
        type=int,
        default=0,
        help="give each local run its own GPUs (CUDA_VISIBLE_DEVICES)",
    )
    parser.add_argument(
        "--summarize",
        action="store_true",
        help="only aggregate the finished runs (after all workers are done)",
    )
    args = parser.parse_args(config_flags_as_set(sys.argv[1:] if argv is None else argv))
    try:
        return _main(args)
    except (ValueError, KeyError, OSError, workdir_lib.RunError) as e:
        text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {' '.join(str(text).split())}", file=sys.stderr)
        return 1


def _main(args) -> int:
    for name in ("seeds", "workers", "num_workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} = {getattr(args, name)}: expected >= 1")
    if not 0 <= args.worker < args.num_workers:
        raise ValueError(f"--worker {args.worker}: expected 0 to {args.num_workers - 1}")
    if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
        raise ValueError(f"--workdir {args.workdir}: a file, not a folder")
    if not os.path.exists(os.path.join(args.workdir, MANIFEST)):  # a sweep's own folder is
        workdir_lib.check_output(args.workdir, "--workdir", folder=True)  # a "run folder"
    else:
        workdir_lib.check_output(args.workdir, "--workdir", folder=True, own_run=True)
    os.makedirs(args.workdir, exist_ok=True)
    return _sweep(args)


def _sweep(args) -> int:
    specs = list(args.config) + table_specs(args.table, args.options)
    if specs:
        found = settings(specs, args.set)
        start = args.seed_start if args.seed_start is not None else found[0]["seed"]
        manifest = {
            "settings": found,
            "seeds": list(range(start, start + args.seeds)),
            "overrides": list(args.set),
        }
        write_manifest(args.workdir, manifest)
    elif args.summarize:
        manifest = read_manifest(args.workdir)
    else:
        raise ValueError("give at least one --config or --table (or --summarize an existing sweep)")
    failed = []
    if not args.summarize:
        runs = len(plan(manifest))
        with driving(args.workdir, share(manifest, args.worker, args.num_workers)):
            print(
                f"sweep: {len(manifest['settings'])} setting(s) x {len(manifest['seeds'])} "
                f"seed(s) = {runs} runs in {args.workdir}"
                + (f"; worker {args.worker} of {args.num_workers}" if args.num_workers > 1 else ""),
                flush=True,
            )
            failed = run_all(
                manifest,
                args.workdir,
                args.workers,
                args.worker,
                args.num_workers,
                args.gpus_per_worker,
            )
        if args.num_workers > 1:
            print(
                f"worker {args.worker} done; once every worker is, aggregate with: "
                f"python -m coleaf_jax.sweep --workdir {args.workdir} --summarize"
            )
            return 1 if failed else 0
    summary = summarize(args.workdir, manifest)
    print(format_summary(summary))
    print(f"wrote {os.path.join(args.workdir, SUMMARY)}")
    if failed:
        print(f"error: {len(failed)} run(s) failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
