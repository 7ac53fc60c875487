"""Faults: a diverged run (non-finite losses or parameters), damaged, truncated or
unreadable checkpoints, a run without its stored config.

Uses the tiny finished run of ``tests/conftest.py`` (``run``, ``data_root``).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax import cli
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import runs
from coleaf_jax.training import checkpoints, finite, train
from coleaf_jax.training import step as step_lib
from coleaf_jax.training import workdir as workdir_lib
from tests.helpers import (
    EPOCHS,
    copy_run,
    expected_best,
    kept,
    rows,
    run_config,
)
from tests.test_train import tiny_config

# --- Faults: a diverged run, a damaged checkpoint --------------------------------------------


def test_non_finite_loss_stops_training_and_saves_nothing(tmp_path, data_root):
    root, data = data_root
    workdir = str(tmp_path / "diverged")
    with pytest.raises(finite.NonFiniteLossError) as info:
        train.train_and_evaluate(
            run_config(root, learning_rate=1e8), workdir, data=data, verbose=False
        )
    message = str(info.value)
    assert "non-finite loss at step" in message and "(epoch 1, step" in message
    assert "anchor_loss = nan" in message
    # A changed learning rate is refused on resume: the advice is a new workdir.
    assert "learning_rate (now 100000000.0) in a new --workdir" in message
    assert kept(workdir) == set()
    assert not os.path.exists(os.path.join(workdir, "test_metrics.json"))
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl")) or rows(workdir) == []

    def diverged():  # the entry scripts' handling of the same error
        raise info.value

    with pytest.raises(SystemExit) as exit_info:
        cli.exit_on_user_error(diverged)
    assert str(exit_info.value) == f"error: {' '.join(message.split())}"


def test_non_finite_parameters_with_finite_losses_stop_training(tmp_path, data_root):
    """One step per epoch, learning rate 1e39: the step's loss, computed before its update,
    is finite; the parameters the update leaves are not. Nothing is scored or saved."""
    root, data = data_root
    n_train = len(data["train"]["label"])
    workdir = str(tmp_path / "diverged")
    config = run_config(root, num_epochs=1, batch_size=n_train, learning_rate=1e39)
    with pytest.raises(finite.NonFiniteLossError) as info:
        train.train_and_evaluate(config, workdir, data=data, verbose=False)
    message = str(info.value)
    assert (
        "the Anchor's parameters are NaN/inf after step 1 (the last of epoch 1), although "
        "every logged loss of the epoch is finite"
    ) in message
    assert "nothing of epoch 1 is scored, selected or saved" in message
    assert "in a new --workdir" in message
    assert kept(workdir) == set()
    assert not os.path.exists(os.path.join(workdir, "test_metrics.json"))
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl")) or rows(workdir) == []


def test_a_diverged_seed_is_named_with_its_non_finite_terms(monkeypatch, data_root, tmp_path):
    """Many seeds at once (coleaf_jax.training.seeds): seed 8 of 7, 8 starts from NaN parameters;
    the error names it and its non-finite terms, not seed 7's finite ones."""
    from coleaf_jax.training import seeds as seeds_lib

    root, data = data_root
    made = []
    real = seeds_lib.create_train_state

    def create(*args, **kwargs):
        state, *rest = real(*args, **kwargs)
        if made:  # the second seed
            state = state.replace(
                anchor_params=jax.tree_util.tree_map(
                    lambda x: jnp.full_like(x, jnp.nan), state.anchor_params
                )
            )
        made.append(state)
        return (state, *rest)

    monkeypatch.setattr(seeds_lib, "create_train_state", create)
    config = run_config(root, num_epochs=1, num_seeds=2, seed=7)
    with pytest.raises(finite.NonFiniteLossError) as info:
        seeds_lib.train_seeds(config, str(tmp_path / "seeds"), data=data, verbose=False)
    message = str(info.value)
    assert "non-finite loss at step 1 (epoch 1, step 1 of" in message
    assert "seed 8 (index 1 of 2): anchor_loss = nan" in message and "seed 7" not in message
    # Parameters that become non-finite in one seed only: named too.
    states = step_lib.TrainState(
        step=jnp.zeros(3),
        anchor_params={"w": jnp.array([[1.0, 2.0], [1.0, np.inf], [0.0, 0.0]])},
        anchor_opt=(),
        ref_params={},
        ref_opt=(),
    )
    record = finite.track(None, {"anchor_loss": jnp.ones(3)}, 0)
    record["params_finite"] = finite.finite_params(states, per_seed=True)
    with pytest.raises(
        finite.NonFiniteLossError, match=r"the Anchor's parameters \(seed 8\) are NaN"
    ):
        finite.check_finite(record, 0, 1, config, None, [7, 8, 9])


