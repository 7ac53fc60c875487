"""Tests of coleaf_jax.data.llp: CSV/feature validation, the TFDS builder, load_split."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from coleaf_jax.data import llp, llp_annotations, llp_prepared
from coleaf_jax.data.classes import (
    LLP_CLASS_INDEX,
    LLP_DENSE_CSV,
    LLP_FEATURES,
    LLP_SPLIT_CSV,
)

REAL_LLP = Path("/work/shared/llp")
WEAK_HEADER = "filename\tevent_labels"
DENSE_HEADER = "filename\tonset\toffset\tevent_labels"

# A tiny layout: 6 videos (ids are the first 11 characters of the filenames).
SPLITS = {
    "train": [("trainvid001_0_10", "Speech,Dog"), ("trainvid002_5_15", "Car")],
    "val": [("valvideo001_0_10", "Speech,Cello"), ("valvideo002_0_10", "Banjo")],
    "test": [("testvideo01_0_10", "Dog"), ("testvideo02_30_40", "Clapping,Speech")],
}
AUDIO_ROWS = [
    "valvideo001_0_10\t0\t3\tSpeech",
    "valvideo001_0_10\t5\t7\tSpeech",
    "valvideo001_0_10\t5\t7\tSpeech",  # exact duplicate
    "valvideo001_0_10\t2\t10\tCello",
    "valvideo002_0_10\t4\t4\tBanjo",  # zero length
    "testvideo01_0_10\t9\t10\tDog",
    "testvideo02_30_40\t0\t2\tSpeech",
    "notinsplit1_0_10\t0\t10\tDog",  # in no split
]
VISUAL_ROWS = [
    "valvideo002_0_10\t0\t10\tBanjo",
    "testvideo02_30_40\t1\t2\tClapping",
    "testvideo02_30_40\t3\t4\tClapping",
]


def _write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in [header, *rows]))
    return path


def make_layout(root: Path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Writes features and the five CSVs under ``root``; returns {id: features}."""
    rng = np.random.default_rng(seed)
    features = {}
    for split, rows in SPLITS.items():
        _write(root / LLP_SPLIT_CSV[split], WEAK_HEADER, [f"{f}\t{labels}" for f, labels in rows])
        for filename, _ in rows:
            vid = filename[:11]
            features[vid] = {}
            for key, folder in llp.FEATURE_FOLDERS.items():
                array = rng.standard_normal(LLP_FEATURES[folder]).astype(np.float32)
                (root / folder).mkdir(parents=True, exist_ok=True)
                np.save(root / folder / f"{vid}.npy", array)
                features[vid][key] = array
    _write(root / LLP_DENSE_CSV["audio"], DENSE_HEADER, AUDIO_ROWS)
    _write(root / LLP_DENSE_CSV["visual"], DENSE_HEADER, VISUAL_ROWS)
    return features


def multi_hot(names: str) -> np.ndarray:
    out = np.zeros(25, np.float32)
    out[[LLP_CLASS_INDEX[n] for n in names.split(",")]] = 1
    return out


def dense(*marks: tuple[int, int, str]) -> np.ndarray:
    out = np.zeros((10, 25), np.float32)
    for onset, offset, name in marks:
        out[onset:offset, LLP_CLASS_INDEX[name]] = 1
    return out


# --- CSV validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "needles"),
    [
        ([], ["line 1", "header"]),
        (["file\tlabels", "a_0_10\tDog"], ["line 1", "header", "filename<TAB>event_labels"]),
        ([WEAK_HEADER, "abcdefghijk_0_10\tDog\textra"], ["line 2", "fields", "expected 2"]),
        ([WEAK_HEADER, "", "abcdefghijk_0_10"], ["line 3", "fields", "got 1"]),
        ([WEAK_HEADER, "abcdefghijk_0_10\t"], ["line 2", "event_labels", "at least one"]),
        ([WEAK_HEADER, "abcdefghijk_0_10\tDog,"], ["line 2", "event_labels", "class name"]),
        ([WEAK_HEADER, "abcdefghijk_0_10\tSpeach"], ["line 2", "event_labels", "Speech"]),
        (
            [WEAK_HEADER, "abcdefghijk_0_10\tDog", "x\tCar", "abcdefghijk_20_30\tCat"],
            ["line 4", "filename", "'abcdefghijk'", "line 2"],
        ),
        ([WEAK_HEADER, "\tDog"], ["line 2", "filename"]),
    ],
    ids=[
        "empty",
        "header",
        "extra-field",
        "missing-field",
        "empty-label",
        "empty-class",
        "unknown-class",
        "duplicate-id",
        "empty-filename",
    ],
)
def test_read_weak_csv_errors(tmp_path: Path, lines: list[str], needles: list[str]) -> None:
    path = tmp_path / "AVVP_train.csv"
    path.write_text("".join(f"{line}\n" for line in lines))
    with pytest.raises(llp.LLPDataError) as info:
        llp.read_weak_csv(path)
    for needle in [str(path), *needles]:
        assert needle in str(info.value)


