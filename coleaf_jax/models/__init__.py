"""Flax (linen) modules: embeddings, attention layers, MMIL pooling, Anchors, Reference."""

from coleaf_jax.models.han import HANAnchor
from coleaf_jax.models.layers import AudioEmbedding, HANLayer, SelfAttentionLayer, VisualEmbedding
from coleaf_jax.models.mmil import mmil_pool
from coleaf_jax.models.reference import ReferenceBranch, UnimodalReference

__all__ = [
    "AudioEmbedding",
    "HANAnchor",
    "HANLayer",
    "ReferenceBranch",
    "SelfAttentionLayer",
    "UnimodalReference",
    "VisualEmbedding",
    "mmil_pool",
]
