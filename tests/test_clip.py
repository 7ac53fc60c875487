"""Parity of coleaf_jax.features.clip with transformers' CLIP (no torch needed).

tools/make_clip_fixtures.py recorded, once, transformers 5.25's ``CLIPModel`` (random weights,
layer norms and biases drawn too), its Pillow ``CLIPImageProcessor`` and its ``CLIPTokenizer``
on a made-up vocabulary, plus transformers 4.57's slow and fast tokenizers; and the
state-dict keys of the public openai variants (``CLIPModel`` on the meta device). Every
network runs from the recorded state dict through the converter. Tolerance: 1e-5 relative to
the output's largest magnitude.
"""

import dataclasses
import json
import os
import struct

import jax
import ml_dtypes
import numpy as np
import pytest

from coleaf_jax.features import clip, testing
from coleaf_jax.features.convert import ConversionError
from tools.make_clip_fixtures import key_digest  # the digest the fixture recorded

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "features")
RTOL = 1e-5
CJK_PROMPT = "中文 dog"  # transformers 4's slow tokenizer splits CJK characters apart


def rel_err(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def fx():
    with np.load(os.path.join(FIXTURES, "clip_random.npz")) as z:
        return dict(z)


@pytest.fixture(scope="module")
def state(fx):
    return {k[len("state/") :]: v for k, v in fx.items() if k.startswith("state/")}


@pytest.fixture(scope="module")
def config(fx):
    return clip.config_from_hf(json.loads(str(fx["hf_config"])))


@pytest.fixture(scope="module")
def variables(state, config):
    return clip.variables_from_state_dict(state, config)


@pytest.fixture(scope="module")
def tokenizer_record():
    with open(os.path.join(FIXTURES, "clip_tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


def nhwc(pixel_values: np.ndarray) -> np.ndarray:
    return np.transpose(pixel_values, (0, 2, 3, 1))


# ----------------------------------------------------------------------------- configs, keys


def test_config_of_the_fixture_model(config):
    assert config.vision == clip.VisionConfig(32, 8, 64, 2, 4, 128)
    assert config.text == clip.TextConfig(548, 16, 48, 2, 4, 96, eos_token_id=547)
    assert (config.projection_dim, config.activation) == (32, "quick_gelu")


def test_converter_covers_the_real_state_dict_keys():
    with open(os.path.join(FIXTURES, "clip_keys.json")) as f:
        real = json.load(f)
    b32 = {k: tuple(v) for k, v in real["openai/clip-vit-base-patch32"].items()}
    assert clip.state_dict_shapes(clip.VIT_B_32) == b32
    assert set(real["digests"]) == set(clip.VARIANTS)
    for name, variant in clip.VARIANTS.items():
        # The named constants are the hub configs, and give exactly transformers' keys.
        assert clip.config_from_hf(real["configs"][name], name) == variant, name
        assert key_digest(clip.state_dict_shapes(variant)) == real["digests"][name], name
    assert real["digests"]["openai/clip-vit-large-patch14"]["elements"] > 4e8  # ViT-L: 428M


def test_converted_variables_are_the_flax_modules_variables(config, variables):
    images = np.zeros((1, 32, 32, 3), np.float32)
    ids = np.zeros((1, 16), np.int32)
    init = jax.eval_shape(clip.CLIP(config).init, jax.random.key(0), images, ids)
    shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), init)
    assert jax.tree_util.tree_map(np.shape, variables) == shapes
    assert all(a.dtype == np.float32 for a in jax.tree_util.tree_leaves(variables))


@pytest.mark.parametrize(
    "name", ["openai/clip-vit-base-patch32", "openai/clip-vit-large-patch14-336"]
)
def test_flax_modules_take_the_converted_shapes_of_the_variants(name):
    cfg = clip.VARIANTS[name]
    size = cfg.vision.image_size
    images, ids = np.zeros((1, size, size, 3), np.float32), np.zeros((1, 77), np.int32)
    init = jax.eval_shape(clip.CLIP(cfg).init, jax.random.key(0), images, ids)["params"]
    ours = {
        "/".join(k.key for k in path): tuple(v.shape)
        for path, v in jax.tree_util.tree_flatten_with_path(init)[0]
    }
    expected = {}
    for _key, path, transform, shape in clip._expand(cfg):  # shapes only: no weights made
        probe = np.broadcast_to(np.zeros((), np.int8), shape)
        expected["/".join(path)] = np.shape(transform(probe) if transform else probe)
    assert ours == expected
    params = {
        "openai/clip-vit-base-patch32": 151_277_313,
        "openai/clip-vit-large-patch14-336": 427_944_193,
    }
    assert sum(int(np.prod(s)) for s in ours.values()) == params[name]


def test_config_from_hf_reads_old_configs():
    # openai/clip-vit-large-patch14's config.json repeats its sizes in text_config_dict /
    # vision_config_dict, which transformers lets override text_config / vision_config.
    hf = {
        "projection_dim": 768,
        "text_config": {"hidden_size": 512, "eos_token_id": 2},
        "text_config_dict": {"hidden_size": 768, "intermediate_size": 3072},
        "vision_config_dict": {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
        },
    }
    cfg = clip.config_from_hf(hf)
    assert (cfg.text.width, cfg.text.mlp_dim, cfg.text.eos_token_id) == (768, 3072, 2)
    assert (cfg.vision.width, cfg.vision.layers, cfg.vision.patch_size) == (1024, 24, 32)
    assert clip.config_from_hf({}).text.eos_token_id == 49407  # transformers' current default
    with pytest.raises(ConversionError, match="activations differ"):
        clip.config_from_hf({"text_config": {"hidden_act": "gelu"}}, "x/config.json")


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_image_embeddings_match_transformers(fx, config, variables, activation):
    cfg = dataclasses.replace(config, activation=activation)
    ours = clip.image_embeddings(variables, nhwc(fx["pixel_values"]), cfg)
    suffix = "" if activation == "quick_gelu" else "_gelu"
    assert ours.shape == (3, 32)
    assert rel_err(ours, fx["image_features" + suffix]) < RTOL
    if activation == "gelu":  # the activation matters: the other one is far off
        assert rel_err(ours, fx["image_features"]) > 1e-3


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_text_embeddings_match_transformers(fx, config, variables, activation):
    cfg = dataclasses.replace(config, activation=activation)
    ours = clip.text_embeddings(variables, fx["input_ids"], cfg)
    suffix = "" if activation == "quick_gelu" else "_gelu"
    assert ours.shape == (15, 32)
    assert rel_err(ours, fx["text_features" + suffix]) < RTOL


def test_logits_match_transformers(fx, config, variables):
    image = clip.image_embeddings(variables, nhwc(fx["pixel_values"]), config)
    text = clip.text_embeddings(variables, fx["input_ids"], config)
    scale = variables["params"]["logit_scale"]
    assert float(scale) == pytest.approx(2.0)
    ours = clip.logits(image, text, scale)
    assert ours.shape == (3, 15)
    assert rel_err(ours, fx["logits_per_image"]) < RTOL
    np.testing.assert_allclose(
        np.linalg.norm(clip.normalize(image), axis=-1), np.ones(3), rtol=1e-6
    )


def test_text_pooling_follows_transformers_eos_rule(fx, config, variables):
    ids = fx["random_ids"]  # (4, 12): no end-of-text, one, two, one early
    eos = config.text.eos_token_id
    np.testing.assert_array_equal(clip.eos_positions(ids, eos), [0, 5, 3, 2])
    np.testing.assert_array_equal(clip.eos_positions(ids, 2), [ids[0].argmax(), 5, 3, 2])
    ours = clip.text_embeddings(variables, ids, config)
    assert rel_err(ours, fx["random_text_features"]) < RTOL
    legacy = dataclasses.replace(config, text=dataclasses.replace(config.text, eos_token_id=2))
    ours_legacy = clip.text_embeddings(variables, ids, legacy)
    assert rel_err(ours_legacy, fx["random_text_features_legacy"]) < RTOL
    assert rel_err(ours_legacy[0], fx["random_text_features"][0]) > 1e-2  # pooled elsewhere


def test_pooled_outputs_without_projection(fx, config, variables):
    pooled = clip.image_embeddings(variables, nhwc(fx["pixel_values"]), config, project=False)
    assert pooled.shape == (3, 64)
    kernel = variables["params"]["vision_model"]["visual_projection"]["kernel"]
    assert rel_err(pooled @ kernel, fx["image_features"]) < RTOL
    assert clip.text_embeddings(variables, fx["input_ids"], config, project=False).shape == (15, 48)


def test_inputs_of_the_wrong_shape_are_refused(config, variables):
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        clip.image_embeddings(variables, np.zeros((1, 3, 32, 32), np.float32), config)
    with pytest.raises(ValueError, match="L <= 16"):
        clip.text_embeddings(variables, np.zeros((1, 17), np.int32), config)


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "case, frames, size, crop",
    [
        ("pre_ab", ("frame_a", "frame_b"), 32, 32),  # 48x64 and 70x40: downscaling
        ("pre_small", ("frame_small",), 32, 32),  # 20x30: upscaling
        ("pre_odd", ("frame_odd",), 32, 32),  # 40x59 -> 32x47: crop offset 15 // 2
        ("pre_pad", ("frame_a",), 23, 32),  # crop larger than the image: zero padding
    ],
)
def test_preprocess_matches_the_image_processor(fx, case, frames, size, crop):
    ours = clip.preprocess([fx[f] for f in frames], size, crop)
    assert ours.shape == (len(frames), crop, crop, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(np.transpose(ours, (0, 3, 1, 2)), fx[case], rtol=0, atol=1e-5)


def test_preprocess_takes_arrays_and_pil_images(fx):
    from PIL import Image

    frames = testing.test_frames(2, 48, 64)
    np.testing.assert_array_equal(frames[0], fx["frame_a"])
    batch = clip.preprocess(frames, 32)
    single = clip.preprocess(frames[0], 32)
    pil = clip.preprocess([Image.fromarray(frames[0])], 32)
    np.testing.assert_array_equal(batch[:1], single)
    np.testing.assert_array_equal(pil, single)
    np.testing.assert_allclose(single, np.transpose(fx["pre_ab"][:1], (0, 2, 3, 1)), atol=1e-5)
    wide = clip.resize_shortest_edge(np.zeros((90, 160, 3), np.uint8), 224)
    assert wide.shape == (224, 398, 3)  # int(224 * 160 / 90)
    with pytest.raises(ValueError, match="uint8"):
        clip.preprocess([frames[0].astype(np.float32)])


# ----------------------------------------------------------------------------- tokenizer


def write_vocab_folder(folder, record) -> str:
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(record["vocab"], f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write(record["merges_txt"])
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(record["tokenizer_config"], f)
    return str(folder)


def test_tokenizer_matches_transformers(tmp_path, tokenizer_record, fx):
    tok = clip.Tokenizer(write_vocab_folder(tmp_path, tokenizer_record))
    prompts = tokenizer_record["prompts"]
    ids = tok(prompts)
    assert ids.shape == (len(prompts), 16) and ids.dtype == np.int32
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.context_length) == (546, 547, 547, 16)
    np.testing.assert_array_equal(ids, fx["input_ids"])  # what the model fixture ran on
    labels = tokenizer_record["ids"]
    assert len(labels) == 3  # transformers 5 CLIPTokenizer; transformers 4 slow and fast
    for label, ref in labels.items():
        same = (ids == np.asarray(ref)).all(axis=1)
        if "(slow)" in label:  # its BasicTokenizer puts CJK characters apart: only there
            assert [p for p, s in zip(prompts, same, strict=True) if not s] == [CJK_PROMPT]
        else:
            assert same.all(), (label, [p for p, s in zip(prompts, same, strict=True) if not s])
    # Truncation keeps <|startoftext|> ... <|endoftext|>; padding is <|endoftext|>.
    long = ids[prompts.index("x" * 30)]
    assert long[0] == 546 and long[-1] == 547 and (long != 547).sum() == 15
    assert list(ids[prompts.index("")]) == [546] + [547] * 15
    decoded = [tok.decode(row) for row in ids]
    assert decoded == tokenizer_record["decoded"]


def test_tokenizer_reads_tokenizer_json(tmp_path, tokenizer_record):
    with open(tmp_path / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tokenizer_record["tokenizer_json"], f, ensure_ascii=False)
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump(tokenizer_record["tokenizer_config"], f)
    tok = clip.Tokenizer(tmp_path, context_length=16)
    label = next(k for k in tokenizer_record["ids"] if k.startswith("transformers 5"))
    np.testing.assert_array_equal(tok(tokenizer_record["prompts"]), tokenizer_record["ids"][label])
    np.testing.assert_array_equal(tok("a dog")[0, :4], tok(["a dog"])[0, :4])
    with pytest.raises(ConversionError, match="no tokenizer.json, nor vocab.json"):
        clip.Tokenizer(tmp_path / "missing")


# ----------------------------------------------------------------------------- files, errors


def write_safetensors(path, tensors: dict, header_patch=None) -> str:
    """The format written by hand: u64 header length, JSON header, raw little-endian bytes."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    if header_patch:
        header_patch(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return str(path)


def test_safetensors_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    f16 = rng.standard_normal((5,)).astype(np.float16)
    bf16 = rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)
    i64 = np.arange(6, dtype=np.int64).reshape(2, 3)
    scalar = np.array(4.6052, np.float32)
    path = write_safetensors(
        tmp_path / "model.safetensors",
        {"a": ("F32", f32), "b": ("F16", f16), "c": ("BF16", bf16), "d": ("I64", i64)}
        | {"logit_scale": ("F32", scalar)},
    )
    out = clip.read_safetensors(path)
    assert sorted(out) == ["a", "b", "c", "d", "logit_scale"]
    for key, ref in (("a", f32), ("b", f16), ("c", bf16), ("d", i64), ("logit_scale", scalar)):
        assert out[key].dtype == ref.dtype and out[key].shape == ref.shape, key
        np.testing.assert_array_equal(out[key].astype(np.float64), ref.astype(np.float64))


def test_safetensors_reader_names_the_file_on_a_malformed_header(tmp_path):
    good = {"w": ("F32", np.ones((2, 2), np.float32))}
    cases = {
        "not JSON": lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{oops"),
        "exceeds the file": lambda p: p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}"),
        "shorter than": lambda p: p.write_bytes(b"\x01\x02"),
        "bytes for shape": lambda p: write_safetensors(
            p, good, lambda h: h["w"].update(shape=[3, 2])
        ),
        "outside the file": lambda p: write_safetensors(
            p, good, lambda h: h["w"].update(data_offsets=[0, 64])
        ),
        "unsupported dtype": lambda p: write_safetensors(
            p, good, lambda h: h["w"].update(dtype="F8_E4M3")
        ),
    }
    for i, (why, write) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.safetensors"
        write(path)
        with pytest.raises(ConversionError) as e:
            clip.read_safetensors(path)
        message = str(e.value)
        assert message.startswith(f"{path}: not a safetensors file") and why in message, message
        assert "\n" not in message


def test_converter_names_missing_unexpected_and_mis_shaped_keys(state, config):
    broken = dict(state)
    del broken["text_model.encoder.layers.1.mlp.fc2.bias"]
    broken["vision_model.encoder.layers.0.self_attn.q_proj.weight"] = np.zeros((64, 63))
    broken["vision_model.extra.weight"] = np.zeros(3)
    with pytest.raises(ConversionError) as e:
        clip.variables_from_state_dict(broken, config, "ckpt/model.safetensors")
    message = str(e.value)
    assert message.startswith("ckpt/model.safetensors: not a CLIP state dict")
    assert "1 missing: text_model.encoder.layers.1.mlp.fc2.bias" in message
    assert (
        "1 wrong shape: vision_model.encoder.layers.0.self_attn.q_proj.weight (64, 63)" in message
    )
    assert "1 unexpected: vision_model.extra.weight" in message
    # A checkpoint of another variant: everything is named, briefly.
    with pytest.raises(ConversionError, match=r"wrong shape: .* and \d+ more"):
        clip.variables_from_state_dict(state, clip.VIT_B_32)
    # The position_ids buffers older transformers saved are accepted.
    old = dict(state, **{"text_model.embeddings.position_ids": np.arange(16)[None]})
    assert clip.variables_from_state_dict(old, config)["params"].keys() == {
        "vision_model",
        "text_model",
        "logit_scale",
    }


@pytest.mark.parametrize("file", clip.CHECKPOINT_FILES)
def test_load_folder_reads_both_checkpoint_formats(tmp_path, fx, state, file):
    with open(tmp_path / "config.json", "w") as f:
        f.write(str(fx["hf_config"]))
    old_buffer = {"vision_model.embeddings.position_ids": np.arange(17, dtype=np.int64)[None]}
    if file == "model.safetensors":  # as float16, as some hub files store it
        tensors = {k: ("F16", v.astype(np.float16)) for k, v in state.items()}
        tensors.update({k: ("I64", v) for k, v in old_buffer.items()})
        write_safetensors(tmp_path / file, tensors)
    else:
        testing.write_pth(str(tmp_path / file), dict(state, **old_buffer))
    config, variables = clip.load_folder(tmp_path)
    ours = clip.image_embeddings(variables, nhwc(fx["pixel_values"]), config)
    tol = RTOL if file == "pytorch_model.bin" else 2e-2  # float16 weights: only close
    assert rel_err(ours, fx["image_features"]) < tol
    with pytest.raises(ConversionError, match="no config.json"):
        clip.load_folder(tmp_path / "nothing")
