"""Streamed splits (features read from the prepared array_record files batch by batch):
identical to the in-memory splits, chosen by the memory budget, read ahead in the background."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from coleaf_jax.data import datasets, llp, pipeline
from coleaf_jax.training import train
from tests.test_llp_data import make_layout
from tests.test_train import tiny_config


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("llp")
    make_layout(root)
    return root, root.parent / "tfds"


@pytest.mark.parametrize("pool_frames", [False, True])
@pytest.mark.parametrize("split", ["train", "val"])
def test_streamed_split_equals_resident(layout, split, pool_frames):
    root, cache = layout
    resident = llp.load_split(root, split, tfds_dir=cache, pool_frames=pool_frames)
    streamed = llp.load_split(root, split, tfds_dir=cache, pool_frames=pool_frames, stream=True)
    assert pipeline.is_streamed(streamed) and not pipeline.is_streamed(resident)
    assert set(streamed) == set(resident)
    for key in resident:
        column = streamed[key]
        assert column.shape == resident[key].shape, key
        if key in llp.FEATURE_FOLDERS:
            np.testing.assert_array_equal(column[np.array([1, 0])], resident[key][[1, 0]])
            np.testing.assert_array_equal(column[1], resident[key][1])
            np.testing.assert_array_equal(column[0:2], resident[key][0:2])
            assert column.nbytes == resident[key].nbytes
        else:
            np.testing.assert_array_equal(column, resident[key])
    perm = np.array([1, 0])
    for a, b in zip(
        pipeline.epoch_batches(streamed, 4, perm), pipeline.epoch_batches(resident, 4, perm)
    ):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(TypeError, match="not held in memory"):
        np.asarray(streamed["audio"])
    with pytest.raises(ValueError, match="cannot be kept on the device"):
        pipeline.resident_fields(streamed)


def test_splits_stream_beyond_the_memory_budget():
    config = tiny_config()
    sizes = {"train": 6 * 2**30, "val": 0.5 * 2**30, "test": 1 * 2**30}
    config.data.resident_max_gib = 4.0  # val and test first, then train if it still fits
    assert datasets.streamed_splits(config, ("train", "val", "test"), sizes.get) == {"train"}
    config.data.resident_max_gib = 1.2
    assert datasets.streamed_splits(config, ("train", "val", "test"), sizes.get) == {
        "train",
        "test",
    }
    config.data.resident_max_gib = 100.0
    assert datasets.streamed_splits(config, ("train", "val", "test"), sizes.get) == set()


def test_background_reads_ahead_propagates_errors_and_stops():
    produced = []

    def items(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise RuntimeError("broken file")
            produced.append(i)
            yield i

    assert list(pipeline.background(items(5), 2)) == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="broken file"):
        list(pipeline.background(items(5, fail_at=3), 2))
    produced.clear()
    it = pipeline.background(items(1000), 2)
    assert next(it) == 0
    it.close()  # leaving early stops the reader: it does not run through the split
    for thread in threading.enumerate():
        if thread.name == "coleaf-prefetch":
            thread.join(timeout=5)
    assert len(produced) < 10


def test_training_on_a_streamed_split_equals_training_in_memory(tmp_path):
    """Same config, same batches: the scores and losses of a run whose splits are all
    streamed are those of the run holding them in memory (host pipeline both)."""
    results = {}
    for name, budget in (("resident", 100.0), ("streamed", 0.0)):
        config = tiny_config(
            **{"num_epochs": 1, "data.on_device": False, "data.resident_max_gib": budget}
        )
        config.data.root = str(tmp_path / "data")  # one generated dataset for both runs
        workdir = tmp_path / name
        results[name] = train.train_and_evaluate(config, str(workdir), verbose=False)
        with open(workdir / "metrics.jsonl") as f:
            results[name + "_log"] = json.loads(f.readline())["train"]
    for key in ("seg_a", "seg_ao", "evt_vo", "evt_av"):
        assert results["streamed"][key] == results["resident"][key], key
    assert results["streamed_log"] == results["resident_log"]
    assert os.path.exists(tmp_path / "data")
