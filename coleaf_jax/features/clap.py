"""LAION-CLAP (HTSAT audio tower, RoBERTa text tower) in flax, converted from its checkpoints.

The reference is the ``laion_clap`` package (github.com/LAION-AI/CLAP, pip ``laion_clap``
1.1.4-1.1.7, whose model code is identical across those releases):

* ``hook.py`` ``CLAP_Module``: ``get_audio_embedding_from_data`` (int16 round trip,
  ``get_audio_features`` with ``max_len=480000``, ``data_filling='repeatpad'``,
  ``data_truncating='fusion'`` or ``'rand_trunc'``), ``get_text_embedding`` and
  ``tokenizer`` (``RobertaTokenizer('roberta-base')``, ``padding='max_length'``,
  ``truncation=True``, ``max_length=77``); ``enable_fusion=True`` builds
  ``fusion_type='aff_2d'``.
* ``training/data.py`` ``get_audio_features`` / ``get_mel``: waveforms up to ``clip_samples``
  are repeated ``int(max_len / len)`` times and zero-padded; the fusion model's input is
  torchaudio's ``MelSpectrogram`` (HTK mel scale, no filter norm) and
  ``AmplitudeToDB(top_db=None)`` of that waveform, stacked four times (``mel_fusion``).
* ``clap_module/htsat.py`` ``HTSAT_Swin_Transformer``: the non-fusion model's front end
  (torchlibrosa ``Spectrogram`` -- a conv1d DFT with a periodic Hann window, ``center=True``,
  reflect padding, power 2 -- and ``LogmelFilterBank``: librosa's Slaney mel filters,
  ``10 log10(max(x, 1e-10))``, ``ref=1``, ``top_db=None``); ``bn0`` over the mel bins
  (inference mode); ``reshape_wav2img`` (bicubic, ``align_corners=True``, 1001 -> 1024
  frames, then the four time quarters stacked along the frequency axis: a 256 x 256 image);
  ``PatchEmbed`` (4 x 4 conv, LayerNorm; no absolute position embedding, ``ape=False``);
  Swin blocks with (shifted) 8 x 8 windows, relative position bias and a -100 shift mask;
  ``PatchMerging``; the final LayerNorm; ``embedding`` = the mean over all final tokens
  (``avgpool`` of the regrouped map, which ``CLAP.encode_audio`` returns); the ``tscam_conv``
  head (``clipwise_output``, sigmoid); ``feat_maps``, the (64, C) regrouped tokens VALOR
  stores as its audio features (``utils/clap_utils.py`` of github.com/Franklin905/VALOR).
* ``clap_module/model.py`` ``CLAP``: ``audio_projection`` and ``text_projection``
  (Linear -> ReLU -> Linear to ``joint_embed_shape=512``); ``encode_text`` takes RoBERTa's
  ``pooler_output`` (tanh of a dense layer on the ``<s>`` token); ``get_audio_embedding`` /
  ``get_text_embedding`` L2-normalise; ``logit_scale_a`` (VALOR's logits are
  ``exp(logit_scale_a) * audio @ text.T``).
* transformers' ``RobertaModel`` (roberta-base: 12 post-LN layers, GELU (erf), LayerNorm
  eps 1e-5, position ids counted from ``padding_idx + 1`` over the non-pad tokens).

VALOR (``utils/clap_preprocess.py:241-242``) uses ``CLAP_Module(enable_fusion=True)`` with
``load_ckpt(model_id=2)``: ``630k-fusion-best.pt``, HTSAT-tiny + roberta, :data:`CLAP_TINY_FUSION`.
Every input of VALOR is at most 10 s (1 s segments, or 10 s clips resampled to exactly
480,000 samples), so no example is ``longer`` and the fusion model runs its global branch
only: channel 0 of ``mel_fusion`` through ``patch_embed.proj`` -- :func:`audio_embeddings`
(batched, jitted). Clips over ``clip_samples`` go through :func:`prepare_audio` (host side,
one clip at a time as ``laion_clap`` does: random 10 s mel chunks from numpy's generator, a
bilinear-shrunk whole) and :func:`prepared_outputs`: ``mel_conv2d`` and ``AFF`` fuse the
chunks into the global map (``PatchEmbed``, ``fusion_type='aff_2d'``); without fusion, a
random crop (``rand_trunc``).

Matching numbers: everything runs in float32 with ``precision='highest'`` matmuls and
convolutions; filter banks and windows are computed in float64 numpy and rounded once
(torchaudio builds its HTK bank in float32: 5.6e-6 apart). Against ``laion_clap`` on CPU
(torch 2.13), relative to each output's largest magnitude: the small random model of
tests/test_clap.py and the full-size HTSAT-tiny / roberta-base with random weights agree to
1.2e-6 or better on broadband audio. The STFT here is an FFT; the reference's float32
DFTs (torchlibrosa's conv1d, torch.stft) round differently, which shows only in bins far
below a frame's loudest: on a pure tone over -70 dB noise, or a half-silent clip, the
embeddings differ by up to 3e-4, with both sides equally far (0.004-0.007 dB) from a
float64 log-mel.

Inputs are 48 kHz mono float waveforms. ``laion_clap`` quantises them to int16 and back
before anything else (``int16_to_float32(float32_to_int16(x))``, unless
``use_tensor=True``); here that is the caller's choice: :func:`quantize_int16`.
:func:`audio_embeddings` and :func:`text_embeddings` return L2-normalised embeddings, as
``CLAP_Module`` does (``normalize=False`` gives the projections' raw outputs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from coleaf_jax.features import convert
from coleaf_jax.features.convert import ConversionError

PrecisionLike = Any

# ----------------------------------------------------------------------------- configuration


# Limits on a configuration's sizes (convert.check_sizes), checked before anything is
# sized from them; far above LAION-CLAP's HTSAT-base and RoBERTa-large.
_AUDIO_LIMITS = {
    "sample_rate": (1, 384000),
    "clip_samples": (1, 384000 * 600),
    "window_size": (1, 1 << 16),
    "hop_size": (1, 1 << 16),
    "mel_bins": (1, 1024),
    "class_num": (1, 1 << 17),
    "spec_size": (1, 4096),
    "patch_size": (1, 256),
    "patch_stride": (1, 256),
    "embed_dim": (1, 4096),
    "depths": (1, 64),
    "num_heads": (1, 1024),
    "window": (1, 256),
}
_TEXT_LIMITS = {
    "vocab_size": (1, 1 << 20),
    "hidden": (1, 16384),
    "layers": (1, 256),
    "heads": (1, 1024),
    "intermediate": (1, 65536),
    "max_positions": (1, 1 << 14),
    "type_vocab_size": (1, 1024),
    "pad_token_id": (0, 1 << 20),
    "context_length": (1, 1 << 14),
}


def _check_number(value, what: str, low: float, high: float) -> None:
    """A float of a configuration read from a file: a number in ``(low, high]``."""
    if type(value) not in (int, float) or not low < value <= high:
        raise ValueError(f"{what} = {str(value)[:40]}: expected a number in ({low}, {high}]")


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """HTSAT and its front end. Defaults: HTSAT-tiny (``model_configs/HTSAT-tiny.json``
    ``audio_cfg``; ``htsat.py`` ``create_htsat_model`` for ``model_name='tiny'``)."""

    sample_rate: int = 48000  # audio_cfg.sample_rate
    clip_samples: int = 480000  # audio_cfg.clip_samples (hook.py passes max_len=480000)
    window_size: int = 1024  # audio_cfg.window_size: n_fft = win_length
    hop_size: int = 480  # audio_cfg.hop_size
    mel_bins: int = 64  # audio_cfg.mel_bins
    fmin: float = 50.0  # audio_cfg.fmin
    fmax: float = 14000.0  # audio_cfg.fmax
    class_num: int = 527  # audio_cfg.class_num (tscam_conv outputs)
    spec_size: int = 256  # create_htsat_model: spec_size=256
    patch_size: int = 4  # patch_size=4
    patch_stride: int = 4  # patch_stride=(4, 4)
    embed_dim: int = 96  # tiny: 96; base: 128
    depths: tuple[int, ...] = (2, 2, 6, 2)  # tiny: [2, 2, 6, 2]; base: [2, 2, 12, 2]
    num_heads: tuple[int, ...] = (4, 8, 16, 32)  # num_heads=[4, 8, 16, 32]
    window: int = 8  # window_size=8
    mlp_ratio: float = 4.0  # HTSAT_Swin_Transformer default
    ape: bool = False  # HTSAT_Swin_Transformer default: no absolute position embedding
    norm_eps: float = 1e-5  # nn.LayerNorm / nn.BatchNorm2d defaults

    def __post_init__(self):
        convert.check_sizes(self, _AUDIO_LIMITS, "CLAP audio")
        if len(self.depths) != len(self.num_heads) or not 1 <= len(self.depths) <= 8:
            raise ValueError(
                f"CLAP audio depths {self.depths} and num_heads {self.num_heads}: one head "
                f"count per stage, 1 to 8 stages"
            )
        if self.hop_size > self.window_size or self.clip_samples < self.window_size:
            raise ValueError("CLAP audio hop_size <= window_size <= clip_samples expected")
        _check_number(self.fmax, "CLAP audio fmax", 0.0, self.sample_rate / 2)
        if type(self.fmin) not in (int, float) or not 0 <= self.fmin < self.fmax:
            raise ValueError(f"CLAP audio fmin = {str(self.fmin)[:40]}: expected 0 <= fmin < fmax")
        _check_number(self.mlp_ratio, "CLAP audio mlp_ratio", 0.0, 64.0)
        _check_number(self.norm_eps, "CLAP audio norm_eps", 0.0, 1.0)
        if type(self.ape) is not bool:
            raise ValueError(f"CLAP audio ape = {str(self.ape)[:40]}: expected true or false")

    @property
    def num_features(self) -> int:
        """Width of the last stage (``embed_dim`` in the model config JSON)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins

    @property
    def clip_frames(self) -> int:
        """STFT frames of a ``clip_samples`` waveform (``center=True``): 1001."""
        return self.clip_samples // self.hop_size + 1

    @property
    def grid(self) -> int:
        """Patches per side of the spectrogram image: 64."""
        return self.spec_size // self.patch_stride


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """RoBERTa. Defaults: roberta-base's ``config.json`` (transformers ``RobertaConfig``)."""

    vocab_size: int = 50265
    hidden: int = 768  # hidden_size
    layers: int = 12  # num_hidden_layers
    heads: int = 12  # num_attention_heads
    intermediate: int = 3072  # intermediate_size
    max_positions: int = 514  # max_position_embeddings
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5  # roberta-base: 1e-05 (RobertaConfig's own default is 1e-12)
    pad_token_id: int = 1  # also the position ids' padding_idx
    context_length: int = 77  # hook.py tokenizer: max_length=77

    def __post_init__(self):
        convert.check_sizes(self, _TEXT_LIMITS, "CLAP text")
        _check_number(self.layer_norm_eps, "CLAP text layer_norm_eps", 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class CLAPConfig:
    """A whole CLAP model: ``CLAP(embed_dim, audio_cfg, text_cfg, enable_fusion, fusion_type)``
    of ``clap_module/model.py``."""

    audio: AudioConfig = AudioConfig()
    text: TextConfig = TextConfig()
    joint_embed: int = 512  # CLAP(joint_embed_shape=512)
    enable_fusion: bool = False
    fusion_type: str = "aff_2d"  # hook.py: fusion_type = 'aff_2d' when enable_fusion
    fusion_reduction: int = 4  # feature_fusion.AFF(r=4)

    def __post_init__(self):
        if not isinstance(self.audio, AudioConfig) or not isinstance(self.text, TextConfig):
            raise ValueError("CLAP config: audio and text must be tower configurations")
        convert.check_sizes(
            self, {"joint_embed": (1, 1 << 14), "fusion_reduction": (1, 1024)}, "CLAP"
        )
        if type(self.enable_fusion) is not bool:
            raise ValueError(
                f"CLAP enable_fusion = {str(self.enable_fusion)[:40]}: expected a bool"
            )
        if not isinstance(self.fusion_type, str) or len(self.fusion_type) > 40:
            raise ValueError(f"CLAP fusion_type = {str(self.fusion_type)[:40]}: expected a name")


HTSAT_TINY = AudioConfig()
HTSAT_BASE = AudioConfig(embed_dim=128, depths=(2, 2, 12, 2))  # HTSAT-base.json, 'base'
ROBERTA_BASE = TextConfig()
CLAP_TINY = CLAPConfig(HTSAT_TINY, ROBERTA_BASE)  # 630k-best.pt, 630k-audioset-best.pt
CLAP_TINY_FUSION = CLAPConfig(HTSAT_TINY, ROBERTA_BASE, enable_fusion=True)  # *-fusion-best.pt
CLAP_BASE = CLAPConfig(HTSAT_BASE, ROBERTA_BASE)  # e.g. music_audioset_epoch_15_esc_90.14.pt

EMBEDDING_SIZE = 512


def config_to_dict(config: CLAPConfig) -> dict:
    """A JSON-ready ``dataclasses.asdict`` of ``config``."""
    return dataclasses.asdict(config)


def config_from_dict(record: dict | None) -> CLAPConfig:
    """The :class:`CLAPConfig` of :func:`config_to_dict` (or ``dataclasses.asdict``, JSON
    lists included); ``None`` -> VALOR's :data:`CLAP_TINY_FUSION`. Unknown keys raise
    ``ValueError``."""
    if record is None:
        return CLAP_TINY_FUSION
    if not isinstance(record, dict):
        raise ValueError(f"not a CLAP configuration: a {type(record).__name__}")
    record = dict(record)
    try:
        audio, text = record.pop("audio", {}), record.pop("text", {})
        if not isinstance(audio, dict) or not isinstance(text, dict):
            raise TypeError("its audio and text entries are not objects")
        audio = dict(audio)
        for key in ("depths", "num_heads"):
            if key in audio:
                if not isinstance(audio[key], (list, tuple)) or len(audio[key]) > 8:
                    raise TypeError(f"audio {key} is not a list of at most 8 integers")
                audio[key] = tuple(audio[key])
        return CLAPConfig(audio=AudioConfig(**audio), text=TextConfig(**text), **record)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not a CLAP configuration: {e}") from e


AMIN = 1e-10  # LogmelFilterBank / AmplitudeToDB: amin
SHIFT_MASK_VALUE = -100.0  # SwinTransformerBlock attn_mask fill
BICUBIC_A = -0.75  # torch's cubic convolution coefficient

# ----------------------------------------------------------------------------- front end


def quantize_int16(waveform: np.ndarray) -> np.ndarray:
    """``int16_to_float32(float32_to_int16(x))`` of ``laion_clap`` (training/data.py):
    clip to [-1, 1], ``* 32767`` in float32, truncate to int16, ``/ 32767`` in float64,
    back to float32. Any shape."""
    x = np.clip(np.asarray(waveform, np.float32), -1.0, 1.0)
    q = (x * np.float32(32767.0)).astype(np.int16)
    return (q / 32767.0).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
    """``(length,)`` float64 periodic Hann window (scipy/librosa ``fftbins=True``;
    ``torch.hann_window`` default)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def _slaney_hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(
        hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-300) / min_log_hz) / logstep, mels
    )


def _slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(
        mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels
    )


def slaney_mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` float32: ``librosa.filters.mel(sr, n_fft, n_mels, fmin,
    fmax).T`` (Slaney mel scale, ``norm='slaney'``), the ``melW`` of torchlibrosa's
    ``LogmelFilterBank``. Rounded as librosa rounds: triangles to float32, then the
    float64 area normalisation, then float32 again."""
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = _slaney_mel_to_hz(
        np.linspace(_slaney_hz_to_mel(fmin), _slaney_hz_to_mel(fmax), n_mels + 2)
    )
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights = (weights * enorm[:, None]).astype(np.float32)
    return np.ascontiguousarray(weights.T)


def htk_mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` float32: torchaudio's ``melscale_fbanks(n_freqs, fmin,
    fmax, n_mels, sample_rate, norm=None, mel_scale='htk')`` (the ``MelSpectrogram`` of
    ``get_mel``), computed in float64: HTK ``2595 log10(1 + f / 700)``, frequencies
    ``linspace(0, sample_rate // 2, n_freqs)``."""
    all_freqs = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)
    m_min = 2595.0 * np.log10(1.0 + fmin / 700.0)
    m_max = 2595.0 * np.log10(1.0 + fmax / 700.0)
    f_pts = 700.0 * (10.0 ** (np.linspace(m_min, m_max, n_mels + 2) / 2595.0) - 1.0)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def mel_filterbank(config: AudioConfig, fusion: bool) -> np.ndarray:
    """The filter bank of the model's front end: HTK (torchaudio) for the fusion model,
    Slaney (torchlibrosa) otherwise."""
    make = htk_mel_filterbank if fusion else slaney_mel_filterbank
    return make(config.sample_rate, config.window_size, config.mel_bins, config.fmin, config.fmax)


def stft_power(waveforms: jnp.ndarray, n_fft: int, hop: int) -> jnp.ndarray:
    """``(N, S)`` -> ``(N, 1 + S // hop, n_fft // 2 + 1)`` power spectrogram: reflect padding
    of ``n_fft // 2`` each side (``center=True``), periodic Hann window, ``|FFT|^2``."""
    pad = n_fft // 2
    x = jnp.pad(waveforms, ((0, 0), (pad, pad)), mode="reflect")
    frames = 1 + (x.shape[1] - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    windowed = x[:, idx] * jnp.asarray(hann_window(n_fft), jnp.float32)
    spec = jnp.fft.rfft(windowed, n=n_fft, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def log_mel(
    waveforms: jnp.ndarray,
    config: AudioConfig,
    fusion: bool,
    precision: PrecisionLike = "highest",
) -> jnp.ndarray:
    """``(N, S)`` float32 waveforms -> ``(N, 1 + S // hop, mel_bins)`` log-mel in dB:
    ``10 log10(max(power @ mel, 1e-10))`` (``ref=1``, no ``top_db``). ``fusion`` picks the
    filter bank (:func:`mel_filterbank`)."""
    power = stft_power(waveforms, config.window_size, config.hop_size)
    fb = jnp.asarray(mel_filterbank(config, fusion))
    mel = jnp.einsum("ntf,fm->ntm", power, fb, precision=precision)
    return 10.0 * jnp.log10(jnp.maximum(mel, AMIN))


def repeat_pad(waveforms: jnp.ndarray, length: int) -> jnp.ndarray:
    """``(N, S)`` -> ``(N, length)``, ``S <= length``: ``data_filling='repeatpad'`` (repeat
    ``int(length / S)`` times, then zeros)."""
    n, s = waveforms.shape
    if s > length:
        raise ValueError(f"repeat_pad: {s} samples exceed {length}")
    if s == length:
        return waveforms
    tiled = jnp.tile(waveforms, (1, length // s))
    return jnp.pad(tiled, ((0, 0), (0, length - tiled.shape[1])))


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """torch's ``get_cubic_upsample_coefficients`` (A = -0.75) for offsets ``t`` in [0, 1]."""
    a = BICUBIC_A

    def near(x):  # cubic_convolution1, |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # cubic_convolution2, 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


@functools.lru_cache(maxsize=8)
def bicubic_resize_plan(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``(size_out, 4)`` source indices (clamped to the edges) and float32 weights of
    ``F.interpolate(mode='bicubic', align_corners=True)`` along one axis."""
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    real = scale * np.arange(size_out, dtype=np.float64)
    base = np.minimum(np.floor(real), size_in - 1).astype(np.int64)
    t = np.clip(real - base, 0.0, 1.0)
    idx = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, size_in - 1)
    return idx, _cubic_weights(t).astype(np.float32)


def bicubic_resize_time(x: jnp.ndarray, size_out: int) -> jnp.ndarray:
    """``(N, T, F)`` -> ``(N, size_out, F)``, bicubic along T (``align_corners=True``)."""
    idx, w = bicubic_resize_plan(x.shape[1], size_out)
    w = jnp.asarray(w)
    out = x[:, idx[:, 0]] * w[None, :, 0, None]
    for k in range(1, 4):  # torch's summation order
        out = out + x[:, idx[:, k]] * w[None, :, k, None]
    return out


def spectrogram_image(mel: jnp.ndarray, config: AudioConfig) -> jnp.ndarray:
    """``reshape_wav2img``: ``(N, T, mel_bins)`` (``T <= spec_size * freq_ratio``) ->
    ``(N, spec_size, spec_size)``: time stretched bicubically to ``spec_size * freq_ratio``
    frames, cut into ``freq_ratio`` consecutive parts stacked along the frequency axis (row
    ``k * mel_bins + f``, column ``t``: frame ``k * spec_size + t``, mel bin ``f``)."""
    n, t, f = mel.shape
    r = config.freq_ratio
    target_t, target_f = config.spec_size * r, config.spec_size // r
    if t > target_t or f > target_f:
        raise ValueError(f"a ({t}, {f}) spectrogram exceeds HTSAT's ({target_t}, {target_f})")
    if f < target_f:
        raise ValueError(f"{f} mel bins: fewer than spec_size // freq_ratio = {target_f}")
    if t < target_t:
        mel = bicubic_resize_time(mel, target_t)
    img = mel.reshape(n, r, config.spec_size, f)  # (N, k, t, f)
    return img.transpose(0, 1, 3, 2).reshape(n, r * f, config.spec_size)


# ----------------------------------------------------------------------------- Swin pieces


@functools.lru_cache(maxsize=16)
def relative_position_index(window: int) -> np.ndarray:
    """``(window^2, window^2)`` int64 index into the bias table (``WindowAttention``)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0)
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


@functools.lru_cache(maxsize=16)
def shift_attention_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """``(num_windows, window^2, window^2)`` float32 mask of a shifted block: 0 within a
    region, -100 across regions (``SwinTransformerBlock.attn_mask``)."""
    img = np.zeros((height, width), np.float32)
    cnt = 0
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for hs in slices:
        for ws in slices:
            img[hs, ws] = cnt
            cnt += 1
    win = img.reshape(height // window, window, width // window, window)
    win = win.transpose(0, 2, 1, 3).reshape(-1, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, SHIFT_MASK_VALUE, 0.0).astype(np.float32)


def block_geometry(config: AudioConfig, stage: int, block: int) -> tuple[int, int, int]:
    """``(resolution, window, shift)`` of a Swin block: windows shrink to the resolution
    (and shifting stops) once the resolution is no larger than the window."""
    res = config.grid // 2**stage
    window, shift = config.window, (0 if block % 2 == 0 else config.window // 2)
    if res <= window:
        window, shift = res, 0
    return res, window, shift


def _layer_norm(eps: float, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class WindowAttention(nn.Module):
    """``(B * nW, window^2, C)`` -> same: multi-head attention within windows with a
    learnt relative position bias and an optional ``(nW, N, N)`` additive mask."""

    dim: int
    heads: int
    window: int
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: np.ndarray | None) -> jnp.ndarray:
        b, n, c = x.shape
        hd = c // self.heads
        table = self.param(
            "relative_position_bias_table",
            nn.initializers.truncated_normal(0.02),
            ((2 * self.window - 1) ** 2, self.heads),
        )
        qkv = nn.Dense(3 * c, precision=self.precision, name="qkv")(x)
        qkv = qkv.reshape(b, n, 3, self.heads, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = q * (hd**-0.5)
        attn = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=self.precision)
        bias = table[relative_position_index(self.window).reshape(-1)].reshape(n, n, -1)
        attn = attn + bias.transpose(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(b // nw, nw, self.heads, n, n) + jnp.asarray(mask)[None, :, None]
            attn = attn.reshape(b, self.heads, n, n)
        attn = jax.nn.softmax(attn, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", attn, v, precision=self.precision).reshape(b, n, c)
        return nn.Dense(c, precision=self.precision, name="proj")(out)


class SwinBlock(nn.Module):
    """``(B, H * W, C)`` -> same: (shifted-)window attention and an MLP, both pre-LN
    residual (``SwinTransformerBlock``)."""

    dim: int
    heads: int
    resolution: int
    window: int
    shift: int
    mlp_ratio: float
    eps: float
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, _, c = x.shape
        h = w = self.resolution
        ws, s = self.window, self.shift
        y = _layer_norm(self.eps, "norm1")(x).reshape(b, h, w, c)
        if s:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        y = y.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(-1, ws * ws, c)
        mask = shift_attention_mask(h, w, ws, s) if s else None
        y = WindowAttention(self.dim, self.heads, ws, self.precision, name="attn")(y, mask)
        y = y.reshape(b, h // ws, w // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(b, h, w, c)
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + y.reshape(b, h * w, c)
        y = _layer_norm(self.eps, "norm2")(x)
        y = nn.Dense(int(c * self.mlp_ratio), precision=self.precision, name="fc1")(y)
        y = jax.nn.gelu(y, approximate=False)
        return x + nn.Dense(c, precision=self.precision, name="fc2")(y)


class PatchMerging(nn.Module):
    """``(B, H * W, C)`` -> ``(B, H/2 * W/2, 2C)``: 2 x 2 neighbours concatenated
    (order (0,0), (1,0), (0,1), (1,1)), LayerNorm, bias-free linear."""

    resolution: int
    eps: float
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        b, _, c = x.shape
        h = w = self.resolution
        x = x.reshape(b, h, w, c)
        x = jnp.concatenate(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
        )
        x = x.reshape(b, -1, 4 * c)
        x = _layer_norm(self.eps, "norm")(x)
        return nn.Dense(2 * c, use_bias=False, precision=self.precision, name="reduction")(x)


class AFF(nn.Module):
    """``feature_fusion.AFF`` (2D, inference): ``(N, H, W, C)`` global and local maps ->
    ``2 x w + 2 r (1 - w)``, ``w`` a sigmoid of local (1 x 1 convs) and global (pooled)
    attention on ``x + r``."""

    channels: int
    reduction: int = 4
    precision: PrecisionLike = "highest"

    def _branch(self, x: jnp.ndarray, prefix: str, first: int) -> jnp.ndarray:
        inter = self.channels // self.reduction
        x = nn.Conv(inter, (1, 1), precision=self.precision, name=f"{prefix}_{first}")(x)
        x = nn.BatchNorm(True, epsilon=1e-5, name=f"{prefix}_{first + 1}")(x)
        x = nn.relu(x)
        x = nn.Conv(self.channels, (1, 1), precision=self.precision, name=f"{prefix}_{first + 3}")(
            x
        )
        return nn.BatchNorm(True, epsilon=1e-5, name=f"{prefix}_{first + 4}")(x)

    @nn.compact
    def __call__(self, x: jnp.ndarray, residual: jnp.ndarray) -> jnp.ndarray:
        xa = x + residual
        xl = self._branch(xa, "local_att", 0)
        xg = self._branch(xa.mean(axis=(1, 2), keepdims=True), "global_att", 1)
        wei = jax.nn.sigmoid(xl + xg)
        return 2 * x * wei + 2 * residual * (1 - wei)


class HTSAT(nn.Module):
    """``HTSAT_Swin_Transformer`` from the log-mel spectrogram on (``bn0`` onwards).

    ``__call__(mel, longer=None)``: ``mel`` ``(N, T, mel_bins)`` dB, ``T <= spec_size *
    freq_ratio`` (a non-fusion model, or a fusion model's input that is not ``longer``:
    channel 0 of ``mel_fusion``), or the fusion model's ``mel_fusion`` ``(N, 4, T,
    mel_bins)`` with ``longer`` ``(N,)`` bool (channel 0 the whole clip shrunk, 1-3 its
    chunks: :func:`fusion_input`) -> ``{'embedding': (N, num_features), 'feat_maps': (N,
    64, num_features), 'clipwise_output': (N, class_num)}``.
    """

    config: AudioConfig
    fusion: bool = False
    fusion_reduction: int = 4
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(
        self, mel: jnp.ndarray, longer: jnp.ndarray | None = None
    ) -> dict[str, jnp.ndarray]:
        cfg = self.config
        x = nn.BatchNorm(True, epsilon=cfg.norm_eps, name="bn0")(mel)
        chunks = None
        if x.ndim == 4:  # mel_fusion: channel 0 global, 1-3 local
            if not self.fusion or longer is None:
                raise ValueError("a 4-channel mel_fusion input needs a fusion model and `longer`")
            n4, c4, t4, f4 = x.shape
            imgs = spectrogram_image(x.reshape(n4 * c4, t4, f4), cfg).reshape(
                n4, c4, *([cfg.spec_size] * 2)
            )
            img, chunks = imgs[:, 0, :, :, None], imgs[:, 1:, :, :, None]
        else:
            img = spectrogram_image(x, cfg)[..., None]  # (N, 256, 256, 1)
        patch = (cfg.patch_size, cfg.patch_size)
        pad = (cfg.patch_size - cfg.patch_stride) // 2
        x = nn.Conv(
            cfg.embed_dim,
            patch,
            strides=(cfg.patch_stride, cfg.patch_stride),
            padding=((pad, pad), (pad, pad)),
            precision=self.precision,
            name="patch_embed_proj",
        )(img)
        if self.fusion and (chunks is not None or self.is_initializing()):
            # PatchEmbed's aff_2d branch: each chunk through mel_conv2d (4 x 12 patches), the
            # three side by side along time, cut or zero-padded to the global map's width,
            # fused into it by AFF where `longer` (at init: only declares the weights).
            local_in = chunks if chunks is not None else img[:, None].repeat(3, axis=1)
            n, k = local_in.shape[:2]
            local = nn.Conv(
                cfg.embed_dim,
                (cfg.patch_size, 3 * cfg.patch_size),
                strides=(cfg.patch_stride, 3 * cfg.patch_stride),
                padding=((pad, pad), (pad, pad)),
                precision=self.precision,
                name="patch_embed_mel_conv2d",
            )(local_in.reshape(n * k, *local_in.shape[2:]))
            _, lh, lw, lc = local.shape
            local = local.reshape(n, k, lh, lw, lc).transpose(0, 2, 1, 3, 4)
            local = local.reshape(n, lh, k * lw, lc)[:, :, : x.shape[2]]
            local = jnp.pad(local, ((0, 0), (0, 0), (0, x.shape[2] - local.shape[2]), (0, 0)))
            fused = AFF(
                cfg.embed_dim, self.fusion_reduction, self.precision, name="patch_embed_fusion"
            )(x, local)
            if chunks is not None:
                x = jnp.where(jnp.asarray(longer, bool)[:, None, None, None], fused, x)
        n, gh, gw, c = x.shape
        x = x.reshape(n, gh * gw, c)
        x = _layer_norm(cfg.norm_eps, "patch_embed_norm")(x)
        if cfg.ape:
            x = x + self.param(
                "absolute_pos_embed", nn.initializers.truncated_normal(0.02), (1, gh * gw, c)
            )
        for i, depth in enumerate(cfg.depths):
            dim = cfg.embed_dim * 2**i
            for j in range(depth):
                res, window, shift = block_geometry(cfg, i, j)
                x = SwinBlock(
                    dim,
                    cfg.num_heads[i],
                    res,
                    window,
                    shift,
                    cfg.mlp_ratio,
                    cfg.norm_eps,
                    self.precision,
                    name=f"layers_{i}_blocks_{j}",
                )(x)
            if i < len(cfg.depths) - 1:
                x = PatchMerging(
                    cfg.grid // 2**i, cfg.norm_eps, self.precision, name=f"layers_{i}_downsample"
                )(x)
        x = _layer_norm(cfg.norm_eps, "norm")(x)  # (N, SF * ST, C), row-major (freq, time)
        n, _, c = x.shape
        sf = st = cfg.grid // 2 ** (len(cfg.depths) - 1)
        c_freq_bin = sf // cfg.freq_ratio
        # forward_features' regrouping: rows k * c_freq_bin + b -> (b, k * ST + t).
        grouped = x.reshape(n, sf // c_freq_bin, c_freq_bin, st, c).transpose(0, 2, 1, 3, 4)
        grouped = grouped.reshape(n, c_freq_bin, (sf // c_freq_bin) * st, c)
        feat_maps = grouped.reshape(n, -1, c)
        head = nn.Conv(
            cfg.class_num,
            (c_freq_bin, 3),
            padding=((0, 0), (1, 1)),
            precision=self.precision,
            name="tscam_conv",
        )(grouped)
        return {
            "embedding": feat_maps.mean(axis=1),
            "feat_maps": feat_maps,
            "clipwise_output": jax.nn.sigmoid(head.reshape(n, -1, cfg.class_num).mean(axis=1)),
        }


# ----------------------------------------------------------------------------- RoBERTa


class RobertaLayer(nn.Module):
    """``(N, L, H)`` -> same: post-LN self-attention and feed-forward (transformers'
    ``RobertaLayer``); ``bias`` ``(N, 1, 1, L)`` is added to the attention logits."""

    config: TextConfig
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        n, length, h = x.shape
        hd = h // cfg.heads

        def heads(name: str) -> jnp.ndarray:
            y = nn.Dense(h, precision=self.precision, name=name)(x)
            return y.reshape(n, length, cfg.heads, hd)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = jnp.einsum("nqhd,nkhd->nhqk", q, k, precision=self.precision) / math.sqrt(hd)
        probs = jax.nn.softmax(scores + bias, axis=-1)
        ctx = jnp.einsum("nhqk,nkhd->nqhd", probs, v, precision=self.precision)
        ctx = nn.Dense(h, precision=self.precision, name="attention_output")(
            ctx.reshape(n, length, h)
        )
        x = nn.LayerNorm(cfg.layer_norm_eps, use_fast_variance=False, name="attention_norm")(
            ctx + x
        )
        y = nn.Dense(cfg.intermediate, precision=self.precision, name="intermediate")(x)
        y = nn.Dense(h, precision=self.precision, name="output")(jax.nn.gelu(y, approximate=False))
        return nn.LayerNorm(cfg.layer_norm_eps, use_fast_variance=False, name="output_norm")(y + x)


def roberta_position_ids(ids: jnp.ndarray, padding_idx: int) -> jnp.ndarray:
    """``create_position_ids_from_input_ids``: non-pad tokens count from ``padding_idx + 1``,
    pads get ``padding_idx``. ``(N, L)`` int."""
    mask = (ids != padding_idx).astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask + padding_idx


class Roberta(nn.Module):
    """transformers' ``RobertaModel`` (inference): ``(N, L)`` ids and attention mask ->
    ``pooler_output`` ``(N, hidden)`` (tanh of a dense layer on the first token)."""

    config: TextConfig
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, ids: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        word = nn.Embed(cfg.vocab_size, cfg.hidden, name="word_embeddings")(ids)
        token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden, name="token_type_embeddings")(
            jnp.zeros_like(ids)
        )
        position = nn.Embed(cfg.max_positions, cfg.hidden, name="position_embeddings")(
            roberta_position_ids(ids, cfg.pad_token_id)
        )
        x = word + token_type
        x = x + position
        x = nn.LayerNorm(cfg.layer_norm_eps, use_fast_variance=False, name="embeddings_norm")(x)
        bias = (1.0 - mask.astype(jnp.float32))[:, None, None, :] * jnp.finfo(jnp.float32).min
        for i in range(cfg.layers):
            x = RobertaLayer(cfg, self.precision, name=f"layer_{i}")(x, bias)
        return jnp.tanh(nn.Dense(cfg.hidden, precision=self.precision, name="pooler")(x[:, 0]))


class Projection(nn.Module):
    """``audio_projection`` / ``text_projection``: Linear -> ReLU -> Linear."""

    features: int
    precision: PrecisionLike = "highest"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.relu(nn.Dense(self.features, precision=self.precision, name="linear1")(x))
        return nn.Dense(self.features, precision=self.precision, name="linear2")(x)


def audio_input(
    waveforms: jnp.ndarray, config: CLAPConfig, precision: PrecisionLike = "highest"
) -> jnp.ndarray:
    """``get_audio_features`` + the model's front end: ``(N, S)`` float32 48 kHz ->
    ``(N, clip_frames, mel_bins)`` log-mel. ``S <= clip_samples``: repeat-padded to
    ``clip_samples``; the fusion model also takes ``S // hop_size == clip_samples //
    hop_size`` as is (its corner case of a ``longer`` clip that is not longer in frames).
    Longer inputs are refused: ``laion_clap`` crops them at random (``rand_trunc``) or,
    with fusion, picks random mel chunks -- :func:`prepare_audio` does either."""
    cfg = config.audio
    s = waveforms.shape[1]
    if s > cfg.clip_samples:
        same_frames = s // cfg.hop_size == cfg.clip_samples // cfg.hop_size
        if not (config.enable_fusion and same_frames):
            raise ValueError(
                f"{s} samples exceed clip_samples={cfg.clip_samples}: laion_clap takes a "
                "random crop (rand_trunc) or, with fusion, random mel chunks; use "
                "prepare_audio and prepared_outputs"
            )
    else:
        waveforms = repeat_pad(waveforms, cfg.clip_samples)
    return log_mel(waveforms, cfg, config.enable_fusion, precision)


def shrink_matrix(size_in: int, size_out: int, antialias: bool) -> np.ndarray:
    """``(size_out, size_in)`` float64 weights of a bilinear resize along one axis
    (``F.interpolate(mode='bilinear', align_corners=False)``; ``antialias=True``: torch's
    ``_upsample_bilinear2d_aa``, a triangle filter widened by the downscale factor, as
    torchvision's ``Resize`` on tensors since 0.17)."""
    scale = size_in / size_out
    out = np.zeros((size_out, size_in))
    i = np.arange(size_out)
    if antialias and scale > 1:
        support = scale
        for k in range(size_out):
            center = scale * (k + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), size_in)
            w = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) / scale))
            out[k, lo:hi] = w / w.sum()
        return out
    src = np.maximum((i + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, size_in - 1)
    frac = src - i0
    np.add.at(out, (i, i0), 1.0 - frac)
    np.add.at(out, (i, i1), frac)
    return out


def fusion_input(
    waveform: np.ndarray,
    config: CLAPConfig = CLAP_TINY_FUSION,
    rng: Any = None,
    shrink_antialias: bool = True,
) -> tuple[np.ndarray, bool]:
    """``get_audio_features(..., data_truncating='fusion', data_filling='repeatpad')`` for
    one ``(S,)`` float32 48 kHz waveform of any length -> ``mel_fusion`` ``(4, clip_frames,
    mel_bins)`` float32 and ``longer``.

    Up to ``clip_samples`` (or ``clip_frames`` frames): the repeat-padded clip's log-mel
    four times, not longer. Longer: channel 0 is the whole clip's log-mel shrunk
    bilinearly to ``clip_frames`` frames (``torchvision.transforms.Resize``: antialiased
    since torchvision 0.17, not before -- ``shrink_antialias``), channels 1-3 are
    ``clip_frames``-frame chunks starting at ``rng.choice`` of each third of the possible
    starts. ``laion_clap`` draws from numpy's global generator (``np.random``, the default
    here) and then draws the waveform crop it no longer uses (``randint``, drawn here too so
    that the generator's stream stays the same); pass a seeded ``np.random.RandomState``
    for reproducible chunks."""
    cfg = config.audio
    wave = np.asarray(waveform, np.float32).reshape(-1)
    rng = np.random if rng is None else rng
    chunk = cfg.clip_samples // cfg.hop_size + 1
    if len(wave) <= cfg.clip_samples:
        mel = np.asarray(_audio_input(wave[None], config))[0]
        return np.stack([mel] * 4), False
    mel = np.asarray(log_mel(jnp.asarray(wave[None]), cfg, True))[0]
    total = mel.shape[0]
    if total == chunk:
        longer, mel_fusion = False, np.stack([mel] * 4)
    else:
        ranges = np.array_split(np.arange(0, total - chunk + 1), 3)
        ranges = [r if len(r) else np.array([0]) for r in ranges]
        starts = [int(rng.choice(r)) for r in ranges]
        shrink = (shrink_matrix(total, chunk, shrink_antialias) @ mel).astype(np.float32)
        chunks = [mel[s : s + chunk] for s in starts]
        longer, mel_fusion = True, np.stack([shrink, *chunks])
    rng.randint(0, len(wave) - cfg.clip_samples + 1)  # the waveform crop's draw
    return mel_fusion, longer


def prepare_audio(
    waveforms: Sequence[np.ndarray],
    config: CLAPConfig = CLAP_TINY_FUSION,
    rng: Any = None,
    shrink_antialias: bool = True,
) -> dict[str, np.ndarray]:
    """``get_audio_embedding_from_data``'s loop over ``(S_i,)`` waveforms of any lengths
    (no int16 round trip: :func:`quantize_int16`): fusion -> ``{'mel_fusion': (N, 4,
    clip_frames, mel_bins), 'longer': (N,) bool}`` (:func:`fusion_input`); otherwise
    ``{'waveform': (N, clip_samples)}``, repeat-padded or cropped at ``rng.randint(0,
    S - clip_samples + 1)`` (``rand_trunc``; numpy's global generator by default)."""
    if config.enable_fusion:
        items = [fusion_input(w, config, rng, shrink_antialias) for w in waveforms]
        return {
            "mel_fusion": np.stack([m for m, _ in items]),
            "longer": np.asarray([lg for _, lg in items], bool),
        }
    rng = np.random if rng is None else rng
    clip, out = config.audio.clip_samples, []
    for w in waveforms:
        w = np.asarray(w, np.float32).reshape(-1)
        if len(w) > clip:
            start = int(rng.randint(0, len(w) - clip + 1))
            w = w[start : start + clip]
        out.append(np.asarray(repeat_pad(w[None], clip))[0])
    return {"waveform": np.stack(out)}


class CLAP(nn.Module):
    """The two towers and their projections (``clap_module/model.py`` ``CLAP``).

    * ``encode_audio(waveforms)``: ``(N, S)`` float32 48 kHz (:func:`audio_input`) ->
      HTSAT's outputs (:class:`HTSAT`) plus ``'projected'`` ``(N, joint_embed)``;
      ``encode_mel(mel)`` the same from the log-mel.
    * ``encode_text(ids, mask)``: ``(N, L)`` -> ``(N, joint_embed)`` (not normalised).
    """

    config: CLAPConfig
    precision: PrecisionLike = "highest"

    def setup(self):
        cfg = self.config
        self.audio_branch = HTSAT(
            cfg.audio, cfg.enable_fusion, cfg.fusion_reduction, self.precision
        )
        self.audio_projection = Projection(cfg.joint_embed, self.precision)
        self.text_branch = Roberta(cfg.text, self.precision)
        self.text_projection = Projection(cfg.joint_embed, self.precision)
        init = nn.initializers.constant(math.log(1 / 0.07))
        self.logit_scale_a = self.param("logit_scale_a", init, ())
        self.logit_scale_t = self.param("logit_scale_t", init, ())

    def encode_mel(
        self, mel: jnp.ndarray, longer: jnp.ndarray | None = None
    ) -> dict[str, jnp.ndarray]:
        """``(N, frames, mel_bins)`` log-mel (:func:`audio_input`), or a fusion model's
        ``(N, 4, frames, mel_bins)`` ``mel_fusion`` and ``(N,)`` ``longer``
        (:func:`prepare_audio`) -> HTSAT's outputs and ``'projected'``."""
        out = dict(self.audio_branch(mel, longer))
        out["projected"] = self.audio_projection(out["embedding"])
        return out

    def encode_audio(self, waveforms: jnp.ndarray) -> dict[str, jnp.ndarray]:
        return self.encode_mel(audio_input(waveforms, self.config, self.precision))

    def encode_text(self, ids: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        return self.text_projection(self.text_branch(ids, mask))

    def __call__(self, waveforms, ids, mask):
        return self.encode_audio(waveforms), self.encode_text(ids, mask)


def _normalize(x: jnp.ndarray) -> jnp.ndarray:
    """``F.normalize(x, dim=-1)``: ``x / max(||x||, 1e-12)``."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check_fusion(variables: dict, config: CLAPConfig) -> None:
    has = "patch_embed_mel_conv2d" in variables["params"].get("audio_branch", {})
    if has != config.enable_fusion:
        raise ValueError(
            f"variables {'of' if has else 'without'} a fusion model, config with "
            f"enable_fusion={config.enable_fusion}"
        )


_audio_input = jax.jit(audio_input, static_argnames=("config", "precision"))


@functools.partial(jax.jit, static_argnames=("config", "precision"))
def _encode_mel(variables, mel, config, longer=None, precision="highest"):
    return CLAP(config, precision).apply(variables, mel, longer, method=CLAP.encode_mel)


def audio_outputs(
    variables: dict,
    waveforms: jnp.ndarray,
    config: CLAPConfig = CLAP_TINY_FUSION,
    precision: PrecisionLike = "highest",
) -> dict[str, jnp.ndarray]:
    """Every audio output for ``(N, S)`` float32 48 kHz waveforms (:func:`audio_input`):
    ``'embedding'`` ``(N, num_features)`` (HTSAT's, before projection), ``'projected'``
    ``(N, 512)`` (not normalised), ``'feat_maps'`` ``(N, 64, num_features)``,
    ``'clipwise_output'`` ``(N, class_num)``. Two jitted stages (front end, network).

    ``variables`` as the converter returns them are numpy arrays, copied to the device at
    every call: ``jax.device_put`` them once when embedding many batches. ``precision``: of
    the network's matmuls and convolutions (``'highest'``: float32 on GPUs too, no TF32)."""
    _check_fusion(variables, config)
    mel = _audio_input(jnp.asarray(waveforms, jnp.float32), config)
    return _encode_mel(variables, mel, config, precision=precision)


def prepared_outputs(
    variables: dict, inputs: dict[str, np.ndarray], config: CLAPConfig = CLAP_TINY_FUSION
) -> dict[str, jnp.ndarray]:
    """:func:`audio_outputs` for :func:`prepare_audio`'s inputs (any lengths, the fusion
    model's ``longer`` path included)."""
    _check_fusion(variables, config)
    if "mel_fusion" in inputs:
        mel = jnp.asarray(inputs["mel_fusion"], jnp.float32)
        return _encode_mel(variables, mel, config, jnp.asarray(inputs["longer"], bool))
    return audio_outputs(variables, inputs["waveform"], config)


def audio_embeddings(
    variables: dict,
    waveforms: jnp.ndarray,
    config: CLAPConfig = CLAP_TINY_FUSION,
    normalize: bool = True,
) -> jnp.ndarray:
    """``(N, S)`` float32 48 kHz mono waveforms -> ``(N, 512)``: ``CLAP_Module.
    get_audio_embedding_from_data`` (L2-normalised; ``normalize=False``: the projection's
    output). The int16 round trip is the caller's (:func:`quantize_int16`)."""
    projected = audio_outputs(variables, waveforms, config)["projected"]
    return _normalize(projected) if normalize else projected


@functools.partial(jax.jit, static_argnames=("config", "precision"))
def _text(variables, ids, mask, config, precision="highest"):
    return CLAP(config, precision).apply(variables, ids, mask, method=CLAP.encode_text)


def text_embeddings(
    variables: dict,
    ids: jnp.ndarray,
    mask: jnp.ndarray,
    config: CLAPConfig = CLAP_TINY_FUSION,
    normalize: bool = True,
    precision: PrecisionLike = "highest",
) -> jnp.ndarray:
    """``(N, L)`` token ids and attention mask (:class:`Tokenizer`) -> ``(N, 512)``:
    ``CLAP_Module.get_text_embedding`` (L2-normalised; ``normalize=False``: the
    projection's output)."""
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
    out = _text(variables, ids, mask, config, precision)
    return _normalize(out) if normalize else out


def logit_scale(variables: dict) -> jnp.ndarray:
    """``exp(logit_scale_a)``: VALOR's ``logits = logit_scale * audio @ text.T``."""
    return jnp.exp(variables["params"]["logit_scale_a"])


# ----------------------------------------------------------------------------- tokenizer


class Tokenizer:
    """RoBERTa's byte-level BPE as ``CLAP_Module.tokenizer``: ``<s> text </s>``, truncated
    and padded with ``<pad>`` to ``max_length`` (77); attention mask 1 on real tokens.

    Built on HF ``tokenizers`` from roberta-base's ``tokenizer.json``
    (:meth:`from_tokenizer_json`) or its ``vocab.json`` + ``merges.txt``
    (:meth:`from_files`); :meth:`load` takes a folder holding either.
    """

    def __init__(self, tokenizer, max_length: int = 77):
        self.tokenizer = tokenizer
        self.max_length = max_length
        pad_id = tokenizer.token_to_id("<pad>")
        if pad_id is None:
            raise ValueError("the vocabulary has no <pad> token")
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token="<pad>")

    @classmethod
    def from_files(cls, vocab_json: str, merges_txt: str, max_length: int = 77) -> Tokenizer:
        """From ``vocab.json`` and ``merges.txt`` (GPT-2 / RoBERTa format)."""

        vocab, merges = convert.read_json(vocab_json), convert.read_merges(merges_txt)
        tok = HFTokenizer(models.BPE(vocab, merges, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = [AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>")]
        specials.append(AddedToken("<mask>", lstrip=True, special=True))
        tok.add_special_tokens(specials)
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]), add_prefix_space=False
        )
        return cls(tok, max_length)

    @classmethod
    def from_tokenizer_json(cls, path: str, max_length: int = 77) -> Tokenizer:
        """From a ``tokenizer.json`` (roberta-base's fast tokenizer file)."""

        return cls(HFTokenizer.from_file(path), max_length)

    @classmethod
    def load(cls, folder: str, max_length: int = 77) -> Tokenizer:
        """From a folder with ``tokenizer.json``, or ``vocab.json`` and ``merges.txt``."""
        path = os.path.join(folder, "tokenizer.json")
        if os.path.exists(path):
            return cls.from_tokenizer_json(path, max_length)
        vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
        if os.path.exists(vocab) and os.path.exists(merges):
            return cls.from_files(vocab, merges, max_length)
        raise FileNotFoundError(f"{folder}: neither tokenizer.json nor vocab.json + merges.txt")

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``texts`` -> ``(ids, mask)``, each ``(len(texts), max_length)`` int32."""
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in enc], np.int32).reshape(len(enc), self.max_length)
        mask = np.asarray([e.attention_mask for e in enc], np.int32).reshape(ids.shape)
        return ids, mask


# ----------------------------------------------------------------------------- conversion


def strip_prefixes(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keys as ``CLAP.load_state_dict`` sees them: ``module.`` dropped when the first key
    has it (``factory.load_state_dict``), and ``model.`` when every key has it (a
    ``CLAP_Module`` state dict)."""
    if state and next(iter(state)).startswith("module"):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    return state


def _swin_buffers(config: AudioConfig) -> dict[str, np.ndarray]:
    """The registered buffers of the Swin blocks, as HTSAT builds them."""
    out = {}
    for i, depth in enumerate(config.depths):
        for j in range(depth):
            res, window, shift = block_geometry(config, i, j)
            key = f"audio_branch.layers.{i}.blocks.{j}"
            out[f"{key}.attn.relative_position_index"] = relative_position_index(window)
            if shift:
                out[f"{key}.attn_mask"] = shift_attention_mask(res, res, window, shift)
    return out


def _front_end_buffers(config: AudioConfig) -> dict[str, np.ndarray]:
    """torchlibrosa's frozen parameters: the windowed DFT kernels and Slaney ``melW``."""
    n = config.window_size
    k = np.arange(n // 2 + 1)[:, None]
    t = np.arange(n)[None, :]
    phase = 2.0 * np.pi * ((k * t) % n) / n
    win = hann_window(n)[None, :]
    return {
        "audio_branch.spectrogram_extractor.stft.conv_real.weight": (np.cos(phase) * win)[
            :, None, :
        ].astype(np.float32),
        "audio_branch.spectrogram_extractor.stft.conv_imag.weight": (-np.sin(phase) * win)[
            :, None, :
        ].astype(np.float32),
        "audio_branch.logmel_extractor.melW": slaney_mel_filterbank(
            config.sample_rate, config.window_size, config.mel_bins, config.fmin, config.fmax
        ),
    }


def _map(m: convert._Mapping, config: CLAPConfig) -> None:
    a, t = config.audio, config.text
    p = m.variables["params"]

    def ln(key: str, path: tuple, width: int) -> None:
        w, b = m.get(key + ".weight", (width,)), m.get(key + ".bias", (width,))
        if w is not None and b is not None:
            convert._set(p, path, {"scale": w, "bias": b})

    def conv(key: str, path: tuple, shape: tuple) -> None:
        m.conv(key, path, shape)
        b = m.get(key + ".bias", shape[:1])
        if b is not None:
            convert._set(p, path + ("bias",), b)

    def keep(key: str, shape: tuple) -> None:  # checked, not converted
        m.get(key, shape)

    ab, ap = "audio_branch", ("audio_branch",)
    for key, value in _front_end_buffers(a).items():
        keep(key, value.shape)
    m.bn(f"{ab}.bn0", ap + ("bn0",), a.mel_bins)
    conv(
        f"{ab}.patch_embed.proj",
        ap + ("patch_embed_proj",),
        (a.embed_dim, 1, a.patch_size, a.patch_size),
    )
    ln(f"{ab}.patch_embed.norm", ap + ("patch_embed_norm",), a.embed_dim)
    if config.enable_fusion:
        if config.fusion_type != "aff_2d":
            raise ConversionError(f"fusion_type {config.fusion_type!r}: only 'aff_2d' is mapped")
        conv(
            f"{ab}.patch_embed.mel_conv2d",
            ap + ("patch_embed_mel_conv2d",),
            (a.embed_dim, 1, a.patch_size, 3 * a.patch_size),
        )
        inter = a.embed_dim // config.fusion_reduction
        fm = f"{ab}.patch_embed.fusion_model"
        fp = ap + ("patch_embed_fusion",)
        for branch, first in (("local_att", 0), ("global_att", 1)):
            conv(f"{fm}.{branch}.{first}", fp + (f"{branch}_{first}",), (inter, a.embed_dim, 1, 1))
            m.bn(f"{fm}.{branch}.{first + 1}", fp + (f"{branch}_{first + 1}",), inter)
            conv(
                f"{fm}.{branch}.{first + 3}",
                fp + (f"{branch}_{first + 3}",),
                (a.embed_dim, inter, 1, 1),
            )
            m.bn(f"{fm}.{branch}.{first + 4}", fp + (f"{branch}_{first + 4}",), a.embed_dim)
    if a.ape:
        pos = m.get(f"{ab}.absolute_pos_embed", (1, a.grid**2, a.embed_dim))
        if pos is not None:
            p.setdefault("audio_branch", {})["absolute_pos_embed"] = pos
    for key, value in _swin_buffers(a).items():
        keep(key, value.shape)
    for i, depth in enumerate(a.depths):
        dim = a.embed_dim * 2**i
        hidden = int(dim * a.mlp_ratio)
        for j in range(depth):
            _, window, _ = block_geometry(a, i, j)
            key, path = f"{ab}.layers.{i}.blocks.{j}", ap + (f"layers_{i}_blocks_{j}",)
            ln(f"{key}.norm1", path + ("norm1",), dim)
            table = m.get(
                f"{key}.attn.relative_position_bias_table",
                ((2 * window - 1) ** 2, a.num_heads[i]),
            )
            if table is not None:
                convert._set(p, path + ("attn", "relative_position_bias_table"), table)
            m.dense(f"{key}.attn.qkv", path + ("attn", "qkv"), (3 * dim, dim))
            m.dense(f"{key}.attn.proj", path + ("attn", "proj"), (dim, dim))
            ln(f"{key}.norm2", path + ("norm2",), dim)
            m.dense(f"{key}.mlp.fc1", path + ("fc1",), (hidden, dim))
            m.dense(f"{key}.mlp.fc2", path + ("fc2",), (dim, hidden))
        if i < len(a.depths) - 1:
            key, path = f"{ab}.layers.{i}.downsample", ap + (f"layers_{i}_downsample",)
            ln(f"{key}.norm", path + ("norm",), 4 * dim)
            w = m.get(f"{key}.reduction.weight", (2 * dim, 4 * dim))
            if w is not None:
                convert._set(p, path + ("reduction", "kernel"), np.ascontiguousarray(w.T))
    ln(f"{ab}.norm", ap + ("norm",), a.num_features)
    sf = a.grid // 2 ** (len(a.depths) - 1) // a.freq_ratio
    conv(f"{ab}.tscam_conv", ap + ("tscam_conv",), (a.class_num, a.num_features, sf, 3))
    keep(f"{ab}.head.weight", (a.class_num, a.class_num))  # unused by forward()
    keep(f"{ab}.head.bias", (a.class_num,))

    tb, tp = "text_branch", ("text_branch",)
    for name, rows in (
        ("word_embeddings", t.vocab_size),
        ("position_embeddings", t.max_positions),
        ("token_type_embeddings", t.type_vocab_size),
    ):
        w = m.get(f"{tb}.embeddings.{name}.weight", (rows, t.hidden))
        if w is not None:
            convert._set(p, tp + (name, "embedding"), w)
    ln(f"{tb}.embeddings.LayerNorm", tp + ("embeddings_norm",), t.hidden)
    m.used.add(f"{tb}.embeddings.position_ids")  # saved by transformers < 4.31; not needed
    m.used.add(f"{tb}.embeddings.token_type_ids")
    for i in range(t.layers):
        key, path = f"{tb}.encoder.layer.{i}", tp + (f"layer_{i}",)
        for name in ("query", "key", "value"):
            m.dense(f"{key}.attention.self.{name}", path + (name,), (t.hidden, t.hidden))
        m.dense(f"{key}.attention.output.dense", path + ("attention_output",), (t.hidden, t.hidden))
        ln(f"{key}.attention.output.LayerNorm", path + ("attention_norm",), t.hidden)
        m.dense(f"{key}.intermediate.dense", path + ("intermediate",), (t.intermediate, t.hidden))
        m.dense(f"{key}.output.dense", path + ("output",), (t.hidden, t.intermediate))
        ln(f"{key}.output.LayerNorm", path + ("output_norm",), t.hidden)
    m.dense(f"{tb}.pooler.dense", tp + ("pooler",), (t.hidden, t.hidden))

    j = config.joint_embed
    for tower, width in (("audio", a.num_features), ("text", t.hidden)):
        m.dense(f"{tower}_projection.0", (f"{tower}_projection", "linear1"), (j, width))
        m.dense(f"{tower}_projection.2", (f"{tower}_projection", "linear2"), (j, j))
        for k in (0, 3):  # MLPLayers audio_transform / text_transform: training only
            keep(f"{tower}_transform.sequential.{k}.weight", (j, j))
            keep(f"{tower}_transform.sequential.{k}.bias", (j,))
    for name in ("logit_scale_a", "logit_scale_t"):
        v = m.get(name, ())
        if v is not None:
            p[name] = np.asarray(v, np.float32).reshape(())


def _check_buffers(state: dict, config: CLAPConfig, source: str) -> None:
    """The checkpoint's fixed buffers that the model uses must be the ones this module
    computes (the fusion model's front end is torchaudio's, not torchlibrosa's buffers)."""
    expected = dict(_swin_buffers(config.audio))
    if not config.enable_fusion:
        expected.update(_front_end_buffers(config.audio))
    for key, want in expected.items():
        got = np.asarray(state[key])
        if np.issubdtype(want.dtype, np.integer):
            ok = np.array_equal(got, want)
        else:
            ok = np.allclose(got, want, rtol=0, atol=1e-5 * float(np.max(np.abs(want))))
        if not ok:
            raise ConversionError(
                f"{source}: {key} differs from the front end / Swin geometry computed here "
                f"(max difference {np.max(np.abs(got.astype(np.float64) - want)):.3g})"
            )


def variables_from_state_dict(
    state: dict[str, np.ndarray], config: CLAPConfig = CLAP_TINY_FUSION, source: str = "state dict"
) -> dict:
    """A ``laion_clap`` checkpoint's state dict (``read_pth(...)``: ``module.``-prefixed
    keys; or a ``CLAP`` / ``CLAP_Module`` state dict) -> :class:`CLAP` variables
    ``{'params', 'batch_stats'}`` as numpy arrays.

    Every key of ``config``'s model must be present with its shape and no other key may
    be (``ConversionError`` names missing, mis-shaped and unexpected keys); the fixed
    buffers (relative position indices, shift masks; without fusion also torchlibrosa's
    DFT kernels and ``melW``) must equal the ones computed here. ``num_batches_tracked``, ``text_branch.embeddings.position_ids``
    are accepted and dropped; ``head``, ``audio_transform``, ``text_transform`` are
    checked and dropped (unused at inference).
    """
    state = strip_prefixes(dict(state))
    m = convert._Mapping(state, source, "laion_clap CLAP", ignore_prefixes=())
    _map(m, config)
    variables = m.check()
    _check_buffers(state, config, source)
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), variables)


def variables_from_checkpoint(path: str, config: CLAPConfig = CLAP_TINY_FUSION) -> dict:
    """A ``laion_clap`` ``.pt`` checkpoint (e.g. ``630k-fusion-best.pt``) -> variables,
    read without torch (:func:`coleaf_jax.features.convert.read_pth`)."""
    return variables_from_state_dict(convert.read_pth(path), config, source=os.fspath(path))


def checkpoint_shapes(config: CLAPConfig = CLAP_TINY_FUSION) -> dict[str, tuple]:
    """``{key: shape}`` of every state-dict key the converter requires (prefix-free, as in
    ``CLAP.state_dict()``), plus the ``num_batches_tracked`` counters (shape ``()``)."""
    m = convert._Mapping({}, "", "")
    _map(m, config)
    shapes = dict(m.expected_shapes)
    for key in m.used:
        if key.endswith(".num_batches_tracked"):
            shapes[key] = ()
    return shapes
