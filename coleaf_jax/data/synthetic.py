"""An embedded synthetic dataset in the exact LLP layout, with planted events.

    python -m coleaf_jax.data.synthetic OUT [--videos N --seed S]

writes ``OUT/{vggish,res152,r2plus1d_18}/<id>.npy``, the five LLP CSVs and
VALOR-style segment pseudo-labels ``OUT/{CLAP,CLIP}/segment_pseudo_labels/<id>.npy``
from a simulated imperfect teacher (``TeacherConfig``), so
every part of the project (data layer, training, metrics, demo) runs without a
download. What makes it a fair test of weakly supervised AVVP (each property a
knob of ``SyntheticConfig``; docs/synthetic.md says what the set can and cannot show):

* **LLP's label structure, measured.** Class frequencies, labels per video, each
  class's share of audible-only, visible-only and audible-visible videos, event
  lengths per kind of event, events per class and the audio-visual overlap are
  LLP's, measured from its released annotation CSVs (``measure_llp``; e.g. speech
  is heard only in 76 % of the videos it labels, a third of the sounds and half of
  the sights last the whole clip). Training sees only the video-level union, so
  a weak label often names a class present in one modality only: the label noise
  JoMoLD removes.
* **Features from latent event codes through a fixed random non-linear map.** Per
  modality, every class has a code; a segment's latent state is the sum of its
  active events' codes, background events of 20 classes outside the 25 (never
  labelled), a per-video scene vector and noise, whose level differs between the
  modalities. Each feature space (VGGish, ResNet-152 per frame, post-ReLU;
  R(2+1)D) maps the state through its own random ``tanh`` layer: events do not
  add up in feature space, and a linear read-out of video means does not recover
  them. Similar classes (violin/cello, car/motorcycle, ...) share part of their code.
* **Co-occurrence.** Classes come in realistic groups (speech with almost anything,
  cheering with clapping, singing with instruments, babies together).

Validation and test videos get dense audio/visual truth; training videos weak
labels only. Nothing here reads ``shared/``: the measured values are constants.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import re
import sys
import time

import numpy as np

from coleaf_jax import fileio
from coleaf_jax.data import unav100
from coleaf_jax.data.classes import (
    LLP_CLASSES,
    LLP_DENSE_CSV,
    LLP_FEATURES,
    LLP_FRAMES_PER_SEGMENT,
    LLP_NUM_SEGMENTS,
    LLP_SPLIT_CSV,
)
from coleaf_jax.data.llp import PSEUDO_LABEL_FOLDERS
from coleaf_jax.training import workdir

C = len(LLP_CLASSES)
T = LLP_NUM_SEGMENTS

# The defaults below are measured from LLP's released annotation CSVs (``measure_llp``
# on AVVP_{train,val_pd,test_pd,eval_audio,eval_visual}.csv, rounded to 3 decimals;
# tests/test_synthetic.py recomputes them where the CSVs are at hand).

# Of the val/test videos labelled with a class, the share that only hears it
# (audible-only) and only sees it (visible-only); the rest both hears and sees it.
AUDIBLE_ONLY_RATE = np.array(
    [0.76, 0.015, 0.561, 0.077, 0.035, 0.062, 0.049, 0.167, 0.022, 0.189, 0.178, 0.306, 0.071]
    + [0.168, 0.061, 0.219, 0.259, 0.068, 0.049, 0.087, 0.084, 0.421, 0.169, 0.0, 0.403]
)
VISIBLE_ONLY_RATE = np.array(
    [0.002, 0.201, 0.038, 0.124, 0.263, 0.015, 0.173, 0.0, 0.0, 0.041, 0.044, 0.004, 0.051]
    + [0.026, 0.01, 0.0, 0.012, 0.023, 0.085, 0.019, 0.103, 0.0, 0.013, 0.018, 0.047]
)
# Each class's share of the training weak labels (speech: 31 %).
CLASS_FREQUENCY = np.array(
    [0.311, 0.039, 0.033, 0.047, 0.012, 0.021, 0.028, 0.014, 0.019, 0.037, 0.012, 0.073, 0.027]
    + [0.091, 0.031, 0.009, 0.028, 0.014, 0.026, 0.037, 0.031, 0.006, 0.027, 0.018, 0.01]
)
# Videos with 1, 2, 3, 4+ weak labels: training, and the densely annotated val/test.
LABELS_PER_VIDEO = np.array([0.403, 0.588, 0.009, 0.0])
LABELS_PER_VIDEO_EVAL = np.array([0.333, 0.55, 0.094, 0.023])
# Share of events lasting 1, 2, ..., 10 seconds: the sounds of classes only heard, the
# sounds and the sights of classes heard and seen, the sights of classes only seen.
DURATION_AUDIBLE_ONLY = np.array(
    [0.245, 0.193, 0.121, 0.088, 0.057, 0.034, 0.038, 0.031, 0.021, 0.173]
)
DURATION_AV_AUDIO = np.array([0.128, 0.097, 0.09, 0.073, 0.044, 0.042, 0.04, 0.031, 0.034, 0.421])
DURATION_AV_VISUAL = np.array(
    [0.089, 0.082, 0.068, 0.058, 0.035, 0.039, 0.029, 0.029, 0.019, 0.552]
)
DURATION_VISIBLE_ONLY = np.array(
    [0.101, 0.06, 0.077, 0.048, 0.03, 0.065, 0.042, 0.036, 0.012, 0.53]
)
# ...and over all events of a modality (what the four above add up to).
DURATION_AUDIO = np.array([0.174, 0.135, 0.102, 0.079, 0.049, 0.039, 0.039, 0.031, 0.029, 0.324])
DURATION_VISUAL = np.array([0.09, 0.081, 0.068, 0.058, 0.035, 0.041, 0.03, 0.029, 0.019, 0.55])
# Events per (video, class) present, per modality: a class may sound twice in a clip.
EVENTS_AUDIO = 1.266
EVENTS_VISUAL = 1.129
# Of the classes heard and seen: the share heard exactly where seen, and the mean
# intersection over union of their audio and visual segments.
AV_SAME_EXTENT = 0.603
AV_IOU = 0.827

_GROUPS = (
    ("Cheering", "Clapping", "Speech"),
    ("Singing", "Acoustic_guitar", "Banjo", "Violin_fiddle", "Cello", "Accordion"),
    ("Baby_laughter", "Baby_cry_infant_cry", "Speech"),
    ("Car", "Motorcycle", "Helicopter", "Speech"),
    ("Dog", "Cat", "Chicken_rooster", "Speech"),
    ("Frying_(food)", "Blender", "Speech"),
    ("Lawn_mower", "Chainsaw", "Speech"),
    ("Basketball_bounce", "Cheering", "Speech"),
    ("Vacuum_cleaner", "Telephone_bell_ringing", "Speech"),
)
# Pairs whose event codes resemble each other (a shared component).
_SIMILAR = (
    ("Violin_fiddle", "Cello"),
    ("Car", "Motorcycle"),
    ("Lawn_mower", "Chainsaw"),
    ("Baby_laughter", "Baby_cry_infant_cry"),
    ("Banjo", "Acoustic_guitar"),
    ("Cheering", "Clapping"),
    ("Vacuum_cleaner", "Blender"),
)
COMPLETE_MARKER = ".complete"  # written last: the folder holds a whole dataset
_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))


def _cooccurrence() -> np.ndarray:
    """(C, C) probabilities of the next label given a present one (realistic groups;
    ``sample_videos`` weights them by ``CLASS_FREQUENCY``, so speech joins most)."""
    idx = {n: i for i, n in enumerate(LLP_CLASSES)}
    w = np.full((C, C), 0.05)
    for group in _GROUPS:
        for a in group:
            for b in group:
                w[idx[a], idx[b]] += 1.0
    np.fill_diagonal(w, 0.0)
    return w / w.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator. The label structure defaults to LLP's, as measured
    (``measure_llp``); the feature knobs say how hard recognition is (no LLP value
    exists for them: chosen so that the real task's order of methods shows,
    docs/synthetic.md)."""

    num_videos: int = 1000
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    # Features: a segment's latent state (the codes of its active events, background
    # events, a per-video scene, noise) through a fixed random non-linear map.
    latent_dim: int = 64  # width of the event codes
    hidden_dim: int = 256  # width of the fixed random map's hidden layer
    signal: float = 1.0  # amplitude of an event's code
    # Per-segment latent noise std of the audio and of the visual stream (they differ;
    # an event's code has std 1 per dimension): recognising a class from one segment
    # is hard, from the segments an event spans, and from both streams, easier.
    noise_audio: float = 1.6
    noise_visual: float = 2.0
    scene: float = 0.5  # per-video nuisance latent
    similar_share: float = 0.5  # share of its code a similar pair has in common
    # Background sounds and objects outside the 25 classes: events of their own codes,
    # never labelled; a Poisson number of them per video and modality.
    distractor_classes: int = 20
    distractors_per_video: float = 1.0
    # Label structure (LLP's, measured).
    events_audio: float = EVENTS_AUDIO
    events_visual: float = EVENTS_VISUAL
    av_same_extent: float = AV_SAME_EXTENT
    # The simulated CLAP/CLIP teacher of the pseudo-label folders (TeacherConfig).
    teacher_miss: float = 0.2
    teacher_jitter: float = 0.3
    teacher_false_alarm: float = 0.3


