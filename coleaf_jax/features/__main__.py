"""``python -m coleaf_jax.features VIDEOS... --out ROOT --weights W``: an LLP-layout feature folder.

Writes ``ROOT/vggish/<id>.npy (T, 128)``, ``ROOT/res152/<id>.npy (8T, 2048)``
and ``ROOT/r2plus1d_18/<id>.npy (T, 512)`` (float32; ``<id>`` is the file
name without its extension; ``T`` one-second segments, 10 for LLP's 10 s
clips) and ``ROOT/features.json`` (per video: source, duration, segments;
the options and weights used). With ``--features valor`` (or ``all``) and
``--labels CSV...``: VALOR's CLIP/CLAP features and segment pseudo-labels
(``ROOT/{CLIP,CLAP}/...``, :mod:`coleaf_jax.features.teachers`). Videos
already extracted with the same options are skipped unless ``--overwrite``.
A folder argument stands for the videos in it.

Every video is capped at ``--max-seconds`` (default 600; VALOR's teachers take
at most 100 s): a longer declared duration is refused before anything is
decoded, and decoding stops at the cap whatever the header says. A file that
holds less than its header declares (cut short) is extracted for what it holds
and ``features.json`` records its ``declared_duration`` and ``warnings``
(:mod:`coleaf_jax.features.decode`). ``features.json`` is written whole or not
at all after every video and checked when read; ``ROOT/features.lock`` (there
while a run holds it) keeps a second extraction into the same folder from
running at the same time.
"""

from __future__ import annotations

import argparse
import os
import sys

from coleaf_jax import fileio
from coleaf_jax.features import convert, decode, extract, teachers, weights
from coleaf_jax.training import workdir

MANIFEST = "features.json"
LOCK_FILE = "features.lock"

VIDEO_EXTENSIONS = (
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".mov",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".ogv",
    ".ts",
    ".3gp",
)


