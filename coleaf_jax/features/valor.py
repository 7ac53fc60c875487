"""VALOR's CLIP and CLAP teachers: segment pseudo-labels and features, as VALOR made them.

VALOR (Lai, Chen & Wang, NeurIPS'23; ``github:Franklin905/VALOR`` at 2677da9,
``utils/clip_preprocess.py`` and ``utils/clap_preprocess.py``) labels every
one-second segment of a training video with what CLIP sees in one frame and
what LAION-CLAP hears in the segment's audio, keeping only the classes of the
video's weak label. CoLeaF's Table 6 and ``configs/llp_pseudo.py`` train on
those labels. This module holds VALOR's choices (prompts, thresholds, frame
and sample positions) and the pure functions around the two networks
(:mod:`coleaf_jax.features.clip`, :mod:`coleaf_jax.features.clap`);
:mod:`coleaf_jax.features.teachers` runs them on video files. Every choice and
its source line is in ``docs/features.md`` ("VALOR's teachers").

Per video (``S = 10`` segments, ``C = 25`` LLP classes):

* **CLIP**: 10 of the 8-fps frames at ``np.round(np.linspace(0, K - 1, 10))``
  (:func:`frame_indices`), squashed to 224 x 224 (bilinear, no antialiasing:
  :func:`clip_pixels`), ViT-L/14's projected image embedding, L2-normalised:
  ``CLIP/features/<id>.npy (10, 768)``. Logits ``exp(logit_scale) cos(image,
  prompt)`` against :data:`CLIP_PROMPTS`, thresholded per class by
  :data:`CLIP_THRESHOLDS` within the weak label (:func:`pseudo_labels`):
  ``CLIP/segment_pseudo_labels/<id>.npy (10, 25)`` int64 0/1.
* **CLAP**: the 48 kHz mono audio cut into 10 segments (:func:`segment_bounds`),
  each through 16-bit quantisation (``clap.quantize_int16``) and repeated to
  10 s (``clap.repeat_pad``), CLAP's normalised audio embedding; logits against
  :data:`CLAP_PROMPTS` by :data:`CLAP_THRESHOLDS`:
  ``CLAP/segment_pseudo_labels/<id>.npy``. The feature is the whole clip
  resampled to 480,000 samples by nearest index (:func:`nearest_resample`) and
  HTSAT's last token map before pooling: ``CLAP/features/<id>.npy (64, 768)``.
"""

from __future__ import annotations

import numpy as np

from coleaf_jax.data.classes import LLP_CLASSES, LLP_NUM_SEGMENTS

# utils/clip_preprocess.py:230-234, verbatim (misspellings included: they are VALOR's prompts).
CLIP_PROMPTS: tuple[str, ...] = (
    "A photo of people talking.",
    "A photo of a car.",
    "A photo of people cheering.",
    "A photo of a dog.",
    "A photo of a cat.",
    "A photo of frying food.",
    "A photo of people playing basketball.",
    "A photo of a fire alarm.",
    "A photo of a chainsaw.",
    "A photo of a cello.",
    "A photo of a banjo.",
    "A photo of people singing.",
    "A photo of a chicken or a rooster.",
    "A photo of a violin.",
    "A photo of a vaccum cleaner.",
    "A photo of a laughing baby.",
    "A photo of an accordion.",
    "A photo of a lawnmower.",
    "A photo of a motorcycle.",
    "A photo of a helicopter.",
    "A photo of a acoustic guiter.",
    "A photo of a ringing telephone.",
    "A photo of a crying baby.",
    "A photo of a blender.",
    "A photo of hands clapping.",
)
# utils/clip_preprocess.py:236-238: per class, in logit units (exp(logit_scale) x cosine).
CLIP_THRESHOLDS = np.array(
    [20, 15, 18, 14, 15, 18, 18, 15, 15, 15, 15, 18, 15, 15, 15, 15, 15, 15, 15, 16]
    + [14, 15, 15, 15, 18],
    np.float32,
)
# utils/clap_preprocess.py:254-260: AudioSet's names of the LLP classes; the prompt is
# "This is a sound of " + name.lower().
CLAP_CLASS_NAMES: tuple[str, ...] = (
    "Speech",
    "Car",
    "Cheering",
    "Dog",
    "Cat",
    "Frying (food)",
    "Basketball bounce",
    "Fire alarm",
    "Chainsaw",
    "Cello",
    "Banjo",
    "Singing",
    "Chicken, rooster",
    "Violin fiddle",
    "Vacuum cleaner",
    "Baby laughter",
    "Accordion",
    "Lawn mower",
    "Motorcycle",
    "Helicopter",
    "Acoustic guitar",
    "Telephone bell ringing",
    "Baby cry, infant cry",
    "Blender",
    "Clapping",
)
CLAP_PROMPTS: tuple[str, ...] = tuple("This is a sound of " + n.lower() for n in CLAP_CLASS_NAMES)
# utils/clap_preprocess.py:262-264: per class, in logit units (exp(logit_scale_a) x cosine).
CLAP_THRESHOLDS = np.array(
    [0, 0, 1, 4, 6, -2, 4, 4, 2, 2, 2, 1, 2, 3, 0, 2, 2, 2, 0, 2, -1, 2, 3, 3, 0], np.float32
)
assert len(CLIP_PROMPTS) == len(CLAP_PROMPTS) == len(LLP_CLASSES) == 25

