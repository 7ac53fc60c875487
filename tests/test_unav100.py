"""UnAV-100: annotation parsing, 1-second pooling, segment truth, padding invariance, end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from coleaf_jax.config import load_config_file, override
from coleaf_jax.data import pipeline, synthetic, unav100
from coleaf_jax.evaluation import evaluate, metrics
from coleaf_jax.models import HANAnchor
from coleaf_jax.training import step as step_lib
from coleaf_jax.training import train


def _write_json(path, database):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"database": database}, f)


def _entry(duration=5.0, subset="train", anns=(([0.5, 2.0], "dog", 3),)):
    return {
        "duration": duration,
        "subset": subset,
        "annotations": [{"segment": list(s), "label": lab, "label_id": k} for s, lab, k in anns],
    }


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"subset": "train", "annotations": []}, "missing field 'duration'"),
        (_entry(duration=-1), "'duration' = -1.0 must be a positive"),
        (_entry(subset="training"), "field 'subset' = 'training'"),
        (_entry(anns=(([2.0, 1.0], "dog", 3),)), "annotations[0]: segment [2.0, 1.0] must satisfy"),
        (_entry(anns=(([1.0], "dog", 3),)), "annotations[0]: field 'segment'"),
        (_entry(anns=(([0, 1], "dog", 100),)), "field 'label_id' = 100"),
        (_entry(anns=(([0, 1], "dog", 3), ([1, 2], "cat", 3))), "label 'cat' for label_id 3"),
    ],
)
def test_bad_annotations_are_named(tmp_path, entry, message):
    path = str(tmp_path / "a.json")
    _write_json(path, {"vid1": entry})
    with pytest.raises(ValueError) as e:
        unav100.read_annotations(path)
    assert "'vid1'" in str(e.value) and message in str(e.value)


def test_events_past_the_end_are_clipped_or_skipped_with_a_count(tmp_path):
    path = str(tmp_path / "a.json")
    _write_json(
        path, {"v": _entry(duration=4.5, anns=(([1.0, 6.0], "dog", 3), ([4.6, 5.0], "cat", 4)))}
    )
    with pytest.warns(UserWarning, match="1 event"):
        videos, names, report = unav100.read_annotations(path)
    assert (report.clipped_events, report.skipped_events) == (1, 1)
    (event,) = videos["v"].events
    assert (event.onset, event.offset) == (1.0, 4.5)
    assert videos["v"].num_segments == 5 and names[3] == "dog" and names[0] == "class_0"


def test_segment_truth_overlap_rules():
    events = [unav100.Event(2, 1.5, 2.2), unav100.Event(0, 0.0, 0.3)]
    any_ = unav100.segment_truth(events, 4, 3, "any")
    half = unav100.segment_truth(events, 4, 3, "half")
    centre = unav100.segment_truth(events, 4, 3, "centre")
    assert any_[:, 2].tolist() == [False, True, True, False]
    assert half[:, 2].tolist() == [False, True, False, False]  # 0.5 s of second 1, 0.2 s of 2
    assert centre[:, 2].tolist() == [
        False,
        True,
        False,
        False,
    ]  # the middle 1.5 of second 1 is in [1.5, 2.2)
    assert any_[:, 0].tolist() == [True, False, False, False]
    assert not half[:, 0].any() and not centre[:, 0].any()  # 0.3 s, before the middle
    with pytest.raises(ValueError, match="overlap rule"):
        unav100.segment_truth(events, 4, 3, "most")


def test_pool_to_segments_by_feature_centre():
    x = np.arange(7, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    # Centres 0.16, 0.48, 0.80 | 1.12, 1.44, 1.76 | 2.08
    pooled = unav100.pool_to_segments(x, 3)
    np.testing.assert_allclose(pooled[:, 0], [1.0, 4.0, 6.0])
    # A fourth second has no feature centre: it takes the nearest one (x6 at 2.08 s).
    np.testing.assert_allclose(unav100.pool_to_segments(x, 4)[:, 0], [1.0, 4.0, 6.0, 6.0])
    # Features past the last segment are dropped.
    np.testing.assert_allclose(unav100.pool_to_segments(x, 2)[:, 0], [1.0, 4.0])


@pytest.fixture(scope="module")
def unav_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("unav"))
    synthetic.generate_unav(
        root, synthetic.SyntheticUnavConfig(num_videos=40, num_classes=6, max_duration=9.0, seed=1)
    )
    return root


def test_load_split_shapes_mask_and_labels(unav_root):
    with open(os.path.join(unav_root, unav100.ANNOTATION_FILE)) as f:
        db = json.load(f)["database"]
    d = unav100.load_split(unav_root, "val", num_classes=6)
    n, t = d["mask"].shape
    assert d["audio"].shape == (n, t, 128) and d["video_2d"].shape == (n, t, 1024)
    assert d["video_3d"].shape == (n, t, 1024) and d["label_audio"].shape == (n, t, 6)
    for i, vid in enumerate(d["id"]):
        entry = db[vid]
        assert entry["subset"] == "validation"
        assert d["mask"][i].sum() == np.ceil(entry["duration"])
        assert not d["mask"][i, int(np.ceil(entry["duration"])) :].any()
        classes = sorted({a["label_id"] for a in entry["annotations"]})
        assert np.flatnonzero(d["label"][i]).tolist() == classes
        events = [unav100.Event(a["label_id"], *a["segment"]) for a in entry["annotations"]]
        truth = unav100.segment_truth(events, int(d["mask"][i].sum()), 6)
        np.testing.assert_array_equal(d["label_audio"][i, : len(truth)], truth)
        assert not d["label_audio"][i, len(truth) :].any()
    np.testing.assert_array_equal(d["label_audio"], d["label_visual"])


def test_missing_and_malformed_feature_files(unav_root, tmp_path):
    import shutil

    root = str(tmp_path / "copy")
    shutil.copytree(unav_root, root)
    d = unav100.load_split(root, "test", num_classes=6)
    first = d["id"][0]
    os.remove(os.path.join(root, unav100.FEATURE_DIR, f"{first}_flow.npy"))
    with pytest.warns(UserWarning, match=r"skipped 1 of \d+ videos with a missing feature file"):
        fewer = unav100.load_split(root, "test", num_classes=6)
    assert len(fewer["label"]) == len(d["label"]) - 1
    bad = os.path.join(root, unav100.FEATURE_DIR, f"{d['id'][1]}_rgb.npy")
    np.save(bad, np.zeros((5, 7), np.float32))
    with pytest.raises(
        ValueError, match=r"_rgb\.npy: shape \(5, 7\), expected \(steps >= 1, 1024\)"
    ):
        unav100.load_split(root, "test", num_classes=6)


def test_bucketed_batches_crop_only_padding(unav_root):
    d = unav100.load_split(unav_root, "train", num_classes=6)
    lengths = d["mask"].sum(1)
    idx = np.argsort(lengths)[:3]  # the three shortest videos
    batch = pipeline.make_batch(d, idx, 4, bucket=4)
    t = batch["audio"].shape[1]
    assert t % 4 == 0 and t >= lengths[idx].max() and t - lengths[idx].max() < 4
    np.testing.assert_array_equal(batch["mask"][:3], d["mask"][idx, :t])
    assert not batch["mask"][3].any() and batch["video_mask"].tolist() == [1, 1, 1, 0]
    np.testing.assert_array_equal(batch["audio"][:3], d["audio"][idx, :t])


def _tiny_unav(variant="coleaf_han", **overrides):
    c = load_config_file(f"configs/unav100.py:{variant},synthetic")
    c.model.d_model = 16
    c.model.ffn_dim = 16
    c.data.synthetic_videos = 40
    c.data.num_classes = 6
    c.batch_size = 8
    c.num_epochs = 2
    c.loss.kd_warmup_epochs = 1
    c.loss.class_token_warmup_epochs = 1
    c.eval.batch_size = 16
    for key, value in overrides.items():
        override(c, key, value)
    return c


def _pad_time(batch, t, rng):
    """``batch`` padded to ``t`` segments with garbage features and zero mask."""
    out = dict(batch)
    t0 = batch["audio"].shape[1]
    for k in ("audio", "video_2d", "video_3d"):
        x = np.asarray(batch[k])
        junk = rng.standard_normal((x.shape[0], t - t0, x.shape[2])).astype(np.float32) * 5
        out[k] = jnp.asarray(np.concatenate([x, junk], axis=1))
    out["mask"] = jnp.pad(batch["mask"], ((0, 0), (0, t - t0)))
    return out


@pytest.mark.parametrize("variant", ["coleaf_cmpae"])  # the HAN layer, Reference and NCE included
def test_padding_never_changes_outputs_losses_or_gradients(unav_root, variant):
    config = _tiny_unav(
        variant,
        **{
            "model.dropout": 0.0,
            "model.reference_head_dropout": 0.0,
            "model.cmpae_visual_dropout": 0.0,
            "model.cmpae_residual_dropout": 0.0,
        },
    )
    d = unav100.load_split(unav_root, "train", num_classes=6)
    batch = {
        k: jnp.asarray(v) for k, v in pipeline.make_batch(d, np.arange(8), 8, bucket=1).items()
    }
    assert not bool(batch["mask"].all())  # some videos are shorter than the batch
    t0 = batch["audio"].shape[1]
    long = _pad_time(batch, t0 + 7, np.random.default_rng(0))
    state, anchor, ref, _ = step_lib.create_train_state(config, jax.random.key(0), batch, 5, 6)
    out_short = anchor.apply(
        {"params": state.anchor_params},
        batch["audio"],
        batch["video_2d"],
        batch["video_3d"],
        batch["mask"],
    )
    out_long = anchor.apply(
        {"params": state.anchor_params},
        long["audio"],
        long["video_2d"],
        long["video_3d"],
        long["mask"],
    )
    for k in ("video_prob", "video_prob_a", "video_prob_v"):
        np.testing.assert_allclose(out_short[k], out_long[k], atol=1e-5, err_msg=k)
    m = np.asarray(batch["mask"])
    np.testing.assert_allclose(
        np.asarray(out_short["seg_prob"])[m], np.asarray(out_long["seg_prob"])[:, :t0][m], atol=1e-5
    )
    tx = optax.sgd(1.0)
    state = state.replace(
        anchor_opt=tx.init(state.anchor_params), ref_opt=tx.init(state.ref_params)
    )
    step = jax.jit(step_lib.make_train_step(config, anchor, ref, tx, None, 5))
    key, epoch = jax.random.key(2), jnp.int32(1)  # every collaborative term is on
    s1, l1 = step(state, batch, epoch, key)
    s2, l2 = step(state, long, epoch, key)
    for k in l1:
        assert float(l1[k]) == pytest.approx(float(l2[k]), rel=1e-4, abs=1e-6), k
    for a, b in zip(
        jax.tree_util.tree_leaves((s1.anchor_params, s1.ref_params)),
        jax.tree_util.tree_leaves((s2.anchor_params, s2.ref_params)),
    ):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_single_visual_stream_features():
    """ONE-PEACE-style inputs: a width-0 ``video_3d`` is fused from the 2-D stream alone."""
    m = HANAnchor(num_classes=4, d_model=8, ffn_dim=8)
    a, v2 = jnp.ones((2, 3, 12)), jnp.ones((2, 3, 12))
    p = m.init(jax.random.key(0), a, v2, jnp.zeros((2, 3, 0)))
    assert "video_3d" not in p["params"]["embed_v"]
    assert m.apply(p, a, v2, jnp.zeros((2, 3, 0)))["video_prob"].shape == (2, 4)


def test_train_and_evaluate_end_to_end_on_variable_length_data(tmp_path):
    config = _tiny_unav("han", **{"data.on_device": False, "data.bucket": 8})
    result = train.train_and_evaluate(config, str(tmp_path), verbose=False)
    assert result["split"] == "test"
    for k in ("seg_av", "evt_av"):
        assert 0.0 <= result[k] <= 100.0
    data = pipeline.load_splits(config, str(tmp_path), ("test",))["test"]
    # Bucketed evaluation equals evaluation at the split's full length.
    anchor = step_lib.build_models(config, 6)[0]
    params = anchor.init(
        jax.random.key(5), *(jnp.asarray(data[k][:2]) for k in ("audio", "video_2d", "video_3d"))
    )["params"]
    full = evaluate.predict_split(evaluate.make_predict_fn(anchor), params, data, 8, bucket=0)
    bucketed = evaluate.predict_split(evaluate.make_predict_fn(anchor), params, data, 8, bucket=4)
    np.testing.assert_allclose(full["video_prob"], bucketed["video_prob"], atol=1e-5)
    m = data["mask"]
    np.testing.assert_allclose(full["seg_prob"][m], bucketed["seg_prob"][m], atol=1e-5)
    s = evaluate.score_split(full, data, metrics.THRESHOLD_PRESETS["standard"])
    assert metrics.selection_score(s, "av") == pytest.approx((s["seg_av"] + s["evt_av"]) / 2)


@pytest.mark.parametrize(
    "content, needle",
    [
        ("[" * 100000 + "]" * 100000, "nested"),  # a RecursionError traceback before
        (b"\xff\xfe{}", "not UTF-8"),  # a UnicodeDecodeError traceback before
        ('{"database": ', "not valid JSON"),
    ],
)
def test_a_damaged_annotation_file_is_one_error_naming_it(tmp_path, content, needle):
    path = tmp_path / "annotations.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(ValueError) as info:
        unav100.read_annotations(str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message
