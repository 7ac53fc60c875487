#!/usr/bin/env python3
"""Runs VALOR's own training and test (``main_avvp.py`` of a checkout of
github.com/Franklin905/VALOR at 2677da9) on an LLP-layout folder, on CPU, and writes
the printed validation and test scores as JSON; ``table`` compares them with ours.

Usage (``run``: a Python with torch, numpy, pandas and prettytable, never the project's
venv; ``table``: any Python 3)::

  git clone https://github.com/Franklin905/VALOR VALOR && git -C VALOR checkout 2677da9
  /tmp/torch/bin/pip install prettytable
  run_valor.py run --code VALOR --root ROOT --epochs E --out OUT.json \\
      [--seed 1000] [--warm-up-epoch W] [--log OUT.log] [--keep DIR]
  run_valor.py table --valor OUT.json --ours RUN/seeds_metrics.json   # or RUN/test_metrics.json

ROOT is what ``python -m coleaf_jax.data.synthetic ROOT`` writes (or LLP's features):
``vggish/``, ``res152/``, ``r2plus1d_18/``, ``CLAP/segment_pseudo_labels/``,
``CLIP/segment_pseudo_labels/`` (``<id>.npy`` each) and the five CSVs
``AVVP_train.csv``, ``AVVP_val_pd.csv``, ``AVVP_test_pd.csv``, ``AVVP_eval_audio.csv``,
``AVVP_eval_visual.csv``.

What runs: ``scripts/train_valor.sh``'s options, all of them, except ``--epochs E`` and
``--warm_up_epoch W`` (the script's 10 of 60; by default ``W = max(1, round(10 E / 60))``,
the scaling of ``configs/valor.py:synthetic``: 2 of 12) and the feature, CSV and
pseudo-label paths (``./data/<folder>``, ``data`` being ROOT); then
``scripts/test_valor.sh``'s options (``--mode test``, which loads
``models/<model_name>/checkpoint_best.pt``: the epoch of the best validation
``Seg-type``, strictly greater, so a tie keeps the earlier epoch). Both in a temporary
directory (``--keep DIR``: that one, kept) holding ``data -> ROOT`` and ``models/``.

Patches, all in memory (the checkout is read, never written), none to the maths:

1. ``wandb``: an empty stub module (``main_avvp.py`` imports it; ``--use_wandb`` is not
   passed, so nothing of it is used).
2. ``dataloader_avvp.py``: ``row[0]`` -> ``row.iloc[0]`` (twice), ``row[-1]`` ->
   ``row.iloc[-1]`` (positional access to a Series with a string index, which pandas >= 3 reads as a
   label: ``KeyError: 0``); the module is compiled from the patched text under its own
   name. Data-loader workers are forked, so they inherit it (the start method is set to
   ``fork``, Linux's default before Python 3.14).
3. The working directory: ``main_avvp.py``'s ``eval`` reads the dense ground truth from
   the hard-coded ``./data`` and saves models under ``models/``; the temporary directory
   above provides both. The feature paths are given relative (``./data/vggish``, ...):
   ``main_avvp.py`` switches its input sizes when a path contains ``CLAP`` or ``CLIP``,
   which an absolute ROOT might.

Nothing else: the device is ``main_avvp.py``'s own ``cuda if available else cpu``
(``cpu`` here), ``prettytable`` is the real package, ``main_network.py`` and
``utils/eval_metrics.py`` are imported from the checkout unchanged.

What ``main_avvp.py`` prints, and what is parsed: in train mode, one line per epoch
``Epoch[e/E](Time:..)(lr:..) Train Loss: .. Val Loss: ..  Val F: <Seg-type>`` (3
decimals: its only validation score per epoch, and its selection criterion), then
``Best F scores (at epoch N):`` and a table of the 10 validation scores of that epoch;
in test mode a table of the 10 test scores of the best checkpoint (2 decimals). The 10
are HAN's metrics (segment and event level: audio, visual, audio-visual, Type@AV,
Event@AV), ``seg_a ... evt_event`` in our names; VALOR prints none of the 8 "new" (only
and Type/Event@AVo) scores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

CSVS = (
    "AVVP_train.csv",
    "AVVP_val_pd.csv",
    "AVVP_test_pd.csv",
    "AVVP_eval_audio.csv",
    "AVVP_eval_visual.csv",
)
FOLDERS = (
    "vggish",
    "res152",
    "r2plus1d_18",
    "CLAP/segment_pseudo_labels",
    "CLIP/segment_pseudo_labels",
)
# VALOR's table columns -> our score names (coleaf_jax.evaluation.metrics.SCORE_KEYS).
COLUMNS = {
    "Seg-a": "seg_a",
    "Seg-v": "seg_v",
    "Seg-av": "seg_av",
    "Seg-type": "seg_type",
    "Seg-event": "seg_event",
    "Event-a": "evt_a",
    "Event-v": "evt_v",
    "Event-av": "evt_av",
    "Event-type": "evt_type",
    "Event-event": "evt_event",
}
MODEL_NAME = "model_VALOR_reproduce"  # scripts/train_valor.sh's --model_name

# scripts/train_valor.sh, in its order (paths and --epochs/--warm_up_epoch set below).
TRAIN_OPTIONS = [
    "--seed", "{seed}", "--mode", "train", "--model", "MMIL_Net", "--model_name", MODEL_NAME,
    "--batch_size", "64", "--epochs", "{epochs}",
    "--audio_dir", "./data/vggish", "--video_dir", "./data/res152",
    "--st_dir", "./data/r2plus1d_18", "--label_train", "./data/AVVP_train.csv",
    "--label_val", "./data/AVVP_val_pd.csv", "--label_test", "./data/AVVP_test_pd.csv",
    "--optimizer", "adamw", "--weight_decay", "1e-3", "--scheduler", "warm_up_cos_anneal",
    "--warm_up_epoch", "{warm_up_epoch}", "--grad_norm", "1.0", "--lr", "1e-4",
    "--lr_min", "1e-6", "--beta1", "0.5", "--eps", "1e-8", "--hidden_dim", "512",
    "--nhead", "8", "--ff_dim", "1024", "--num_layers", "1", "--norm_where", "post_norm",
    "--v_pseudo_data_dir", "./data/CLIP/segment_pseudo_labels",
    "--a_pseudo_data_dir", "./data/CLAP/segment_pseudo_labels",
]  # fmt: skip
# scripts/test_valor.sh (its --model_name is the released model's; here the trained one).
TEST_OPTIONS = [
    "--mode", "test", "--model", "MMIL_Net", "--model_name", MODEL_NAME,
    "--audio_dir", "./data/vggish", "--video_dir", "./data/res152",
    "--st_dir", "./data/r2plus1d_18", "--label_train", "./data/AVVP_train.csv",
    "--label_val", "./data/AVVP_val_pd.csv", "--label_test", "./data/AVVP_test_pd.csv",
    "--hidden_dim", "512", "--nhead", "8", "--ff_dim", "1024", "--num_layers", "1",
    "--norm_where", "post_norm",
    "--v_pseudo_data_dir", "./data/CLIP/segment_pseudo_labels",
    "--a_pseudo_data_dir", "./data/CLAP/segment_pseudo_labels",
]  # fmt: skip

EPOCH_RE = re.compile(
    r"^Epoch\[(\d+)/(\d+)\]\(Time:([\d.]+) sec\)\(lr:([\d.eE+-]+)\) "
    r"Train Loss: (\S+) Val Loss: (\S+)\s+Val F: (\S+)\s*$"
)
BEST_RE = re.compile(r"^Best F scores \(at epoch (\d+)\):\s*$")
# (old, new, occurrences): LLP_dataset.__getitem__'s name, labels and video_name.
DATALOADER_PATCH = (("row[0]", "row.iloc[0]", 2), ("row[-1]", "row.iloc[-1]", 1))


def default_warm_up(epochs: int) -> int:
    """train_valor.sh's 10 of 60 warm-up epochs scaled to ``epochs`` (configs/valor.py:
    synthetic's 2 of 12)."""
    return max(1, round(10 * epochs / 60))


