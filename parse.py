"""Parse videos into audible-only / visible-only / audible-visible events with a trained run.

    python parse.py --config configs/llp.py --workdir runs/llp --features /path/to/features \
                    --output parsed/ [--ids id1,id2] [--step N] [--select-thresholds] [--timelines 5]
    python parse.py --config configs/synthetic.py --workdir runs/synthetic --split test \
                    --output parsed/ --timelines 5 [--compare-workdir runs/han --compare-config configs/synthetic.py:han]
                    [--compare-step N]

    python parse.py --config configs/llp.py --workdir runs/llp --video a.mp4 [b.mkv ...] \
                    --weights weights/ --output parsed/

--video extracts HAN's features from video files first (coleaf_jax.features:
PyAV decoding, VGGish, ResNet-152, R(2+1)D-18 with the weights converted in
--weights; docs/features.md) and also writes OUTPUT/pages/<id>.html (the
video with its event timeline; a click on a bar plays the event) and
OUTPUT/features/ (the extracted features, LLP layout).
--features is a folder in the dataset's feature layout (LLP: vggish/, res152/,
r2plus1d_18/; UnAV-100: <id>_vggish.npy, <id>_rgb.npy, <id>_flow.npy); no
annotation file is needed. --split parses an annotated split instead, and its
timelines show the ground truth. Writes OUTPUT/events.jsonl and
OUTPUT/events.csv (video, class, type, onset, offset, score) using the same
thresholds as eval.py, and OUTPUT/timelines/<id>.png for the first
--timelines videos.

--probabilities also writes OUTPUT/probabilities/<id>.npz per video: video_prob
(C,), audio_prob and visual_prob (T, C), video_prob_a and video_prob_v (C,), the
network's outputs before any threshold (float32), to compare models numerically.
--config is optional: without it the run's own WORKDIR/config.json is used (a
trained run, or one imported by python -m coleaf_jax.imports).

--max-seconds (with --video; default 600) refuses longer videos, by their
header before anything is decoded and by their streams while decoding; a
file that holds less than its header declares (cut short) is parsed for what
it holds, with a warning, and OUTPUT/features/videos.json records its
declared duration and the warning. OUTPUT/parse.lock (there while a run holds
it) keeps a second parse.py from writing into the same folder at the same time.
"""

from coleaf_jax import interrupt  # standard library only: before the heavy imports

interrupt.quiet_while_starting()  # a Ctrl-C while importing: one line, exit status 130

import contextlib
import sys

from absl import app, flags
from ml_collections import config_flags

from coleaf_jax import cli
from coleaf_jax.config import load_config_file
from coleaf_jax.evaluation import runs
from coleaf_jax.evaluation.parsing import output_lock, parse_videos
from coleaf_jax.features.decode import DEFAULT_MAX_SECONDS, check_max_seconds
from coleaf_jax.training.workdir import apply_stored_config

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run's directory.")
flags.DEFINE_string("output", None, "Folder for events.jsonl, events.csv and timelines/.")
flags.DEFINE_string(
    "features", None, "Feature folder of the videos to parse (no annotations needed)."
)
flags.DEFINE_enum("split", None, ["train", "val", "test"], "Parse an annotated split instead.")
flags.DEFINE_list(
    "video",
    None,
    "Video files to parse (features extracted first; more files may "
    "follow as arguments: --video a.mp4 b.mkv).",
)
flags.DEFINE_string(
    "weights",
    None,
    "With --video: the folder of the extractors' weights "
    "(python -m coleaf_jax.features.convert; docs/features.md).",
)
flags.DEFINE_list(
    "frame_sizes",
    None,
    "With --video: RESNET,R21D frame sizes other than HAN's 224,112 (quick checks only: "
    "the features are not HAN's).",
)
flags.DEFINE_float(
    "max_seconds",
    DEFAULT_MAX_SECONDS,
    "With --video: refuse videos longer than this many seconds (declared by the header, "
    "or found while decoding).",
)
flags.DEFINE_list("ids", None, "Only these video ids.")
flags.DEFINE_integer("step", None, "Checkpoint (epoch) to restore; default: best on validation.")
flags.DEFINE_bool(
    "select_thresholds",
    False,
    "Use per-class visual thresholds selected on validation (as eval.py).",
)
flags.DEFINE_integer("timelines", 0, "Write timeline PNGs for this many videos.")
flags.DEFINE_string("compare_workdir", None, "A second run drawn side by side in the timelines.")
flags.DEFINE_string(
    "compare_config",
    None,
    "The second run's config file (default: --config's file); the values it was trained "
    "with are read from its WORKDIR/config.json.",
)
flags.DEFINE_integer(
    "compare_step",
    None,
    "The second run's checkpoint (default: its best); with "
    "--compare-workdir equal to --workdir, two checkpoints of one run.",
)
flags.DEFINE_bool(
    "probabilities",
    False,
    "Also write OUTPUT/probabilities/<id>.npz: the network's probabilities before any threshold.",
)
config_flags.DEFINE_config_file(
    "config",
    None,
    "The run's configuration file (default: the run's config.json).",
    lock_config=True,
)
flags.mark_flags_as_required(["workdir", "output"])


