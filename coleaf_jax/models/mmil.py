"""Attentive multimodal multiple-instance pooling (HAN Eq. 3-4, docs/method.md §4.2)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from coleaf_jax.models.layers import Linear

NEG_INF = -1e9


def masked_softmax(logits: jnp.ndarray, mask: jnp.ndarray, axis: int) -> jnp.ndarray:
    """Softmax over ``axis`` where ``mask`` (broadcastable, 1 = valid) is 0 gets weight 0."""
    mask = jnp.broadcast_to(mask.astype(bool), logits.shape)
    w = jax.nn.softmax(jnp.where(mask, logits, NEG_INF), axis=axis)
    return jnp.where(mask, w, 0.0)


def mmil_pool(
    seg_prob: jnp.ndarray, time_logits: jnp.ndarray, mod_logits: jnp.ndarray, mask: jnp.ndarray
) -> dict[str, jnp.ndarray]:
    """Pools segment probabilities to video level with temporal and modality attention.

    ``W_t = softmax_T(time_logits)`` over valid segments, ``W_m = softmax_M(mod_logits)``,
    ``p = Σ_t Σ_m W_t W_m P``, ``p^m = Σ_t W_t[:, m] P[:, m]``.

    Args:
      seg_prob: ``(B, T, M, C)`` segment probabilities ``P`` (M = 2: audio, visual).
      time_logits, mod_logits: ``(B, T, M, C)``.
      mask: ``(B, T)`` valid segments.
    Returns:
      ``video_prob (B, C)``, ``modality_prob (B, M, C)`` and ``time_weights (B, T, M, C)``.
    """
    w_t = masked_softmax(time_logits, mask[:, :, None, None], axis=1)
    w_m = jax.nn.softmax(mod_logits, axis=2)
    temporal = w_t * seg_prob
    return {
        "video_prob": (temporal * w_m).sum(axis=(1, 2)),
        "modality_prob": temporal.sum(axis=1),
        "time_weights": w_t,
    }


class MMILHead(nn.Module):
    """``FC_prob``, ``FC_time``, ``FC_mod`` on ``h (B, T, M, D)`` followed by ``mmil_pool``;
    also returns the segment logits ``seg_logits`` (``FC_prob``'s output, before the sigmoid)."""

    num_classes: int
    param_init: str = "torch"

    @nn.compact
    def __call__(self, h: jnp.ndarray, mask: jnp.ndarray) -> dict[str, jnp.ndarray]:
        c = self.num_classes
        seg_logits = Linear(c, self.param_init, name="fc_prob")(h)
        seg_prob = jax.nn.sigmoid(seg_logits)
        out = mmil_pool(
            seg_prob,
            Linear(c, self.param_init, name="fc_time")(h),
            Linear(c, self.param_init, name="fc_mod")(h),
            mask,
        )
        out["seg_prob"] = seg_prob
        out["seg_logits"] = seg_logits
        return out