# ----------------------------------------------------------------------------- _exec
# The child process: patches in memory, then main_avvp.py as __main__.


def _exec(code: str, argv: list[str]) -> None:
    import multiprocessing
    import runpy
    import types

    multiprocessing.set_start_method("fork", force=True)  # workers inherit the patches
    sys.modules["wandb"] = types.ModuleType("wandb")  # patch 1
    path = os.path.join(code, "dataloader_avvp.py")  # patch 2
    text = open(path).read()
    for old, new, count in DATALOADER_PATCH:
        if text.count(old) != count:
            sys.exit(f"run_valor: expected {count} '{old}' in {path}, found {text.count(old)}")
        text = text.replace(old, new)
    loader = types.ModuleType("dataloader_avvp")
    loader.__file__ = path
    exec(compile(text, path, "exec"), loader.__dict__)  # noqa: S102
    sys.modules["dataloader_avvp"] = loader
    sys.path.insert(0, code)  # main_network, utils.eval_metrics: unchanged
    sys.argv = [os.path.join(code, "main_avvp.py"), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


# ----------------------------------------------------------------------------- run


def _stream(cmd, cwd, env, log, t0, on_line):
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tail = []
    try:
        for raw in proc.stdout:
            log.write(raw)
            log.flush()
            tail = (tail + [raw])[-60:]
            on_line(raw.rstrip("\n"), time.time() - t0)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    rc = proc.wait()
    if rc != 0:
        sys.stderr.write("".join(tail))
        sys.exit(f"run_valor: {' '.join(cmd[:4])} ... exited with status {rc}")


def parse_table(lines: list[str]) -> tuple[str, dict[str, float]]:
    """The one-row prettytable of ``get_evaluation_result_table``: (mode, scores)."""
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    rows = [r for r in rows if len(r) == 11]
    if len(rows) < 2 or rows[0][0] != "Dataset":
        raise ValueError(f"no score table in {lines!r}")
    header, values = rows[0], rows[1]
    return values[0], {COLUMNS[h]: float(v) for h, v in zip(header[1:], values[1:])}


def run(args) -> None:
    root = os.path.abspath(args.root)
    missing = [c for c in CSVS if not os.path.isfile(os.path.join(root, c))]
    missing += [f + "/" for f in FOLDERS if not os.path.isdir(os.path.join(root, f))]
    if missing:
        sys.exit(f"run_valor: {root} lacks {', '.join(missing)}")
    code = os.path.abspath(args.code)
    for f in ("main_avvp.py", "main_network.py", "dataloader_avvp.py", "utils/eval_metrics.py"):
        if not os.path.isfile(os.path.join(code, f)):
            sys.exit(f"run_valor: {code} has no {f} (a VALOR checkout?)")
    warm_up = args.warm_up_epoch if args.warm_up_epoch is not None else default_warm_up(args.epochs)
    if not 0 < warm_up < args.epochs:  # lr_warm_up_cos_anneal divides by epochs - warm-up
        sys.exit(f"run_valor: needs 0 < warm-up epochs ({warm_up}) < epochs ({args.epochs})")
    out_path = os.path.abspath(args.out)
    log_path = os.path.abspath(args.log or (os.path.splitext(out_path)[0] + ".log"))
    for p in (out_path, log_path):
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)

    if args.keep:
        work = os.path.abspath(args.keep)
        if os.path.exists(os.path.join(work, "models", MODEL_NAME)):
            sys.exit(f"run_valor: {work}/models/{MODEL_NAME} exists (main_avvp.py refuses it)")
        os.makedirs(os.path.join(work, "models"), exist_ok=True)
    else:
        work = tempfile.mkdtemp(prefix="run_valor_")
        os.makedirs(os.path.join(work, "models"))
    data = os.path.join(work, "data")
    if os.path.lexists(data):
        os.remove(data)
    os.symlink(root, data)

    fill = {"seed": str(args.seed), "epochs": str(args.epochs), "warm_up_epoch": str(warm_up)}
    train_argv = [a.format(**fill) for a in TRAIN_OPTIONS]
    me = os.path.abspath(__file__)
    base = [sys.executable, "-u", me, "_exec", code, "--"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(args.threads))

    epochs, best_lines, test_lines = {}, [], []
    state = {"best": None, "in_best": False}

    def on_train(line, t):
        if m := EPOCH_RE.match(line):
            e = int(m.group(1))
            epochs[e] = {
                "epoch": e,
                "lr": float(m.group(4)),
                "train_loss": float(m.group(5)),
                "val_loss": float(m.group(6)),
                "seg_type": float(m.group(7)),  # its selection score
                "epoch_s": float(m.group(3)),
                "elapsed_s": round(t, 1),
            }
            print(
                f"[{t:7.1f}s] epoch {e}/{args.epochs} lr {m.group(4)} train loss {m.group(5)} "
                f"val Seg-type {m.group(7)}",
                flush=True,
            )
        elif m := BEST_RE.match(line):
            state["best"], state["in_best"] = int(m.group(1)), True
        elif state["in_best"] and line.startswith(("+", "|")):
            best_lines.append(line)

    def on_test(line, t):
        if line.startswith(("+", "|")):
            test_lines.append(line)

    t0 = time.time()
    try:
        with open(log_path, "w") as log:
            _stream(base + train_argv, work, env, log, t0, on_train)
            t_train = time.time() - t0
            _stream(base + TEST_OPTIONS, work, env, log, t0, on_test)
        seconds = time.time() - t0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if sorted(epochs) != list(range(1, args.epochs + 1)):
        sys.exit(f"run_valor: epoch lines for {sorted(epochs)}, expected 1..{args.epochs}")
    best = state["best"]
    mode, val_best = parse_table(best_lines)
    mode_t, test = parse_table(test_lines)
    if (mode, mode_t) != ("Val", "Test"):
        sys.exit(f"run_valor: tables {mode!r}, {mode_t!r}: expected 'Val', 'Test'")
    warnings = []
    curve = [epochs[e]["seg_type"] for e in sorted(epochs)]
    first_max = 1 + curve.index(max(curve))  # VALOR keeps the first epoch of the maximum
    if first_max != best:
        warnings.append(
            f"best epoch {best} is not the first maximum of the printed Seg-type "
            f"({first_max}): a tie at 3 decimals?"
        )
    if not math.isclose(val_best["seg_type"], epochs[best]["seg_type"], abs_tol=0.006):
        warnings.append("the best epoch's table disagrees with its printed Seg-type")

    result = {
        "code": code,
        "root": root,
        "seed": args.seed,
        "epochs": args.epochs,
        "warm_up_epoch": warm_up,
        "batch_size": 64,
        "best_epoch": best,
        "seconds": round(seconds, 1),
        "seconds_train": round(t_train, 1),
        "val_per_epoch": [epochs[e] for e in sorted(epochs)],
        "val_best": val_best,
        "test": test,
        "precision_note": "parsed from main_avvp.py's printout: tables 2 decimals, "
        "per-epoch Seg-type 3",
        "warnings": warnings,
        "log": log_path,
        "train_argv": train_argv,
        "test_argv": TEST_OPTIONS,
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    print(
        f"\nVALOR's main_avvp.py  root={root}  seed={args.seed}  epochs={args.epochs} "
        f"(warm-up {warm_up})  {seconds:.0f}s (train+val {t_train:.0f}s)"
    )
    print("val Seg-type per epoch: " + ", ".join(f"{e}:{c:.2f}" for e, c in enumerate(curve, 1)))
    print(f"test (best epoch {best}): " + "  ".join(f"{k}={v:.2f}" for k, v in test.items()))
    for w in warnings:
        print("WARNING: " + w)
    print(f"wrote {out_path} (log {log_path})")


# ----------------------------------------------------------------------------- table


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def table(args) -> None:
    valor = [json.load(open(p)) for p in args.valor]
    ours = json.load(open(args.ours))
    if "per_seed" in ours:  # seeds_metrics.json
        o_tests, o_seeds = ours["per_seed"], ours["seeds"]
        o_best, o_curves = ours["best_epochs"], ours.get("val_selection_per_epoch") or []
    else:  # test_metrics.json of a one-seed run
        o_tests, o_seeds, o_best, o_curves = [ours], [ours.get("seed", "?")], [ours["epoch"]], []
    v_tests = [r["test"] for r in valor]
    nv, no = len(v_tests), len(o_tests)
    print(
        f"| score | VALOR's code ({nv} seed{'s' * (nv > 1)}) | ours ({no} seeds) | ours − theirs |"
    )
    print("|---|---|---|---|")
    keys = list(COLUMNS.values())
    for k in keys + ["mean"]:
        vv = [sum(t[c] for c in keys) / len(keys) for t in v_tests] if k == "mean" else None
        vv = vv or [t[k] for t in v_tests]
        ov = [sum(t[c] for c in keys) / len(keys) for t in o_tests] if k == "mean" else None
        ov = ov or [t[k] for t in o_tests]
        (vm, vs), (om, osd) = _mean_std(vv), _mean_std(ov)
        name = "**mean of the 10**" if k == "mean" else k
        vtxt = f"{vm:.2f}" + (f" ± {vs:.2f}" if nv > 1 else "")
        otxt = f"{om:.2f}" + (f" ± {osd:.2f}" if no > 1 else "")
        otxt += f" ({', '.join(f'{x:.2f}' for x in ov)})" if no > 1 else ""
        print(f"| {name} | {vtxt} | {otxt} | {om - vm:+.2f} |")
    print()
    epochs = max(len(r["val_per_epoch"]) for r in valor)
    head = " | ".join(str(e) for e in range(1, epochs + 1))
    print(f"| validation Seg-type per epoch (best epoch) | {head} |")
    print("|---" * (epochs + 1) + "|")
    for r in valor:
        row = " | ".join(f"{e['seg_type']:.1f}" for e in r["val_per_epoch"])
        print(f"| VALOR's code, seed {r['seed']} ({r['best_epoch']}) | {row} |")
    for s, b, c in zip(o_seeds, o_best, o_curves):
        print(f"| ours, seed {s} ({b}) | " + " | ".join(f"{x:.1f}" for x in c) + " |")


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "_exec" and sys.argv[3] == "--":
        _exec(sys.argv[2], sys.argv[4:])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="VALOR's training and test on ROOT")
    r.add_argument("--code", required=True, help="a VALOR checkout (2677da9)")
    r.add_argument("--root", required=True, help="the LLP-layout folder")
    r.add_argument("--epochs", type=int, required=True)
    r.add_argument("--out", required=True, help="the JSON to write")
    r.add_argument("--seed", type=int, default=1000, help="train_valor.sh's 1000")
    r.add_argument(
        "--warm-up-epoch", type=int, default=None, help="default max(1, round(10 E / 60))"
    )
    r.add_argument("--log", default=None, help="main_avvp.py's output (default OUT.log)")
    r.add_argument("--keep", default=None, help="run in DIR and keep it (checkpoints)")
    r.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS (default 2)")
    t = sub.add_parser("table", help="markdown: VALOR's test scores against ours")
    t.add_argument("--valor", nargs="+", required=True, help="JSON files of `run`")
    t.add_argument("--ours", required=True, help="seeds_metrics.json or test_metrics.json")
    args = ap.parse_args()
    run(args) if args.command == "run" else table(args)


if __name__ == "__main__":
    main()