@dataclasses.dataclass
class Video:
    """One generated video: weak label and dense truth ``(T, C)`` per modality."""

    filename: str
    audio: np.ndarray
    visual: np.ndarray

    @property
    def video_id(self) -> str:
        return self.filename[:11]

    @property
    def labels(self) -> np.ndarray:
        return self.audio.any(0) | self.visual.any(0)


def _random_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        vid = "".join(rng.choice(_ID_ALPHABET, 11))
        if vid not in taken:
            taken.add(vid)
            return vid


def _span(rng: np.random.Generator, durations: np.ndarray) -> tuple[int, int]:
    """An event's [onset, offset): its length drawn from ``durations`` (share of 1..T s),
    placed uniformly in the clip."""
    length = int(rng.choice(T, p=durations / durations.sum())) + 1
    onset = int(rng.integers(0, T - length + 1))
    return onset, onset + length


def _place(rng, track: np.ndarray, c: int, durations: np.ndarray, rate: float) -> None:
    """Marks 1 + Poisson(rate - 1) events of class ``c`` in one modality's track, apart
    from each other (an event that would touch another is drawn again, up to 10 times,
    so that each stays one event of its drawn length)."""
    for _ in range(1 + int(rng.poisson(max(rate - 1.0, 0.0)))):
        for _attempt in range(10):
            on, off = _span(rng, durations)
            if not track[max(on - 1, 0) : off + 1, c].any():
                track[on:off, c] = True
                break


