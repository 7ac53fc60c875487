#!/usr/bin/env python3
"""Runs the authors' CoLeaF training (CPU-patched copy in coleaf_cpu/) on an
LLP-layout folder and writes the printed validation/test scores as JSON.

Usage (with a Python that has torch, numpy, pandas, scikit-learn, tqdm; never the
project's venv):
  git clone https://github.com/faeghehsardari/coleaf coleaf_cpu   # a36a153
  (cd coleaf_cpu && patch -p1 < tools/authors/coleaf_cpu.patch)      # CPU only, maths untouched
  run_authors.py --code coleaf_cpu --root ROOT --seed S --epochs E --out OUT.json \
      [--batch-size 128] [--log OUT.log]

ROOT holds vggish/, res152/, r2plus1d_18/ (<id>.npy per video) and the five
CSVs AVVP_train.csv, AVVP_val_pd.csv, AVVP_test_pd.csv, AVVP_eval_audio.csv,
AVVP_eval_visual.csv.  Everything else is main.py's own default (lr 5e-4,
batch 128, CMPAE Anchor + JoMoLD noise ratios from noise_ratios.npz, ...).
main.py runs with -w (no wandb) and -s (no model files).

main.py's eval prints two lines of 11 numbers (2 decimals; the last, 3):
  old: A, V, AV, Type@AV, Event@AV (segment), the same (event), mean
  new: Ao, Vo, AV, Type@AVo, Event@AVo (segment), the same (event), mean
It keeps the epoch with the highest new-line mean (ties: the later epoch),
then prints both lines for that model on the test split.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CSVS = (
    "AVVP_train.csv",
    "AVVP_val_pd.csv",
    "AVVP_test_pd.csv",
    "AVVP_eval_audio.csv",
    "AVVP_eval_visual.csv",
)
FEATS = ("vggish", "res152", "r2plus1d_18")

OLD_NAMES = ("a", "v", "av", "type", "event")
NEW_NAMES = ("ao", "vo", "av", "type_o", "event_o")
SCORE_NAMES = ("a", "ao", "v", "vo", "av", "type", "type_o", "event", "event_o")
SCORE_KEYS = tuple(f"{lvl}_{n}" for lvl in ("seg", "evt") for n in SCORE_NAMES)

_NUM = r"(?:-?\d+(?:\.\d+)?|nan|-?inf)"
METRIC_RE = re.compile(rf"^\s*{_NUM}(?:\s*,\s*{_NUM}){{10}}\s*$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
TEST_EPOCH_RE = re.compile(r"^Test Epoch: (\d+)\s*$")
BEST_RE = re.compile(r"^Best_epoch: (\d+), Best_avg: (\S+)\.\s*$")
FINAL_RE = re.compile(r"^Test the best epoch (\d+) model:\s*$")


def parse_metric_line(line, names):
    vals = [float(x) for x in line.split(",")]
    out = {}
    for i, lvl in enumerate(("seg", "evt")):
        for j, n in enumerate(names):
            out[f"{lvl}_{n}"] = vals[5 * i + j]
    out["mean"] = vals[10]
    return out


def fail(msg, log_lines):
    sys.stderr.write(f"run_authors: {msg}\n--- last lines of the log ---\n")
    sys.stderr.write("".join(log_lines[-40:]))
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--code", required=True, help="the authors' code, patched with coleaf_cpu.patch"
    )
    ap.add_argument("--root", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--log", default=None, help="full stdout+stderr of main.py (default OUT minus .json + .log)"
    )
    args = ap.parse_args()

    root = os.path.abspath(args.root)
    missing = [c for c in CSVS if not os.path.isfile(os.path.join(root, c))]
    missing += [f + "/" for f in FEATS if not os.path.isdir(os.path.join(root, f))]
    if missing:
        sys.exit(f"run_authors: {root} lacks {', '.join(missing)}")
    out_path = os.path.abspath(args.out)
    log_path = os.path.abspath(args.log or (os.path.splitext(out_path)[0] + ".log"))
    for p in (out_path, log_path):
        os.makedirs(os.path.dirname(p) or ".", exist_ok=True)

    code = os.path.abspath(args.code)
    cmd = [
        sys.executable,
        "-u",
        os.path.join(code, "main.py"),
        "-w",
        "-s",
        "--mode",
        "train",
        "--seed",
        str(args.seed),
        "--epochs",
        str(args.epochs),
        "-b",
        str(args.batch_size),
        "--audio_dir",
        os.path.join(root, "vggish") + "/",
        "--video_dir",
        os.path.join(root, "res152") + "/",
        "--st_dir",
        os.path.join(root, "r2plus1d_18") + "/",
        "--label_train",
        os.path.join(root, "AVVP_train.csv"),
        "--label_val",
        os.path.join(root, "AVVP_val_pd.csv"),
        "--label_test",
        os.path.join(root, "AVVP_test_pd.csv"),
        "--eval_audio",
        os.path.join(root, "AVVP_eval_audio.csv"),
        "--eval_video",
        os.path.join(root, "AVVP_eval_visual.csv"),
        "--noise_ratio_file",
        os.path.join(code, "noise_ratios.npz"),
    ]
    env = dict(
        os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"
    )

    epochs = {}  # epoch -> {"old", "new", "elapsed_s"}
    pending = []  # metric lines since the last marker
    cur_epoch = None  # epoch whose validation lines are being printed
    in_final = False
    best_printed = None
    final_epoch = None
    test_lines = []
    log_lines = []
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd,
            cwd=code,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        try:
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                log_lines.append(raw)
                if len(log_lines) > 400:
                    del log_lines[:200]
                line = ANSI_RE.sub("", raw).rstrip("\n")
                if m := TEST_EPOCH_RE.match(line):
                    cur_epoch, pending = int(m.group(1)), []
                    print(
                        f"[{time.time() - t0:7.1f}s] epoch {cur_epoch} trained; validating",
                        flush=True,
                    )
                elif METRIC_RE.match(line):
                    if in_final:
                        test_lines.append(line)
                    elif cur_epoch is not None:
                        pending.append(line)
                elif m := BEST_RE.match(line):
                    if cur_epoch is None or len(pending) != 2:
                        fail(
                            f"expected 2 validation lines before '{line}', got {len(pending)}",
                            log_lines,
                        )
                    epochs[cur_epoch] = {
                        "old": pending[0],
                        "new": pending[1],
                        "elapsed_s": round(time.time() - t0, 1),
                    }
                    best_printed = int(m.group(1))
                    print(
                        f"[{time.time() - t0:7.1f}s] epoch {cur_epoch} val new-mean "
                        f"{pending[1].split(',')[-1].strip()}  (best so far: epoch {best_printed})",
                        flush=True,
                    )
                    cur_epoch, pending = None, []
                elif m := FINAL_RE.match(line):
                    in_final, final_epoch = True, int(m.group(1))
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            raise
        rc = proc.wait()
    seconds = time.time() - t0

    if rc != 0:
        fail(f"main.py exited with status {rc} (log: {log_path})", log_lines)
    if sorted(epochs) != list(range(1, args.epochs + 1)):
        fail(
            f"validation lines found for epochs {sorted(epochs)}, expected 1..{args.epochs}",
            log_lines,
        )
    if final_epoch is None or len(test_lines) != 2:
        fail(
            f"final test lines not found (best epoch {final_epoch}, {len(test_lines)} lines)",
            log_lines,
        )
    if final_epoch != best_printed:
        fail(
            f"final 'Test the best epoch {final_epoch}' disagrees with last 'Best_epoch: {best_printed}'",
            log_lines,
        )

    warnings = []
    val_per_epoch = []
    for e in range(1, args.epochs + 1):
        old = parse_metric_line(epochs[e]["old"], OLD_NAMES)
        new = parse_metric_line(epochs[e]["new"], NEW_NAMES)
        for lvl in ("seg", "evt"):
            if not math.isclose(old[f"{lvl}_av"], new[f"{lvl}_av"], abs_tol=1e-9):
                warnings.append(
                    f"val epoch {e}: {lvl} AV differs between old ({old[f'{lvl}_av']}) "
                    f"and new ({new[f'{lvl}_av']}) lines"
                )
        val_per_epoch.append(
            {
                "epoch": e,
                "old": old,
                "new": new,
                "selection": new["mean"],
                "elapsed_s": epochs[e]["elapsed_s"],
            }
        )

    t_old = parse_metric_line(test_lines[0], OLD_NAMES)
    t_new = parse_metric_line(test_lines[1], NEW_NAMES)
    for lvl in ("seg", "evt"):
        if not math.isclose(t_old[f"{lvl}_av"], t_new[f"{lvl}_av"], abs_tol=1e-9):
            warnings.append(f"test: {lvl} AV differs between old and new lines")
    test = {}
    for k in SCORE_KEYS:
        name = k[4:]
        test[k] = t_old[k] if name in OLD_NAMES else t_new[k]
    mean_ao_vo_av = (
        sum(test[k] for k in ("seg_ao", "seg_vo", "seg_av", "evt_ao", "evt_vo", "evt_av")) / 6.0
    )

    result = {
        "seed": args.seed,
        "epochs": args.epochs,
        "root": root,
        "batch_size": args.batch_size,
        "best_epoch": final_epoch,
        "seconds": round(seconds, 1),
        "seconds_per_epoch": round(val_per_epoch[-1]["elapsed_s"] / args.epochs, 1),
        "val_per_epoch": val_per_epoch,
        "test": test,
        "test_old_mean": t_old["mean"],
        "test_new_mean": t_new["mean"],
        "mean_ao_vo_av": mean_ao_vo_av,
        "precision_note": "scores are parsed from main.py's printout: 2 decimals (means: 3)",
        "warnings": warnings,
        "log": log_path,
        "command": cmd,
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)

    print(
        f"\nauthors' CoLeaF  root={root}  seed={args.seed}  epochs={args.epochs}  "
        f"{seconds:.0f}s ({result['seconds_per_epoch']:.0f}s/epoch incl. validation)"
    )
    print(
        "val new-line mean per epoch: "
        + ", ".join(f"{v['epoch']}:{v['selection']:.2f}" for v in val_per_epoch)
        + f"  -> best epoch {final_epoch}"
    )
    print("test (best epoch):")
    for lvl, title in (("seg", "segment"), ("evt", "event  ")):
        print(f"  {title} " + "  ".join(f"{n}={test[f'{lvl}_{n}']:.2f}" for n in SCORE_NAMES))
    print(f"  mean(Ao, Vo, AV; seg+evt) = {mean_ao_vo_av:.2f}")
    for w in warnings:
        print("WARNING: " + w)
    print(f"wrote {out_path} (log {log_path})")


if __name__ == "__main__":
    main()