def test_non_finite_loss_in_a_later_epoch_names_it_and_keeps_the_earlier_run(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    before = (kept(workdir), open(os.path.join(workdir, "test_metrics.json")).read())
    bad = dict(run.data)
    bad["train"] = dict(run.data["train"], audio=np.full_like(run.data["train"]["audio"], np.inf))
    steps = pipeline.num_batches(len(bad["train"]["label"]), run_config(run.root).batch_size)
    with pytest.raises(finite.NonFiniteLossError) as info:
        train.train_and_evaluate(
            run_config(run.root, num_epochs=EPOCHS + 1), workdir, data=bad, verbose=False
        )
    assert f"at step {EPOCHS * steps + 1} (epoch {EPOCHS + 1}, step 1 of {steps})" in str(
        info.value
    )
    assert f"checkpoints of epochs up to {EPOCHS} are kept" in str(info.value)
    assert (kept(workdir), open(os.path.join(workdir, "test_metrics.json")).read()) == before
    assert [r["epoch"] for r in rows(workdir)] == [1, 2, 3]


def test_non_finite_tracking_finds_the_first_bad_step():
    logs = [
        {"a": jnp.float32(1.0), "b": jnp.float32(2.0)},
        {"a": jnp.float32(1.0), "b": jnp.float32(np.inf)},
        {"a": jnp.float32(np.nan), "b": jnp.float32(2.0)},
    ]
    record = finite.track(None, logs[0], 0)
    assert int(record["first_bad"]) == -1
    for i, step_logs in enumerate(logs[1:], start=1):
        record = finite.track(record, step_logs, i)
    assert int(record["first_bad"]) == 1 and float(record["bad_logs"]["b"]) == np.inf
    stacked = {k: jnp.stack([step_logs[k] for step_logs in logs]) for k in ("a", "b")}
    scanned = finite.track_stacked(stacked)  # the lax.scan epoch's per-step logs
    assert int(scanned["first_bad"]) == 1 and float(scanned["bad_logs"]["a"]) == 1.0
    config = SimpleNamespace(learning_rate=0.1)
    with pytest.raises(
        finite.NonFiniteLossError, match=r"at step 5 \(epoch 2, step 2 of 3\): b = inf"
    ):
        finite.check_finite(scanned, 1, 3, config, None)
    ok = finite.track_stacked({k: v[:1] for k, v in stacked.items()})
    assert finite.check_finite(ok, 0, 1, config, None) == {"a": 1.0, "b": 2.0}


def _truncate_largest_array_file(checkpoint: Path) -> Path:
    files = [p for p in (checkpoint / "default").rglob("*") if p.is_file() and p.parent.name == "d"]
    target = max(files, key=lambda p: p.stat().st_size)
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size // 2)
    return target


def test_truncated_latest_checkpoint_falls_back_and_the_run_completes(run, tmp_path, capsys):
    workdir = copy_run(run, tmp_path)
    best = expected_best(workdir)
    _truncate_largest_array_file(Path(workdir) / "checkpoints" / str(EPOCHS))
    # As if killed after writing epoch 4's row but before its checkpoint.
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"epoch": EPOCHS + 1, "val_selection": 0.0}) + "\n")
    result = train.train_and_evaluate(
        run_config(run.root, num_epochs=EPOCHS + 1), workdir, data=run.data, verbose=True
    )
    out = capsys.readouterr().out
    assert f"checkpoint {EPOCHS} (" in out and "is damaged: cannot read its arrays" in out
    fallback = best if best != EPOCHS else None
    assert (
        f"falling back to checkpoint {fallback}" if fallback else "training starts from scratch"
    ) in out
    assert os.listdir(os.path.join(workdir, "damaged_checkpoints"))[0].startswith(f"{EPOCHS}-")
    assert [r["epoch"] for r in rows(workdir)] == [1, 2, 3, 4]  # each epoch once
    assert max(kept(workdir)) == EPOCHS + 1 and result["epoch"] == expected_best(workdir)