def sample_videos(
    cfg: SyntheticConfig, num: int, rng: np.random.Generator, dense_split: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Samples dense truth for ``num`` videos; returns ``[(audio (T,C), visual (T,C))]``.

    Each labelled class is audible-only, visible-only or both with its LLP rates; each
    modality's events are placed on their own (lengths from that modality's LLP
    histogram, 1.27 sound events and 1.13 seen events per class present). A class
    both heard and seen is heard exactly where it is seen in ``cfg.av_same_extent``
    of the cases, as in LLP, else its sound is placed on its own. Event lengths come
    from LLP's histogram for the event's kind (a sound only heard, a sound or sight
    of a class heard and seen, a sight only seen).
    """
    co = _cooccurrence()
    freq = CLASS_FREQUENCY / CLASS_FREQUENCY.sum()
    counts_p = LABELS_PER_VIDEO_EVAL if dense_split else LABELS_PER_VIDEO
    out = []
    for _ in range(num):
        n_labels = int(rng.choice(len(counts_p), p=counts_p / counts_p.sum())) + 1
        classes = [int(rng.choice(C, p=freq))]
        while len(classes) < n_labels:
            p = co[classes].mean(axis=0) * freq
            p[classes] = 0.0
            classes.append(int(rng.choice(C, p=p / p.sum())))
        audio = np.zeros((T, C), bool)
        visual = np.zeros((T, C), bool)
        for c in classes:
            u = rng.random()
            heard = u >= VISIBLE_ONLY_RATE[c]
            seen = u < VISIBLE_ONLY_RATE[c] or u >= VISIBLE_ONLY_RATE[c] + AUDIBLE_ONLY_RATE[c]
            if heard and seen:
                _place(rng, visual, c, DURATION_AV_VISUAL, cfg.events_visual)
                if rng.random() < cfg.av_same_extent:
                    audio[:, c] = visual[:, c]  # heard exactly where seen
                else:
                    _place(rng, audio, c, DURATION_AV_AUDIO, cfg.events_audio)
            elif heard:
                _place(rng, audio, c, DURATION_AUDIBLE_ONLY, cfg.events_audio)
            else:
                _place(rng, visual, c, DURATION_VISIBLE_ONLY, cfg.events_visual)
        out.append((audio, visual))
    return out


class FeatureSynth:
    """Event codes, the fixed random non-linear maps and the feature renderer.

    Per modality, each class and each distractor has a code in ``R^latent_dim``
    (similar classes share part of theirs). A segment's latent state is the sum of
    its active events' codes, a per-video scene vector and noise (its level per
    modality). Each feature space (VGGish from the audio state; ResNet-152 per frame
    and R(2+1)D from the visual one) is ``W2 · tanh(W1 · z + b1)`` with its own fixed
    random ``W1, b1, W2``: events do not add up in feature space, and a linear read-out
    of video-mean features does not recover them.
    """

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator):
        self.cfg = cfg
        idx = {n: i for i, n in enumerate(LLP_CLASSES)}
        k, h = cfg.latent_dim, cfg.hidden_dim
        self.codes, self.distractor_codes, self.maps = {}, {}, {}
        for modality in ("audio", "visual"):
            codes = rng.standard_normal((C, k))
            for a, b in _SIMILAR:
                shared = rng.standard_normal(k)
                s = cfg.similar_share
                codes[idx[a]] = np.sqrt(1 - s) * codes[idx[a]] + np.sqrt(s) * shared
                codes[idx[b]] = np.sqrt(1 - s) * codes[idx[b]] + np.sqrt(s) * shared
            self.codes[modality] = codes
            self.distractor_codes[modality] = rng.standard_normal((cfg.distractor_classes, k))
        for name, (_, dim) in LLP_FEATURES.items():
            self.maps[name] = (
                rng.standard_normal((k, h)),
                0.5 * rng.standard_normal(h),
                rng.standard_normal((h, dim)) / np.sqrt(h),
            )

    def latent(self, active: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
        """``(T, latent_dim)`` latent states of one modality from its ``(T, C)`` truth."""
        cfg = self.cfg
        k = cfg.latent_dim
        z = cfg.signal * (active.astype(np.float64) @ self.codes[modality])
        durations = DURATION_AUDIO if modality == "audio" else DURATION_VISUAL
        for _ in range(int(rng.poisson(cfg.distractors_per_video))):
            j = int(rng.integers(cfg.distractor_classes))
            on, off = _span(rng, durations)
            z[on:off] += cfg.signal * self.distractor_codes[modality][j]
        z += cfg.scene * rng.standard_normal(k)
        noise = cfg.noise_audio if modality == "audio" else cfg.noise_visual
        return z + noise * rng.standard_normal(z.shape)

    def _map(self, name: str, z: np.ndarray) -> np.ndarray:
        w1, b1, w2 = self.maps[name]
        return np.tanh(z @ w1 / np.sqrt(self.cfg.latent_dim) + b1) @ w2

    def render(
        self, audio: np.ndarray, visual: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Features of one video from its dense truth (``(T, C)`` bool each)."""
        z_a = self.latent(audio, "audio", rng)
        z_v = self.latent(visual, "visual", rng)
        frames = np.repeat(z_v, LLP_FRAMES_PER_SEGMENT, axis=0)
        frames = frames + 0.3 * rng.standard_normal(frames.shape)  # frame-to-frame change
        return {
            "vggish": self._map("vggish", z_a).astype(np.float32),
            "res152": np.maximum(self._map("res152", frames), 0.0).astype(np.float32),  # post-ReLU
            "r2plus1d_18": self._map("r2plus1d_18", z_v).astype(np.float32),
        }


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """The simulated CLAP/CLIP teacher behind the synthetic segment pseudo-labels.

    Per modality and true event (a maximal run of one class): missed with
    probability ``miss``; otherwise each boundary moves by one second (earlier
    or later, kept inside the clip and non-empty) with probability ``jitter``.
    Per video and modality, with probability ``false_alarm`` a spurious 1-3 s
    event is added for a class of the video's weak label that is absent from
    that modality (a modality confusion, e.g. speech "seen"; VALOR filters its
    CLIP/CLAP labels by the weak label, so a real teacher's false alarms are
    of this kind); nothing is added when every labelled class is present.
    """

    miss: float = 0.2
    jitter: float = 0.3
    false_alarm: float = 0.3


