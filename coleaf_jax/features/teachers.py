"""Video files -> VALOR's CLIP and CLAP features and segment pseudo-labels (docs/features.md).

``python -m coleaf_jax.features VIDEOS --out ROOT --weights W --features valor --labels
CSV...`` runs :class:`Teachers` on each video and writes, per video ``<id>``:

* ``ROOT/CLIP/features/<id>.npy`` ``(10, 768)`` float32 and
  ``ROOT/CLAP/features/<id>.npy`` ``(64, 768)`` float32 (VALOR's feature files);
* ``ROOT/CLIP/segment_pseudo_labels/<id>.npy`` and
  ``ROOT/CLAP/segment_pseudo_labels/<id>.npy`` ``(10, 25)`` int64 0/1 (what
  ``configs/llp_pseudo.py`` trains on);
* ``ROOT/{CLIP,CLAP}/segment_logits/<id>.npy`` ``(10, 25)`` float32: the prompt logits
  behind the labels (not written by VALOR; kept so other thresholds need no new run).

The weights folder holds (nothing is downloaded; a missing file is an error naming it):

* ``clip-vit-large-patch14/``: huggingface.co/openai/clip-vit-large-patch14's
  ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``) and its tokenizer
  (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``);
* ``630k-fusion-best.pt``: LAION-CLAP's checkpoint (huggingface.co/lukewys/laion_clap),
  converted on first use to ``clap/`` (``python -m coleaf_jax.features.convert W``);
* ``roberta-base/``: huggingface.co/FacebookAI/roberta-base's ``tokenizer.json`` (or
  ``vocab.json`` + ``merges.txt``): CLAP's text tokenizer.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax import progress as progress_lib
from coleaf_jax.data.classes import LLP_CLASSES, LLP_NUM_SEGMENTS, LLP_SPLIT_CSV
from coleaf_jax.data.llp_annotations import read_weak_csv
from coleaf_jax.data.llp_annotations import video_id as annotation_video_id
from coleaf_jax.features import clap, clip, decode, extract, valor, weights
from coleaf_jax.features.convert import ConversionError

CLIP_FOLDER = "clip-vit-large-patch14"
CLIP_URL = "https://huggingface.co/openai/clip-vit-large-patch14"
ROBERTA_FOLDER = "roberta-base"
ROBERTA_URL = "https://huggingface.co/FacebookAI/roberta-base"
TEACHER_FOLDERS = ("CLIP", "CLAP")
# 10 segments of at most laion_clap's 10 s (longer is its ``longer`` path, not VALOR's):
# the teachers' own limit, below the length cap of every video path (--max-seconds,
# decode.DEFAULT_MAX_SECONDS); decoding for them stops at the lower of the two.
MAX_SECONDS = LLP_NUM_SEGMENTS * valor.CLAP_SAMPLES / valor.SAMPLE_RATE
OUTPUTS = ("features", "segment_pseudo_labels", "segment_logits")


def _missing(what: str, path: str, url: str, files: str) -> weights.MissingWeightsError:
    return weights.MissingWeightsError(
        f"{path}: {what} not found. Download {files} from {url} into {path}"
    )


def _recorded_config(folder: str, name: str) -> dict:
    record = weights.provenance(folder, name)
    if "config" not in record:
        raise weights.MissingWeightsError(
            f"{weights.converted_path(folder, name)}.json: no model configuration recorded "
            f"beside the converted {name} weights; convert again: python -m "
            f"coleaf_jax.features.convert {os.path.abspath(folder)} --force"
        )
    return record["config"]


def load_clip(folder: str, verbose: bool = True) -> tuple[clip.CLIPConfig, dict, clip.Tokenizer]:
    """CLIP's config, variables (converted on first use from
    ``folder/clip-vit-large-patch14``'s checkpoint) and tokenizer (same folder)."""
    variables = weights.load(folder, "clip", verbose=verbose)
    config = clip.config_from_dict(_recorded_config(folder, "clip"))
    path = os.path.join(folder, CLIP_FOLDER)
    try:
        tokenizer = clip.Tokenizer(path, context_length=config.text.context_length)
    except (FileNotFoundError, ConversionError) as e:
        raise _missing(
            f"CLIP's tokenizer files ({' '.join(str(e).split())[:200]})",
            path,
            CLIP_URL,
            "tokenizer.json (or vocab.json and merges.txt)",
        ) from e
    return config, variables, tokenizer


