"""Where a run's time went, from its own records (``metrics.jsonl``, ``test_metrics.json``).

    python tools/time_to_result.py WORKDIR [WORKDIR ...] [--json OUT]

Phases: loading the data (preparing it on a first run), set-up (initialising the
models, putting the training split on the device), compiling (from there to the
first training step's result: the step's compilation and one step),
training (every epoch's steps, the first step excepted), validation (every epoch;
the first includes compiling the evaluation programs), saving checkpoints and the
rest of the loop, and the final test (restoring the best checkpoint, predicting,
scoring). The phases add up to the run's own ``run_seconds`` (the process's start-up
and imports come before it: time the command for the whole wall clock).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def phases(workdir: str) -> dict[str, float]:
    """``{phase: seconds}`` of the run in ``workdir`` (a finished run, trained in one go)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(workdir, "test_metrics.json")) as f:
        result = json.load(f)
    if not rows or "data_seconds" not in rows[0]:
        raise ValueError(f"{workdir}: no timing of the run's start (a resumed run?)")
    first = rows[0]
    data = first["data_seconds"]
    setup = first.get("setup_seconds", 0.0)
    compiling = first["first_step_seconds"] - data - setup
    training = sum(r["train_seconds"] for r in rows) - compiling
    validation_first = first["val_seconds"]
    validation_rest = sum(r["val_seconds"] for r in rows[1:])
    test = result["test_seconds"]
    total = result["run_seconds"]
    loop = data + setup + compiling + training + validation_first + validation_rest + test
    later = {2: "validation, epoch 2"}.get(len(rows), f"validation, epochs 2-{len(rows)}")
    return {
        "loading": data,
        "set-up (initialisation, data to device)": setup,
        "compiling (first step)": compiling,
        f"training ({len(rows)} epoch{'s' if len(rows) > 1 else ''})": training,
        "validation, epoch 1 (compiling)": validation_first,
        **({later: validation_rest} if len(rows) > 1 else {}),
        "saving, rest of the loop": total - loop,
        "test": test,
        "run": total,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--json", help="also write {workdir: phases} here")
    args = parser.parse_args(argv)
    table = {}
    for workdir in args.workdirs:
        try:
            table[workdir] = phases(workdir)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {workdir}: {e}", file=sys.stderr)
            return 1
    for workdir, row in table.items():
        print(f"{workdir}:")
        for name, seconds in row.items():
            share = f"{100 * seconds / row['run']:5.1f} %" if name != "run" else ""
            print(f"  {name:<40} {seconds:8.1f} s  {share}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
