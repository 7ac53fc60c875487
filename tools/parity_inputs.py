"""What both halves of the parity harness share: the schedule phases, the identical
weights and batches drawn from ``numpy.random.RandomState``, the sampled positions
and summaries of large tensors, the tolerances. numpy only (the recording side runs
in a torch venv, the replaying side in the project's).
"""

from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from a torch venv: the package is not installed
    sys.path.insert(0, ROOT)

from coleaf_jax.models import authors_weights as aw  # noqa: E402  (numpy only)

PHASES = ((1, 5), (2, 5), (4, 5), (7, 5))  # (1-based epoch, steps): every schedule phase
SNAPSHOTS = (1, 5, 10, 15, 20)  # parameters / Adam moments after these steps
GRAD_STEPS = (1, 20)
SAMPLES = 64  # sampled positions per tensor
TOKEN_PROJ = 8
NUM_CLASSES, T, D = 25, 10, 512
OUTPUT_RTOL = 1e-5  # float32: outputs, losses, gradients of the first step
PARAM_RTOL = 1e-4  # float32: parameters and Adam moments after the first step
EXACT_RTOL = 1e-9  # float64: every group, every step (measured: at most 5e-12)
DRIFT_RTOL = 1e-1  # float32 after the first step: rounding amplified by training, as much
# in the authors' float32 code against its own float64 run (docs/fidelity.md)
DISCRETE = ("JoMoLD labels", "KD targets", "event-aware weights")
# Our float32 step against a float64 recording (compare --float32): the discrete groups'
# values (labels 0.05 / 0.9, weights) differ by their float32 rounding (measured 1.2e-8
# relative); a different decision differs by order one.
MIXED_DISCRETE_RTOL = 1e-7
NETWORKS = ("anchor", "audio", "visual")
# Parameters no output depends on: a softmax is invariant to a shift of its logits, so
# the bias of the temporal-attention logits (fc_frame_att) and the key bias of every
# attention (the middle third of in_proj_bias: q·b_k is the same for every key) have an
# exact gradient of 0, which both codes compute as float noise (~1e-10) that Adam turns
# into ±lr steps. They are zeroed before any comparison.
SHIFT_INVARIANT = {
    "anchor/fc_frame_att.bias",
    "audio/fc_frame_att.bias",
    "visual/fc_frame_att.bias",
}


def comparable(key: str, x: np.ndarray) -> np.ndarray:
    """``x`` (``network/name``) as a flat float64 array with its shift-invariant part zeroed."""
    flat = np.array(x, np.float64).ravel()
    if key in SHIFT_INVARIANT:
        flat[:] = 0.0
    elif key.endswith("in_proj_bias"):
        d = flat.size // 3
        flat[d : 2 * d] = 0.0
    return flat


# ---------------------------------------------------------------------------
# Identical inputs on both sides (numpy's frozen RandomState stream)


def initial_weights(
    shapes: dict[str, dict[str, tuple]], seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """Weights for every mapped entry of the three networks, in the authors' layout.

    Drawn as torch initialises them (linear U(±1/√in), attention in-projection
    xavier), except that attention biases, LayerNorm parameters and class
    tokens get small random values instead of 0/1 so that a wrong mapping of
    any of them shows. ``shapes[network][name]`` gives each shape.
    """
    rng = np.random.RandomState(seed)
    out = {}
    for network in NETWORKS:
        out[network] = {}
        fan_in = None
        for name, path, kind in aw.TABLES[network]:
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


def batches(batch_size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """20 batches in the LLP layout: features, weak labels (1-3 classes, Speech common)."""
    rng = np.random.RandomState(seed + 1)
    out = []
    for _ in range(sum(n for _, n in PHASES)):
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


def sample_positions(shapes: dict[str, dict[str, tuple]], seed: int) -> dict[str, np.ndarray]:
    """Fixed flat positions sampled in every tensor (``network/name`` -> indices)."""
    rng = np.random.RandomState(seed + 2)
    out = {}
    for network in NETWORKS:
        for name, _, _ in aw.TABLES[network]:
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
