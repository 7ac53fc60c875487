"""Ablations of the paper (Tables 2-4) and the official code's settings, by name.

    python train.py --config configs/ablations.py:<name>        --config.data.root=/path/to/LLP --workdir W
    python train.py --config configs/ablations.py:<name>,synthetic --workdir W   # on the embedded data

Every ablation is configs/llp.py (or configs/synthetic.py) with CoLeaF and the
dataset's default Anchor (LLP: CMPAE, synthetic: HAN), plus the differences its
entry in ``ABLATIONS`` writes out. Options, comma-separated as in every file of
configs/: the ablation's name (required, first), ``synthetic``, and ``han`` or
``cmpae`` to pick the Anchor, e.g. ``configs/ablations.py:no_kd,synthetic,cmpae``.
"""

from coleaf_jax.config import load_sibling, override, parse_options, use_paper_recipe


def _set(**values):
    """Overrides given as keyword arguments, ``__`` standing for ``.``."""

    def apply(config):
        for key, value in values.items():
            override(config, key.replace("__", "."), value)

    return apply


ABLATIONS = {
    # Table 2: how the Anchor learns from the Reference.
    "event_aware_nce": _set(),  # the paper's choice (the default)
    "no_contrastive": _set(loss__contrastive="none"),
    "standard_nce": _set(loss__contrastive="standard"),
    "pseudo_label_bce": _set(loss__contrastive="bce"),
    # Table 3: how the Reference learns from the Anchor.
    "no_kd": _set(loss__kd=False),
    # Table 4: class tokens x co-occurrence correlation.
    "tokens_corr": _set(),
    "tokens_no_corr": _set(loss__correlation=False),
    "no_tokens_corr": _set(model__class_tokens=False),
    "no_tokens_no_corr": _set(model__class_tokens=False, loss__correlation=False),
    # Anchors with and without CoLeaF (each Anchor with its own evaluation: HAN's for HAN,
    # the authors' per-modality 0.52 / 0.25 for CMPAE).
    "han": _set(
        method="anchor_only", model__anchor="han", loss__denoise=False, eval__thresholds="standard"
    ),
    "coleaf_han": _set(model__anchor="han", loss__denoise=False, eval__thresholds="standard"),
    "cmpae": _set(
        method="anchor_only", model__anchor="cmpae", loss__denoise=True, eval__thresholds="official"
    ),
    "coleaf_cmpae": _set(model__anchor="cmpae", loss__denoise=True, eval__thresholds="official"),
    # The authors' code's recipe: the default (kept as a name for older commands).
    "official": _set(),
    # The paper's text where it differs from the authors' code (docs/method.md §5-§7, Appendix A).
    "paper": use_paper_recipe,
}


def get_config(arg: str = ""):
    name, _, rest = arg.partition(",")  # the ablation's name first (some are Anchor names)
    if name.strip() not in ABLATIONS:
        raise ValueError(
            f"configs/ablations.py: {name.strip()!r} is not an ablation: name one after the "
            f"colon, one of {sorted(ABLATIONS)}"
        )
    options = parse_options(
        rest, "configs/ablations.py", data=("synthetic",), anchor=("han", "cmpae")
    )
    options["ablation"] = name.strip()
    dataset = options["data"] or "llp"
    method = {"": "", "han": "coleaf_han", "cmpae": "coleaf_cmpae"}[options["anchor"]]
    config = load_sibling(__file__, f"{dataset}.py", method)
    ABLATIONS[options["ablation"]](config)
    config.name = f"{options['ablation']}_{config.model.anchor}_{dataset}"
    return config
