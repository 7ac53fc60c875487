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
    # Speech is heard only 3.2 times as often as heard and seen, as in LLP (0.76 / 0.238).
    s = LLP_CLASS_INDEX["Speech"]
    ratio = (a[:, s] & ~v[:, s]).sum() / (a[:, s] & v[:, s]).sum()
    expected = synthetic.AUDIBLE_ONLY_RATE[s] / (
        1 - synthetic.AUDIBLE_ONLY_RATE[s] - synthetic.VISIBLE_ONLY_RATE[s]
    )
    assert expected == pytest.approx(3.19, abs=0.01)
    assert ratio == pytest.approx(expected, rel=0.3)


LLP_CSVS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "llp")


@pytest.mark.skipif(
    not os.path.exists(os.path.join(LLP_CSVS, "AVVP_eval_audio.csv")),
    reason="LLP's annotation CSVs are not beside the repository (../shared/llp)",
)
def test_defaults_are_llp_as_measured_from_its_csvs():
    """The constants are measure_llp's output on the released CSVs, rounded."""
    m = synthetic.measure_llp(LLP_CSVS)
    for key, constant in [
        ("class_frequency", synthetic.CLASS_FREQUENCY),
        ("labels_per_video", synthetic.LABELS_PER_VIDEO),
        ("labels_per_video_eval", synthetic.LABELS_PER_VIDEO_EVAL),
        ("audible_only", synthetic.AUDIBLE_ONLY_RATE),
        ("visible_only", synthetic.VISIBLE_ONLY_RATE),
        ("duration_audio", synthetic.DURATION_AUDIO),
        ("duration_visual", synthetic.DURATION_VISUAL),
        ("duration_audible_only", synthetic.DURATION_AUDIBLE_ONLY),
        ("duration_av_audio", synthetic.DURATION_AV_AUDIO),
        ("duration_av_visual", synthetic.DURATION_AV_VISUAL),
        ("duration_visible_only", synthetic.DURATION_VISIBLE_ONLY),
    ]:
        np.testing.assert_allclose(m[key], constant, atol=5e-4 + 1e-9, err_msg=key)
    measured = (m["events_audio"], m["events_visual"], m["av_iou"], m["av_same_extent"])
    assert measured == pytest.approx(
        (
            synthetic.EVENTS_AUDIO,
            synthetic.EVENTS_VISUAL,
            synthetic.AV_IOU,
            synthetic.AV_SAME_EXTENT,
        ),
        abs=5e-4,
    )


def test_generated_label_structure_is_llps(tmp_path):
    """The same measurement on a generated folder finds LLP's structure: modality shares,
    event lengths per modality, events per class, audio-visual overlap."""
    cfg, rng = synthetic.SyntheticConfig(), np.random.default_rng(1)
    splits = {
        split: [
            synthetic.Video(f"{split[:2]}{i:09d}_0_10", audio, visual)
            for i, (audio, visual) in enumerate(
                synthetic.sample_videos(cfg, n, rng, dense_split=split != "train")
            )
        ]
        for split, n in (("train", 1400), ("val", 300), ("test", 300))
    }
    synthetic.write_annotations(str(tmp_path), splits)  # the CSVs alone, no features
    m = synthetic.measure_llp(str(tmp_path))
    labelled = synthetic.CLASS_FREQUENCY
    assert np.abs(m["class_frequency"] - labelled).max() < 0.05
    np.testing.assert_allclose(m["duration_audio"], synthetic.DURATION_AUDIO, atol=0.04)
    np.testing.assert_allclose(m["duration_visual"], synthetic.DURATION_VISUAL, atol=0.05)
    # A second event finds no room beside a long first one (a third of LLP's sounds
    # last the whole clip), so fewer are placed than drawn: 1.11 sounds and 1.03 sights
    # per class present against LLP's 1.27 and 1.13 (measured, seed 1).
    assert 1.05 < m["events_audio"] < synthetic.EVENTS_AUDIO
    assert 1.0 < m["events_visual"] < synthetic.EVENTS_VISUAL
    assert m["av_iou"] == pytest.approx(synthetic.AV_IOU, abs=0.03)
    s = LLP_CLASS_INDEX["Speech"]
    assert m["audible_only"][s] == pytest.approx(synthetic.AUDIBLE_ONLY_RATE[s], abs=0.05)


def _quiet(**knobs):
    quiet = dict(noise_audio=0.0, noise_visual=0.0, scene=0.0, distractors_per_video=0.0)
    return synthetic.SyntheticConfig(**{**quiet, **knobs})


def test_features_come_from_event_codes_through_a_non_linear_map():
    synth = synthetic.FeatureSynth(_quiet(), np.random.default_rng(1))
    rng = np.random.default_rng(2)
    audio = np.zeros((10, 25), bool)
    visual = np.zeros((10, 25), bool)
    audio[:5, 3] = True  # a dog barks off screen for 5 s
    audio[3:8, 0] = True  # someone speaks from 3 to 8 s
    visual[5:, 9] = True  # a cello is seen, silent
    f = synth.render(audio, visual, rng)
    a = f["vggish"]
    # Without noise, a segment's features are a function of its active events only.
    np.testing.assert_allclose(a[0], a[1], atol=1e-5)
    np.testing.assert_allclose(a[8], a[9], atol=1e-5)
    assert np.abs(a[0] - a[9]).max() > 0.1
    # Not additive: dog + speech differs from dog + speech - nothing, as a sum would be.
    additive = a[0] + a[6] - a[9]  # dog alone + speech alone - background
    assert np.abs(a[4] - additive).max() > 0.1 * np.abs(a[4]).max()
    v = f["r2plus1d_18"]
    np.testing.assert_allclose(v[6], v[7], atol=1e-5)
    assert np.abs(v[6] - v[0]).max() > 0.1
    assert (f["res152"] >= 0).all() and f["res152"].shape == (80, 2048)


def test_noise_differs_per_modality_and_distractors_are_never_labelled():
    cfg = synthetic.SyntheticConfig()
    assert cfg.noise_audio != cfg.noise_visual
    synth = synthetic.FeatureSynth(_quiet(distractors_per_video=3.0), np.random.default_rng(1))
    silent = np.zeros((10, 25), bool)
    rng = np.random.default_rng(3)
    f = [synth.render(silent, silent, rng)["vggish"] for _ in range(20)]
    # no labelled event, yet background events change segments within a clip
    assert sum(np.abs(x - x[:1]).max() > 1e-3 for x in f) >= 15


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
