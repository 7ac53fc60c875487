"""The HAN Anchor (docs/method.md §4.1-4.2), and what every Anchor returns.

An Anchor is the network trained with CoLeaF and deployed; the Anchors are
registered by name in ``coleaf_jax.registry`` (``'han'`` here, ``'cmpae'`` in
``models/cmpae.py``). Every Anchor maps ``(audio, video_2d, video_3d, mask)`` to a dict:

* ``seg_prob``  ``(B, T, 2, C)`` segment probabilities ``P`` (audio, visual),
* ``video_prob`` ``(B, C)`` modality-agnostic video-level ``p``,
* ``video_prob_a``, ``video_prob_v`` ``(B, C)`` modality video-level ``p^a, p^v``,
* ``tokens_a``, ``tokens_v`` ``(B, T, D)`` segment tokens before any head
  dropout (keys of the event-aware contrastive loss, docs/method.md §6a).

The Anchor contains no class tokens and nothing of the Reference.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from coleaf_jax.models.layers import (
    AudioEmbedding,
    HANLayer,
    VisualEmbedding,
    audio_map_to_segments,
)
from coleaf_jax.models.mmil import MMILHead


class HANAnchor(nn.Module):
    """HAN (Tian et al., 2020): embedding, HAN layer(s), attentive MMIL pooling.

    HAN itself is one HAN layer with one head; the VALOR family (VALOR, VALOR+,
    VALOR++: Lai et al., 2023; UWAV's HAN) generalises it (``github:Franklin905/VALOR``
    ``main_network.py``): ``num_heads`` heads, ``num_layers`` stacked layers each with
    its own weights (one set per layer for both streams, as in HAN), and
    ``update_order="audio_first"``: each layer updates the audio stream, then the visual
    stream from the updated audio (HAN: ``'parallel'``, both from the layer's inputs).
    An ``audio`` input longer than the segments (VALOR++'s CLAP token map, ``(B, 64, F)``)
    is resampled to the segments first (:func:`layers.audio_map_to_segments`).

    Parameters: ``embed_a``, ``embed_v``, ``han`` (layer 0), ``han_1``, ... , ``mmil``.
    """

    num_classes: int = 25
    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1
    pool_frames_first: bool = True  # False: the authors' per-frame projection (same maths)
    param_init: str = "torch"  # 'torch': as the authors' PyTorch modules; 'flax': flax defaults
    num_heads: int = 1
    num_layers: int = 1
    update_order: str = "parallel"  # or "audio_first" (VALOR, UWAV)

    @nn.compact
    def __call__(self, audio, video_2d, video_3d, mask=None, *, train: bool = False):
        if self.update_order not in UPDATE_ORDERS:
            raise ValueError(
                f"update_order = {self.update_order!r}: expected one of {UPDATE_ORDERS}"
            )
        t = video_3d.shape[1]
        if mask is None:
            mask = jnp.ones((audio.shape[0], t), bool)
        if audio.shape[1] != t:
            audio = audio_map_to_segments(audio, t)
        h_a = AudioEmbedding(self.d_model, param_init=self.param_init, name="embed_a")(audio)
        h_v = VisualEmbedding(
            self.d_model,
            pool_first=self.pool_frames_first,
            param_init=self.param_init,
            name="embed_v",
        )(video_2d, video_3d)
        for i in range(self.num_layers):
            h_a, h_v = HANLayer(
                self.d_model,
                self.ffn_dim,
                self.dropout,
                self.param_init,
                self.num_heads,
                name=layer_name(i),
            )(
                h_a,
                h_v,
                mask,
                deterministic=not train,
                audio_first=self.update_order == "audio_first",
            )
        out = MMILHead(self.num_classes, self.param_init, name="mmil")(
            jnp.stack([h_a, h_v], axis=2), mask
        )
        return {
            "seg_prob": out["seg_prob"],
            "seg_logits": out["seg_logits"],
            "video_prob": out["video_prob"],
            "video_prob_a": out["modality_prob"][:, 0],
            "video_prob_v": out["modality_prob"][:, 1],
            "tokens_a": h_a,
            "tokens_v": h_v,
        }


UPDATE_ORDERS = ("parallel", "audio_first")


def layer_name(i: int) -> str:
    """The parameter collection of HAN layer ``i`` (``'han'``, ``'han_1'``, ...)."""
    return "han" if i == 0 else f"han_{i}"


def build(model_config, num_classes: int) -> HANAnchor:
    """The HAN Anchor for ``config.model`` (``registry``'s ``'han'``)."""
    return HANAnchor(
        num_classes=num_classes,
        d_model=model_config.d_model,
        ffn_dim=model_config.ffn_dim,
        dropout=model_config.dropout,
        param_init=model_config.init,
        pool_frames_first=model_config.pool_frames_first,
        num_heads=model_config.num_heads,
        num_layers=model_config.num_layers,
        update_order=model_config.update_order,
    )
