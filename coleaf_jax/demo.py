"""End-to-end demo on the embedded synthetic dataset (``make demo``).

    python -m coleaf_jax.demo [--workdir runs/demo] [--seed S] [--epochs N] [--config.KEY=VALUE ...]

1. writes a synthetic dataset in the LLP layout under WORKDIR/data (once; another
   ``--seed`` writes other data, WORKDIR/data_seed<S>, and trains other runs),
2. prepares it with the TFDS builder and loads the splits (cached),
3. trains the plain HAN baseline, CoLeaF with the HAN Anchor and CoLeaF with
   the CMPAE Anchor (the paper's best setting) with ``configs/synthetic.py``,
   each in WORKDIR/<variant> with checkpoints,
4. prints their 18-score test tables next to a training-free baseline,
5. trains CoLeaF (HAN Anchor) on a variable-length synthetic set in the
   UnAV-100 layout (``configs/unav100.py:synthetic``) and prints its AV scores,
6. writes the HTML report of the CoLeaF (CMPAE) run (curves, tables,
   per-class scores, timelines) and prints its path.

The same runs from the command line:
``python train.py --config configs/synthetic.py:<variant> --workdir WORKDIR/<variant>``
with variant ``han``, ``coleaf_han`` or ``coleaf_cmpae``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from coleaf_jax import cli
from coleaf_jax.config import apply_overrides, config_flags_as_set, load_config_file
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import baselines, metrics, report
from coleaf_jax.training.train import train_and_evaluate

HEADLINE = ("seg_ao", "seg_vo", "seg_av", "evt_ao", "evt_vo", "evt_av")
# The headline of each row with --seed 0, 1, 2 (2 cores, 2026-12-06; docs/synthetic.md).
SEED_SPREAD = {
    "ridge MIL": (34.9, 40.0, 38.9),
    "HAN": (41.1, 44.9, 41.8),
    "CoLeaF (HAN)": (37.5, 46.3, 37.0),
    "CoLeaF (CMPAE)": (50.7, 54.1, 48.7),
}


def headline(scores: dict) -> float:
    """Mean of Ao, Vo and AV at segment and event level (what CoLeaF targets)."""
    return float(np.mean([scores[k] for k in HEADLINE]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=None, help="override config.num_epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every run (also --config.KEY=VALUE), e.g. a smaller "
        "model.d_model or data.synthetic_videos for a quick check",
    )
    args = parser.parse_args(config_flags_as_set(sys.argv[1:] if argv is None else argv))
    cli.quiet_libraries()

    t0 = time.time()
    configs = {
        "HAN": load_config_file("configs/synthetic.py:han"),
        "CoLeaF (HAN)": load_config_file("configs/synthetic.py:coleaf_han"),
        "CoLeaF (CMPAE)": load_config_file("configs/synthetic.py:coleaf_cmpae"),
    }
    suffix = f"_seed{args.seed}" if args.seed else ""  # another seed: other data, other runs
    for c in configs.values():
        c.seed = args.seed
        c.data.synthetic_seed = args.seed
        c.data.root = os.path.join(args.workdir, "data" + suffix)
        if args.epochs:
            c.num_epochs = args.epochs
        apply_overrides(c, args.set)
    cli.setup_jax(configs["HAN"])  # the compilation cache: a second demo compiles nothing
    # Raw frames (T*8 per video): CMPAE needs them, HAN pools them itself (exactly).
    data = pipeline.load_splits(configs["HAN"], args.workdir, pool_frames=False)
    sizes = ", ".join(f"{split} {len(d['label'])}" for split, d in data.items())
    print(f"data ready: {sizes} videos ({time.time() - t0:.0f}s)")

    test = data["test"]
    probs = baselines.ridge_mil(data["train"], test)
    pred = metrics.binarize(
        probs["seg_prob_a"], probs["seg_prob_v"], probs["video_prob_a"], probs["video_prob_v"]
    )
    rows = {"ridge MIL": metrics.avvp_scores(*pred, test["label_audio"], test["label_visual"])}
    for name, config in configs.items():
        print(f"\n== training {name} ({config.name}) ==")
        workdir = os.path.join(args.workdir, config.name.removesuffix("_synthetic") + suffix)
        result = train_and_evaluate(config, workdir, data=data)
        rows[name] = {k: result[k] for k in metrics.SCORE_KEYS}

    print("\n" + metrics.format_table(rows, title="synthetic test (%)"))
    print(
        "\nmean of Ao, Vo, AV (segment and event): "
        + ", ".join(f"{name} {headline(s):.1f}" for name, s in rows.items())
    )
    print(
        "over the seeds 0, 1, 2 (data and training; python -m coleaf_jax.demo --seed S), "
        "measured 2026-12-06: "
        + ", ".join(f"{name} {min(v):.1f}-{max(v):.1f}" for name, v in SEED_SPREAD.items())
        + ". The synthetic set shares LLP's label structure, not its features: it checks "
        "plumbing and relative behaviour, not LLP's numbers (docs/synthetic.md)."
    )

    unav = load_config_file("configs/unav100.py:synthetic")
    unav.seed = args.seed
    unav.data.synthetic_seed = args.seed
    unav.data.root = os.path.join(args.workdir, "data_unav100" + suffix)
    if args.epochs:
        unav.num_epochs = args.epochs
    apply_overrides(unav, args.set)
    print(f"\n== training CoLeaF (HAN) on variable-length videos ({unav.name}) ==")
    result = train_and_evaluate(unav, os.path.join(args.workdir, unav.name + suffix), verbose=True)
    print(
        f"variable-length synthetic test (UnAV-100 layout): AV segment {result['seg_av']:.1f}, "
        f"AV event {result['evt_av']:.1f}"
    )

    best = configs["CoLeaF (CMPAE)"]
    path = report.build_report(
        best,
        os.path.join(args.workdir, best.name.removesuffix("_synthetic") + suffix),
        test=data["test"],
    )
    print(f"\ndone in {time.time() - t0:.0f}s; runs and checkpoints in {args.workdir}/")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
