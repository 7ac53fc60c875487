"""Training with segment pseudo-labels (docs/method.md §9): files, label derivation, the extra loss."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax.config import load_config_file
from coleaf_jax.data import llp, pipeline, synthetic
from coleaf_jax.training import losses
from coleaf_jax.training import step as step_lib


def _write_pl(root, vid, audio=None, visual=None):
    for key, x in (("pl_audio", audio), ("pl_visual", visual)):
        folder = os.path.join(root, llp.PSEUDO_LABEL_FOLDERS[key])
        os.makedirs(folder, exist_ok=True)
        np.save(os.path.join(folder, f"{vid}.npy"), np.zeros((10, 25)) if x is None else x)


def test_loader_reads_both_folders_in_id_order(tmp_path):
    root = str(tmp_path)
    a = np.zeros((10, 25), np.int64)
    a[2:5, 3] = 1
    _write_pl(root, "vid_one____", audio=a)
    _write_pl(root, "vid_two____", visual=np.ones((10, 25), bool))
    pl = llp.load_pseudo_labels(root, ["vid_two____", "vid_one____"])
    assert pl["pl_audio"].shape == (2, 10, 25) and pl["pl_audio"].dtype == np.float32
    np.testing.assert_array_equal(pl["pl_audio"][1], a)
    assert pl["pl_visual"][0].all() and not pl["pl_visual"][1].any()


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((10, 24)), r"expected shape \(10, 25\) \(segments, classes\), got \(10, 24\)"),
        (np.full((10, 25), 0.5), r"expected binary values 0/1, found 250 others \(e.g. \[0.5"),
        (np.array([["x"] * 25] * 10), "expected 0/1 numbers, got dtype <U1"),
    ],
)
def test_bad_pseudo_label_files_are_named(tmp_path, bad, message):
    _write_pl(str(tmp_path), "abc", visual=bad)
    with pytest.raises(llp.LLPDataError, match=message) as e:
        llp.load_pseudo_labels(str(tmp_path), ["abc"])
    assert os.path.join("CLIP", "segment_pseudo_labels", "abc.npy") in str(e.value)


def test_missing_pseudo_label_files_are_counted(tmp_path):
    _write_pl(str(tmp_path), "a")
    with pytest.raises(llp.MissingFeatureError, match=r"2 of 3 pseudo-label files missing"):
        llp.load_pseudo_labels(str(tmp_path), ["a", "b", "c"])


def test_modality_labels_and_segment_bce_by_hand():
    pl_a = jnp.zeros((2, 3, 2)).at[0, 1, 0].set(1.0)
    pl_v = jnp.zeros((2, 3, 2)).at[1, 2, 1].set(1.0)
    y_a, y_v = losses.pseudo_modality_labels(pl_a, pl_v)
    np.testing.assert_array_equal(y_a, [[1, 0], [0, 0]])
    np.testing.assert_array_equal(y_v, [[0, 0], [0, 1]])
    rng = np.random.default_rng(0)
    seg = jnp.asarray(rng.uniform(0.05, 0.95, (2, 3, 2, 2)), jnp.float32)
    mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    vm = jnp.array([1.0, 1.0])
    got = losses.pseudo_label_segment_bce(seg, pl_a, pl_v, mask, vm)
    target = np.stack([pl_a, pl_v], axis=2)
    s = np.asarray(seg)
    bce = -(target * np.log(s) + (1 - target) * np.log(1 - s))
    expected = bce[np.asarray(mask)].mean()  # padded segment (0, 2) excluded
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # A padding video (video_mask 0) does not count either.
    only_first = losses.pseudo_label_segment_bce(seg, pl_a, pl_v, mask, jnp.array([1.0, 0.0]))
    assert float(only_first) == pytest.approx(bce[0, :2].mean(), rel=1e-5)
    # On the logits (VALOR's form): the same loss where no probability saturates.
    z = jnp.log(seg) - jnp.log1p(-seg)
    from_logits = losses.pseudo_label_segment_bce(z, pl_a, pl_v, mask, vm, logits=True)
    assert float(from_logits) == pytest.approx(expected, rel=1e-5)


def test_simulated_teacher_rates():
    rng = np.random.default_rng(0)
    perfect = synthetic.TeacherConfig(miss=0.0, jitter=0.0, false_alarm=0.0)
    track = np.zeros((10, 25), bool)
    track[2:6, 4] = track[0:10, 7] = True
    np.testing.assert_array_equal(synthetic.teacher_pseudo_labels(track, rng, perfect), track)
    # Misses: each true event dropped with probability 0.2 (4,000 events).
    teacher = synthetic.TeacherConfig(miss=0.2, jitter=0.0, false_alarm=0.0)
    kept = np.mean(
        [
            synthetic.teacher_pseudo_labels(track, rng, teacher)[:, [4, 7]].any(0)
            for _ in range(2000)
        ]
    )
    assert kept == pytest.approx(0.8, abs=0.03)
    # False alarms: 1-3 s of a class in the weak label but absent from this modality.
    teacher = synthetic.TeacherConfig(miss=0.0, jitter=0.0, false_alarm=1.0)
    weak = np.zeros(25, bool)
    weak[[4, 7, 11]] = True
    for _ in range(50):
        pl = synthetic.teacher_pseudo_labels(track, rng, teacher, weak)
        extra = pl.astype(bool) & ~track
        assert extra[:, 11].any() and extra[:, 11].sum() == extra.sum() <= 3
    # Every labelled class already present: nothing to confuse, nothing added.
    np.testing.assert_array_equal(synthetic.teacher_pseudo_labels(track, rng, teacher), track)


def test_pseudo_labels_drive_the_step(tmp_path):
    config = load_config_file("configs/llp_pseudo.py:han,synthetic")
    config.model.d_model = config.model.ffn_dim = 16
    config.data.synthetic_videos = 20
    config.batch_size = 4
    data = pipeline.load_splits(config, str(tmp_path), ("train",))["train"]
    # The folders the generator wrote, matched by id.
    vid = data["id"][3]
    stored = np.load(
        os.path.join(str(tmp_path), "data", "CLIP", "segment_pseudo_labels", f"{vid}.npy")
    )
    np.testing.assert_array_equal(data["pl_visual"][3], stored)
    batch = {k: jnp.asarray(v) for k, v in pipeline.make_batch(data, np.arange(4), 4).items()}
    assert batch["pl_audio"].shape == (4, 10, 25)
    state, anchor, ref, tx = step_lib.create_train_state(config, jax.random.key(0), batch, 5, 25)
    step = jax.jit(step_lib.make_train_step(config, anchor, ref, tx))
    _, logs = step(state, batch, jnp.int32(0), jax.random.key(1))
    flipped = dict(batch, pl_audio=1.0 - batch["pl_audio"])
    _, logs_flipped = step(state, flipped, jnp.int32(0), jax.random.key(1))
    assert "pseudo_segment" in logs
    assert float(logs_flipped["pseudo_segment"]) != pytest.approx(float(logs["pseudo_segment"]))
    assert float(logs_flipped["backbone"]) != pytest.approx(float(logs["backbone"]))  # ȳ_a changed
