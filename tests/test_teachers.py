"""VALOR's teachers on video files (coleaf_jax.features.teachers) and the CLI's
``--features valor``: outputs, files, and the errors a user meets. Small random teachers
(testing.write_teacher_weights); the end-to-end run from videos to a trained run and its
events is the ``valor_teachers`` scenario of tests/test_docs_commands.py."""

import os

import av
import numpy as np
import pytest

from coleaf_jax.data.classes import LLP_CLASS_INDEX
from coleaf_jax.features import __main__ as cli
from coleaf_jax.features import clap, clip, decode, teachers, testing, valor


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("teacher_weights"))
    testing.write_teacher_weights(folder)
    return folder


@pytest.fixture(scope="module")
def models(weights_dir):
    return teachers.Teachers(weights_dir, verbose=False)


@pytest.fixture(scope="module")
def clip3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher_videos")
    return testing.write_test_video(str(folder / "abcdefghijk.mp4"), seconds=3.0)


def _label(*names):
    label = np.zeros(25, np.float32)
    label[[LLP_CLASS_INDEX[n] for n in names]] = 1
    return label


def test_outputs_of_a_video(models, clip3):
    label = _label("Speech", "Dog", "Cello")
    out = models.video(clip3, label)
    e = models.clip_config.projection_dim
    assert out.clip_features.shape == (10, e) and out.clip_features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.clip_features, axis=1), 1.0, rtol=1e-5)
    assert out.clap_features.shape == (64, models.clap_config.audio.num_features)
    for labels, logits, thresholds in (
        (out.clip_labels, out.clip_logits, valor.CLIP_THRESHOLDS),
        (out.clap_labels, out.clap_logits, valor.CLAP_THRESHOLDS),
    ):
        assert labels.shape == logits.shape == (10, 25) and labels.dtype == np.int64
        assert not labels[:, label == 0].any()  # only the weak label's classes
        on = (logits > thresholds)[:, label > 0]
        np.testing.assert_array_equal(labels[:, label > 0], on)
    assert out.clip_labels.any() or out.clap_labels.any()  # the case is not all zeros


def test_clap_segments_are_valor_s(models, clip3):
    """The 10 CLAP segment embeddings are those of VALOR's 1 s cuts, quantised and
    repeated: computed here from the decoded audio, one segment at a time."""
    frames, audio, _ = teachers.prepare(clip3)
    out = models(frames, audio, _label("Speech"))
    a, b = valor.segment_bounds(len(audio))[7]
    seg = clap.repeat_pad(clap.quantize_int16(audio[a:b])[None], valor.CLAP_SAMPLES)
    one = clap.audio_embeddings(models.clap_variables, seg, models.clap_config)
    expected = valor.logits(np.asarray(one), models.clap_prompts, models.clap_scale)[0]
    np.testing.assert_allclose(out.clap_logits[7], expected, rtol=2e-5, atol=2e-4)


def test_features_are_valor_s_inputs_through_the_networks(models, clip3):
    """CLIP's feature: the normalised embeddings of the frames ``frame_indices`` picks;
    CLAP's: ``feat_maps`` of the whole clip resampled by nearest index, then quantised."""
    frames, audio, _ = teachers.prepare(clip3)
    out = models(frames, audio, _label("Speech"))
    picked = np.stack([frames[i] for i in valor.frame_indices(len(frames))])
    pixels = valor.clip_pixels(picked, models.clip_config.vision.image_size)
    image = clip.image_embeddings(models.clip_variables, pixels, models.clip_config)
    np.testing.assert_allclose(out.clip_features, clip.normalize(image), rtol=1e-5, atol=1e-6)
    whole = clap.quantize_int16(valor.nearest_resample(audio))[None]
    maps = clap.audio_outputs(models.clap_variables, whole, models.clap_config)["feat_maps"][0]
    np.testing.assert_allclose(out.clap_features, maps, rtol=1e-5, atol=1e-5)


