"""Parity of the LAION-CLAP towers (coleaf_jax.features.clap) with ``laion_clap`` (no torch).

tools/make_clap_fixtures.py recorded, once, ``laion_clap``'s own classes (a small HTSAT with
the real front end and 256 x 256 geometry, a 2-layer RoBERTa, seeded random weights, with
and without fusion), transformers' slow ``RobertaTokenizer`` on a made-up byte-level BPE
vocabulary, librosa's and torchaudio's filter banks, the real checkpoints' key names and
shapes, and a training-layout ``.pt`` checkpoint. Embedding tolerance: 1e-5 relative to
the output's largest magnitude.
"""

import json
import os

import jax
import numpy as np
import pytest

from coleaf_jax.features import clap, convert, testing
from coleaf_jax.features.convert import ConversionError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "features")
RTOL = 1e-5
STFT_ROWS = [0, 1, 100, 512]
FUSION_ONLY = ("patch_embed.mel_conv2d", "patch_embed.fusion_model")


@pytest.fixture(scope="module")
def fx():
    return np.load(os.path.join(FIXTURES, "clap_random.npz"))


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def small_config(fx, fusion: bool) -> clap.CLAPConfig:
    """The fixture's model (tools/make_clap_fixtures.py SMALL_*)."""
    audio = clap.AudioConfig(embed_dim=8, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8), class_num=7)
    text = clap.TextConfig(
        vocab_size=int(fx["vocab_size"]),
        hidden=32,
        layers=2,
        heads=4,
        intermediate=64,
        max_positions=80,
    )
    return clap.CLAPConfig(audio, text, joint_embed=24, enable_fusion=fusion)


def small_state(fx, fusion: bool) -> dict:
    """The recorded state dict, with torchlibrosa's DFT kernels (only four rows of which
    were kept) recomputed here."""
    state = {k[len("state/") :]: fx[k] for k in fx.files if k.startswith("state/")}
    if not fusion:
        state = {k: v for k, v in state.items() if not any(f in k for f in FUSION_ONLY)}
    buffers = clap._front_end_buffers(clap.HTSAT_TINY)
    for name in ("conv_real", "conv_imag"):
        key = f"audio_branch.spectrogram_extractor.stft.{name}.weight"
        state[key] = buffers[key]
    return state


def waveforms(fx, batch: str) -> np.ndarray:
    """The recorded int16 waveforms as laion_clap's ``int16_to_float32`` gives them."""
    return (fx[f"wave_{batch}"] / 32767.0).astype(np.float32)


def test_mel_filterbanks_match_librosa_and_torchaudio(fx):
    slaney = clap.slaney_mel_filterbank(48000, 1024, 64, 50.0, 14000.0)
    assert slaney.shape == (513, 64) and slaney.dtype == np.float32
    np.testing.assert_allclose(slaney, fx["librosa_slaney"], rtol=0, atol=1e-9)
    other = clap.slaney_mel_filterbank(16000, 400, 40, 0.0, 8000.0)
    np.testing.assert_allclose(other, fx["small_slaney"], rtol=0, atol=1e-9)
    htk = clap.htk_mel_filterbank(48000, 1024, 64, 50.0, 14000.0)
    # torchaudio builds its bank with float32 torch ops (linspace, pow): 5.6e-6 measured,
    # 2.4e-5 dB at most in the log-mel.
    assert rel_err(htk, fx["torchaudio_htk"]) < 1e-5
    assert rel_err(slaney, htk) > 0.1  # the two front ends differ
    # torchlibrosa's DFT kernels (window folded in), as the converter recomputes them.
    buffers = clap._front_end_buffers(clap.HTSAT_TINY)
    for name in ("conv_real", "conv_imag"):
        ours = buffers[f"audio_branch.spectrogram_extractor.stft.{name}.weight"]
        np.testing.assert_allclose(ours[STFT_ROWS, 0], fx[f"stft_rows/{name}"], atol=1e-6)


