"""An embedded synthetic dataset in the exact LLP layout, with planted events.

    python -m coleaf_jax.data.synthetic OUT [--videos N --seed S]

writes ``OUT/{vggish,res152,r2plus1d_18}/<id>.npy`` and the five LLP CSVs, so
every part of the project (data layer, training, metrics, demo) runs without a
download. What makes it a fair test of weakly supervised AVVP:

* **Modality structure.** Every event of a class is audible-only, visible-only
  or audible-visible with per-class rates shaped after LLP (speech is rarely
  seen, a lawn mower is mostly both, an instrument is sometimes only seen).
  Training sees only the video-level union of classes, so which modality an
  event lives in must be inferred from the features.
* **Co-occurrence.** Classes come in realistic groups (speech with almost
  anything, cheering with clapping, singing with instruments, babies
  together), and label counts follow LLP (1-3 per training video).
* **Temporal extents.** Events span 1-10 s, often the whole clip; the two
  modalities of an audible-visible event overlap but need not coincide.
* **Features.** Each class has a prototype in each feature space; a segment's
  features are the sum of its active classes' prototypes, a per-video scene
  vector and noise. Similar classes (violin/cello, car/motorcycle, ...) share
  part of their prototypes, and the ResNet frames are post-ReLU and jittered
  per frame, so there is something to get wrong.

Validation and test videos get dense audio/visual truth; training videos weak
labels only. Nothing here reads ``shared/``: the per-class rates below are
constants.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time

import numpy as np

from coleaf_jax.data.classes import (
    LLP_CLASSES, LLP_DENSE_CSV, LLP_FEATURES, LLP_FRAMES_PER_SEGMENT, LLP_NUM_SEGMENTS,
    LLP_SPLIT_CSV,
)

C = len(LLP_CLASSES)
T = LLP_NUM_SEGMENTS

# Share of a class's events that are *not* visible (audible-only) and *not*
# audible (visible-only), rounded from the LLP label-noise table of JoMoLD
# (visual / audio noise ratios), raised a little so every class has some.
AUDIBLE_ONLY_RATE = np.array([
    0.95, 0.15, 0.25, 0.20, 0.20, 0.20, 0.15, 0.20, 0.20, 0.20, 0.25, 0.25, 0.15,
    0.25, 0.15, 0.20, 0.25, 0.20, 0.20, 0.15, 0.25, 0.30, 0.20, 0.15, 0.35])
VISIBLE_ONLY_RATE = np.array([
    0.02, 0.15, 0.10, 0.10, 0.15, 0.10, 0.10, 0.10, 0.15, 0.10, 0.10, 0.10, 0.10,
    0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10])

# Relative frequency of a class as a video's first label (speech dominates LLP).
CLASS_FREQUENCY = np.array([
    6.0, 1.5, 1.5, 1.5, 1.0, 1.0, 1.0, 0.8, 0.8, 1.2, 1.0, 1.5, 0.8,
    1.2, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0, 1.2, 0.8, 1.0, 0.8, 1.0])

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
# Pairs whose features resemble each other (shared prototype component).
_SIMILAR = (
    ("Violin_fiddle", "Cello"), ("Car", "Motorcycle"), ("Lawn_mower", "Chainsaw"),
    ("Baby_laughter", "Baby_cry_infant_cry"), ("Banjo", "Acoustic_guitar"),
    ("Cheering", "Clapping"), ("Vacuum_cleaner", "Blender"),
)
_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))


def _cooccurrence() -> np.ndarray:
    """(C, C) probabilities of the next label given a present one."""
    idx = {n: i for i, n in enumerate(LLP_CLASSES)}
    w = np.full((C, C), 0.05)
    for group in _GROUPS:
        for a in group:
            for b in group:
                w[idx[a], idx[b]] += 1.0
    w[:, idx["Speech"]] += 1.0
    np.fill_diagonal(w, 0.0)
    return w / w.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (defaults: learnable, not trivial)."""

    num_videos: int = 1000
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    signal: float = 1.0  # prototype amplitude
    noise: float = 0.9  # per-segment noise std (relative to unit-norm prototypes x sqrt(dim))
    similar_share: float = 0.5  # share of prototype common to a similar pair
    scene: float = 0.5  # per-video nuisance vector amplitude


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
        return (self.audio.any(0) | self.visual.any(0))


def _random_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        vid = "".join(rng.choice(_ID_ALPHABET, 11))
        if vid not in taken:
            taken.add(vid)
            return vid


def _span(rng: np.random.Generator) -> tuple[int, int]:
    """An event's [onset, offset): whole clip 40 % of the time, else 1-9 s."""
    if rng.random() < 0.4:
        return 0, T
    length = int(rng.integers(1, T))
    onset = int(rng.integers(0, T - length + 1))
    return onset, onset + length


def _jitter(rng: np.random.Generator, span: tuple[int, int]) -> tuple[int, int]:
    """The other modality's extent of an audible-visible event: overlapping, shifted."""
    on, off = span
    on = int(np.clip(on + rng.integers(-2, 3) * (rng.random() < 0.5), 0, T - 1))
    off = int(np.clip(off + rng.integers(-2, 3) * (rng.random() < 0.5), on + 1, T))
    return on, off


