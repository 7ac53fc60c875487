"""CLIP's image and text towers in flax, matching HuggingFace transformers' ``CLIPModel``.

Reference: transformers 5.25's ``models/clip/modeling_clip.py`` (``CLIPVisionEmbeddings``,
``CLIPTextEmbeddings``, ``CLIPAttention``, ``CLIPMLP``, ``CLIPEncoderLayer``,
``CLIPVisionModel``, ``CLIPTextModel``, ``CLIPModel.get_image_features`` /
``get_text_features`` / ``forward``), ``configuration_clip.py``, ``tokenization_clip.py``
(``CLIPTokenizer``, the tokenizers-backed one; transformers 4.x's ``CLIPTokenizerFast``)
and ``image_processing_pil_clip.py`` with ``image_transforms.py`` (``CLIPImageProcessorPil``,
what ``CLIPImageProcessor`` is without torchvision and what transformers 4.x's
``CLIPImageProcessor`` did). Matched, in float32 (``tests/test_clip.py`` replays
``tools/make_clip_fixtures.py``'s recording of transformers on random weights):

* :class:`CLIPVision`: patch embedding (a stride-``patch`` convolution without bias),
  class embedding, position embedding, ``pre_layrnorm``, pre-norm encoder layers
  (``layer_norm1`` -> self-attention with q/k/v/out projections with biases, scale
  ``head_dim ** -0.5`` -> residual -> ``layer_norm2`` -> ``fc1`` -> activation -> ``fc2`` ->
  residual), ``post_layernorm`` on the class token, ``visual_projection`` (no bias).
* :class:`CLIPText`: token + position embeddings, causal self-attention, the same layers,
  ``final_layer_norm``, the hidden state at the end-of-text position (transformers' current
  rule: ``argmax(ids)`` when the config's ``eos_token_id`` is 2, as the openai configs on
  the hub still say, else the first position of ``eos_token_id``), ``text_projection``.
* :func:`logits`: ``exp(logit_scale) * cos-sim`` (``CLIPModel.forward``'s ``logits_per_image``).
* :func:`variables_from_state_dict`: HF state-dict keys -> flax variables, with
  :func:`read_safetensors` (``model.safetensors``) and ``convert.read_pth``
  (``pytorch_model.bin``); no torch.
* :class:`Tokenizer`: byte-level BPE with ``</w>`` suffixes, lower-casing, whitespace
  clean-up, ``<|startoftext|>`` ... ``<|endoftext|>``, padded and truncated to the context.
* :func:`preprocess`: shortest side to ``size`` (Pillow bicubic), centre crop, ``/ 255``,
  OpenAI's mean and std.

Images are NHWC here (transformers takes NCHW ``pixel_values``). Not covered: position
embedding interpolation for other image sizes (``interpolate_pos_encoding``), attention
masks other than the causal one (padding comes after the end-of-text token, which the
causal mask already keeps out of the pooled state), and transformers 5's default image
processor where torchvision is installed (a torchvision tensor resize, not Pillow's: not
recorded; ``CLIPImageProcessorPil``, its fallback, and transformers 4 use Pillow, as here).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from PIL import Image
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as _Backend
from tokenizers.models import BPE

from coleaf_jax.features import convert
from coleaf_jax.features.convert import MAX_NDIM, ConversionError, read_pth

# ----------------------------------------------------------------------------- configs


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI's activation: ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
}


def _whole(value) -> int:
    """A size from a JSON config: an integer (``768``, or ``768.0``); anything else
    (``true``, ``"768"``, ``1e400``, ``NaN``) is a ``ValueError``."""
    if type(value) is float and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if type(value) is not int:
        raise ValueError(f"{str(value)[:40]} is not an integer")
    return value


def _epsilon(value) -> float:
    if type(value) not in (int, float) or not 0.0 < value < 1.0:
        raise ValueError(f"layer_norm_eps {str(value)[:40]} is not a number in (0, 1)")
    return float(value)


# Limits on a configuration's sizes (convert.check_sizes), checked before anything is
# sized from them: far above the largest public CLIP (ViT-bigG/14: vision 1664 wide, 48
# layers, 16 heads, MLP 8192, image 224; text 1280 wide, 32 layers, 20 heads, MLP 5120).
_VISION_LIMITS = {
    "image_size": (1, 4096),
    "patch_size": (1, 4096),
    "width": (1, 16384),
    "layers": (1, 256),
    "heads": (1, 1024),
    "mlp_dim": (1, 65536),
}
_TEXT_LIMITS = {
    "vocab_size": (1, 1 << 20),
    "context_length": (1, 1 << 14),
    "width": (1, 16384),
    "layers": (1, 256),
    "heads": (1, 1024),
    "mlp_dim": (1, 65536),
    "eos_token_id": (0, 1 << 20),
}


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The image tower (transformers' ``CLIPVisionConfig``: ``image_size``, ``patch_size``,
    ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``)."""

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072

    def __post_init__(self):
        convert.check_sizes(self, _VISION_LIMITS, "CLIP vision")
        if self.patch_size > self.image_size:
            raise ValueError(f"CLIP patch_size {self.patch_size} > image_size {self.image_size}")

    @property
    def grid(self) -> int:
        """Patches per side (the convolution's output size)."""
        return self.image_size // self.patch_size

    @property
    def positions(self) -> int:
        """Position embeddings: one per patch plus the class token."""
        return self.grid**2 + 1


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The text tower (``CLIPTextConfig``: ``vocab_size``, ``max_position_embeddings``,
    ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``,
    ``eos_token_id``: 2, as the openai configs state it, pools at ``argmax(ids)``; any other
    value at its first occurrence, see :func:`eos_positions`)."""

    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_dim: int = 2048
    eos_token_id: int = 2

    def __post_init__(self):
        convert.check_sizes(self, _TEXT_LIMITS, "CLIP text")


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Both towers, the shared projection size, layer-norm epsilon and MLP activation
    (``'quick_gelu'``: ``x * sigmoid(1.702 x)``; ``'gelu'``: exact, erf;
    ``'gelu_new'`` / ``'gelu_pytorch_tanh'``: tanh approximation). Hashable: the jitted
    functions take it as a static argument."""

    vision: VisionConfig
    text: TextConfig
    projection_dim: int = 512
    layer_norm_eps: float = 1e-5
    activation: str = "quick_gelu"

    def __post_init__(self):
        if not isinstance(self.vision, VisionConfig) or not isinstance(self.text, TextConfig):
            raise ValueError("CLIP config: vision and text must be tower configurations")
        convert.check_sizes(self, {"projection_dim": (1, 1 << 14)}, "CLIP")
        _epsilon(self.layer_norm_eps)
        if not isinstance(self.activation, str):
            raise ValueError(f"CLIP activation {str(self.activation)[:40]}: expected a name")
        for name, tower in (("vision", self.vision), ("text", self.text)):
            if tower.width % tower.heads:
                raise ValueError(
                    f"CLIP {name} width {tower.width} is not a multiple of its {tower.heads} heads"
                )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown CLIP activation {self.activation!r} (one of {sorted(ACTIVATIONS)})"
            )


