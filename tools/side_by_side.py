"""The side-by-side table of docs/fidelity.md: the authors' code and ours, several seeds each.

    python tools/side_by_side.py --authors runs/authors/seed*.json --ours runs/ours/seeds_metrics.json

``--authors``: the JSON files of ``tools/authors/run_authors.py`` (one per seed);
``--ours``: ``seeds_metrics.json`` of ``train.py --config.num_seeds=K`` (or, for runs
made one seed at a time, several ``test_metrics.json`` with ``--ours-workdirs``).
Prints markdown: the 18 test scores (mean ± std over seeds) side by side, the
headline (mean of segment and event Ao, Vo, AV) per seed and its mean, the
largest per-score difference, and the validation curves (the selection score
of every epoch: mean of the 10 new metrics, as the authors' ``main.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from coleaf_jax.evaluation.metrics import SCORE_KEYS  # noqa: E402

HEADLINE = ("seg_ao", "seg_vo", "seg_av", "evt_ao", "evt_vo", "evt_av")


def headline(scores: dict) -> float:
    return float(np.mean([scores[k] for k in HEADLINE]))


def load_authors(paths):
    runs = [json.load(open(p)) for p in paths]
    tests = [r["test"] for r in runs]
    curves = [[e["selection"] for e in r["val_per_epoch"]] for r in runs]
    return [r["seed"] for r in runs], tests, curves, [r["best_epoch"] for r in runs]


def load_ours(path, workdirs=(), log=None):
    if workdirs:
        tests = [json.load(open(os.path.join(w, "test_metrics.json"))) for w in workdirs]
        curves = []
        for w in workdirs:
            rows = [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
            curves.append([r["val_selection"] for r in sorted(rows, key=lambda r: r["epoch"])])
        return (
            [t.get("seed", i) for i, t in enumerate(tests)],
            tests,
            curves,
            [t["epoch"] for t in tests],
        )
    result = json.load(open(path))
    curves = result.get("val_selection_per_epoch")
    if curves is None and log:  # runs before the curves were stored: the printed ones
        lines = [m.group(1) for m in re.finditer(r"val selection ([0-9., ]+)\n", open(log).read())]
        curves = [list(c) for c in zip(*[[float(x) for x in line.split(",")] for line in lines])]
    return result["seeds"], result["per_seed"], curves or [], result["best_epochs"]


def mean_std(values):
    values = np.asarray(values, float)
    return values.mean(), (values.std(ddof=1) if len(values) > 1 else 0.0)


def table(authors, ours) -> str:
    a_seeds, a_tests, a_curves, a_best = authors
    o_seeds, o_tests, o_curves, o_best = ours
    out = [
        f"| score | authors' code ({len(a_tests)} seeds) | ours ({len(o_tests)} seeds) | ours − theirs |",
        "|---|---|---|---|",
    ]
    diffs = {}
    for k in SCORE_KEYS:
        am, asd = mean_std([t[k] for t in a_tests])
        om, osd = mean_std([t[k] for t in o_tests])
        diffs[k] = om - am
        out.append(f"| {k} | {am:.2f} ± {asd:.2f} | {om:.2f} ± {osd:.2f} | {om - am:+.2f} |")
    ah, ahs = mean_std([headline(t) for t in a_tests])
    oh, ohs = mean_std([headline(t) for t in o_tests])
    out.append(
        f"| **mean of seg/evt Ao, Vo, AV** | **{ah:.2f} ± {ahs:.2f}** | **{oh:.2f} ± {ohs:.2f}** "
        f"| **{oh - ah:+.2f}** |"
    )
    worst = max(diffs, key=lambda k: abs(diffs[k]))
    out += [
        "",
        f"Largest difference of one score: {worst} {diffs[worst]:+.2f}.",
        "",
        "Per seed (headline; best epoch on validation):",
        "",
        "| | " + " | ".join(f"seed {s}" for s in a_seeds) + " |",
        "|---|" + "---|" * len(a_seeds),
        "| authors' code | "
        + " | ".join(f"{headline(t):.2f} (epoch {b})" for t, b in zip(a_tests, a_best))
        + " |",
        "",
        "| | " + " | ".join(f"seed {s}" for s in o_seeds) + " |",
        "|---|" + "---|" * len(o_seeds),
        "| ours | "
        + " | ".join(f"{headline(t):.2f} (epoch {b})" for t, b in zip(o_tests, o_best))
        + " |",
    ]
    if a_curves and o_curves:
        n = max(max(len(c) for c in a_curves), max(len(c) for c in o_curves))
        out += [
            "",
            "Validation selection score per epoch (mean over seeds; min-max):",
            "",
            "| epoch | " + " | ".join(str(e + 1) for e in range(n)) + " |",
            "|---|" + "---|" * n,
        ]
        for name, curves in (("authors' code", a_curves), ("ours", o_curves)):
            cells = []
            for e in range(n):
                vals = [c[e] for c in curves if len(c) > e]
                cells.append(
                    f"{np.mean(vals):.1f} ({min(vals):.1f}-{max(vals):.1f})" if vals else "–"
                )
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--authors", nargs="+", required=True)
    parser.add_argument("--ours", help="seeds_metrics.json")
    parser.add_argument("--ours-workdirs", nargs="*", default=())
    parser.add_argument("--ours-log", help="the train.py log, for curves not stored in the JSON")
    args = parser.parse_args(argv)
    print(
        table(load_authors(args.authors), load_ours(args.ours, args.ours_workdirs, args.ours_log))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
