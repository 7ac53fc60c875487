"""The CMPAE Anchor as the official CoLeaF code runs it (docs/method.md §4.3, Appendix A).

Embedding with an ELU after every linear; the HAN layer run with and without
its cross term, mixed ``h = 0.8·h_CA + 0.2·h_noCA`` for training; evidential
presence/absence heads (Dirichlet probability and uncertainty) with a
cross-modal residual for the absence logits; attentive temporal pooling of
the logits; a global branch with its own uncertainty. Inference fuses the
mixed pass and the no-cross-attention pass ``0.7 / 0.3``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from coleaf_jax.models.dropout import Dropout
from coleaf_jax.models.layers import AudioEmbedding, HANLayer, Linear, VisualEmbedding
from coleaf_jax.models.mmil import masked_softmax

EVIDENCE_CLIP = 10.0
EVIDENCE_TEMPERATURE = 0.8


def evidence(logits: jnp.ndarray) -> jnp.ndarray:
    """``e(l) = exp(clip(l, -10, 10) / 0.8)``."""
    return jnp.exp(jnp.clip(logits, -EVIDENCE_CLIP, EVIDENCE_CLIP) / EVIDENCE_TEMPERATURE)


def dirichlet_presence(logits: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Presence probability and uncertainty from (presence, absence) logits.

    ``α_k = e(l_k) + 1``; ``p = α_0 / Σα``, ``u = K / Σα`` with ``K = 2``.

    Args:
      logits: ``(..., 2)``.
    Returns:
      ``(p, u)``, each ``(...)``.
    """
    alpha = evidence(logits) + 1.0
    total = alpha.sum(-1)
    return alpha[..., 0] / total, logits.shape[-1] / total


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray, axis: int = 1) -> jnp.ndarray:
    """Mean of ``x (B, T, ...)`` over valid segments ``mask (B, T)``."""
    m = mask.astype(x.dtype).reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return (x * m).sum(axis) / jnp.maximum(m.sum(axis), 1.0)


class _ResidualMLP(nn.Module):
    """``Linear(D→D)``, Dropout (0.2), LeakyReLU 0.2 (the cross-modal residual)."""

    d_model: int
    dropout: float
    param_init: str = "torch"

    @nn.compact
    def __call__(self, x, deterministic: bool):
        x = Dropout(self.dropout)(
            Linear(self.d_model, self.param_init, name="linear")(x), deterministic=deterministic
        )
        return nn.leaky_relu(x, 0.2)


class EvidentialHeads(nn.Module):
    """Presence/absence logits, attentive temporal pooling, Dirichlet outputs.

    Input ``h_a, h_v (B, T, D)``, ``mask (B, T)``. Returns ``seg_prob, seg_unc
    (B, T, 2, C)``, ``modality_prob, modality_unc (B, 2, C)``.
    """

    num_classes: int
    d_model: int
    residual_dropout: float = 0.2
    param_init: str = "torch"

    @nn.compact
    def __call__(self, h_a, h_v, mask, *, deterministic: bool):
        c, d, p = self.num_classes, self.d_model, self.residual_dropout
        h = jnp.stack([h_a, h_v], axis=2)  # (B, T, 2, D)
        alpha_logit = Linear(c, self.param_init, name="fc_alpha")(h)
        fc_beta = Linear(c, self.param_init, name="fc_beta")
        mixed = h_a + h_v
        beta_a = fc_beta(
            h_a + _ResidualMLP(d, p, self.param_init, name="mlp_v2a")(mixed, deterministic)
        )
        beta_v = fc_beta(
            h_v + _ResidualMLP(d, p, self.param_init, name="mlp_a2v")(mixed, deterministic)
        )
        logits = jnp.stack(
            [alpha_logit, jnp.stack([beta_a, beta_v], axis=2)], axis=-1
        )  # (B,T,2,C,2)
        att = Linear(2 * c, self.param_init, name="fc_att")(h).reshape(logits.shape)
        w = masked_softmax(att, mask[:, :, None, None, None], axis=1)
        video_logits = (w * logits).sum(axis=1)  # (B, 2, C, 2)
        seg_prob, seg_unc = dirichlet_presence(logits)
        prob, unc = dirichlet_presence(video_logits)
        return {
            "seg_prob": seg_prob,
            "seg_unc": seg_unc,
            "modality_prob": prob,
            "modality_unc": unc,
        }


