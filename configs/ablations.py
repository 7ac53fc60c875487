"""Ablations of the paper (Tables 2-4) and the official code's settings, by name.

    python train.py --config configs/ablations.py:<name>        --config.data.root=/path/to/LLP --workdir W
    python train.py --config configs/ablations.py:<name>,synthetic --workdir W   # on the embedded data

Every ablation starts from CoLeaF with the dataset's default Anchor (LLP:
CMPAE, synthetic: HAN) unless its name says otherwise; ``ABLATIONS`` lists the
names. Append ``,han`` or ``,cmpae`` to pick the Anchor, e.g.
``configs/ablations.py:no_kd,synthetic,cmpae``.
"""

from coleaf_jax.config import apply_paper_recipe, llp_config, override, synthetic_config


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
    # The paper's text where it differs from the authors' code (SPEC §5-§7, App. A).
    "paper": apply_paper_recipe,
}
DATASETS = {"llp": llp_config, "synthetic": synthetic_config}
ANCHORS = ("han", "cmpae")


def get_config(arg: str):
    name, *options = [part.strip() for part in arg.split(",")]
    if name not in ABLATIONS:
        raise ValueError(
            f"configs/ablations.py: unknown ablation {name!r}; expected one of {sorted(ABLATIONS)}"
        )
    dataset = next((o for o in options if o in DATASETS), "llp")
    anchor = next((o for o in options if o in ANCHORS), None)
    unknown = [o for o in options if o not in DATASETS and o not in ANCHORS]
    if unknown:
        raise ValueError(
            f"configs/ablations.py: unknown option(s) {unknown}; expected a dataset "
            f"{sorted(DATASETS)} or an Anchor {list(ANCHORS)}"
        )
    variant = {None: "", "han": "coleaf_han", "cmpae": "coleaf_cmpae"}[anchor]
    config = DATASETS[dataset](variant)
    ABLATIONS[name](config)
    config.name = f"{name}_{config.model.anchor}_{dataset}"
    return config