CLIP_IMAGE_SIZE = 224  # clip_preprocess.py:48, squashed (no crop)
# clip_preprocess.py:49-50: CLIPProcessor's image_mean / image_std (openai/clip-vit-large-patch14).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
SAMPLE_RATE = 48_000  # clap_preprocess.py:86: librosa.load(sr=48000)
CLAP_SAMPLES = 480_000  # laion_clap's max_len: 10 s at 48 kHz (hook.py:183)


def frame_indices(num_frames: int, segments: int = LLP_NUM_SEGMENTS) -> np.ndarray:
    """The frames CLIP sees: ``np.round(np.linspace(0, K - 1, S))`` of the ``K`` 8-fps
    frames (clip_preprocess.py:63-66; one per segment, first and last frame included,
    halves rounded to even). Returns ``(S,)`` int64."""
    if num_frames < 1:
        raise ValueError(f"num_frames = {num_frames}: expected at least one frame")
    return np.round(np.linspace(0, num_frames - 1, segments)).astype(np.int64)


def _linear_weights(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` weights of torch's bilinear resize along one axis
    (``align_corners=False``, no antialiasing: the source position ``(i + 0.5) s - 0.5``
    clamped at 0, its two neighbours, the upper one clamped at the edge)."""
    scale = size_in / size_out
    src = np.maximum((np.arange(size_out) + 0.5) * scale - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    lo = np.minimum(lo, size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    w = np.zeros((size_out, size_in), np.float64)
    np.add.at(w, (np.arange(size_out), lo), 1.0 - frac)
    np.add.at(w, (np.arange(size_out), hi), frac)
    return w


def clip_pixels(frames: np.ndarray, size: int = CLIP_IMAGE_SIZE) -> np.ndarray:
    """VALOR's CLIP input: ``ToTensor`` (/255), ``Resize((size, size))`` on the float
    tensor (bilinear, no antialiasing in torchvision 0.13), ``Normalize(mean, std)``
    (clip_preprocess.py:52-54). The frame is squashed, not cropped.

    Args:
      frames: ``(N, H, W, 3)`` uint8 RGB.
    Returns:
      ``(N, size, size, 3)`` float32.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames of shape {frames.shape}: expected (N, H, W, 3) RGB")
    x = frames.astype(np.float32) / 255.0
    wy = _linear_weights(frames.shape[1], size).astype(np.float32)
    wx = _linear_weights(frames.shape[2], size).astype(np.float32)
    x = np.einsum("yh,nhwc,xw->nyxc", wy, x, wx, optimize=True)
    return ((x - CLIP_MEAN) / CLIP_STD).astype(np.float32)


def segment_bounds(num_samples: int, segments: int = LLP_NUM_SEGMENTS) -> np.ndarray:
    """VALOR's audio segments (clap_preprocess.py:87-92): segment ``i`` starts at
    ``round(i N / S)`` and is ``N // S`` samples long. Returns ``(S, 2)`` [start, end)."""
    if num_samples < segments:
        raise ValueError(f"{num_samples} audio samples: expected at least {segments}")
    starts = np.round(np.linspace(0, num_samples, segments + 1)).astype(np.int64)[:segments]
    return np.stack([starts, starts + num_samples // segments], axis=1)


def nearest_resample(x: np.ndarray, length: int = CLAP_SAMPLES) -> np.ndarray:
    """VALOR's whole-clip input for the CLAP feature: the samples at
    ``np.round(np.linspace(0, N - 1, length))`` (clap_preprocess.py:196-197)."""
    x = np.asarray(x, np.float32)
    if len(x) == 0:
        raise ValueError("an empty audio track")
    return x[np.round(np.linspace(0, len(x) - 1, length)).astype(np.int64)]


def pseudo_labels(logits: np.ndarray, label: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """VALOR's rule (clip_preprocess.py:116-123, clap_preprocess.py:131-138): a segment
    has class ``c`` when ``c`` is in the video's weak label and its logit is strictly
    above ``c``'s threshold; nothing else is 1 (no smoothing, no guaranteed positive).

    Args:
      logits: ``(S, C)`` ``exp(logit_scale) x cosine`` of segment and prompt embeddings.
      label: ``(C,)`` the video-level label (0/1).
      thresholds: ``(C,)`` in logit units.
    Returns:
      ``(S, C)`` int64 in {0, 1}, VALOR's ``segment_pseudo_labels`` file.
    """
    logits, label = np.asarray(logits), np.asarray(label)
    if logits.shape[-1] != label.shape[-1] or label.shape != np.shape(thresholds):
        raise ValueError(
            f"logits {logits.shape}, label {label.shape}, thresholds {np.shape(thresholds)}: "
            f"expected (S, C), (C,), (C,)"
        )
    return ((logits > thresholds) & (label > 0)).astype(np.int64)


def logits(embeddings: np.ndarray, prompts: np.ndarray, logit_scale: float) -> np.ndarray:
    """``exp(logit_scale) x`` cosine similarity, as CLIP's ``logits_per_image`` and VALOR's
    ``logit_scale_a * audio_embeds @ text_embeds.t()`` (embeddings normalised here).

    ``embeddings (S, E)``, ``prompts (C, E)`` -> ``(S, C)`` float32."""
    a = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    b = prompts / np.linalg.norm(prompts, axis=-1, keepdims=True)
    return (np.exp(np.float32(logit_scale)) * (a @ b.T)).astype(np.float32)
