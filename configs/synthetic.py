"""CoLeaF on the embedded synthetic dataset (the README demo).

    python train.py --config configs/synthetic.py --workdir runs/synthetic

The dataset is generated under ``<workdir>/data`` on first use (no download).
Same model and losses as configs/llp.py; fewer videos and epochs so that it
trains in about a minute on 2 CPU cores. ``configs/synthetic.py:han`` is the
plain HAN baseline.
"""

from coleaf_jax.config import base_config


def get_config(variant: str = ""):
    config = base_config()
    config.name = "coleaf_han_synthetic"
    config.data.dataset = "synthetic"
    config.data.synthetic_videos = 600
    config.num_epochs = 8
    config.batch_size = 64
    config.lr_decay_every_epochs = 4
    config.loss.kd_warmup_epochs = 2
    config.loss.class_token_warmup_epochs = 2
    config.log_every_steps = 5
    if variant == "han":
        config.method = "anchor_only"
        config.name = "han_synthetic"
    elif variant:
        raise ValueError(f"configs/synthetic.py: unknown variant {variant!r} (expected '' or 'han')")
    return config