def load_clap(folder: str, verbose: bool = True) -> tuple[clap.CLAPConfig, dict, clap.Tokenizer]:
    """CLAP's config, variables (converted from ``630k-fusion-best.pt`` on first use) and
    RoBERTa tokenizer (``folder/roberta-base``)."""
    variables = weights.load(folder, "clap", verbose=verbose)
    config = clap.config_from_dict(_recorded_config(folder, "clap"))
    path = os.path.join(folder, ROBERTA_FOLDER)
    if not os.path.isdir(path):
        raise _missing(
            "RoBERTa's tokenizer (CLAP's text)",
            path,
            ROBERTA_URL,
            "tokenizer.json (or vocab.json and merges.txt)",
        )
    try:
        tokenizer = clap.Tokenizer.load(path, max_length=config.text.context_length)
    except (FileNotFoundError, ConversionError) as e:
        raise _missing(
            f"RoBERTa's tokenizer files ({e})", path, ROBERTA_URL, "tokenizer.json"
        ) from e
    return config, variables, tokenizer


@dataclasses.dataclass
class TeacherOutputs:
    """One video's outputs; ``S`` segments (10 for LLP), ``C = 25`` classes."""

    clip_features: np.ndarray  # (S, E) normalised projected image embeddings
    clip_logits: np.ndarray  # (S, C)
    clip_labels: np.ndarray  # (S, C) int64
    clap_features: np.ndarray  # (64, F) HTSAT's regrouped last tokens of the whole clip
    clap_logits: np.ndarray  # (S, C)
    clap_labels: np.ndarray  # (S, C) int64
    warnings: list[str] = dataclasses.field(default_factory=list)  # prepare()'s, one line each

    def files(self) -> dict[str, np.ndarray]:
        """``{'CLIP/features': ..., 'CLAP/segment_pseudo_labels': ..., ...}``."""
        out = {}
        for teacher in ("clip", "clap"):
            for name, field in zip(OUTPUTS, ("features", "labels", "logits")):
                out[f"{teacher.upper()}/{name}"] = getattr(self, f"{teacher}_{field}")
        return out


