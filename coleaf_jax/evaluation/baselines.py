"""A training-free reference point for the AVVP metrics (shown by the demo).

* ``ridge_mil``: a weakly supervised linear baseline. Per modality, a
  closed-form ridge regression maps the video-mean features to the weak
  labels; applied to each segment it gives segment scores, and to the
  video-mean features a video-level gate.

It returns probabilities in the ``binarize`` convention of
``coleaf_jax.evaluation.metrics``.
"""

from __future__ import annotations

import numpy as np


def segment_visual_features(video_2d: np.ndarray, video_3d: np.ndarray) -> np.ndarray:
    """Per-second visual features ``(N, T, 2048 + 512)``: mean of the 8 frames ++ 3-D feature."""
    n, frames, d = video_2d.shape
    t = video_3d.shape[1]
    if frames != t:  # raw frames: average each second's frames
        video_2d = video_2d.reshape(n, t, frames // t, d).mean(axis=2)
    return np.concatenate([video_2d, video_3d], axis=-1)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu = train.reshape(-1, train.shape[-1]).mean(0)
    sd = train.reshape(-1, train.shape[-1]).std(0) + 1e-6
    return [(x - mu) / sd for x in (train, *others)]


def _ridge(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Closed-form ridge weights ``(D + 1, C)`` (last row: bias)."""
    x1 = np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)
    gram = x1.T @ x1 + l2 * np.eye(x1.shape[1], dtype=x.dtype)
    return np.linalg.solve(gram, x1.T @ y)


def _apply(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return x @ w[:-1] + w[-1]


def ridge_mil(train: dict, evaluate: dict, l2: float = 100.0) -> dict[str, np.ndarray]:
    """Fits the ridge baseline on ``train`` and scores ``evaluate``.

    Args:
      train, evaluate: split dicts of ``load_split`` (``audio (N,T,128)``,
        ``video_2d (N,T*8 or T,2048)``, ``video_3d (N,T,512)``, ``label (N,C)``).
    Returns:
      dict with ``seg_prob_a, seg_prob_v`` ``(N, T, C)`` and ``video_prob_a,
      video_prob_v`` ``(N, C)``, clipped to [0, 1].
    """
    y = train["label"].astype(np.float64)
    out = {}
    for m, feats in (
        ("a", lambda s: s["audio"]),
        ("v", lambda s: segment_visual_features(s["video_2d"], s["video_3d"])),
    ):
        tr, ev = _standardise(feats(train).astype(np.float64), feats(evaluate).astype(np.float64))
        w = _ridge(tr.mean(axis=1), y, l2)
        out[f"seg_prob_{m}"] = np.clip(_apply(ev, w), 0.0, 1.0)
        out[f"video_prob_{m}"] = np.clip(_apply(ev.mean(axis=1), w), 0.0, 1.0)
    return out
