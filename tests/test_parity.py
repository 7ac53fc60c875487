"""Parity with the authors' PyTorch code: the harness's own checks (tools/parity.py).

The fixtures in ``tests/fixtures/parity_*.npz`` hold what the authors' own
``main.train`` computed (torch, CPU) on identical weights and batches with dropout
off (docs/fidelity.md §1). They are *replayed* by the documented commands of
docs/fidelity.md, run as written by ``tests/test_docs_commands.py`` (scenario
``parity``), which exit 1 unless every group is within its tolerance:

* ``compare f64.npz`` / ``compare f32.npz`` (plan ``cmpae``: random features, epochs
  1, 2, 4, 7), ``compare --float32 f64.npz``, ``compare-recordings f32.npz f64.npz``;
* ``compare cmpae_events_f64.npz`` (plan ``cmpae_events``) and ``compare
  han_events_f64.npz`` (plan ``han_events``: HAN's MMIL_Net as the Anchor,
  ``configs/llp.py:coleaf_han``): every schedule boundary, every observable
  non-trivial, in float64 (every group within ``EXACT_RTOL`` at every step).

Here, without a replay (seconds): the tolerances, the weight conversion both ways
(the HAN Anchor's table included), that every plan samples each schedule boundary of
our config, and that every committed fixture still meets its plan's coverage
conditions (what the recorder asserted when it wrote it).
"""

import glob
import json
import os

import numpy as np
import pytest

from coleaf_jax.config import load_config_file
from coleaf_jax.models import authors_weights as aw
from tools import parity_inputs
from tools import parity_replay as parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def test_tolerances():
    """Exact in float64 (initial-weight statistics apart); decisions exact in float32
    (float32 rounding only against a float64 recording); the first float32 step tight,
    later steps within each observable's measured drift bound."""
    assert parity.tolerance("parameters after step 20", float64=True) == parity_inputs.EXACT_RTOL
    assert parity.tolerance("JoMoLD labels (epoch 2)", float64=False) == 0.0
    assert parity.tolerance("KD targets (epoch 4)", float64=False, mixed=True) == 1e-7
    assert parity.tolerance("gradients after step 1", float64=False) == parity_inputs.OUTPUT_RTOL
    assert parity.tolerance("parameters after step 1", float64=False) == parity_inputs.PARAM_RTOL
    drift = parity_inputs.DRIFT_RTOL
    assert parity.tolerance("parameters after step 20", float64=False) == drift["parameters"]
    assert (
        parity.tolerance("Adam exp_avg_sq after step 5", float64=False) == drift["Adam exp_avg_sq"]
    )
    assert parity.tolerance("Adam exp_avg after step 5", float64=False) == drift["Adam exp_avg"]
    assert parity.tolerance("loss nce_v (epoch 7)", float64=False) == drift["loss"]
    assert drift["parameters"] < 0.1 and drift["loss"] < 0.01  # the former blanket bound: 0.1
    assert parity.tolerance(parity.INIT_GROUP, float64=True) == parity_inputs.INIT_TOL
    table, ok = parity.report({"JoMoLD labels (epoch 2)": 1e-8}, float64=False)
    assert not ok and "FAIL" in table
    with pytest.raises(KeyError, match="no float32 drift bound"):
        parity.tolerance("something new (epoch 2)", float64=False)


