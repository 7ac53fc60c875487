"""CoLeaF on LLP with the paper's defaults (SPEC §3-§7).

    python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir runs/llp

``config.data.root`` is required: the folder with vggish/, res152/, r2plus1d_18/
and (unless --config.data.annotation_dir is given) the five AVVP CSVs.
Default: CoLeaF with the CMPAE Anchor and JoMoLD denoising (the paper's best,
Table 5). Variants after a colon: ``:coleaf_han`` (CoLeaF with the HAN Anchor),
``:cmpae`` and ``:han`` (the plain Anchors, no Reference).
"""

from coleaf_jax.config import llp_config


def get_config(variant: str = ""):
    return llp_config(variant)
