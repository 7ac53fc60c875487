"""Writes tests/fixtures/features/clap_*: what tests/test_clap.py replays without torch.

Run once, from the repository root, in a venv with torch and the reference packages
(never the project's); nothing is downloaded at run time (no hub name is ever loaded):

    python3 -m venv /tmp/clapref  # with torch 2.13 CPU, e.g. over /tmp/torch's site-packages
    /tmp/clapref/bin/pip install --no-deps laion_clap==1.1.7 torchlibrosa==0.1.0 \\
        torchaudio==2.11.1 transformers==4.51.3 'tokenizers>=0.21,<0.22' \\
        'huggingface_hub>=0.30,<1.0'
    /tmp/clapref/bin/pip install librosa==0.11.0
    /tmp/clapref/bin/python tools/make_clap_fixtures.py

PyPI's torchaudio wheel is a CUDA build: with a CPU torch, move its ``lib/*.so`` aside
(torchaudio then runs without its extension; ``MelSpectrogram`` and ``AmplitudeToDB`` are
plain torch). ``laion_clap``'s imports that play no part here (h5py, webdataset, wget,
wandb, ftfy, braceexpand, progressbar, torchvision) are stubbed.

The models are ``laion_clap``'s own classes (``clap_module.model.CLAP``,
``htsat.HTSAT_Swin_Transformer``, transformers' ``RobertaModel`` from a ``RobertaConfig``),
made small, with seeded random weights, in eval mode:

* ``clap_random.npz``: a small HTSAT (embed_dim 8, depths (2, 2, 2, 1), 7 classes; the
  real front end and 256 x 256 geometry) and RoBERTa (2 layers, width 32, the made-up
  vocabulary below), joint width 24, both with and without fusion (``aff_2d``; the
  fusion model's extra weights only); their state dict (``state/<key>``; of torchlibrosa's
  DFT kernels only four rows, which the tests compare with their own); waveforms (int16)
  through ``get_audio_features`` (repeatpad; ``'fusion'`` / ``'rand_trunc'``) and
  ``CLAP.encode_audio`` / ``audio_projection`` / ``get_audio_embedding``; the final
  tokens and VALOR's ``feat_maps`` regrouping; the front ends' log-mel; the fusion
  model's ``longer`` path for an 11 s clip (``np.random.seed(1234)``; the shrunk channel
  with and without antialiasing, torchvision's ``Resize`` being replaced by the
  ``F.interpolate`` call it makes on tensors); token ids from
  transformers' slow ``RobertaTokenizer`` on a byte-level BPE vocabulary trained here
  (``vocab_json``, ``merges_txt``); ``encode_text`` / ``get_text_embedding``; VALOR's
  logits; librosa's Slaney and torchaudio's HTK filter banks for the real HTSAT settings;
  ``laion_clap``'s int16 round trip.
* ``clap_keys.json``: the real state-dict keys and shapes of HTSAT-tiny + roberta-base
  with and without fusion (built at full size, random init; names and shapes only).
* ``clap_checkpoint.pt``: a checkpoint laid out as ``laion_clap``'s training saves them
  (``epoch``, ``name``, ``state_dict`` with ``module.`` keys, Adam ``optimizer`` state,
  ``scaler``) for a few tensors, for the torch-free reader.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import types

import numpy as np

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the hub (nothing is loaded by name here)
os.environ["TRANSFORMERS_OFFLINE"] = "1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "features")

# The small model (tests/test_clap.py mirrors these numbers in its CLAPConfig).
SMALL_HTSAT = dict(embed_dim=8, depths=[2, 2, 2, 1], num_heads=[1, 2, 4, 8], class_num=7)
SMALL_ROBERTA = dict(hidden=32, layers=2, heads=4, intermediate=64, max_positions=80)
SMALL_JOINT = 24
TEXTS = [
    "This is a sound of speech",
    "This is a sound of chicken, rooster",
    "This is a sound of baby cry, infant cry",
    "  Two spaces, digits 1234 and punctuation!? it's (fine)\nnew line",
    "Unicode: café, naïve, 東京, emoji 🎻 ...",
    " ".join(["a violin and a cello play while the dog barks"] * 12),  # > 75 tokens
]
TEXT_EMBED_TEXTS = [0, 1, 3, 5]  # the texts whose embeddings are recorded
STFT_ROWS = [0, 1, 100, 512]  # rows of torchlibrosa's DFT kernels kept
RESIZE_ANTIALIAS = [True]  # the torchvision Resize stand-in's antialias (>= 0.17: True)
LONG_SEED = 1234  # np.random.seed before the long clip's get_audio_features


class Resize:
    """``torchvision.transforms.Resize(size)`` on a ``(C, H, W)`` tensor, as torchvision's
    tensor ``resize`` does it: bilinear ``F.interpolate`` without ``align_corners``,
    antialiased when ``RESIZE_ANTIALIAS[0]`` (the default since torchvision 0.17)."""

    def __init__(self, size):
        self.size = list(size)

    def __call__(self, img):
        import torch.nn.functional as F

        return F.interpolate(
            img[None],
            size=self.size,
            mode="bilinear",
            align_corners=False,
            antialias=RESIZE_ANTIALIAS[0],
        )[0]


def stub_modules() -> None:
    """Stand-ins for imports of laion_clap that no code path here uses (after transformers,
    which looks for some of them)."""
    import importlib.machinery

    import transformers  # noqa: F401

    for name in ("h5py", "braceexpand", "webdataset", "wget", "wandb", "ftfy", "progressbar"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["ftfy"].fix_text = lambda s: s
    tv = types.ModuleType("torchvision")
    tv.__path__ = []
    transforms = types.ModuleType("torchvision.transforms")
    for attr in (
        "Normalize",
        "Compose",
        "RandomResizedCrop",
        "InterpolationMode",
        "ToTensor",
        "CenterCrop",
    ):
        setattr(transforms, attr, type(attr, (), {}))
    transforms.Resize = Resize
    datasets = types.ModuleType("torchvision.datasets")
    ops = types.ModuleType("torchvision.ops")
    ops.__path__ = []
    misc = types.ModuleType("torchvision.ops.misc")
    misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})
    tv.transforms, tv.datasets, tv.ops, ops.misc = transforms, datasets, ops, misc
    for mod in (tv, transforms, datasets, ops, misc):
        sys.modules[mod.__name__] = mod
    for name, mod in list(sys.modules.items()):
        if getattr(mod, "__spec__", True) is None:
            mod.__spec__ = importlib.machinery.ModuleSpec(name, None)


def import_laion_clap():
    """``import laion_clap`` (puts ``clap_module`` and ``training`` on sys.path) with the
    hub tokenizers that training/data.py loads at import replaced by None."""
    import transformers

    stub_modules()
    classes = (
        transformers.BertTokenizer,
        transformers.RobertaTokenizer,
        transformers.BartTokenizer,
    )
    own = {c: c.__dict__.get("from_pretrained") for c in classes}
    for c in classes:
        c.from_pretrained = classmethod(lambda cls, name, *a, **k: None)
    try:
        import laion_clap
    finally:
        for c, descriptor in own.items():
            if descriptor is None:
                del c.from_pretrained
            else:
                c.from_pretrained = descriptor
    return laion_clap


def roberta_config(vocab_size: int, small: bool):
    from transformers import RobertaConfig

    kw = dict(  # roberta-base's config.json
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_act="gelu",
    )
    if small:
        kw.update(
            vocab_size=vocab_size,
            hidden_size=SMALL_ROBERTA["hidden"],
            num_hidden_layers=SMALL_ROBERTA["layers"],
            num_attention_heads=SMALL_ROBERTA["heads"],
            intermediate_size=SMALL_ROBERTA["intermediate"],
            max_position_embeddings=SMALL_ROBERTA["max_positions"],
        )
    return RobertaConfig(**kw)


def build_clap(fusion: bool, small: bool, vocab_size: int = 0):
    """laion_clap's CLAP('HTSAT-tiny', 'roberta') as CLAP_Module builds it, with
    RobertaModel.from_pretrained('roberta-base') replaced by a RobertaModel of the same
    configuration (random init) and, when ``small``, HTSAT and RoBERTa shrunk."""
    import torch
    from clap_module import model as clap_model
    from clap_module.factory import _MODEL_CONFIGS
    from clap_module.htsat import HTSAT_Swin_Transformer
    from transformers import RobertaModel

    cfg = json.loads(json.dumps(_MODEL_CONFIGS["HTSAT-tiny"]))
    cfg["text_cfg"]["model_type"] = "roberta"
    rcfg = roberta_config(vocab_size, small)

    class _Roberta:
        @staticmethod
        def from_pretrained(name):
            assert name == "roberta-base", name
            return RobertaModel(rcfg)

    orig_roberta, orig_htsat = clap_model.RobertaModel, clap_model.create_htsat_model

    def small_htsat(audio_cfg, enable_fusion=False, fusion_type="None"):
        return HTSAT_Swin_Transformer(
            spec_size=256,
            patch_size=4,
            patch_stride=(4, 4),
            num_classes=SMALL_HTSAT["class_num"],
            embed_dim=SMALL_HTSAT["embed_dim"],
            depths=SMALL_HTSAT["depths"],
            num_heads=SMALL_HTSAT["num_heads"],
            window_size=8,
            config=audio_cfg,
            enable_fusion=enable_fusion,
            fusion_type=fusion_type,
        )

    clap_model.RobertaModel = _Roberta
    if small:
        clap_model.create_htsat_model = small_htsat
        cfg["audio_cfg"]["class_num"] = SMALL_HTSAT["class_num"]
        cfg["embed_dim"] = SMALL_HTSAT["embed_dim"] * 8
    try:
        kw = dict(enable_fusion=fusion, fusion_type="aff_2d" if fusion else "None")
        if small:
            kw["joint_embed_shape"] = SMALL_JOINT
        model = clap_model.CLAP(**cfg, **kw)
    finally:
        clap_model.RobertaModel, clap_model.create_htsat_model = orig_roberta, orig_htsat
    if small:  # encode_text's projection is hard-wired to roberta-base's 768
        model.text_projection = torch.nn.Sequential(
            torch.nn.Linear(SMALL_ROBERTA["hidden"], SMALL_JOINT),
            torch.nn.ReLU(),
            torch.nn.Linear(SMALL_JOINT, SMALL_JOINT),
        )
    return model.eval(), cfg


def random_state(model, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded values for every learnt tensor (by module type), buffers kept."""
    import torch

    rng = np.random.default_rng(seed)
    kinds = {}
    for mname, mod in model.named_modules():
        prefix = mname + "." if mname else ""
        if "spectrogram_extractor" in mname or "logmel_extractor" in mname:
            continue
        if isinstance(mod, torch.nn.LayerNorm):
            kinds[prefix + "weight"], kinds[prefix + "bias"] = "ln_w", "small"
        elif isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            bn0 = mname.endswith("bn0")
            kinds[prefix + "weight"], kinds[prefix + "bias"] = "ln_w", "small"
            kinds[prefix + "running_mean"] = "bn0_mean" if bn0 else "small"
            kinds[prefix + "running_var"] = "bn0_var" if bn0 else "var"
        elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            kinds[prefix + "weight"] = "fan_in"
            if mod.bias is not None:
                kinds[prefix + "bias"] = "small"
        elif isinstance(mod, torch.nn.Embedding):
            kinds[prefix + "weight"] = "normal"
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    for key in sorted(state):
        shape = state[key].shape
        kind = kinds.get(key)
        if key.endswith("relative_position_bias_table"):
            v = rng.normal(0.0, 0.5, shape)
        elif key.startswith("logit_scale"):
            v = np.log(1 / 0.07) + rng.normal(0.0, 0.1, shape)
        elif kind == "ln_w":
            v = rng.uniform(0.7, 1.3, shape)
        elif kind == "small":
            v = rng.normal(0.0, 0.1, shape)
        elif kind == "var":
            v = rng.uniform(0.5, 1.5, shape)
        elif kind == "bn0_mean":
            v = rng.normal(-40.0, 5.0, shape)
        elif kind == "bn0_var":
            v = rng.uniform(100.0, 400.0, shape)
        elif kind == "fan_in":
            v = rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))
        elif kind == "normal":
            v = rng.standard_normal(shape)
        else:
            continue  # buffers (DFT kernels, melW, indices, masks, counters)
        state[key] = np.asarray(v, np.float32)
    return state


