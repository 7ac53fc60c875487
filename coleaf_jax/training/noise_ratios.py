"""JoMoLD per-class label-noise ratios: the shipped LLP table, loading, and estimation.

``r^a_c`` is the share of class-``c`` training videos whose event is labelled
but not audible, ``r^v_c`` not visible (docs/method.md Appendix A). The default table is
the LLP one the JoMoLD / CMPAE / CoLeaF code uses (e.g. Speech visual 0.994:
speech is almost never seen).

A table is estimated from a trained run by ``python -m
coleaf_jax.evaluation.noise_ratios`` (:func:`estimate_noise_ratios`: among the
positives of a class, the share the model finds absent in one modality while
present in the other).
"""

from __future__ import annotations

import os

import numpy as np

# The authors' noise_ratios.npz, exactly (float64: JoMoLD drops floor(r·n) labels, and
# float32 rounding of r moves that count by one for some (class, n)).
LLP_NOISE_RATIOS_AUDIO = np.array(
    [
        0.06455493183640738,
        0.05608974358974359,
        0.020833333333333332,
        0.040735873850197106,
        0.06770833333333333,
        0.04956268221574344,
        0.04395604395604396,
        0.022935779816513763,
        0.07357859531772576,
        0.046511627906976744,
        0.016129032258064516,
        0.04436860068259386,
        0.043478260869565216,
        0.03980782429649966,
        0.03434343434343434,
        0.02054794520547945,
        0.05393258426966292,
        0.044642857142857144,
        0.038929440389294405,
        0.04258943781942078,
        0.0437375745526839,
        0.030303030303030304,
        0.037209302325581395,
        0.037800687285223365,
        0.04878048780487805,
    ],
    np.float64,
)
LLP_NOISE_RATIOS_VISUAL = np.array(
    [
        0.9939855653568564,
        0.035256410256410256,
        0.09090909090909091,
        0.08147174770039421,
        0.08333333333333333,
        0.07871720116618076,
        0.02857142857142857,
        0.05504587155963303,
        0.07692307692307693,
        0.11794019933554817,
        0.17204301075268819,
        0.1416382252559727,
        0.04805491990846682,
        0.16197666437886069,
        0.06868686868686869,
        0.0958904109589041,
        0.14157303370786517,
        0.07589285714285714,
        0.07542579075425791,
        0.06643952299829642,
        0.16699801192842942,
        0.1717171717171717,
        0.08604651162790698,
        0.048109965635738834,
        0.25609756097560976,
    ],
    np.float64,
)


def load_noise_ratios(spec: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ratio_a, ratio_v)``, each ``(C,)`` float64, from ``'llp'`` or an ``.npz`` with keys
    audio, visual."""
    if spec == "llp":
        ratios = LLP_NOISE_RATIOS_AUDIO, LLP_NOISE_RATIOS_VISUAL
    else:
        if not os.path.exists(spec):
            raise FileNotFoundError(
                f"config.loss.denoise_ratios = {spec!r}: no such file "
                "(expected 'llp' or an .npz with keys 'audio' and 'visual')"
            )
        with np.load(spec) as f:
            missing = {"audio", "visual"} - set(f.files)
            if missing:
                raise ValueError(f"{spec}: missing key(s) {sorted(missing)}; has {f.files}")
            ratios = f["audio"], f["visual"]
    for name, r in zip(("audio", "visual"), ratios):
        if r.shape != (num_classes,) or not np.all((r >= 0) & (r <= 1)):
            raise ValueError(
                f"{spec}: '{name}' must be {num_classes} ratios in [0, 1], got "
                f"shape {r.shape}, range [{r.min():.3g}, {r.max():.3g}]"
            )
    return tuple(np.asarray(r, np.float64) for r in ratios)


def estimate_noise_ratios(
    prob_a: np.ndarray, prob_v: np.ndarray, labels: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """JoMoLD's estimate: per class, the share of positives absent in one modality only.

    ``r^v_c = #{b: y = 1, p^v < θ, p^a >= θ} / #{b: y = 1}`` and symmetrically
    for ``r^a``; classes without positives get 0.

    Args:
      prob_a, prob_v: ``(N, C)`` a model's modality video-level probabilities.
      labels: ``(N, C)`` weak labels.
    """
    pos = labels > 0.5
    a, v = prob_a >= threshold, prob_v >= threshold
    n = np.maximum(pos.sum(0), 1)
    return ((pos & ~a & v).sum(0) / n).astype(np.float32), ((pos & ~v & a).sum(0) / n).astype(
        np.float32
    )