@pytest.mark.parametrize("fusion", [True, False], ids=["fusion", "plain"])
def test_front_end_log_mel_matches_laion_clap(fx, fusion):
    """torchaudio's MelSpectrogram + AmplitudeToDB (fusion) / torchlibrosa's conv DFT +
    Slaney LogmelFilterBank (plain), after repeatpad, first 200 frames."""
    config = small_config(fx, fusion)
    variant = "fusion" if fusion else "plain"
    for batch in ("a", "b"):
        wave = waveforms(fx, batch)
        mel = np.asarray(clap._audio_input(wave, config))
        assert mel.shape == (len(wave), 1001, 64)
        ref = fx[f"{variant}_{batch}/log_mel"]
        assert rel_err(mel[0, :200], ref) < 2e-5
        # float64 truth: our float32 FFT lies closer to it than the reference does.
        padded = np.resize(wave[0].astype(np.float64), 480000 // wave.shape[1] * wave.shape[1])
        padded = np.pad(padded, (0, 480000 - len(padded)))
        x = np.pad(padded, 512, mode="reflect")
        frames = np.stack([x[i * 480 : i * 480 + 1024] for i in range(200)]) * clap.hann_window(
            1024
        )
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        truth = 10 * np.log10(np.maximum(power @ clap.mel_filterbank(config.audio, fusion), 1e-10))
        assert rel_err(mel[0, :200], truth) <= rel_err(ref, truth) + 1e-6


@pytest.mark.parametrize("batch", ["a", "b"])
@pytest.mark.parametrize("fusion", [True, False], ids=["fusion", "plain"])
def test_audio_tower_matches_laion_clap(fx, fusion, batch):
    """get_audio_features (repeatpad) -> CLAP.encode_audio -> audio_projection ->
    get_audio_embedding; the final tokens regrouped as VALOR's feat_maps; clipwise_output.
    Batch a: two 1 s clips (VALOR's segments); b: one 37,000-sample clip (zero tail)."""
    config = small_config(fx, fusion)
    variables = clap.variables_from_state_dict(small_state(fx, fusion), config)
    wave = waveforms(fx, batch)
    if len(wave) == 1:  # the same batch size as a: one compilation of the network
        wave = np.concatenate([wave, wave])
    out = clap.audio_outputs(variables, wave, config)
    prefix = f"{'fusion' if fusion else 'plain'}_{batch}/"
    n = len(fx[prefix + "embedding"])
    assert out["embedding"].shape == (len(wave), 64)
    assert rel_err(out["embedding"][:n], fx[prefix + "embedding"]) < RTOL
    assert rel_err(out["projected"][:n], fx[prefix + "projected"]) < RTOL
    assert rel_err(out["feat_maps"][:n], fx[prefix + "feat_maps"]) < RTOL
    assert rel_err(out["clipwise_output"][:n], fx[prefix + "clipwise"]) < RTOL
    normalized = clap._normalize(out["projected"])
    assert rel_err(normalized[:n], fx[prefix + "normalized"]) < RTOL
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=-1), 1.0, rtol=1e-6)


def long_clip(fx) -> np.ndarray:
    """tools/make_clap_fixtures.py long_clip: 11 s made of batch a's two seconds."""
    a0, a1 = fx["wave_a"]
    return np.concatenate([a0, a1, -a0, a1[::-1], a0[::-1], -a1, a0, a1, -a0, -a1, a0[::-1]])