class Teachers:
    """VALOR's two teachers, loaded once (prompt embeddings included).

    ``precision``: matmul precision of both networks (``'highest'``: float32 as the
    references). Call with a video's 8-fps frames, its 48 kHz mono audio and its weak
    label (:meth:`__call__`), or a path (:meth:`video`).
    """

    def __init__(self, weights_folder: str, precision: str = "highest", verbose: bool = True):
        self.precision = precision
        self.clip_config, clip_variables, clip_tokenizer = load_clip(weights_folder, verbose)
        self.clip_variables = jax.device_put(clip_variables)  # once, not at every call
        ids = clip_tokenizer(valor.CLIP_PROMPTS)
        text = clip.text_embeddings(self.clip_variables, ids, self.clip_config, precision=precision)
        self.clip_prompts = np.asarray(clip.normalize(text))
        self.clip_scale = float(self.clip_variables["params"]["logit_scale"])
        self.clap_config, clap_variables, clap_tokenizer = load_clap(weights_folder, verbose)
        self.clap_variables = jax.device_put(clap_variables)
        ids, mask = clap_tokenizer(list(valor.CLAP_PROMPTS))
        self.clap_prompts = np.asarray(
            clap.text_embeddings(
                self.clap_variables, ids, mask, self.clap_config, precision=precision
            )
        )
        self.clap_scale = float(self.clap_variables["params"]["logit_scale_a"])

    def __call__(self, frames: list[np.ndarray], audio: np.ndarray, label: np.ndarray):
        """``frames``: the video's ``K`` 8-fps frames, ``(H, W, 3)`` uint8 each; ``audio``:
        ``(N,)`` float32 mono at 48 kHz; ``label``: ``(25,)`` its weak label. Returns
        :class:`TeacherOutputs` for ``S = 10`` segments (VALOR's, whatever the length)."""
        picked = np.stack([frames[i] for i in valor.frame_indices(len(frames))])
        pixels = valor.clip_pixels(picked, self.clip_config.vision.image_size)
        image = clip.image_embeddings(
            self.clip_variables, pixels, self.clip_config, precision=self.precision
        )
        clip_features = np.asarray(clip.normalize(image), np.float32)
        clip_logits = valor.logits(clip_features, self.clip_prompts, self.clip_scale)

        samples = self.clap_config.audio.clip_samples
        bounds = valor.segment_bounds(len(audio))
        segments = np.stack([audio[a:b] for a, b in bounds])  # (10, N // 10), equal lengths
        if segments.shape[1] > samples:
            raise ValueError(
                f"{len(audio) / valor.SAMPLE_RATE:.1f} s of audio: VALOR's teachers take clips "
                f"of at most {MAX_SECONDS:.0f} s (LLP's are 10 s)"
            )
        segments = clap.repeat_pad(jnp.asarray(clap.quantize_int16(segments)), samples)
        whole = clap.quantize_int16(valor.nearest_resample(audio, samples))[None]
        out = clap.audio_outputs(
            self.clap_variables,
            jnp.concatenate([segments, jnp.asarray(whole)]),
            self.clap_config,
            self.precision,
        )
        projected = np.asarray(out["projected"][:-1], np.float32)
        clap_logits = valor.logits(projected, self.clap_prompts, self.clap_scale)
        return TeacherOutputs(
            clip_features=clip_features,
            clip_logits=clip_logits,
            clip_labels=valor.pseudo_labels(clip_logits, label, valor.CLIP_THRESHOLDS),
            clap_features=np.asarray(out["feat_maps"][-1], np.float32),
            clap_logits=clap_logits,
            clap_labels=valor.pseudo_labels(clap_logits, label, valor.CLAP_THRESHOLDS),
        )

    def video(
        self,
        path: str,
        label: np.ndarray,
        jpeg: bool = True,
        max_seconds: float = decode.DEFAULT_MAX_SECONDS,
    ) -> TeacherOutputs:
        """Decodes ``path`` (:func:`prepare`) and runs :meth:`__call__`."""
        warnings: list[str] = []
        outputs = self(*prepare(path, jpeg, max_seconds, warnings)[:2], label)
        outputs.warnings = warnings
        return outputs

    def many(
        self,
        paths: list[str],
        labels: list[np.ndarray],
        progress: bool = True,
        workers: int = 1,
        jpeg: bool = True,
        max_seconds: float = decode.DEFAULT_MAX_SECONDS,
    ) -> Iterator[tuple[str, TeacherOutputs]]:
        """``(path, outputs)`` for ``paths`` (weak labels ``labels``) in order; ``workers``
        threads decode the next videos while the networks run. A bar on a terminal, one
        line per video otherwise; a video's warnings (:func:`prepare`) as ``warning: ...``
        lines on stderr, and in ``outputs.warnings``."""

        def decoded_with_warnings(path: str):
            warnings: list[str] = []
            return (*prepare(path, jpeg, max_seconds, warnings), warnings)

        decoded = extract.prefetched(decoded_with_warnings, paths, max(1, workers))
        bar = progress_lib.bar(decoded, total=len(paths), desc="CLIP/CLAP", enabled=progress)
        for i, ((frames, audio, decode_s, warnings), path, label) in enumerate(
            zip(bar, paths, labels), start=1
        ):
            extract.print_warnings(warnings)
            t0 = time.perf_counter()
            outputs = self(frames, audio, label)
            outputs.warnings = warnings
            if progress and bar.disable:  # asked for progress, but not on a terminal
                print(
                    f"[{i}/{len(paths)}] {path}: CLIP/CLAP, decoded in {decode_s:.1f} s, "
                    f"networks {time.perf_counter() - t0:.1f} s; pseudo-labels: "
                    f"{int(outputs.clap_labels.sum())} audio, "
                    f"{int(outputs.clip_labels.sum())} visual segment-classes",
                    file=sys.stderr,
                    flush=True,
                )
            yield path, outputs
        bar.close()


