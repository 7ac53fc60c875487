"""``python -m coleaf_jax.evaluation.noise_ratios``: JoMoLD's noise ratios estimated
from a trained run (the ratio table itself and its loading are
``coleaf_jax.training.noise_ratios``).

    python -m coleaf_jax.evaluation.noise_ratios --config configs/llp.py \
        --config.data.root=/path/to/LLP --workdir runs/coleaf --output ratios.npz

The run's Anchor predicts the training split; among the positives of each
class, the share it finds absent in one modality while present in the other
is that modality's ratio (``training.noise_ratios.estimate_noise_ratios``).
Train with the table: ``--config.loss.denoise_ratios=ratios.npz``.
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np

from coleaf_jax import cli, fileio
from coleaf_jax.config import config_flags_as_set, load_config_file
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import evaluate
from coleaf_jax.evaluation.runs import require_run, restore_anchor
from coleaf_jax.training.noise_ratios import estimate_noise_ratios
from coleaf_jax.training.workdir import check_output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.evaluation.noise_ratios",
        description=__doc__,
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
        help="config override, e.g. --set data.root=/path/to/LLP (or --config.data.root=...)",
    )
    args = parser.parse_args(config_flags_as_set(sys.argv[1:] if argv is None else argv))
    cli.quiet_libraries()
    return cli.exit_on_user_error(_estimate, args)


def _estimate(args) -> int:
    if not args.output.endswith(".npz"):  # as np.savez names it
        args.output += ".npz"
    check_output(args.output, "--output")  # never a run's records
    config = load_config_file(args.config, args.set)
    require_run(args.workdir)
    data = pipeline.load_splits(config, args.workdir, splits=("train",))["train"]
    _, anchor, params, step = restore_anchor(config, args.workdir, data)
    probs = evaluate.predict_with_config(config, anchor, params, data)
    r_a, r_v = estimate_noise_ratios(probs["video_prob_a"], probs["video_prob_v"], data["label"])
    buffer = io.BytesIO()
    np.savez(buffer, audio=r_a, visual=r_v)
    fileio.atomic_write_bytes(args.output, buffer.getvalue())
    print(
        f"wrote {args.output} from checkpoint {step} ({len(data['label'])} training videos); "
        f"mean audio {r_a.mean():.3f}, visual {r_v.mean():.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