def load(model, state: dict) -> None:
    import torch

    own = model.state_dict()
    model.load_state_dict({k: torch.from_numpy(np.asarray(state[k])) for k in own}, strict=True)


def waveforms_i16(length: int, count: int, seed: int) -> np.ndarray:
    """``(count, length)`` int16: tones, a chirp and noise at 48 kHz (broadband, so that
    no mel band lies far below a frame's loudest)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 48000.0
    out = []
    for i in range(count):
        x = (
            0.25 * np.sin(2 * np.pi * (330 + 110 * i) * t)
            + 0.15 * np.sin(2 * np.pi * (2500 + 700 * i) * t)
            + 0.1 * np.sin(2 * np.pi * (200 + 6000 * t) * t)
            + 0.08 * rng.standard_normal(length)
        )
        out.append(np.clip(x, -1, 1))
    return np.round(np.stack(out) * 32767).astype(np.int16)


def tokenizer_fixture(tmp: str) -> dict:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    corpus = [t.lower() for t in TEXTS] + TEXTS * 3
    corpus += [
        "this is a sound of " + c
        for c in (
            "car cheering dog cat frying basketball bounce fire alarm chainsaw cello banjo "
            "singing violin vacuum cleaner baby laughter accordion lawn mower motorcycle "
            "helicopter acoustic guitar telephone bell ringing blender clapping"
        ).split()
    ]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        corpus,
        vocab_size=420,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(tmp)
    vocab_path, merges_path = os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt")
    slow = RobertaTokenizer(vocab_path, merges_path)
    assert type(slow).__module__.endswith("tokenization_roberta"), type(slow)
    enc = slow(TEXTS, padding="max_length", truncation=True, max_length=77)
    with open(vocab_path, encoding="utf-8") as f:
        vocab_json = f.read()
    with open(merges_path, encoding="utf-8") as f:
        merges_txt = f.read()
    assert json.loads(vocab_json)["<pad>"] == 1
    return {
        "vocab_json": np.array(vocab_json),
        "merges_txt": np.array(merges_txt),
        "texts": np.array(TEXTS),
        "token_ids": np.asarray(enc["input_ids"], np.int32),
        "token_mask": np.asarray(enc["attention_mask"], np.int32),
        "vocab_size": np.int64(len(slow)),
    }


def audio_reference(model, cfg, waves_i16: np.ndarray, fusion: bool) -> dict:
    """CLAP_Module.get_audio_embedding_from_data's path for one batch, plus HTSAT's final
    tokens (a forward hook on ``audio_branch.norm``) and VALOR's feat_maps regrouping."""
    import torch
    import torch.nn.functional as F
    from laion_clap.training.data import get_audio_features, int16_to_float32

    items = []
    for w in waves_i16:
        wave = torch.from_numpy(int16_to_float32(w)).float()
        items.append(
            get_audio_features(
                {},
                wave,
                480000,
                data_truncating="fusion" if fusion else "rand_trunc",
                data_filling="repeatpad",
                audio_cfg=cfg["audio_cfg"],
            )
        )
    batch = {k: torch.cat([d[k].unsqueeze(0) for d in items], dim=0) for k in items[0]}
    captured = {}
    hook = model.audio_branch.norm.register_forward_hook(
        lambda mod, inp, out: captured.__setitem__("tokens", out.detach())
    )
    branch = model.audio_branch
    with torch.no_grad():
        out = model.encode_audio(batch, device="cpu")
        projected = model.audio_projection(out["embedding"])
        normalized = model.get_audio_embedding(items)
        if fusion:
            mel = batch["mel_fusion"][:, 0]
        else:
            mel = branch.logmel_extractor(branch.spectrogram_extractor(batch["waveform"]))[:, 0]
    hook.remove()
    assert torch.allclose(normalized, F.normalize(projected, dim=-1), atol=1e-6)
    # VALOR utils/clap_utils.py htsat_forward_features: the regrouped map, flattened.
    x = captured["tokens"]
    b, _, c = x.shape
    sf = 256 // (2 ** (len(branch.depths) - 1)) // branch.patch_stride[0]
    st = 256 // (2 ** (len(branch.depths) - 1)) // branch.patch_stride[1]
    x = x.permute(0, 2, 1).contiguous().reshape(b, c, sf, st)
    cfb = sf // branch.freq_ratio
    x = (
        x.reshape(b, c, sf // cfb, cfb, st)
        .permute(0, 1, 3, 2, 4)
        .contiguous()
        .reshape(b, c, cfb, -1)
    )
    feat_maps = torch.flatten(x, 2).permute(0, 2, 1).contiguous()
    return {
        "log_mel": mel[0, :200].numpy(),
        "embedding": out["embedding"].numpy(),
        "clipwise": out["clipwise_output"].numpy(),
        "projected": projected.numpy(),
        "normalized": normalized.numpy(),
        "feat_maps": feat_maps.numpy(),
    }


def long_clip(waves_a: np.ndarray) -> np.ndarray:
    """An 11 s int16 clip made of batch a's two seconds (tests/test_clap.py rebuilds it)."""
    a0, a1 = waves_a
    return np.concatenate([a0, a1, -a0, a1[::-1], a0[::-1], -a1, a0, a1, -a0, -a1, a0[::-1]])


def long_reference(model, cfg, waves_a: np.ndarray) -> dict:
    """The fusion model's ``longer`` path: a batch of the 11 s clip and a 1 s clip, with
    the shrunk channel antialiased or not (torchvision >= 0.17 / older)."""
    import torch
    from laion_clap.training.data import get_audio_features, int16_to_float32

    if not hasattr(np.random, "integers"):  # the repository's HEAD calls np.random.integers
        np.random.integers = np.random.randint  # for the crop (PyPI 1.1.4-1.1.7: randint)
    out = {}
    for aa in (True, False):
        RESIZE_ANTIALIAS[0] = aa
        np.random.seed(LONG_SEED)
        items = []
        for w in (long_clip(waves_a), waves_a[0]):
            wave = torch.from_numpy(int16_to_float32(w)).float()
            items.append(
                get_audio_features({}, wave, 480000, "fusion", "repeatpad", cfg["audio_cfg"])
            )
        batch = {k: torch.cat([d[k].unsqueeze(0) for d in items], dim=0) for k in items[0]}
        assert batch["longer"][:, 0].tolist() == [True, False]
        with torch.no_grad():
            enc = model.encode_audio(batch, device="cpu")
            normalized = model.get_audio_embedding(items)
        tag = "aa" if aa else "noaa"
        out[f"long_{tag}/mel_fusion"] = batch["mel_fusion"][0, :, :50].numpy()
        out[f"long_{tag}/embedding"] = enc["embedding"].numpy()
        out[f"long_{tag}/clipwise"] = enc["clipwise_output"].numpy()
        out[f"long_{tag}/normalized"] = normalized.numpy()
    RESIZE_ANTIALIAS[0] = True
    return out


def real_keys() -> dict:
    out = {}
    for name, fusion in (("fusion", True), ("nonfusion", False)):
        model, _ = build_clap(fusion, small=False)
        out[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
        del model
    return out


def checkpoint_fixture(model, path: str) -> dict:
    """A training checkpoint's layout (training/main.py: epoch, name, state_dict of the
    DDP-wrapped model, optimizer, scaler) for a few of the small model's tensors."""
    import torch

    keep = [
        "audio_projection.0.weight",
        "audio_projection.0.bias",
        "audio_projection.2.weight",
        "logit_scale_a",
    ]
    params = dict(model.named_parameters())
    tensors = [params[k].detach().clone().requires_grad_(True) for k in keep]
    opt = torch.optim.Adam(tensors, lr=1e-4)
    sum((t**2).sum() for t in tensors).backward()
    opt.step()
    state = {"module." + k: t.detach() for k, t in zip(keep, tensors)}
    torch.save(
        {
            "epoch": 45,
            "name": "2022_11_14-fusion",
            "state_dict": state,
            "optimizer": opt.state_dict(),
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 17},
        },
        path,
    )
    return {f"checkpoint/{k}": v.numpy() for k, v in state.items()}


def main() -> None:
    import librosa
    import torch
    import torchaudio

    torch.manual_seed(0)
    torch.set_num_threads(2)
    import_laion_clap()

    os.makedirs(OUT, exist_ok=True)
    fx: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        fx.update(tokenizer_fixture(tmp))
    vocab_size = int(fx["vocab_size"])

    fusion_model, cfg = build_clap(True, small=True, vocab_size=vocab_size)
    plain_model, _ = build_clap(False, small=True, vocab_size=vocab_size)
    state = random_state(fusion_model, seed=0)
    load(fusion_model, state)
    load(plain_model, state)
    for key, value in state.items():
        if key.endswith(("stft.conv_real.weight", "stft.conv_imag.weight")):
            fx[f"stft_rows/{key.rsplit('.', 2)[-2]}"] = value[STFT_ROWS, 0]
        else:
            fx[f"state/{key}"] = value

    batches = {"a": waveforms_i16(48000, 2, seed=1), "b": waveforms_i16(37000, 1, seed=2)}
    for name, waves in batches.items():
        fx[f"wave_{name}"] = waves
        for variant, model in (("fusion", fusion_model), ("plain", plain_model)):
            for k, v in audio_reference(model, cfg, waves, variant == "fusion").items():
                fx[f"{variant}_{name}/{k}"] = v

    fx.update(long_reference(fusion_model, cfg, batches["a"]))

    ids = torch.from_numpy(fx["token_ids"][TEXT_EMBED_TEXTS]).long()
    mask = torch.from_numpy(fx["token_mask"][TEXT_EMBED_TEXTS]).long()
    with torch.no_grad():
        text_raw = fusion_model.encode_text({"input_ids": ids, "attention_mask": mask}, "cpu")
        text = fusion_model.get_text_embedding({"input_ids": ids, "attention_mask": mask})
        scale_a, _ = fusion_model(None, None, "cpu")
        audio = torch.from_numpy(fx["fusion_a/normalized"])
        logits = scale_a * audio @ text.t()  # VALOR calculate_audio_logits
    fx["text_projected"] = text_raw.numpy()
    fx["text_normalized"] = text.numpy()
    fx["logits"] = logits.numpy()

    from laion_clap.training.data import float32_to_int16, int16_to_float32

    raw = np.random.default_rng(3).uniform(-1.2, 1.2, 4000).astype(np.float32)
    fx["quantize_in"] = raw
    fx["quantize_out"] = int16_to_float32(float32_to_int16(raw))

    fx["librosa_slaney"] = librosa.filters.mel(
        sr=48000, n_fft=1024, n_mels=64, fmin=50, fmax=14000
    ).T
    fx["torchaudio_htk"] = torchaudio.functional.melscale_fbanks(
        513, 50.0, 14000.0, 64, 48000, norm=None, mel_scale="htk"
    ).numpy()
    fx["small_slaney"] = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=0.0).T
    fx.update(checkpoint_fixture(fusion_model, os.path.join(OUT, "clap_checkpoint.pt")))
    import laion_clap as lc
    import torchlibrosa
    import transformers

    fx["versions"] = np.array(
        json.dumps(
            {
                "torch": torch.__version__,
                "torchaudio": torchaudio.__version__,
                "transformers": transformers.__version__,
                "librosa": librosa.__version__,
                "torchlibrosa": getattr(torchlibrosa, "__version__", "0.1.0"),
                "laion_clap": getattr(lc, "__version__", "1.1.7"),
            }
        )
    )
    np.savez_compressed(os.path.join(OUT, "clap_random.npz"), **fx)
    with open(os.path.join(OUT, "clap_keys.json"), "w") as f:
        json.dump(real_keys(), f, indent=0, sort_keys=True)
    for name in ("clap_random.npz", "clap_keys.json", "clap_checkpoint.pt"):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name)) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