def teacher_pseudo_labels(
    track: np.ndarray,
    rng: np.random.Generator,
    teacher: TeacherConfig = TeacherConfig(),
    video_classes: np.ndarray | None = None,
) -> np.ndarray:
    """An imperfect teacher's ``(T, C)`` 0/1 pseudo-labels from one modality's truth.

    ``video_classes`` (``(C,)`` bool, the weak label; default: the track's own
    classes) bounds the false alarms.
    """
    t_len, c_len = track.shape
    out = np.zeros((t_len, c_len), np.float32)
    for c, on, off in _events(track):
        if rng.random() < teacher.miss:
            continue
        if rng.random() < teacher.jitter:
            on = int(np.clip(on + rng.choice([-1, 1]), 0, off - 1))
        if rng.random() < teacher.jitter:
            off = int(np.clip(off + rng.choice([-1, 1]), on + 1, t_len))
        out[on:off, c] = 1.0
    if rng.random() < teacher.false_alarm:
        labelled = track.any(0) if video_classes is None else np.asarray(video_classes, bool)
        absent = np.flatnonzero(labelled & ~track.any(0))
        if len(absent):
            c = int(rng.choice(absent))
            length = int(rng.integers(1, 4))
            on = int(rng.integers(0, t_len - length + 1))
            out[on : on + length, c] = 1.0
    return out