def config_from_dict(record: dict) -> CLIPConfig:
    """The :class:`CLIPConfig` of ``dataclasses.asdict(config)`` (as stored beside converted
    weights). Unknown keys, wrong types and sizes beyond the limits raise ``ValueError``."""
    if not isinstance(record, dict):
        raise ValueError(f"not a CLIP configuration: a {type(record).__name__}")
    record = dict(record)
    try:
        vision, text = record.pop("vision"), record.pop("text")
        if not isinstance(vision, dict) or not isinstance(text, dict):
            raise TypeError("its vision and text entries are not objects")
        return CLIPConfig(vision=VisionConfig(**vision), text=TextConfig(**text), **record)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a CLIP configuration: {e}") from e


# The public OpenAI checkpoints, as their config.json on the HuggingFace hub states them
# (huggingface.co/openai/<name>/blob/main/config.json): text tower 49408 tokens, 77
# positions, quick_gelu, layer_norm_eps 1e-5, and "eos_token_id": 2 (written before
# transformers PR #24773; CLIPTextModel then pools at argmax(ids), which is the first
# <|endoftext|> (49407, the largest id) of what the tokenizer returns).
# openai/clip-vit-base-patch32: vision 768 wide, 12 layers, 12 heads, 3072 MLP, patch 32,
# image 224; text 512 wide, 12 layers, 8 heads, 2048 MLP; projection_dim 512.
VIT_B_32 = CLIPConfig(
    vision=VisionConfig(
        image_size=224, patch_size=32, width=768, layers=12, heads=12, mlp_dim=3072
    ),
    text=TextConfig(width=512, layers=12, heads=8, mlp_dim=2048),
    projection_dim=512,
)
# openai/clip-vit-base-patch16: as ViT-B/32 with patch 16.
VIT_B_16 = dataclasses.replace(VIT_B_32, vision=dataclasses.replace(VIT_B_32.vision, patch_size=16))
# openai/clip-vit-large-patch14: vision 1024 wide, 24 layers, 16 heads, 4096 MLP, patch 14,
# image 224; text 768 wide, 12 layers, 12 heads, 3072 MLP; projection_dim 768.
VIT_L_14 = CLIPConfig(
    vision=VisionConfig(
        image_size=224, patch_size=14, width=1024, layers=24, heads=16, mlp_dim=4096
    ),
    text=TextConfig(width=768, layers=12, heads=12, mlp_dim=3072),
    projection_dim=768,
)
# openai/clip-vit-large-patch14-336: as ViT-L/14 with image 336.
VIT_L_14_336 = dataclasses.replace(
    VIT_L_14, vision=dataclasses.replace(VIT_L_14.vision, image_size=336)
)
VARIANTS: dict[str, CLIPConfig] = {
    "openai/clip-vit-base-patch32": VIT_B_32,
    "openai/clip-vit-base-patch16": VIT_B_16,
    "openai/clip-vit-large-patch14": VIT_L_14,
    "openai/clip-vit-large-patch14-336": VIT_L_14_336,
}

# CLIPTextConfig / CLIPVisionConfig defaults (transformers 5.25), for keys a config.json omits.
_HF_TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 49407,
}
_HF_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}


