"""JoMoLD per-class label-noise ratios: the shipped LLP table, loading, and estimation.

``r^a_c`` is the share of class-``c`` training videos whose event is labelled
but not audible, ``r^v_c`` not visible (SPEC Appendix A). The default table is
the LLP one the JoMoLD / CMPAE / CoLeaF code uses (e.g. Speech visual 0.994:
speech is almost never seen).

Estimate a table from a trained model (JoMoLD's procedure: among the
positives of a class, the share the model finds absent in one modality while
present in the other):

    python -m coleaf_jax.noise_ratios --config configs/llp.py --workdir W --output ratios.npz
"""

from __future__ import annotations

import os

import numpy as np

LLP_NOISE_RATIOS_AUDIO = np.array([
    0.06455493, 0.05608974, 0.02083333, 0.04073587, 0.06770833, 0.04956268, 0.04395604, 0.02293578,
    0.0735786, 0.04651163, 0.01612903, 0.0443686, 0.04347826, 0.03980782, 0.03434343, 0.02054795,
    0.05393258, 0.04464286, 0.03892944, 0.04258944, 0.04373757, 0.03030303, 0.0372093, 0.03780069,
    0.04878049], np.float32)
LLP_NOISE_RATIOS_VISUAL = np.array([
    0.99398557, 0.03525641, 0.09090909, 0.08147175, 0.08333333, 0.0787172, 0.02857143, 0.05504587,
    0.07692308, 0.1179402, 0.17204301, 0.14163823, 0.04805492, 0.16197666, 0.06868687, 0.09589041,
    0.14157303, 0.07589286, 0.07542579, 0.06643952, 0.16699801, 0.17171717, 0.08604651, 0.04810997,
    0.25609756], np.float32)


def load_noise_ratios(spec: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ratio_a, ratio_v)``, each ``(C,)``, from ``'llp'`` or an ``.npz`` with keys audio, visual."""
    if spec == "llp":
        ratios = LLP_NOISE_RATIOS_AUDIO, LLP_NOISE_RATIOS_VISUAL
    else:
        if not os.path.exists(spec):
            raise FileNotFoundError(f"config.loss.denoise_ratios = {spec!r}: no such file "
                                    "(expected 'llp' or an .npz with keys 'audio' and 'visual')")
        with np.load(spec) as f:
            missing = {"audio", "visual"} - set(f.files)
            if missing:
                raise ValueError(f"{spec}: missing key(s) {sorted(missing)}; has {f.files}")
            ratios = f["audio"], f["visual"]
    for name, r in zip(("audio", "visual"), ratios):
        if r.shape != (num_classes,) or not np.all((r >= 0) & (r <= 1)):
            raise ValueError(f"{spec}: '{name}' must be {num_classes} ratios in [0, 1], got "
                             f"shape {r.shape}, range [{r.min():.3g}, {r.max():.3g}]")
    return tuple(np.asarray(r, np.float32) for r in ratios)


def estimate_noise_ratios(prob_a: np.ndarray, prob_v: np.ndarray, labels: np.ndarray,
                          threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
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
    return ((pos & ~a & v).sum(0) / n).astype(np.float32), ((pos & ~v & a).sum(0) / n).astype(np.float32)


if __name__ == "__main__":  # the command lives with the other CLIs (no import cycle)
    from coleaf_jax.cli import noise_ratios_main

    raise SystemExit(noise_ratios_main())
