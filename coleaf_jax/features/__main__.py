"""``python -m coleaf_jax.features VIDEOS... --out ROOT --weights W``: an LLP-layout feature folder.

Writes ``ROOT/vggish/<id>.npy (T, 128)``, ``ROOT/res152/<id>.npy (8T, 2048)``
and ``ROOT/r2plus1d_18/<id>.npy (T, 512)`` (float32; ``<id>`` is the file
name without its extension; ``T`` one-second segments, 10 for LLP's 10 s
clips) and ``ROOT/features.json`` (per video: source, duration, segments;
the options and weights used). Videos already extracted with the same
options are skipped unless ``--overwrite``. A folder argument stands for
the videos in it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from coleaf_jax.features import convert, decode, extract, weights

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
        description="Extract HAN's LLP features (VGGish, ResNet-152, R(2+1)D-18) from video "
        "files into an LLP-layout folder (docs/features.md).",
    )
    p.add_argument("videos", nargs="+", help="video files, or folders of them")
    p.add_argument("--out", required=True, help="the feature folder to write (ROOT)")
    p.add_argument(
        "--weights",
        required=True,
        help="the weights folder (downloaded checkpoints and their conversions)",
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
        manifest_path = os.path.join(args.out, "features.json")
        manifest = {"videos": {}}
        if os.path.exists(manifest_path):
            with open(manifest_path) as f:
                manifest = json.load(f)
        option_dict = {k: getattr(options, k) for k in options.__dataclass_fields__}
        if manifest.get("options") not in (None, option_dict) and not args.overwrite:
            raise ValueError(
                f"{manifest_path}: {args.out} was extracted with other options "
                f"({manifest['options']}); use another --out or --overwrite"
            )
        todo = [
            v
            for v in videos
            if args.overwrite
            or extract.video_id(v) not in manifest["videos"]
            or not all(
                os.path.exists(os.path.join(args.out, folder, extract.video_id(v) + ".npy"))
                for folder in extract.LLP_FOLDERS.values()
            )
        ]
        if len(todo) < len(videos) and not args.quiet:
            print(
                f"{len(videos) - len(todo)} of {len(videos)} videos already in {args.out}; "
                f"skipped (--overwrite extracts them again)",
                file=sys.stderr,
            )
        for v in todo:
            decode.probe(v)
        if not todo:
            return 0
        extractor = extract.Extractor(args.weights, options, verbose=not args.quiet)
        manifest["options"] = option_dict
        manifest["weights"] = {
            name: _provenance(args.weights, name) for name in extract.MODEL_NAMES
        }
        os.makedirs(args.out, exist_ok=True)
        short = []
        for f in extractor.extract_many(todo, progress=not args.quiet, workers=args.workers):
            extract.write_llp(f, args.out)
            manifest["videos"][f.id] = {
                "path": os.path.abspath(f.path),
                "duration": f.duration,
                "num_segments": f.num_segments,
                "frames_8fps": f.frames_decoded,
            }
            if f.num_segments != 10:
                short.append(f.id)
            with open(manifest_path, "w") as fh:  # after every video: a stop loses nothing
                json.dump(manifest, fh, indent=2)
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


def _provenance(folder: str, name: str) -> dict:
    path = weights.converted_path(folder, name) + ".json"
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return {}


if __name__ == "__main__":
    sys.exit(main())
