"""Weights of the authors' PyTorch networks <-> coleaf-jax parameters (numpy only).

The authors' CoLeaF code (faeghehsardari/coleaf, ``nets/net_audiovisual.py``)
has three networks: the Anchor ``MMIL_Net`` (the CMPAE Anchor) and the
Reference's ``Self_Audio_Net`` / ``Self_Video_Net``. Their ``state_dict``
entries map one to one onto :class:`coleaf_jax.models.cmpae.CMPAEAnchor` and
:class:`coleaf_jax.models.reference.ReferenceBranch` parameters:

* ``nn.Linear`` ``weight (out, in)`` is our ``kernel (in, out)`` (transposed);
* ``nn.MultiheadAttention`` ``in_proj_weight (3D, D)`` / ``in_proj_bias (3D,)``
  are our ``query``, ``key``, ``value`` kernels (transposed thirds) and biases;
  ``out_proj`` is ``out``;
* ``nn.LayerNorm`` ``weight`` / ``bias`` are ``scale`` / ``bias``;
* class tokens ``(1, C, D)`` are ``class_tokens (C, D)``.

Entries the authors' networks hold but never use (``fc_global``, the HAN
layer's ``cls_tokens_a``/``cls_tokens_v``, the Reference layers' ``cm_attn``,
the encoders' ``norm1``/``norm2`` with ``norm=None``) have no counterpart:
:data:`UNUSED_PREFIXES` lists them; ``*_from_authors`` ignores them.

Everything here is numpy: no torch, no jax (a ``state_dict`` is passed as
``{name: np.ndarray}``, e.g. ``{k: v.numpy() for k, v in sd.items()}``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Authors' state_dict entries with no effect on any output (never used in forward).
UNUSED_PREFIXES: dict[str, tuple[str, ...]] = {
    "anchor": (
        "fc_global.",
        "hat_encoder.layers.0.cls_tokens_a",
        "hat_encoder.layers.0.cls_tokens_v",
        "hat_encoder.norm1.",
        "hat_encoder.norm2.",
    ),
    "audio": ("hat_encoder.layers.0.cm_attn.", "hat_encoder.norm1.", "hat_encoder.norm2."),
    "visual": ("hat_encoder.layers.0.cm_attn.", "hat_encoder.norm1.", "hat_encoder.norm2."),
}


def _linear(torch_name: str, path: str) -> list[tuple[str, str, str]]:
    return [
        (f"{torch_name}.weight", f"{path}/kernel", "t"),
        (f"{torch_name}.bias", f"{path}/bias", ""),
    ]


def _attention(torch_name: str, path: str) -> list[tuple[str, str, str]]:
    return [
        (f"{torch_name}.in_proj_weight", f"{path}/{{query,key,value}}/kernel", "qkv_t"),
        (f"{torch_name}.in_proj_bias", f"{path}/{{query,key,value}}/bias", "qkv"),
        *_linear(f"{torch_name}.out_proj", f"{path}/out"),
    ]


def _layer_norm(torch_name: str, path: str) -> list[tuple[str, str, str]]:
    return [
        (f"{torch_name}.weight", f"{path}/scale", ""),
        (f"{torch_name}.bias", f"{path}/bias", ""),
    ]


def _encoder_layer(torch_prefix: str, path: str, cross: bool) -> list[tuple[str, str, str]]:
    rows = [
        *_attention(f"{torch_prefix}.self_attn", f"{path}/self_attn"),
        *_linear(f"{torch_prefix}.linear1", f"{path}/ffn/linear1"),
        *_linear(f"{torch_prefix}.linear2", f"{path}/ffn/linear2"),
        *_layer_norm(f"{torch_prefix}.norm1", f"{path}/norm1"),
        *_layer_norm(f"{torch_prefix}.norm2", f"{path}/norm2"),
    ]
    if cross:
        rows += _attention(f"{torch_prefix}.cm_attn", f"{path}/cross_attn")
    return rows


# (authors' name, our path, kind): kind '' = same array, 't' = transposed,
# 'qkv'/'qkv_t' = the fused in-projection split in three (transposed), 'tokens' = (1, C, D).
ANCHOR_TABLE: list[tuple[str, str, str]] = [
    *_linear("fc_a.0", "embed_a/audio"),
    *_linear("fc_v.0", "embed_v/video_2d"),
    *_linear("fc_st.0", "embed_v/video_3d"),
    *_linear("fc_fusion.0", "embed_v/fusion"),
    *_linear("classifier1.0", "global_w1"),
    *_linear("classifier2", "global_w2"),
    *_encoder_layer("hat_encoder.layers.0", "han", cross=True),
    *_linear("fc_prob", "heads/fc_alpha"),
    *_linear("fc_prob_beta", "heads/fc_beta"),
    *_linear("fc_frame_att", "heads/fc_att"),
    *_linear("v2a.0", "heads/mlp_v2a/linear"),
    *_linear("a2v.0", "heads/mlp_a2v/linear"),
]
REFERENCE_AUDIO_TABLE: list[tuple[str, str, str]] = [
    *_linear("fc_a", "embed_a/audio"),
    ("cls_tokens_a", "audio/class_tokens", "tokens"),
    *_encoder_layer("hat_encoder.layers.0", "audio/encoder", cross=False),
    *_linear("fc_prob", "audio/fc_prob"),
    *_linear("fc_frame_att", "audio/fc_time"),
]
REFERENCE_VISUAL_TABLE: list[tuple[str, str, str]] = [
    *_linear("fc_v", "embed_v/video_2d"),
    *_linear("fc_st", "embed_v/video_3d"),
    *_linear("fc_fusion", "embed_v/fusion"),
    ("cls_tokens_v", "visual/class_tokens", "tokens"),
    *_encoder_layer("hat_encoder.layers.0", "visual/encoder", cross=False),
    *_linear("fc_prob", "visual/fc_prob"),
    *_linear("fc_frame_att", "visual/fc_time"),
]
TABLES = {"anchor": ANCHOR_TABLE, "audio": REFERENCE_AUDIO_TABLE, "visual": REFERENCE_VISUAL_TABLE}


def han_table(num_layers: int = 1) -> list[tuple[str, str, str]]:
    """HAN's ``MMIL_Net`` (YapengTian/AVVP-ECCV20 ``nets/net_audiovisual.py``), and the
    VALOR family's (Franklin905/VALOR ``main_network.py``) with ``num_layers`` layers,
    <-> :class:`coleaf_jax.models.han.HANAnchor` (layer ``i``: ``han``, ``han_1``, ...).
    The two projects name every used entry alike; heads and update order are not in a
    state dict."""
    layers = []
    for i in range(num_layers):
        layers += _encoder_layer(
            f"hat_encoder.layers.{i}", "han" if i == 0 else f"han_{i}", cross=True
        )
    return [
        *_linear("fc_a", "embed_a/audio"),
        *_linear("fc_v", "embed_v/video_2d"),
        *_linear("fc_st", "embed_v/video_3d"),
        *_linear("fc_fusion", "embed_v/fusion"),
        *layers,
        *_linear("fc_prob", "mmil/fc_prob"),
        *_linear("fc_frame_att", "mmil/fc_time"),
        *_linear("fc_av_att", "mmil/fc_mod"),
    ]


# HAN's MMIL_Net also holds encoders its forward never calls (audio_encoder, visual_encoder,
# cmt_encoder) and its Encoder's norm1/norm2 (norm=None); VALOR's Encoder holds
# final_norm_a/final_norm_v, applied only with norm_where='pre_norm' (every released VALOR
# model is post_norm).
UNUSED_PREFIXES["han"] = (
    "audio_encoder.",
    "visual_encoder.",
    "cmt_encoder.",
    "hat_encoder.norm1.",
    "hat_encoder.norm2.",
)
UNUSED_PREFIXES["valor"] = ("hat_encoder.final_norm_a.", "hat_encoder.final_norm_v.")


def _get(tree: Mapping, path: str):
    node = tree
    for part in path.split("/"):
        node = node[part]
    return node


def _set(tree: dict, path: str, value: np.ndarray) -> None:
    *parents, leaf = path.split("/")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _qkv_paths(path: str) -> list[str]:
    return [path.replace("{query,key,value}", name) for name in ("query", "key", "value")]


def to_authors(params: Mapping, table: list[tuple[str, str, str]]) -> dict[str, np.ndarray]:
    """Our parameter tree -> the authors' ``state_dict`` entries of ``table`` (numpy)."""
    out = {}
    for name, path, kind in table:
        if kind.startswith("qkv"):
            parts = [np.asarray(_get(params, p)) for p in _qkv_paths(path)]
            out[name] = np.concatenate([p.T if kind == "qkv_t" else p for p in parts], axis=0)
        else:
            x = np.asarray(_get(params, path))
            out[name] = x.T if kind == "t" else x[None] if kind == "tokens" else x
    return out