def config_from_hf(hf: dict, source: str = "config") -> CLIPConfig:
    """A transformers ``CLIPConfig`` dict (a checkpoint's ``config.json``) -> :class:`CLIPConfig`.

    As ``CLIPConfig.__post_init__``, ``text_config_dict`` / ``vision_config_dict`` (old
    configs) override ``text_config`` / ``vision_config``; missing keys take transformers'
    defaults. Raises :class:`ConversionError` naming ``source`` when the towers' activations
    or epsilons differ (no public CLIP has that) or a value is not an integer.
    """
    if not isinstance(hf, dict):
        raise ConversionError(f"{source}: a JSON {type(hf).__name__}, expected an object")
    towers = {}
    for name, defaults in (("text", _HF_TEXT_DEFAULTS), ("vision", _HF_VISION_DEFAULTS)):
        merged = dict(defaults)
        for key in (f"{name}_config", f"{name}_config_dict"):
            part = hf.get(key) or {}
            if not isinstance(part, dict):
                raise ConversionError(
                    f"{source}: {key} is a JSON {type(part).__name__}, expected an object"
                )
            merged.update(part)
        towers[name] = merged
    text, vision = towers["text"], towers["vision"]
    if text["hidden_act"] != vision["hidden_act"]:
        raise ConversionError(
            f"{source}: the towers' activations differ ({str(text['hidden_act'])[:40]!r}, "
            f"{str(vision['hidden_act'])[:40]!r}); one activation for both is supported"
        )
    if text["layer_norm_eps"] != vision["layer_norm_eps"]:
        raise ConversionError(f"{source}: the towers' layer_norm_eps differ")
    eos = text["eos_token_id"]
    if isinstance(eos, list):
        if len(eos) != 1:
            raise ConversionError(f"{source}: several eos_token_id values ({str(eos)[:80]})")
        eos = eos[0]
    try:
        return CLIPConfig(
            vision=VisionConfig(
                image_size=_whole(vision["image_size"]),
                patch_size=_whole(vision["patch_size"]),
                width=_whole(vision["hidden_size"]),
                layers=_whole(vision["num_hidden_layers"]),
                heads=_whole(vision["num_attention_heads"]),
                mlp_dim=_whole(vision["intermediate_size"]),
            ),
            text=TextConfig(
                vocab_size=_whole(text["vocab_size"]),
                context_length=_whole(text["max_position_embeddings"]),
                width=_whole(text["hidden_size"]),
                layers=_whole(text["num_hidden_layers"]),
                heads=_whole(text["num_attention_heads"]),
                mlp_dim=_whole(text["intermediate_size"]),
                eos_token_id=_whole(eos),
            ),
            projection_dim=_whole(hf.get("projection_dim", 512)),
            layer_norm_eps=_epsilon(text["layer_norm_eps"]),
            activation=str(text["hidden_act"]),
        )
    except (TypeError, ValueError, OverflowError) as e:
        raise ConversionError(f"{source}: not a CLIP config ({e})") from e


# ----------------------------------------------------------------------------- modules


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    # Two-pass variance, as torch computes it.
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class Attention(nn.Module):
    """``CLIPAttention``: ``(N, L, W)`` -> ``(N, L, W)``; ``mask``: ``(L, L)`` bool, True
    where a query may attend to a key."""

    width: int
    heads: int
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        n, length, _ = x.shape
        head_dim = self.width // self.heads

        def project(name):
            y = nn.Dense(self.width, precision=self.precision, name=name)(x)
            return y.reshape(n, length, self.heads, head_dim)

        q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
        scores = jnp.einsum("nqhd,nkhd->nhqk", q, k, precision=self.precision) * head_dim**-0.5
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("nhqk,nkhd->nqhd", weights, v, precision=self.precision)
        out = out.reshape(n, length, self.width)
        return nn.Dense(self.width, precision=self.precision, name="out_proj")(out)


class MLP(nn.Module):
    """``CLIPMLP``: ``fc1`` -> activation -> ``fc2``."""

    width: int
    mlp_dim: int
    activation: str = "quick_gelu"
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.mlp_dim, precision=self.precision, name="fc1")(x)
        x = ACTIVATIONS[self.activation](x)
        return nn.Dense(self.width, precision=self.precision, name="fc2")(x)