def test_read_weak_csv_values(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_bytes(b"filename\tevent_labels\r\nabcdefghijk_0_10\tDog,Speech\r\n\r\nx_1\tCar\r\n")
    filenames, labels = llp.read_weak_csv(path)
    assert filenames == ["abcdefghijk_0_10", "x_1"]
    assert labels.dtype == np.float32 and labels.shape == (2, 25)
    np.testing.assert_array_equal(labels, [multi_hot("Dog,Speech"), multi_hot("Car")])


@pytest.mark.parametrize(
    ("row", "needles"),
    [
        ("abcdefghijk_0_10\t2.5\t4\tDog", ["onset", "integer", "'2.5'"]),
        ("abcdefghijk_0_10\t2\tfour\tDog", ["offset", "integer", "'four'"]),
        ("abcdefghijk_0_10\t-1\t4\tDog", ["onset", "[0, 10]", "got -1"]),
        ("abcdefghijk_0_10\t2\t11\tDog", ["offset", "[0, 10]", "got 11"]),
        ("abcdefghijk_0_10\t2\t4\tDogg", ["event_labels", "'Dogg'", "Dog"]),
        ("abcdefghijk_0_10\t2\t4", ["fields", "expected 4", "got 3"]),
    ],
    ids=[
        "float-onset",
        "text-offset",
        "negative-onset",
        "offset-past-T",
        "unknown-class",
        "field-count",
    ],
)
def test_read_dense_csv_errors(tmp_path: Path, row: str, needles: list[str]) -> None:
    rows = ["abcdefghijk_0_10\t0\t1\tDog", row]
    path = _write(tmp_path / "AVVP_eval_audio.csv", DENSE_HEADER, rows)
    with pytest.raises(llp.LLPDataError) as info:
        llp.read_dense_csv(path)
    for needle in [str(path), "line 3", *needles]:
        assert needle in str(info.value)


def test_read_dense_csv_bad_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "filename\tonset\tonset\tevent_labels", [])
    with pytest.raises(llp.LLPDataError, match=r"d\.csv: line 1: header"):
        llp.read_dense_csv(path)


def test_read_dense_csv_skips_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        *AUDIO_ROWS,
        "valvideo001_0_10\t8\t3\tDog",  # reversed: a no-op like zero length
        "valvideo001_0_100\t0\t10\tCar",  # same 11-character id, other filename
    ]
    path = _write(tmp_path / "a.csv", DENSE_HEADER, rows)
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        labels, report = llp.read_dense_csv(path)
    assert report == llp.DenseReport(
        rows=10, zero_length=1, reversed=1, duplicates=1, unknown_video=0, id_conflicts=1
    )
    [record] = caplog.records
    assert "1 zero-length" in record.message
    assert "line 6: 'valvideo002_0_10\\t4\\t4\\tBanjo'" in record.message
    assert "line 4:" in record.message and "line 11:" in record.message
    assert set(labels) == {"valvideo001", "testvideo01", "testvideo02", "notinsplit1"}
    np.testing.assert_array_equal(
        labels["valvideo001"], dense((0, 3, "Speech"), (5, 7, "Speech"), (2, 10, "Cello"))
    )
    assert labels["valvideo001"].dtype == np.float32

    known = [f for rows in SPLITS.values() for f, _ in rows]
    labels, report = llp.read_dense_csv(path, known_ids=known)
    assert (report.unknown_video, report.id_conflicts, report.skipped) == (2, 0, 4)
    assert set(labels) == {"valvideo001", "testvideo01", "testvideo02"}
    np.testing.assert_array_equal(labels["testvideo01"], dense((9, 10, "Dog")))


def test_read_dense_csv_quiet_when_clean(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "v.csv", DENSE_HEADER, VISUAL_ROWS)
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        _, report = llp.read_dense_csv(path)
    assert report == llp.DenseReport(rows=3) and not caplog.records


# --- Features ---------------------------------------------------------------------------


def test_load_features(tmp_path: Path) -> None:
    written = make_layout(tmp_path)["valvideo001"]
    np.save(tmp_path / "vggish" / "valvideo001.npy", written["audio"].astype(np.float64))
    features = llp.load_features(tmp_path, "valvideo001")
    assert set(features) == {"audio", "video_2d", "video_3d"}
    for key, array in features.items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, written[key])


@pytest.mark.parametrize(
    ("array", "needles"),
    [
        (np.zeros((10, 127), np.float32), ["expected shape (10, 128)", "got (10, 127)"]),
        (np.zeros((10, 128), np.int64), ["float dtype", "int64"]),
        (np.full((10, 128), np.nan, np.float32), ["finite", "1280 NaN/inf"]),
        (np.full((10, 128), 1e300), ["finite", "1280 NaN/inf"]),  # overflows float32
        (
            np.full((10, 128), -2e4, np.float32),
            ["values up to 2e+04", "beyond the plausible 1e+04"],
        ),
    ],
    ids=["shape", "dtype", "nan", "overflow", "huge"],
)
def test_load_features_errors(tmp_path: Path, array: np.ndarray, needles: list[str]) -> None:
    make_layout(tmp_path)
    path = tmp_path / "vggish" / "trainvid001.npy"
    np.save(path, array)
    with pytest.raises(llp.LLPDataError) as info:
        llp.load_features(tmp_path, "trainvid001")
    for needle in [str(path), *needles]:
        assert needle in str(info.value)


