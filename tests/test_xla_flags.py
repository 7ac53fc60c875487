"""XLA:CPU's YNN fusions are off in every process that imports coleaf_jax (they crash the
CMPAE multi-seed step on CPUs without AVX-512; coleaf_jax/xla_flags.py), and a user's own
setting of the flag is kept."""

import os
import subprocess
import sys
import textwrap

from coleaf_jax import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG = xla_flags.YNN_FUSION_FLAG

# The fused multiply + reduce of the CMPAE heads' pooling under the seed vmap that crashes
# YNNPACK on AVX2 CPUs (docs/performance.md, "YNN fusions"), and a check of the compiled
# programs for YNN fusions.
MINIMAL = textwrap.dedent(
    """
    import jax, jax.numpy as jnp

    def ynn_fusions(fn, *args):
        return jax.jit(fn).lower(*args).compile().as_text().count("__ynn_fusion")

    a = jnp.ones((2, 4, 1, 10, 2, 25, 2))
    minimal = ynn_fusions(lambda a, b: (a * b).sum(3), a, a)
    """
)


def test_the_flag_is_added_unless_the_user_set_it():
    env = {}
    assert xla_flags.ynn_fusions_off(env) and env["XLA_FLAGS"] == f"{FLAG}="
    env = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert xla_flags.ynn_fusions_off(env)
    assert env["XLA_FLAGS"] == f"--xla_backend_optimization_level=0 {FLAG}="
    env = {"XLA_FLAGS": f"{FLAG}=+dot"}
    assert not xla_flags.ynn_fusions_off(env) and env["XLA_FLAGS"] == f"{FLAG}=+dot"


def _run(code: str, xla_flags_value: str) -> str:
    env = dict(os.environ, XLA_FLAGS=xla_flags_value)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_jax_alone_uses_ynn_fusions_so_the_check_can_fail():
    """Control: without coleaf_jax, this jaxlib puts the crashing reduction in a YNN fusion
    (when a jaxlib without YNN comes, this test says so and the guard can go)."""
    out = _run(MINIMAL + "print('ynn', minimal)", "")
    assert int(out.split("ynn")[-1]) >= 1, out


def test_cmpae_multi_seed_step_runs_without_ynn_fusions():
    """A CMPAE CoLeaF step vmapped over 2 seeds (tiny dims), in a fresh process that
    imports coleaf_jax first with the user's XLA_FLAGS free of the flag: no YNN fusion
    in its compiled program (nor in the minimal reproduction), and it runs."""
    code = (
        "import coleaf_jax\n"
        + MINIMAL
        + textwrap.dedent(
            """
        import numpy as np
        from coleaf_jax.config import load_config_file
        from coleaf_jax.training.seeds import run_keys, vmap_seeds
        from coleaf_jax.training.step import create_train_state, make_train_step
        from coleaf_jax.training.device_data import make_device_step, padded_order

        c = load_config_file("configs/synthetic.py:coleaf_cmpae")
        c.model.d_model = c.model.ffn_dim = 16
        c.batch_size = 4
        n, t, k = 8, 10, 2
        rng = np.random.default_rng(0)
        data = {
            "audio": rng.normal(size=(n, t, 128)).astype(np.float32),
            "video_2d": rng.normal(size=(n, 8 * t, 2048)).astype(np.float32),
            "video_3d": rng.normal(size=(n, t, 512)).astype(np.float32),
            "label": (rng.random((n, 25)) < 0.2).astype(np.float32),
        }
        sample = {key: jnp.asarray(v[:2]) for key, v in data.items()}
        sample["mask"] = jnp.ones((2, t), bool)
        keys = [run_keys(s) for s in range(k)]
        states = []
        for key in keys:
            state, anchor, reference, tx = create_train_state(c, key[0], sample, 2, 25)
            states.append(state)
        state = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *states)
        step = jax.jit(vmap_seeds(make_device_step(
            make_train_step(c, anchor, reference, tx, None, 2), c.batch_size)))
        orders = jnp.stack([jnp.asarray(padded_order(np.arange(n), c.batch_size))] * k)
        train_keys = jnp.stack([key[1] for key in keys])
        args = (state, data, orders, jnp.int32(0), jnp.int32(1), train_keys)
        step_ynn = step.lower(*args).compile().as_text().count("__ynn_fusion")
        for i in range(2):
            state, logs = step(state, data, orders, jnp.int32(i), jnp.int32(1), train_keys)
        loss = np.asarray(logs["anchor_loss"])
        assert np.isfinite(loss).all(), loss
        print("ynn", minimal, step_ynn)
        """
        )
    )
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(FLAG))
    out = _run(code, flags)
    assert out.split("ynn")[-1].split() == ["0", "0"], out
