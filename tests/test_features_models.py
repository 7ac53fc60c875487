"""Parity of the feature extractors with their references (no torch needed).

The references' outputs were recorded once by tools/make_feature_fixtures.py
(torchvision ResNet-152 and R(2+1)D-18, torchvggish's VGGish and
post-processor, torchvision's transforms on PIL images, VGGish's numpy
log-mel front end) on the inputs and random weights that
``coleaf_jax.features.testing`` regenerates here. Every network runs with
the converters on torchvision's / torchvggish's key names. Tolerance: 1e-4
relative to the output's largest magnitude (the issue's bound).
"""

import json
import os

import jax
import numpy as np
import pytest

from coleaf_jax.features import convert, preprocess, r2plus1d, resnet, testing, vggish

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "features")
RTOL = 1e-4


def fixture(name):
    return np.load(os.path.join(FIXTURES, name))


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("name", ["resnet152", "r2plus1d_18", "vggish"])
def test_converter_covers_the_real_state_dict_keys(name):
    with open(os.path.join(FIXTURES, f"{name}_keys.json")) as f:
        real = {k: tuple(v) for k, v in json.load(f).items()}
    assert convert.torch_shapes(name) == real


def test_resnet152_matches_torchvision():
    fx = fixture("resnet152.npz")
    variables = convert.resnet152_variables(testing.random_state_dict("resnet152"))
    x = np.transpose(fx["input"], (0, 2, 3, 1))  # NCHW -> NHWC
    y = jax.jit(resnet.ResNet152().apply)(variables, x)
    assert y.shape == (1, resnet.FEATURE_SIZE)
    assert rel_err(y, fx["output"]) < RTOL


def test_r2plus1d_matches_torchvision():
    fx = fixture("r2plus1d_18.npz")
    variables = convert.r2plus1d_variables(testing.random_state_dict("r2plus1d_18"))
    x = np.transpose(fx["input"], (0, 2, 3, 4, 1))  # NCTHW -> NTHWC
    y = jax.jit(r2plus1d.R2Plus1D18().apply)(variables, x)
    assert y.shape == (1, r2plus1d.FEATURE_SIZE)
    assert rel_err(y, fx["output"]) < RTOL


def test_vggish_front_end_matches_the_reference():
    fx = fixture("vggish.npz")
    wave = testing.test_waveform(2.0)
    assert wave.sum() == pytest.approx(float(fx["waveform_sum"]), abs=1e-9)
    ours = preprocess.vggish_examples(wave)
    assert ours.shape == fx["examples"].shape == (2, 96, 64)
    np.testing.assert_allclose(ours, fx["examples"], rtol=1e-6, atol=1e-6)
    # With a segment count: the same examples (VGGish framing up to 10 segments).
    np.testing.assert_allclose(
        preprocess.vggish_examples(wave, 2), fx["examples"], rtol=1e-6, atol=1e-6
    )


def test_vggish_network_and_postprocessor_match_torchvggish():
    fx = fixture("vggish.npz")
    variables = convert.vggish_variables(testing.random_state_dict("vggish"))
    x = fx["examples"].astype(np.float32)
    emb = jax.jit(vggish.VGGish().apply)(variables, x)
    assert rel_err(emb, fx["embedding"]) < RTOL
    raw = jax.jit(vggish.VGGish(relu_embedding=False).apply)(variables, x)
    assert rel_err(raw, fx["embedding_no_relu"]) < RTOL
    assert (np.asarray(raw) < 0).any()  # the variant without the last ReLU differs
    pca = testing.random_pca(0)
    quantized = vggish.postprocess(
        np.asarray(fx["embedding"]), pca["pca_eigen_vectors"], pca["pca_means"]
    )
    np.testing.assert_array_equal(quantized, fx["postprocessed"])
    assert quantized.min() >= 0 and quantized.max() <= 255


def test_frame_transforms_match_torchvision_on_pil():
    fx = fixture("preprocess.npz")
    frames = testing.test_frames(2, 48, 64)
    np.testing.assert_array_equal(frames, fx["frames"])
    # Production sizes (Resize(256) + CenterCrop(224); Resize((112, 112))), exact uint8.
    np.testing.assert_array_equal(preprocess.resnet_frame(frames[0]), fx["resnet_full_u8"][0])
    for i in range(2):
        np.testing.assert_array_equal(preprocess.r21d_frame(frames[i]), fx["r21d_u8"][i])
    # Normalisation after reduced-size resizes (as ToTensor + Normalize).
    small = np.stack([preprocess.resnet_frame(f, resize=40, crop=32) for f in frames])
    ours = preprocess.normalize(small, preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)
    np.testing.assert_allclose(
        np.transpose(ours, (0, 3, 1, 2)), fx["resnet_small"], rtol=0, atol=1e-6
    )
    small = np.stack([preprocess.r21d_frame(f, size=16) for f in frames])
    ours = preprocess.normalize(small, preprocess.KINETICS_MEAN, preprocess.KINETICS_STD)
    np.testing.assert_allclose(
        np.transpose(ours, (0, 3, 1, 2)), fx["r21d_small"], rtol=0, atol=1e-6
    )


def test_resnet_resize_keeps_the_aspect_ratio_and_crops_the_centre():
    wide = np.zeros((90, 160, 3), np.uint8)
    assert preprocess.resize_shorter(wide, 256).size == (455, 256)  # int(256 * 160 / 90)
    assert preprocess.resnet_frame(wide).shape == (224, 224, 3)
    tall = np.zeros((300, 100, 3), np.uint8)
    assert preprocess.resize_shorter(tall, 256).size == (256, 768)
    assert preprocess.r21d_frame(tall).shape == (112, 112, 3)


def test_vggish_examples_for_any_length():
    wave = testing.test_waveform(3.4)
    ex = preprocess.vggish_examples(wave, 4)  # audio short of the 4th example: zero-padded
    assert ex.shape == (4, 96, 64)
    np.testing.assert_allclose(ex[:3], preprocess.vggish_examples(wave)[:3], rtol=1e-6, atol=1e-6)
    long = preprocess.vggish_examples(testing.test_waveform(12.0, channels=1), 12)
    assert long.shape == (12, 96, 64)  # one example per second beyond 10 segments
    frames = preprocess.log_mel(testing.test_waveform(12.0, channels=1)).astype(np.float32)
    np.testing.assert_allclose(long[11], frames[1100:1196], rtol=1e-6, atol=1e-6)