def prepare(
    path: str,
    jpeg: bool = True,
    max_seconds: float = decode.DEFAULT_MAX_SECONDS,
    warnings: list[str] | None = None,
) -> tuple[list[np.ndarray], np.ndarray, float]:
    """``(frames, audio, seconds)``: the 8-fps frames of ``path`` (through the JPEG round
    trip of VALOR's ``ffmpeg -r 8`` frames unless ``jpeg=False``), its 48 kHz mono audio
    and the seconds decoding took. Decoding stops at the lower of ``max_seconds`` and
    :data:`MAX_SECONDS` (:class:`decode.TooLongError`). VALOR takes what the streams hold
    (10 segments of the decoded audio, 10 of the decoded frames); a file holding less
    than its header declares, and skipped packets, are appended to ``warnings`` (one
    line each, naming the file)."""
    t0 = time.perf_counter()
    cap = min(decode.check_max_seconds(max_seconds), MAX_SECONDS)
    try:
        video = decode.decode(path, audio=False, jpeg=jpeg, max_seconds=cap)
        notes = list(video.stream_warnings)
        audio = decode.decode_audio_mono(path, valor.SAMPLE_RATE, max_seconds=cap, warnings=notes)
    except decode.TooLongError as e:
        if cap < max_seconds:  # VALOR's limit, not the one --max-seconds sets
            raise too_long(path, e.seconds, e.declared) from None
        raise
    measured = max(video.video_seconds, len(audio) / valor.SAMPLE_RATE)
    _, note = decode.resolve_duration(path, video.declared_duration, measured)
    if warnings is not None:
        warnings += notes + ([note] if note else [])
    return video.frames, audio, time.perf_counter() - t0


def too_long(path: str, seconds: float, declared: bool = True) -> decode.TooLongError:
    """A video longer than VALOR's teachers take (:data:`MAX_SECONDS`), naming it."""
    limit = f"VALOR's teachers take ({MAX_SECONDS:.0f} s at most; LLP's clips are 10 s)"
    return decode.TooLongError(
        decode.too_long_message(path, seconds, declared, limit), seconds, declared
    )


def read_labels(paths: list[str]) -> dict[str, np.ndarray]:
    """Weak labels by video id (first 11 characters of ``filename``) from LLP-format CSVs
    (``filename<TAB>event_labels``); a folder stands for the ``AVVP_{train,val_pd,test_pd}.csv``
    in it. A video listed twice with different labels is an error naming both files."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = [os.path.join(p, f) for f in LLP_SPLIT_CSV.values()]
            found = [f for f in found if os.path.isfile(f)]
            if not found:
                raise ValueError(
                    f"{p}: no weak-label CSV there (expected {', '.join(LLP_SPLIT_CSV.values())})"
                )
            files += found
        elif not os.path.isfile(p):
            raise ValueError(f"{p}: no such label file")
        else:
            files.append(p)
    labels: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for path in files:
        names, rows = read_weak_csv(path)
        for name, row in zip(names, rows):
            vid = annotation_video_id(name)
            if vid in labels and not np.array_equal(labels[vid], row):
                raise ValueError(f"video {vid!r} has different labels in {source[vid]} and {path}")
            labels[vid], source[vid] = row, path
    return labels


def label_names(label: np.ndarray) -> list[str]:
    """The class names of a ``(25,)`` weak label (what the manifest records)."""
    return [LLP_CLASSES[i] for i in np.flatnonzero(np.asarray(label) > 0)]


def labels_of(video_ids: list[str], labels: dict[str, np.ndarray], where) -> list[np.ndarray]:
    """The weak label of each video (by its id, or the id's first 11 characters); a video
    without one is an error (VALOR's pseudo-labels keep only its labelled classes).
    ``where``: the label files (named in the error)."""
    where = " ".join(where) if isinstance(where, (list, tuple)) else where
    out, missing = [], []
    for vid in video_ids:
        label = labels.get(vid, labels.get(annotation_video_id(vid)))
        if label is None:
            missing.append(vid)
        out.append(label)
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(video_ids)} videos have no row in {where} (first: "
            f"{', '.join(missing[:3])}); VALOR's pseudo-labels need each video's weak label "
            f"(--labels)"
        )
    return out


def write(outputs: TeacherOutputs, root: str, video_id: str) -> list[str]:
    """Writes ``ROOT/{CLIP,CLAP}/{features,segment_pseudo_labels,segment_logits}/<id>.npy``."""
    paths = []
    for folder, array in outputs.files().items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        path = os.path.join(root, folder, video_id + ".npy")
        extract.save_npy(path, array)  # whole or not at all
        paths.append(path)
    return paths


def output_paths(root: str, video_id: str) -> list[str]:
    return [
        os.path.join(root, teacher, name, video_id + ".npy")
        for teacher in TEACHER_FOLDERS
        for name in OUTPUTS
    ]
