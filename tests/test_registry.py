"""Extension points: an Anchor and a dataset registered from outside the package
(``tests/extension/toy.py``) train and evaluate through the entry scripts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from coleaf_jax import registry
from coleaf_jax.config import load_config_file, validate
from coleaf_jax.evaluation import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CONFIG = os.path.join(ROOT, "tests", "extension", "config.py")


def test_built_ins_are_registered():
    assert {"han", "cmpae"} <= set(registry.ANCHORS)
    assert {"llp", "synthetic", "unav100", "synthetic_unav100"} <= set(registry.DATASETS)
    assert registry.anchor("cmpae").denoise and registry.anchor("cmpae").thresholds == "official"
    assert registry.anchor("han").pool_frames_first
    assert not registry.anchor("cmpae").pool_frames_first
    assert registry.dataset("unav100").feature_layout == "unav100"


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ValueError, match=r"config.model.anchor = 'nope': expected one of .*cmpae"):
        registry.anchor("nope")
    with pytest.raises(ValueError, match=r"config.data.dataset = 'nope': expected one of .*llp"):
        registry.dataset("nope")


@pytest.fixture
def restored_registry():
    """The registry as it was before the test (the toy entries do not leak into others)."""
    anchors, datasets = dict(registry.ANCHORS), dict(registry.DATASETS)
    yield
    registry.ANCHORS.clear(), registry.ANCHORS.update(anchors)
    registry.DATASETS.clear(), registry.DATASETS.update(datasets)
    sys.modules.pop("tests.extension.toy", None)


def test_extensions_are_imported_by_validation(restored_registry):
    """The config names the module; validating it registers the toy entries."""
    config = load_config_file(TOY_CONFIG)
    assert "toy_anchor" in registry.ANCHORS and "toy" in registry.DATASETS
    config.extensions = ("tests.extension.no_such_module",)
    with pytest.raises(ValueError, match=r"config.extensions.*no_such_module"):
        validate(config)


def _run(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_toy_anchor_and_dataset_train_and_evaluate_through_the_cli(tmp_path):
    workdir = str(tmp_path / "run")
    _run("train.py", "--config", TOY_CONFIG, "--workdir", workdir)
    result = json.load(open(os.path.join(workdir, "test_metrics.json")))
    stored = json.load(open(os.path.join(workdir, "config.json")))
    assert stored["model"]["anchor"] == "toy_anchor" and stored["data"]["dataset"] == "toy"
    assert result["epoch"] == 1
    scores = [result[k] for k in metrics.SCORE_KEYS]
    assert all(np.isfinite(scores)) and max(scores) > 0  # scored on the toy classes
    # eval.py restores it with the same config file, as a user evaluates their run
    out = _run("eval.py", "--config", TOY_CONFIG, "--workdir", workdir)
    (written,) = os.listdir(os.path.join(workdir, "eval"))  # test_epoch1_standard.json
    evaluated = json.load(open(os.path.join(workdir, "eval", written)))
    assert [evaluated[k] for k in metrics.SCORE_KEYS] == scores, out[-1000:]