def sample_videos(cfg: SyntheticConfig, num: int, rng: np.random.Generator,
                  dense_split: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Samples dense truth for ``num`` videos; returns ``[(audio (T,C), visual (T,C))]``."""
    co = _cooccurrence()
    freq = CLASS_FREQUENCY / CLASS_FREQUENCY.sum()
    # Label-count distribution: LLP train (1: 40 %, 2: 59 %, 3: 1 %); eval splits hold more.
    counts_p = [0.35, 0.5, 0.12, 0.03] if dense_split else [0.40, 0.59, 0.01, 0.0]
    out = []
    for _ in range(num):
        n_labels = int(rng.choice(4, p=counts_p)) + 1
        classes = [int(rng.choice(C, p=freq))]
        while len(classes) < n_labels:
            p = co[classes].mean(axis=0)
            p[classes] = 0.0
            classes.append(int(rng.choice(C, p=p / p.sum())))
        audio = np.zeros((T, C), bool)
        visual = np.zeros((T, C), bool)
        for c in classes:
            u = rng.random()
            span = _span(rng)
            if u < AUDIBLE_ONLY_RATE[c]:
                audio[span[0]:span[1], c] = True
            elif u < AUDIBLE_ONLY_RATE[c] + VISIBLE_ONLY_RATE[c]:
                visual[span[0]:span[1], c] = True
            else:
                audio[span[0]:span[1], c] = True
                other = _jitter(rng, span)
                visual[other[0]:other[1], c] = True
        out.append((audio, visual))
    return out


class FeatureSynth:
    """Class prototypes in the three feature spaces and the feature renderer."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator):
        self.cfg = cfg
        idx = {n: i for i, n in enumerate(LLP_CLASSES)}
        self.protos = {}
        for name, (_, dim) in LLP_FEATURES.items():
            p = rng.standard_normal((C, dim))
            for a, b in _SIMILAR:
                shared = rng.standard_normal(dim)
                s = cfg.similar_share
                p[idx[a]] = np.sqrt(1 - s) * p[idx[a]] + np.sqrt(s) * shared
                p[idx[b]] = np.sqrt(1 - s) * p[idx[b]] + np.sqrt(s) * shared
            self.protos[name] = p.astype(np.float32)

    def render(self, audio: np.ndarray, visual: np.ndarray,
               rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Features of one video from its dense truth (``(T, C)`` bool each)."""
        cfg = self.cfg
        feats = {}
        for name, active in (("vggish", audio), ("r2plus1d_18", visual), ("res152", visual)):
            proto = self.protos[name]
            dim = proto.shape[1]
            scene = cfg.scene * rng.standard_normal(dim)
            seg = active.astype(np.float32) @ proto * cfg.signal + scene
            if name == "res152":
                seg = np.repeat(seg, LLP_FRAMES_PER_SEGMENT, axis=0)
            x = seg + cfg.noise * rng.standard_normal(seg.shape)
            if name == "res152":
                x = np.maximum(x, 0.0)  # ResNet features are post-ReLU averages
            feats[name] = x.astype(np.float32)
        return feats


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
        out += [(int(c), int(on), int(off)) for on, off in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))]
    return out


def _write_dense_csv(path: str, videos: list[Video], modality: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["filename", "onset", "offset", "event_labels"])
        for v in videos:
            for c, on, off in _events(getattr(v, modality)):
                w.writerow([v.filename, on, off, LLP_CLASSES[c]])


def generate(out_dir: str, cfg: SyntheticConfig = SyntheticConfig(), verbose: bool = False) -> dict[str, list[Video]]:
    """Writes a synthetic LLP-layout dataset to ``out_dir``; returns the videos per split."""
    if cfg.num_videos < 3:
        raise ValueError(f"--videos must be at least 3 (one per split), got {cfg.num_videos}")
    rng = np.random.default_rng(cfg.seed)
    n_val = max(1, int(round(cfg.num_videos * cfg.val_fraction)))
    n_test = max(1, int(round(cfg.num_videos * cfg.test_fraction)))
    n_train = cfg.num_videos - n_val - n_test
    if n_train < 1:
        raise ValueError(f"no training videos left: {cfg.num_videos} videos, "
                         f"val {n_val}, test {n_test}")
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
    for split, videos in splits.items():
        for v in videos:
            for folder, x in synth.render(v.audio, v.visual, rng).items():
                np.save(os.path.join(out_dir, folder, v.video_id + ".npy"), x)
        _write_weak_csv(os.path.join(out_dir, LLP_SPLIT_CSV[split]), videos)
    dense = splits["val"] + splits["test"]
    for modality, name in LLP_DENSE_CSV.items():
        _write_dense_csv(os.path.join(out_dir, name), dense, modality)
    if verbose:
        print(f"wrote {cfg.num_videos} synthetic videos (train {n_train}, val {n_val}, "
              f"test {n_test}) to {out_dir} in {time.time() - t0:.1f}s")
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.data.synthetic",
        description="Write a synthetic dataset in the LLP feature layout.")
    parser.add_argument("out", help="output directory (created if missing)")
    parser.add_argument("--videos", type=int, default=SyntheticConfig.num_videos,
                        help="total number of videos over train/val/test (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--noise", type=float, default=SyntheticConfig.noise,
                        help="feature noise std; higher is harder (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        generate(args.out, SyntheticConfig(num_videos=args.videos, seed=args.seed, noise=args.noise),
                 verbose=True)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
