"""Train CoLeaF (or a baseline), validate every epoch, keep checkpoints, score the best on test.

    python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir runs/llp
    python train.py --config configs/synthetic.py --workdir runs/synthetic [--config.num_epochs=4]

One training per --workdir at a time (WORKDIR/train.lock). Re-running with the
same --workdir resumes from the latest intact checkpoint when the config is the
run's (only num_epochs, logging, eval batch size and device placement may
change); a finished run is not trained again. Errors end with one line
"error: ..." and exit status 1 (a non-finite loss stops training).
--config.num_seeds=K trains seeds seed..seed+K-1 at once (vmap) and writes
WORKDIR/seeds_metrics.json with per-seed scores and their mean ± std.
Writes WORKDIR/test_metrics.json (the 18 scores), WORKDIR/metrics.jsonl,
WORKDIR/checkpoints/ (best on validation and latest) and WORKDIR/report.html
(curves, tables next to the paper's, per-class scores, timelines), each whole or
not at all: a full disk is one line naming the file, and re-running resumes.
The config file is Python and runs once, as code (as in every ml_collections
project): use config files you trust.
"""

from coleaf_jax import interrupt  # standard library only: before the heavy imports

interrupt.quiet_while_starting()  # a Ctrl-C while importing: one line, exit status 130

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from coleaf_jax import cli
from coleaf_jax.evaluation import report
from coleaf_jax.training import distributed
from coleaf_jax.training.seeds import train_seeds
from coleaf_jax.training.train import RunStatus, train_and_evaluate

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()  # --coordinator_address, --num_processes, --process_id, --distributed


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli.quiet_libraries()
    # an out-of-memory error names the training and the evaluation batch sizes
    cli.setup_jax(FLAGS.config, memory_keys=("batch_size", "eval.batch_size"))
    cli.exit_on_user_error(distributed.initialize_from_flags)  # before JAX's first computation
    logging.info("config:\n%s", FLAGS.config)
    if FLAGS.config.num_seeds > 1:
        with interrupt.stop_on_interrupt(
            "interrupted; a multi-seed run keeps no checkpoints: re-run the same command to "
            "start it again"
        ):
            cli.exit_on_user_error(train_seeds, FLAGS.config, FLAGS.workdir)
        return

    written = []

    def write_report(test, probabilities, epoch):  # from the test predictions just made
        path = report.build_report(
            FLAGS.config, FLAGS.workdir, test=test, predictions=probabilities, checkpoint=epoch
        )
        written.append(path)
        print(f"report: {path}")

    status = RunStatus()
    with interrupt.stop_on_interrupt(status):
        cli.exit_on_user_error(
            train_and_evaluate, FLAGS.config, FLAGS.workdir, on_test=write_report, status=status
        )
    if distributed.is_primary() and not written:  # a finished run: its report, if stale
        html = os.path.join(FLAGS.workdir, "report.html")
        result = os.path.join(FLAGS.workdir, "test_metrics.json")
        if os.path.exists(html) and os.path.getmtime(html) >= os.path.getmtime(result):
            print(f"report (up to date): {html}")
        else:
            print(
                f"report: {cli.exit_on_user_error(report.build_report, FLAGS.config, FLAGS.workdir)}"
            )


if __name__ == "__main__":
    with interrupt.stop_on_interrupt():  # a Ctrl-C outside a run's phases: one line too
        app.run(main, argv=cli.dashes_to_underscores(sys.argv), flags_parser=cli.parse_flags)
