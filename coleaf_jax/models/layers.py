"""Input embedding (docs/method.md §3), the HAN layer (§4.1) and the self-attention-only layer (§5).

Shapes: ``B`` videos, ``T`` segments, ``D`` model width. Every attention takes
a padding mask ``(B, T)`` (1 = valid segment).

Initialisation (``param_init``): ``'torch'`` (default) draws every parameter as the
authors' PyTorch modules are initialised, so training starts where theirs
does; ``'flax'`` keeps flax's defaults. See :mod:`coleaf_jax.models.init`.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax.models.dropout import Dropout
from coleaf_jax.models.init import INITS, attention_initializers, linear_initializers


def attention_mask(q_mask: jnp.ndarray, kv_mask: jnp.ndarray) -> jnp.ndarray:
    """``(B, 1, Tq, Tk)`` boolean mask of the keys a query may attend to.

    Padded keys are never attended; padded queries still attend (their outputs
    are ignored downstream), which keeps every softmax row well defined.
    """
    del q_mask
    return kv_mask.astype(bool)[:, None, None, :]


class Linear(nn.Module):
    """``y = x W + b`` with ``W (in, out)``, ``b (out,)`` (params ``kernel``, ``bias``).

    PyTorch's ``nn.Linear`` under ``param_init='torch'``: ``W, b ~ U(±1/√in)``;
    flax's ``nn.Dense`` defaults under ``param_init='flax'`` (LeCun normal, zeros).
    """

    features: int
    param_init: str = "torch"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        fan_in = x.shape[-1]
        kernel_init, bias_init = linear_initializers(self.param_init, fan_in)
        kernel = self.param("kernel", kernel_init, (fan_in, self.features), jnp.float32)
        bias = self.param("bias", bias_init, (self.features,), jnp.float32)
        return jnp.dot(x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


def torch_bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """``(n_out, n_in)``: torch's ``F.interpolate(mode='bicubic', align_corners=False)``
    along one axis as a matrix (Keys' kernel with ``a = -0.75``, source index
    ``(i + 0.5) n_in / n_out - 0.5``, taps clamped to the border)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(src))
        t = src - base
        for k, w in zip(range(-1, 3), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            m[i, min(max(base + k, 0), n_in - 1)] += w
    return m


def adaptive_avg_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)``: torch's ``adaptive_avg_pool1d`` (bin ``i`` averages
    ``floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1``)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        start, stop = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, start:stop] = 1.0 / (stop - start)
    return m


def audio_map_to_segments(audio: jnp.ndarray, num_segments: int, rows: int = 2) -> jnp.ndarray:
    """VALOR++'s CLAP token map ``(B, L, F)`` (HTSAT's ``rows x L/rows`` grid, row-major;
    CLAP: ``64 = 2 x 32``) to ``(B, num_segments, F)`` segment features.

    VALOR (``main_network.py:143-148``) upsamples the grid bicubically to
    ``rows x 1024``, projects every position with ``fc_a``, averages the rows and
    pools the 1024 positions adaptively to the segments. Every step but the
    projection is linear with weights summing to 1, so it commutes with ``fc_a``
    (bias included): here the map is resampled first, as one ``(num_segments,
    L/rows)`` matrix, and ``fc_a`` projects 10 vectors instead of 2048.
    """
    b, length, f = audio.shape
    if length % rows:
        raise ValueError(f"audio map of {length} tokens is not a {rows}-row grid")
    cols = length // rows
    resample = adaptive_avg_pool_matrix(1024, num_segments) @ torch_bicubic_matrix(cols, 1024)
    grid = audio.reshape(b, rows, cols, f).mean(axis=1)
    return jnp.einsum("tc,bcf->btf", jnp.asarray(resample, audio.dtype), grid)


class AudioEmbedding(nn.Module):
    """``x_a = act(Linear(128→D)(a))`` (docs/method.md §3). Input ``(B, T, 128)``, returns ``(B, T, D)``."""

    d_model: int = 512
    activation: Callable[[jnp.ndarray], jnp.ndarray] | None = None
    param_init: str = "torch"

    @nn.compact
    def __call__(self, audio):
        act = self.activation or (lambda x: x)
        return act(Linear(self.d_model, self.param_init, name="audio")(audio))