def expand(paths: list[str]) -> list[str]:
    """Files as given; a folder stands for its video files (by extension, sorted)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(
                os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(VIDEO_EXTENSIONS)
            )
            if not found:
                raise ValueError(
                    f"{p}: a folder with no video file ({', '.join(VIDEO_EXTENSIONS)})"
                )
            out += found
        else:
            out.append(p)
    return out


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m coleaf_jax.features",
        description="Extract HAN's LLP features (VGGish, ResNet-152, R(2+1)D-18) and/or "
        "VALOR's CLIP/CLAP features and segment pseudo-labels from video files into an "
        "LLP-layout folder (docs/features.md).",
    )
    p.add_argument("videos", nargs="+", help="video files, or folders of them")
    p.add_argument("--out", required=True, help="the feature folder to write (ROOT)")
    p.add_argument(
        "--weights",
        required=True,
        help="the weights folder (downloaded checkpoints and their conversions)",
    )
    p.add_argument(
        "--features",
        choices=("han", "valor", "all"),
        default="han",
        help="han: VGGish, ResNet-152, R(2+1)D-18 (default); valor: VALOR's CLIP/ and CLAP/ "
        "features and segment pseudo-labels (needs --labels); all: both",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        default=None,
        metavar="CSV",
        help="the videos' weak labels for VALOR's pseudo-labels: LLP-format CSVs "
        "(filename<TAB>event_labels) or a folder holding AVVP_{train,val_pd,test_pd}.csv",
    )
    p.add_argument("--overwrite", action="store_true", help="extract videos already in ROOT again")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=decode.DEFAULT_MAX_SECONDS,
        help="refuse videos longer than this (declared by the header, or found while "
        f"decoding; default {decode.DEFAULT_MAX_SECONDS:g}; VALOR's teachers take at most "
        f"{teachers.MAX_SECONDS:g} s)",
    )
    p.add_argument(
        "--no-jpeg",
        action="store_true",
        help="skip HAN's JPEG round trip of the frames (not HAN's features)",
    )
    p.add_argument(
        "--vggish-postprocess",
        choices=("none", "pca"),
        default="none",
        help="'pca': AudioSet's PCA + 8-bit quantisation (HAN's features: none)",
    )
    p.add_argument(
        "--vggish-no-relu",
        action="store_true",
        help="drop the ReLU after VGGish's fc2 (the TF code since 2020; HAN: kept)",
    )
    p.add_argument(
        "--precision",
        choices=("highest", "high", "default"),
        default="highest",
        help="matmul/convolution precision ('default' lets a GPU use TF32)",
    )
    p.add_argument("--frame-batch", type=int, default=40, help="ResNet-152 frames per call")
    p.add_argument(
        "--frame-sizes",
        type=int,
        nargs=2,
        metavar=("RESNET", "R21D"),
        default=None,
        help="other frame sizes than HAN's 224 and 112 (quick checks "
        "only: the features are not HAN's)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="threads decoding the next videos while the networks run "
        "(default: the CPU cores less one, at most 8)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def main(argv=None) -> int:

    args = parser().parse_args(argv)
    try:
        sizes = args.frame_sizes or (extract.Options.resnet_crop, extract.Options.r21d_size)
        options = extract.Options(
            vggish_relu=not args.vggish_no_relu,
            vggish_postprocess=args.vggish_postprocess,
            jpeg=not args.no_jpeg,
            frame_batch=args.frame_batch,
            precision=args.precision,
            resnet_crop=sizes[0],
            r21d_size=sizes[1],
        )
        max_seconds = decode.check_max_seconds(args.max_seconds)
        videos = expand(args.videos)
        extract.check_ids(videos)
        han = args.features in ("han", "all")
        valor = args.features in ("valor", "all")
        labels = None
        if valor:
            if not args.labels:
                raise ValueError(
                    f"--features {args.features} needs --labels: the videos' weak labels "
                    f"(VALOR's pseudo-labels keep only each video's labelled classes)"
                )
            labels = teachers.read_labels(args.labels)
        workdir.check_output(args.out, "--out", folder=True)  # never a run's records
        with hold_folder(args.out):
            return _run(args, options, videos, han, valor, labels, max_seconds)
    except (
        decode.VideoError,
        weights.MissingWeightsError,
        convert.ConversionError,
        workdir.RunError,
        ValueError,
        OSError,
    ) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1


def _run(args, options, videos, han, valor, labels, max_seconds) -> int:
    """The extraction, with ``--out`` held (:func:`hold_folder`)."""
    manifest_path = os.path.join(args.out, MANIFEST)
    manifest = read_manifest(manifest_path)
    option_dict = {k: getattr(options, k) for k in options.__dataclass_fields__}
    teacher_dict = {"jpeg": options.jpeg, "precision": options.precision}
    for key, wanted, used in (
        ("options", option_dict, han),
        ("teacher_options", teacher_dict, valor),
    ):
        if used and manifest.get(key) not in (None, wanted) and not args.overwrite:
            raise ValueError(
                f"{manifest_path}: {args.out} was extracted with other options "
                f"({manifest[key]}); use another --out or --overwrite"
            )

    def done(paths: list[str]) -> bool:
        return not args.overwrite and all(os.path.exists(p) for p in paths)

    han_todo = [
        v
        for v in videos
        if han
        and not (
            extract.video_id(v) in manifest["videos"]
            and done(
                [
                    os.path.join(args.out, folder, extract.video_id(v) + ".npy")
                    for folder in extract.LLP_FOLDERS.values()
                ],
            )
        )
    ]

    def labelled_as(v: str) -> bool:  # pseudo-labels made with the label given now
        record = manifest["videos"].get(extract.video_id(v), {}).get("teachers", {})
        return record.get("label") == teachers.label_names(labels_by_path[v])

    labels_by_path = {}
    if valor:
        ids = [extract.video_id(v) for v in videos]
        labels_by_path = dict(zip(videos, teachers.labels_of(ids, labels, args.labels)))
    valor_todo = [
        v
        for v in videos
        if valor
        and not (done(teachers.output_paths(args.out, extract.video_id(v))) and labelled_as(v))
    ]
    todo = [v for v in videos if v in set(han_todo) | set(valor_todo)]
    if len(todo) < len(videos) and not args.quiet:
        print(
            f"{len(videos) - len(todo)} of {len(videos)} videos already in {args.out}; "
            f"skipped (--overwrite extracts them again)",
            file=sys.stderr,
        )
    for v in todo:  # every file checked (streams, declared length) before any weight is loaded
        seconds = decode.probe(v, max_seconds=max_seconds)
        if v in valor_todo and seconds > teachers.MAX_SECONDS:
            raise teachers.too_long(v, seconds)
    if not todo:
        return 0
    if han_todo:
        _extract_han(args, options, han_todo, manifest, manifest_path, option_dict, max_seconds)
    if valor_todo:
        valor_labels = [labels_by_path[v] for v in valor_todo]
        _extract_valor(
            args,
            options,
            valor_todo,
            valor_labels,
            manifest,
            manifest_path,
            teacher_dict,
            max_seconds,
        )
    return 0


def read_manifest(path: str) -> dict:
    """``ROOT/features.json`` (an empty manifest when there is none), checked: a file that
    is not JSON (cut short, say) or not of the shape this tool writes is a ValueError
    naming it and what was expected."""
    if not os.path.exists(path):
        return {"videos": {}}
    remedy = "restore it, or delete it to extract the folder's videos again"
    try:  # not UTF-8, empty, not JSON, cut short, nested too deeply: one line naming it
        manifest = fileio.load_json(path, "the JSON object this tool writes")
    except fileio.JSONFileError as e:
        raise ValueError(f"{e}; {remedy}") from None
    expected = "an object with a 'videos' object (video id -> its record)"
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: {fileio.json_type(manifest)}, expected {expected}; {remedy}")
    if not isinstance(manifest.get("videos"), dict):
        got = f"{fileio.json_type(manifest['videos'])} for 'videos'" if "videos" in manifest else ""
        raise ValueError(f"{path}: {got or 'no ' + repr('videos')}, expected {expected}; {remedy}")
    for key in ("options", "teacher_options", "weights"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise ValueError(
                f"{path}: {fileio.json_type(manifest[key])} for {key!r}, expected an object; {remedy}"
            )
    for vid, record in manifest["videos"].items():
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}: {fileio.json_type(record)} for video {vid!r}, expected an object (its "
                f"path, duration, segments); {remedy}"
            )
        if "teachers" in record and not isinstance(record["teachers"], dict):
            raise ValueError(
                f"{path}: {fileio.json_type(record['teachers'])} for video {vid!r}'s 'teachers', "
                f"expected an object; {remedy}"
            )
    return manifest


def hold_folder(out: str):
    """Holds ``OUT/features.lock`` while the block runs (``workdir.folder_lock``): a
    second extraction into the same folder is refused naming the first (two would
    overwrite each other's ``features.json``)."""
    return workdir.folder_lock(out, "--out", "extraction", LOCK_FILE)


def _save(manifest: dict, path: str) -> None:
    fileio.atomic_write_json(path, manifest)  # after every video: a stop loses nothing


def _extract_han(args, options, todo, manifest, manifest_path, option_dict, max_seconds) -> None:
    extractor = extract.Extractor(args.weights, options, verbose=not args.quiet)
    manifest["options"] = option_dict
    manifest.setdefault("weights", {}).update(
        {name: weights.provenance(args.weights, name) for name in extract.MODEL_NAMES}
    )
    short = []
    many = extractor.extract_many(
        todo, progress=not args.quiet, workers=args.workers, max_seconds=max_seconds
    )
    for f in many:
        extract.write_llp(f, args.out)
        record = manifest["videos"].setdefault(f.id, {})
        for key in ("declared_duration", "warnings"):  # of an earlier extraction
            record.pop(key, None)
        record.update(f.record())
        if f.num_segments != 10:
            short.append(f.id)
        _save(manifest, manifest_path)
    if not args.quiet:
        print(
            f"wrote the features of {len(todo)} videos to {args.out} "
            f"(vggish/, res152/, r2plus1d_18/, features.json)"
        )
        if short:
            print(
                f"note: {len(short)} videos are not 10 s long (first: {short[0]}); the "
                f"LLP reader (--config.data.root) expects 10 segments; parse.py --video "
                f"takes any length",
                file=sys.stderr,
            )


def _extract_valor(
    args, options, todo, labels, manifest, manifest_path, teacher_dict, max_seconds
) -> None:
    models = teachers.Teachers(args.weights, options.precision, verbose=not args.quiet)
    manifest["teacher_options"] = teacher_dict
    manifest.setdefault("weights", {}).update(
        {name: weights.provenance(args.weights, name) for name in ("clip", "clap")}
    )
    records = []
    outputs_of = models.many(
        todo,
        labels,
        progress=not args.quiet,
        workers=args.workers,
        jpeg=options.jpeg,
        max_seconds=max_seconds,
    )
    for label, (path, outputs) in zip(labels, outputs_of):
        vid = extract.video_id(path)
        teachers.write(outputs, args.out, vid)
        record = {
            "label": teachers.label_names(label),
            "clap_pseudo_labels": int(outputs.clap_labels.sum()),
            "clip_pseudo_labels": int(outputs.clip_labels.sum()),
        }
        if outputs.warnings:
            record["warnings"] = list(outputs.warnings)
        manifest["videos"].setdefault(vid, {"path": os.path.abspath(path)})["teachers"] = record
        records.append(record)
        _save(manifest, manifest_path)
    if not args.quiet:
        audio = sum(r["clap_pseudo_labels"] for r in records)
        visual = sum(r["clip_pseudo_labels"] for r in records)
        print(
            f"wrote VALOR's CLIP/CLAP features and segment pseudo-labels of {len(todo)} videos "
            f"to {args.out} (CLIP/, CLAP/: features, segment_pseudo_labels, segment_logits; "
            f"{audio} audio and {visual} visual segment-class labels)"
        )


if __name__ == "__main__":
    sys.exit(main())