def from_authors(
    state_dict: Mapping[str, np.ndarray], table: list[tuple[str, str, str]], network: str
) -> dict:
    """The authors' ``state_dict`` (numpy arrays) -> our parameter tree for ``table``.

    Raises:
      KeyError: an entry of ``table`` is missing, naming it; ValueError: an entry
      the table does not know and that is not one of :data:`UNUSED_PREFIXES`.
    """
    known = {name for name, _, _ in table}
    unknown = [
        k for k in state_dict if k not in known and not k.startswith(UNUSED_PREFIXES[network])
    ]
    if unknown:
        raise ValueError(f"authors' {network} state_dict: unexpected entries {unknown[:5]}")
    out: dict = {}
    for name, path, kind in table:
        if name not in state_dict:
            raise KeyError(f"authors' {network} state_dict: missing {name!r}")
        x = np.asarray(state_dict[name], np.float32)
        if kind.startswith("qkv"):
            for p, part in zip(_qkv_paths(path), np.split(x, 3, axis=0)):
                _set(out, p, part.T if kind == "qkv_t" else part)
        else:
            _set(out, path, x.T if kind == "t" else x[0] if kind == "tokens" else x)
    return out


def anchor_from_authors(state_dict: Mapping[str, np.ndarray]) -> dict:
    """``MMIL_Net.state_dict()`` -> ``CMPAEAnchor`` params."""
    return from_authors(state_dict, ANCHOR_TABLE, "anchor")


def anchor_to_authors(params: Mapping) -> dict[str, np.ndarray]:
    """``CMPAEAnchor`` params -> ``MMIL_Net`` state_dict entries (the used ones)."""
    return to_authors(params, ANCHOR_TABLE)


def reference_from_authors(
    audio: Mapping[str, np.ndarray], visual: Mapping[str, np.ndarray]
) -> dict:
    """``Self_Audio_Net`` and ``Self_Video_Net`` state_dicts -> ``ReferenceBranch`` params."""
    a = from_authors(audio, REFERENCE_AUDIO_TABLE, "audio")
    v = from_authors(visual, REFERENCE_VISUAL_TABLE, "visual")
    return {
        "embed_a": a["embed_a"],
        "embed_v": v["embed_v"],
        "audio": a["audio"],
        "visual": v["visual"],
    }


def reference_to_authors(params: Mapping) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``ReferenceBranch`` params -> ``(Self_Audio_Net, Self_Video_Net)`` state_dict entries."""
    return to_authors(params, REFERENCE_AUDIO_TABLE), to_authors(params, REFERENCE_VISUAL_TABLE)