def test_initial_weight_statistics():
    """Two draws of one law pass; another bound, a constant where the authors draw, or a
    draw where they have a constant fails."""
    rng = np.random.RandomState(0)
    stats = parity_inputs.init_statistics
    theirs = stats(rng.uniform(-1, 1, (512, 128)) / np.sqrt(128))
    assert (
        parity_inputs.init_deviation(stats(rng.uniform(-1, 1, (512, 128)) / np.sqrt(128)), theirs)
        <= 1
    )
    # xavier on (1536, 512) against U(±1/√512): 22 % apart in bound
    xavier = stats(rng.uniform(-1, 1, (1536, 512)) * np.sqrt(6 / 2048))
    linear = stats(rng.uniform(-1, 1, (1536, 512)) / np.sqrt(512))
    assert parity_inputs.init_deviation(xavier, linear) > 1
    assert parity_inputs.init_deviation(stats(np.zeros(512)), stats(np.zeros(512))) == 0
    assert parity_inputs.init_deviation(stats(np.full(512, 1e-3)), stats(np.zeros(512))) > 1
    assert parity_inputs.init_deviation(stats(np.zeros((512, 128))), theirs) > 1


def _shapes(fixture: str) -> dict:
    with np.load(os.path.join(FIXTURES, fixture)) as f:
        meta = json.loads(str(f["meta"]))
    return {n: {k: tuple(v) for k, v in meta["shapes"][n].items()} for n in parity_inputs.NETWORKS}


@pytest.mark.parametrize(
    "network, anchor, fixture",
    [
        ("anchor", "cmpae", "parity_cmpae_f32.npz"),
        ("audio", "cmpae", "parity_cmpae_f32.npz"),
        ("visual", "cmpae", "parity_cmpae_f32.npz"),
        ("anchor", "han", "parity_han_events_f64.npz"),
    ],
)
def test_weight_conversion_round_trips(network, anchor, fixture):
    """Ours -> the authors' state_dict -> ours is the identity, and every entry of their
    networks is either mapped or known to be unused."""
    weights = parity_inputs.initial_weights(_shapes(fixture), 0, anchor)[network]
    table = parity_inputs.tables(anchor)[network]
    ours = aw.from_authors(weights, table, network)
    back = aw.to_authors(ours, table)
    assert set(back) == set(weights)
    for k in weights:
        np.testing.assert_array_equal(back[k], weights[k])
    with pytest.raises(ValueError, match="unexpected entries"):
        aw.from_authors({**weights, "mystery.weight": np.zeros(1)}, table, network)
    with pytest.raises(KeyError, match="missing"):
        aw.from_authors({k: v for k, v in weights.items() if k != table[0][0]}, table, network)


@pytest.mark.parametrize("name", ["cmpae_events", "han_events"])
def test_plans_sample_every_schedule_boundary(name):
    """Each epoch where our config switches something on (the collaborative terms, KD and
    the class-token weights, each learning-rate decay within the run), and the epoch
    before it, are sampled; the recorder checks the same against the authors' options."""
    plan = parity_inputs.PLANS[name]
    c = load_config_file("configs/llp.py" + (":coleaf_han" if plan.anchor == "han" else ""))
    switches = {c.loss.collab_start_epoch + 1, c.loss.kd_warmup_epochs + 1}
    switches |= set(range(c.lr_decay_every_epochs + 1, c.num_epochs + 1, c.lr_decay_every_epochs))
    sampled = {e for e, _ in plan.phases}
    assert {e for s in switches for e in (s - 1, s)} <= sampled, (switches, sampled)
    assert len(switches) == 3


@pytest.mark.parametrize(
    "fixture",
    sorted(
        os.path.basename(p)
        for p in glob.glob(f"{FIXTURES}/parity_*.npz")
        if not os.path.basename(p).startswith("parity_valor_")  # VALOR's: tools/valor_parity.py
    ),
)
def test_committed_fixture_meets_its_coverage(fixture):
    """Every condition the fixture's plan requires (docs/fidelity.md §1's coverage
    tables), recomputed from the fixture's arrays and meta."""
    plan, rows = parity_inputs.fixture_coverage(os.path.join(FIXTURES, fixture))
    table, ok = parity_inputs.coverage_table(rows)
    assert ok, f"{fixture}:\n{table}"
    if plan.data == "events":  # the new plans: everything they require, nothing unrecorded
        assert {name for name, required, met, _ in rows if required and met} == set(plan.required)
