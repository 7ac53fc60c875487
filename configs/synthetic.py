"""CoLeaF on the embedded synthetic dataset (the README demo).

    python train.py --config configs/synthetic.py --workdir runs/synthetic

The dataset is generated under ``<workdir>/data`` on first use (no download).
Same model and losses as configs/llp.py, fewer videos and epochs (see
``coleaf_jax.config.synthetic_config``). Default: CoLeaF with the HAN Anchor;
variants ``:coleaf_cmpae``, ``:cmpae`` and ``:han`` as in configs/llp.py.
"""

from coleaf_jax.config import synthetic_config


def get_config(variant: str = ""):
    return synthetic_config(variant)