def test_damaged_checkpoints_are_named_moved_and_skipped(tmp_path, capsys):
    workdir = str(tmp_path)
    mngr = checkpoints.checkpoint_manager(workdir)
    rng = np.random.default_rng(0)  # incompressible: stored in data files, not inlined
    states = {e: {"w": rng.standard_normal(4096).astype(np.float32)} for e in range(1, 6)}
    for epoch, selection in zip(range(1, 5), [0.9, 0.5, 0.4, 0.3]):  # kept: best 1, latest 4
        checkpoints.save_checkpoint(mngr, epoch, states[epoch], selection)
    assert set(mngr.all_steps()) == {1, 4}
    template = {"w": np.zeros(4096, np.float32)}
    # The best (epoch 1) has a damaged score file: named, moved away, training goes on.
    (tmp_path / "checkpoints" / "1" / "metrics" / "metrics").write_text('{"selec')
    epoch, state = checkpoints.restore_latest_intact(mngr, workdir, template)
    assert epoch == 4 and np.array_equal(state["w"], states[4]["w"])
    out = capsys.readouterr().out
    assert "checkpoint 1 (" in out and "cannot read its validation score" in out
    assert "it was the best on validation" in out
    assert set(mngr.all_steps()) == {4}
    # The latest has a truncated array file: it falls back to the previous checkpoint.
    checkpoints.save_checkpoint(mngr, 5, states[5], 0.1)
    assert set(mngr.all_steps()) == {4, 5}
    _truncate_largest_array_file(tmp_path / "checkpoints" / "5")
    epoch, state = checkpoints.restore_latest_intact(mngr, workdir, template)
    assert epoch == 4 and np.array_equal(state["w"], states[4]["w"])
    out = capsys.readouterr().out
    assert "checkpoint 5 (" in out and "falling back to checkpoint 4" in out
    # Nothing readable left: training starts from scratch, and says so.
    (tmp_path / "checkpoints" / "4" / "default" / "_METADATA").unlink()
    epoch, state = checkpoints.restore_latest_intact(mngr, workdir, template)
    assert epoch == 0 and state is template
    assert "no other checkpoint: training starts from scratch" in capsys.readouterr().out
    assert sorted(p.split("-")[0] for p in os.listdir(tmp_path / "damaged_checkpoints")) == [
        "1",
        "4",
        "5",
    ]
    mngr.close()


def test_an_unparsable_score_is_named_when_the_checkpoints_are_opened(run, tmp_path, capsys):
    """Orbax reads every checkpoint's score when it opens the folder (a new process), and
    its error names none: eval.py names the checkpoint, training moves it away."""
    workdir = str(tmp_path / "w")
    mngr = checkpoints.checkpoint_manager(workdir)
    for epoch, selection in ((1, 0.9), (2, 0.5)):
        checkpoints.save_checkpoint(mngr, epoch, {"w": np.arange(4, dtype=np.float32)}, selection)
    mngr.close()
    (tmp_path / "w" / "checkpoints" / "1" / "metrics" / "metrics").write_text('{"selec')
    with pytest.raises(
        checkpoints.CheckpointDamagedError,
        match=r"^checkpoint 1 \(.*\) is damaged: cannot read its validation score",
    ):
        checkpoints.open_checkpoints(workdir, create=False)
    assert kept(workdir) == {1, 2}
    mngr = checkpoints.open_checkpoints(workdir, move=True)
    assert set(mngr.all_steps()) == {2} and kept(workdir) == {2}
    mngr.close()
    out = capsys.readouterr().out
    assert "checkpoint 1 (" in out and "Moved it to" in out
    assert os.listdir(tmp_path / "w" / "damaged_checkpoints")[0].startswith("1-")
    # The entry points open the folder this way: eval fails naming it, in one line.
    copy = copy_run(run, tmp_path)
    best = expected_best(copy)
    (Path(copy) / "checkpoints" / str(best) / "metrics" / "metrics").write_bytes(b"\xff\xfe")
    with pytest.raises(
        SystemExit,
        match=rf"^error: checkpoint {best} \(.*\) is damaged: cannot "
        rf"read its validation score",
    ):
        cli.exit_on_user_error(runs.evaluate_checkpoint, run_config(run.root), copy, verbose=False)