@pytest.mark.parametrize("antialias", [True, False], ids=["aa", "noaa"])
def test_fusion_longer_path_matches_laion_clap(fx, antialias):
    """An 11 s clip and a 1 s clip in one batch (the else branch of HTSAT.forward):
    get_audio_features('fusion') with np.random.seed(1234) -- the shrunk whole (torchvision
    Resize, antialiased from torchvision 0.17 on, or not), three random chunks -- then
    mel_conv2d and AFF for the longer clip only."""
    config = small_config(fx, True)
    variables = clap.variables_from_state_dict(small_state(fx, True), config)
    waves = [(long_clip(fx) / 32767.0).astype(np.float32), waveforms(fx, "a")[0]]
    rng = np.random.RandomState(1234)  # tools/make_clap_fixtures.py LONG_SEED
    inputs = clap.prepare_audio(waves, config, rng, shrink_antialias=antialias)
    assert inputs["mel_fusion"].shape == (2, 4, 1001, 64)
    assert inputs["longer"].tolist() == [True, False]
    tag = "aa" if antialias else "noaa"
    assert rel_err(inputs["mel_fusion"][0, :, :50], fx[f"long_{tag}/mel_fusion"]) < 2e-5
    out = clap.prepared_outputs(variables, inputs, config)
    assert rel_err(out["embedding"], fx[f"long_{tag}/embedding"]) < RTOL
    assert rel_err(out["clipwise_output"], fx[f"long_{tag}/clipwise"]) < RTOL
    assert rel_err(clap._normalize(out["projected"]), fx[f"long_{tag}/normalized"]) < RTOL
    # The shrink's antialiasing and the fusion both matter.
    other = fx[f"long_{'noaa' if antialias else 'aa'}/embedding"][0]
    assert rel_err(out["embedding"][0], other) > 1e-4
    unfused = clap._encode_mel(variables, inputs["mel_fusion"], config, np.zeros(2, bool))[
        "embedding"
    ]
    assert rel_err(unfused[0], out["embedding"][0]) > 1e-3
    np.testing.assert_array_equal(unfused[1], out["embedding"][1])


def test_text_tower_and_valor_logits_match_laion_clap(fx):
    config = small_config(fx, True)
    variables = clap.variables_from_state_dict(small_state(fx, True), config)
    rows = [0, 1, 3, 5]  # tools/make_clap_fixtures.py TEXT_EMBED_TEXTS
    ids, mask = fx["token_ids"][rows], fx["token_mask"][rows]
    raw = clap.text_embeddings(variables, ids, mask, config, normalize=False)
    assert raw.shape == (4, 24)
    assert rel_err(raw, fx["text_projected"]) < RTOL
    text = clap.text_embeddings(variables, ids, mask, config)
    assert rel_err(text, fx["text_normalized"]) < RTOL
    # VALOR calculate_audio_logits: exp(logit_scale_a) * audio @ text.T
    logits = clap.logit_scale(variables) * fx["fusion_a/normalized"] @ np.asarray(text).T
    assert rel_err(logits, fx["logits"]) < RTOL
    # Pads act only through the mask: other ids under a zero mask change nothing, a
    # mask over the pads changes the embeddings.
    other = np.where(mask == 1, ids, 7)
    other_out = clap.text_embeddings(variables, other, mask, config, normalize=False)
    assert rel_err(other_out, raw) < 1e-6
    unmasked = clap.text_embeddings(variables, ids, np.ones_like(mask), config, normalize=False)
    assert rel_err(unmasked[:3], raw[:3]) > 1e-3
    assert int(clap.roberta_position_ids(ids, 1)[0, 0]) == 2


def test_tokenizer_matches_slow_roberta_tokenizer(fx, tmp_path):
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    vocab.write_text(str(fx["vocab_json"]), encoding="utf-8")
    merges.write_text(str(fx["merges_txt"]), encoding="utf-8")
    texts = [str(t) for t in fx["texts"]]
    tok = clap.Tokenizer.from_files(str(vocab), str(merges))
    ids, mask = tok(texts)
    assert ids.shape == mask.shape == (len(texts), 77) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, fx["token_ids"])
    np.testing.assert_array_equal(mask, fx["token_mask"])
    assert mask[-1].all() and ids[-1, -1] == 2  # truncated to 77 with </s> kept
    assert ids[0, 0] == 0 and (ids[0][mask[0] == 0] == 1).all()
    # The same tokenizer through tokenizer.json, and a folder holding either.
    tok.tokenizer.save(str(tmp_path / "tokenizer.json"))
    again = clap.Tokenizer.load(str(tmp_path))
    np.testing.assert_array_equal(again(texts)[0], fx["token_ids"])
    (tmp_path / "tokenizer.json").unlink()
    np.testing.assert_array_equal(clap.Tokenizer.load(str(tmp_path))(texts[0])[0], ids[:1])