class EncoderLayer(nn.Module):
    """``CLIPEncoderLayer`` (pre-norm): ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    width: int
    heads: int
    mlp_dim: int
    eps: float = 1e-5
    activation: str = "quick_gelu"
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        y = _layer_norm(self.eps, "layer_norm1")(x)
        x = x + Attention(self.width, self.heads, self.precision, name="self_attn")(y, mask)
        y = _layer_norm(self.eps, "layer_norm2")(x)
        mlp = MLP(self.width, self.mlp_dim, self.activation, self.precision, name="mlp")
        return x + mlp(y)


class Encoder(nn.Module):
    """``CLIPEncoder``: ``layers`` encoder layers (``layers_0`` ... ``layers_<k>``)."""

    width: int
    heads: int
    mlp_dim: int
    layers: int
    eps: float = 1e-5
    activation: str = "quick_gelu"
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.layers):
            x = EncoderLayer(
                self.width,
                self.heads,
                self.mlp_dim,
                self.eps,
                self.activation,
                self.precision,
                name=f"layers_{i}",
            )(x, mask)
        return x


class CLIPVision(nn.Module):
    """``CLIPVisionModel`` + ``visual_projection``: ``(N, S, S, 3)`` preprocessed images
    (NHWC, ``S = config.vision.image_size``) -> ``(N, projection_dim)`` (``project``) or the
    pooled ``(N, width)`` (``post_layernorm`` of the class token, transformers'
    ``pooler_output``)."""

    config: CLIPConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, images: jax.Array, project: bool = True) -> jax.Array:
        cfg, v = self.config, self.config.vision
        if images.ndim != 4 or images.shape[1:] != (v.image_size, v.image_size, 3):
            raise ValueError(
                f"CLIP images must be (N, {v.image_size}, {v.image_size}, 3); got {images.shape}"
            )
        x = nn.Conv(
            v.width,
            (v.patch_size, v.patch_size),
            strides=(v.patch_size, v.patch_size),
            padding="VALID",
            use_bias=False,
            precision=self.precision,
            name="patch_embedding",
        )(images)
        n = x.shape[0]
        x = x.reshape(n, -1, v.width)  # row-major patches, as torch's flatten(2)
        cls = self.param("class_embedding", nn.initializers.normal(v.width**-0.5), (v.width,))
        pos = self.param("position_embedding", nn.initializers.normal(0.02), (v.positions, v.width))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, v.width)), x], axis=1)
        x = _layer_norm(cfg.layer_norm_eps, "pre_layrnorm")(x + pos)
        x = Encoder(
            v.width,
            v.heads,
            v.mlp_dim,
            v.layers,
            cfg.layer_norm_eps,
            cfg.activation,
            self.precision,
            name="encoder",
        )(x)
        pooled = _layer_norm(cfg.layer_norm_eps, "post_layernorm")(x[:, 0])
        if not project:
            return pooled
        return nn.Dense(
            cfg.projection_dim, use_bias=False, precision=self.precision, name="visual_projection"
        )(pooled)


def eos_positions(ids: jax.Array, eos_token_id: int) -> jax.Array:
    """``(N, L)`` ids -> ``(N,)`` positions ``CLIPTextModel`` pools: ``argmax(ids)`` when
    ``eos_token_id == 2`` (legacy configs), else the first ``eos_token_id`` (0 if none)."""
    if eos_token_id == 2:
        return jnp.argmax(ids, axis=-1)
    return jnp.argmax((ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPText(nn.Module):
    """``CLIPTextModel`` + ``text_projection``: ``(N, L)`` int token ids (``L <=
    context_length``, as :class:`Tokenizer` returns them) -> ``(N, projection_dim)``
    (``project``) or the pooled ``(N, width)`` (``final_layer_norm`` at the end-of-text
    position, transformers' ``pooler_output``)."""

    config: CLIPConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, ids: jax.Array, project: bool = True) -> jax.Array:
        cfg, t = self.config, self.config.text
        if ids.ndim != 2 or ids.shape[1] > t.context_length:
            raise ValueError(
                f"CLIP token ids must be (N, L <= {t.context_length}); got {ids.shape}"
            )
        length = ids.shape[1]
        tokens = self.param(
            "token_embedding", nn.initializers.normal(0.02), (t.vocab_size, t.width)
        )
        pos = self.param(
            "position_embedding", nn.initializers.normal(0.01), (t.context_length, t.width)
        )
        x = jnp.take(tokens, ids, axis=0) + pos[:length]
        causal = jnp.tril(jnp.ones((length, length), bool))
        x = Encoder(
            t.width,
            t.heads,
            t.mlp_dim,
            t.layers,
            cfg.layer_norm_eps,
            cfg.activation,
            self.precision,
            name="encoder",
        )(x, causal)
        x = _layer_norm(cfg.layer_norm_eps, "final_layer_norm")(x)
        at = eos_positions(ids, t.eos_token_id)
        pooled = jnp.take_along_axis(x, at[:, None, None], axis=1)[:, 0]
        if not project:
            return pooled
        return nn.Dense(
            cfg.projection_dim, use_bias=False, precision=self.precision, name="text_projection"
        )(pooled)


class CLIP(nn.Module):
    """Both towers and ``logit_scale``: ``(images (N, S, S, 3), ids (M, L))`` ->
    ``logits_per_image`` ``(N, M)``. Its variables are what :func:`variables_from_state_dict`
    returns: ``{'params': {'vision_model': ..., 'text_model': ..., 'logit_scale': ()}}``."""

    config: CLIPConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, images: jax.Array, ids: jax.Array) -> jax.Array:
        image = CLIPVision(self.config, self.precision, name="vision_model")(images)
        text = CLIPText(self.config, self.precision, name="text_model")(ids)
        scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())
        return logits(image, text, scale)


@functools.partial(jax.jit, static_argnames=("config", "project", "precision"))
def _vision_apply(params, images, config, project, precision):
    return CLIPVision(config, precision).apply({"params": params}, images, project)


