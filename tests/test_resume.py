"""Resuming a run with another config: refused naming the keys, unless only resumable
keys changed or a key was added since with its default.

Uses the tiny finished run of ``tests/conftest.py`` (``run``, ``data_root``).
"""

from __future__ import annotations

import json
import os

import pytest

from coleaf_jax.training import train
from coleaf_jax.training import workdir as workdir_lib
from tests.helpers import (
    copy_run,
    run_config,
)

# --- Resuming with another config -------------------------------------------------------------


def test_resume_with_a_changed_config_is_refused_naming_the_keys(run, tmp_path, capsys):
    workdir = copy_run(run, tmp_path)
    stored = open(os.path.join(workdir, "config.json")).read()
    changed = run_config(run.root, seed=1, learning_rate=1e-3, **{"model.d_model": 32})
    with pytest.raises(workdir_lib.ConfigMismatchError) as info:
        train.train_and_evaluate(changed, workdir, data=run.data)
    message = str(info.value)
    for needle in (
        "seed (0 -> 1)",
        "learning_rate (0.0005 -> 0.001)",
        "model.d_model (16 -> 32)",
        "config.json",
    ):
        assert needle in message, needle
    assert open(os.path.join(workdir, "config.json")).read() == stored  # not overwritten
    with pytest.raises(workdir_lib.ConfigMismatchError, match="already trained 3 epochs"):
        train.train_and_evaluate(run_config(run.root, num_epochs=2), workdir, data=run.data)
    # Keys that do not change what an epoch computes may change.
    harmless = run_config(run.root, log_every_steps=7, **{"eval.batch_size": 8})
    assert train.train_and_evaluate(harmless, workdir, data=run.data) == run.result
    assert json.load(open(os.path.join(workdir, "config.json")))["log_every_steps"] == 7
    assert "resuming with" in capsys.readouterr().out


def test_config_differences_ignore_keys_added_since_with_their_default():
    stored = {"a": 1, "data": {"root": "x"}, "t": [1, 2]}
    new = {"a": 1, "data": {"root": "x", "allow_missing": False}, "t": (1, 2)}
    assert workdir_lib.config_differences(stored, new, defaults=new) == {}
    assert workdir_lib.config_differences(stored, dict(new, a=2), defaults=new) == {"a": (1, 2)}
    flipped = {"a": 1, "data": {"root": "x", "allow_missing": True}, "t": (1, 2)}
    assert workdir_lib.config_differences(stored, flipped, defaults=new) == {
        "data.allow_missing": (None, True)
    }