def write_pseudo_labels(
    out_dir: str, videos: list[Video], seed: int, teacher: TeacherConfig = TeacherConfig()
) -> None:
    """VALOR-layout pseudo-label folders (docs/method.md §9) from the simulated teacher:
    ``CLAP/segment_pseudo_labels/<id>.npy`` (audio) and ``CLIP/...`` (visual).

    Uses its own random stream (``seed``), so the features do not depend on it.
    """

    rng = np.random.default_rng([seed, 9])
    folders = {k: os.path.join(out_dir, f) for k, f in PSEUDO_LABEL_FOLDERS.items()}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    for v in videos:
        for key, track in (("pl_audio", v.audio), ("pl_visual", v.visual)):
            np.save(
                os.path.join(folders[key], v.video_id + ".npy"),
                teacher_pseudo_labels(track, rng, teacher, v.labels),
            )


def _mark_complete(out_dir: str, cfg) -> None:
    fileio.atomic_write_text(os.path.join(out_dir, COMPLETE_MARKER), f"{cfg}\n")


# What numpy's ``ndarray.tofile`` (``np.save``) raises when the disk fills in the middle
# of a write: an OSError with no errno.
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")


def _names_a_full_disk(generator):
    """A full disk while ``generator(out_dir, ...)`` writes a dataset: one
    :class:`fileio.DiskFullError` naming ``out_dir`` (numpy's ``[Errno 28]`` names no
    file). Without its completion marker the folder is written again, whole, by the
    next run."""

    @functools.wraps(generator)
    def generate(out_dir: str, *args, **kwargs):
        try:
            return generator(out_dir, *args, **kwargs)
        except OSError as e:
            short = e.errno is None and _SHORT_WRITE.search(str(e))  # numpy's tofile
            if isinstance(e, fileio.DiskFullError) or not (fileio.is_disk_full(e) or short):
                raise
            full = fileio.DiskFullError(out_dir, e if e.errno is not None else None)
            full.add_note("while writing the synthetic dataset; the next run writes it again")
            raise full from None

    return generate


def _write_weak_csv(path: str, videos: list[Video]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["filename", "event_labels"])
        for v in videos:
            w.writerow([v.filename, ",".join(LLP_CLASSES[c] for c in np.flatnonzero(v.labels))])


def _events(track: np.ndarray) -> list[tuple[int, int, int]]:
    """(class, onset, offset) of every maximal run in a ``(T, C)`` track."""
    out = []
    for c in np.flatnonzero(track.any(0)):
        x = np.concatenate([[False], track[:, c], [False]]).astype(np.int8)
        d = np.diff(x)
        out += [
            (int(c), int(on), int(off))
            for on, off in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))
        ]
    return out


def _write_dense_csv(path: str, videos: list[Video], modality: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["filename", "onset", "offset", "event_labels"])
        for v in videos:
            for c, on, off in _events(getattr(v, modality)):
                w.writerow([v.filename, on, off, LLP_CLASSES[c]])


def write_annotations(out_dir: str, splits: dict[str, list[Video]]) -> None:
    """LLP's five CSVs for ``splits`` (``{'train'|'val'|'test': [Video]}``): the weak
    labels of every split, the dense audio and visual truth of val and test."""
    for split, videos in splits.items():
        _write_weak_csv(os.path.join(out_dir, LLP_SPLIT_CSV[split]), videos)
    dense = splits["val"] + splits["test"]
    for modality, name in LLP_DENSE_CSV.items():
        _write_dense_csv(os.path.join(out_dir, name), dense, modality)