@pytest.mark.parametrize(
    "name,config", [("fusion", clap.CLAP_TINY_FUSION), ("nonfusion", clap.CLAP_TINY)]
)
def test_converter_covers_the_real_checkpoint_keys(name, config):
    """HTSAT-tiny + roberta-base as laion_clap builds them (transformers 4.51, which no
    longer saves ``text_branch.embeddings.position_ids``; the converter also accepts it)."""
    with open(os.path.join(FIXTURES, "clap_keys.json")) as f:
        real = {k: tuple(v) for k, v in json.load(f)[name].items()}
    assert clap.checkpoint_shapes(config) == real
    assert real["audio_branch.patch_embed.proj.weight"] == (96, 1, 4, 4)
    assert ("audio_branch.patch_embed.mel_conv2d.weight" in real) == (name == "fusion")


def test_converted_tree_is_the_modules_tree(fx):
    for fusion in (True, False):
        config = small_config(fx, fusion)
        converted = clap.variables_from_state_dict(small_state(fx, fusion), config)
        ids = np.zeros((1, 77), np.int32)
        wave = np.zeros((1, 48000), np.float32)
        init = jax.eval_shape(
            lambda: clap.CLAP(config).init(jax.random.PRNGKey(0), wave, ids, np.ones_like(ids))
        )
        shapes = jax.tree_util.tree_map(lambda x: tuple(x.shape), converted)
        assert jax.tree_util.tree_map(lambda x: tuple(x.shape), init) == shapes


def test_conversion_errors_name_the_keys(fx):
    config = small_config(fx, True)
    state = small_state(fx, True)
    broken = dict(state)
    del broken["audio_branch.layers.1.blocks.1.attn.qkv.weight"]
    broken["audio_branch.extra.weight"] = np.zeros(3, np.float32)
    broken["text_branch.pooler.dense.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ConversionError) as e:
        clap.variables_from_state_dict(broken, config, source="x.pt")
    msg = str(e.value)
    assert "x.pt" in msg and "1 missing: audio_branch.layers.1.blocks.1.attn.qkv.weight" in msg
    assert "1 unexpected: audio_branch.extra.weight" in msg
    assert "text_branch.pooler.dense.bias (5,) (expected (32,))" in msg
    # A fusion checkpoint for a non-fusion config, and the other way round.
    with pytest.raises(ConversionError, match="unexpected: audio_branch.patch_embed"):
        clap.variables_from_state_dict(state, small_config(fx, False))
    with pytest.raises(ConversionError, match="missing: audio_branch.patch_embed"):
        clap.variables_from_state_dict(small_state(fx, False), config)
    # Fixed buffers that are not the ones computed here.
    bad = dict(state)
    bad["audio_branch.layers.0.blocks.1.attn_mask"] = np.zeros_like(
        state["audio_branch.layers.0.blocks.1.attn_mask"]
    )
    with pytest.raises(ConversionError, match="attn_mask differs"):
        clap.variables_from_state_dict(bad, config)
    # torchlibrosa's buffers: checked where the model uses them (without fusion).
    bad = small_state(fx, False)
    bad["audio_branch.logmel_extractor.melW"] = clap.htk_mel_filterbank(48000, 1024, 64, 50, 14000)
    with pytest.raises(ConversionError, match="melW differs"):
        clap.variables_from_state_dict(bad, small_config(fx, False))
    bad = dict(state)
    bad["audio_branch.logmel_extractor.melW"] = clap.htk_mel_filterbank(48000, 1024, 64, 50, 14000)
    clap.variables_from_state_dict(bad, config)


def test_checkpoint_files_read_without_torch(fx, tmp_path):
    """A training-layout checkpoint (epoch, name, module.-prefixed state_dict, Adam state,
    scaler) saved by torch, and a whole small state dict written as torch.save would."""
    state = convert.read_pth(os.path.join(FIXTURES, "clap_checkpoint.pt"))
    recorded = {k[len("checkpoint/") :]: fx[k] for k in fx.files if k.startswith("checkpoint/")}
    assert set(state) == set(recorded)
    for key, value in recorded.items():
        np.testing.assert_array_equal(state[key], value)
    stripped = clap.strip_prefixes(state)
    assert "audio_projection.0.weight" in stripped and "logit_scale_a" in stripped
    assert set(clap.strip_prefixes({"model." + k: v for k, v in stripped.items()})) == set(stripped)
    config = small_config(fx, True)
    small = small_state(fx, True)
    path = testing.write_pth(
        str(tmp_path / "small.pt"), {"module." + k: v for k, v in small.items()}
    )
    ours = clap.variables_from_checkpoint(path, config)
    direct = clap.variables_from_state_dict(small, config)
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, direct)
    assert float(clap.logit_scale(ours)) == pytest.approx(float(np.exp(small["logit_scale_a"])))


