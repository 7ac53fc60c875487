"""Input embedding (SPEC §3), the HAN layer (§4.1) and the self-attention-only layer (§5).

Shapes: ``B`` videos, ``T`` segments, ``D`` model width. Every attention takes
a padding mask ``(B, T)`` (1 = valid segment).
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp


def attention_mask(q_mask: jnp.ndarray, kv_mask: jnp.ndarray) -> jnp.ndarray:
    """``(B, 1, Tq, Tk)`` boolean mask for ``nn.MultiHeadDotProductAttention``.

    Padded keys are never attended; padded queries still attend (their outputs
    are ignored downstream), which keeps every softmax row well defined.
    """
    del q_mask
    return kv_mask.astype(bool)[:, None, None, :]


class AudioEmbedding(nn.Module):
    """``x_a = act(Linear(128→D)(a))`` (SPEC §3). Input ``(B, T, 128)``, returns ``(B, T, D)``."""

    d_model: int = 512
    activation: Callable[[jnp.ndarray], jnp.ndarray] | None = None

    @nn.compact
    def __call__(self, audio):
        act = self.activation or (lambda x: x)
        return act(nn.Dense(self.d_model, name="audio")(audio))


class VisualEmbedding(nn.Module):
    """``x_v = Linear(2D→D)([AvgPool_8(Linear(2048→D)(v2d)) ; Linear(512→D)(v3d)])`` (SPEC §3).

    With ``activation`` (CMPAE: ELU) it follows every linear. Without it the
    frame average commutes with the frame projection, so frames are averaged
    first (8x fewer FLOPs, same maths); ``video_2d`` may also arrive pre-pooled.
    ``pool_first=False`` keeps the authors' order (project every frame, then
    average) for comparisons and benchmarks.

    Inputs: video_2d ``(B, T*F or T, 2048)``, video_3d ``(B, T, 512)`` (LLP widths;
    a width-0 ``video_3d`` means a single visual stream, fused alone).
    Returns ``(B, T, D)``.
    """

    d_model: int = 512
    activation: Callable[[jnp.ndarray], jnp.ndarray] | None = None
    pool_first: bool = True

    @nn.compact
    def __call__(self, video_2d, video_3d):
        act = self.activation or (lambda x: x)
        b, t = video_3d.shape[:2]
        frames = video_2d.shape[1]
        if frames % t:
            raise ValueError(f"video_2d has {frames} frames, not a multiple of T = {t}")
        per_seg = frames // t
        if self.activation is None and self.pool_first and per_seg > 1:
            video_2d = video_2d.reshape(b, t, per_seg, -1).mean(axis=2)
            per_seg = 1
        v2 = act(nn.Dense(self.d_model, name="video_2d")(video_2d))
        if per_seg > 1:
            v2 = v2.reshape(b, t, per_seg, -1).mean(axis=2)
        if video_3d.shape[-1] == 0:  # one visual stream only (UnAV-100 ONE-PEACE features)
            return act(nn.Dense(self.d_model, name="fusion")(v2))
        v3 = act(nn.Dense(self.d_model, name="video_3d")(video_3d))
        return act(nn.Dense(self.d_model, name="fusion")(jnp.concatenate([v2, v3], axis=-1)))


def _attention(d_model: int, dropout: float, name: str) -> nn.MultiHeadDotProductAttention:
    """One-head attention with input/output projections, as PyTorch's MultiheadAttention."""
    return nn.MultiHeadDotProductAttention(
        num_heads=1, qkv_features=d_model, out_features=d_model, dropout_rate=dropout, name=name)


class _FeedForward(nn.Module):
    d_model: int
    ffn_dim: int
    dropout: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        y = nn.Dense(self.ffn_dim, name="linear1")(x)
        y = nn.Dropout(self.dropout)(nn.relu(y), deterministic=deterministic)
        y = nn.Dense(self.d_model, name="linear2")(y)
        return nn.Dropout(self.dropout)(y, deterministic=deterministic)


class HANLayer(nn.Module):
    """The hybrid attention layer of HAN (SPEC §4.1), one set of weights for both streams.

    ``x' = LN1(x + Drop(SelfAttn(x)) + Drop(CrossAttn(q=x, kv=y)))``,
    ``out = LN2(x' + Drop(W2·Drop(ReLU(W1·x'))))``, applied to ``(x_a, x_v)`` and
    to ``(x_v, x_a)``. ``cross=False`` drops the cross term (CMPAE's second pass).

    Inputs ``x_a, x_v (B, T, D)``, ``mask (B, T)``; returns the two updated streams.
    """

    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x_a, x_v, mask, *, deterministic: bool, cross: bool = True):
        self_attn = _attention(self.d_model, self.dropout, "self_attn")
        cross_attn = _attention(self.d_model, self.dropout, "cross_attn")
        ffn = _FeedForward(self.d_model, self.ffn_dim, self.dropout, name="ffn")
        norm1, norm2 = nn.LayerNorm(epsilon=1e-5, name="norm1"), nn.LayerNorm(epsilon=1e-5, name="norm2")
        drop = nn.Dropout(self.dropout)
        att_mask = attention_mask(mask, mask)

        def one_stream(x, y):
            h = x + drop(self_attn(x, x, mask=att_mask, deterministic=deterministic),
                         deterministic=deterministic)
            if cross:
                h = h + drop(cross_attn(x, y, mask=att_mask, deterministic=deterministic),
                             deterministic=deterministic)
            elif self.is_initializing():
                cross_attn(x, y, mask=att_mask, deterministic=True)  # create its params
            h = norm1(h)
            return norm2(h + ffn(h, deterministic))

        return one_stream(x_a, x_v), one_stream(x_v, x_a)


class SelfAttentionLayer(nn.Module):
    """The HAN layer without the cross term, for one stream (Reference, SPEC §5).

    Input ``x (B, L, D)``, ``mask (B, L)``; returns ``(B, L, D)``.
    """

    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        drop = nn.Dropout(self.dropout)
        att = _attention(self.d_model, self.dropout, "self_attn")
        h = x + drop(att(x, x, mask=attention_mask(mask, mask), deterministic=deterministic),
                     deterministic=deterministic)
        h = nn.LayerNorm(epsilon=1e-5, name="norm1")(h)
        h = h + _FeedForward(self.d_model, self.ffn_dim, self.dropout, name="ffn")(h, deterministic)
        return nn.LayerNorm(epsilon=1e-5, name="norm2")(h)