@pytest.mark.parametrize("kind", ["text", "pickle", "empty", "truncated"])
def test_a_file_that_is_not_a_npy_array_is_named_without_pickle_advice(tmp_path, kind) -> None:
    make_layout(tmp_path)
    path = tmp_path / "vggish" / "trainvid001.npy"
    if kind == "text":
        path.write_text("0.1 0.2 0.3\n")
    elif kind == "pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(llp.LLPDataError) as info:
        llp.load_features(tmp_path, "trainvid001")
    message = str(info.value)
    assert message.startswith(str(path)) and "allow_pickle" not in message, message
    expected = {
        "text": "not a .npy array (it lacks NumPy's header",
        "pickle": "it holds Python objects, not numbers",
        "empty": "an empty file",
        "truncated": "cannot read as a .npy array",
    }[kind]
    assert expected in message, message


def test_all_zero_feature_files_are_a_warning_with_count_and_ids(tmp_path, caplog) -> None:
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    for vid in ("trainvid002", "valvideo001"):
        np.save(root / "r2plus1d_18" / f"{vid}.npy", np.zeros((10, 512), np.float32))
    with caplog.at_level("WARNING"):
        llp.load_split(root, "train", tfds_dir=tmp_path / "tfds")
    lines = [r.getMessage() for r in caplog.records if "zeros only" in r.getMessage()]
    assert lines == [
        "LLP train: 1 video(s) have a feature file of zeros only (first: trainvid002); an "
        "extractor that failed writes zeros: check those files",
        "LLP val: 1 video(s) have a feature file of zeros only (first: valvideo001); an "
        "extractor that failed writes zeros: check those files",
    ]


def test_a_video_in_two_splits_fails_naming_it_unless_allowed(tmp_path, caplog) -> None:
    root, cache, clean = tmp_path / "llp", tmp_path / "tfds", tmp_path / "clean"
    root.mkdir()
    clean.mkdir()
    make_layout(root)
    make_layout(clean)
    rows = [f"{f}\t{labels}" for f, labels in SPLITS["train"] + SPLITS["test"][:1]]
    _write(root / LLP_SPLIT_CSV["train"], WEAK_HEADER, rows)  # testvideo01 leaks
    with pytest.raises(llp.LLPDataError) as info:
        llp.load_split(root, "test", tfds_dir=cache)
    assert "AVVP_train.csv and AVVP_test_pd.csv share 1 (first: testvideo01)" in str(info.value)
    assert "--config.data.allow_split_overlap=True" in str(info.value)
    with caplog.at_level("WARNING"):
        test = llp.load_split(root, "test", tfds_dir=cache, allow_split_overlap=True)
        train = llp.load_split(root, "train", tfds_dir=cache, allow_split_overlap=True)
    assert test.also_in_other_splits == 1 and train.also_in_other_splits == 1
    assert any("allow_split_overlap" in r.getMessage() for r in caplog.records)
    from coleaf_jax.evaluation import evaluate

    assert evaluate.video_counts(test)["videos_also_in_other_splits"] == 1
    assert "videos_also_in_other_splits" not in evaluate.video_counts(
        llp.load_split(clean, "test", tfds_dir=cache)
    )


def test_load_features_missing(tmp_path: Path) -> None:
    make_layout(tmp_path)
    path = tmp_path / "res152" / "trainvid001.npy"
    path.unlink()
    with pytest.raises(llp.MissingFeatureError, match=str(path)):
        llp.load_features(tmp_path, "trainvid001")
    with pytest.raises(llp.MissingFeatureError):
        llp.load_features(tmp_path, "nosuchvideo")


# --- TFDS builder and load_split ----------------------------------------------------------------


def test_load_split_values(tmp_path: Path) -> None:
    root, cache = tmp_path / "llp", tmp_path / "tfds"
    root.mkdir()
    features = make_layout(root)
    for split, rows in SPLITS.items():
        data = llp.load_split(root, split, tfds_dir=cache)
        n = len(rows)
        expected_keys = {"id", "audio", "video_2d", "video_3d", "label"}
        if split != "train":
            expected_keys |= {"label_audio", "label_visual"}
        assert set(data) == expected_keys
        ids = [f[:11] for f, _ in rows]
        assert data["id"].tolist() == ids
        assert data["label"].shape == (n, 25)
        np.testing.assert_array_equal(data["label"], [multi_hot(labels) for _, labels in rows])
        for key in llp.FEATURE_FOLDERS:
            assert data[key].dtype == np.float32 and data[key].shape[0] == n
            np.testing.assert_array_equal(data[key], [features[v][key] for v in ids])
    val = llp.load_split(root, "val", tfds_dir=cache)
    np.testing.assert_array_equal(
        val["label_audio"],
        [dense((0, 3, "Speech"), (5, 7, "Speech"), (2, 10, "Cello")), dense()],
    )
    np.testing.assert_array_equal(val["label_visual"], [dense(), dense((0, 10, "Banjo"))])
    test = llp.load_split(root, "test", tfds_dir=cache)
    np.testing.assert_array_equal(
        test["label_audio"], [dense((9, 10, "Dog")), dense((0, 2, "Speech"))]
    )
    np.testing.assert_array_equal(
        test["label_visual"], [dense(), dense((1, 2, "Clapping"), (3, 4, "Clapping"))]
    )
    assert test["label_audio"].dtype == np.float32 and test["label_audio"].shape == (2, 10, 25)

    pooled = llp.load_split(root, "test", tfds_dir=cache, pool_frames=True)
    assert pooled["video_2d"].shape == (2, 10, 2048)
    manual = test["video_2d"].reshape(2, 10, 8, 2048).mean(axis=2)
    np.testing.assert_array_equal(pooled["video_2d"], manual)
    np.testing.assert_array_equal(pooled["audio"], test["audio"])