def test_int16_round_trip_and_padding(fx):
    np.testing.assert_array_equal(clap.quantize_int16(fx["quantize_in"]), fx["quantize_out"])
    x = np.arange(1, 8, dtype=np.float32)[None]
    np.testing.assert_array_equal(
        clap.repeat_pad(x, 24), np.concatenate([np.tile(x, 3), np.zeros((1, 3))], axis=1)
    )
    config = small_config(fx, True)
    with pytest.raises(ValueError, match="prepare_audio"):
        clap.audio_input(np.zeros((1, 480480), np.float32), config)
    plain = small_config(fx, False)
    with pytest.raises(ValueError, match="exceed clip_samples"):
        clap.audio_input(np.zeros((1, 480001), np.float32), plain)
    # The fusion model's corner case: longer, but not in frames -- taken whole.
    assert clap.audio_input(np.zeros((1, 480001), np.float32), config).shape == (1, 1001, 64)
    # rand_trunc: a crop at rng.randint(0, overflow + 1), then as any 10 s clip.
    long = np.sin(np.arange(480100, dtype=np.float32) / 7)
    crop = clap.prepare_audio([long], plain, np.random.RandomState(0))["waveform"]
    start = np.random.RandomState(0).randint(0, 101)
    np.testing.assert_array_equal(crop[0], long[start : start + 480000])
    short = clap.prepare_audio([long[:1000]], plain)["waveform"]
    np.testing.assert_array_equal(short[0], np.tile(long[:1000], 480))
    with pytest.raises(ValueError, match="fusion"):
        clap.audio_outputs(
            clap.variables_from_state_dict(small_state(fx, False), plain),
            np.zeros((1, 48000), np.float32),
            config,
        )


def test_config_round_trips_through_json(fx):
    for config in (clap.CLAP_TINY_FUSION, clap.CLAP_BASE, small_config(fx, False)):
        record = json.loads(json.dumps(clap.config_to_dict(config)))
        assert clap.config_from_dict(record) == config
        assert hash(clap.config_from_dict(record)) == hash(config)  # a static jit argument
    assert clap.config_from_dict(None) == clap.CLAP_TINY_FUSION
    assert (
        clap.CLAP_TINY_FUSION.audio.num_features == 768
        and clap.CLAP_BASE.audio.num_features == 1024
    )
    with pytest.raises(ValueError, match="not a CLAP configuration"):
        clap.config_from_dict({"audio": {"embed": 3}})


def test_shrink_matrix_rows_sum_to_one():
    for antialias in (True, False):
        m = clap.shrink_matrix(1101, 1001, antialias)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-12)
        assert (m >= 0).all()
    assert np.count_nonzero(clap.shrink_matrix(1101, 1001, True)[500]) == 3  # widened triangle
    assert np.count_nonzero(clap.shrink_matrix(1101, 1001, False)[500]) <= 2
    np.testing.assert_array_equal(clap.shrink_matrix(64, 64, True), np.eye(64))
