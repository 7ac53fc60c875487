"""Reliability (issue 13): no silent wrong numbers, one run per workdir, checkpoints that
survive faults, one-line errors, logs without progress-bar frames.

One tiny 3-epoch run (HAN baseline, D = 16, 30 synthetic videos) is trained once per
module; the tests that damage or extend a run work on copies of it.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax import cli, locks, progress
from coleaf_jax.config import override
from coleaf_jax.data import llp, llp_prepared, pipeline
from coleaf_jax.data.classes import LLP_SPLIT_CSV
from coleaf_jax.evaluation import runs
from coleaf_jax.training import checkpoints, train
from coleaf_jax.training import step as step_lib
from coleaf_jax.training import workdir as workdir_lib
from tests.test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3


def run_config(root: str, **overrides):
    c = tiny_config("han", num_epochs=EPOCHS, **{"data.root": root})
    for key, value in overrides.items():
        override(c, key, value)
    return c


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability_data")
    root = str(base / "data")
    return root, pipeline.load_splits(run_config(root), str(base))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    """A finished run, trained with its console output captured (not a terminal)."""
    root, data = data_root
    workdir = str(tmp_path_factory.mktemp("reliability_run") / "run")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        result = train.train_and_evaluate(run_config(root), workdir, data=data, verbose=True)
    return SimpleNamespace(
        workdir=workdir,
        result=result,
        root=root,
        data=data,
        stdout=out.getvalue(),
        stderr=err.getvalue(),
    )


def copy_run(run, tmp_path) -> str:
    target = str(tmp_path / "run")
    shutil.copytree(run.workdir, target)
    return target


def rows(workdir: str) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def kept(workdir: str) -> set[int]:
    return {int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit()}


def expected_best(workdir: str) -> int:
    """The authors' selection: the best validation score, the later epoch on a tie."""
    scores = {r["epoch"]: r["val_selection"] for r in rows(workdir)}
    return max(scores, key=lambda e: (scores[e], e))


def run_script(*args, cwd=ROOT, timeout=120):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in last, (needle, last)
    return last


# --- A finished run: retention, records, logs, no-op re-run -----------------------------------


def test_retention_is_best_and_latest_and_results_record_the_videos(run):
    assert [r["epoch"] for r in rows(run.workdir)] == [1, 2, 3]
    best = expected_best(run.workdir)
    assert kept(run.workdir) == {best, EPOCHS}
    assert run.result["epoch"] == best
    saved = json.load(open(os.path.join(run.workdir, "test_metrics.json")))
    assert (saved["videos_scored"], saved["videos_skipped"]) == (len(run.data["test"]["label"]), 0)
    for r in rows(run.workdir):
        assert (r["val_videos_scored"], r["val_videos_skipped"]) == (
            len(run.data["val"]["label"]),
            0,
        )
    stored = json.load(open(os.path.join(run.workdir, "config.json")))
    assert stored["data"]["root"] == run.root and stored["num_epochs"] == EPOCHS


def test_retention_keeps_exactly_best_and_latest_later_epoch_on_tie(tmp_path):
    mngr = checkpoints.checkpoint_manager(str(tmp_path))
    state = {"w": np.arange(3, dtype=np.float32)}
    expected = {1: {1}, 2: {2}, 3: {2, 3}, 4: {4}, 5: {4, 5}}
    for epoch, selection in zip(range(1, 6), [0.5, 0.9, 0.3, 0.9, 0.2]):
        checkpoints.save_checkpoint(mngr, epoch, state, selection)
        assert set(mngr.all_steps()) == expected[epoch], epoch
        assert kept(str(tmp_path)) == expected[epoch]
        # as eval.py --select-thresholds stores them for a checkpoint
        (tmp_path / "checkpoints" / f"selected_thresholds_{epoch}.json").write_text("{}")
    assert checkpoints.best_epoch(checkpoints.selection_scores(mngr)) == 4  # 0.9 tie: later
    # Thresholds selected for a deleted checkpoint go with it.
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("selected_*")) == [
        "selected_thresholds_4.json",
        "selected_thresholds_5.json",
    ]
    mngr.close()


def test_redirected_log_has_one_line_per_epoch_and_no_bar_frames(run):
    log = run.stdout + run.stderr
    assert "\r" not in log
    for epoch in range(1, EPOCHS + 1):
        assert sum(line.startswith(f"epoch {epoch}/{EPOCHS} (") for line in log.splitlines()) == 1


