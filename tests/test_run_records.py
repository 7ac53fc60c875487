"""A finished run: checkpoint retention, the records and logs it leaves, a re-run that
is a no-op; eval.py's own output file; missing test features.

Uses the tiny finished run of ``tests/conftest.py`` (``run``, ``data_root``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from coleaf_jax import cli, progress
from coleaf_jax.data import llp
from coleaf_jax.evaluation import runs
from coleaf_jax.training import checkpoints, records, train
from tests.helpers import (
    EPOCHS,
    copy_run,
    expected_best,
    kept,
    rows,
    run_config,
)
from tools import time_to_result

# --- A finished run: retention, records, logs, no-op re-run -----------------------------------


def test_the_run_records_its_time_by_phase(run, capsys):
    """The phases of tools/time_to_result.py are the run's own records and add up to it."""
    row = time_to_result.phases(run.workdir)
    assert (
        row["run"] == json.load(open(os.path.join(run.workdir, "test_metrics.json")))["run_seconds"]
    )
    assert all(v >= 0 for v in row.values()), row
    assert abs(sum(v for k, v in row.items() if k != "run") - row["run"]) < 1e-6
    assert row["compiling (first step)"] > 0 and row["loading"] >= 0
    assert time_to_result.main([run.workdir]) == 0
    assert f"training ({EPOCHS} epochs)" in capsys.readouterr().out


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


def test_one_reader_of_metrics_rows_tolerates_a_cut_line(tmp_path, capsys):
    """A kill mid-write leaves a cut last line: training and the report both skip it, and
    say so (never silently)."""
    from coleaf_jax.evaluation import report

    rows_written = [
        {"epoch": 1, "train": {}, "val_selection": 1.0},
        {"epoch": 2, "train": {}, "val_selection": 2.0},
        {"epoch": 1, "train": {}, "val_selection": 3.0},
    ]  # epoch 1 trained again
    with open(tmp_path / records.METRICS_FILE, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows_written) + '{"epoch": 3, "tr')
    assert report._read_history(str(tmp_path)) == [rows_written[2], rows_written[1]]
    assert records.read_metrics(str(tmp_path / records.METRICS_FILE)) == {
        1: rows_written[2],
        2: rows_written[1],
    }
    warned = capsys.readouterr().err.splitlines()
    assert (
        warned
        == [
            f"warning: {tmp_path / records.METRICS_FILE}: its last line (4) is cut short (a write "
            f"interrupted by a kill or a full disk); skipped"
        ]
        * 2
    )
    records.keep_metrics_rows(str(tmp_path / records.METRICS_FILE), 1)  # warns, once more
    assert capsys.readouterr().err.count("is cut short") == 1
    assert rows(str(tmp_path)) == [rows_written[2]]  # rewritten whole: the cut line is gone
    assert records.read_metrics(str(tmp_path / records.METRICS_FILE)) == {1: rows_written[2]}
    assert capsys.readouterr().err == ""


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
    assert records.finished_result(mngr, workdir, EPOCHS) == run.result
    assert records.finished_result(mngr, workdir, EPOCHS + 1) is None  # extended: not finished
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
    # Not even when asked to: --output naming training's result is refused, however spelt
    # (every record and spelling: tests/test_records_hardening.py).
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
        assert str(info.value).startswith(f"error: --output {output}")
        assert f"is the record test_metrics.json of the run in {workdir}" in str(info.value)
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