def _write_audio_video(path: str, samples: np.ndarray, layout: str) -> str:
    """A 1 s video whose PCM audio is ``samples`` ``(48000, channels)`` int16."""
    with av.open(path, "w") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=48000, layout=layout)
        black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for _ in range(25):
            for packet in video.encode(black):
                out.mux(packet)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*sound.encode(frame), *sound.encode(None), *video.encode(None)]:
            out.mux(packet)
    return path


@pytest.mark.parametrize("layout, channels", [("mono", 1), ("stereo", 2), ("5.1", 6)])
def test_audio_is_the_mean_of_every_channel(tmp_path, layout, channels):
    """librosa.load's mono: every channel weighted equally (FFmpeg's own downmix of 5.1
    weights them otherwise), 16-bit samples over 32768."""
    rng = np.random.default_rng(channels)
    samples = rng.integers(-20000, 20000, (48000, channels)).astype(np.int16)
    path = _write_audio_video(str(tmp_path / f"{layout}.mkv"), samples, layout)
    got = decode.decode_audio_mono(path, valor.SAMPLE_RATE)
    assert got.shape == (48000,) and got.dtype == np.float32
    np.testing.assert_allclose(got, samples.mean(axis=1) / 32768.0, atol=1e-7)


def test_read_labels_from_a_folder_and_conflicts(tmp_path):
    (tmp_path / "AVVP_train.csv").write_text("filename\tevent_labels\nabcdefghijk_0_10\tDog,Cat\n")
    (tmp_path / "AVVP_test_pd.csv").write_text("filename\tevent_labels\nzzzzzzzzzzz_5_15\tBanjo\n")
    labels = teachers.read_labels([str(tmp_path)])
    np.testing.assert_array_equal(labels["abcdefghijk"], _label("Dog", "Cat"))
    assert set(labels) == {"abcdefghijk", "zzzzzzzzzzz"}
    other = tmp_path / "more.csv"
    other.write_text("filename\tevent_labels\nabcdefghijk_0_10\tDog\n")
    with pytest.raises(ValueError, match="different labels in .*AVVP_train.csv and .*more.csv"):
        teachers.read_labels([str(tmp_path), str(other)])
    with pytest.raises(ValueError, match="have no row in"):
        teachers.labels_of(["abcdefghijk", "notlabelled"], labels, "CSVS")


def _run_cli(args, capsys) -> tuple[int, str]:
    rc = cli.main(args)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_cli_errors_are_one_line(weights_dir, clip3, tmp_path, capsys):
    csv = tmp_path / "AVVP_train.csv"
    csv.write_text("filename\tevent_labels\nabcdefghijk_0_10\tDog\n")
    out = str(tmp_path / "feats")
    rc, text = _run_cli(
        [clip3, "--out", out, "--weights", weights_dir, "--features", "valor"], capsys
    )
    assert rc == 1 and "needs --labels" in text and text.count("\n") == 1
    other = tmp_path / "other.csv"
    other.write_text("filename\tevent_labels\nxxxxxxxxxxx_0_10\tDog\n")
    rc, text = _run_cli(
        [
            clip3,
            "--out",
            out,
            "--weights",
            weights_dir,
            "--features",
            "valor",
            "--labels",
            str(other),
        ],
        capsys,
    )
    assert rc == 1 and "1 of 1 videos have no row in" in text and "abcdefghijk" in text
    empty = tmp_path / "no_weights"
    empty.mkdir()
    rc, text = _run_cli(
        [clip3, "--out", out, "--weights", str(empty), "--features", "valor", "--labels", str(csv)],
        capsys,
    )
    assert rc == 1 and "clip-vit-large-patch14/model.safetensors" in text
    assert not os.path.exists(os.path.join(out, "CLIP"))


