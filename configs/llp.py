"""CoLeaF on LLP, trained as the authors' code trains it (SPEC §3-§8).

    python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir runs/llp

``config.data.root`` is required: the folder with vggish/, res152/, r2plus1d_18/
and (unless --config.data.annotation_dir is given) the five AVVP CSVs.
Default: CoLeaF with the CMPAE Anchor and JoMoLD denoising (the paper's best,
Table 5). Variants after a colon: ``:coleaf_han`` (CoLeaF with the HAN Anchor),
``:cmpae`` and ``:han`` (the plain Anchors, no Reference). Add ``paper`` for the
paper's text's recipe where it differs from the authors' code (BCE Reference
loss, Reference correlation teacher, annealed JoMoLD, 15 epochs), e.g.
``configs/llp.py:paper`` or ``configs/llp.py:coleaf_han,paper``.
"""

from coleaf_jax.config import llp_config


def get_config(variant: str = ""):
    return llp_config(variant)
