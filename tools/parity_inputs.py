"""What both halves of the parity harness share: the plans (which Anchor, which data, which
epochs and steps), the identical weights and batches drawn from ``numpy.random.RandomState``,
the sampled positions and summaries of large tensors, the coverage conditions a recording
must meet, the tolerances. numpy only (the recording side runs in a torch venv, the
replaying side in the project's).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from a torch venv: the package is not installed
    sys.path.insert(0, ROOT)

try:
    from coleaf_jax.models import authors_weights as aw  # noqa: E402  (numpy only)
except ImportError:  # the torch venv has no flax: load the (numpy only) module by its path
    _spec = importlib.util.spec_from_file_location(
        "coleaf_jax_authors_weights",
        os.path.join(ROOT, "coleaf_jax", "models", "authors_weights.py"),
    )
    aw = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(aw)

SAMPLES = 64  # sampled positions per tensor
TOKEN_PROJ = 8
NUM_CLASSES, T, D = 25, 10, 512
NETWORKS = ("anchor", "audio", "visual")


# ---------------------------------------------------------------------------
# Plans: what one fixture records


@dataclasses.dataclass(frozen=True)
class Plan:
    """One recording: the Anchor (``'cmpae'``: the authors' ``MMIL_Net``; ``'han'``: HAN's
    ``MMIL_Net`` in its place, replayed with ``configs/llp.py:coleaf_han``), the batches
    (``'random'``: features without structure; ``'events'``: audio-only, visual-only and
    audio-visual events whose class patterns are in the features), the sampled
    ``(1-based epoch, steps)``, the steps after which parameters and Adam moments
    (``snapshots``) and gradients (``grad_steps``) are recorded, and the coverage
    conditions (:func:`coverage`) the recorder asserts."""

    anchor: str
    data: str
    phases: tuple[tuple[int, int], ...]
    snapshots: tuple[int, ...]
    grad_steps: tuple[int, ...]
    required: tuple[str, ...]
    batch_size: int = 16
    seed: int = 0

    @property
    def steps(self) -> int:
        return sum(n for _, n in self.phases)


def _every_boundary(steps: int, epochs=(1, 2, 3, 4, 6, 7), switches=(2, 4, 7)) -> dict:
    """Phases of ``steps`` steps in each epoch of ``epochs`` (each schedule boundary and
    the epoch before it); parameters and Adam moments after step 1, after the epochs
    where the collaborative terms and KD switch on, and after the last step; gradients of
    step 1, of the first step of each epoch where something switches on, and of the last.
    (The losses, labels and teachers of every step are recorded whatever the plan.)"""
    phases = tuple((e, steps) for e in epochs)
    end = {e: steps * (i + 1) for i, e in enumerate(epochs)}
    first = {e: steps * i + 1 for i, e in enumerate(epochs)}
    last = steps * len(epochs)
    return dict(
        phases=phases,
        snapshots=tuple(sorted({1, end[switches[0]], end[switches[1]], last})),
        grad_steps=tuple(sorted({1, *(first[e] for e in switches), last})),
    )


# Coverage conditions (:func:`coverage`). "Every epoch from 2" means every sampled epoch
# in which the collaborative terms and JoMoLD are on; "every KD epoch" every sampled epoch
# after the KD warm-up.
COVERAGE = {
    "boundaries": "every schedule boundary sampled, with the epoch before it",
    "parity": "both mutual-learning directions (odd and even batch index) in every epoch",
    "drop_a": "JoMoLD drops audio labels, every epoch from 2",
    "drop_v": "JoMoLD drops visual labels, every epoch from 2",
    "no_drop": "no label dropped (JoMoLD off, as :coleaf_han)",
    "kd_a": "KD targets audio: kept and thresholded-out positives, every KD epoch",
    "kd_v": "KD targets visual: kept and thresholded-out positives, every KD epoch",
    "w_a": "event-aware weight w_a > 0, every epoch from 2; some 0 < w_a < 1",
    "w_v": "event-aware weight w_v > 0, every epoch from 2; some 0 < w_v < 1",
    "cc_a": "correlation teacher audio takes the Reference's value somewhere, every epoch from 2",
    "cc_v": "correlation teacher visual takes the Reference's value somewhere, every epoch from 2",
    "init": "the initial weights as the authors' code draws them (statistics)",
}
_ALL_CMPAE = (
    "boundaries",
    "parity",
    "drop_a",
    "drop_v",
    "kd_a",
    "kd_v",
    "w_a",
    "w_v",
    "cc_a",
    "cc_v",
    "init",
)
PLANS = {
    # The first fixtures (tests/fixtures/parity_cmpae_f32.npz, _f64.npz): random
    # features, 5 steps each of epochs 1, 2, 4, 7. They exercise the audio side and the
    # visual JoMoLD drops only (its table in docs/fidelity.md).
    "cmpae": Plan(
        anchor="cmpae",
        data="random",
        phases=((1, 5), (2, 5), (4, 5), (7, 5)),
        snapshots=(1, 5, 10, 15, 20),
        grad_steps=(1, 20),
        required=("parity", "drop_v", "kd_a"),
    ),
    # Every observable non-trivial: each schedule boundary, both JoMoLD drops, the KD
    # targets and event-aware weights of both modalities.
    "cmpae_events": Plan(
        anchor="cmpae", data="events", required=_ALL_CMPAE, seed=2, **_every_boundary(2)
    ),
    # CoLeaF with HAN's MMIL_Net as the Anchor (configs/llp.py:coleaf_han: no JoMoLD).
    "han_events": Plan(
        anchor="han",
        data="events",
        required=tuple(c for c in _ALL_CMPAE if not c.startswith("drop")) + ("no_drop",),
        seed=2,
        **_every_boundary(2),
    ),
}


def plan_from_meta(meta: dict) -> Plan:
    """The plan a fixture was recorded with (the first fixtures' meta has no plan: ``'cmpae'``)."""
    base = PLANS[meta.get("plan", "cmpae")]
    return dataclasses.replace(
        base,
        phases=tuple(tuple(p) for p in meta.get("phases", base.phases)),
        snapshots=tuple(meta.get("snapshots", base.snapshots)),
        grad_steps=tuple(meta.get("grad_steps", base.grad_steps)),
        batch_size=meta.get("batch_size", base.batch_size),
        seed=meta.get("seed", base.seed),
    )


def phase_of_step(plan: Plan) -> list[int]:
    """The 1-based epoch of each 0-based step."""
    return [e for e, n in plan.phases for _ in range(n)]


def steps_per_epoch(plan: Plan) -> int:
    """The phases' common length: the batch index in its epoch is ``step % length`` (the
    mutual-learning direction alternates with it in both codes)."""
    lengths = {n for _, n in plan.phases}
    if len(lengths) != 1:
        raise ValueError(f"phases of different lengths: {plan.phases}")
    return lengths.pop()


# ---------------------------------------------------------------------------
# Tolerances


OUTPUT_RTOL = 1e-5  # float32: outputs, losses, gradients of the first step
PARAM_RTOL = 1e-4  # float32: parameters and Adam moments after the first step
# float64: every group, every step, every fixture. Measured: at most 7.2e-12 (plan 'cmpae',
# gradients after step 20: float64 rounding amplified by 20 steps of training).
EXACT_RTOL = 1e-9
# float32 after the first step: rounding amplified by training, one bound per observable,
# 4x the largest drift measured on the first fixtures (plan 'cmpae', seed 0: our float32
# step against the authors' float32 recording and against their float64 one, every epoch;
# docs/fidelity.md §1). They catch what moves an observable by more than a few times
# float32's own drift (a halved backbone term), not a halved small term (λ_a = 0.009,
# λ_cc = 1e-4): after the first step the gate is the float64 replay (``EXACT_RTOL``, every
# step of every fixture). On the 'events' fixtures float32 drift is larger still (a clamp
# or threshold crossed by one run and not the other): they are replayed in float64.
DRIFT_MARGIN = 4.0
DRIFT_MEASURED = {  # worst over epochs 2-7, ours f32 vs theirs f32 / f64 (plan 'cmpae')
    "loss": 8.1e-4,
    "correlation teachers": 7.0e-4,
    "gradients": 4.5e-2,
    "parameters": 2.7e-3,
    "Adam exp_avg": 1.3e-2,
    "Adam exp_avg_sq": 5.0e-3,
}
DRIFT_RTOL = {k: DRIFT_MARGIN * v for k, v in DRIFT_MEASURED.items()}
INIT_TOL = 1.0  # initial-weight statistics: deviation / allowed (see init_deviation)
DISCRETE = ("JoMoLD labels", "KD targets", "event-aware weights")
# Our float32 step against a float64 recording (compare --float32): the discrete groups'
# values (labels 0.05 / 0.9, weights) differ by their float32 rounding (measured 1.2e-8
# relative); a different decision differs by order one.
MIXED_DISCRETE_RTOL = 1e-7

# Parameters no output depends on: a softmax is invariant to a shift of its logits, so
# the bias of the temporal-attention logits (fc_frame_att), the bias of HAN's modality
# attention (fc_av_att: one linear map of both modalities' features, softmax over the
# two) and the key bias of every attention (the middle third of in_proj_bias: q·b_k is
# the same for every key) have an exact gradient of 0, which both codes compute as float
# noise (~1e-10) that Adam turns into ±lr steps. They are zeroed before any comparison.
SHIFT_INVARIANT = {
    "anchor/fc_frame_att.bias",
    "anchor/fc_av_att.bias",
    "audio/fc_frame_att.bias",
    "visual/fc_frame_att.bias",
}


def comparable(key: str, x: np.ndarray) -> np.ndarray:
    """``x`` (``network/name``) as a flat float64 array with its shift-invariant part zeroed
    (a view of ``x`` where it is float64, contiguous and has none: read it, never write)."""
    flat = np.asarray(x, np.float64).reshape(-1)
    if key in SHIFT_INVARIANT:
        return np.zeros_like(flat)
    if key.endswith("in_proj_bias"):
        flat = flat.copy()
        d = flat.size // 3
        flat[d : 2 * d] = 0.0
    return flat


# ---------------------------------------------------------------------------
# The networks' tables (authors' state_dict entry <-> our parameter)

# HAN's MMIL_Net (YapengTian/AVVP-ECCV20 nets/net_audiovisual.py) <-> our HANAnchor.
HAN_ANCHOR_TABLE: list[tuple[str, str, str]] = aw.han_table(1)


def tables(anchor: str) -> dict[str, list[tuple[str, str, str]]]:
    """The three networks' tables for an Anchor (``'cmpae'`` or ``'han'``)."""
    return {**aw.TABLES, "anchor": HAN_ANCHOR_TABLE if anchor == "han" else aw.ANCHOR_TABLE}


# ---------------------------------------------------------------------------
# Identical inputs on both sides (numpy's frozen RandomState stream)


def initial_weights(
    shapes: dict[str, dict[str, tuple]], seed: int, anchor: str = "cmpae"
) -> dict[str, dict[str, np.ndarray]]:
    """Weights for every mapped entry of the three networks, in the authors' layout.

    Drawn as torch initialises them (linear U(±1/√in), attention in-projection
    xavier), except that attention biases, LayerNorm parameters and class
    tokens get small random values instead of 0/1 so that a wrong mapping of
    any of them shows. ``shapes[network][name]`` gives each shape.
    """
    rng = np.random.RandomState(seed)
    out = {}
    for network, table in tables(anchor).items():
        out[network] = {}
        fan_in = None
        for name, path, kind in table:
            shape = tuple(shapes[network][name])
            if kind == "t":  # linear weight (out, in)
                fan_in = shape[1]
                x = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
            elif kind == "qkv_t":  # in_proj_weight (3D, D)
                x = rng.uniform(-1, 1, shape) * np.sqrt(6.0 / (shape[0] + shape[1]))
            elif path.endswith("/scale"):  # LayerNorm weight
                x = 1.0 + rng.uniform(-0.1, 0.1, shape)
            elif kind in ("qkv", "tokens") or "/norm" in path:
                x = rng.uniform(-0.1, 0.1, shape)
            else:  # linear bias
                x = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
            out[network][name] = x.astype(np.float32)
    return out


def batches(plan: Plan) -> list[dict[str, np.ndarray]]:
    """One batch per step of ``plan`` (its batch size, seed and data), in the LLP layout:
    ``'random'`` data (features without structure, weak labels of 1-3 classes, Speech
    common) or ``'events'`` (:func:`event_batches`)."""
    batch_size, seed = plan.batch_size, plan.seed
    if plan.data == "events":
        return event_batches(batch_size, seed, phase_of_step(plan))
    rng = np.random.RandomState(seed + 1)
    out = []
    for _ in range(plan.steps):
        label = np.zeros((batch_size, NUM_CLASSES), np.float32)
        for b in range(batch_size):
            k = rng.choice([1, 2, 3], p=[0.4, 0.55, 0.05])
            classes = rng.choice(NUM_CLASSES, size=k, replace=False)
            if rng.rand() < 0.5:
                classes[0] = 0
            label[b, classes] = 1.0
        out.append(
            {
                "audio": rng.standard_normal((batch_size, T, 128)).astype(np.float32),
                "video_2d": np.abs(rng.standard_normal((batch_size, T * 8, 2048))).astype(
                    np.float32
                ),
                "video_3d": np.abs(rng.standard_normal((batch_size, T, 512))).astype(np.float32),
                "label": label,
            }
        )
    return out


# 'events' data: which classes occur, and in which modality.
SPEECH = 0  # in every video after epoch 1: 16 positives make JoMoLD's audio ratio (0.065) drop one
AUDIO_ONLY = (8, 4)  # Chainsaw, Cat: heard, never seen
VISUAL_ONLY = (1, 24)  # Car, Clapping: seen, never heard
AUDIO_VISUAL = (3, 20)  # Dog, Acoustic guitar: both
UNSEEN = 11  # Singing: in some videos' labels, neither heard nor seen (a wrong label)
EVENT_STRENGTH = 3.0  # the class pattern's scale against unit noise


def event_batches(batch_size: int, seed: int, epochs: list[int]) -> list[dict[str, np.ndarray]]:
    """Batches whose features carry their events, so both codes learn within a few steps
    (one batch per step; ``epochs`` the 1-based epoch of each).

    Features are unit Gaussian noise; an event spans a random run of segments, where the
    class's fixed random pattern (``EVENT_STRENGTH`` times a unit Gaussian vector) is
    added to the audio features, or to the 2D and 3D visual ones, or to both. Every video
    has one or two events of the classes above, each in its own modality. Speech: in
    epoch 1, in 10 of 16 videos, heard, seen or both (the Anchor learns what it sounds
    and looks like); from epoch 2, in every video, heard only except one video where it
    is seen only. The Anchor then finds that video's audio label the least likely and
    its visual label the most: JoMoLD drops its audio label (and the heard-only videos'
    visual labels).
    """
    rng = np.random.RandomState(seed + 1)
    pattern_a = rng.standard_normal((NUM_CLASSES, 128))
    pattern_2d = rng.standard_normal((NUM_CLASSES, 2048))
    pattern_3d = rng.standard_normal((NUM_CLASSES, 512))
    others = AUDIO_ONLY + VISUAL_ONLY + AUDIO_VISUAL
    out = []
    for epoch in epochs:
        label = np.zeros((batch_size, NUM_CLASSES), np.float32)
        audio = rng.standard_normal((batch_size, T, 128))
        video_2d = rng.standard_normal((batch_size, T * 8, 2048))
        video_3d = rng.standard_normal((batch_size, T, 512))
        seen_speech = rng.randint(batch_size)
        speaking = rng.permutation(batch_size) < batch_size * 10 // 16
        for b in range(batch_size):
            events = []
            if epoch > 1:
                events.append((SPEECH, "v" if b == seen_speech else "a"))
            elif speaking[b]:
                events.append((SPEECH, ("a", "v", "av")[rng.randint(3)]))
            for c in rng.choice(others, size=1 + (rng.rand() < 0.4), replace=False):
                events.append((c, "a" if c in AUDIO_ONLY else "v" if c in VISUAL_ONLY else "av"))
            if rng.rand() < 0.2:
                events.append((UNSEEN, ""))
            for c, where in events:
                label[b, c] = 1.0
                length = rng.randint(3, T + 1)
                start = rng.randint(0, T - length + 1)
                span = slice(start, start + length)
                if "a" in where:
                    audio[b, span] += EVENT_STRENGTH * pattern_a[c]
                if "v" in where:
                    video_2d[b, 8 * span.start : 8 * span.stop] += EVENT_STRENGTH * pattern_2d[c]
                    video_3d[b, span] += EVENT_STRENGTH * pattern_3d[c]
        out.append(
            {
                "audio": audio.astype(np.float32),
                "video_2d": video_2d.astype(np.float32),
                "video_3d": video_3d.astype(np.float32),
                "label": label,
            }
        )
    return out


def random_entry(name: str, shape: tuple, rng: np.random.RandomState) -> np.ndarray:
    """One entry of an authors' ``state_dict`` drawn for a recording, by its name: a matrix
    ``*weight`` as torch draws a linear layer's (``U(±1/√in)``), a LayerNorm weight
    ``1 + U(±0.1)``, anything else (biases, LayerNorm biases) ``U(±0.1)``, so that a wrong
    mapping of any of them shows. Float32 values (as float64): exact in either precision.
    The released-network fixtures (``tools/import_record.py``) and VALOR's step fixture
    (``tools/valor_parity.py``) draw with it."""
    if name.endswith("weight") and len(shape) == 2:
        x = rng.uniform(-1, 1, shape) / np.sqrt(shape[1])
    elif "norm" in name and name.endswith("weight"):
        x = 1.0 + rng.uniform(-0.1, 0.1, shape)
    else:
        x = rng.uniform(-0.1, 0.1, shape)
    return x.astype(np.float32).astype(np.float64)


def sample_positions(
    shapes: dict[str, dict[str, tuple]], seed: int, anchor: str = "cmpae"
) -> dict[str, np.ndarray]:
    """Fixed flat positions sampled in every tensor (``network/name`` -> indices)."""
    rng = np.random.RandomState(seed + 2)
    out = {}
    for network, table in tables(anchor).items():
        for name, _, _ in table:
            size = int(np.prod(shapes[network][name]))
            out[f"{network}/{name}"] = rng.randint(0, size, min(SAMPLES, size))
    return out


def token_projection(seed: int) -> np.ndarray:
    return np.random.RandomState(seed + 3).standard_normal((D, TOKEN_PROJ)).astype(np.float32)


def summarise(
    tensors: dict[str, dict[str, np.ndarray]], positions: dict[str, np.ndarray], prefix: str
) -> dict[str, np.ndarray]:
    """``{prefix/network/name/{sample,norm,scale}}``: sampled values, L2 norm, max |x|."""
    out = {}
    for network, named in tensors.items():
        for name, x in named.items():
            key = f"{network}/{name}"
            flat = comparable(key, x)
            out[f"{prefix}/{key}/sample"] = flat[positions[key]].astype(x.dtype)
            out[f"{prefix}/{key}/norm"] = np.array(np.linalg.norm(flat))
            out[f"{prefix}/{key}/scale"] = np.array(np.abs(flat).max())
    return out


# ---------------------------------------------------------------------------
# Initial weights as each code draws them (different generators: compared in law)


def init_statistics(x: np.ndarray) -> np.ndarray:
    """``[n, mean, std, max |x|]`` of a freshly initialised tensor."""
    flat = np.asarray(x, np.float64).ravel()
    return np.array([flat.size, flat.mean(), flat.std(), np.abs(flat).max()])


def init_deviation(ours: np.ndarray, theirs: np.ndarray) -> float:
    """How far our tensor's statistics are from theirs, in units of what two draws from
    one law allow (≤ 1: the same law at the 1e-9 level).

    A constant tensor (their std 0: biases 0, LayerNorm 1/0, class tokens 0) must be
    that constant. Otherwise, for the uniform laws torch draws from: the std within
    6 standard errors of the difference of two sample stds (0.63/√n relative), the mean
    within 6 standard errors, and max |x| within the range two samples' maxima share
    with probability 1 - 1e-9 (each is above ``b·(1 - ε)`` unless ``(1 - ε)^n < 1e-9``).
    """
    n, m_o, s_o, x_o = (float(v) for v in ours)
    _, m_t, s_t, x_t = (float(v) for v in theirs)
    if s_t == 0.0:
        return (abs(m_o - m_t) + s_o + abs(x_o - x_t)) / 1e-12
    eps = 1.0 - 1e-9 ** (1.0 / n)
    return max(
        abs(s_o / s_t - 1.0) / (6 * 0.63 / math.sqrt(n)),
        abs(m_o - m_t) / (6 * math.sqrt(2.0 / n) * s_t),
        abs(x_o / x_t - 1.0) / (eps / (1.0 - eps)),
    )


# ---------------------------------------------------------------------------
# Coverage: what a fixture exercises


def coverage(plan: Plan, fixture: dict, meta: dict, labels: list[np.ndarray]) -> list[tuple]:
    """``[(condition, required, met, detail)]`` for a recording: ``fixture`` its arrays,
    ``meta`` its meta (the schedule boundaries of the authors' options, counts only the
    recorder sees), ``labels`` the weak labels of its batches. ``met`` is None where the
    recording holds no data on the condition (the first fixtures' meta has neither the
    boundaries nor the counts, nor the initial weights)."""
    epochs = phase_of_step(plan)
    sampled = {e for e, _ in plan.phases}
    boundaries = meta.get("boundaries", {})
    counts = meta.get("counts", {})
    collab = [s for s, e in enumerate(epochs) if e >= 2]
    kd = [s for s in range(len(epochs)) if f"step{s}/kd_target_a" in fixture]
    rows = []

    def per_epoch(steps, value):
        """{epoch: summed value over its steps}."""
        out: dict[int, float] = {}
        for s in steps:
            out[epochs[s]] = out.get(epochs[s], 0.0) + float(value(s))
        return out

    def fmt(d):
        return " ".join(f"e{e}:{v:g}" for e, v in sorted(d.items()))

    needed = sorted({e for b in boundaries.values() for x in b for e in (x - 1, x)})
    missing = [e for e in needed if e not in sampled]
    rows.append(
        (
            "boundaries",
            (not missing) if boundaries else None,
            "; ".join(
                [f"{k} at epoch {', '.join(map(str, v))}" for k, v in boundaries.items()]
                + ([f"missing epochs {missing}"] if missing else [])
                + [f"sampled {sorted(sampled)}"]
            ),
        )
    )
    rows.append(
        (
            "parity",
            all(n >= 2 for _, n in plan.phases),
            f"steps per epoch {sorted({n for _, n in plan.phases})}",
        )
    )
    for m in ("a", "v"):
        drops = per_epoch(
            range(len(epochs)),
            lambda s, m=m: ((labels[s] > 0.5) & (fixture[f"step{s}/denoised_{m}"] < 0.5)).sum(),
        )
        rows.append(
            (f"drop_{m}", all(drops.get(epochs[s], 0) > 0 for s in collab), "dropped " + fmt(drops))
        )
    total = sum(
        ((labels[s] > 0.5) & (fixture[f"step{s}/denoised_{m}"] < 0.5)).sum()
        for s in range(len(epochs))
        for m in ("a", "v")
    )
    rows.append(("no_drop", total == 0, f"{int(total)} labels dropped"))
    for m in ("a", "v"):
        kept = per_epoch(kd, lambda s, m=m: (fixture[f"step{s}/kd_target_{m}"] > 0).sum())
        out_ = per_epoch(
            kd,
            lambda s, m=m: (
                (fixture[f"step{s}/denoised_{m}"] > 0.5) & (fixture[f"step{s}/kd_target_{m}"] == 0)
            ).sum(),
        )
        ok = bool(kd) and all(kept[e] > 0 and out_[e] > 0 for e in kept)
        rows.append((f"kd_{m}", ok, f"kept {fmt(kept)}; thresholded out {fmt(out_)}"))
    for m in ("a", "v"):
        pos = per_epoch(collab, lambda s, m=m: (fixture[f"step{s}/event_weight_{m}"] > 0).sum())
        frac = sum(
            (
                (fixture[f"step{s}/event_weight_{m}"] > 0)
                & (fixture[f"step{s}/event_weight_{m}"] < 1)
            ).sum()
            for s in collab
        )
        ok = bool(collab) and all(pos.get(epochs[s], 0) > 0 for s in collab) and frac > 0
        rows.append((f"w_{m}", ok, f"videos with w > 0 {fmt(pos)}; 0 < w < 1: {int(frac)}"))
    for m in ("a", "v"):
        ref = counts.get(f"cc_reference_{m}")
        if ref is None:
            rows.append((f"cc_{m}", None, "not counted by this recording"))
            continue
        by = per_epoch(collab, lambda s, ref=ref: ref[s])
        ok = bool(collab) and all(by.get(epochs[s], 0) > 0 for s in collab)
        rows.append((f"cc_{m}", ok, "entries from the Reference " + fmt(by)))
    init = [k for k in fixture if k.startswith("init/")]
    rows.append(("init", bool(init) or None, f"{len(init)} tensors' statistics"))
    return [(name, name in plan.required, met, detail) for name, met, detail in rows]


def fixture_coverage(path: str) -> tuple[Plan, list[tuple]]:
    """A recorded fixture's plan and :func:`coverage` rows (numpy only: no torch, no JAX)."""
    with np.load(path) as f:
        fixture = dict(f)
    meta = json.loads(str(fixture.pop("meta")))
    plan = plan_from_meta(meta)
    return plan, coverage(plan, fixture, meta, [b["label"] for b in batches(plan)])


def coverage_table(rows: list[tuple]) -> tuple[str, bool]:
    """The coverage rows as a table, and whether every required condition is met."""
    lines, ok = [], True
    width = max(len(COVERAGE[name]) for name, *_ in rows)
    for name, required, met, detail in rows:
        status = {True: "ok", False: "no", None: "not recorded"}[met]
        if required:
            status = "ok" if met else "MISSING"
        ok &= bool(met) or not required
        lines.append(f"{COVERAGE[name]:<{width}}  {status:<14}  {detail}")
    return "\n".join(lines), ok
