"""Feature-extraction throughput (and, on an accelerator, parity) — the numbers of docs/performance.md.

    python tools/bench_features.py [--videos 3] [--seconds 10] [--out bench.json] [--parity]
    python tools/bench_features.py --teachers [--videos 3] [--seconds 10]

* ``networks``: the three networks on one 10 s video's inputs (80 frames at
  224, 10 clips of 8 x 112 x 112, 10 VGGish examples), random weights, after
  a warm-up call: seconds per video, per network, and videos per second, for
  ``--precision`` highest (float32, the default) and default (TF32 on a GPU).
* ``pipeline``: ``Extractor.extract_many`` on ``--videos`` generated
  videos of ``--seconds`` (640x360, 30 fps, AAC): decoding, HAN's JPEG round
  trip, resizing and the networks, decoding overlapping the networks; videos
  per second and the decode / network split.
* ``--parity``: the parity fixtures of tests/test_features_models.py on this
  machine's default device (float32 'highest', and TF32 'default').
* ``--teachers``: VALOR's teachers instead (``--features valor``): CLIP ViT-L/14 and
  LAION-CLAP HTSAT-tiny (fusion) at full size with random weights, on ``--videos``
  generated videos: decoding (8-fps frames with the JPEG round trip, 48 kHz audio) and
  the networks (10 frames through CLIP, 11 inputs of 10 s through CLAP), per video.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coleaf_jax.features import convert, extract, testing  # noqa: E402

FIXTURES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "features"
)


def random_variables() -> dict:
    return {
        "resnet152": convert.resnet152_variables(testing.random_state_dict("resnet152")),
        "r2plus1d_18": convert.r2plus1d_variables(testing.random_state_dict("r2plus1d_18")),
        "vggish": convert.vggish_variables(testing.random_state_dict("vggish")),
    }


def bench_networks(variables: dict, precision: str, repeats: int = 3) -> dict:
    ex = extract.Extractor(
        None, extract.Options(precision=precision), variables=variables, verbose=False
    )
    rng = np.random.default_rng(0)
    d = extract.Decoded(
        "synthetic.mp4",
        10.0,
        82,
        rng.integers(0, 256, (80, 224, 224, 3), dtype=np.uint8),
        rng.integers(0, 256, (10, 8, 112, 112, 3), dtype=np.uint8),
        rng.standard_normal((10, 96, 64)).astype(np.float32),
        0.0,
    )
    o = ex.options
    parts = {
        "vggish": (ex._vggish, ex._vggish_vars, d.examples, o.example_batch),
        "resnet152": (ex._resnet, ex.variables["resnet152"], d.resnet_frames, o.frame_batch),
        "r2plus1d_18": (ex._r21d, ex.variables["r2plus1d_18"], d.clips, o.clip_batch),
    }
    out = {}
    for name, (fn, v, x, b) in parts.items():
        start = time.perf_counter()
        extract._batched(fn, v, x, b)
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            extract._batched(fn, v, x, b)
            times.append(time.perf_counter() - start)
        out[name] = {"first_call_s": round(first, 3), "s_per_video": round(min(times), 4)}
    total = sum(v["s_per_video"] for v in out.values())
    out["total_s_per_video"] = round(total, 4)
    out["videos_per_s"] = round(1.0 / total, 3)
    return out


def _videos(folder: str, count: int, seconds: float) -> list[str]:
    """``count`` generated 640x360, 30 fps videos with AAC audio of different tones."""
    return [
        testing.write_test_video(
            os.path.join(folder, f"v{i}.mp4"),
            seconds=seconds,
            size=(640, 360),
            fps=30,
            tone_hz=300.0 + 100 * i,
        )
        for i in range(count)
    ]


def bench_pipeline(variables: dict, videos: int, seconds: float, workers: int) -> dict:
    ex = extract.Extractor(None, extract.Options(), variables=variables, verbose=False)
    with tempfile.TemporaryDirectory() as d:
        paths = _videos(d, videos + 1, seconds)
        ex.extract(paths[0])  # compile
        start = time.perf_counter()
        feats = list(ex.extract_many(paths[1:], progress=False, workers=workers))
        wall = time.perf_counter() - start
    decode_s = sum(f.seconds["decode"] for f in feats) / len(feats)
    net_s = sum(f.seconds["networks"] for f in feats) / len(feats)
    return {
        "videos": videos,
        "seconds_each": seconds,
        "workers": workers,
        "wall_s": round(wall, 2),
        "videos_per_s": round(videos / wall, 3),
        "decode_s_per_video": round(decode_s, 3),
        "networks_s_per_video": round(net_s, 3),
    }


def bench_teachers(videos: int, seconds: float, precision: str) -> dict:
    import jax

    from coleaf_jax.features import clap, clip, teachers, valor

    with tempfile.TemporaryDirectory() as d:
        testing.write_teacher_weights(d, configs=(clip.VIT_L_14, clap.CLAP_TINY_FUSION))
        models = teachers.Teachers(d, precision=precision, verbose=False)
        paths = _videos(d, videos + 1, seconds)
        label = np.zeros(25, np.float32)
        label[:3] = 1
        models.video(paths[0], label)  # compile
        decode_s, net_s = [], []
        for path in paths[1:]:
            frames, audio, seconds_decoding = teachers.prepare(path)
            decode_s.append(seconds_decoding)
            start = time.perf_counter()
            models(frames, audio, label)
            net_s.append(time.perf_counter() - start)
        # the two networks apart, on the last video's inputs
        picked = np.stack([frames[i] for i in valor.frame_indices(len(frames))])
        pixels = valor.clip_pixels(picked, models.clip_config.vision.image_size)
        start = time.perf_counter()
        jax.block_until_ready(
            clip.image_embeddings(
                models.clip_variables, pixels, models.clip_config, precision=precision
            )
        )
        clip_s = time.perf_counter() - start
        waves = np.zeros((11, valor.CLAP_SAMPLES), np.float32)
        start = time.perf_counter()
        jax.block_until_ready(
            clap.audio_outputs(models.clap_variables, waves, models.clap_config, precision)
        )
        clap_s = time.perf_counter() - start
    per_video = float(np.mean(decode_s) + np.mean(net_s))
    return {
        "clip_s_per_video": round(clip_s, 3),
        "clap_s_per_video": round(clap_s, 3),
        "videos": videos,
        "seconds_each": seconds,
        "precision": precision,
        "decode_s_per_video": round(float(np.mean(decode_s)), 3),
        "networks_s_per_video": round(float(np.mean(net_s)), 3),
        "videos_per_s": round(1.0 / per_video, 3),
    }


def parity(precision: str) -> dict:
    import jax

    from coleaf_jax.features import r2plus1d, resnet, vggish

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    out = {}
    fx = np.load(os.path.join(FIXTURES, "resnet152.npz"))
    v = convert.resnet152_variables(testing.random_state_dict("resnet152"))
    y = jax.jit(resnet.ResNet152(precision=precision).apply)(v, fx["input"].transpose(0, 2, 3, 1))
    out["resnet152"] = rel(y, fx["output"])
    fx = np.load(os.path.join(FIXTURES, "r2plus1d_18.npz"))
    v = convert.r2plus1d_variables(testing.random_state_dict("r2plus1d_18"))
    y = jax.jit(r2plus1d.R2Plus1D18(precision=precision).apply)(
        v, fx["input"].transpose(0, 2, 3, 4, 1)
    )
    out["r2plus1d_18"] = rel(y, fx["output"])
    fx = np.load(os.path.join(FIXTURES, "vggish.npz"))
    v = convert.vggish_variables(testing.random_state_dict("vggish"))
    y = jax.jit(vggish.VGGish(precision=precision).apply)(v, fx["examples"].astype(np.float32))
    out["vggish"] = rel(y, fx["embedding"])
    return out


def main():
    import jax

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--precisions", default="highest,default")
    p.add_argument("--parity", action="store_true")
    p.add_argument("--no-pipeline", action="store_true")
    p.add_argument("--workers", type=int, default=1, help="decoding threads")
    p.add_argument("--teachers", action="store_true", help="VALOR's CLIP/CLAP teachers")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    result = {
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result), flush=True)
    if args.teachers:
        for precision in args.precisions.split(","):
            result[f"teachers_{precision}"] = bench_teachers(args.videos, args.seconds, precision)
            print(json.dumps(result[f"teachers_{precision}"]), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
        return
    variables = random_variables()
    if args.parity:
        result["parity"] = {p_: parity(p_) for p_ in args.precisions.split(",")}
        print(json.dumps(result["parity"]), flush=True)
    result["networks"] = {}
    for precision in args.precisions.split(","):
        result["networks"][precision] = bench_networks(variables, precision)
        print(precision, json.dumps(result["networks"][precision]), flush=True)
    if not args.no_pipeline:
        try:
            result["pipeline"] = bench_pipeline(variables, args.videos, args.seconds, args.workers)
            print("pipeline", json.dumps(result["pipeline"]), flush=True)
        except ImportError as e:
            result["pipeline"] = f"skipped: {e}"
    result["load_average_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