@functools.partial(jax.jit, static_argnames=("config", "project", "precision"))
def _text_apply(params, ids, config, project, precision):
    return CLIPText(config, precision).apply({"params": params}, ids, project)


def image_embeddings(
    variables: dict,
    images: jax.Array,
    config: CLIPConfig,
    project: bool = True,
    precision: str | None = "highest",
) -> jax.Array:
    """``(N, S, S, 3)`` float32 preprocessed images (:func:`preprocess`) -> ``(N,
    projection_dim)`` image embeddings, not normalised (``CLIPModel.get_image_features``);
    ``project=False``: the pooled ``(N, vision width)``. ``variables``: a :class:`CLIP`'s
    (only its ``vision_model`` goes to the jitted function); ``precision``: of the matmuls
    (``'highest'``: float32 on GPUs too, no TF32)."""
    params = variables["params"]["vision_model"]
    return _vision_apply(params, jnp.asarray(images, jnp.float32), config, project, precision)


def text_embeddings(
    variables: dict,
    ids: jax.Array,
    config: CLIPConfig,
    project: bool = True,
    precision: str | None = "highest",
) -> jax.Array:
    """``(N, L)`` int token ids (:class:`Tokenizer`) -> ``(N, projection_dim)`` text
    embeddings, not normalised (``CLIPModel.get_text_features``); ``project=False``: the
    pooled ``(N, text width)``. ``variables``: a :class:`CLIP`'s (only its ``text_model``
    goes to the jitted function)."""
    params = variables["params"]["text_model"]
    return _text_apply(params, jnp.asarray(ids, jnp.int32), config, project, precision)


def normalize(x: jax.Array) -> jax.Array:
    """``(..., D)`` -> unit L2 norm along the last axis (transformers divides by the norm,
    no epsilon: a zero vector gives NaN there too)."""
    return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))