def test_cli_writes_valor_s_layout_and_skips_done_videos(weights_dir, clip3, tmp_path, capsys):
    csv = tmp_path / "labels.csv"
    csv.write_text("filename\tevent_labels\nabcdefghijk_0_10\tSpeech,Dog\n")
    out = str(tmp_path / "feats")
    args = [clip3, "--out", out, "--weights", weights_dir, "--features", "valor"]
    rc, text = _run_cli(args + ["--labels", str(csv), "--quiet"], capsys)
    assert rc == 0, text
    for path in teachers.output_paths(out, "abcdefghijk"):
        assert os.path.exists(path), path
    labels = np.load(os.path.join(out, "CLAP", "segment_pseudo_labels", "abcdefghijk.npy"))
    assert labels.shape == (10, 25) and labels.dtype == np.int64
    assert not os.path.exists(os.path.join(out, "vggish"))  # HAN's features not asked for
    rc, text = _run_cli(args + ["--labels", str(csv)], capsys)
    assert rc == 0 and "1 of 1 videos already in" in text
    before = labels
    csv.write_text("filename\tevent_labels\nabcdefghijk_0_10\tBanjo\n")  # a new weak label
    rc, text = _run_cli(args + ["--labels", str(csv), "--quiet"], capsys)
    assert rc == 0, text
    labels = np.load(os.path.join(out, "CLAP", "segment_pseudo_labels", "abcdefghijk.npy"))
    assert not labels[:, LLP_CLASS_INDEX["Speech"]].any()  # made again with the new label
    assert before[:, LLP_CLASS_INDEX["Speech"]].any()  # it was on before


def test_prepare_takes_what_a_cut_file_holds_and_says_so(tmp_path, clip3):
    whole = testing.write_test_video(
        str(tmp_path / "whole.webm"),
        seconds=4.0,
        codec="libvpx-vp9",
        audio_codec="libopus",
        sample_rate=48000,
    )
    cut = testing.cut_file(whole, str(tmp_path / "cut.webm"))
    warnings = []
    frames, audio, _ = teachers.prepare(cut, warnings=warnings)
    assert abs(len(frames) - 16) <= 2 and abs(len(audio) / valor.SAMPLE_RATE - 2.0) < 0.1
    assert len(warnings) == 1 and warnings[0].startswith(f"{cut}: its streams hold 2.00 s, ")
    assert "its header declares 4.01 s" in warnings[0]
    whole_warnings = []
    teachers.prepare(clip3, warnings=whole_warnings)
    assert whole_warnings == []


def test_length_caps_of_valor_s_teachers(tmp_path, weights_dir, capsys):
    """VALOR's own 100 s, whatever --max-seconds allows; a lower --max-seconds holds too."""
    folder = tmp_path / "videos"
    folder.mkdir()
    path = testing.write_test_video(str(folder / "abcdefghijk.mkv"), seconds=3.0, codec="libx264")
    testing.declare_duration(path, 200.0)
    csv = tmp_path / "labels.csv"
    csv.write_text("filename\tevent_labels\nabcdefghijk_0_10\tDog\n")
    args = [path, "--out", str(tmp_path / "o"), "--weights", weights_dir, "--features", "valor"]
    rc, text = _run_cli(args + ["--labels", str(csv), "--max-seconds", "1000"], capsys)
    assert rc == 1 and text.count("\n") == 1, text
    assert text.startswith(f"error: {path}: its header declares 200.0 s, longer than VALOR's")
    with pytest.raises(decode.TooLongError, match="VALOR's teachers take .100 s at most"):
        teachers.prepare(path, max_seconds=1000)
    testing.declare_duration(path, 1.0)  # 3 s of streams under a 1 s header
    with pytest.raises(decode.TooLongError, match="its streams hold more than 2.5 s, .* of 2 s"):
        teachers.prepare(path, max_seconds=2)
    warnings = []
    frames, _, _ = teachers.prepare(path, max_seconds=1000, warnings=warnings)
    assert abs(len(frames) - 24) <= 2 and "more than the 1.00 s its header declares" in warnings[0]