def test_load_split_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "llp", tmp_path / "tfds"
    root.mkdir()
    make_layout(root)
    llp.load_split(root, "train", tfds_dir=cache)
    prepared = sorted(llp.cache_dir(root, tfds_dir=cache).rglob("*"))
    mtimes = [p.stat().st_mtime_ns for p in prepared]

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt")

    monkeypatch.setattr(llp_prepared.Llp, "_shard_iterators_per_split", fail)
    again = llp.load_split(root, "val", tfds_dir=cache)
    assert again["id"].tolist() == ["valvideo001", "valvideo002"]
    assert sorted(llp.cache_dir(root, tfds_dir=cache).rglob("*")) == prepared
    assert [p.stat().st_mtime_ns for p in prepared] == mtimes


def test_preparation_says_what_happens_without_tfds_download_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing is downloaded: TFDS's "Downloading and preparing dataset Unknown size" and
    its "Variant folder ... has no dataset_info.json" warning are not shown; our own lines
    say that the copy is prepared (rate, size) and, the second time, that it is reused.
    Library calls, not only the entry scripts (no ``cli.quiet_libraries``)."""
    root, cache = tmp_path / "llp", tmp_path / "tfds"
    root.mkdir()
    make_layout(root)
    with caplog.at_level(logging.INFO):
        llp.load_split(root, "val", tfds_dir=cache)
        llp.load_split(root, "test", tfds_dir=cache)
    shown = capsys.readouterr()
    everything = shown.out + shown.err + caplog.text
    for tfds_line in ("Downloading and preparing", "downloaded and prepared", "dataset_info.json"):
        assert tfds_line not in everything, everything
    messages = [r.getMessage() for r in caplog.records if r.name == llp.__name__]
    assert any(m.startswith(f"LLP: preparing {root}") for m in messages), messages
    assert any(m.startswith("LLP: prepared 6 videos in") for m in messages), messages
    assert any(m.startswith("LLP: using the dataset prepared from these inputs") for m in messages)


def test_prepares_splits_larger_than_the_tfds_buffer_without_tensorflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A split beyond TFDS's in-memory shuffle buffer (≈ 1 GB: every real LLP train
    split) used to crash in TensorFlow; written shard by shard it needs neither."""
    from tensorflow_datasets.core import shuffle

    with pytest.raises(ImportError):  # the environment of this test: no TensorFlow
        import tensorflow  # noqa: F401
    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1)  # every split is "too large"
    monkeypatch.setattr(
        llp_prepared, "EXAMPLES_PER_SHARD", 1
    )  # several shards per split, order kept
    root, cache = tmp_path / "llp", tmp_path / "tfds"
    root.mkdir()
    features = make_layout(root)
    builder = llp.prepare(root, tfds_dir=cache)
    assert builder.info.splits["train"].num_shards == 2
    for split, rows in SPLITS.items():
        data = llp.load_split(root, split, tfds_dir=cache)
        ids = [f[:11] for f, _ in rows]
        assert data["id"].tolist() == ids
        np.testing.assert_array_equal(data["video_2d"], [features[v]["video_2d"] for v in ids])


def test_changed_inputs_are_prepared_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, cache = tmp_path / "llp", tmp_path / "tfds"
    root.mkdir()
    make_layout(root)
    first = llp.load_split(root, "test", tfds_dir=cache)
    assert first["label"][1].tolist() == multi_hot("Clapping,Speech").tolist()
    # An edited CSV: new labels, not the cached ones.
    _write(
        root / LLP_SPLIT_CSV["test"],
        WEAK_HEADER,
        ["testvideo01_0_10\tDog", "testvideo02_30_40\tClapping"],
    )
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        edited = llp.load_split(root, "test", tfds_dir=cache)
    assert edited["label"][1].tolist() == multi_hot("Clapping").tolist()
    assert any("changed since" in r.message for r in caplog.records)
    # A replaced feature file (same name): its new values, and a bad one is now rejected.
    new = np.full((10, 128), 7.0, np.float32)
    np.save(root / "vggish" / "testvideo01.npy", new)
    os.utime(root / "vggish" / "testvideo01.npy", ns=(1, 1))  # even with an older mtime
    np.testing.assert_array_equal(llp.load_split(root, "test", tfds_dir=cache)["audio"][0], new)
    np.save(root / "vggish" / "testvideo01.npy", np.zeros((9, 128), np.float32))
    with pytest.raises(llp.LLPDataError, match="expected shape"):
        llp.load_split(root, "test", tfds_dir=cache)
    # One prepared copy is kept per (root, annotation dir): stale ones are removed.
    np.save(root / "vggish" / "testvideo01.npy", new)
    llp.load_split(root, "test", tfds_dir=cache)
    assert len([p for p in llp.cache_dir(root, tfds_dir=cache).iterdir() if p.is_dir()]) == 1


