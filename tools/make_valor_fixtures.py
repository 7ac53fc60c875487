"""Writes tests/fixtures/features/valor.npz: VALOR's own lines on fixed inputs, for
tests/test_valor.py to replay without torch.

Run once with torch (CPU) in a venv of its own, from the repository root:

    /tmp/torch/bin/python tools/make_valor_fixtures.py

Recorded (``github:Franklin905/VALOR`` at 2677da9, torch as VALOR's pinned
torchvision 0.13 calls it):

* ``pixels_up`` / ``pixels_down``: two uint8 frames of ``testing.test_frames`` (48x64
  seed 0, upsampled; 300x260 seed 1, downsampled) through ``ToTensor()``, ``Resize((224, 224))`` on the tensor
  (``F.interpolate(mode='bilinear', align_corners=False, antialias=False)``:
  torchvision 0.13's tensor path) and ``Normalize(CLIP mean, std)``
  (utils/clip_preprocess.py:52-54), as (N, 224, 224, 3), kept on a grid of every
  7th row and 5th column (a small file).
* ``logits``, ``labels``, ``pl_clip``, ``pl_clap``: random logits and weak labels of
  8 videos through VALOR's thresholding lines (clip_preprocess.py:116-123 and
  clap_preprocess.py:131-138, copied below) with its two threshold arrays.
* ``bounds_*``: clap_preprocess.py:87-92's segment boundaries for a few lengths.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from coleaf_jax.features import testing  # noqa: E402  (numpy only)

OUT = os.path.join("tests", "fixtures", "features", "valor.npz")
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
CLIP_THRESHOLDS = [20, 15, 18, 14, 15, 18, 18, 15, 15, 15, 15, 18, 15, 15, 15, 15, 15, 15, 15, 16,
                   14, 15, 15, 15, 18]  # fmt: skip
CLAP_THRESHOLDS = [0, 0, 1, 4, 6, -2, 4, 4, 2, 2, 2, 1, 2, 3, 0, 2, 2, 2, 0, 2, -1, 2, 3, 3, 0]


def valor_pixels(frame: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(frame).permute(2, 0, 1).float() / 255.0  # ToTensor
    x = F.interpolate(x[None], size=(224, 224), mode="bilinear", align_corners=False,
                      antialias=False)[0]  # fmt: skip
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return x.permute(1, 2, 0).numpy()


def valor_rule(logits_image_text, labels, thresholds):
    # utils/clip_preprocess.py:116-123 (clap_preprocess.py:131-138 is the same)
    thresholds = torch.from_numpy(np.array(thresholds)).unsqueeze(0).expand(10, -1)
    occurred_event_idx = labels.nonzero().squeeze(dim=-1)
    occurred_events_logits = logits_image_text[:, occurred_event_idx]
    class_thresholds = thresholds[:, occurred_event_idx]
    segment_preds = torch.where(occurred_events_logits > class_thresholds, 1, 0).long()
    Pv = torch.zeros(10, 25).long()
    Pv[:, occurred_event_idx.long()] = segment_preds
    return Pv.numpy()


def valor_bounds(n):
    samples = np.round(np.linspace(0, n, 11)).astype(np.int32)
    step = n // 10
    return np.array([[samples[i], samples[i] + step] for i in range(10)])


def main():
    out = {}
    for name, (h, w, seed) in {"up": (48, 64, 0), "down": (300, 260, 1)}.items():
        frame = testing.test_frames(1, h, w, seed)[0]
        out[f"pixels_{name}"] = valor_pixels(frame)[None, ::7, ::5]  # a grid: a small file
    rng = np.random.default_rng(0)
    logits = rng.normal(10.0, 8.0, (8, 10, 25)).astype(np.float32)
    logits[0, :, 3] = 14.0  # equal to a threshold: strictly above is needed
    labels = (rng.random((8, 25)) < 0.25).astype(np.float32)
    labels[1] = 0.0  # a video with no class
    out["logits"], out["labels"] = logits, labels
    for key, th in (("pl_clip", CLIP_THRESHOLDS), ("pl_clap", CLAP_THRESHOLDS)):
        out[key] = np.stack(
            [valor_rule(torch.from_numpy(lg), torch.from_numpy(lb), th) for lg, lb in zip(logits, labels)]
        )  # fmt: skip
    for n in (480_000, 479_999, 481_440, 441_000, 12_345):
        out[f"bounds_{n}"] = valor_bounds(n)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
