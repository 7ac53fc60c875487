"""CoLeaF on LLP with the paper's defaults (SPEC §3-§7).

    python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir runs/llp

``config.data.root`` is required: the folder with vggish/, res152/, r2plus1d_18/
and (unless --config.data.annotation_dir is given) the five AVVP CSVs.
Variants after a colon: ``configs/llp.py:han`` trains the plain HAN baseline.
"""

from coleaf_jax.config import base_config


def get_config(variant: str = ""):
    config = base_config()
    if variant == "han":
        config.method = "anchor_only"
        config.name = "han_llp"
    elif variant:
        raise ValueError(f"configs/llp.py: unknown variant {variant!r} (expected '' or 'han')")
    return config
