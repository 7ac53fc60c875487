"""CoLeaF trained with VALOR's CLIP/CLAP segment pseudo-labels (docs/method.md §9,
paper Table 6): configs/llp.py's values (or configs/synthetic.py's), with the
differences below.

    python train.py --config configs/llp_pseudo.py --config.data.root=/path/to/LLP --workdir runs/llp_pseudo
    python train.py --config configs/llp_pseudo.py:synthetic --workdir runs/pseudo_synthetic

``data.root`` holds the LLP features and CLAP/segment_pseudo_labels/<id>.npy
(audio), CLIP/segment_pseudo_labels/<id>.npy (visual), (10, 25) 0/1 each. The
modality labels become max_t of the pseudo-labels and the Anchor gets an extra
segment-level BCE against them (weight ``loss.pseudo_label_segment_weight``);
CoLeaF's collaborative losses are unchanged. JoMoLD is off: the modality labels
no longer come from the modality-agnostic weak label it denoises.

Options: a method (``coleaf_cmpae`` default, the Table 6 setting; ``coleaf_han``,
``han``, ``cmpae``) and/or ``synthetic`` (the embedded data, whose generator
writes pseudo-labels from a simulated imperfect teacher), e.g.
``configs/llp_pseudo.py:han,synthetic``.
"""

import ml_collections

from coleaf_jax.config import METHODS, load_sibling, parse_options


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_options(arg, "configs/llp_pseudo.py", method=METHODS, data=("synthetic",))
    method = options["method"] or "coleaf_cmpae"
    base = "synthetic.py" if options["data"] else "llp.py"
    c = load_sibling(__file__, base, method)  # then:
    c.data.pseudo_labels = True
    c.loss.denoise = False
    c.name = c.name.replace("_llp", "_llp_pseudo").replace("_synthetic", "_synthetic_pseudo")
    return c
