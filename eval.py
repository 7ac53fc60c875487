"""Restore a checkpoint and score it on a split with the 18 AVVP metrics.

    python eval.py --config configs/llp.py --workdir runs/llp [--split val|test] [--step N] [--output FILE]

Uses the best-on-validation checkpoint unless --step is given; writes the
scores as JSON (default WORKDIR/<split>_metrics.json) and prints the table.
"""

from absl import app, flags
from ml_collections import config_flags

from coleaf_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's directory.")
flags.DEFINE_enum("split", "test", ["val", "test"], "Split to score.")
flags.DEFINE_integer("step", None, "Checkpoint (epoch) to restore; default: best on validation.")
flags.DEFINE_string("output", None, "JSON file to write; default WORKDIR/<split>_metrics.json.")
config_flags.DEFINE_config_file("config", None, "The run's configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_libraries()
    cli.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, split=FLAGS.split, step=FLAGS.step,
                            output=FLAGS.output)


if __name__ == "__main__":
    app.run(main)
