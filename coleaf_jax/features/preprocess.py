"""The extractors' inputs, prepared as HAN's scripts prepared them (``docs/features.md``).

Frames (uint8 out; the float normalisation runs inside the jitted extractors,
:func:`normalize`):

* ResNet-152 (``scripts/extract_rgb_feat.py`` with pretrainedmodels'
  ``utils.LoadTransformImage``, scale 0.875): PIL bilinear resize of the
  shorter side to ``floor(224 / 0.875) = 256`` (the longer to ``int(256 *
  long / short)``), centre crop 224 (offsets ``int(round((size - 224) / 2))``),
  ``/ 255``, ImageNet mean/std.
* R(2+1)D-18 (``scripts/extract_3D_feat.py`` with ``scripts/utils.py``): PIL
  bilinear resize to 112 x 112 (aspect ratio not kept), ``/ 255``,
  Kinetics mean/std.

Both use Pillow's resampling, as torchvision's ``Resize`` does on the PIL
images of those scripts.

Audio: VGGish's log-mel front end (``vggish_input.py`` / ``mel_features.py``
of tensorflow/models research/audioset/vggish, restated here in float64):
mono by averaging the channels, 25 ms periodic-Hann windows every 10 ms
(400 / 160 samples at 16 kHz), 512-point FFT magnitude, 64 HTK mel bands
125-7500 Hz (the DC bin zeroed), ``log(mel + 0.01)``, examples of 96 frames.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# ResNet-152: pretrainedmodels' settings for torchvision's resnet152 ('imagenet').
RESNET_SIZE = 224
RESNET_SCALE = 0.875
RESNET_RESIZE = int(math.floor(RESNET_SIZE / RESNET_SCALE))  # 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# R(2+1)D-18: scripts/utils.py TransformImage.
R21D_SIZE = 112
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
R21D_CLIP = 8  # frames per clip: one clip per second at 8 fps (extract_3D_feat.py)

# VGGish (vggish_params.py).
SAMPLE_RATE = 16000
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # EXAMPLE_WINDOW_SECONDS = 0.96
EXAMPLE_HOP_FRAMES = 96  # EXAMPLE_HOP_SECONDS = 0.96
SECOND_HOP_FRAMES = 100  # one example per second (videos over LLP_MAX_SEGMENTS seconds)
LLP_MAX_SEGMENTS = 10  # up to this many segments, examples are framed exactly as VGGish does

WINDOW_SAMPLES = int(round(SAMPLE_RATE * STFT_WINDOW_SECONDS))  # 400
HOP_SAMPLES = int(round(SAMPLE_RATE * STFT_HOP_SECONDS))  # 160
FFT_LENGTH = 2 ** int(math.ceil(math.log2(WINDOW_SAMPLES)))  # 512


# ----------------------------------------------------------------------------- frames


def _pil(image):

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(np.asarray(image, np.uint8), "RGB")


def resize_shorter(image, size: int):
    """torchvision ``Resize(size)`` of a PIL image: shorter side to ``size``."""

    img = _pil(image)
    w, h = img.size
    if (w <= h and w == size) or (h <= w and h == size):
        return img
    if w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    return img.resize((ow, oh), Image.BILINEAR)


def center_crop(image, size: int):
    """torchvision ``CenterCrop(size)`` of a PIL image at least ``size`` on each side."""
    img = _pil(image)
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def resnet_frame(image, resize: int = RESNET_RESIZE, crop: int = RESNET_SIZE) -> np.ndarray:
    """ResNet-152's input frame, ``(crop, crop, 3)`` uint8 (module docstring)."""
    return np.asarray(center_crop(resize_shorter(image, resize), crop), np.uint8)


def r21d_frame(image, size: int = R21D_SIZE) -> np.ndarray:
    """R(2+1)D-18's input frame, ``(size, size, 3)`` uint8 (module docstring)."""

    return np.asarray(_pil(image).resize((size, size), Image.BILINEAR), np.uint8)


def normalize(frames, mean, std):
    """``ToTensor`` + ``Normalize`` of uint8 frames ``(..., 3)``: float32 ``(x / 255 - mean) / std``
    (works on numpy and jax arrays)."""
    x = frames.astype(np.float32) / np.float32(255)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


# ----------------------------------------------------------------------------- audio


def periodic_hann(length: int) -> np.ndarray:
    """A raised cosine of period ``length`` (Matlab's 'periodic' Hann)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi / length * np.arange(length))


def hertz_to_mel(hz):
    """HTK's mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """``(num_spectrogram_bins, num_mel_bins)`` triangular mel weights, equally spaced
    in mel between ``lower_hz`` and ``upper_hz``; the DC bin gets no weight."""
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist:
        raise ValueError(f"mel band edges {lower_hz}-{upper_hz} Hz must lie in 0-{nyquist} Hz")
    bins_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def frames_of(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """``(num, window, ...)`` complete windows of ``x`` every ``hop`` (no padding)."""
    num = 1 + (len(x) - window) // hop
    if num <= 0:
        return np.zeros((0, window) + x.shape[1:], x.dtype)
    idx = np.arange(window)[None, :] + hop * np.arange(num)[:, None]
    return x[idx]


def log_mel(wave: np.ndarray) -> np.ndarray:
    """``(frames, 64)`` log-mel spectrogram of a 16 kHz waveform (``(S,)`` or ``(S, C)``)."""
    x = np.asarray(wave, np.float64)
    if x.ndim > 1:
        x = x.mean(axis=1)
    windows = frames_of(x, WINDOW_SAMPLES, HOP_SAMPLES) * periodic_hann(WINDOW_SAMPLES)
    spectrum = np.abs(np.fft.rfft(windows, FFT_LENGTH))
    return np.log(spectrum @ mel_matrix() + LOG_OFFSET)


def example_hop(num_segments: int) -> int:
    """Log-mel frames between examples: VGGish's 96 (0.96 s, as the released LLP features)
    for videos of up to ``LLP_MAX_SEGMENTS`` seconds, else 100 (one example per second:
    with 0.96 s the examples of a long video drift away from its segments)."""
    return EXAMPLE_HOP_FRAMES if num_segments <= LLP_MAX_SEGMENTS else SECOND_HOP_FRAMES


def vggish_examples(
    wave: np.ndarray, num_segments: int | None = None, hop: int | None = None
) -> np.ndarray:
    """``(N, 96, 64)`` float32 VGGish examples of a 16 kHz waveform.

    With ``num_segments`` exactly that many (hop :func:`example_hop`); audio
    too short for them is padded with silence (zeros) at the end. Without it,
    every complete example at hop ``hop`` (default 96), as
    ``vggish_input.waveform_to_examples``.
    """
    x = np.asarray(wave, np.float64)
    if num_segments is None:
        mel = log_mel(x)
        return frames_of(mel, EXAMPLE_FRAMES, hop or EXAMPLE_HOP_FRAMES).astype(np.float32)
    hop = hop or example_hop(num_segments)
    frames_needed = (num_segments - 1) * hop + EXAMPLE_FRAMES
    samples_needed = WINDOW_SAMPLES + HOP_SAMPLES * (frames_needed - 1)
    if len(x) < samples_needed:
        x = np.concatenate([x, np.zeros((samples_needed - len(x),) + x.shape[1:])])
    mel = log_mel(x)
    return frames_of(mel, EXAMPLE_FRAMES, hop)[:num_segments].astype(np.float32)
