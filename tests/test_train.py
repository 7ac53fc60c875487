"""Training: the pmap step equals the jit step, learning happens, resume is exact, CLI outputs."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from coleaf_jax.config import override
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import evaluate, metrics, parsing, report, runs
from coleaf_jax.training import device_data, records, train
from coleaf_jax.training import step as step_lib
from configs import synthetic as synthetic_config


def tiny_config(variant="", **overrides):
    c = synthetic_config.get_config(variant)
    c.model.d_model = 16
    c.model.ffn_dim = 16
    c.data.synthetic_videos = 30
    c.batch_size = 8
    c.num_epochs = 3
    c.lr_decay_every_epochs = 2
    c.loss.kd_warmup_epochs = 1
    c.loss.class_token_warmup_epochs = 1
    c.eval.batch_size = 16
    for key, value in overrides.items():
        override(c, key, value)
    return c


@pytest.fixture(scope="module")
def data_workdir(tmp_path_factory):
    """A workdir whose data/ holds the tiny synthetic dataset (prepared once)."""
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def data(data_workdir):
    return pipeline.load_splits(tiny_config(), data_workdir)


def _batch(data, n=8):
    return {
        k: jnp.asarray(v) for k, v in pipeline.make_batch(data["train"], np.arange(n), n).items()
    }


def _leaves_close(a, b, atol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=atol)


@pytest.mark.skipif(
    jax.local_device_count() < 2,
    reason="needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)",
)
@pytest.mark.parametrize("variant", ["coleaf_han", "han", "coleaf_cmpae"])
def test_pmap_step_equals_single_device_step(data, variant, tmp_path):
    # High JoMoLD ratios so that the second step really drops labels (CMPAE).
    ratios = str(tmp_path / "ratios.npz")
    np.savez(ratios, audio=np.full(25, 0.5, np.float32), visual=np.full(25, 0.7, np.float32))
    # Dropout on (the defaults): each example's masks come from its position in the
    # global batch, so the device layout does not change them (issue 13, item 6).
    config = tiny_config(variant, **{"loss.denoise_ratios": ratios})
    assert (
        min(
            config.model.dropout,
            config.model.reference_head_dropout,
            config.model.cmpae_visual_dropout,
            config.model.cmpae_residual_dropout,
        )
        > 0
    )
    batch = _batch(data)
    batch["video_mask"] = batch["video_mask"].at[-1].set(0.0)  # a padded video on one device only
    state, anchor, ref, _ = step_lib.create_train_state(config, jax.random.key(0), batch, 5, 25)
    # Plain SGD makes every parameter change proportional to its gradient: Adam would
    # blow float rounding of near-zero gradients up to ±lr and hide the comparison.
    tx = optax.sgd(0.1)
    state = state.replace(
        anchor_opt=tx.init(state.anchor_params), ref_opt=tx.init(state.ref_params)
    )
    # 1 step per epoch: the JoMoLD ratio is annealed to full strength by the second
    # step, whose batch-level ranking (all-gathered under pmap) must match one device.
    single = jax.jit(step_lib.make_train_step(config, anchor, ref, tx, None, 1))
    multi = jax.pmap(
        step_lib.make_train_step(config, anchor, ref, tx, "batch", 1),
        axis_name="batch",
        in_axes=(0, 0, None, None),
    )
    key, epoch = jax.random.key(3), jnp.int32(2)  # every collaborative term is on
    s1, l1 = single(state, batch, epoch, key)
    s1, l1 = single(s1, batch, epoch, key)
    sharded = {k: v.reshape((2, -1) + v.shape[1:]) for k, v in batch.items()}
    s2, l2 = multi(flax.jax_utils.replicate(state), sharded, epoch, key)
    s2, l2 = multi(s2, sharded, epoch, key)
    _leaves_close(s1, flax.jax_utils.unreplicate(s2), atol=1e-5)
    for k in l1:
        assert float(l1[k]) == pytest.approx(float(l2[k][0]), rel=1e-4, abs=1e-6), k
    if config.loss.denoise:
        assert float(l1["denoised_share_v"]) > 0


@pytest.mark.parametrize("variant", ["coleaf_han"])  # pooling + VJP; CMPAE shares the VJP path
def test_optimised_step_equals_plain_step(data_workdir, variant):
    # Optimised: frames averaged before the projection (HAN Anchor, Reference), the
    # Anchor's forward pass run once and pulled back by its VJP. Plain: every frame
    # projected, the Anchor run again inside its loss. Same losses and gradients.
    config = tiny_config(variant, learning_rate=1.0)
    raw = pipeline.load_splits(config, data_workdir, ("train",), pool_frames=False)["train"]
    batch_raw = {k: jnp.asarray(v) for k, v in pipeline.make_batch(raw, np.arange(8), 8).items()}
    assert batch_raw["video_2d"].shape[1] == 8 * batch_raw["audio"].shape[1]
    batch_opt = dict(batch_raw)
    if pipeline.can_pool_frames(config):
        batch_opt["video_2d"] = batch_raw["video_2d"].reshape(8, -1, 8, 2048).mean(2)
    plain_config = tiny_config(variant, learning_rate=1.0, **{"model.pool_frames_first": False})
    state, anchor, ref, _ = step_lib.create_train_state(config, jax.random.key(0), batch_opt, 5, 25)
    _, plain_anchor, plain_ref, _ = step_lib.create_train_state(
        plain_config, jax.random.key(0), batch_raw, 5, 25
    )
    tx = optax.identity()  # the parameter change is -lr(epoch) times the gradient
    state = state.replace(
        anchor_opt=tx.init(state.anchor_params), ref_opt=tx.init(state.ref_params)
    )
    opt = jax.jit(step_lib.make_train_step(config, anchor, ref, tx, None, 5))
    plain = jax.jit(
        step_lib.make_train_step(plain_config, plain_anchor, plain_ref, tx, None, 5, plain=True)
    )
    key, epoch = jax.random.key(3), jnp.int32(2)  # every collaborative term is on
    s1, l1 = opt(state, batch_opt, epoch, key)
    s2, l2 = plain(state, batch_raw, epoch, key)
    assert set(l1) == set(l2)
    for k in l1:
        assert float(l1[k]) == pytest.approx(float(l2[k]), rel=1e-4, abs=1e-6), k
    grads = lambda s: jax.tree_util.tree_map(
        lambda a, b: a - b, state.anchor_params, s.anchor_params
    )
    g1, g2 = grads(s1), grads(s2)
    assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(g1)) > 1e-3
    _leaves_close(g1, g2, atol=2e-5)
    _leaves_close(s1.ref_params, s2.ref_params, atol=2e-5)


def test_steps_reduce_the_loss_and_are_reproducible(data):
    config = tiny_config(learning_rate=3e-3)
    batch = _batch(data)
    state, anchor, ref, tx = step_lib.create_train_state(config, jax.random.key(0), batch, 5, 25)
    step = jax.jit(step_lib.make_train_step(config, anchor, ref, tx))
    first = None
    s = state
    for _ in range(15):
        s, logs = step(s, batch, jnp.int32(0), jax.random.key(1))
        first = first if first is not None else float(logs["backbone"])
    assert float(logs["backbone"]) < 0.7 * first
    s_again = state
    for _ in range(15):
        s_again, _ = step(s_again, batch, jnp.int32(0), jax.random.key(1))
    _leaves_close(s, s_again, atol=0)
    # Different epochs switch the collaborative terms on (KD, NCE, correlation).
    _, l0 = step(state, batch, jnp.int32(0), jax.random.key(1))
    _, l2 = step(state, batch, jnp.int32(2), jax.random.key(1))
    assert float(l2["anchor_loss"]) > float(l0["anchor_loss"])
    assert float(l2["ref_loss"]) != float(l0["ref_loss"])


def test_interrupted_run_resumes_to_the_same_state(data, tmp_path):
    config = tiny_config()
    full = train.train_and_evaluate(config, str(tmp_path / "full"), data=data, verbose=False)

    class Killed(Exception):
        pass

    def kill_after_two(epoch, state):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train.train_and_evaluate(
            config, str(tmp_path / "resumed"), data=data, verbose=False, on_epoch_end=kill_after_two
        )
    states = {}
    resumed = train.train_and_evaluate(
        config,
        str(tmp_path / "resumed"),
        data=data,
        verbose=False,
        on_epoch_end=lambda e, s: states.setdefault(e, s),
    )
    assert list(states) == [3]  # only the missing epoch ran
    assert {k: resumed[k] for k in metrics.SCORE_KEYS} == pytest.approx(
        {k: full[k] for k in metrics.SCORE_KEYS}, abs=1e-9
    )
    lines = open(tmp_path / "full" / "metrics.jsonl").read().splitlines()
    assert len(lines) == 3 and "val" in json.loads(lines[-1])


def test_train_writes_scores_and_eval_restores_them(data, data_workdir, tmp_path):
    config = tiny_config("han", num_epochs=2)
    workdir = str(tmp_path / "run")
    result = train.train_and_evaluate(config, workdir, data=data, verbose=False)
    saved = json.load(open(os.path.join(workdir, "test_metrics.json")))
    assert set(metrics.SCORE_KEYS) <= set(saved)
    assert all(isinstance(saved[k], float) for k in metrics.SCORE_KEYS)
    assert saved["config"] == "han_synthetic" and saved["step"] > 0
    assert saved == result
    # Time to result, recorded: the test evaluation and the whole run in the result, the
    # phases of every epoch (and of the first: data, first step) in metrics.jsonl.
    assert 0 < saved["test_seconds"] < saved["run_seconds"]
    rows = records.read_metrics(os.path.join(workdir, "metrics.jsonl"))
    first, second = rows[1], rows[2]
    assert 0 <= first["data_seconds"] < first["first_step_seconds"]
    assert "first_step_seconds" not in second
    for row in (first, second):
        assert row["train_seconds"] > 0 and row["val_seconds"] > 0
        assert row["seconds"] == pytest.approx(row["train_seconds"] + row["val_seconds"], abs=0.5)
    # eval.py's path: restore the best checkpoint and score test again.
    config.data.root = os.path.join(data_workdir, "data")
    again = runs.evaluate_checkpoint(
        config, workdir, split="test", verbose=False, output=str(tmp_path / "again.json")
    )
    assert {k: again[k] for k in metrics.SCORE_KEYS} == pytest.approx(
        {k: saved[k] for k in metrics.SCORE_KEYS}, abs=1e-9
    )
    # --select-thresholds: chosen on val for this checkpoint, stored next to it, reused.
    selected = runs.evaluate_checkpoint(config, workdir, split="test", verbose=False, select=True)
    path = runs.thresholds_path(workdir, saved["epoch"])
    stored = json.load(open(path))
    assert stored["base"] == "standard" and len(stored["video_v"]) == 25
    assert set(stored["video_v"]) <= set(metrics.DEFAULT_THRESHOLD_GRID)
    assert selected["thresholds"] == "standard+selected"
    os.utime(path, (0, 0))
    runs.evaluate_checkpoint(config, workdir, split="test", verbose=False, select=True)
    assert os.path.getmtime(path) == 0  # reused, not searched again

    # parse.py's path: a feature folder without annotations -> typed events; the same
    # decisions as evaluation (events rebuilt into segments equal the scored decisions).
    out = str(tmp_path / "parsed")
    parsed = parsing.parse_videos(
        config, workdir, out, features=config.data.root, timelines=2, verbose=False
    )
    assert (
        parsing.read_events(os.path.join(out, "events.csv"))
        == parsing.read_events(os.path.join(out, "events.jsonl"))
        == parsed
    )
    test = data["test"]
    _, anchor, params, _ = runs.restore_anchor(config, workdir, test)
    probs = evaluate.predict_with_config(config, anchor, params, test)
    pred_a, pred_v = evaluate.decisions(probs, evaluate.thresholds_from_config(config))
    index = {vid: i for i, vid in enumerate(test["id"])}
    rebuilt_a, rebuilt_v = np.zeros_like(pred_a), np.zeros_like(pred_v)
    names = list(pipeline.class_names(config, workdir))
    for r in parsed:
        if r["video"] in index:
            sl = (
                index[r["video"]],
                slice(int(r["onset"]), int(r["offset"])),
                names.index(r["class"]),
            )
            rebuilt_a[sl] |= r["type"] != "visible-only"
            rebuilt_v[sl] |= r["type"] != "audible-only"
    np.testing.assert_array_equal(rebuilt_a, pred_a)
    np.testing.assert_array_equal(rebuilt_v, pred_v)
    assert len(os.listdir(os.path.join(out, "timelines"))) == 2
    # The run report: one self-contained HTML file with its sections and pictures.
    html = open(report.build_report(config, workdir, test=test, num_timelines=2)).read()
    for section in (
        "Training curves",
        "Test scores",
        "Table 5, HAN",
        "Per-class segment F-scores",
        "Timelines: best and worst",
    ):
        assert section in html, section
    assert html.count("data:image/png;base64,") == 1 + 2 * 2  # curves, 2 best + 2 worst


def test_device_resident_data_trains_exactly_like_the_host_pipeline(data, tmp_path):
    # Parameters with an exactly-zero gradient (a bias before a softmax over T, the
    # attention key bias) pick up float-rounding noise that Adam scales to ±lr, so
    # compare what the parameters compute: the logged losses and the predictions.
    logs, preds = {}, {}
    modes = {
        "host": {"data.on_device": False},
        "device": {"data.on_device": True},
        "scan": {"data.on_device": True, "scan_epoch": True},
    }
    for mode, overrides in modes.items():
        config = tiny_config("han", num_epochs=2, **overrides)
        states = {}
        workdir = tmp_path / mode
        train.train_and_evaluate(
            config,
            str(workdir),
            data=data,
            verbose=False,
            on_epoch_end=lambda e, s: states.setdefault(e, s),
        )
        logs[mode] = [json.loads(line)["train"] for line in open(workdir / "metrics.jsonl")]
        anchor = step_lib.build_models(config, 25)[0]
        preds[mode] = evaluate.predict_split(
            evaluate.make_predict_fn(anchor), states[2].anchor_params, data["val"], 16
        )
    for mode in ("device", "scan"):
        for a, b in zip(logs[mode], logs["host"]):
            assert a == pytest.approx(b, rel=1e-5), mode
        for k in preds[mode]:
            np.testing.assert_allclose(preds[mode][k], preds["host"][k], atol=1e-5, err_msg=mode)


def test_padded_order_and_device_gather():
    order = device_data.padded_order(np.array([4, 0, 2, 1, 3]), 4)
    np.testing.assert_array_equal(order, [4, 0, 2, 1, 3, -1, -1, -1])
    data = {
        "audio": np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 3), np.float32),
        "video_2d": np.zeros((5, 2, 4), np.float32),
        "video_3d": np.zeros((5, 2, 2), np.float32),
        "label": np.eye(5, dtype=np.float32),
    }
    seen = device_data.make_device_step(lambda s, b, e, k: b, batch_size=4)(
        None, data, jnp.asarray(order), jnp.int32(1), 0, None
    )
    host = pipeline.make_batch(data, np.array([3]), 4)
    for k in host:
        np.testing.assert_array_equal(np.asarray(seen[k]), host[k], err_msg=k)


def test_many_seeds_at_once_equal_separate_runs(data, tmp_path):
    from coleaf_jax.training import seeds

    config = tiny_config("han", num_epochs=2, num_seeds=2, seed=5)
    result = seeds.train_seeds(config, str(tmp_path / "seeds"), data=data, verbose=False)
    assert result["seeds"] == [5, 6] and len(result["per_seed"]) == 2
    saved = json.load(open(tmp_path / "seeds" / "seeds_metrics.json"))
    assert set(saved["mean"]) == set(metrics.SCORE_KEYS)
    for k in metrics.SCORE_KEYS:
        values = [s[k] for s in saved["per_seed"]]
        assert saved["mean"][k] == pytest.approx(np.mean(values))
        assert saved["std"][k] == pytest.approx(np.std(values, ddof=1))
    # Seed k of the vmapped run is the single-device run with that seed.
    for i, seed in enumerate((5, 6)):
        single = train.train_and_evaluate(
            tiny_config("han", num_epochs=2, seed=seed, num_devices=1),
            str(tmp_path / f"single{seed}"),
            data=data,
            verbose=False,
        )
        assert result["best_epochs"][i] == single["epoch"]
        assert {k: result["per_seed"][i][k] for k in metrics.SCORE_KEYS} == pytest.approx(
            {k: single[k] for k in metrics.SCORE_KEYS}, abs=1e-6
        )
        # ... and its validation curve is the single run's (metrics.jsonl, one row per epoch).
        rows = records.read_metrics(str(tmp_path / f"single{seed}" / "metrics.jsonl"))
        assert saved["val_selection_per_epoch"][i] == pytest.approx(
            [rows[e]["val_selection"] for e in sorted(rows)], abs=1e-6
        )