def frame_sizes(values: list[str]) -> tuple[int, int]:
    """``--frame-sizes RESNET,R21D`` as two positive integers."""
    try:
        sizes = tuple(int(v) for v in values)
    except ValueError:
        sizes = ()
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"--frame-sizes {','.join(values)}: expected two positive integers")
    return sizes


def main(argv):
    videos = list(FLAGS.video or [])
    if len(argv) > 1 and not videos:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    videos += argv[1:]
    cli.quiet_libraries()
    cli.exit_on_user_error(cli.check_output, FLAGS.output, "--output", folder=True)
    cli.exit_on_user_error(runs.require_run, FLAGS.workdir)
    config = cli.exit_on_user_error(runs.run_config, FLAGS.config, FLAGS.workdir)
    cli.setup_jax(config)
    if videos and (FLAGS.features or FLAGS.split or FLAGS.compare_workdir or FLAGS.ids):
        raise SystemExit(
            "error: --video cannot be combined with --features, --split, --ids or --compare-workdir"
        )
    if FLAGS["max_seconds"].present and not videos:
        raise SystemExit("error: --max-seconds applies to --video (video files) only")
    max_seconds = cli.exit_on_user_error(check_max_seconds, FLAGS.max_seconds)
    sizes = cli.exit_on_user_error(frame_sizes, FLAGS.frame_sizes) if FLAGS.frame_sizes else None
    with contextlib.ExitStack() as held:
        # one parse.py per output folder (the second is refused, naming the first)
        cli.exit_on_user_error(held.enter_context, output_lock(FLAGS.output))
        run(config, videos, max_seconds, sizes)


def run(config, videos: list[str], max_seconds: float, sizes: tuple[int, int] | None) -> None:
    """What main does with the output folder held."""
    if videos:
        from coleaf_jax.features import extract
        from coleaf_jax.features.videos import parse_video_files

        options = extract.Options()
        if sizes:
            options = extract.Options(resnet_crop=sizes[0], r21d_size=sizes[1])
        cli.exit_on_user_error(
            parse_video_files,
            config,
            FLAGS.workdir,
            FLAGS.output,
            videos,
            FLAGS.weights,
            options=options,
            step=FLAGS.step,
            select_thresholds=FLAGS.select_thresholds,
            timelines=FLAGS.timelines,
            max_seconds=max_seconds,
            probabilities=FLAGS.probabilities,
        )
        return
    compare = None
    if FLAGS.compare_workdir:
        spec = FLAGS.compare_config or (FLAGS.config and flags.FLAGS["config"].config_filename)
        if spec:
            compare_config = cli.exit_on_user_error(load_config_file, spec)
            cli.exit_on_user_error(apply_stored_config, compare_config, FLAGS.compare_workdir)
        else:  # neither --config: the second run's own config.json too
            compare_config = cli.exit_on_user_error(runs.run_config, None, FLAGS.compare_workdir)
        compare = (compare_config, FLAGS.compare_workdir, FLAGS.compare_step)
    cli.exit_on_user_error(
        parse_videos,
        config,
        FLAGS.workdir,
        FLAGS.output,
        features=FLAGS.features,
        split=FLAGS.split,
        ids=FLAGS.ids,
        step=FLAGS.step,
        select_thresholds=FLAGS.select_thresholds,
        timelines=FLAGS.timelines,
        compare=compare,
        probabilities=FLAGS.probabilities,
    )


if __name__ == "__main__":
    with interrupt.stop_on_interrupt():  # a Ctrl-C outside a run's phases: one line too
        app.run(main, argv=cli.dashes_to_underscores(sys.argv), flags_parser=cli.parse_flags)
