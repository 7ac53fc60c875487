"""The embedded synthetic dataset: layout, truth consistency, planted signal."""

import csv
import os

import numpy as np
import pytest

from coleaf_jax.data import synthetic
from coleaf_jax.data.classes import LLP_CLASS_INDEX, LLP_DENSE_CSV, LLP_FEATURES, LLP_SPLIT_CSV


def _read(path):
    with open(path) as f:
        return list(csv.reader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("syn"))
    splits = synthetic.generate(out, synthetic.SyntheticConfig(num_videos=60, seed=3))
    return out, splits


def test_layout_and_shapes(dataset):
    out, splits = dataset
    assert {k: len(v) for k, v in splits.items()} == {"train": 42, "val": 9, "test": 9}
    for name in list(LLP_SPLIT_CSV.values()) + list(LLP_DENSE_CSV.values()):
        assert os.path.exists(os.path.join(out, name))
    rows = _read(os.path.join(out, "AVVP_train.csv"))
    assert rows[0] == ["filename", "event_labels"]
    assert len(rows) == 43
    for folder, shape in LLP_FEATURES.items():
        files = os.listdir(os.path.join(out, folder))
        assert len(files) == 60
        x = np.load(os.path.join(out, folder, files[0]))
        assert x.shape == shape and x.dtype == np.float32
    ids = [v.video_id for vs in splits.values() for v in vs]
    assert len(set(ids)) == len(ids) and all(len(i) == 11 for i in ids)


def test_weak_labels_are_the_union_of_dense_truth(dataset):
    out, splits = dataset
    dense = {m: _read(os.path.join(out, f))[1:] for m, f in LLP_DENSE_CSV.items()}
    for split in ("val", "test"):
        for row in _read(os.path.join(out, LLP_SPLIT_CSV[split]))[1:]:
            union = {r[3] for m in dense for r in dense[m] if r[0] == row[0]}
            assert set(row[1].split(",")) == union
    for rows in dense.values():
        for _name, on, off, label in rows:
            assert 0 <= int(on) < int(off) <= 10 and label in LLP_CLASS_INDEX


def test_all_event_types_are_planted():
    rng = np.random.default_rng(0)
    videos = synthetic.sample_videos(synthetic.SyntheticConfig(), 400, rng, dense_split=True)
    a = np.stack([v[0] for v in videos]).any(1)
    v = np.stack([v[1] for v in videos]).any(1)
    assert (a & ~v).sum() > 50 and (v & ~a).sum() > 10 and (a & v).sum() > 50
    # Speech is mostly audible-only, as in LLP.
    s = LLP_CLASS_INDEX["Speech"]
    assert (a[:, s] & ~v[:, s]).sum() > 5 * (a[:, s] & v[:, s]).sum()


def test_features_carry_the_planted_events():
    cfg = synthetic.SyntheticConfig()
    rng = np.random.default_rng(1)
    synth = synthetic.FeatureSynth(cfg, rng)
    audio = np.zeros((10, 25), bool)
    visual = np.zeros((10, 25), bool)
    audio[:5, 3] = True  # dog barks off screen for 5 s
    visual[5:, 9] = True  # a cello is seen, silent
    f = synth.render(audio, visual, rng)
    score_a = f["vggish"] @ synth.protos["vggish"][3]
    assert score_a[:5].mean() > score_a[5:].mean() + 50
    score_v = f["r2plus1d_18"] @ synth.protos["r2plus1d_18"][9]
    assert score_v[5:].mean() > score_v[:5].mean() + 100
    frames = f["res152"].reshape(10, 8, 2048).mean(1) @ synth.protos["res152"][9]
    assert frames[5:].mean() > frames[:5].mean()
    assert (f["res152"] >= 0).all()


def test_same_seed_same_data(tmp_path):
    a = synthetic.generate(str(tmp_path / "a"), synthetic.SyntheticConfig(num_videos=6, seed=5))
    b = synthetic.generate(str(tmp_path / "b"), synthetic.SyntheticConfig(num_videos=6, seed=5))
    assert [v.filename for v in a["test"]] == [v.filename for v in b["test"]]
    vid = a["train"][0].video_id
    np.testing.assert_array_equal(
        np.load(tmp_path / "a" / "res152" / f"{vid}.npy"),
        np.load(tmp_path / "b" / "res152" / f"{vid}.npy"),
    )


def test_cli(tmp_path, capsys):
    assert synthetic.main([str(tmp_path / "x"), "--videos", "5", "--seed", "1"]) == 0
    assert "wrote 5 synthetic videos" in capsys.readouterr().out
    assert synthetic.main([str(tmp_path / "y"), "--videos", "2"]) == 2
    # A perfect teacher: the pseudo-labels are the dense truth. The folder is marked
    # complete, so a run pointed at it (data.root) uses it instead of regenerating.
    assert (
        synthetic.main(
            [
                str(tmp_path / "z"),
                "--videos",
                "5",
                "--seed",
                "1",
                "--teacher-miss",
                "0",
                "--teacher-jitter",
                "0",
                "--teacher-false-alarm",
                "0",
            ]
        )
        == 0
    )
    assert "teacher_miss=0.0" in (tmp_path / "z" / synthetic.COMPLETE_MARKER).read_text()
    videos = synthetic.generate(
        str(tmp_path / "w"),
        synthetic.SyntheticConfig(
            num_videos=5, seed=1, teacher_miss=0.0, teacher_jitter=0.0, teacher_false_alarm=0.0
        ),
    )
    for v in videos["train"]:
        pl = np.load(tmp_path / "z" / "CLIP" / "segment_pseudo_labels" / f"{v.video_id}.npy")
        np.testing.assert_array_equal(pl, v.visual)
