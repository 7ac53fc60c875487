"""VALOR's choices around its CLIP/CLAP teachers (coleaf_jax.features.valor) against
VALOR's own lines, recorded with torch by tools/make_valor_fixtures.py."""

import os

import numpy as np
import pytest

from coleaf_jax.data.classes import LLP_CLASSES
from coleaf_jax.features import clap, testing, valor

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "features", "valor.npz")


@pytest.fixture(scope="module")
def recorded():
    with np.load(FIXTURE) as z:
        return dict(z)


@pytest.mark.parametrize("case, size, seed", [("up", (48, 64), 0), ("down", (300, 260), 1)])
def test_clip_pixels_equal_torch_bilinear_without_antialiasing(recorded, case, size, seed):
    frame = testing.test_frames(1, *size, seed)
    ours = valor.clip_pixels(frame)
    assert ours.shape == (1, 224, 224, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours[:, ::7, ::5], recorded[f"pixels_{case}"], atol=3e-5)


def test_clip_pixels_squash_not_crop():
    """A frame twice as wide as tall is squashed: its left and right edges stay in view."""
    frame = np.zeros((1, 100, 200, 3), np.uint8)
    frame[:, :, :10] = 255  # a white band at the left edge
    x = valor.clip_pixels(frame)
    white = (1.0 - valor.CLIP_MEAN) / valor.CLIP_STD
    np.testing.assert_allclose(x[0, :, 0], np.broadcast_to(white, (224, 3)), rtol=1e-6)


def test_pseudo_labels_equal_valor_rule(recorded):
    for key, thresholds in (("pl_clip", valor.CLIP_THRESHOLDS), ("pl_clap", valor.CLAP_THRESHOLDS)):
        ours = np.stack(
            [
                valor.pseudo_labels(lg, lb, thresholds)
                for lg, lb in zip(recorded["logits"], recorded["labels"])
            ]
        )
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours, recorded[key])
    assert recorded["pl_clip"][1].sum() == 0  # no class in the weak label: nothing
    assert recorded["pl_clip"].sum() > 20  # the case is not trivially empty


@pytest.mark.parametrize("n", [480_000, 479_999, 481_440, 441_000, 12_345])
def test_segment_bounds_equal_valor(recorded, n):
    np.testing.assert_array_equal(valor.segment_bounds(n), recorded[f"bounds_{n}"])


def test_frame_indices_of_80_and_81_frames():
    np.testing.assert_array_equal(valor.frame_indices(80), [0, 9, 18, 26, 35, 44, 53, 61, 70, 79])
    np.testing.assert_array_equal(valor.frame_indices(81), [0, 9, 18, 27, 36, 44, 53, 62, 71, 80])
    np.testing.assert_array_equal(valor.frame_indices(1), [0] * 10)


def test_repeat_pad_and_quantisation_of_a_valor_segment():
    """laion_clap's repeatpad and int16 round trip on VALOR's 1 s segments."""
    seg = np.linspace(-1.5, 1.5, 48_100, dtype=np.float32)
    padded = np.asarray(clap.repeat_pad(seg[None], valor.CLAP_SAMPLES))[0]
    assert padded.shape == (480_000,)
    np.testing.assert_array_equal(padded[: 9 * 48_100], np.tile(seg, 9))  # 9 repeats
    assert not padded[9 * 48_100 :].any()  # then zeros
    ten = np.asarray(clap.repeat_pad(seg[None, :48_000], valor.CLAP_SAMPLES))[0]
    np.testing.assert_array_equal(ten, np.tile(seg[:48_000], 10))
    q = clap.quantize_int16(np.array([-2.0, -0.5, 0.3, 1.0, 7.0], np.float32))
    np.testing.assert_allclose(q, [-1.0, -16383 / 32767, 9830 / 32767, 1.0, 1.0], rtol=1e-7)


def test_nearest_resample_is_valor_s_rounded_positions():
    """clap_preprocess.py:196-197: ``x[np.round(np.linspace(0, N - 1, 480000))]`` (for N =
    441,000 rounding and flooring pick different samples)."""
    x = np.arange(441_000, dtype=np.float32)
    y = valor.nearest_resample(x)
    assert y.shape == (480_000,) and y[0] == 0 and y[-1] == 440_999
    step = 440_999 / 479_999
    k = np.arange(480_000)
    np.testing.assert_array_equal(y, np.floor(k * step + 0.5))
    assert (y != np.floor(k * step)).any()


def test_prompts_and_thresholds_are_valor_s():
    assert len(valor.CLIP_PROMPTS) == len(valor.CLAP_PROMPTS) == len(LLP_CLASSES)
    assert valor.CLIP_PROMPTS[14] == "A photo of a vaccum cleaner."  # VALOR's spelling
    assert valor.CLAP_PROMPTS[12] == "This is a sound of chicken, rooster"
    # utils/clip_preprocess.py:236-238 and utils/clap_preprocess.py:262-264
    clip_thr = [20, 15, 18, 14, 15, 18, 18, 15, 15, 15, 15, 18, 15, 15, 15, 15, 15, 15, 15, 16]
    clap_thr = [0, 0, 1, 4, 6, -2, 4, 4, 2, 2, 2, 1, 2, 3, 0, 2, 2, 2, 0, 2, -1, 2, 3, 3, 0]
    np.testing.assert_array_equal(valor.CLIP_THRESHOLDS, clip_thr + [14, 15, 15, 15, 18])
    np.testing.assert_array_equal(valor.CLAP_THRESHOLDS, clap_thr)
    assert valor.CLIP_PROMPTS[20] == "A photo of a acoustic guiter."
    assert valor.CLAP_PROMPTS[5] == "This is a sound of frying (food)"


def test_logits_are_scaled_cosines():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 8)), rng.normal(size=(25, 8))
    got = valor.logits(a * 3.0, b, np.log(100.0))
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
        b / np.linalg.norm(b, axis=1, keepdims=True)
    ).T
    np.testing.assert_allclose(got, 100.0 * cos, rtol=1e-5)