def test_progress_bar_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, log = Terminal(), io.StringIO()
    shown = progress.bar(range(3), total=3, desc="epoch 1/1", stream=tty)
    assert not shown.disable  # (until closed: tqdm sets it then)
    assert list(shown) == [0, 1, 2]
    assert "\r" in tty.getvalue() and "epoch 1/1" in tty.getvalue()
    quiet = progress.bar(range(3), total=3, desc="epoch 1/1", stream=log)
    quiet.set_postfix({"loss": 1.0})
    assert list(quiet) == [0, 1, 2] and log.getvalue() == "" and quiet.disable
    off = progress.bar(range(2), stream=tty, enabled=False)
    assert list(off) == [0, 1] and off.disable


def test_one_reader_of_metrics_rows_tolerates_a_cut_line(tmp_path):
    """A kill mid-write leaves a cut last line: training and the report both skip it."""
    from coleaf_jax.evaluation import report

    rows_written = [
        {"epoch": 1, "train": {}, "val_selection": 1.0},
        {"epoch": 2, "train": {}, "val_selection": 2.0},
        {"epoch": 1, "train": {}, "val_selection": 3.0},
    ]  # epoch 1 trained again
    with open(tmp_path / train.METRICS_FILE, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows_written) + '{"epoch": 3, "tr')
    assert report._read_history(str(tmp_path)) == [rows_written[2], rows_written[1]]
    assert train.read_metrics(str(tmp_path / train.METRICS_FILE)) == {
        1: rows_written[2],
        2: rows_written[1],
    }
    train.keep_metrics_rows(str(tmp_path / train.METRICS_FILE), 1)
    assert rows(str(tmp_path)) == [rows_written[2]]


def test_quiet_libraries_leaves_asyncio_logging_alone():
    """Failed reads of a damaged checkpoint are silenced where they happen (restore), not
    for the whole process."""
    import logging

    level = logging.getLogger("asyncio").level
    cli.quiet_libraries()
    assert logging.getLogger("asyncio").level == level


def test_rerunning_a_finished_run_is_a_no_op_that_says_so(run, tmp_path, capsys):
    workdir = copy_run(run, tmp_path)
    before = {
        name: open(os.path.join(workdir, name), "rb").read()
        for name in ("metrics.jsonl", "test_metrics.json")
    }

    def trained(epoch, state):
        raise AssertionError(f"epoch {epoch} trained again")

    # No data given: a finished run does not even load it.
    result = train.train_and_evaluate(run_config(run.root), workdir, on_epoch_end=trained)
    assert result == run.result
    out = capsys.readouterr().out
    assert "this run is finished" in out and "nothing to do" in out
    for name, content in before.items():
        assert open(os.path.join(workdir, name), "rb").read() == content, name
    mngr = checkpoints.checkpoint_manager(workdir, create=False)  # the caller's manager
    assert train.finished_result(mngr, workdir, EPOCHS) == run.result
    assert train.finished_result(mngr, workdir, EPOCHS + 1) is None  # extended: not finished
    mngr.close()


def test_a_checkpoint_left_by_a_kill_while_saving_is_pruned_when_the_run_starts(
    run, tmp_path, capsys
):
    """Killed between the last epoch's save and its deletes: three checkpoints. The next
    run on the workdir (here the no-op re-run of the finished run) keeps best + latest."""
    workdir = copy_run(run, tmp_path)
    best = expected_best(workdir)
    extra = min(set(range(1, EPOCHS)) - {best})
    checkpoints_dir = Path(workdir) / "checkpoints"
    shutil.copytree(checkpoints_dir / str(EPOCHS), checkpoints_dir / str(extra))
    (checkpoints_dir / str(extra) / "metrics" / "metrics").write_text('{"selection": -1.0}')
    (checkpoints_dir / f"selected_thresholds_{extra}.json").write_text("{}")
    assert kept(workdir) == {best, EPOCHS, extra}
    result = train.train_and_evaluate(run_config(run.root), workdir)  # finished: no data needed
    assert result == run.result and kept(workdir) == {best, EPOCHS}
    assert not (checkpoints_dir / f"selected_thresholds_{extra}.json").exists()
    out = capsys.readouterr().out
    assert f"removed checkpoint(s) [{extra}]" in out and "this run is finished" in out


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


