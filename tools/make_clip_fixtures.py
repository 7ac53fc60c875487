"""Writes tests/fixtures/features/clip_*: transformers' CLIP outputs that tests/test_clip.py replays.

Run from the repository root, first in a venv with torch and transformers 5 (never the
project's), then, for the tokenizer and image processor of transformers 4 (the slow,
pure-python ``CLIPTokenizer``), in one with transformers 4.57 (no torch needed):

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 transformers==5.25.0 pillow
    /tmp/torch/bin/python tools/make_clip_fixtures.py
    python3 -m venv /tmp/tf4 && /tmp/tf4/bin/pip install transformers==4.57.6 pillow
    /tmp/tf4/bin/python tools/make_clip_fixtures.py --transformers4

Nothing is downloaded (no ``from_pretrained`` of a hub name): the model is a small random
``CLIPModel(CLIPConfig(...))``, the tokenizer a made-up vocabulary built as CLIP's is (the 256
byte-level characters, the same with ``</w>``, one token per merge, then
``<|startoftext|>``, ``<|endoftext|>``).

* ``clip_random.npz`` (float32): the model's state dict (``state/<key>``, torch seed 0, layer
  norms and biases drawn too so their mapping is checked), its config (``hf_config``, JSON);
  ``get_image_features`` on three images (two frames preprocessed by the image processor, one
  N(0, 1)), ``get_text_features`` on the tokenised prompts, ``logits_per_image``; the text
  features of made-up ids with the config's ``eos_token_id`` (first end-of-text position) and
  with ``eos_token_id=2`` (``argmax(ids)``, the openai configs' legacy rule); both towers with
  ``hidden_act='gelu'``; the image processor (``CLIPImageProcessorPil``, which
  ``CLIPImageProcessor`` falls back to without torchvision, and transformers 4's
  ``CLIPImageProcessor``) on uint8 frames of other sizes: 48x64 and 70x40 (downscaling), 20x30
  (upscaling), 40x59 (an odd crop offset), 48x64 at size 23 with crop 32 (zero padding).
* ``clip_tokenizer.json``: the made-up ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``
  (openai's settings: pad = eos = ``<|endoftext|>``), the ``tokenizer.json`` transformers 5
  saves, the prompts and the ids each tokenizer gives (padding='max_length', max_length 16,
  truncation), and what transformers 5 decodes them to.
* ``clip_keys.json``: the configs of openai/clip-vit-{base-patch32, base-patch16,
  large-patch14, large-patch14-336} written out by hand from their config.json on the hub,
  the state-dict keys and shapes ``CLIPModel`` (meta device) has for ViT-B/32, and a digest of
  every variant's keys and shapes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "features")
NPZ = os.path.join(OUT, "clip_random.npz")
TOKENIZER_JSON = os.path.join(OUT, "clip_tokenizer.json")
KEYS_JSON = os.path.join(OUT, "clip_keys.json")

CONTEXT = 16
# Words whose merges make the made-up vocabulary, each merged left to right, in this rank order.
# "bark" and "ing</w>" split "barking"; "caf" and "ca" make "café" and "cat" share a prefix.
MERGE_WORDS = [
    "photo</w>",
    "of</w>",
    "dog</w>",
    "the</w>",
    "cat</w>",
    "bark",
    "ing</w>",
    "is</w>",
    "'s</w>",
    "play",
    "piano</w>",
    "and</w>",
    "dogs</w>",
    "music</w>",
    "caf",
    "ca",
]
PROMPTS = [
    "A photo of a dog barking.",
    "a PHOTO of THE cat's piano!!",
    "3 dogs and 12 cats...",
    "  two\tspaces\n here ",
    "",
    "café music",
    "the dog is playing the piano and the cat is barking loudly at the dogs",
    "dog's <|endoftext|> cat",
    "don't, won't; it'll (they're) I'm we've you'd",
    "ÀÉÎ naïve",
    "中文 dog",  # the slow tokenizer (no ftfy) splits CJK characters apart: it differs here
    "hello\u00a0world",
    "x" * 30,
    "a-b_c/d\\e",
    "\U0001f600 smile",
]
TOKENIZER_CONFIG = {
    # openai/clip-vit-base-patch32's tokenizer_config.json, with a shorter model_max_length.
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "do_lower_case": True,
    "model_max_length": CONTEXT,
    "tokenizer_class": "CLIPTokenizer",
}

# The public variants, from huggingface.co/openai/<name>/blob/main/config.json (their
# text_config / vision_config values; "eos_token_id": 2, "bos_token_id": 0, "pad_token_id": 1
# as those files state them).
_TEXT_B = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
_VISION_B = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
}
_TEXT_L = dict(_TEXT_B, hidden_size=768, intermediate_size=3072, num_attention_heads=12)
_VISION_L = dict(
    _VISION_B,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
)
VARIANT_CONFIGS = {
    "openai/clip-vit-base-patch32": {
        "projection_dim": 512,
        "text_config": _TEXT_B,
        "vision_config": _VISION_B,
    },
    "openai/clip-vit-base-patch16": {
        "projection_dim": 512,
        "text_config": _TEXT_B,
        "vision_config": dict(_VISION_B, patch_size=16),
    },
    "openai/clip-vit-large-patch14": {
        "projection_dim": 768,
        "text_config": _TEXT_L,
        "vision_config": _VISION_L,
    },
    "openai/clip-vit-large-patch14-336": {
        "projection_dim": 768,
        "text_config": _TEXT_L,
        "vision_config": dict(_VISION_L, image_size=336),
    },
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's / CLIP's byte -> printable character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def made_up_vocabulary() -> tuple[dict[str, int], list[str]]:
    """``(vocab, merges)`` laid out as CLIP's (bytes, bytes + ``</w>``, merges, specials)."""
    merges: list[str] = []
    for word in MERGE_WORDS:
        end = word.endswith("</w>")
        symbols = list(word[:-4] if end else word)
        if end:
            symbols[-1] += "</w>"
        current = symbols[0]
        for s in symbols[1:]:
            if f"{current} {s}" not in merges:
                merges.append(f"{current} {s}")
            current += s
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    for m in merges:
        if m.replace(" ", "") not in tokens:
            tokens.append(m.replace(" ", ""))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_folder(folder: str, vocab: dict, merges: list[str]) -> None:
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(TOKENIZER_CONFIG, f)


