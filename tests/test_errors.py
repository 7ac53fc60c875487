"""One-line errors: bad flags, config values, LLP roots and workdirs end in one
``error:`` line naming what to fix, with no traceback, and create nothing.

Uses the tiny finished run of ``tests/conftest.py`` (``run``, ``data_root``).
"""

from __future__ import annotations

import os
import sys

import pytest

from coleaf_jax import cli
from coleaf_jax.data import llp_prepared
from coleaf_jax.data.classes import LLP_SPLIT_CSV
from coleaf_jax.training import train
from tests.helpers import (
    ROOT,
    assert_one_line_error,
    run_config,
    run_script,
)
from tests.test_train import tiny_config

# --- One-line errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--config.model.nope=1"],
            "--config.model.nope: the config (configs/synthetic.py) has no key "
            "'model.nope' (did you mean",
        ),
        (["--config.batch_sise=3"], "has no key 'batch_sise' (did you mean batch_size"),
        (["--config.batch_size=abc"], "flag --config.batch_size=abc: invalid literal for int()"),
        (
            ["--config=configs/nope.py"],
            "--config=configs/nope.py: config file 'configs/nope.py' not found",
        ),
        (["--config=configs/synthetic.py:bogus"], "configs/synthetic.py: unknown option 'bogus'"),
        (["--config=configs/synthetic.py", "--workdir"], "Missing value for flag --workdir"),
        (["--config=configs/synthetic.py", "--nope=1"], "Unknown command line flag 'nope'"),
    ],
    ids=[
        "unknown-key",
        "misspelt-key",
        "bad-value",
        "missing-file",
        "unknown-variant",
        "flag-without-value",
        "unknown-flag",
    ],
)
def test_flag_and_config_errors_are_one_line(args, needle, monkeypatch):
    from absl import flags
    from ml_collections import config_flags

    argv = [
        "train.py",
        *(
            []
            if any(a.startswith("--config=") for a in args)
            else ["--config=configs/synthetic.py"]
        ),
        *args,
    ]
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", argv)  # ml_collections defines --config.* from sys.argv
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "", flag_values=fv)
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    with pytest.raises(SystemExit) as info:
        cli.parse_flags(argv, fv)
    message = str(info.value)
    assert message.startswith("error: ") and "\n" not in message and needle in message, message


def test_entry_scripts_end_with_one_line_errors_and_create_nothing(tmp_path):
    workdir = str(tmp_path / "never")
    proc = run_script(
        "train.py",
        "--config",
        "configs/synthetic.py",
        "--workdir",
        workdir,
        "--config.model.nope=1",
    )
    assert_one_line_error(proc, "--config.model.nope", "has no key 'model.nope'")
    proc = run_script("eval.py", "--config", "configs/synthetic.py", "--workdir", workdir)
    assert_one_line_error(proc, f"--workdir {workdir}: no such folder")
    proc = run_script(
        "parse.py",
        "--config",
        "configs/synthetic.py",
        "--workdir",
        workdir,
        "--output",
        str(tmp_path / "parsed"),
        "--split",
        "test",
    )
    assert_one_line_error(proc, f"--workdir {workdir}: no such folder")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("batch_size", 0, "config.batch_size = 0: expected a whole number >= 1"),
        ("batch_size", -4, "config.batch_size = -4"),
        ("num_epochs", 0, "config.num_epochs = 0: expected a whole number >= 1"),
        ("eval.batch_size", 0, "config.eval.batch_size = 0"),
        ("learning_rate", float("nan"), "config.learning_rate = nan: expected a finite number > 0"),
        ("learning_rate", 0.0, "config.learning_rate = 0.0: expected a finite number > 0"),
        # both ran before, with wrong results: epoch // 0 on the device, every unit dropped
        ("lr_decay_every_epochs", 0, "config.lr_decay_every_epochs = 0: expected a whole number"),
        ("model.dropout", 1.5, "config.model.dropout = 1.5: expected a number in [0.0, 1.0)"),
        ("loss.kd_threshold_visual", 1.2, "config.loss.kd_threshold_visual = 1.2: expected"),
        ("loss.nce_temperature", 0.0, "config.loss.nce_temperature = 0.0: expected a finite"),
        ("model.d_model", True, "config.model.d_model = True: expected a whole number"),
        ("loss.visual_label_smoothing", (0.9,), "config.loss.visual_label_smoothing = [0.9]"),
        ("eval.thresholds", "han", "config.eval.thresholds = 'han': expected one of"),
    ],
)
def test_bad_run_values_are_one_line_errors(tmp_path, key, value, needle):
    config = tiny_config("han", **{key: value})
    with pytest.raises(SystemExit) as info:
        cli.exit_on_user_error(train.train_and_evaluate, config, str(tmp_path / "w"), verbose=False)
    assert str(info.value) == f"error: {needle}" or str(info.value).startswith(f"error: {needle}")
    assert not os.path.exists(tmp_path / "w")


def test_bad_llp_roots_are_one_line_errors(tmp_path, monkeypatch):
    from tests.test_llp_data import WEAK_HEADER, _write, make_layout

    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    config = run_config(
        str(root), **{"data.dataset": "llp", "data.tfds_dir": str(tmp_path / "tfds")}
    )
    _write(root / LLP_SPLIT_CSV["val"], WEAK_HEADER, [])  # a header-only split CSV
    with pytest.raises(SystemExit, match=r"^error: \S+AVVP_val_pd.csv: no video of the val split"):
        cli.exit_on_user_error(
            train.train_and_evaluate, config, str(tmp_path / "w1"), verbose=False
        )
    with pytest.raises(SystemExit, match=r"^error: \S+/nowhere: expected the LLP feature folders"):
        cli.exit_on_user_error(
            train.train_and_evaluate,
            run_config(str(tmp_path / "nowhere"), **{"data.dataset": "llp"}),
            str(tmp_path / "w2"),
            verbose=False,
        )
    real_scandir = os.scandir

    def unreadable(path):
        if str(path).startswith(str(root)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(llp_prepared.os, "scandir", unreadable)
    with pytest.raises(
        SystemExit, match=r"^error: \S+: cannot list the feature folder: Permission denied$"
    ):
        cli.exit_on_user_error(
            train.train_and_evaluate, config, str(tmp_path / "w3"), verbose=False
        )


def test_a_workdir_that_is_a_file_is_one_clear_line(tmp_path):
    path = tmp_path / "runs"
    path.write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        cli.exit_on_user_error(
            train.train_and_evaluate, tiny_config("han"), str(path), verbose=False
        )
    assert str(info.value) == (
        f"error: --workdir {path}: a file, not a folder; give a folder (created if missing)"
    )
    assert path.read_text() == "not a folder"
