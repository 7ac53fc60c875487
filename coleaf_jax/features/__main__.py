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
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from coleaf_jax.features import convert, decode, extract, teachers, weights

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
        manifest_path = os.path.join(args.out, "features.json")
        manifest = {"videos": {}}
        if os.path.exists(manifest_path):
            with open(manifest_path) as f:
                manifest = json.load(f)
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
        for v in todo:
            seconds = decode.probe(v)
            if v in valor_todo and seconds > teachers.MAX_SECONDS:
                raise ValueError(
                    f"{v}: {seconds:.1f} s long; VALOR's teachers take clips of at most "
                    f"{teachers.MAX_SECONDS:.0f} s (LLP's are 10 s)"
                )
        if not todo:
            return 0
        os.makedirs(args.out, exist_ok=True)
        if han_todo:
            _extract_han(args, options, han_todo, manifest, manifest_path, option_dict)
        if valor_todo:
            valor_labels = [labels_by_path[v] for v in valor_todo]
            _extract_valor(
                args, options, valor_todo, valor_labels, manifest, manifest_path, teacher_dict
            )
    except (
        decode.VideoError,
        weights.MissingWeightsError,
        convert.ConversionError,
        ValueError,
        OSError,
    ) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 1
    return 0


def _save(manifest: dict, path: str) -> None:
    with open(path, "w") as fh:  # after every video: a stop loses nothing
        json.dump(manifest, fh, indent=2)


def _extract_han(args, options, todo, manifest, manifest_path, option_dict) -> None:
    extractor = extract.Extractor(args.weights, options, verbose=not args.quiet)
    manifest["options"] = option_dict
    manifest.setdefault("weights", {}).update(
        {name: weights.provenance(args.weights, name) for name in extract.MODEL_NAMES}
    )
    short = []
    for f in extractor.extract_many(todo, progress=not args.quiet, workers=args.workers):
        extract.write_llp(f, args.out)
        manifest["videos"].setdefault(f.id, {}).update(
            {
                "path": os.path.abspath(f.path),
                "duration": f.duration,
                "num_segments": f.num_segments,
                "frames_8fps": f.frames_decoded,
            }
        )
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


def _extract_valor(args, options, todo, labels, manifest, manifest_path, teacher_dict) -> None:
    models = teachers.Teachers(args.weights, options.precision, verbose=not args.quiet)
    manifest["teacher_options"] = teacher_dict
    manifest.setdefault("weights", {}).update(
        {name: weights.provenance(args.weights, name) for name in ("clip", "clap")}
    )
    records = []
    outputs_of = models.many(
        todo, labels, progress=not args.quiet, workers=args.workers, jpeg=options.jpeg
    )
    for label, (path, outputs) in zip(labels, outputs_of):
        vid = extract.video_id(path)
        teachers.write(outputs, args.out, vid)
        record = {
            "label": teachers.label_names(label),
            "clap_pseudo_labels": int(outputs.clap_labels.sum()),
            "clip_pseudo_labels": int(outputs.clip_labels.sum()),
        }
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
