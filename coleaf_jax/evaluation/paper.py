"""Published numbers (docs/method.md §8, §9): LLP test, standard thresholds, percent.

``paper_scores(config)`` returns the rows for the run's setting (method,
Anchor, pseudo-labels) as ``{"segment": {name: value}, "event": {...}}``
with the names of ``metrics.SCORE_NAMES``; a score the paper does not
report is absent.
"""

from __future__ import annotations

_NAMES = ("a", "ao", "v", "vo", "av", "type", "type_o", "event", "event_o")


def _row(*values):
    return dict(zip(_NAMES, values))


# Paper Table 5 (and Table 4 for HAN + CoLeaF); Table 6 for pseudo-labels.
PAPER = {
    ("anchor_only", "han", False): (
        "Table 5, HAN",
        {"segment": _row(60.1, 33.1, 52.9, 50.7, 48.9, 54.0, 44.3, 55.4, 24.1)},
    ),
    ("anchor_only", "cmpae", False): (
        "Table 5, CMPAE",
        {"segment": _row(63.9, 48.2, 63.3, 57.9, 57.5, 61.2, 54.2, 62.1, 35.7)},
    ),
    ("coleaf", "cmpae", False): (
        "Table 5, CoLeaF",
        {
            "segment": _row(63.5, 49.3, 64.5, 62.4, 58.6, 62.1, 56.7, 61.8, 37.7),
            "event": _row(56.2, 44.1, 62.0, 62.2, 52.1, 56.7, 52.7, 54.5, 33.4),
        },
    ),
    ("coleaf", "han", False): (
        "Table 4, HAN + CoLeaF",
        {
            "segment": {"ao": 36.3, "vo": 54.1, "av": 49.4},
            "event": {"ao": 34.2, "vo": 53.5, "av": 43.7},
        },
    ),
    ("coleaf", "cmpae", True): (
        "Table 6, CoLeaF with CLIP/CLAP pseudo-labels",
        {
            "segment": _row(64.2, 51.2, 64.4, 67.7, 59.3, 62.6, 59.4, 62.5, 41.3),
            "event": _row(57.6, 45.5, 63.2, 67.0, 54.2, 57.9, 55.6, 55.6, 36.4),
        },
    ),
    ("anchor_only", "cmpae", True): (
        "Table 6, CMPAE with pseudo-labels",
        {"segment": {"a": 64.1}, "event": {"a": 57.0}},
    ),
}


def paper_scores(config) -> tuple[str, dict[str, dict[str, float]]] | None:
    """``(source, rows)`` for the run's setting, or None when the paper has none."""
    pseudo = bool(config.data.get("pseudo_labels", False))
    m = config.model
    layers = (m.get("num_heads", 1), m.get("num_layers", 1), m.get("update_order", "parallel"))
    if layers != (1, 1, "parallel"):  # a VALOR-family HAN: not the network of these rows
        return None
    return PAPER.get((config.method, config.model.anchor, pseudo))
