"""Parameter counts and XLA-estimated FLOPs per video of the Anchor and the Reference.

    python -m coleaf_jax.flops --config configs/llp.py [--batch 16]

The Anchor is costed as deployed (inference forward, no class tokens, no
Reference); the Reference with and without class tokens (training forward
is the same graph without dropout). The numbers are XLA's estimates for our
implementation, which averages the 8 frames of each second *before* the
2048→D projection wherever that is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from coleaf_jax import registry
from coleaf_jax.data.classes import LLP_FEATURES, LLP_FRAMES_PER_SEGMENT, LLP_NUM_SEGMENTS
from coleaf_jax.models import reference as reference_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file.", lock_config=True)
flags.DEFINE_integer("batch", 16, "Videos per costed forward (FLOPs are reported per video).")

# docs/method.md §8: the paper's Reference cost on LLP.
PAPER_REFERENCE_GFLOPS = {"without class tokens": 12.7, "with class tokens": 18.0}


def _inputs(batch: int, num_segments: int = LLP_NUM_SEGMENTS):
    frames = num_segments * LLP_FRAMES_PER_SEGMENT
    return (
        jnp.zeros((batch, num_segments, LLP_FEATURES["vggish"][1])),
        jnp.zeros((batch, frames, LLP_FEATURES["res152"][1])),
        jnp.zeros((batch, num_segments, LLP_FEATURES["r2plus1d_18"][1])),
        jnp.ones((batch, num_segments), bool),
    )


def cost(module, batch: int) -> tuple[int, float]:
    """``(parameters, forward FLOPs per video)`` of a module on LLP-shaped inputs."""
    inputs = _inputs(batch)
    params = module.init(jax.random.key(0), *inputs)
    n_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
    compiled = jax.jit(lambda p, *x: module.apply(p, *x)).lower(params, *inputs).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return n_params, float(analysis["flops"]) / batch


def report(config, batch: int) -> dict[str, tuple[int, float]]:
    """Costs of the Anchor and of the Reference with/without class tokens."""
    num_classes = 25
    m = config.model
    rows = {
        f"Anchor ({m.anchor}, inference)": cost(
            registry.anchor(m.anchor).build(m, num_classes), batch
        )
    }
    for tokens in (False, True):
        ref = reference_lib.build(m, num_classes, class_tokens=tokens)
        rows[f"Reference {'with' if tokens else 'without'} class tokens"] = cost(ref, batch)
    return rows


def main(argv):
    del argv
    rows = report(FLAGS.config, FLAGS.batch)
    print(f"{'module':<36}{'params':>12}{'GFLOP/video':>14}")
    for name, (n, f) in rows.items():
        print(f"{name:<36}{n:>12,}{f / 1e9:>14.4f}")
    d = FLAGS.config.model.d_model
    frames, width = LLP_NUM_SEGMENTS * LLP_FRAMES_PER_SEGMENT, LLP_FEATURES["res152"][1]
    # The PyTorch code projects all 80 frames, then averages: 7/8 of that layer is extra.
    extra = 2 * frames * width * d * (1 - 1 / LLP_FRAMES_PER_SEGMENT) / 1e9
    print(
        f"\nThe PyTorch code projects every frame before averaging: +{extra:.4f} G per visual"
        " embedding per video.\nThe paper's Reference cost (12.7 G without / 18.0 G with class"
        " tokens) then equals, in videos:"
    )
    for key, paper in PAPER_REFERENCE_GFLOPS.items():
        ours = rows[f"Reference {key}"][1] / 1e9
        print(
            f"  {key:<22} ours {ours:.4f} G -> {paper / ours:6.1f} videos; "
            f"PyTorch-style {ours + extra:.4f} G -> {paper / (ours + extra):6.1f} videos"
        )


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