def tokenize(cls, folder: str) -> list[list[int]]:
    tok = cls.from_pretrained(folder)
    out = tok(PROMPTS, padding="max_length", max_length=CONTEXT, truncation=True)
    return [list(map(int, ids)) for ids in out["input_ids"]]


def test_frames() -> dict[str, np.ndarray]:
    sys.path.insert(0, REPO)
    from coleaf_jax.features import testing  # numpy only

    return {
        "frame_a": testing.test_frames(1, 48, 64, seed=0)[0],
        "frame_b": testing.test_frames(1, 70, 40, seed=1)[0],
        "frame_small": testing.test_frames(1, 20, 30, seed=2)[0],
        "frame_odd": testing.test_frames(1, 40, 59, seed=3)[0],
    }


def image_processor_cases(processor_cls, frames: dict) -> dict[str, np.ndarray]:
    """The preprocessing cases, NCHW float32 as the processor returns them."""

    def run(images, size, crop):
        p = processor_cls(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop})
        return np.asarray(p(images=images, return_tensors="np")["pixel_values"], np.float32)

    return {
        "pre_ab": run([frames["frame_a"], frames["frame_b"]], 32, 32),
        "pre_small": run([frames["frame_small"]], 32, 32),
        # 40x59 -> 32x47: crop offset 15 // 2 = 7 (torchvision's int(round(7.5)) is 8).
        "pre_odd": run([frames["frame_odd"]], 32, 32),
        # 48x64 at 23 -> 23x30, crop 32: padded by 9 (5 above, 4 below) and 2 rows.
        "pre_pad": run([frames["frame_a"]], 23, 32),
    }


def hf_test_config(vocab_size: int, eos: int, bos: int) -> dict:
    return {
        "projection_dim": 32,
        "logit_scale_init_value": 2.0,
        "text_config": {
            "vocab_size": vocab_size,
            "hidden_size": 48,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": CONTEXT,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-05,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        "vision_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-05,
        },
    }