@_names_a_full_disk
def generate(
    out_dir: str, cfg: SyntheticConfig = SyntheticConfig(), verbose: bool = False
) -> dict[str, list[Video]]:
    """Writes a synthetic LLP-layout dataset to ``out_dir``; returns the videos per split."""
    if cfg.num_videos < 3:
        raise ValueError(f"--videos must be at least 3 (one per split), got {cfg.num_videos}")
    rng = np.random.default_rng(cfg.seed)
    n_val = max(1, int(round(cfg.num_videos * cfg.val_fraction)))
    n_test = max(1, int(round(cfg.num_videos * cfg.test_fraction)))
    n_train = cfg.num_videos - n_val - n_test
    if n_train < 1:
        raise ValueError(
            f"no training videos left: {cfg.num_videos} videos, val {n_val}, test {n_test}"
        )
    synth = FeatureSynth(cfg, rng)
    taken: set[str] = set()
    splits: dict[str, list[Video]] = {}
    for split, num in (("train", n_train), ("val", n_val), ("test", n_test)):
        videos = []
        for audio, visual in sample_videos(cfg, num, rng, dense_split=split != "train"):
            start = int(rng.integers(0, 30)) * 10
            name = f"{_random_id(rng, taken)}_{start}_{start + 10}"
            videos.append(Video(name, audio, visual))
        splits[split] = videos

    for folder in LLP_FEATURES:
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    t0 = time.time()
    for videos in splits.values():
        for v in videos:
            for folder, x in synth.render(v.audio, v.visual, rng).items():
                np.save(os.path.join(out_dir, folder, v.video_id + ".npy"), x)
    write_annotations(out_dir, splits)
    teacher = TeacherConfig(cfg.teacher_miss, cfg.teacher_jitter, cfg.teacher_false_alarm)
    write_pseudo_labels(
        out_dir, [v for videos in splits.values() for v in videos], cfg.seed, teacher
    )
    _mark_complete(out_dir, cfg)
    if verbose:
        print(
            f"wrote {cfg.num_videos} synthetic videos (train {n_train}, val {n_val}, "
            f"test {n_test}) to {out_dir} in {time.time() - t0:.1f}s"
        )
    return splits


# ---------------------------------------------------------------------------
# Variable-length mode: the UnAV-100 layout


@dataclasses.dataclass(frozen=True)
class SyntheticUnavConfig:
    """Knobs of the variable-length (UnAV-100 layout) generator."""

    num_videos: int = 400
    num_classes: int = 20
    min_duration: float = 2.0  # seconds (float durations: T = ceil(duration))
    max_duration: float = 20.0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    signal: float = 1.0
    noise: float = 0.9
    scene: float = 0.5
    distractor_rate: float = 0.5  # per video: an unannotated audible-only or visible-only event


def _unav_events(rng, cfg: SyntheticUnavConfig, duration: float) -> list[tuple[int, float, float]]:
    """1-3 classes, each with 1-2 audio-visual events with float boundaries."""
    n_classes = int(rng.choice(3, p=[0.5, 0.4, 0.1])) + 1
    events = []
    for c in rng.choice(cfg.num_classes, n_classes, replace=False):
        for _ in range(int(rng.integers(1, 3))):
            length = float(rng.uniform(0.5, duration))
            onset = float(rng.uniform(0.0, duration - length))
            events.append((int(c), round(onset, 2), round(min(onset + length, duration), 2)))
    return events