# --- Faults: a diverged run, a damaged checkpoint --------------------------------------------


def test_non_finite_loss_stops_training_and_saves_nothing(tmp_path, data_root):
    root, data = data_root
    workdir = str(tmp_path / "diverged")
    with pytest.raises(train.NonFiniteLossError) as info:
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
    with pytest.raises(train.NonFiniteLossError) as info:
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
    with pytest.raises(train.NonFiniteLossError) as info:
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
    record = train.track(None, {"anchor_loss": jnp.ones(3)}, 0)
    record["params_finite"] = train.finite_params(states, per_seed=True)
    with pytest.raises(
        train.NonFiniteLossError, match=r"the Anchor's parameters \(seed 8\) are NaN"
    ):
        train.check_finite(record, 0, 1, config, None, [7, 8, 9])


def test_non_finite_loss_in_a_later_epoch_names_it_and_keeps_the_earlier_run(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    before = (kept(workdir), open(os.path.join(workdir, "test_metrics.json")).read())
    bad = dict(run.data)
    bad["train"] = dict(run.data["train"], audio=np.full_like(run.data["train"]["audio"], np.inf))
    steps = pipeline.num_batches(len(bad["train"]["label"]), run_config(run.root).batch_size)
    with pytest.raises(train.NonFiniteLossError) as info:
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
    record = train.track(None, logs[0], 0)
    assert int(record["first_bad"]) == -1
    for i, step_logs in enumerate(logs[1:], start=1):
        record = train.track(record, step_logs, i)
    assert int(record["first_bad"]) == 1 and float(record["bad_logs"]["b"]) == np.inf
    stacked = {k: jnp.stack([step_logs[k] for step_logs in logs]) for k in ("a", "b")}
    scanned = train._track_stacked(stacked)  # the lax.scan epoch's per-step logs
    assert int(scanned["first_bad"]) == 1 and float(scanned["bad_logs"]["a"]) == 1.0
    config = SimpleNamespace(learning_rate=0.1)
    with pytest.raises(
        train.NonFiniteLossError, match=r"at step 5 \(epoch 2, step 2 of 3\): b = inf"
    ):
        train.check_finite(scanned, 1, 3, config, None)
    ok = train._track_stacked({k: v[:1] for k, v in stacked.items()})
    assert train.check_finite(ok, 0, 1, config, None) == {"a": 1.0, "b": 2.0}


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


# --- eval.py output, missing features ----------------------------------------------------------


def test_eval_writes_its_own_file_and_never_test_metrics(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    trained = open(os.path.join(workdir, "test_metrics.json")).read()
    best = expected_best(workdir)
    result = runs.evaluate_checkpoint(run_config(run.root), workdir, verbose=False)
    other = min(kept(workdir))
    runs.evaluate_checkpoint(run_config(run.root), workdir, step=other, split="val", verbose=False)
    assert open(os.path.join(workdir, "test_metrics.json")).read() == trained
    written = json.load(open(os.path.join(workdir, "eval", f"test_epoch{best}_standard.json")))
    assert written == result and result["videos_scored"] == len(run.data["test"]["label"])
    assert os.path.exists(os.path.join(workdir, "eval", f"val_epoch{other}_standard.json"))
    assert {k: result[k] for k in ("seg_av", "evt_av")} == {
        k: run.result[k] for k in ("seg_av", "evt_av")
    }
    # Not even when asked to: --output naming training's result is refused, as is.
    for output in (
        os.path.join(workdir, "test_metrics.json"),
        os.path.join(workdir, "eval", "..", "test_metrics.json"),
    ):
        with pytest.raises(SystemExit) as info:
            cli.exit_on_user_error(
                runs.evaluate_checkpoint,
                run_config(run.root),
                workdir,
                step=other,
                output=output,
                verbose=False,
            )
        assert str(info.value).startswith(f"error: --output {output} is training's result")
    assert open(os.path.join(workdir, "test_metrics.json")).read() == trained


def test_missing_test_features_fail_unless_allowed_then_the_count_is_recorded(run, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(run.root, root, ignore=shutil.ignore_patterns("tfds"))
    gone = str(run.data["test"]["id"][0])
    os.remove(os.path.join(root, "vggish", f"{gone}.npy"))
    with pytest.raises(
        llp.MissingFeatureError, match=rf"LLP test: 1 videos .*{gone}.*allow_missing"
    ):
        runs.evaluate_checkpoint(
            run_config(root), run.workdir, output=str(tmp_path / "x.json"), verbose=False
        )
    result = runs.evaluate_checkpoint(
        run_config(root, **{"data.allow_missing": True}),
        run.workdir,
        output=str(tmp_path / "allowed.json"),
        verbose=False,
    )
    n = len(run.data["test"]["label"])
    assert (result["videos_scored"], result["videos_skipped"]) == (n - 1, 1)
    assert json.load(open(tmp_path / "allowed.json"))["videos_skipped"] == 1


# --- One training per workdir -----------------------------------------------------------------

HOLD_LOCK = """
import sys
from coleaf_jax.training import workdir
with workdir.lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_second_training_on_a_workdir_is_refused_and_a_dead_holder_is_taken_over(
    tmp_path, capsys
):
    workdir = str(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, workdir],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)  # no hang if it never locks
        assert ready, "the lock holder did not start within 60 s"
        assert holder.stdout.readline().strip() == "locked"
        # The real entry script, as a second process: one line naming the holder.
        proc = run_script("train.py", "--config", "configs/synthetic.py", "--workdir", workdir)
        assert_one_line_error(proc, f"is in use by process {holder.pid} on ", "one training per")
        with pytest.raises(workdir_lib.WorkdirLockedError, match=f"process {holder.pid} "):
            train.train_and_evaluate(tiny_config("han"), workdir, verbose=False)
        assert os.listdir(workdir) == [workdir_lib.LOCK_FILE]  # nothing else written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lib.lock(workdir):  # its process is dead: taken over, with a message
        pass
    assert f"taking over the lock of process {holder.pid} on" in capsys.readouterr().out
    with workdir_lib.lock(workdir):  # released normally: nothing to take over
        pass
    assert "taking over" not in capsys.readouterr().out


def test_a_refused_process_waits_for_the_holders_record(tmp_path):
    """The holder writes its record right after taking the lock: a process refused in
    between reads it again instead of naming "process ? on ?"."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    with open(workdir / workdir_lib.LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: a conflict
        held.write('{"pid": 4242, "ho')  # cut mid-write
        held.flush()
        record = json.dumps(
            {"pid": 4242, "host": "elsewhere", "started": "now", "command": "train.py"}
        )

        def finish_writing():
            held.seek(0)
            held.truncate()
            held.write(record)
            held.flush()

        timer = threading.Timer(0.3, finish_writing)
        timer.start()
        try:
            with pytest.raises(
                workdir_lib.WorkdirLockedError, match="in use by process 4242 on elsewhere"
            ):
                with workdir_lib.lock(str(workdir), verbose=False):
                    pass
        finally:
            timer.join()


def test_a_filesystem_without_flock_is_a_clear_error_naming_the_lock(tmp_path, monkeypatch):
    def unsupported(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", unsupported)
    with pytest.raises(workdir_lib.RunError) as info:
        with workdir_lib.lock(str(tmp_path / "run"), verbose=False):
            pass
    message = str(info.value)
    assert str(tmp_path / "run" / workdir_lib.LOCK_FILE) in message
    assert "No locks available" in message and "does not support flock" in message


def test_damaged_checkpoints_moved_within_one_second_keep_distinct_names(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints.time, "strftime", lambda fmt: "20250101-000000")
    moved = []
    for content in ("first", "second", "third"):
        (tmp_path / "checkpoints" / "3").mkdir(parents=True)
        (tmp_path / "checkpoints" / "3" / "marker").write_text(content)
        moved.append(checkpoints.move_damaged(str(tmp_path), 3))
    assert [os.path.basename(p) for p in moved] == [
        "3-20250101-000000",
        "3-20250101-000000-2",
        "3-20250101-000000-3",
    ]
    for path, content in zip(moved, ("first", "second", "third")):
        assert (
            os.listdir(path) == ["marker"] and open(os.path.join(path, "marker")).read() == content
        )


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
        (["--config=configs/synthetic.py:bogus"], "configs/synthetic.py: unknown variant 'bogus'"),
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
