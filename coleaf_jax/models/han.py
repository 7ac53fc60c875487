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

from coleaf_jax.models.layers import AudioEmbedding, HANLayer, VisualEmbedding
from coleaf_jax.models.mmil import MMILHead


class HANAnchor(nn.Module):
    """HAN (Tian et al., 2020): embedding, one shared HAN layer, attentive MMIL pooling."""

    num_classes: int = 25
    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1
    pool_frames_first: bool = True  # False: the authors' per-frame projection (same maths)
    param_init: str = "torch"  # 'torch': as the authors' PyTorch modules; 'flax': flax defaults

    @nn.compact
    def __call__(self, audio, video_2d, video_3d, mask=None, *, train: bool = False):
        if mask is None:
            mask = jnp.ones(audio.shape[:2], bool)
        x_a = AudioEmbedding(self.d_model, param_init=self.param_init, name="embed_a")(audio)
        x_v = VisualEmbedding(
            self.d_model,
            pool_first=self.pool_frames_first,
            param_init=self.param_init,
            name="embed_v",
        )(video_2d, video_3d)
        h_a, h_v = HANLayer(self.d_model, self.ffn_dim, self.dropout, self.param_init, name="han")(
            x_a, x_v, mask, deterministic=not train
        )
        out = MMILHead(self.num_classes, self.param_init, name="mmil")(
            jnp.stack([h_a, h_v], axis=2), mask
        )
        return {
            "seg_prob": out["seg_prob"],
            "video_prob": out["video_prob"],
            "video_prob_a": out["modality_prob"][:, 0],
            "video_prob_v": out["modality_prob"][:, 1],
            "tokens_a": h_a,
            "tokens_v": h_v,
        }


def build(model_config, num_classes: int) -> HANAnchor:
    """The HAN Anchor for ``config.model`` (``registry``'s ``'han'``)."""
    return HANAnchor(
        num_classes=num_classes,
        d_model=model_config.d_model,
        ffn_dim=model_config.ffn_dim,
        dropout=model_config.dropout,
        param_init=model_config.init,
        pool_frames_first=model_config.pool_frames_first,
    )