@_names_a_full_disk
def generate_unav(
    out_dir: str, cfg: SyntheticUnavConfig = SyntheticUnavConfig(), verbose: bool = False
) -> dict:
    """Writes a synthetic dataset in the UnAV-100 layout (``coleaf_jax.data.unav100``).

    Durations are uniform in ``[min_duration, max_duration]`` (non-integer);
    features come one vector every 0.32 s (VGGish 128-d, I3D RGB and flow
    1024-d each), rendered from the events active at each vector's centre
    plus a per-video scene vector and noise; the number of vectors is
    ``floor(duration / 0.32)`` give or take one, as real extractors round.
    Annotated events are audio-visual; with ``distractor_rate`` a video also
    holds an unannotated audible-only or visible-only event of another class.
    Returns the annotation database.
    """

    if cfg.num_videos < 3:
        raise ValueError(f"--videos must be at least 3 (one per split), got {cfg.num_videos}")
    rng = np.random.default_rng(cfg.seed)
    n_val = max(1, int(round(cfg.num_videos * cfg.val_fraction)))
    n_test = max(1, int(round(cfg.num_videos * cfg.test_fraction)))
    subsets = (
        ["validation"] * n_val + ["test"] * n_test + ["train"] * (cfg.num_videos - n_val - n_test)
    )
    fs = unav100.FEATURE_SETS["i3d"]
    dims = {"audio": fs.audio[1], "rgb": fs.video_2d[1], "flow": fs.video_3d[1]}
    protos = {
        k: rng.standard_normal((cfg.num_classes, d)).astype(np.float32) for k, d in dims.items()
    }
    names = [f"synthetic_event_{k:02d}" for k in range(cfg.num_classes)]
    feat_dir = os.path.join(out_dir, unav100.FEATURE_DIR)
    os.makedirs(feat_dir, exist_ok=True)
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    step = unav100.UNAV_FEATURE_STEP
    database, taken = {}, set()
    for subset in subsets:
        vid = _random_id(rng, taken)
        duration = round(float(rng.uniform(cfg.min_duration, cfg.max_duration)), 2)
        events = _unav_events(rng, cfg, duration)
        n = max(1, int(duration / step) + int(rng.integers(-1, 2)))
        centres = (np.arange(n) + 0.5) * step
        active = np.zeros((n, cfg.num_classes), np.float32)
        for c, on, off in events:
            active[(centres >= on) & (centres < off), c] = 1.0
        only = {"audio": np.zeros_like(active), "visual": np.zeros_like(active)}
        if rng.random() < cfg.distractor_rate:
            c = int(rng.integers(cfg.num_classes))
            if not any(e[0] == c for e in events):
                on = rng.uniform(0, duration / 2)
                off = rng.uniform(on + 0.5, duration + 0.5)
                only[str(rng.choice(["audio", "visual"]))][(centres >= on) & (centres < off), c] = (
                    1.0
                )
        for name, modality in (("vggish", "audio"), ("rgb", "visual"), ("flow", "visual")):
            proto = protos["audio" if name == "vggish" else name]
            scene = cfg.scene * rng.standard_normal(proto.shape[1])
            x = (active + only[modality]) @ proto * cfg.signal + scene
            x = x + cfg.noise * rng.standard_normal(x.shape)
            np.save(os.path.join(feat_dir, f"{vid}_{name}.npy"), x.astype(np.float32))
        database[vid] = {
            "duration": duration,
            "subset": subset,
            "annotations": [
                {"segment": [on, off], "label": names[c], "label_id": c} for c, on, off in events
            ],
        }
    with open(os.path.join(out_dir, unav100.ANNOTATION_FILE), "w") as f:
        json.dump({"version": "synthetic", "database": database}, f)
    _mark_complete(out_dir, cfg)
    if verbose:
        print(
            f"wrote {cfg.num_videos} synthetic variable-length videos (UnAV-100 layout, "
            f"{cfg.num_classes} classes; train {subsets.count('train')}, val {n_val}, "
            f"test {n_test}) to {out_dir}"
        )
    return database


def _run_lengths(tracks: np.ndarray, keep: np.ndarray | None = None) -> list[int]:
    """Lengths (s) of the events (``_events``) of ``(N, T, C)`` tracks; with ``keep``
    ``(N, C)`` bool, only those of the (video, class) pairs it marks."""
    return [
        off - on
        for n, track in enumerate(tracks)
        for c, on, off in _events(track)
        if keep is None or keep[n, c]
    ]


