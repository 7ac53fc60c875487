"""From video files to events: parse.py --video and python -m coleaf_jax.features, end to end.

Plumbing, not accuracy: converted random-init extractor weights (orbax, as
``python -m coleaf_jax.features.convert`` writes them) and a one-epoch tiny
synthetic run. In-process runs use reduced frame sizes (ResNet-152 at 32 x 32,
R(2+1)D-18 at 16 x 16) to stay fast on a CPU; the production sizes' inputs are
checked in test_features_models.py.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from coleaf_jax.evaluation import parsing
from coleaf_jax.features import __main__ as features_cli
from coleaf_jax.features import convert, extract, testing, videos, weights
from coleaf_jax.training import train
from tests.test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = extract.Options(resnet_crop=32, r21d_size=16)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("weights"))
    for name, fn in (
        ("resnet152", convert.resnet152_variables),
        ("r2plus1d_18", convert.r2plus1d_variables),
        ("vggish", convert.vggish_variables),
    ):
        weights.save_converted(folder, name, fn(testing.random_state_dict(name)))
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config("han", num_epochs=1)
    train.train_and_evaluate(config, workdir, verbose=False)
    return config, workdir


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {
        "a": testing.write_test_video(str(d / "a.mp4"), seconds=2.0),
        "b": testing.write_test_video(
            str(d / "b.mkv"),
            seconds=3.4,
            codec="libx264",
            audio_codec="libmp3lame",
            sample_rate=22050,
            size=(80, 60),
        ),
        "c": testing.write_test_video(
            str(d / "c.webm"),
            seconds=1.5,
            codec="libvpx-vp9",
            audio_codec="libopus",
            sample_rate=48000,
        ),
        "silent": testing.write_test_video(str(d / "silent.mp4"), seconds=1.0, audio=False),
    }


def test_parse_videos_end_to_end(run, weights_dir, clips, tmp_path, capsys):
    config, workdir = run
    out = str(tmp_path / "parsed")
    paths = [clips["a"], clips["b"], clips["c"]]
    records = videos.parse_video_files(
        config, workdir, out, paths, weights_dir, options=SMALL, timelines=1, verbose=False
    )
    segments = {"a": 2, "b": 4, "c": 2}
    assert parsing.read_events(os.path.join(out, "events.jsonl")) == records
    assert parsing.read_events(os.path.join(out, "events.csv")) == records
    assert records and {r["video"] for r in records} <= set(segments)
    for r in records:
        assert r["type"] in parsing.EVENT_TYPES
        assert 0 <= r["onset"] < r["offset"] <= segments[r["video"]]  # padding never an event
        assert 0 <= r["score"] <= 1
    # Features in the LLP layout, one row per segment (8 frames per second).
    for vid, t in segments.items():
        assert np.load(os.path.join(out, "features", "vggish", f"{vid}.npy")).shape == (t, 128)
        assert np.load(os.path.join(out, "features", "res152", f"{vid}.npy")).shape == (8 * t, 2048)
        assert np.load(os.path.join(out, "features", "r2plus1d_18", f"{vid}.npy")).shape == (t, 512)
    # One page per video: the player (its file linked relative to the page) and the events.
    for vid, path in zip(segments, paths):
        page = os.path.join(out, "pages", f"{vid}.html")
        text = open(page, encoding="utf-8").read()
        src = re.search(r'<video id="video" controls preload="metadata" src="([^"]+)"', text).group(
            1
        )
        assert os.path.samefile(os.path.join(os.path.dirname(page), src), path)
        payload = json.loads(
            re.search(
                r'<script type="application/json" id="events">(.*?)</script>', text, re.S
            ).group(1)
        )
        assert payload["events"] == [r for r in records if r["video"] == vid]
        assert payload["duration"] >= segments[vid] - 1
    assert "Browsers may not play .mkv" in open(os.path.join(out, "pages", "b.html")).read()
    assert os.path.exists(os.path.join(out, "timelines", "a.png"))

    # The same weights folder and compiled networks: python -m coleaf_jax.features.
    feats = str(tmp_path / "feats")
    args = [
        clips["a"],
        clips["c"],
        "--out",
        feats,
        "--weights",
        weights_dir,
        "--frame-sizes",
        "32",
        "16",
        "--quiet",
    ]
    assert features_cli.main(args) == 0
    manifest = json.load(open(os.path.join(feats, "features.json")))
    assert set(manifest["videos"]) == {"a", "c"}
    assert manifest["videos"]["a"]["num_segments"] == 2 and manifest["options"]["resnet_crop"] == 32
    assert manifest["weights"]["resnet152"]["source"] == "random"
    for vid in ("a", "c"):  # deterministic: the same features as parse.py's
        for folder in ("vggish", "res152", "r2plus1d_18"):
            np.testing.assert_array_equal(
                np.load(os.path.join(feats, folder, f"{vid}.npy")),
                np.load(os.path.join(out, "features", folder, f"{vid}.npy")),
            )
    mtime = os.path.getmtime(os.path.join(feats, "vggish", "a.npy"))
    assert features_cli.main(args) == 0  # nothing to do
    assert os.path.getmtime(os.path.join(feats, "vggish", "a.npy")) == mtime
    assert features_cli.main(args[:-1] + ["--no-jpeg", "--quiet"]) == 1
    assert "extracted with other options" in capsys.readouterr().err


def test_stack_features_pads_and_masks():
    def video(vid, t):
        rng = np.random.default_rng(t)
        return extract.VideoFeatures(
            vid,
            vid + ".mp4",
            t - 0.5,
            rng.random((t, 128), np.float32),
            rng.random((8 * t, 2048), np.float32),
            rng.random((t, 512), np.float32),
        )

    short, long = video("s", 2), video("l", 4)
    stacked = extract.stack_features([short, long], pool_frames=True)
    assert stacked["mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert stacked["video_2d"].shape == (2, 4, 2048) and stacked["id"].tolist() == ["s", "l"]
    np.testing.assert_allclose(
        stacked["video_2d"][0, :2], short.video_2d.reshape(2, 8, -1).mean(1), rtol=1e-6
    )
    assert not stacked["audio"][0, 2:].any() and not stacked["video_3d"][0, 2:].any()
    frames = extract.stack_features([short, long])["video_2d"]
    assert frames.shape == (2, 32, 2048) and not frames[0, 16:].any()


@pytest.mark.parametrize("problem", ["silent", "garbage", "weights", "same-id"])
def test_features_cli_errors_name_the_file(problem, clips, tmp_path, capsys):
    videos_ = [clips["a"]]
    folder = str(tmp_path / "empty_weights")
    os.makedirs(folder)
    if problem == "silent":
        videos_.append(clips["silent"])
    elif problem == "garbage":
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
        videos_.append(str(bad))
    elif problem == "same-id":
        videos_.append(os.path.join(os.path.dirname(clips["a"]), "sub", "a.mov"))
    assert features_cli.main(videos_ + ["--out", str(tmp_path / "o"), "--weights", folder]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ")
    needle = {
        "silent": "silent.mp4: no audio stream",
        "garbage": "broken.mp4",
        "weights": "vggish-10086976.pth",
        "same-id": "have the same id 'a'",
    }[problem]
    assert needle in err, err
    assert not os.path.exists(tmp_path / "o" / "vggish")


def run_parse(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "parse.py", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_parse_py_video_errors_are_one_line(clips, tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(os.path.join(workdir, "checkpoints"))  # both errors come before any restore
    common = [
        "--config",
        "configs/synthetic.py:han",
        "--config.model.d_model=16",
        "--config.model.ffn_dim=16",
        "--workdir",
        workdir,
        "--output",
        str(tmp_path / "p"),
    ]
    # The second of two videos (a trailing argument) has no audio: named before any work.
    proc = run_parse(*common, "--weights", str(tmp_path), "--video", clips["a"], clips["silent"])
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"{clips['silent']}: no audio stream" in last, last
    # Missing weights: which file to download, and where to put it.
    proc = run_parse(*common, "--weights", str(tmp_path / "w"), "--video", clips["a"])
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "vggish-10086976.pth" in last and str(tmp_path / "w") in last, last
    assert not os.path.exists(tmp_path / "p")


def test_vggish_pca_postprocessing_option(clips):
    pca = testing.random_pca(1)
    variables = {
        "vggish": convert.vggish_variables(testing.random_state_dict("vggish")),
        "vggish_pca": pca,
        "resnet152": {},
        "r2plus1d_18": {},
    }
    post = extract.Extractor(
        None, extract.Options(vggish_postprocess="pca"), variables=variables, verbose=False
    )
    examples = extract.prepare(clips["c"], SMALL).examples
    quantized = extract._batched(post._vggish, post._vggish_vars, examples, 10)
    assert quantized.shape == (2, 128)
    assert (
        quantized == np.round(quantized)
    ).all() and 0 <= quantized.min() <= quantized.max() <= 255
    assert len(np.unique(quantized)) > 20
    with pytest.raises(weights.MissingWeightsError, match="vggish_pca_params"):
        extract.Extractor(
            str(clips["c"]) + "_weights",
            extract.Options(vggish_postprocess="pca"),
            variables={k: v for k, v in variables.items() if k != "vggish_pca"},
            verbose=False,
        )


def test_cut_video_with_a_hostile_name_end_to_end(run, weights_dir, tmp_path, capsys):
    """A WebM cut in half (its header still says 4 s) named to break a page's script:
    parsed for the 2 s it holds, the warning printed and recorded (videos.json,
    features.json, the page), the page's events JSON intact."""
    config, workdir = run
    whole = testing.write_test_video(
        str(tmp_path / "whole.webm"),
        seconds=4.0,
        codec="libvpx-vp9",
        audio_codec="libopus",
        sample_rate=48000,
    )
    name = "x<!--<script>y"
    cut = testing.cut_file(whole, str(tmp_path / f"{name}.webm"))
    out = str(tmp_path / "parsed")
    records = videos.parse_video_files(
        config, workdir, out, [cut], weights_dir, options=SMALL, verbose=False
    )
    err = capsys.readouterr().err
    warning = f"{cut}: its streams hold 2.00 s, its header declares 4.01 s"
    assert f"warning: {warning}" in err  # printed, verbose or not
    info = json.load(open(os.path.join(out, "features", "videos.json")))[name]
    assert info["duration"] == 2.0 and info["num_segments"] == 2
    assert info["declared_duration"] == 4.008 and info["warnings"][-1].startswith(warning)
    assert np.load(os.path.join(out, "features", "vggish", f"{name}.npy")).shape == (2, 128)
    assert np.load(os.path.join(out, "features", "res152", f"{name}.npy")).shape == (16, 2048)
    assert all(r["video"] == name and r["offset"] <= 2 for r in records)
    text = open(os.path.join(out, "pages", f"{name}.html"), encoding="utf-8").read()
    script = re.search(
        r'<script type="application/json" id="events">(.*?)</script>', text, re.S
    ).group(1)
    assert "<" not in script and json.loads(script)["events"] == records
    assert "its header declares 4.01 s" in text  # the warning on the page

    feats = str(tmp_path / "feats")
    args = [cut, "--out", feats, "--weights", weights_dir, "--frame-sizes", "32", "16", "--quiet"]
    assert features_cli.main(args) == 0
    assert f"warning: {warning}" in capsys.readouterr().err  # --quiet keeps warnings
    record = json.load(open(os.path.join(feats, "features.json")))["videos"][name]
    assert record["num_segments"] == 2 and record["declared_duration"] == 4.008
    assert record["warnings"] == info["warnings"]
    # nothing left half-written, and the lock gone with the run
    assert sorted(os.listdir(feats)) == ["features.json", "r2plus1d_18", "res152", "vggish"]
    assert sorted(os.listdir(out)) == ["events.csv", "events.jsonl", "features", "pages"]