class CMPAEAnchor(nn.Module):
    """CMPAE (Gao et al., 2023) with CoLeaF's settings (docs/method.md Appendix A).

    Outputs the Anchor dict of ``coleaf_jax.models.han`` plus, in training,
    ``global_prob (B, C)``, ``global_unc (B,)``, ``video_unc (B, 2, C)``,
    ``noca_video_prob_a/v (B, C)`` (the no-cross-attention pass, for JoMoLD
    denoising). ``video_prob`` is the global branch's ``p_glob``.
    """

    num_classes: int = 25
    d_model: int = 512
    ffn_dim: int = 512
    dropout: float = 0.1
    visual_dropout: float = 0.5
    residual_dropout: float = 0.2  # official: dropout in the cross-modal residual MLPs
    ca_mix: float = 0.8  # training: h = 0.8 h_CA + 0.2 h_noCA
    inference_mix: float = 0.7  # inference: 0.7 P(mix) + 0.3 P(noCA)
    param_init: str = "torch"  # 'torch': as the authors' PyTorch modules; 'flax': flax defaults

    @nn.compact
    def __call__(self, audio, video_2d, video_3d, mask=None, *, train: bool = False):
        if mask is None:
            mask = jnp.ones(audio.shape[:2], bool)
        det = not train
        x_a = AudioEmbedding(self.d_model, jax.nn.elu, param_init=self.param_init, name="embed_a")(
            audio
        )
        x_v = VisualEmbedding(self.d_model, jax.nn.elu, param_init=self.param_init, name="embed_v")(
            video_2d, video_3d
        )

        # Global branch: shared W1 for both streams, the classifier W2 once on their sum.
        w1 = Linear(self.d_model, self.param_init, name="global_w1")
        w2 = Linear(self.num_classes, self.param_init, name="global_w2")
        g = w2(nn.leaky_relu(w1(x_a), 0.2) + nn.leaky_relu(w1(x_v), 0.2))  # (B, T, C)
        global_prob = masked_mean(jax.nn.sigmoid(g), mask)
        global_unc = self.num_classes / (evidence(masked_mean(g, mask)) + 1.0).sum(-1)

        layer = HANLayer(self.d_model, self.ffn_dim, self.dropout, self.param_init, name="han")
        ca_a, ca_v = layer(x_a, x_v, mask, deterministic=det, cross=True)
        no_a, no_v = layer(x_a, x_v, mask, deterministic=det, cross=False)
        h_a = self.ca_mix * ca_a + (1 - self.ca_mix) * no_a
        h_v = self.ca_mix * ca_v + (1 - self.ca_mix) * no_v
        vis_drop = Dropout(self.visual_dropout)
        heads = EvidentialHeads(
            self.num_classes, self.d_model, self.residual_dropout, self.param_init, name="heads"
        )
        mixed = heads(h_a, vis_drop(h_v, deterministic=det), mask, deterministic=det)
        noca = heads(no_a, vis_drop(no_v, deterministic=det), mask, deterministic=det)

        out = {"tokens_a": h_a, "tokens_v": h_v, "video_prob": global_prob}
        if train:
            out.update(
                seg_prob=mixed["seg_prob"],
                video_prob_a=mixed["modality_prob"][:, 0],
                video_prob_v=mixed["modality_prob"][:, 1],
                video_unc=mixed["modality_unc"],
                global_prob=global_prob,
                global_unc=global_unc,
                noca_video_prob_a=jax.lax.stop_gradient(noca["modality_prob"][:, 0]),
                noca_video_prob_v=jax.lax.stop_gradient(noca["modality_prob"][:, 1]),
            )
        else:
            k = self.inference_mix
            seg = k * mixed["seg_prob"] + (1 - k) * noca["seg_prob"]
            vid = k * mixed["modality_prob"] + (1 - k) * noca["modality_prob"]
            out.update(seg_prob=seg, video_prob_a=vid[:, 0], video_prob_v=vid[:, 1])
        return out


def build(model_config, num_classes: int) -> CMPAEAnchor:
    """The CMPAE Anchor for ``config.model`` (``registry``'s ``'cmpae'``)."""
    return CMPAEAnchor(
        num_classes=num_classes,
        d_model=model_config.d_model,
        ffn_dim=model_config.ffn_dim,
        dropout=model_config.dropout,
        param_init=model_config.init,
        visual_dropout=model_config.cmpae_visual_dropout,
        residual_dropout=model_config.cmpae_residual_dropout,
        ca_mix=model_config.cmpae_ca_mix,
        inference_mix=model_config.cmpae_inference_mix,
    )
