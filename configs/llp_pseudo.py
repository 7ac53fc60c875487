"""CoLeaF trained with VALOR's CLIP/CLAP segment pseudo-labels (SPEC §9, paper Table 6).

    python train.py --config configs/llp_pseudo.py --config.data.root=/path/to/LLP --workdir runs/llp_pseudo
    python train.py --config configs/llp_pseudo.py:synthetic --workdir runs/pseudo_synthetic

``data.root`` holds the LLP features and CLAP/segment_pseudo_labels/<id>.npy
(audio), CLIP/segment_pseudo_labels/<id>.npy (visual), (10, 25) 0/1 each. The
modality labels become max_t of the pseudo-labels and the Anchor gets an extra
segment-level BCE against them (weight ``loss.pseudo_label_segment_weight``);
CoLeaF's collaborative losses are unchanged. JoMoLD is off: the modality labels
no longer come from the modality-agnostic weak label it denoises.
Variants: a method (``coleaf_cmpae`` default, ``coleaf_han``, ``han``, ``cmpae``)
and/or ``synthetic`` (the embedded data, whose generator writes pseudo-labels
from a simulated imperfect teacher), e.g. ``configs/llp_pseudo.py:han,synthetic``.
"""

from coleaf_jax.config import pseudo_label_config


def get_config(variant: str = ""):
    return pseudo_label_config(variant)