def build(hf_config: dict, state=None):
    from transformers import CLIPConfig, CLIPModel

    model = CLIPModel(CLIPConfig(**json.loads(json.dumps(hf_config)))).eval()
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model


def randomise(model, seed: int = 0) -> None:
    """Draws the layer norms and biases too (transformers initialises them to 1 and 0)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.6)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.endswith("class_embedding"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def features(out):
    """transformers 5's get_*_features return an output whose pooler_output is projected."""
    return (out if hasattr(out, "numpy") else out.pooler_output).numpy()


def main_fixtures() -> None:
    import torch
    import transformers
    from transformers import CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4: CLIPImageProcessor is the Pillow one
        from transformers import CLIPImageProcessor as Processor

    torch.set_num_threads(2)
    torch.manual_seed(0)
    vocab, merges = made_up_vocabulary()
    with tempfile.TemporaryDirectory() as d:
        write_tokenizer_folder(d, vocab, merges)
        ids_main = tokenize(CLIPTokenizer, d)
        tok = CLIPTokenizer.from_pretrained(d)
        decoded = [tok.decode(ids, skip_special_tokens=True) for ids in ids_main]
        saved = os.path.join(d, "saved")
        CLIPTokenizer.from_pretrained(d).save_pretrained(saved)
        with open(os.path.join(saved, "tokenizer.json"), encoding="utf-8") as f:
            tokenizer_json = json.load(f)
        with open(os.path.join(d, "merges.txt"), encoding="utf-8") as f:
            merges_txt = f.read()
    label = f"transformers {transformers.__version__} {CLIPTokenizer.__name__}"
    with open(TOKENIZER_JSON, "w", encoding="utf-8") as f:
        json.dump(
            {
                "vocab": vocab,
                "merges_txt": merges_txt,
                "tokenizer_config": TOKENIZER_CONFIG,
                "tokenizer_json": tokenizer_json,
                "context_length": CONTEXT,
                "prompts": PROMPTS,
                "ids": {label: ids_main},
                "decoded": decoded,
            },
            f,
            ensure_ascii=False,
            indent=0,
        )

    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    hf_config = hf_test_config(len(vocab), eos, bos)
    model = build(hf_config)
    randomise(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    frames = test_frames()
    pre = image_processor_cases(Processor, frames)
    rng = np.random.default_rng(0)
    pixels = np.concatenate([pre["pre_ab"], rng.standard_normal((1, 3, 32, 32)).astype(np.float32)])
    input_ids = np.asarray(ids_main, np.int64)
    # Made-up ids (length 12 < context): no end-of-text (pooled at 0 with the config's
    # eos_token_id, at argmax(ids) with 2), one, two, one early.
    random_ids = rng.integers(0, eos, size=(4, 12))
    random_ids[0, 0] = 1
    random_ids[1, 5] = eos
    random_ids[2, [3, 8]] = eos
    random_ids[3, 2] = eos
    with torch.no_grad():
        px, ids = torch.from_numpy(pixels), torch.from_numpy(input_ids)
        image_features = features(model.get_image_features(pixel_values=px))
        text_features = features(model.get_text_features(input_ids=ids))
        # The tokenizer's attention mask: 1 up to and with the first end-of-text token.
        first_eos = (ids == eos).int().argmax(dim=-1, keepdim=True)
        mask = (torch.arange(ids.shape[1])[None] <= first_eos).long()
        masked = features(model.get_text_features(input_ids=ids, attention_mask=mask))
        out = model(input_ids=ids, pixel_values=px)
        random_features = features(model.get_text_features(input_ids=torch.from_numpy(random_ids)))
        legacy_config = json.loads(json.dumps(hf_config))
        legacy_config["text_config"]["eos_token_id"] = 2
        legacy = build(legacy_config, state)
        random_legacy = features(legacy.get_text_features(input_ids=torch.from_numpy(random_ids)))
        gelu_config = json.loads(json.dumps(hf_config))
        gelu_config["text_config"]["hidden_act"] = gelu_config["vision_config"]["hidden_act"] = (
            "gelu"
        )
        gelu = build(gelu_config, state)
        image_gelu = features(gelu.get_image_features(pixel_values=px))
        text_gelu = features(gelu.get_text_features(input_ids=ids))
    np.testing.assert_allclose(out.logits_per_image.numpy(), out.logits_per_text.numpy().T)
    # The padding mask hides only positions after the end-of-text token, which the causal
    # mask already hides from the pooled state: the models here take no mask.
    print(
        f"attention: {model.config._attn_implementation}; padding mask changes the text "
        f"features by {np.abs(masked - text_features).max():.2e}"
    )
    assert not np.allclose(random_features, random_legacy)
    np.savez_compressed(
        NPZ,
        **{f"state/{k}": v.numpy().astype(np.float32) for k, v in state.items()},
        hf_config=np.array(json.dumps(hf_config)),
        versions=np.array(f"torch {torch.__version__}, transformers {transformers.__version__}"),
        image_processor=np.array(Processor.__name__),
        **frames,
        **pre,
        pixel_values=pixels,
        input_ids=input_ids.astype(np.int32),
        image_features=image_features,
        text_features=text_features,
        logits_per_image=out.logits_per_image.numpy(),
        random_ids=random_ids.astype(np.int32),
        random_text_features=random_features,
        random_text_features_legacy=random_legacy,
        image_features_gelu=image_gelu,
        text_features_gelu=text_gelu,
    )


def key_digest(shapes: dict) -> dict:
    lines = "\n".join(f"{k} {list(v)}" for k, v in sorted(shapes.items()))
    return {
        "count": len(shapes),
        "elements": int(sum(int(np.prod(v)) for v in shapes.values())),
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
    }


def keys_fixture() -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    digests, b32 = {}, None
    for name, cfg in VARIANT_CONFIGS.items():
        with torch.device("meta"):
            model = CLIPModel(CLIPConfig(**json.loads(json.dumps(cfg))))
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        digests[name] = key_digest(shapes)
        if name == "openai/clip-vit-base-patch32":
            b32 = shapes
    with open(KEYS_JSON, "w") as f:
        json.dump(
            {
                "configs": VARIANT_CONFIGS,
                "digests": digests,
                "openai/clip-vit-base-patch32": b32,
            },
            f,
            indent=0,
            sort_keys=True,
        )


def transformers4_fixtures() -> None:
    """Adds transformers 4's slow CLIPTokenizer and CLIPTokenizerFast ids, and checks its
    (Pillow) CLIPImageProcessor against the recorded preprocessing."""
    import transformers
    from transformers import CLIPImageProcessor, CLIPTokenizer, CLIPTokenizerFast

    assert transformers.__version__.startswith("4."), transformers.__version__
    with open(TOKENIZER_JSON, encoding="utf-8") as f:
        record = json.load(f)
    assert record["prompts"] == PROMPTS, "run the main step first (the prompts changed)"
    with tempfile.TemporaryDirectory() as d:
        write_tokenizer_folder(d, record["vocab"], record["merges_txt"].split("\n")[1:-1])
        for cls, kind in ((CLIPTokenizer, "slow"), (CLIPTokenizerFast, "fast")):
            label = f"transformers {transformers.__version__} {cls.__name__} ({kind})"
            record["ids"][label] = tokenize(cls, d)
    fx = np.load(NPZ)
    frames = {k: fx[k] for k in ("frame_a", "frame_b", "frame_small", "frame_odd")}
    ours = image_processor_cases(CLIPImageProcessor, frames)
    diff = max(float(np.abs(ours[k] - fx[k]).max()) for k in ours)
    record[f"transformers {transformers.__version__} CLIPImageProcessor max abs difference"] = diff
    print(f"transformers {transformers.__version__} CLIPImageProcessor vs recorded: {diff:.2e}")
    with open(TOKENIZER_JSON, "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--transformers4",
        action="store_true",
        help="the second step, in a venv with transformers 4.x: add its tokenizers' ids",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
    os.makedirs(OUT, exist_ok=True)
    if args.transformers4:
        transformers4_fixtures()
    else:
        main_fixtures()
        keys_fixture()
    for name in (NPZ, TOKENIZER_JSON, KEYS_JSON):
        if os.path.exists(name):
            print(f"{name}: {os.path.getsize(name) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