class VisualEmbedding(nn.Module):
    """``x_v = Linear(2D→D)([AvgPool_8(Linear(2048→D)(v2d)) ; Linear(512→D)(v3d)])`` (docs/method.md §3).

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
    param_init: str = "torch"

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
        v2 = act(Linear(self.d_model, self.param_init, name="video_2d")(video_2d))
        if per_seg > 1:
            v2 = v2.reshape(b, t, per_seg, -1).mean(axis=2)
        if video_3d.shape[-1] == 0:  # one visual stream only (UnAV-100 ONE-PEACE features)
            return act(Linear(self.d_model, self.param_init, name="fusion")(v2))
        v3 = act(Linear(self.d_model, self.param_init, name="video_3d")(video_3d))
        return act(
            Linear(self.d_model, self.param_init, name="fusion")(jnp.concatenate([v2, v3], axis=-1))
        )


class MultiHeadAttention(nn.Module):
    """PyTorch's ``nn.MultiheadAttention`` (batch first), with a key padding mask.

    ``softmax(q kᵀ / √d_head)`` per head, dropout on the attention weights
    (an independent mask per element, as torch draws it), output projection.
    Params ``query``, ``key``, ``value``, ``out``, each ``{kernel (D, D), bias (D,)}``;
    under ``param_init='torch'`` the three input projections are drawn as one fused
    ``xavier_uniform`` ``(3D, D)`` matrix (torch's ``in_proj_weight``) and every
    bias is zero.

    Inputs ``x_q (B, Tq, D)``, ``x_kv (B, Tk, D)``, ``mask (B, 1, Tq, Tk)``.
    """

    d_model: int = 512
    num_heads: int = 1
    dropout: float = 0.1
    param_init: str = "torch"

    @nn.compact
    def __call__(self, x_q, x_kv, mask=None, *, deterministic: bool):
        d, h = self.d_model, self.num_heads
        if d % h:
            raise ValueError(f"d_model = {d} is not divisible by num_heads = {h}")
        in_init, out_init, bias_init = attention_initializers(self.param_init, d)

        q = _Projection(d, in_init, bias_init, name="query")(x_q)
        k = _Projection(d, in_init, bias_init, name="key")(x_kv)
        v = _Projection(d, in_init, bias_init, name="value")(x_kv)
        b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
        q = q.reshape(b, tq, h, d // h) * (d // h) ** -0.5
        k = k.reshape(b, tk, h, d // h)
        v = v.reshape(b, tk, h, d // h)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = Dropout(self.dropout)(weights, deterministic=deterministic)
        y = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, tq, d)
        return _Projection(d, out_init, bias_init, name="out")(y)


class _Projection(nn.Module):
    """``x W + b`` with given initialisers (the attention's projections)."""

    features: int
    kernel_init: Callable
    bias_init: Callable

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return jnp.dot(x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


def _layer_norm(name: str) -> nn.LayerNorm:
    """torch's ``nn.LayerNorm``: ε = 1e-5, two-pass variance (flax's default one-pass
    ``E[x²] - E[x]²`` loses float32 precision when the mean is large)."""
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


class _FeedForward(nn.Module):
    d_model: int
    ffn_dim: int
    dropout: float
    param_init: str = "torch"

    @nn.compact
    def __call__(self, x, deterministic: bool):
        y = Linear(self.ffn_dim, self.param_init, name="linear1")(x)
        y = Dropout(self.dropout)(nn.relu(y), deterministic=deterministic)
        y = Linear(self.d_model, self.param_init, name="linear2")(y)
        return Dropout(self.dropout)(y, deterministic=deterministic)


class HANLayer(nn.Module):
    """The hybrid attention layer of HAN (docs/method.md §4.1), one set of weights for both streams.

    ``x' = LN1(x + Drop(SelfAttn(x)) + Drop(CrossAttn(q=x, kv=y)))``,
    ``out = LN2(x' + Drop(W2·Drop(ReLU(W1·x'))))``, applied to ``(x_a, x_v)`` and
    to ``(x_v, x_a)``. ``cross=False`` drops the cross term (CMPAE's second pass).
    ``audio_first=True`` updates the visual stream from the *updated* audio stream,
    ``(x_v, out_a)``, as VALOR's and UWAV's encoders do (``main_network.py:22-26`` of
    Franklin905/VALOR); HAN and CMPAE update both from the layer's inputs.
    ``num_heads``: of both attentions (HAN, CMPAE: 1; VALOR: 8).

    Inputs ``x_a, x_v (B, T, D)``, ``mask (B, T)``; returns the two updated streams.
    """

    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1
    param_init: str = "torch"
    num_heads: int = 1

    @nn.compact
    def __call__(
        self, x_a, x_v, mask, *, deterministic: bool, cross: bool = True, audio_first: bool = False
    ):
        self_attn = MultiHeadAttention(
            self.d_model, self.num_heads, self.dropout, self.param_init, name="self_attn"
        )
        cross_attn = MultiHeadAttention(
            self.d_model, self.num_heads, self.dropout, self.param_init, name="cross_attn"
        )
        ffn = _FeedForward(self.d_model, self.ffn_dim, self.dropout, self.param_init, name="ffn")
        norm1, norm2 = _layer_norm("norm1"), _layer_norm("norm2")
        drop = Dropout(self.dropout)
        att_mask = attention_mask(mask, mask)

        def one_stream(x, y):
            h = x + drop(
                self_attn(x, x, att_mask, deterministic=deterministic), deterministic=deterministic
            )
            if cross:
                h = h + drop(
                    cross_attn(x, y, att_mask, deterministic=deterministic),
                    deterministic=deterministic,
                )
            elif self.is_initializing():
                cross_attn(x, y, att_mask, deterministic=True)  # create its params
            h = norm1(h)
            return norm2(h + ffn(h, deterministic))

        out_a = one_stream(x_a, x_v)
        return out_a, one_stream(x_v, out_a if audio_first else x_a)


class SelfAttentionLayer(nn.Module):
    """The HAN layer without the cross term, for one stream (Reference, docs/method.md §5).

    Input ``x (B, L, D)``, ``mask (B, L)``; returns ``(B, L, D)``.
    """

    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1
    param_init: str = "torch"

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        drop = Dropout(self.dropout)
        att = MultiHeadAttention(self.d_model, 1, self.dropout, self.param_init, name="self_attn")
        h = x + drop(
            att(x, x, attention_mask(mask, mask), deterministic=deterministic),
            deterministic=deterministic,
        )
        h = _layer_norm("norm1")(h)
        h = h + _FeedForward(self.d_model, self.ffn_dim, self.dropout, self.param_init, name="ffn")(
            h, deterministic
        )
        return _layer_norm("norm2")(h)


__all__ = [
    "INITS",
    "AudioEmbedding",
    "HANLayer",
    "Linear",
    "MultiHeadAttention",
    "SelfAttentionLayer",
    "VisualEmbedding",
    "attention_mask",
    "audio_map_to_segments",
]
