"""A deliberately naive, loop-per-video re-statement of the public AVVP evaluation.

It follows the reference code's structure (per video, per class, lists of
event vectors, ``sum(x1*x2) >= 0.5*sum(x1+x2-x1*x2)``) so that the vectorised
``coleaf_jax.evaluation.metrics`` can be checked against it on random inputs. Arrays are
``(C, T)`` per video here, as in the reference code.
"""

from __future__ import annotations

import numpy as np


def _events(seq: np.ndarray) -> list[np.ndarray]:
    out, t_len, i = [], len(seq), 0
    while i < t_len:
        if seq[i] == 1:
            j = i
            while j < t_len and seq[j] == 1:
                j += 1
            vec = np.zeros(t_len)
            vec[i:j] = 1
            out.append(vec)
            i = j
        else:
            i += 1
    return out


def _match(x1: np.ndarray, x2: np.ndarray) -> bool:
    return np.sum(x1 * x2) >= 0.5 * np.sum(x1 + x2 - x1 * x2)


def _event_tp_fp_fn(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    ep, eg = _events(pred), _events(gt)
    tp = sum(1 for p in ep if any(_match(p, g) for g in eg))
    fp = len(ep) - tp
    fn = sum(1 for g in eg if not any(_match(g, p) for p in ep))
    return tp, fp, fn


def _mean_f(tp, fp, fn) -> float:
    fs = [
        2 * tp[c] / (2 * tp[c] + fn[c] + fp[c])
        for c in range(len(tp))
        if tp[c] + fp[c] != 0 or tp[c] + fn[c] != 0
    ]
    return 1.0 if not fs else sum(fs) / len(fs)


def _counts(pred: np.ndarray, gt: np.ndarray, level: str):
    if level == "seg":
        return (
            np.sum(pred * gt, axis=1),
            np.sum(pred * (1 - gt), axis=1),
            np.sum((1 - pred) * gt, axis=1),
        )
    rows = [_event_tp_fp_fn(pred[c], gt[c]) for c in range(pred.shape[0])]
    return tuple(np.array([r[k] for r in rows], dtype=float) for k in range(3))


def reference_scores(pred_a, pred_v, gt_a, gt_v) -> dict[str, float]:
    """The 18 scores, one video at a time. Inputs ``(N, T, C)`` 0/1."""
    per = {
        f"{lvl}_{k}": []
        for lvl in ("seg", "evt")
        for k in ("a", "v", "av", "ao", "vo", "event", "event_o")
    }
    for n in range(len(pred_a)):
        sa, sv = pred_a[n].T.astype(float), pred_v[n].T.astype(float)
        ga, gv = gt_a[n].T.astype(float), gt_v[n].T.astype(float)
        pairs = {
            "a": (sa, ga),
            "v": (sv, gv),
            "av": (sa * sv, ga * gv),
            "ao": (sa * (1 - sv), ga * (1 - gv)),
            "vo": (sv * (1 - sa), gv * (1 - ga)),
        }
        for lvl in ("seg", "evt"):
            counts = {k: _counts(p, g, lvl) for k, (p, g) in pairs.items()}
            for k in ("a", "v", "av", "ao", "vo"):
                per[f"{lvl}_{k}"].append(_mean_f(*counts[k]))
            for name, (x, y) in (("event", ("a", "v")), ("event_o", ("ao", "vo"))):
                pooled = [counts[x][i] + counts[y][i] for i in range(3)]
                per[f"{lvl}_{name}"].append(_mean_f(*pooled))
    out = {k: 100 * np.mean(v) for k, v in per.items()}
    for lvl in ("seg", "evt"):
        out[f"{lvl}_type"] = (out[f"{lvl}_a"] + out[f"{lvl}_v"] + out[f"{lvl}_av"]) / 3
        out[f"{lvl}_type_o"] = (out[f"{lvl}_ao"] + out[f"{lvl}_vo"] + out[f"{lvl}_av"]) / 3
    return out
