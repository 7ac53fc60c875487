"""Restore a checkpoint and score it on a split with the 18 AVVP metrics.

    python eval.py --config configs/llp.py --workdir runs/llp [--split val|test] [--step N] [--output FILE]
                   [--select-thresholds] [--config.eval.thresholds=official]
    python eval.py --workdir runs/llp      # the run's own config.json (a trained or imported run)

Uses the best-on-validation checkpoint unless --step is given; writes the
scores as JSON (default WORKDIR/eval/<split>_epoch<E>_<thresholds>.json) and
prints the table. A run's records (config.json, metrics.jsonl, test_metrics.json,
report.html, checkpoints/, ... of any run) are never an --output: one naming
them, however spelt (links, ..), is refused; a second eval.py writing the same
output is refused while the first runs. The run may be training meanwhile: only
finished checkpoints are read (the best so far, named). A missing --workdir, a
damaged checkpoint or one that does not fit the config is one line "error: ..."
(nothing is created).
--select-thresholds searches per-class visual video-level thresholds in
{0.25, 0.30, ..., 0.70} on the validation split for the checkpoint being
evaluated, stores them next to it (WORKDIR/checkpoints/selected_thresholds_<epoch>.json)
and uses them (reusing a stored file for the same checkpoint).
"""

from coleaf_jax import interrupt  # standard library only: before the heavy imports

interrupt.quiet_while_starting()  # a Ctrl-C while importing: one line, exit status 130

import sys

from absl import app, flags
from ml_collections import config_flags

from coleaf_jax import cli
from coleaf_jax.evaluation import runs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's directory.")
flags.DEFINE_enum("split", "test", ["val", "test"], "Split to score.")
flags.DEFINE_integer("step", None, "Checkpoint (epoch) to restore; default: best on validation.")
flags.DEFINE_string(
    "output", None, "JSON file to write; default WORKDIR/eval/<split>_epoch<E>_<thresholds>.json."
)
flags.DEFINE_bool(
    "select_thresholds",
    False,
    "Select per-class visual video-level thresholds on validation for this checkpoint.",
)
config_flags.DEFINE_config_file(
    "config",
    None,
    "The run's configuration file (default: the run's config.json).",
    lock_config=True,
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_libraries()
    config = cli.exit_on_user_error(runs.run_config, FLAGS.config, FLAGS.workdir)
    cli.setup_jax(config)
    cli.exit_on_user_error(
        runs.evaluate_checkpoint,
        config,
        FLAGS.workdir,
        split=FLAGS.split,
        step=FLAGS.step,
        output=FLAGS.output,
        select=FLAGS.select_thresholds,
    )


if __name__ == "__main__":
    with interrupt.stop_on_interrupt():  # a Ctrl-C outside a run's phases: one line too
        app.run(main, argv=cli.dashes_to_underscores(sys.argv), flags_parser=cli.parse_flags)
