"""The Reference branch (docs/method.md §5): two unimodal encoders with learnable class tokens.

Used only during training, as teacher and student of the Anchor.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from coleaf_jax.models.dropout import Dropout
from coleaf_jax.models.layers import AudioEmbedding, Linear, SelfAttentionLayer, VisualEmbedding
from coleaf_jax.models.mmil import masked_softmax


class UnimodalReference(nn.Module):
    """One modality's encoder: ``[c'; h] = SelfAttnLayer([c; x])`` and its heads.

    Input ``x (B, T, D)`` (already embedded), ``mask (B, T)``. Returns
    ``seg_prob (B, T, C)`` ``q_m``, ``video_prob (B, C)`` ``q^m``, ``tokens (B, T, D)``
    (before the head dropout) and, with class tokens, ``class_prob (B, C)`` ``k^m``.

    ``FC_prob`` always reads the head-dropped ``h``; ``FC_time`` reads the
    dropped ``h`` too when ``time_reads_dropped`` (the authors' visual
    encoder, ``Self_Video_Net``), else the un-dropped one (their audio encoder).
    """

    num_classes: int = 25
    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1
    head_dropout: float = 0.5
    class_tokens: bool = True
    time_reads_dropped: bool = False
    param_init: str = "torch"

    @nn.compact
    def __call__(self, x, mask, *, train: bool):
        b = x.shape[0]
        c = self.num_classes
        if self.class_tokens:
            tokens = self.param("class_tokens", nn.initializers.zeros, (c, self.d_model))
            x = jnp.concatenate(
                [jnp.broadcast_to(tokens, (b, c, self.d_model)).astype(x.dtype), x], 1
            )
            mask = jnp.concatenate([jnp.ones((b, c), bool), mask.astype(bool)], axis=1)
        h = SelfAttentionLayer(
            self.d_model, self.ffn_dim, self.dropout, self.param_init, name="encoder"
        )(x, mask, deterministic=not train)
        out = {}
        if self.class_tokens:
            out["class_prob"] = jax.nn.sigmoid(h[:, :c].mean(axis=-1))
            h, mask = h[:, c:], mask[:, c:]
        dropped = Dropout(self.head_dropout)(h, deterministic=not train)
        seg_prob = jax.nn.sigmoid(Linear(c, self.param_init, name="fc_prob")(dropped))
        time_in = dropped if self.time_reads_dropped else h
        w_t = masked_softmax(
            Linear(c, self.param_init, name="fc_time")(time_in), mask[:, :, None], axis=1
        )
        out.update(seg_prob=seg_prob, video_prob=(w_t * seg_prob).sum(axis=1), tokens=h)
        return out


class ReferenceBranch(nn.Module):
    """Audio and visual Reference encoders, each with its own activation-free embedding.

    Returns ``{"a": ..., "v": ...}``, each the dict of ``UnimodalReference``.
    ``visual_time_reads_dropped``: the visual encoder's temporal attention reads
    the head-dropped features, as the authors' ``Self_Video_Net`` does (their
    audio encoder reads the un-dropped ones).
    """

    num_classes: int = 25
    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1
    head_dropout: float = 0.5
    class_tokens: bool = True
    pool_frames_first: bool = True  # False: the authors' per-frame projection (same maths)
    visual_time_reads_dropped: bool = True
    param_init: str = "torch"

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
        kw = dict(
            num_classes=self.num_classes,
            d_model=self.d_model,
            ffn_dim=self.ffn_dim,
            dropout=self.dropout,
            head_dropout=self.head_dropout,
            class_tokens=self.class_tokens,
            param_init=self.param_init,
        )
        return {
            "a": UnimodalReference(**kw, name="audio")(x_a, mask, train=train),
            "v": UnimodalReference(
                **kw, time_reads_dropped=self.visual_time_reads_dropped, name="visual"
            )(x_v, mask, train=train),
        }


def build(model_config, num_classes: int, class_tokens: bool | None = None) -> ReferenceBranch:
    """The Reference for ``config.model`` (``class_tokens`` overrides
    ``model_config.class_tokens``, e.g. to cost it with and without them)."""
    return ReferenceBranch(
        num_classes=num_classes,
        d_model=model_config.d_model,
        ffn_dim=model_config.ffn_dim,
        dropout=model_config.dropout,
        head_dropout=model_config.reference_head_dropout,
        class_tokens=model_config.class_tokens if class_tokens is None else class_tokens,
        pool_frames_first=model_config.pool_frames_first,
        visual_time_reads_dropped=model_config.reference_visual_time_reads_dropped,
        param_init=model_config.init,
    )