def test_header_only_split_csv_fails_clearly(tmp_path: Path) -> None:
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    _write(root / LLP_SPLIT_CSV["val"], WEAK_HEADER, [])
    with pytest.raises(
        llp.LLPDataError, match=r"AVVP_val_pd.csv: no video of the val split.*header"
    ):
        llp.load_split(root, "train", tfds_dir=tmp_path / "tfds")


def test_roots_do_not_collide(tmp_path: Path) -> None:
    cache = tmp_path / "tfds"
    roots = [tmp_path / "a", tmp_path / "b"]
    written = []
    for seed, root in enumerate(roots):
        root.mkdir()
        written.append(make_layout(root, seed=seed))
    for root, features in zip(roots, written):
        data = llp.load_split(root, "train", tfds_dir=cache)
        np.testing.assert_array_equal(data["audio"][0], features["trainvid001"]["audio"])
    assert llp.cache_dir(roots[0], tfds_dir=cache) != llp.cache_dir(roots[1], tfds_dir=cache)
    assert llp.cache_dir(roots[0], roots[1], cache) != llp.cache_dir(roots[0], tfds_dir=cache)


def test_separate_annotation_dir(tmp_path: Path) -> None:
    root, notes = tmp_path / "features", tmp_path / "notes"
    root.mkdir()
    notes.mkdir()
    make_layout(root)
    for csv in [*LLP_SPLIT_CSV.values(), *LLP_DENSE_CSV.values()]:
        os.replace(root / csv, notes / csv)
    data = llp.load_split(root, "val", annotation_dir=notes, tfds_dir=tmp_path / "tfds")
    np.testing.assert_array_equal(data["label_visual"][1], dense((0, 10, "Banjo")))