def test_checkpoints_unreadable_without_damage_stay_in_place(tmp_path, monkeypatch):
    """Only damage moves a checkpoint away: no permission (Python's or tensorstore's
    EACCES) is a one-line error naming it, an unrelated exception propagates naming it;
    the checkpoint stays either way."""
    workdir = str(tmp_path)
    mngr = checkpoints.checkpoint_manager(workdir)
    state = {"w": np.arange(4, dtype=np.float32)}
    for epoch, selection in ((1, 0.9), (2, 0.5)):
        checkpoints.save_checkpoint(mngr, epoch, state, selection)
    path = str(tmp_path / "checkpoints" / "2")
    tensorstore_eacces = ValueError(
        f'PERMISSION_DENIED: Error reading "w/0" in OCDBT database at local file "{path}/default/"'
        f": Failed to open: {path}/default/d/x [OS error 13: EACCES Permission denied]"
    )
    failures = [
        (PermissionError(errno.EACCES, "Permission denied", path), checkpoints.CheckpointReadError),
        (tensorstore_eacces, checkpoints.CheckpointReadError),
        (RuntimeError("unrelated"), RuntimeError),
    ]
    for where, what in (
        ("restore", "arrays"),
        ("item_metadata", "metadata"),
        ("metrics", "validation score"),
    ):
        for error, expected in failures:

            def fail(*args, _error=error, **kwargs):
                raise _error

            monkeypatch.setattr(mngr, where, fail)
            with pytest.raises(expected) as info:
                checkpoints.restore_latest_intact(mngr, workdir, dict(state), verbose=False)
            named = f"checkpoint {1 if where == 'metrics' else 2} ("
            message = cli.one_line(info.value)
            assert named in message and f"its {what}" in message, message
            assert set(mngr.all_steps()) == {1, 2} and kept(workdir) == {1, 2}
            assert not os.path.exists(tmp_path / "damaged_checkpoints")
            monkeypatch.undo()
    for damage in (
        ValueError('DATA_LOSS: Error reading "w/0": Error decoding'),
        ValueError("OUT_OF_RANGE: Requested byte range [0, 15141) is not valid"),
        ValueError('NOT_FOUND: Error reading "w/.zarray" [OS error 2: ENOENT No such file]'),
        ValueError("UNKNOWN: Error reading [OS error 5: EIO Input/output error]"),
        OSError(errno.EIO, "Input/output error"),
        FileNotFoundError("_METADATA"),
        json.JSONDecodeError("Unterminated string", '{"tree', 1),
    ):
        assert checkpoints.is_damage(damage), damage
    assert checkpoints.is_damage(ValueError("a shape mismatch")) is None
    assert checkpoints.is_damage(MemoryError()) is None
    assert checkpoints.is_damage(OSError(errno.ENOMEM, "Cannot allocate memory")) is False
    mngr.close()


def test_resume_without_the_stored_config_is_refused(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    os.remove(os.path.join(workdir, "config.json"))
    with pytest.raises(
        workdir_lib.ConfigMismatchError, match="holds checkpoints but no config.json"
    ):
        train.train_and_evaluate(run_config(run.root), workdir, data=run.data, verbose=False)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write('{"seed": ')
    with pytest.raises(workdir_lib.RunError, match="cannot read the run's stored config"):
        train.train_and_evaluate(run_config(run.root), workdir, data=run.data, verbose=False)


def test_eval_on_a_damaged_checkpoint_fails_clearly(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    best = expected_best(workdir)
    (Path(workdir) / "checkpoints" / str(best) / "default" / "_METADATA").write_text('{"tree')
    with pytest.raises(SystemExit) as info:
        cli.exit_on_user_error(
            runs.evaluate_checkpoint, run_config(run.root), workdir, verbose=False
        )
    message = str(info.value)
    assert message.startswith(f"error: checkpoint {best} (") and "is damaged" in message
    assert "\n" not in message and len(message) < 800


def test_eval_into_another_model_names_the_differing_keys(run):
    with pytest.raises(checkpoints.CheckpointMismatchError) as info:
        runs.evaluate_checkpoint(
            run_config(run.root, **{"model.d_model": 32}), run.workdir, verbose=False
        )
    message = str(info.value)
    assert "does not fit this config" in message and "model.d_model (16 -> 32)" in message
    assert len(message) < 800
    variant = tiny_config("coleaf_han", num_epochs=EPOCHS, **{"data.root": run.root})
    with pytest.raises(
        checkpoints.CheckpointMismatchError, match=r"method \('anchor_only' -> 'coleaf'\)"
    ):
        runs.evaluate_checkpoint(variant, run.workdir, verbose=False)