def measure_llp(annotation_dir: str) -> dict[str, np.ndarray | float]:
    """The statistics of LLP's annotation CSVs the generator's defaults are set from
    (``python -m coleaf_jax.data.synthetic --measure DIR`` prints them; the constants
    above are this function's output on the released CSVs, rounded to 3 decimals):

    * ``class_frequency`` ``(C,)``: each class's share of the training weak labels;
    * ``labels_per_video``, ``labels_per_video_eval`` ``(4,)``: training and val/test
      videos with 1, 2, 3, 4+ labels;
    * ``audible_only``, ``visible_only`` ``(C,)``: of the val/test videos labelled with
      the class, the share whose dense truth has it only in audio / only in video;
    * ``duration_audio``, ``duration_visual`` ``(T,)``: the share of events lasting
      1..T seconds; ``duration_{audible_only,av_audio,av_visual,visible_only}`` the same
      for the sounds of classes only heard, the sounds and sights of classes heard and
      seen, the sights of classes only seen;
    * ``events_audio``, ``events_visual``: events per (video, class) present;
    * ``av_iou``, ``av_same_extent``: for classes both heard and seen, the mean
      intersection over union of their audio and visual segments, and the share heard
      exactly where seen.
    """
    idx = {n: i for i, n in enumerate(LLP_CLASSES)}

    def weak(name):
        with open(os.path.join(annotation_dir, name)) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return {r["filename"][:11]: [idx[x] for x in r["event_labels"].split(",")] for r in rows}

    train = weak(LLP_SPLIT_CSV["train"])
    dense_ids = {**weak(LLP_SPLIT_CSV["val"]), **weak(LLP_SPLIT_CSV["test"])}
    order = {vid: i for i, vid in enumerate(dense_ids)}
    labels = np.zeros((len(order), C), bool)
    for vid, classes in dense_ids.items():
        labels[order[vid], classes] = True
    tracks = {}
    for modality, name in LLP_DENSE_CSV.items():
        track = np.zeros((len(order), T, C), bool)
        with open(os.path.join(annotation_dir, name)) as f:
            for r in csv.DictReader(f, delimiter="\t"):
                if r["filename"][:11] in order:
                    track[
                        order[r["filename"][:11]],
                        int(r["onset"]) : int(r["offset"]),
                        idx[r["event_labels"]],
                    ] = True
        tracks[modality] = track
    heard, seen = tracks["audio"].any(1), tracks["visual"].any(1)
    per_class = np.maximum(labels.sum(0), 1)
    counts = np.bincount([min(len(v), 4) for v in train.values()], minlength=5)[1:]
    counts_eval = np.bincount([min(len(v), 4) for v in dense_ids.values()], minlength=5)[1:]
    freq = np.bincount([c for v in train.values() for c in v], minlength=C)
    both = labels & heard & seen
    inter = (tracks["audio"] & tracks["visual"]).sum(1)[both]
    union = (tracks["audio"] | tracks["visual"]).sum(1)[both]
    out = {
        "class_frequency": freq / freq.sum(),
        "labels_per_video": counts / counts.sum(),
        "labels_per_video_eval": counts_eval / counts_eval.sum(),
        "audible_only": (labels & heard & ~seen).sum(0) / per_class,
        "visible_only": (labels & seen & ~heard).sum(0) / per_class,
        "av_iou": float((inter / union).mean()),
    }
    for modality, present in (("audio", heard), ("visual", seen)):
        runs = _run_lengths(tracks[modality])
        out[f"duration_{modality}"] = np.bincount(runs, minlength=T + 1)[1:] / len(runs)
        out[f"events_{modality}"] = len(runs) / present.sum()
    for name, modality, kind in (
        ("audible_only", "audio", heard & ~seen),
        ("av_audio", "audio", heard & seen),
        ("av_visual", "visual", heard & seen),
        ("visible_only", "visual", seen & ~heard),
    ):
        runs = _run_lengths(tracks[modality], keep=kind)
        out[f"duration_{name}"] = np.bincount(runs, minlength=T + 1)[1:] / len(runs)
    out["av_same_extent"] = float((tracks["audio"] == tracks["visual"]).all(1)[both].mean())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.data.synthetic",
        description="Write a synthetic dataset in the LLP feature layout.",
    )
    parser.add_argument("out", nargs="?", help="output directory (created if missing)")
    parser.add_argument(
        "--measure",
        metavar="DIR",
        help="print the label statistics of LLP's annotation CSVs in DIR (the defaults' source)",
    )
    parser.add_argument(
        "--videos",
        type=int,
        default=SyntheticConfig.num_videos,
        help="total number of videos over train/val/test (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    for name in ("noise_audio", "noise_visual", "distractors_per_video"):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=getattr(SyntheticConfig, name),
            help=f"SyntheticConfig.{name} (default %(default)s)",
        )
    for name in ("miss", "jitter", "false_alarm"):
        parser.add_argument(
            f"--teacher-{name.replace('_', '-')}",
            type=float,
            default=getattr(SyntheticConfig, f"teacher_{name}"),
            help=f"pseudo-label teacher: {name.replace('_', ' ')} rate "
            "(see TeacherConfig; default %(default)s)",
        )
    args = parser.parse_args(argv)
    if args.measure:
        for key, value in measure_llp(args.measure).items():
            shown = round(value, 3) if isinstance(value, float) else np.round(value, 3).tolist()
            print(f"{key}: {shown}")
        return 0
    if not args.out:
        parser.error("the output directory is required (or --measure DIR)")
    try:
        workdir.check_output(args.out, "OUT", folder=True)  # never a run's records
        generate(
            args.out,
            SyntheticConfig(
                num_videos=args.videos,
                seed=args.seed,
                noise_audio=args.noise_audio,
                noise_visual=args.noise_visual,
                distractors_per_video=args.distractors_per_video,
                teacher_miss=args.teacher_miss,
                teacher_jitter=args.teacher_jitter,
                teacher_false_alarm=args.teacher_false_alarm,
            ),
            verbose=True,
        )
    except (ValueError, RuntimeError) as e:  # bad values; an output among a run's records
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk (DiskFullError, naming the folder), permissions...
        text = str(e) + "".join(f" ({note})" for note in getattr(e, "__notes__", ()))
        print(f"error: {' '.join(text.split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