def test_missing_feature_fails_for_val_and_test_unless_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A val/test video without features would silently drop out of the scores: an error
    naming it and the opt-in; with the opt-in the split says which videos it left out."""
    root, cache = tmp_path / "llp", tmp_path / "tfds"
    root.mkdir()
    make_layout(root)
    (root / "r2plus1d_18" / "valvideo001.npy").unlink()
    (root / "vggish" / "trainvid002.npy").unlink()
    with pytest.raises(
        llp.MissingFeatureError,
        match=r"LLP val: 1 videos of AVVP_val_pd.csv .*valvideo001.*allow_missing",
    ):
        llp.load_split(root, "val", tfds_dir=cache)
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        data = llp.load_split(root, "val", tfds_dir=cache, allow_missing=True)
    assert data["id"].tolist() == ["valvideo002"] and data.skipped == ("valvideo001",)
    np.testing.assert_array_equal(data["label_visual"], [dense((0, 10, "Banjo"))])
    assert any("skipped 1 of 2 videos" in r.message for r in caplog.records)
    # Test is complete: nothing skipped. Training videos are left out with a warning only.
    assert llp.load_split(root, "test", tfds_dir=cache).skipped == ()
    train = llp.load_split(root, "train", tfds_dir=cache)
    assert train["id"].tolist() == ["trainvid001"] and train.skipped == ("trainvid002",)
    builder = llp.prepare(root, tfds_dir=cache)
    skipped = builder.info.metadata["skipped_videos"]
    assert skipped == {"train": ["trainvid002"], "val": ["valvideo001"], "test": []}


def test_wrong_shape_fails_preparation(tmp_path: Path) -> None:
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    path = root / "res152" / "testvideo02.npy"
    np.save(path, np.zeros((10, 2048), np.float32))
    with pytest.raises(llp.LLPDataError, match="expected shape"):
        llp.load_split(root, "train", tfds_dir=tmp_path / "tfds")


def test_load_split_rejects_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        llp.load_split(tmp_path, "eval", tfds_dir=tmp_path / "tfds")


# --- Dense CSVs cross-checked against the weak labels ---------------------------------------


@pytest.mark.parametrize("keep", [0, 4], ids=["header-only", "head-n-5"])
def test_dense_csv_that_lost_rows_fails_naming_it(tmp_path: Path, keep: int, monkeypatch) -> None:
    """``AVVP_eval_audio.csv`` cut at a line boundary (``head -n 5``) or left with its
    header only: every affected video would get all-zero audio truth."""
    # The tiny layout has 2 videos per split, one of them without a visual (val: and
    # without an audio) row: below the floor of a few videos that always pass.
    monkeypatch.setattr(llp_annotations, "DENSE_FEW_VIDEOS", 1)
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    _write(root / LLP_DENSE_CSV["audio"], DENSE_HEADER, AUDIO_ROWS[:keep])
    with pytest.raises(llp.LLPDataError) as info:
        llp.load_split(root, "val", tfds_dir=tmp_path / "tfds")
    message = str(info.value)
    # The test split fails first when val still has its rows (head -n 5 keeps val's).
    assert ("LLP val: 2 of 2 videos" if keep == 0 else "LLP test: 2 of 2 videos") in message
    assert f"have no row in {root / LLP_DENSE_CSV['audio']} (the released file" in message
    assert "more than 25 %: it probably lost rows" in message


def test_dense_coverage_warns_when_few_videos_lack_rows(caplog: pytest.LogCaptureFixture) -> None:
    n = 100
    filenames = [f"video{i:06d}_0_10" for i in range(n)]
    labels = np.zeros((n, 25), np.float32)
    labels[:, LLP_CLASS_INDEX["Dog"]] = 1
    rows = {f[:11]: dense((0, 2, "Dog")) for f in filenames}
    paths = {"audio": "a.csv", "visual": "v.csv"}
    for vid in ("video000007", "video000042", "video000099"):
        del rows[vid]
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        uncovered = llp.check_dense_coverage(
            "test", filenames, labels, {"audio": rows, "visual": {}}, paths
        )
    assert uncovered == ["video000007", "video000042", "video000099"]
    assert any(
        "3 of 100 videos" in r.message and "video000007, video000042" in r.message
        for r in caplog.records
    )
    # A video whose class is covered by the other modality counts as covered.
    covered = llp.check_dense_coverage(
        "test",
        filenames,
        labels,
        {"audio": rows, "visual": {"video000007": dense((1, 2, "Dog"))}},
        paths,
    )
    assert covered == ["video000042", "video000099"]
    assert llp.DENSE_UNCOVERED_MAX_SHARE == 0.05
    for vid in ("video000001", "video000002", "video000003"):  # 6 of 100 > 5 %
        del rows[vid]
    with pytest.raises(
        llp.LLPDataError, match=r"LLP test: 6 of 100 videos .*a.csv has rows for 94"
    ):
        llp.check_dense_coverage("test", filenames, labels, {"audio": rows, "visual": {}}, paths)
    # A small split: a few uncovered videos pass whatever their share (1 of 19 is 5.3 %).
    small = {f[:11]: rows.get(f[:11], dense((0, 2, "Dog"))) for f in filenames[:19]}
    del small["video000005"]
    assert llp.DENSE_FEW_VIDEOS == 5
    assert llp.check_dense_coverage(
        "test", filenames[:19], labels[:19], {"audio": small, "visual": {}}, paths
    ) == ["video000005"]
    for vid in ("video000006", "video000008", "video000009", "video000010", "video000011"):
        del small[vid]  # 6 of 19
    with pytest.raises(llp.LLPDataError, match=r"LLP test: 6 of 19 videos .*or 5 videos"):
        llp.check_dense_coverage(
            "test", filenames[:19], labels[:19], {"audio": small, "visual": {}}, paths
        )


def test_dense_rows_are_checked_per_modality(caplog: pytest.LogCaptureFixture) -> None:
    """An audio CSV that lost a few percent of its rows passes the weak/dense cross-check
    (the visual rows still cover those classes), not silently the per-modality one: a
    warning names the file; far fewer rows than any dataset leaves fail."""
    n = 400
    filenames = [f"video{i:06d}_0_10" for i in range(n)]
    ids = [f[:11] for f in filenames]
    labels = np.zeros((n, 25), np.float32)
    labels[:, LLP_CLASS_INDEX["Dog"]] = 1
    segment = dense((0, 2, "Dog"))
    paths = {"audio": "a.csv", "visual": "v.csv"}
    # As released: 0.5 % without an audio row, 10 % without a visual row.
    audio, visual = {v: segment for v in ids[2:]}, {v: segment for v in ids[40:]}
    llp.check_dense_rows("test", filenames, {"audio": audio, "visual": visual}, paths)
    lost = {v: segment for v in ids[10:]}  # 10 of 400 = 2.5 % without an audio row
    assert (
        len(
            llp.check_dense_coverage(
                "test", filenames, labels, {"audio": lost, "visual": visual}, paths
            )
        )
        == 10
    )  # < 5 %
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        llp.check_dense_rows("test", filenames, {"audio": lost, "visual": visual}, paths)
    assert any(
        "LLP test: 10 of 400 videos (2.5 %) have no row in a.csv (the released file "
        "leaves 4 of 649 val" in r.message
        for r in caplog.records
    )
    caplog.clear()
    fewer = {v: segment for v in ids[61:]}  # 61 of 400 = 15.25 % without a visual row: warns
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        llp.check_dense_rows("test", filenames, {"audio": audio, "visual": fewer}, paths)
    assert any("61 of 400 videos" in r.message and "v.csv" in r.message for r in caplog.records)
    cut = {v: segment for v in ids[101:]}  # 101 of 400 = 25.25 % without an audio row: fails
    with pytest.raises(
        llp.LLPDataError,
        match=r"101 of 400 videos .* no row in a.csv .* more "
        r"than 25 %: it probably lost rows",
    ):
        llp.check_dense_rows("test", filenames, {"audio": cut, "visual": visual}, paths)
    with pytest.raises(llp.LLPDataError, match=r"no row in v.csv .* more than 50 %"):
        llp.check_dense_rows("test", filenames, {"audio": audio, "visual": {}}, paths)
    # A small split: up to DENSE_FEW_VIDEOS videos without rows pass.
    every = {v: segment for v in ids}
    llp.check_dense_rows(
        "val", filenames[:20], {"audio": {v: segment for v in ids[5:]}, "visual": every}, paths
    )
    with pytest.raises(llp.LLPDataError, match=r"LLP val: 20 of 20 videos"):
        llp.check_dense_rows("val", filenames[:20], {"audio": {}, "visual": every}, paths)


# --- The real annotation files --------------------------------------------------------------


@pytest.fixture
def real_llp() -> Path:
    if not REAL_LLP.is_dir():
        pytest.skip(f"{REAL_LLP} is absent")
    return REAL_LLP


def test_real_weak_csvs(real_llp: Path) -> None:
    sizes = {"train": 10000, "val": 649, "test": 1200}
    for split, csv in LLP_SPLIT_CSV.items():
        filenames, labels = llp.read_weak_csv(real_llp / csv)
        assert len(filenames) == labels.shape[0] == sizes[split]
        if split == "train":
            counts = np.bincount(labels.sum(axis=1).astype(int))
            assert counts.tolist() == [0, 4032, 5879, 89]


def test_real_dense_csvs(real_llp: Path) -> None:
    splits = {s: llp.read_weak_csv(real_llp / csv)[0] for s, csv in LLP_SPLIT_CSV.items()}
    eval_ids = {f[:11] for f in splits["val"] + splits["test"]}
    audio, report = llp.read_dense_csv(real_llp / LLP_DENSE_CSV["audio"])
    # 5 rows "t t" and one "9 0" (8DF2PxdT5tE, line 3770); 19jWnmYnlD8_30_400 (lines 3789-3790)
    # shares its id with the val video 19jWnmYnlD8_30_40.
    assert report == llp.DenseReport(
        rows=4131, zero_length=5, reversed=1, duplicates=8, unknown_video=0, id_conflicts=1
    )
    visual, report = llp.read_dense_csv(real_llp / LLP_DENSE_CSV["visual"])
    assert report == llp.DenseReport(rows=2495, id_conflicts=1)
    # Filenames of the dense CSVs that are in no split (e.g. "VMTJRpjbE_150_160" next to
    # the test video "1-VMTJRpjbE_150_160"); the reference evaluation never looks them up.
    orphans = {
        "12eWNawPekw",
        "17iGUal2M_1",
        "7X3oSVoA_90",
        "AkAfFL5Q4QA",
        "CSWQ_HzQ_10",
        "P7x4FV4lg_5",
        "VMTJRpjbE_1",
    }
    assert set(audio) - eval_ids == orphans
    assert set(visual) - eval_ids == orphans - {"17iGUal2M_1"}

    known = [f for names in splits.values() for f in names]
    audio, report = llp.read_dense_csv(real_llp / LLP_DENSE_CSV["audio"], known_ids=known)
    assert (report.unknown_video, report.id_conflicts) == (13, 0)
    assert set(audio) <= eval_ids
    visual, report = llp.read_dense_csv(real_llp / LLP_DENSE_CSV["visual"], known_ids=known)
    assert (report.unknown_video, report.id_conflicts) == (11, 0)
    assert set(visual) <= eval_ids
    assert audio["19jWnmYnlD8"][:, LLP_CLASS_INDEX["Clapping"]].sum() == 0


def test_real_dense_coverage(real_llp: Path, tmp_path: Path) -> None:
    """The released CSVs pass the cross-check (a warning: 12 of 649 val and 23 of 1,200
    test videos have a weak class without a dense segment); a truncated one fails."""
    splits = {s: llp.read_weak_csv(real_llp / csv) for s, csv in LLP_SPLIT_CSV.items()}
    known = [f for names, _ in splits.values() for f in names]
    paths = {m: real_llp / csv for m, csv in LLP_DENSE_CSV.items()}
    dense_rows = {m: llp.read_dense_csv(p, known_ids=known)[0] for m, p in paths.items()}
    counts = {
        s: len(llp.check_dense_coverage(s, *splits[s], dense_rows, paths)) for s in ("val", "test")
    }
    assert counts == {"val": 12, "test": 23}
    cut = tmp_path / LLP_DENSE_CSV["audio"]
    cut.write_text("".join(paths["audio"].read_text().splitlines(keepends=True)[:45]))
    truncated = dict(dense_rows, audio=llp.read_dense_csv(cut, known_ids=known)[0])
    with pytest.raises(llp.LLPDataError, match=r"LLP test: 6\d\d of 1200 videos"):
        llp.check_dense_coverage("test", *splits["test"], truncated, dict(paths, audio=cut))


def test_real_dense_rows_per_modality(
    real_llp: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The released CSVs pass the per-modality check (4 of 649 val and 6 of 1,200 test
    videos have no audio row, 70 and 121 no visual row); the audio CSV without its last
    2 % of rows (`head -n -83`) passes the weak/dense cross-check but is warned about, and
    without its last half it fails."""
    splits = {s: llp.read_weak_csv(real_llp / csv) for s, csv in LLP_SPLIT_CSV.items()}
    known = [f for names, _ in splits.values() for f in names]
    paths = {m: real_llp / csv for m, csv in LLP_DENSE_CSV.items()}
    dense_rows = {m: llp.read_dense_csv(p, known_ids=known)[0] for m, p in paths.items()}
    for split in ("val", "test"):
        llp.check_dense_rows(split, splits[split][0], dense_rows, paths)
        missing = {
            m: sum(f[:11] not in rows for f in splits[split][0]) for m, rows in dense_rows.items()
        }
        assert (
            missing
            == {"val": {"audio": 4, "visual": 70}, "test": {"audio": 6, "visual": 121}}[split]
        )
    lines = paths["audio"].read_text().splitlines(keepends=True)
    cut = tmp_path / LLP_DENSE_CSV["audio"]
    cut.write_text("".join(lines[:-83]))  # 83 of 4,131 rows
    truncated = dict(dense_rows, audio=llp.read_dense_csv(cut, known_ids=known)[0])
    cut_paths = dict(paths, audio=cut)
    assert len(llp.check_dense_coverage("val", *splits["val"], truncated, cut_paths)) == 32  # < 5 %
    with caplog.at_level(logging.WARNING, logger=llp.__name__):
        llp.check_dense_rows("val", splits["val"][0], truncated, cut_paths)
    assert any(
        f"LLP val: 37 of 649 videos (5.7 %) have no row in {cut}" in r.message
        for r in caplog.records
    )
    cut.write_text("".join(lines[: len(lines) // 2]))
    halved = dict(dense_rows, audio=llp.read_dense_csv(cut, known_ids=known)[0])
    with pytest.raises(llp.LLPDataError, match=rf"LLP val: .* no row in {cut} .* more than 25 %"):
        llp.check_dense_rows("val", splits["val"][0], halved, cut_paths)


def test_unreadable_feature_folder_fails_clearly(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("res152"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(llp_prepared.os, "scandir", scandir)
    with pytest.raises(
        llp.LLPDataError, match=r"res152: cannot list the feature folder: Permission"
    ):
        llp.load_split(root, "val", tfds_dir=tmp_path / "tfds")


def test_root_without_feature_folders_fails_clearly(tmp_path):
    (tmp_path / "vggish").mkdir()
    with pytest.raises(llp.LLPDataError, match=r"missing \['res152', 'r2plus1d_18'\]"):
        llp.load_split(tmp_path, "val", tfds_dir=tmp_path / "tfds")


def test_split_csv_that_lost_rows_fails(tmp_path: Path) -> None:
    """A test CSV cut short leaves its videos' dense rows in no split: the scores would
    silently come from fewer videos."""
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    extra = [f"lostvideo{i:02d}_0_10\t0\t1\tDog" for i in range(11)]  # 11 > DENSE_ORPHANS_ALLOWED
    _write(root / LLP_DENSE_CSV["audio"], DENSE_HEADER, AUDIO_ROWS + extra[:9])
    llp.load_split(root, "test", tfds_dir=tmp_path / "tfds")  # 1 + 9 orphans: allowed
    _write(root / LLP_DENSE_CSV["audio"], DENSE_HEADER, AUDIO_ROWS + extra)
    with pytest.raises(
        llp.LLPDataError,
        match=r"LLP: 12 videos have rows in .*AVVP_eval_audio.csv.* but are in no "
        r"split CSV.*AVVP_test_pd.csv lists 2",
    ):
        llp.load_split(root, "test", tfds_dir=tmp_path / "tfds")


def test_real_dense_orphans_pass_and_a_cut_test_csv_fails(real_llp: Path) -> None:
    splits = {s: llp.read_weak_csv(real_llp / csv)[0] for s, csv in LLP_SPLIT_CSV.items()}
    paths = {s: real_llp / LLP_SPLIT_CSV[s] for s in ("val", "test")}

    def orphans(names):
        known = [f for s in names for f in names[s]]
        return set().union(
            *(
                llp.read_dense_csv(real_llp / csv, known_ids=known)[1].unknown_files
                for csv in LLP_DENSE_CSV.values()
            )
        )

    released = orphans(splits)
    assert len(released) == 8
    llp.check_dense_orphans(released, {"val": 649, "test": 1200}, paths, ["a", "v"])
    cut = dict(splits, test=splits["test"][:1100])  # `head -n 1101 AVVP_test_pd.csv`
    with pytest.raises(llp.LLPDataError, match=r"LLP: 10\d videos .*AVVP_test_pd.csv lists 1100"):
        llp.check_dense_orphans(orphans(cut), {"val": 649, "test": 1100}, paths, ["a", "v"])
