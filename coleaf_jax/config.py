"""The default configuration (SPEC defaults); files in ``configs/`` start from it.

Every value says where it comes from: *paper* (CoLeaF ECCV 2024, SPEC §3-§7),
*official* (the authors' public code) or *ours*.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """CoLeaF with the HAN Anchor on LLP, SPEC defaults."""
    c = ml_collections.ConfigDict()
    c.name = "coleaf_han_llp"
    # 'coleaf': Anchor + Reference with the collaborative losses;
    # 'anchor_only': the plain Anchor baseline (HAN), no Reference.
    c.method = "coleaf"
    c.seed = 0
    c.num_epochs = 15  # paper (official code default: 10)
    c.batch_size = 128  # paper; the global batch, split across devices
    c.learning_rate = 5e-4  # official (HAN used 3e-4)
    c.lr_decay_every_epochs = 6  # paper: lr x0.25 every 6 epochs
    c.lr_decay_factor = 0.25
    c.log_every_steps = 10

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "llp"  # 'llp' (features on disk) or 'synthetic' (generated on first use)
    c.data.root = ""  # LLP feature root (vggish/, res152/, r2plus1d_18/); required for 'llp'
    c.data.annotation_dir = ""  # the five CSVs; '' = data.root
    c.data.tfds_dir = ""  # TFDS cache; '' = the TFDS default (~/tensorflow_datasets)
    c.data.synthetic_videos = 1000  # 'synthetic' only: total videos
    c.data.synthetic_seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.anchor = "han"  # 'han' (SPEC §4.1-4.2)
    c.model.class_tokens = True  # Reference class tokens (paper)
    c.model.d_model = 512  # paper
    c.model.ffn_dim = 512  # HAN
    c.model.dropout = 0.1  # HAN
    c.model.reference_head_dropout = 0.5  # paper §5

    c.loss = ml_collections.ConfigDict()
    c.loss.visual_label_smoothing = (0.9, 0.05)  # HAN: y_v = 0.9 y + 0.05
    c.loss.reference = "bce"  # paper; 'asl' = official asymmetric loss
    c.loss.class_token_warmup_epochs = 3  # official: class-token weights change after 3 epochs
    c.loss.class_token_weight_audio = (1.0, 1.0)  # (warm-up, after); official with ASL: (1.2, 0.001)
    c.loss.class_token_weight_visual = (1.0, 1.0)  # official with ASL: (1.0, 0.0)
    # (a) contrastive: 'event_aware' (paper), 'standard' (w = 1), 'bce' (BCE on pseudo-labels), 'none'.
    c.loss.contrastive = "event_aware"
    c.loss.nce_form = "expected"  # official: -log Σ q·π; 'cross_entropy': -Σ q·log π
    c.loss.nce_temperature = 0.2  # paper
    c.loss.nce_smoothing = 0.1  # official; 0 = plain InfoNCE
    c.loss.nce_weight_audio = 0.009  # official
    c.loss.nce_weight_visual = 1.0  # official
    c.loss.pseudo_label_threshold = 0.5  # r^m = 1[q^m >= 0.5]
    # (b) self-modality-aware KD
    c.loss.kd = True
    c.loss.kd_threshold_audio = 0.5  # paper
    c.loss.kd_threshold_visual = 0.6  # paper
    c.loss.kd_warmup_epochs = 3  # official: KD from epoch 4 on, then weak and KD weighted 0.5 each
    c.loss.kd_weight = 0.5
    # (c) co-occurrence class correlation
    c.loss.correlation = True
    c.loss.correlation_teacher = "reference"  # paper; 'confident' = official mix
    c.loss.correlation_confidence_audio = (0.8, 0.1)  # official (high, low)
    c.loss.correlation_confidence_visual = (0.6, 0.4)  # official
    c.loss.correlation_scaling = "official"  # sum / C x batch; 'mean' = plain MSE
    c.loss.correlation_weight = 1e-4  # official
    c.loss.collab_start_epoch = 1  # official: collaborative Anchor terms from epoch 2 (0-based 1)

    c.eval = ml_collections.ConfigDict()
    c.eval.thresholds = "standard"  # 'standard' (HAN 0.5/0.5, joint gate) or 'official' (0.52/0.25)
    c.eval.batch_size = 256
    c.eval.every_epochs = 1
    return c


def _apply_variant(config: ml_collections.ConfigDict, variant: str, source: str):
    """``''`` = CoLeaF; ``'han'`` = the plain HAN baseline (``method='anchor_only'``)."""
    if variant == "han":
        config.method = "anchor_only"
        config.name = config.name.replace("coleaf_han", "han")
    elif variant:
        raise ValueError(f"{source}: unknown variant {variant!r} (expected '' or 'han')")
    return config


def llp_config(variant: str = "") -> ml_collections.ConfigDict:
    """``configs/llp.py``: the paper's defaults on LLP (``data.root`` must be given)."""
    return _apply_variant(base_config(), variant, "configs/llp.py")


def synthetic_config(variant: str = "") -> ml_collections.ConfigDict:
    """``configs/synthetic.py``: the embedded dataset, sized to train in about a minute on 2 cores.

    Same model and losses as LLP but half the width (D = 256), fewer videos,
    smaller batches and fewer epochs, with every epoch-based schedule (lr
    decay, warm-ups) scaled to the shorter run.
    """
    c = base_config()
    c.name = "coleaf_han_synthetic"
    c.data.dataset = "synthetic"
    c.data.synthetic_videos = 600
    c.model.d_model = 256
    c.model.ffn_dim = 256
    c.num_epochs = 8
    c.batch_size = 32
    c.lr_decay_every_epochs = 4
    c.loss.kd_warmup_epochs = 2
    c.loss.class_token_warmup_epochs = 2
    c.log_every_steps = 5
    return _apply_variant(c, variant, "configs/synthetic.py")
