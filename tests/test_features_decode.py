"""Decoding videos as HAN's scripts did: frames of ffmpeg -r 8, moviepy's 16 kHz audio, errors."""

import json
import os

import numpy as np
import pytest

from coleaf_jax.features import decode, preprocess, testing

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "features")


def test_cfr_picks_the_frames_of_hans_ffmpeg_on_its_example_video():
    with open(os.path.join(FIXTURES, "han_example_frames.json")) as f:
        fx = json.load(f)
    # 300 frames at 29.92 fps, 10.03 s: HAN's folder holds 82 JPEGs.
    picked = decode.cfr_indices(fx["times"], fx["rate"])
    assert picked == fx["chosen"]
    assert len(picked) == 82
    # The extractors take 80 of them (np.round(np.linspace(0, 81, 80))).
    sample = decode.han_sample(82, 80)
    assert sample[0] == 0 and sample[-1] == 81 and len(np.unique(sample)) == 80


def test_cfr_duplicates_frames_of_a_slow_video():
    times = np.arange(20) / 4.0  # 4 fps for 5 s
    picked = decode.cfr_indices(times, 4.0)
    assert 38 <= len(picked) <= 42
    assert picked == sorted(picked) and set(picked) == set(range(20))


def test_moviepy_resampling_matches_moviepy_1_0_3():
    fx = np.load(os.path.join(FIXTURES, "moviepy_audio.npz"))
    n, duration = int(fx["source_samples"]), float(fx["duration"])
    i = np.arange(n)
    src = np.stack([i % 30000 - 15000, i // 30000 - 15000], axis=1).astype(np.int16)
    out = np.round(decode.moviepy_resample(src, duration) * 32768).astype(np.int64)
    index = (out[:, 0] + 15000) + 30000 * (out[:, 1] + 15000)
    delay = np.round(44100 * np.arange(len(index)) / 16000).astype(np.int64) - index
    np.testing.assert_array_equal(delay, fx["delay"])
    assert delay.max() >= 2  # moviepy's buffer re-centring delays the later audio


def test_moviepy_resampling_clips_and_truncates():
    src = np.array([[32767, -32768], [16384, -16385], [3, -3]] * 2000, np.int16)
    out = decode.moviepy_resample(src, 0.05)
    assert out.shape == (800, 2)
    assert out.max() == pytest.approx(int(0.99 * 32768) / 32768)  # clipped to 0.99, truncated
    assert out.min() == pytest.approx(-int(0.99 * 32768) / 32768)


def test_num_segments():
    assert decode.num_segments(10.03) == 10  # a 10 s LLP clip as FFmpeg cuts it
    assert decode.num_segments(10.2) == 11
    assert decode.num_segments(7.5) == 8
    assert decode.num_segments(0.05) == 1
    assert decode.moviepy_duration(10.027855) == 10.03


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4": testing.write_test_video(str(d / "a.mp4"), seconds=2.0, fps=25, tone_hz=440.0),
        "mkv": testing.write_test_video(
            str(d / "b.mkv"),
            seconds=3.4,
            fps=30,
            codec="libx264",
            audio_codec="libmp3lame",
            sample_rate=22050,
            size=(80, 60),
            tone_hz=1000.0,
        ),
        "webm": testing.write_test_video(
            str(d / "c.webm"),
            seconds=1.5,
            fps=24,
            codec="libvpx-vp9",
            audio_codec="libopus",
            sample_rate=48000,
            tone_hz=700.0,
        ),
        "silent": testing.write_test_video(str(d / "silent.mp4"), seconds=1.0, audio=False),
        "garbage": str(_write(d / "garbage.mp4", b"this is not a video" * 100)),
        "empty": str(_write(d / "empty.mkv", b"")),
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _peak_hz(wave: np.ndarray) -> float:
    mono = wave.mean(axis=1)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.argmax(spectrum) * 16000 / len(mono))


@pytest.mark.parametrize(
    "kind,seconds,tone,size",
    [("mp4", 2.0, 440.0, (48, 64)), ("mkv", 3.4, 1000.0, (60, 80)), ("webm", 1.5, 700.0, (48, 64))],
)
def test_decodes_frames_and_16khz_audio(videos, kind, seconds, tone, size):
    d = decode.decode(videos[kind])
    assert d.duration == pytest.approx(seconds, abs=0.1)
    assert d.num_segments == int(np.ceil(seconds - 0.125))
    assert abs(len(d.frames) - 8 * seconds) <= 2
    assert d.frames[0].shape == size + (3,) and d.frames[0].dtype == np.uint8
    assert d.audio.shape[1] == 2
    assert len(d.audio) == int(16000 * decode.moviepy_duration(d.duration))
    assert _peak_hz(d.audio) == pytest.approx(tone, abs=10)
    assert 0.2 < np.abs(d.audio).max() < 0.5  # the 0.4 tone, as 16-bit samples
    # One second's frames: the test video changes colour every second.
    second = d.frames[12].astype(float).mean(axis=(0, 1))
    first = d.frames[4].astype(float).mean(axis=(0, 1))
    assert np.abs(second - first).max() > 40


def test_jpeg_round_trip_changes_little(videos):
    with_jpeg = decode.decode(videos["mp4"], audio=False)
    plain = decode.decode(videos["mp4"], audio=False, jpeg=False)
    assert len(with_jpeg.frames) == len(plain.frames)
    diff = np.abs(np.stack(with_jpeg.frames).astype(float) - np.stack(plain.frames))
    assert 0 < diff.mean() < 5


def test_frame_fn_receives_pil_images(videos):
    d = decode.decode(videos["mp4"], frame_fn=preprocess.r21d_frame, audio=False)
    assert d.frames[0].shape == (112, 112, 3) and d.audio is None


def test_video_without_audio_is_an_error_naming_the_file(videos):
    with pytest.raises(decode.NoAudioError, match="silent.mp4: no audio stream"):
        decode.decode(videos["silent"])
    assert decode.decode(videos["silent"], audio=False).audio is None


@pytest.mark.parametrize("kind", ["garbage", "empty"])
def test_unreadable_file_is_an_error_naming_it(videos, kind):
    with pytest.raises(decode.VideoError, match=os.path.basename(videos[kind])):
        decode.decode(videos[kind])


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(decode.VideoError, match="nope.mp4: no such file"):
        decode.decode(str(tmp_path / "nope.mp4"))
    with pytest.raises(decode.VideoError, match="is a folder"):
        decode.decode(str(tmp_path))
