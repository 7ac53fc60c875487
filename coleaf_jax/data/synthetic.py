"""An embedded synthetic dataset in the exact LLP layout, with planted events.

    python -m coleaf_jax.data.synthetic OUT [--videos N --seed S]

writes ``OUT/{vggish,res152,r2plus1d_18}/<id>.npy``, the five LLP CSVs and
VALOR-style segment pseudo-labels ``OUT/{CLAP,CLIP}/segment_pseudo_labels/<id>.npy``
from a simulated imperfect teacher (``TeacherConfig``), so
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
import json
import os
import sys
import time

import numpy as np

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

C = len(LLP_CLASSES)
T = LLP_NUM_SEGMENTS

# Share of a class's events that are *not* visible (audible-only) and *not*
# audible (visible-only), rounded from the LLP label-noise table of JoMoLD
# (visual / audio noise ratios), raised a little so every class has some.
AUDIBLE_ONLY_RATE = np.array(
    [
        0.95,
        0.15,
        0.25,
        0.20,
        0.20,
        0.20,
        0.15,
        0.20,
        0.20,
        0.20,
        0.25,
        0.25,
        0.15,
        0.25,
        0.15,
        0.20,
        0.25,
        0.20,
        0.20,
        0.15,
        0.25,
        0.30,
        0.20,
        0.15,
        0.35,
    ]
)
VISIBLE_ONLY_RATE = np.array(
    [
        0.02,
        0.15,
        0.10,
        0.10,
        0.15,
        0.10,
        0.10,
        0.10,
        0.15,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
        0.10,
    ]
)

# Relative frequency of a class as a video's first label (speech dominates LLP).
CLASS_FREQUENCY = np.array(
    [
        6.0,
        1.5,
        1.5,
        1.5,
        1.0,
        1.0,
        1.0,
        0.8,
        0.8,
        1.2,
        1.0,
        1.5,
        0.8,
        1.2,
        0.8,
        0.8,
        1.0,
        1.0,
        1.0,
        1.0,
        1.2,
        0.8,
        1.0,
        0.8,
        1.0,
    ]
)

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


def sample_videos(
    cfg: SyntheticConfig, num: int, rng: np.random.Generator, dense_split: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
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
                audio[span[0] : span[1], c] = True
            elif u < AUDIBLE_ONLY_RATE[c] + VISIBLE_ONLY_RATE[c]:
                visual[span[0] : span[1], c] = True
            else:
                audio[span[0] : span[1], c] = True
                other = _jitter(rng, span)
                visual[other[0] : other[1], c] = True
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

    def render(
        self, audio: np.ndarray, visual: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
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
    with open(os.path.join(out_dir, COMPLETE_MARKER), "w") as f:
        f.write(f"{cfg}\n")


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
    for split, videos in splits.items():
        for v in videos:
            for folder, x in synth.render(v.audio, v.visual, rng).items():
                np.save(os.path.join(out_dir, folder, v.video_id + ".npy"), x)
        _write_weak_csv(os.path.join(out_dir, LLP_SPLIT_CSV[split]), videos)
    dense = splits["val"] + splits["test"]
    for modality, name in LLP_DENSE_CSV.items():
        _write_dense_csv(os.path.join(out_dir, name), dense, modality)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.data.synthetic",
        description="Write a synthetic dataset in the LLP feature layout.",
    )
    parser.add_argument("out", help="output directory (created if missing)")
    parser.add_argument(
        "--videos",
        type=int,
        default=SyntheticConfig.num_videos,
        help="total number of videos over train/val/test (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument(
        "--noise",
        type=float,
        default=SyntheticConfig.noise,
        help="feature noise std; higher is harder (default %(default)s)",
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
    try:
        generate(
            args.out,
            SyntheticConfig(
                num_videos=args.videos,
                seed=args.seed,
                noise=args.noise,
                teacher_miss=args.teacher_miss,
                teacher_jitter=args.teacher_jitter,
                teacher_false_alarm=args.teacher_false_alarm,
            ),
            verbose=True,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