def logits(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """``(N, D)`` image and ``(M, D)`` text embeddings (unnormalised), scalar ``logit_scale``
    (``variables['params']['logit_scale']``) -> ``logits_per_image`` ``(N, M)`` =
    ``exp(logit_scale) * cos-sim``; its transpose is ``logits_per_text``."""
    sim = jnp.matmul(normalize(text_emb), normalize(image_emb).T, precision="highest")
    return (sim * jnp.exp(logit_scale)).T


# ----------------------------------------------------------------------------- conversion

_POSITION_ID_KEYS = (
    # Buffers that transformers < 4.31 saved (pytorch_model.bin of the openai repositories):
    # arange(positions), recomputed here, so accepted and ignored.
    "vision_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",
)


def _tower_entries(prefix: str, path: tuple, width: int, mlp_dim: int, layers: int):
    for i in range(layers):
        key, at = f"{prefix}.encoder.layers.{i}", path + ("encoder", f"layers_{i}")
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield f"{key}.self_attn.{proj}", at + ("self_attn", proj), "dense", (width, width)
        yield f"{key}.layer_norm1", at + ("layer_norm1",), "norm", (width,)
        yield f"{key}.mlp.fc1", at + ("mlp", "fc1"), "dense", (mlp_dim, width)
        yield f"{key}.mlp.fc2", at + ("mlp", "fc2"), "dense", (width, mlp_dim)
        yield f"{key}.layer_norm2", at + ("layer_norm2",), "norm", (width,)


def _entries(config: CLIPConfig):
    """``(HF key or key stem, flax path, kind, HF shape)`` of every weight."""
    v, t, p = config.vision, config.text, config.projection_dim
    vm, tm = ("vision_model",), ("text_model",)
    yield "vision_model.embeddings.class_embedding", vm + ("class_embedding",), "raw", (v.width,)
    yield (
        "vision_model.embeddings.patch_embedding.weight",
        vm + ("patch_embedding", "kernel"),
        "conv",
        (v.width, 3, v.patch_size, v.patch_size),
    )
    yield (
        "vision_model.embeddings.position_embedding.weight",
        vm + ("position_embedding",),
        "raw",
        (v.positions, v.width),
    )
    yield "vision_model.pre_layrnorm", vm + ("pre_layrnorm",), "norm", (v.width,)
    yield from _tower_entries("vision_model", vm, v.width, v.mlp_dim, v.layers)
    yield "vision_model.post_layernorm", vm + ("post_layernorm",), "norm", (v.width,)
    yield "visual_projection.weight", vm + ("visual_projection", "kernel"), "linear", (p, v.width)
    yield (
        "text_model.embeddings.token_embedding.weight",
        tm + ("token_embedding",),
        "raw",
        (t.vocab_size, t.width),
    )
    yield (
        "text_model.embeddings.position_embedding.weight",
        tm + ("position_embedding",),
        "raw",
        (t.context_length, t.width),
    )
    yield from _tower_entries("text_model", tm, t.width, t.mlp_dim, t.layers)
    yield "text_model.final_layer_norm", tm + ("final_layer_norm",), "norm", (t.width,)
    yield "text_projection.weight", tm + ("text_projection", "kernel"), "linear", (p, t.width)
    yield "logit_scale", ("logit_scale",), "raw", ()


def _expand(config: CLIPConfig):
    """``(HF key, flax path, transform, HF shape)`` per tensor of the state dict."""
    for key, path, kind, shape in _entries(config):
        if kind == "dense":
            yield key + ".weight", path + ("kernel",), np.transpose, shape
            yield key + ".bias", path + ("bias",), None, shape[:1]
        elif kind == "norm":
            yield key + ".weight", path + ("scale",), None, shape
            yield key + ".bias", path + ("bias",), None, shape
        elif kind == "linear":
            yield key, path, np.transpose, shape
        elif kind == "conv":  # torch (out, in, kh, kw) -> flax (kh, kw, in, out)
            yield key, path, lambda w: np.transpose(w, (2, 3, 1, 0)), shape
        else:
            yield key, path, None, shape


def state_dict_shapes(config: CLIPConfig) -> dict[str, tuple]:
    """``{key: shape}`` of transformers' ``CLIPModel(config).state_dict()`` (current
    transformers: without the ``position_ids`` buffers)."""
    return {key: tuple(shape) for key, _p, _f, shape in _expand(config)}


def _listed(keys: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def variables_from_state_dict(
    state: dict[str, np.ndarray], config: CLIPConfig, source: str = "state dict"
) -> dict:
    """A transformers ``CLIPModel`` state dict (``{key: array}``, any float dtype) ->
    :class:`CLIP` variables (float32 numpy): ``{'params': {'vision_model': ...,
    'text_model': ..., 'logit_scale': ()}}``.

    Linear weights ``(out, in)`` become kernels ``(in, out)``, the patch convolution
    ``(W, 3, p, p)`` becomes ``(p, p, 3, W)``. Raises :class:`ConversionError` naming
    ``source`` and the missing, mis-shaped and unexpected keys (the ``position_ids`` buffers
    of older checkpoints are accepted and ignored).
    """
    params: dict = {}
    missing, wrong = [], []
    expected = set()
    for key, path, transform, shape in _expand(config):
        expected.add(key)
        if key not in state:
            missing.append(key)
            continue
        value = np.asarray(state[key])
        if tuple(value.shape) != tuple(shape):
            wrong.append(f"{key} {tuple(value.shape)} (expected {tuple(shape)})")
            continue
        value = value.astype(np.float32)
        if transform is not None:
            value = np.ascontiguousarray(transform(value))
        tree = params
        for p in path[:-1]:
            tree = tree.setdefault(p, {})
        tree[path[-1]] = value
    unexpected = sorted(k for k in state if k not in expected and k not in _POSITION_ID_KEYS)
    problems = [
        f"{len(keys)} {label}: {_listed(sorted(keys))}"
        for label, keys in (
            ("missing", missing),
            ("wrong shape", wrong),
            ("unexpected", unexpected),
        )
        if keys
    ]
    if problems:
        v, t = config.vision, config.text
        raise ConversionError(
            f"{source}: not a CLIP state dict for this config (vision {v.width}x{v.layers} "
            f"patch {v.patch_size} image {v.image_size}, text {t.width}x{t.layers}; "
            + "; ".join(problems)
            + ")"
        )
    return {"params": params}


# ----------------------------------------------------------------------------- files

_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# The format allows 100 MB; parsing JSON takes up to ~8x its size in memory, and the
# headers of the checkpoints read here (CLIP, CLAP) are under 100 kB.
_SAFETENSORS_MAX_HEADER = 16 << 20


def _safetensors_dtype(name: str):
    if name == "BF16":
        return np.dtype(ml_dtypes.bfloat16)
    return _SAFETENSORS_DTYPES.get(name)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file as ``{name: array}`` (its stored dtype: F32, F16, BF16 as
    ``ml_dtypes.bfloat16``, F64, integers, BOOL), without torch or the safetensors package.

    Format: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON ``{name:
    {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the
    tensors' bytes (offsets relative to the end of the header). Raises
    :class:`ConversionError` (one line, naming the file) on a malformed file.
    """
    path = os.fspath(path)

    def bad(why: str) -> ConversionError:
        return ConversionError(f"{path}: not a safetensors file ({why})")

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise bad(f"{size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > min(size - 8, _SAFETENSORS_MAX_HEADER):
                raise bad(f"header length {n} exceeds the file's {size} bytes")
            raw = f.read(n)
    except OSError as e:
        raise ConversionError(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:  # json's parser recurses: a header of nested brackets
        raise bad("header nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"header is not JSON: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_size = size - 8 - n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shown = name[:80]
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise bad(f"tensor {shown!r} lacks dtype, shape or data_offsets")
        dtype = _safetensors_dtype(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise bad(f"tensor {shown!r} has unsupported dtype {str(info['dtype'])[:40]!r}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not (
            isinstance(shape, list)
            and len(shape) <= MAX_NDIM
            and all(type(d) is int and 0 <= d for d in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
        ):
            raise bad(f"tensor {shown!r} has a malformed shape or data_offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise bad(f"tensor {shown!r} lies outside the file (offsets {begin}-{end})")
        # Every dimension bounded by the bytes there are, and the shape's size with its
        # zero dimensions taken as 1 (an empty tensor's shape [0, 2**62] or [0] + [1000] * 8
        # is not a tensor anyone saved; numpy refuses it with a ValueError naming no file).
        if any(d > max(data_size, 1) for d in shape) or math.prod(max(d, 1) for d in shape) > max(
            data_size, 1 << 20
        ):
            raise bad(f"tensor {shown!r} has shape {shape[:8]} in a {data_size}-byte buffer")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise bad(f"tensor {shown!r}: {end - begin} bytes for shape {shape} {info['dtype']}")
        entries.append((name, dtype, tuple(shape), begin, end))
    # The format's tensors tile the buffer: none overlaps another (so the arrays built
    # never exceed the file's size, however many entries point at the same bytes).
    spans = sorted((b, e, name) for name, _d, _s, b, e in entries if e > b)
    for (_b0, e0, first), (b1, _e1, second) in zip(spans, spans[1:]):
        if b1 < e0:
            raise bad(f"tensors {first[:80]!r} and {second[:80]!r} overlap")
    out = {}
    if data_size == 0:  # nothing to map: every tensor is empty
        return {name: np.zeros(shape, dtype) for name, dtype, shape, _b, _e in entries}
    if entries:
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n, shape=(data_size,))
        for name, dtype, shape, begin, end in entries:
            if end == begin:
                out[name] = np.zeros(shape, dtype)
            else:
                out[name] = np.array(data[begin:end].view(dtype).reshape(shape))
        del data
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``model.safetensors`` (:func:`read_safetensors`) or ``pytorch_model.bin`` /
    ``.pth`` (``convert.read_pth``) as ``{key: array}``."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    return read_pth(path)


CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_folder(folder: str | os.PathLike) -> tuple[CLIPConfig, dict]:
    """A transformers checkpoint folder (``config.json`` and ``model.safetensors`` or
    ``pytorch_model.bin``, e.g. a download of huggingface.co/openai/clip-vit-base-patch32)
    -> ``(config, variables)``. Raises :class:`ConversionError` naming what is missing."""
    folder = os.fspath(folder)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"{folder}: no config.json (a transformers CLIP folder)")
    config = config_from_hf(convert.read_config_json(config_path), config_path)
    for name in CHECKPOINT_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return config, variables_from_state_dict(read_state_dict(path), config, path)
    raise ConversionError(f"{folder}: no {' or '.join(CHECKPOINT_FILES)}")


# ----------------------------------------------------------------------------- tokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# transformers' CLIPTokenizer pre-tokenizer (the slow tokenizer's ``pat``).
_SPLIT_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
    r"""|[^\s\p{L}\p{N}]+"""
)


def _token_text(value) -> str | None:
    if isinstance(value, dict):  # {"content": ..., "__type": "AddedToken"}
        return value.get("content")
    return value


class Tokenizer:
    """CLIP's tokenizer: ``texts`` -> ``(N, context_length)`` int32 ids, as transformers'
    ``CLIPTokenizer(texts, padding='max_length', max_length=context_length,
    truncation=True)['input_ids']``.

    ``folder``: a checkpoint folder with ``tokenizer.json`` (its vocabulary, merges and
    added tokens are used) or ``vocab.json`` + ``merges.txt``; ``tokenizer_config.json`` /
    ``special_tokens_map.json`` name the bos, eos, unk and pad tokens (openai's: pad = eos
    = ``<|endoftext|>``) and ``model_max_length`` (the default ``context_length``, else 77).
    The pipeline is built here as transformers 5's ``CLIPTokenizer`` builds it (it too
    ignores the normaliser and pre-tokeniser stored in ``tokenizer.json``): NFC, runs of
    white space -> one space, lower case; CLIP's split pattern, byte-level alphabet; BPE
    with ``</w>`` ending each word; ``<|startoftext|>`` ... ``<|endoftext|>``; truncation
    keeps both; padding on the right.
    """

    def __init__(self, folder: str | os.PathLike, context_length: int | None = None):

        folder = os.fspath(folder)
        settings = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                settings.update(convert.read_json(path))
        added: list[tuple[str, int, bool]] = []
        json_path = os.path.join(folder, "tokenizer.json")
        vocab_path, merges_path = (os.path.join(folder, n) for n in ("vocab.json", "merges.txt"))
        if os.path.exists(json_path):
            spec = convert.read_json(json_path)
            model = spec.get("model") or {}
            if model.get("type", "BPE") != "BPE" or not isinstance(model.get("vocab"), dict):
                raise ConversionError(f"{json_path}: not a BPE tokenizer with a vocabulary")
            vocab = model["vocab"]
            merges = [
                tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                for m in model.get("merges", [])
            ]
            added = [
                (a["content"], a["id"], bool(a.get("special")))
                for a in spec.get("added_tokens", [])
            ]
            source = json_path
        elif os.path.exists(vocab_path) and os.path.exists(merges_path):
            vocab, merges, source = (
                convert.read_json(vocab_path),
                convert.read_merges(merges_path),
                merges_path,
            )
        else:
            raise ConversionError(
                f"{folder}: no tokenizer.json, nor vocab.json and merges.txt "
                f"(CLIP's tokenizer files)"
            )
        # A merges list longer than the vocabulary (OpenAI's original 262k-merge file) is cut
        # at the first merge whose token is not in it, as the slow tokenizer's cap of 48894 does.
        for i, (a, b) in enumerate(merges):
            if a not in vocab or b not in vocab or a + b not in vocab:
                merges = merges[:i]
                break
        ids = dict(vocab)
        ids.update({content: i for content, i, _special in added})
        names = {}
        for role, default in (
            ("bos", BOS_TOKEN),
            ("eos", EOS_TOKEN),
            ("unk", EOS_TOKEN),
            ("pad", EOS_TOKEN),
        ):
            token = _token_text(settings.get(f"{role}_token")) or default
            if token not in ids:
                raise ConversionError(
                    f"{source}: the {role} token {token!r} is not in the vocabulary"
                )
            names[role] = token
        self.bos_token, self.eos_token = names["bos"], names["eos"]
        self.unk_token, self.pad_token = names["unk"], names["pad"]
        self.bos_id, self.eos_id, self.pad_id = (
            ids[self.bos_token],
            ids[self.eos_token],
            ids[self.pad_token],
        )
        self.context_length = int(context_length or settings.get("model_max_length") or 77)
        if self.context_length > 10**6:  # transformers' "no limit" sentinel
            self.context_length = 77
        tok = _Backend(
            BPE(
                vocab=vocab,
                merges=merges,
                dropout=None,
                continuing_subword_prefix="",
                end_of_word_suffix="</w>",
                fuse_unk=False,
                unk_token=self.unk_token,
            )
        )
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        extra = [(c, special) for c, i, special in added if c not in names.values()]
        tok.add_tokens([AddedToken(c, normalized=False, special=s) for c, s in extra if not s])
        specials = list(dict.fromkeys(names.values())) + [c for c, s in extra if s]
        tok.add_special_tokens([AddedToken(c, normalized=False, special=True) for c in specials])
        tok.post_processor = processors.RobertaProcessing(
            (self.eos_token, self.eos_id), (self.bos_token, self.bos_id), False, False
        )
        tok.enable_truncation(max_length=self.context_length)
        tok.enable_padding(length=self.context_length, pad_id=self.pad_id, pad_token=self.pad_token)
        self.backend = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: str | Iterable[str]) -> np.ndarray:
        """``texts`` (a string or strings) -> ``(N, context_length)`` int32 token ids."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.context_length), np.int32)
        encodings = self.backend.encode_batch(texts)
        return np.asarray([e.ids for e in encodings], np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text without the special tokens (``</w>`` read as a space)."""
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=True)
        return text.replace("</w>", " ").strip()


# ----------------------------------------------------------------------------- images

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _rgb_array(frame) -> np.ndarray:
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(
            f"CLIP preprocessing takes (H, W, 3) uint8 RGB frames; got {frame.shape} {frame.dtype}"
        )
    return frame


def resize_shortest_edge(frame: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> shorter side ``size``, longer ``int(size * long / short)``,
    Pillow bicubic (``get_resize_output_image_size(default_to_square=False)`` + ``resize``)."""
    h, w = frame.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    oh, ow = (new_long, new_short) if w <= h else (new_short, new_long)
    image = Image.fromarray(frame, "RGB").resize((ow, oh), resample=Image.BICUBIC)
    return np.asarray(image)


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, C)`` -> ``(size, size, C)``: offsets ``(H - size) // 2``; zero padding
    (centred, the extra pixel after) where the image is smaller, as ``center_crop`` does."""
    h, w = frame.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    if top >= 0 and left >= 0:
        return frame[top : top + size, left : left + size]
    nh, nw = max(size, h), max(size, w)
    padded = np.zeros((nh, nw) + frame.shape[2:], frame.dtype)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    padded[tp : tp + h, lp : lp + w] = frame
    top, left = top + tp, left + lp
    return padded[max(0, top) : min(nh, top + size), max(0, left) : min(nw, left + size)]


def preprocess(frames, size: int = 224, crop_size: int | None = None) -> np.ndarray:
    """Frames (an ``(N, H, W, 3)`` uint8 array, a sequence of ``(H, W, 3)`` uint8 arrays or
    PIL images of any sizes, or one of them) -> ``(N, crop, crop, 3)`` float32 CLIP inputs (NHWC),
    as ``CLIPImageProcessor(size={'shortest_edge': size}, crop_size=crop)`` (Pillow
    backend): :func:`resize_shortest_edge`, :func:`center_crop` (``crop_size`` defaults to
    ``size``), ``float32(float64(x) * (1 / 255))``, then ``(x - mean) / std`` in float32."""
    crop = size if crop_size is None else crop_size
    if isinstance(frames, Image.Image) or (isinstance(frames, np.ndarray) and frames.ndim == 3):
        frames = [frames]
    frames = list(frames)
    if not frames:
        return np.zeros((0, crop, crop, 3), np.float32)
    out = np.stack([center_crop(resize_shortest_edge(_rgb_array(f), size), crop) for f in frames])
    x = (out.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean, std = np.asarray(OPENAI_CLIP_MEAN, np.float32), np.asarray(OPENAI_CLIP_STD, np.float32)
    return (x - mean) / std
