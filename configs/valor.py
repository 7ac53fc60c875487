"""VALOR (Lai, Chen & Wang, NeurIPS 2023): HAN's network made wider and deeper, trained on
CLIP/CLAP segment pseudo-labels with AdamW: configs/llp.py's values (or
configs/synthetic.py's), with the differences below, each from VALOR's code
(github.com/Franklin905/VALOR at 2677da9: ``scripts/train_valor*.sh``, ``main_avvp.py``,
``main_network.py``).

    python train.py --config configs/valor.py --config.data.root=/path/to/LLP --workdir runs/valor
    python train.py --config configs/valor.py:plus --config.data.root=/path/to/LLP --workdir runs/valor_plus
    python train.py --config configs/valor.py:synthetic --workdir runs/valor_synthetic

``data.root`` holds the LLP features and VALOR's segment pseudo-labels
(``CLAP/segment_pseudo_labels/<id>.npy``, ``CLIP/segment_pseudo_labels/<id>.npy``; made
from video files by ``python -m coleaf_jax.features ... --valor``, docs/features.md).
Options: ``plus`` (VALOR+: width 256, 4 layers, lr 3e-4) and/or ``synthetic`` (the
embedded data: its sizes, 12 epochs with warm-up scaled to 2). ``plus_plus`` (VALOR++)
reads CLAP token maps and CLIP features, which the data pipeline cannot load yet: refused.

The Anchor ``valor`` is the HAN Anchor with ``num_heads``, ``num_layers``,
``update_order = 'audio_first'`` (docs/method.md §4.1) and VALOR's loss: ``BCE(p, y)`` plus
the BCE with logits of each modality's segment logits against its pseudo-labels
(``loss.pseudo_label_segment_weight = 2``: VALOR sums the two modalities' means).
"""

import ml_collections

from coleaf_jax.config import load_sibling, parse_options

# scripts/train_valor.sh and train_valor+.sh: (seed, width, layers, lr, lr_min)
VARIANTS = {"": (1000, 512, 1, 1e-4, 1e-6), "plus": (64, 256, 4, 3e-4, 3e-6)}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_options(
        arg, "configs/valor.py", variant=("plus", "plus_plus"), data=("synthetic",)
    )
    if options["variant"] == "plus_plus":
        raise ValueError(
            "configs/valor.py:plus_plus: VALOR++ reads CLAP token maps and CLIP features, "
            "which the data pipeline cannot load yet (its released model: docs/models.md)"
        )
    seed, width, layers, lr, lr_min = VARIANTS[options["variant"]]
    c = load_sibling(__file__, "synthetic.py" if options["data"] else "llp.py")  # then:
    c.method = "anchor_only"  # no Reference
    c.model.anchor = "valor"
    c.model.num_heads = 8  # --nhead 8
    c.model.ffn_dim = 1024  # --ff_dim 1024
    c.model.num_layers = layers  # --num_layers
    c.model.update_order = "audio_first"  # main_network.py:22-26
    c.model.dropout = 0.1  # HANLayer(dropout=0.1), its default
    c.model.pool_frames_first = True  # fc_v is linear: averaging frames first is exact
    c.data.pseudo_labels = True  # --v_pseudo_data_dir, --a_pseudo_data_dir
    c.loss.denoise = False  # no JoMoLD
    c.loss.pseudo_label_segment_form = "logits"  # F.binary_cross_entropy_with_logits
    c.loss.pseudo_label_segment_weight = 2.0  # loss_valor_a + loss_valor_v: two means
    c.optimizer = "adamw"  # --optimizer adamw
    c.adam_betas = (0.5, 0.999)  # --beta1 0.5, beta2 default 0.999
    c.adam_eps = 1e-8  # --eps 1e-8
    c.weight_decay = 1e-3  # --weight_decay 1e-3
    c.grad_clip_norm = 1.0  # --grad_norm 1.0
    c.lr_schedule = "warmup_cosine"  # --scheduler warm_up_cos_anneal
    c.eval.thresholds = "standard"  # its evaluation: HAN's rule
    c.eval.selection = "type"  # best validation Seg-type (main_avvp.py:404)
    if options["data"]:  # the embedded data: its sizes, the schedule's shape kept
        c.model.d_model = 128
        c.model.ffn_dim = 256
        c.learning_rate, c.lr_min = lr, lr_min
        c.lr_warmup_epochs = 2  # 10 of 60 epochs, scaled to synthetic.py's 12
        c.name = "valor" + ("_plus" if options["variant"] else "") + "_synthetic"
        return c
    c.seed = seed  # --seed
    c.model.d_model = width  # --hidden_dim
    c.batch_size = 64  # --batch_size 64
    c.num_epochs = 60  # --epochs 60
    c.learning_rate, c.lr_min = lr, lr_min  # --lr, --lr_min
    c.lr_warmup_epochs = 10  # --warm_up_epoch 10
    c.name = "valor" + ("_plus" if options["variant"] else "") + "_llp"
    return c
