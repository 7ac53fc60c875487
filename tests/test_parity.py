"""Parity with the authors' PyTorch code, replayed from fixtures recorded by tools/parity.py.

The fixtures hold what the authors' own ``main.train`` computed (torch, CPU) on
identical weights and batches with dropout off, in every schedule phase: 5
steps each of epochs 1, 2, 4 and 7. Replaying them needs no torch.

* float64 (``parity_cmpae_f64.npz``): both codes in double precision, so any
  difference is a difference in the maths; every group (forward outputs, each
  loss term, JoMoLD labels, KD targets, event-aware weights, correlation
  teachers, gradients, parameters and Adam moments after steps 1-20) within
  ``EXACT_RTOL``. Run in a subprocess: float64 is a process-wide JAX switch.
* float32 (``parity_cmpae_f32.npz``): the precision we train in; the first
  step within ``OUTPUT_RTOL`` / ``PARAM_RTOL``, the discrete decisions exact,
  later steps within ``DRIFT_RTOL`` (float32 rounding amplified by training,
  as large in the authors' float32 code against its own float64 run).
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import parity  # noqa: E402


def test_parity_float64_every_phase():
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "parity.py"),
            "compare",
            os.path.join(FIXTURES, "parity_cmpae_f64.npz"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every group within tolerance" in out.stdout
    # Every phase and every kind of observable was compared.
    for group in (
        "forward: Anchor a_prob",
        "loss mutual (epoch 2)",
        "loss ref_kd_v (epoch 4)",
        "JoMoLD labels (epoch 7)",
        "KD targets (epoch 7)",
        "correlation teachers (epoch 4)",
        "gradients after step 20",
        "parameters after step 20",
        "Adam exp_avg_sq after step 20",
    ):
        assert group in out.stdout, group


def test_parity_float32():
    errors = parity.replay(os.path.join(FIXTURES, "parity_cmpae_f32.npz"))
    table, ok = parity.report(errors, float64=False)
    assert ok, table
    assert errors["parameters after step 1"] <= parity.PARAM_RTOL
    assert errors["gradients after step 1"] <= parity.OUTPUT_RTOL
    assert errors["JoMoLD labels (epoch 2)"] == 0.0 and errors["KD targets (epoch 4)"] == 0.0


@pytest.mark.parametrize("network", ["anchor", "audio", "visual"])
def test_weight_conversion_round_trips(network):
    """Ours -> the authors' state_dict -> ours is the identity, and every entry of their
    networks is either mapped or known to be unused."""
    import numpy as np

    from coleaf_jax import authors_weights as aw

    meta = parity.json.loads(str(np.load(os.path.join(FIXTURES, "parity_cmpae_f32.npz"))["meta"]))
    shapes = {n: {k: tuple(v) for k, v in meta["shapes"][n].items()} for n in parity.NETWORKS}
    weights = parity.initial_weights(shapes, 0)[network]
    table = aw.TABLES[network]
    ours = aw.from_authors(weights, table, network)
    back = aw.to_authors(ours, table)
    assert set(back) == set(weights)
    for k in weights:
        np.testing.assert_array_equal(back[k], weights[k])
    with pytest.raises(ValueError, match="unexpected entries"):
        aw.from_authors({**weights, "mystery.weight": np.zeros(1)}, table, network)
    with pytest.raises(KeyError, match="missing"):
        aw.from_authors({k: v for k, v in weights.items() if k != table[0][0]}, table, network)
