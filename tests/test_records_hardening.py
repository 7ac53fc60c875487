"""Hostile and damaged files around a run's records (issue 29): outputs that would
overwrite a record, a second writer, evaluation while the run trains, a full disk,
damaged or deeply nested JSON in every reader, a failed allocation, a symbolic link
among the checkpoints, a config file run twice, the rows of several processes.

Uses the tiny finished run of ``tests/conftest.py`` (``run``, ``data_root``).
"""

from __future__ import annotations

import ast
import contextlib
import errno
import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from coleaf_jax import cli, fileio, locks, sweep
from coleaf_jax.evaluation import report, runs
from coleaf_jax.features import __main__ as features_cli
from coleaf_jax.features import teachers, weights
from coleaf_jax.training import checkpoints, records, seeds, train
from coleaf_jax.training import workdir as workdir_lib
from tests.helpers import (
    EPOCHS,
    ROOT,
    assert_one_line_error,
    copy_run,
    kept,
    rows,
    run_config,
    run_script,
)


def tiny_flags(root: str, epochs: int = EPOCHS) -> list[str]:
    """``tests.test_train.tiny_config('han')`` (the run fixture's config) as flags."""
    return [
        "--config",
        os.path.join(ROOT, "configs", "synthetic.py:han"),
        "--config.model.d_model=16",
        "--config.model.ffn_dim=16",
        "--config.data.synthetic_videos=30",
        "--config.batch_size=8",
        f"--config.num_epochs={epochs}",
        "--config.lr_decay_every_epochs=2",
        "--config.loss.kd_warmup_epochs=1",
        "--config.loss.class_token_warmup_epochs=1",
        "--config.eval.batch_size=16",
        f"--config.data.root={root}",
    ]


def digest(workdir: str) -> dict[str, bytes]:
    """Every record file of a run, by name (what must not change)."""
    out = {}
    for name in sorted(workdir_lib.RECORD_FILES):
        path = os.path.join(workdir, name)
        if os.path.isfile(path):
            out[name] = open(path, "rb").read()
    return out


# --- One check for every output -----------------------------------------------------------------


def test_record_names_are_the_modules_own():
    """The protected names are the ones the modules write (a record renamed there and not
    here would lose its protection)."""
    written = {
        records.METRICS_FILE,
        records.RESULT_FILE,
        seeds.RESULT_FILE,
        report.REPORT_FILE,
        workdir_lib.CONFIG_FILE,
        workdir_lib.LOCK_FILE,
        workdir_lib.IMPORT_RECORD,  # coleaf_jax.imports writes it
        sweep.MANIFEST,
        sweep.SUMMARY,
        sweep.LOG,
        sweep.LOCK_FILE,
    }
    assert written == set(workdir_lib.RECORD_FILES)
    assert {checkpoints.CHECKPOINT_DIR, checkpoints.DAMAGED_DIR} == set(workdir_lib.RECORD_DIRS)


def test_every_spelling_of_a_record_is_refused_as_an_output(run, tmp_path, monkeypatch):
    workdir = copy_run(run, tmp_path)
    best = max(kept(workdir))
    (tmp_path / "elsewhere").mkdir()
    os.symlink(os.path.join(workdir, "metrics.jsonl"), tmp_path / "elsewhere" / "link.json")
    os.symlink(workdir, tmp_path / "alias")
    monkeypatch.chdir(tmp_path)
    refused = [
        *(os.path.join(workdir, name) for name in workdir_lib.RECORD_FILES),
        "./run/../run/config.json",  # relative, with ..
        "run/eval/../metrics.jsonl",
        "elsewhere/link.json",  # a link to a record
        "alias/test_metrics.json",  # a record through a linked folder
        f"run/checkpoints/{best}/metrics/metrics",  # inside a checkpoint
        "run/checkpoints/selected_thresholds_1.json",
        "run/checkpoints/new.json",  # anything in checkpoints/
        "run/damaged_checkpoints/x.json",
        "run",  # the run's folder itself
    ]
    (Path(workdir) / "damaged_checkpoints").mkdir()
    for path in refused:
        with pytest.raises(workdir_lib.ProtectedOutputError) as info:
            workdir_lib.check_output(path, "--output")
        message = str(info.value)
        assert message.startswith(f"--output {path}") and "\n" not in message, message
        assert f"run in {os.path.realpath(workdir)}" in message, message
    for path in ("run/eval/test.json", "run/parsed", "elsewhere/x.json", "new/config.json"):
        assert workdir_lib.check_output(path, "--output") == path
    # A folder output (parse.py --output, features --out): the run's folder is refused too,
    # a folder of its own inside the workdir is not.
    with pytest.raises(workdir_lib.ProtectedOutputError, match="is the folder of the run"):
        workdir_lib.check_output("./run/", "--output", folder=True)
    assert workdir_lib.check_output("run/parsed", "--output", folder=True) == "run/parsed"
    # train.py's own workdir is a run's folder, but not one inside another run's records.
    assert workdir_lib.check_output("run", "--workdir", own_run=True) == "run"
    with pytest.raises(workdir_lib.ProtectedOutputError, match="inside checkpoints/"):
        workdir_lib.check_output("run/checkpoints/sub", "--workdir", own_run=True)


def test_another_name_of_a_record_is_refused(run, tmp_path):
    """On a case-insensitive filesystem (macOS's, Windows' default) ``WORKDIR/Config.json``
    opens config.json, and realpath keeps the case given: names alone let ``--output
    WORKDIR/Config.json`` overwrite it. Records are also recognised as the same file
    (``os.path.samefile``); here hard links named ``Config.json`` and ``other_name.json``
    stand for such a spelling (a symbolic link is resolved:
    ``test_every_spelling_of_a_record_is_refused_as_an_output``)."""
    workdir = copy_run(run, tmp_path)
    os.link(os.path.join(workdir, "config.json"), os.path.join(workdir, "Config.json"))
    os.link(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "other_name.json"))
    for name, record in (("Config.json", "config.json"), ("other_name.json", "metrics.jsonl")):
        path = os.path.join(workdir, name)
        with pytest.raises(workdir_lib.ProtectedOutputError) as info:
            workdir_lib.check_output(path, "--output")
        assert f"is the record {record} of the run in {workdir}" in str(info.value)
    for name in ("CONFIG.JSON", "notes.json"):  # other files (on Linux): outputs
        assert workdir_lib.check_output(os.path.join(workdir, name), "--output")
    Path(workdir, "notes.json").write_text("{}")  # an existing file that is no record
    assert workdir_lib.check_output(os.path.join(workdir, "notes.json"), "--output")
    # A record folder under another name: a bind mount stands for ``Checkpoints``.
    other = Path(workdir, "Checkpoints")
    other.mkdir()
    made = subprocess.run(
        ["mount", "--bind", os.path.join(workdir, "checkpoints"), str(other)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount a folder (needs root): {made.stderr.strip()[:200]}")
    try:
        with pytest.raises(workdir_lib.ProtectedOutputError, match="inside checkpoints/"):
            workdir_lib.check_output(str(other / "x.json"), "--output")
    finally:
        subprocess.run(["umount", str(other)], capture_output=True)


def test_eval_cannot_overwrite_a_record_and_the_run_resumes_after(run, tmp_path):
    """The issue's case: ``eval.py --output WORKDIR/config.json`` overwrote the run's
    record and the next train.py refused to resume. Now refused, through the real script,
    however spelt; nothing changes; the run is still the run."""
    workdir = copy_run(run, tmp_path)
    before = digest(workdir)
    flags = tiny_flags(run.root)
    proc = run_script(
        os.path.join(ROOT, "eval.py"), *flags, "--workdir", workdir,
        "--output", "./run/../run/config.json",
        cwd=str(tmp_path),
    )  # fmt: skip
    assert_one_line_error(proc, "--output ./run/../run/config.json", "the record config.json")
    for name in ("metrics.jsonl", "test_metrics.json", "report.html"):
        with pytest.raises(SystemExit, match=rf"^error: --output .*the record {name} of the run"):
            cli.exit_on_user_error(
                runs.evaluate_checkpoint,
                run_config(run.root),
                workdir,
                output=os.path.join(workdir, "eval", "..", name),
                verbose=False,
            )
    assert digest(workdir) == before
    assert not os.path.exists(os.path.join(workdir, "eval"))  # refused before anything ran
    result = train.train_and_evaluate(run_config(run.root), workdir, verbose=False)
    assert result == run.result  # the finished run, as it was: nothing to redo


def test_parse_bench_sweep_and_weights_outputs_are_checked(run, tmp_path, capsys):
    workdir = copy_run(run, tmp_path)
    before = digest(workdir)
    proc = run_script(
        "parse.py", *tiny_flags(run.root), "--workdir", workdir, "--split", "test",
        "--output", workdir,
    )  # fmt: skip
    assert_one_line_error(proc, f"--output {workdir} is the folder of the run in {workdir}")
    proc = run_script(
        "parse.py", *tiny_flags(run.root), "--workdir", workdir, "--split", "test",
        "--output", os.path.join(workdir, "checkpoints", "parsed"),
    )  # fmt: skip
    assert_one_line_error(proc, "is inside checkpoints/ of the run")

    from coleaf_jax import bench

    for args, needle in (
        (["--json", os.path.join(workdir, "metrics.jsonl")], "--json"),
        (["--profile", os.path.join(workdir, "checkpoints")], "--profile"),
    ):
        with pytest.raises(SystemExit, match=rf"^error: {needle} .* of the run in"):
            bench.main(args)
    assert sweep.main(["--workdir", workdir, "--config", "configs/synthetic.py"]) == 1
    assert f"--workdir {workdir} is the folder of the run" in capsys.readouterr().err
    assert weights.convert_main([os.path.join(workdir, "checkpoints")]) == 1
    assert "the weights folder" in capsys.readouterr().err
    assert digest(workdir) == before


# --- One writer per output ------------------------------------------------------------------------

HOLD = """
import sys
from coleaf_jax import locks
from coleaf_jax.training import workdir
kind, path = sys.argv[1], sys.argv[2]
held = workdir.output_lock(path, "--output") if kind == "output" else locks.exclusive(path)
with held:
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(kind: str, path: str):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, kind, path],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        assert ready and holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_second_writer_of_an_output_is_refused_naming_the_first(run, tmp_path, capsys):
    output = str(tmp_path / "scores" / "test.json")
    with held_by_another_process("output", output) as pid:
        with pytest.raises(workdir_lib.OutputInUseError) as info:
            runs.evaluate_checkpoint(run_config(run.root), run.workdir, output=output)
        assert f"--output {output} is being written by process {pid} on " in str(info.value)
        assert not os.path.exists(output)
    # Released: the lock file goes with its holder (and the folder it made for it), and
    # the output is written.
    assert not (tmp_path / "scores").exists()
    result = runs.evaluate_checkpoint(run_config(run.root), run.workdir, output=output)
    assert json.load(open(output)) == result
    assert sorted(os.listdir(tmp_path / "scores")) == ["test.json"]
    # A sweep: one driver per run (tests/test_sweep.py: drivers of overlapping runs).
    folder = tmp_path / "sweep"
    setting = {"name": "s", "config": "configs/synthetic.py:han", "num_epochs": 1, "seed": 0}
    sweep.write_manifest(str(folder), {"settings": [setting], "seeds": [0], "overrides": []})
    capsys.readouterr()
    os.makedirs(sweep.run_dir(str(folder), "s", 0))
    with held_by_another_process("lock", sweep.lock_path(str(folder), "s", 0)) as pid:
        with pytest.raises(workdir_lib.OutputInUseError) as info:
            with sweep.driving(str(folder), [(setting, 0)]):
                pass
        assert f"run s seed 0 is being driven by process {pid} on " in str(info.value)
        assert "\n" not in str(info.value)
        # --summarize drives no run: it takes no lock, and names the unfinished one
        assert sweep.main(["--workdir", str(folder), "--summarize"]) == 0
    assert json.load(open(folder / sweep.SUMMARY))["settings"]["s"]["missing_seeds"] == [0]


def test_a_removed_lock_file_is_never_held_twice(tmp_path):
    """``locks.exclusive(remove=True)``: the file goes on release; a process that had
    opened the old file before it went locks the new one instead."""
    path = str(tmp_path / ".out.lock")
    with locks.exclusive(path, remove=True):
        assert json.load(open(path))["pid"] == os.getpid()
        assert locks.current_holder(path)["pid"] == os.getpid()
        with pytest.raises(locks.LockHeldError):
            with locks.exclusive(path, remove=True):
                pass
    assert not os.path.exists(path) and locks.current_holder(path) is None
    stale = open(path, "w")  # opened as a racing process would, then removed by its holder
    os.unlink(path)
    f = locks._acquire(path, False, None, True)
    assert os.fstat(f.fileno()).st_ino != os.fstat(stale.fileno()).st_ino
    f.close()
    stale.close()


# --- Evaluation while the run trains ------------------------------------------------------------


def _small_run(tmp_path, selections=(0.9, 0.5)) -> tuple[str, dict]:
    workdir = str(tmp_path / "w")
    mngr = checkpoints.checkpoint_manager(workdir)
    rng = np.random.default_rng(0)
    states = {}
    for epoch, selection in enumerate(selections, 1):
        states[epoch] = {"w": rng.standard_normal(4096).astype(np.float32)}
        checkpoints.save_checkpoint(mngr, epoch, states[epoch], selection)
    mngr.close()
    return workdir, states


TEMPLATE = {"w": np.zeros(4096, np.float32)}


def test_a_checkpoint_being_saved_is_not_read_and_not_called_damaged(run, tmp_path):
    """The state orbax leaves mid-save (``<epoch>.orbax-checkpoint-tmp``, incomplete):
    readers list only finished checkpoints."""
    workdir = copy_run(run, tmp_path)
    directory = Path(workdir) / "checkpoints"
    done = sorted(kept(workdir))
    saving = directory / f"{EPOCHS + 1}{checkpoints.UNFINISHED}"
    shutil.copytree(directory / str(done[-1]), saving)
    (saving / "default" / "manifest.ocdbt").unlink()
    (saving / "commit_success.txt").unlink()
    result = runs.evaluate_checkpoint(run_config(run.root), workdir, verbose=False)
    assert result["epoch"] == run.result["epoch"]
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint {EPOCHS + 1} in .*{done}"):
        runs.evaluate_checkpoint(run_config(run.root), workdir, step=EPOCHS + 1, verbose=False)
    assert saving.exists()  # a reader removes nothing; the next training does
    assert not any(p.name.startswith(checkpoints.READING) for p in directory.iterdir())


def test_a_checkpoint_deleted_while_it_is_read_is_read_whole(tmp_path, monkeypatch, capsys):
    """The training deletes the chosen checkpoint as the reader reads it: the reader's
    hard links keep its files; without links (a filesystem without them), it reads again."""
    workdir, states = _small_run(tmp_path)
    directory = checkpoints.checkpoint_dir(workdir)
    real = checkpoints.restore_checkpoint
    deleted = []

    def training_deletes_it(mngr, epoch, *args, **kwargs):
        if not deleted:  # as retention does, between the choice and the read
            checkpoints._delete_checkpoint(directory, epoch)
            deleted.append(epoch)
        return real(mngr, epoch, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "restore_checkpoint", training_deletes_it)
    epoch, state = checkpoints.restore_for_reading(workdir, TEMPLATE)
    assert (epoch, deleted) == (1, [1]) and np.array_equal(state["w"], states[1]["w"])
    assert sorted(os.listdir(directory)) == ["2"]  # deleted indeed; the view removed
    # Read in place (no hard links here): the deletion is seen as a change, read again.
    workdir, states = _small_run(tmp_path / "b")
    directory = checkpoints.checkpoint_dir(workdir)
    deleted.clear()

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(checkpoints.os, "link", no_links)
    capsys.readouterr()
    epoch, state = checkpoints.restore_for_reading(workdir, TEMPLATE)
    assert (epoch, deleted) == (2, [1]) and np.array_equal(state["w"], states[2]["w"])
    out = capsys.readouterr().out
    assert "changed while checkpoint 1 was read" in out and "damaged" not in out
    # Damage that no training explains (nothing changed) is still damage, named.
    monkeypatch.setattr(checkpoints, "restore_checkpoint", real)
    (Path(directory) / "2" / "default" / "_METADATA").write_text('{"tree')
    with pytest.raises(checkpoints.CheckpointDamagedError, match=r"checkpoint 2 \(.*/w/check"):
        checkpoints.restore_for_reading(workdir, TEMPLATE)


def test_eval_and_parse_while_the_run_trains_read_finished_checkpoints(run, tmp_path):
    """For real: a training in the background saving an epoch about every second, keeping
    only the best and the latest (so deleting what a reader may have chosen), and eval.py
    / parse.py run meanwhile. Before, 6 of 6 eval.py runs failed calling a checkpoint
    damaged."""
    workdir = str(tmp_path / "training")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    trainer = subprocess.Popen(
        [sys.executable, "train.py", *tiny_flags(run.root, 100000), "--workdir", workdir],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metrics = os.path.join(workdir, records.METRICS_FILE)
        deadline = time.time() + 240
        while len(records.read_metrics(metrics)) < 3:  # (a row being appended: skipped)
            assert trainer.poll() is None and time.time() < deadline, "training did not start"
            time.sleep(0.5)
        for i in range(2):  # each while the training saves and deletes checkpoints
            proc = run_script("eval.py", *tiny_flags(run.root), "--workdir", workdir)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert "damaged" not in proc.stdout + proc.stderr
            assert "Traceback" not in proc.stderr
            assert f"note: {workdir} is training (process {trainer.pid} on " in proc.stdout
            out = str(tmp_path / f"parsed{i}")
            proc = run_script(
                "parse.py", *tiny_flags(run.root), "--workdir", workdir, "--split", "test",
                "--output", out,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert "damaged" not in proc.stdout + proc.stderr
            assert os.path.getsize(os.path.join(out, "events.jsonl")) > 0
        assert trainer.poll() is None  # it trained all along
        assert len(records.read_metrics(metrics)) > 5
    finally:
        trainer.terminate()
        trainer.wait(timeout=60)
    written = sorted(os.listdir(os.path.join(workdir, "eval")))
    assert written and all(n.startswith("test_epoch") for n in written)
    directory = os.path.join(workdir, "checkpoints")
    assert not any(n.startswith(checkpoints.READING) for n in os.listdir(directory))


def test_training_removes_what_a_stopped_save_delete_or_reader_left(run, tmp_path, capsys):
    workdir = copy_run(run, tmp_path)
    directory = Path(workdir) / "checkpoints"
    for name in (
        f"{EPOCHS + 1}{checkpoints.UNFINISHED}",
        f"{checkpoints.DELETING}1",
        f"{checkpoints.READING}999999999@{checkpoints._HOST}-abc",  # a reader that died
    ):
        (directory / name / "default").mkdir(parents=True)
    alive = directory / f"{checkpoints.READING}{os.getpid()}@{checkpoints._HOST}-xyz"
    alive.mkdir()  # a reader still running: left alone
    result = train.train_and_evaluate(run_config(run.root), workdir)  # finished: a no-op
    assert result == run.result
    assert sorted(p.name for p in directory.iterdir() if not p.name.isdigit()) == [alive.name]
    out = capsys.readouterr().out
    assert f"removed {checkpoints.DELETING}1, {EPOCHS + 1}{checkpoints.UNFINISHED}" in out


# --- A symbolic link among the checkpoints ------------------------------------------------------


def test_a_symlinked_checkpoint_is_read_and_retention_removes_only_the_link(tmp_path, capsys):
    """Before: every re-run stopped on orbax's "Cannot call rmtree on a symbolic link"."""
    workdir, states = _small_run(tmp_path)
    directory = Path(checkpoints.checkpoint_dir(workdir))
    target = tmp_path / "big_disk" / "2"
    target.parent.mkdir()
    shutil.move(directory / "2", target)
    os.symlink(target, directory / "2")
    epoch, state = checkpoints.restore_for_reading(workdir, TEMPLATE, step=2)
    assert epoch == 2 and np.array_equal(state["w"], states[2]["w"])
    mngr = checkpoints.open_checkpoints(workdir, move=True)
    checkpoints.save_checkpoint(mngr, 3, {"w": np.ones(4096, np.float32)}, 0.1)
    mngr.close()
    assert kept(workdir) == {1, 3} and not os.path.lexists(directory / "2")
    assert (target / "default").is_dir()  # what the link pointed to: left in place
    out = capsys.readouterr().out
    assert f"checkpoint 2 ({directory}/2) was a symbolic link to {target}" in out
    # The whole checkpoints/ folder a link: followed.
    moved = tmp_path / "big_disk" / "checkpoints"
    shutil.move(directory, moved)
    os.symlink(moved, directory)
    mngr = checkpoints.open_checkpoints(workdir, move=True)
    checkpoints.save_checkpoint(mngr, 4, {"w": np.ones(4096, np.float32)}, 0.05)
    mngr.close()
    assert kept(workdir) == {1, 4}
    assert checkpoints.restore_for_reading(workdir, TEMPLATE)[0] == 1


# --- A full disk ---------------------------------------------------------------------------------


def _fail_fsync_of(suffix: str, monkeypatch) -> None:
    """``os.fsync`` (in fileio) fails with ENOSPC for files whose name ends in ``suffix``."""
    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)


@pytest.mark.parametrize(
    ("failing", "named"),
    [("metrics.jsonl", "metrics.jsonl"), (".tmp", "config.json"), ("ckpt", "checkpoints/4")],
    ids=["metrics-row", "config", "checkpoint"],
)
def test_a_full_disk_in_training_is_one_line_and_rerunning_resumes(
    run, tmp_path, monkeypatch, failing, named
):
    """Always runs (the real full disk, a tmpfs, needs root: below). Whatever was being
    written is named; nothing half-written is left; the next run completes the epoch."""
    workdir = copy_run(run, tmp_path)
    config_before = open(os.path.join(workdir, "config.json"), "rb").read()
    longer = run_config(run.root, num_epochs=EPOCHS + 1)
    if failing == "ckpt":  # what tensorstore raises from orbax's threads, after writing some

        def save(self, step, *args, **kwargs):
            partial = Path(self.directory) / f"{step}{checkpoints.UNFINISHED}" / "default"
            partial.mkdir(parents=True)
            (partial / "d").write_bytes(b"x" * 100)
            raise ValueError(
                f'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file '
                f'"{partial}/": Failed writing: "{partial}/d": Failed to write 195188 bytes '
                f"to file 15: No space left on device [os_error_code='28']"
            )

        monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    else:
        _fail_fsync_of(failing, monkeypatch)
    with pytest.raises(SystemExit) as info:
        cli.exit_on_user_error(
            train.train_and_evaluate, longer, workdir, data=run.data, verbose=False
        )
    line = str(info.value)
    assert line.startswith(f"error: {os.path.join(workdir, named)}: no space left on the device")
    assert "\n" not in line and "free there" in line
    assert [r["epoch"] for r in rows(workdir)] == [1, 2, 3]  # no row without its checkpoint
    assert kept(workdir) == kept(run.workdir)
    config_now = open(os.path.join(workdir, "config.json"), "rb").read()
    if failing == ".tmp":  # the old config.json, whole (not a cut or empty one)
        assert config_now == config_before
    else:  # written before the epoch: the longer run's
        assert json.loads(config_now)["num_epochs"] == EPOCHS + 1
    leftovers = [
        p for p in Path(workdir).rglob("*") if ".tmp" in p.name or checkpoints.UNFINISHED in p.name
    ]
    assert leftovers == []
    monkeypatch.undo()
    result = train.train_and_evaluate(longer, workdir, data=run.data, verbose=False)
    assert [r["epoch"] for r in rows(workdir)] == [1, 2, 3, 4] and max(kept(workdir)) == 4
    assert result["epoch"] in kept(workdir)


def test_a_full_disk_on_a_real_filesystem_is_one_line_and_resumes(run, tmp_path):
    """The issue's run: a tmpfs with room for one checkpoint as the workdir. Before: 511
    lines, 34 tracebacks (139 "Event loop is closed" for a larger state), the error not
    last, the unfinished checkpoint left."""
    mount = tmp_path / "small_disk"
    one = sum(p.stat().st_size for p in Path(run.workdir, "checkpoints").rglob("*") if p.is_file())
    size_k = int(one / len(kept(run.workdir)) * 1.6) // 1024 + 64
    _mount_small_tmpfs(mount, f"{size_k}k")
    try:
        workdir = str(mount / "run")
        proc = run_script("train.py", *tiny_flags(run.root), "--workdir", workdir, timeout=300)
        last = assert_one_line_error(proc, f"error: {workdir}/checkpoints/2: no space left")
        assert "free there" in last
        lines = [x for x in (proc.stdout + proc.stderr).splitlines() if not x.startswith("I")]
        assert len(lines) < 10, lines
        assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]
        assert [r["epoch"] for r in rows(workdir)] == [1]
        subprocess.run(["mount", "-o", "remount,size=50m", str(mount)], check=True)
        proc = run_script("train.py", *tiny_flags(run.root), "--workdir", workdir, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "resuming from the checkpoint after epoch 1" in proc.stdout
        assert [r["epoch"] for r in rows(workdir)] == [1, 2, 3]
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


APPEND_UNDER_A_LIMIT = """
import resource, signal, sys
from coleaf_jax import fileio
path, limit, line = sys.argv[1], int(sys.argv[2]), sys.argv[3]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    fileio.append_line(path, line)
    print("appended")
except OSError as e:
    print(type(e).__name__, e.errno)
"""


def test_a_failed_append_is_cut_back_on_a_real_file_size_limit(tmp_path):
    """A write the kernel stops part way (RLIMIT_FSIZE: EFBIG, as ENOSPC would): the file
    keeps no partial line. Before: the buffered write failed in flush(), truncate()
    flushed again and failed silently, close() raised: the line was left cut."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n')
    before = path.read_bytes()

    def append(line: str, limit: int) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", APPEND_UNDER_A_LIMIT, str(path), str(limit), line],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip()

    assert append('{"epoch": 2, "x": "' + "b" * 40 + '"}', len(before) + 20) == (
        f"OSError {errno.EFBIG}"  # not a full disk: the error as it is
    )
    assert path.read_bytes() == before
    assert append('{"epoch": 2}', len(before) + 20) == "appended"
    assert records.read_metrics(str(path)) == {1: {"epoch": 1}, 2: {"epoch": 2}}


def _mount_small_tmpfs(mount: Path, size: str) -> None:
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {made.stderr.strip()[:200]}")


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_an_append_and_a_lock_record_on_a_full_filesystem_are_cut_back_and_named(tmp_path):
    """A full tmpfs. Before: the append left 4 kB of a partial line and raised a raw
    ``OSError`` (close()'s flush error); taking a lock raised a raw ``OSError`` too."""
    mount = tmp_path / "full"
    _mount_small_tmpfs(mount, "64k")
    try:
        metrics = mount / "metrics.jsonl"
        metrics.write_text('{"epoch": 1}\n')
        _fill(mount / "fill")
        with pytest.raises(fileio.DiskFullError, match=rf"^{metrics}: no space left"):
            fileio.append_line(metrics, json.dumps({"epoch": 2, "x": "b" * 8000}))
        assert metrics.read_text() == '{"epoch": 1}\n'
        lock = mount / "train.lock"
        with pytest.raises(fileio.DiskFullError, match=rf"^{lock}: no space left"):
            with locks.exclusive(str(lock)):
                pass
        assert lock.read_bytes() == b""
        (mount / "fill").unlink()  # room again: the lock is free and its record written
        with locks.exclusive(str(lock)):
            assert locks.current_holder(str(lock))["pid"] == os.getpid()
        fileio.append_line(metrics, '{"epoch": 2}')
        assert records.read_metrics(str(metrics)) == {1: {"epoch": 1}, 2: {"epoch": 2}}
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_write_that_meets_a_full_disk_is_cut_back_and_named(tmp_path, monkeypatch):
    """Always runs (the real filesystem cases need root, above): ``os.write`` writes part
    of the data, then fails with ENOSPC. The append is cut back and one DiskFullError
    names the file; so is a lock's record (the lock released, its file empty)."""
    real = os.write
    short = []

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            return real(fd, data)
        if short:  # a short write: write_all writes the rest
            return real(fd, bytes(data[:3]))
        real(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "write", write)
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n')
    with pytest.raises(fileio.DiskFullError, match=rf"^{path}: no space left") as info:
        records.append_jsonl(str(path), {"epoch": 2})
    assert "\n" not in str(info.value)
    assert path.read_text() == '{"epoch": 1}\n'
    lock = tmp_path / "train.lock"
    with pytest.raises(fileio.DiskFullError, match=rf"^{lock}: no space left"):
        with locks.exclusive(str(lock)):
            pass
    assert lock.read_bytes() == b""
    short.append(True)
    records.append_jsonl(str(path), {"epoch": 2})
    with locks.exclusive(str(lock)):  # released above: taken again, its record whole
        assert locks.current_holder(str(lock))["pid"] == os.getpid()
    monkeypatch.undo()
    assert records.read_metrics(str(path)) == {1: {"epoch": 1}, 2: {"epoch": 2}}


def test_an_interrupted_save_leaves_orbax_logs_shown(tmp_path, monkeypatch):
    """A KeyboardInterrupt (any BaseException) during ``mngr.save``: before, the filter that
    holds orbax's logs back stayed installed (only an Exception released it) and every
    later orbax warning was swallowed. The process-wide unraisablehook is scoped to the
    save when it goes well."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after
    mngr = checkpoints.checkpoint_manager(str(tmp_path / "w"))
    logger = logging.getLogger("absl")
    filters = list(logger.filters)
    orbax_file = os.path.join(os.path.dirname(ocp.__file__), "checkpoint_manager.py")
    shown = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    logger.addHandler(handler)
    try:
        with monkeypatch.context() as m:

            def interrupted(self, *args, **kwargs):
                raise KeyboardInterrupt

            m.setattr(ocp.CheckpointManager, "save", interrupted)
            with pytest.raises(KeyboardInterrupt):
                checkpoints.save_checkpoint(mngr, 1, {"w": np.zeros(4, np.float32)}, 0.5)
        assert logger.filters == filters
        record = logger.makeRecord("absl", logging.WARNING, orbax_file, 1, "later", (), None)
        logger.handle(record)
        assert shown == ["later"]

        # a save that goes well leaves the unraisablehook it found
        def hook(unraisable):
            return None

        sys.unraisablehook = hook
        checkpoints.save_checkpoint(mngr, 1, {"w": np.ones(4, np.float32)}, 0.5)
        assert sys.unraisablehook is hook and logger.filters == filters
        assert mngr.all_steps() == [1]
    finally:
        logger.removeHandler(handler)
        mngr.close()


def test_orbax_thread_reports_of_a_failed_save_are_not_printed(monkeypatch):
    """What the threads print when a save fails: asyncio's "Event loop is closed" (through
    sys.unraisablehook, at any time after) and orbax's ERROR logs with tracebacks."""
    reached = []

    def original(u):
        reached.append(str(u.exc_value))

    def report_both():
        for error in (RuntimeError("Event loop is closed"), RuntimeError("another")):
            sys.unraisablehook(type("Unraisable", (), {"exc_value": error})())

    monkeypatch.setattr(sys, "unraisablehook", original)
    with checkpoints._quiet_closed_loop_reports():  # a save that goes well: scoped
        report_both()
    assert reached == ["another"] and sys.unraisablehook is original
    with pytest.raises(ValueError), checkpoints._quiet_closed_loop_reports():
        raise ValueError("the save failed")
    # A failed save: the hook stays (its writes in flight report after the error), once.
    quiet = sys.unraisablehook
    assert quiet is not original
    with checkpoints._quiet_closed_loop_reports():
        assert sys.unraisablehook is quiet
    assert sys.unraisablehook is quiet
    report_both()
    assert reached == ["another", "another"]
    # ... and asyncio's reports of the failed writes collected later (at exit too)
    asyncio_logger = logging.getLogger("asyncio")
    kept_records = []
    keep = logging.Handler()
    keep.emit = lambda record: kept_records.append(record.getMessage())
    asyncio_logger.addHandler(keep)
    try:
        for message in (
            "Task exception was never retrieved\nfuture: <Task finished ...>",
            "_GatheringFuture exception was never retrieved\nfuture: <...>",
            "Executing <Task ...> took 0.2 seconds",
        ):
            asyncio_logger.error(message)
    finally:
        asyncio_logger.removeHandler(keep)
        asyncio_logger.removeFilter(checkpoints._drop_left_over_writes)
    assert kept_records == ["Executing <Task ...> took 0.2 seconds"]

    logger = logging.getLogger("absl")
    orbax_file = os.path.join(os.path.dirname(ocp.__file__), "checkpoint_manager.py")
    shown = []
    handler = logging.Handler()
    handler.emit = lambda record: shown.append(record.getMessage())
    logger.addHandler(handler)

    def log(message):
        logger.handle(logger.makeRecord("absl", logging.ERROR, orbax_file, 1, message, (), None))

    reports = checkpoints._OrbaxReports()
    try:
        with pytest.raises(ValueError), reports.held():
            log("thread failed: No space left on device")
            raise ValueError("the save failed")
        log("a thread's report after the failure")  # still held until released
        reports.release()
        with reports.held():  # a save that succeeds: what orbax said is shown after all
            log("a warning of a save that went well")
        log("not from a save")
    finally:
        logger.removeHandler(handler)
    assert shown == ["a warning of a save that went well", "not from a save"]


def test_reading_metrics_rows_warns_about_what_it_skips(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "tr')
    assert sorted(records.read_metrics(str(path))) == [1, 2]
    assert f"warning: {path}: its last line (3) is cut short" in capsys.readouterr().err
    path.write_text('{"epoch": 1}\nnot json\n[1]\n{"val": 2}\n{"epoch": 3}\n')
    assert sorted(records.read_metrics(str(path))) == [1, 3]
    err = capsys.readouterr().err
    assert f"{path}: line(s) 2, 3 are not JSON objects" in err
    assert f"{path}: 1 row(s) without an epoch" in err
    # An append that fails is cut back: no partial line of its own is left.
    before = path.read_bytes()

    def fail(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    real, fileio.os.fsync = fileio.os.fsync, fail
    try:
        with pytest.raises(fileio.DiskFullError, match=rf"^{path}: no space left"):
            records.append_jsonl(str(path), {"epoch": 4})
    finally:
        fileio.os.fsync = real
    assert path.read_bytes() == before


def test_every_json_the_tools_write_goes_through_fileio():
    """No JSON/JSONL (re)write of training, evaluation, the sweep, the benchmark or the
    weights folder bypasses ``coleaf_jax.fileio``: no ``json.dump`` to a file, no file
    opened for writing, but the sweep's run logs (a stream handed to train.py)."""
    modules = [
        *Path(ROOT, "coleaf_jax", "training").glob("*.py"),
        *(p for p in Path(ROOT, "coleaf_jax", "evaluation").glob("*.py") if p.name != "parsing.py"),
        Path(ROOT, "coleaf_jax", "sweep.py"),
        Path(ROOT, "coleaf_jax", "bench.py"),
        Path(ROOT, "coleaf_jax", "features", "weights.py"),
        Path(ROOT, "coleaf_jax", "data", "unav100.py"),
    ]
    allowed = {("sweep.py", "a")}  # each run's train.log, appended by the run itself
    found = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name == "json.dump":
                found.append(f"{path.name}:{node.lineno} json.dump")
            if name == "open":
                modes = list(node.args[1:2]) + [k.value for k in node.keywords if k.arg == "mode"]
                mode = modes[0].value if modes and isinstance(modes[0], ast.Constant) else "r"
                if set(mode) & set("wax+") and (path.name, mode) not in allowed:
                    found.append(f"{path.name}:{node.lineno} open(..., {mode!r})")
    assert found == []


# --- Damaged JSON: every reader -------------------------------------------------------------
# Every JSON file a user or a crash can damage is read through fileio.load_json / loads_json:
# deep nesting (100,000 "[": the parser's RecursionError), text that is not JSON or not UTF-8,
# or a value of another type is one line naming the file and what was expected (for a metrics
# row or a lock's record, a handled warning), never a traceback.

DEEP = "[" * 100_000  # json's parser: RecursionError
NESTED = "[" * 150 + "]" * 150  # parses, but deeper than any file the tools write


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (DEEP, "JSON nested more than 100 levels deep"),
        ('{"a": ' * 20_000 + "1" + "}" * 20_000, "JSON nested more than 100 levels deep"),
        (NESTED, "JSON nested more than 100 levels deep"),
        ('{"seed": ', "not valid JSON (Expecting value: line 1 column 10), cut short"),
        ("", "empty, cut short or damaged"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ("1" * 5000, "not valid JSON (Exceeds the limit"),
        ("[1, 2]", "a list, not a JSON object"),
        ('"config"', "a string, not a JSON object"),
    ],
    ids=["deep", "deep-objects", "150-levels", "cut", "empty", "binary", "huge-int", "list", "str"],
)
def test_load_json_names_the_file_and_what_was_expected(tmp_path, content, reason):
    path = tmp_path / "config.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(fileio.JSONFileError) as info:
        fileio.load_json(path, "the run's config", require_object=True)
    message = str(info.value)
    assert isinstance(info.value, ValueError)  # every CLI's one-line errors catch it
    assert message.startswith(f"{path}: {reason}") and "\n" not in message, message
    assert message.endswith("; expected the run's config"), message
    assert info.value.where == str(path) and reason in info.value.reason


def test_load_json_reads_what_the_tools_write(tmp_path):
    value = {"videos": {"a": {"teachers": {"clip": [[1, 2.5], None]}}}, "n": [True, "x"]}
    fileio.atomic_write_json(tmp_path / "ok.json", value)
    assert fileio.load_json(tmp_path / "ok.json", require_object=True) == value
    deep_enough = "[" * 100 + "]" * 100  # the limit itself reads
    assert fileio.loads_json(deep_enough, "x") is not None
    with pytest.raises(FileNotFoundError):  # a missing file is the caller's case
        fileio.load_json(tmp_path / "missing.json")


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("content", [DEEP, NESTED, "[1]", '"x"', '{"a": 1'])
def test_every_reader_names_a_damaged_file_or_skips_it(tmp_path, capsys, content):
    """Each reader, on each damage: an error naming the file (a ValueError or RunError:
    one line at every CLI's boundary), or what it documents for an unreadable record (a
    skipped row with a warning, no result, no record). Before: RecursionError from every
    one; TypeError / AttributeError from provenance and the lock readers on a list."""
    # metrics.jsonl: the row is skipped with a warning naming the file and the line
    metrics = _write(tmp_path / "m" / "metrics.jsonl", '{"epoch": 1}\n' + content + "\n")
    assert records.read_metrics(metrics) == {1: {"epoch": 1}}
    assert f"warning: {metrics}: line(s) 2 are not JSON objects; skipped" in capsys.readouterr().err
    # config.json: the run's stored config
    _write(tmp_path / "c" / "config.json", content)
    with pytest.raises(workdir_lib.RunError) as info:
        workdir_lib.read_stored_config(str(tmp_path / "c"))
    assert str(info.value).startswith(f"{tmp_path / 'c' / 'config.json'}: cannot read the run's")
    assert "\n" not in str(info.value)
    # features.json
    features = _write(tmp_path / "f" / "features.json", content)
    with pytest.raises(ValueError, match=rf"^{features}: .*expected") as info:
        features_cli.read_manifest(features)
    # sweep.json and a sweep's run's test scores
    _write(tmp_path / "s" / sweep.MANIFEST, content)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 's' / sweep.MANIFEST}: not "):
        sweep.read_manifest(str(tmp_path / "s"))
    _write(tmp_path / "s" / "r" / sweep.RESULT, content)
    assert sweep._read_result(str(tmp_path / "s" / "r")) is None  # not finished: trained again
    # the thresholds eval.py --select stores beside a checkpoint
    selected = _write(tmp_path / "t" / "selected_thresholds_1.json", content)
    with pytest.raises(ValueError, match=rf"^{selected}: .*delete it to re-select$"):
        runs._read_selected(selected, 25)
    # a checkpoint's validation score: named as damage before orbax reads it
    _write(tmp_path / "ck" / "1" / "metrics" / "metrics", content)
    unparsable = content not in ("[1]", '"x"')  # those parse: orbax's reader names them
    assert checkpoints._unparsable_score(str(tmp_path / "ck")) == (1 if unparsable else None)
    if content == DEEP:  # the same file met by orbax's own reader: damage, not a bug
        with pytest.raises(RecursionError) as deep:
            json.loads(content)
        assert checkpoints.is_damage(deep.value) is True
        assert checkpoints.is_damage(RecursionError("maximum recursion depth exceeded")) is None
    # the record beside converted weights: no record, so convert again (one line)
    record = weights.converted_path(str(tmp_path / "w"), "clip") + ".json"
    _write(Path(record), content)
    assert weights.provenance(str(tmp_path / "w"), "clip") == {}
    with pytest.raises(weights.MissingWeightsError, match="no model configuration recorded"):
        teachers._recorded_config(str(tmp_path / "w"), "clip")
    # a lock file's record: always a dict; a holder that cannot be named is not "running"
    lock = _write(tmp_path / "l" / "train.lock", content)
    assert locks.current_holder(lock) is None
    with open(lock) as f:
        info = locks.holder_info(f, wait_s=0)
    assert info["pid"] == "?" and info["command"] == content[:200]
    assert "\n" not in locks.describe(info)


@pytest.mark.parametrize("record", ['["config"]', '"config"', "[1]", "null", "3"])
def test_a_record_of_another_type_is_no_record(tmp_path, record):
    """provenance (the converted weights' record) and a lock's record trusted their type:
    ``record["config"]`` raised TypeError, a lock of ``[1]`` AttributeError."""
    path = weights.converted_path(str(tmp_path), "clap") + ".json"
    _write(Path(path), record)
    assert weights.provenance(str(tmp_path), "clap") == {}
    with pytest.raises(weights.MissingWeightsError, match=rf"^{path}: no model configuration"):
        teachers._recorded_config(str(tmp_path), "clap")
    lock = _write(tmp_path / "train.lock", record)
    assert locks.current_holder(lock) is None
    assert checkpoints.training_in(str(tmp_path)) is None  # eval.py's "is it training?"
    with open(lock) as f:
        assert locks._read_info(f) == {"pid": "?", "host": "?", "command": record}


def test_a_lock_record_is_read_bounded_and_a_real_one_as_written(tmp_path):
    lock = str(tmp_path / "x.lock")
    _write(Path(lock), json.dumps({"pid": 1, "host": "h", "command": "c" * (70 * 1024)}))
    with open(lock) as f:
        assert locks._read_info(f)["pid"] == "?"  # more than a record: not read whole
    Path(lock).write_bytes(b"\xff\xfe\x00garbage")
    with open(lock) as f:
        assert locks._read_info(f)["pid"] == "?"
    with locks.exclusive(lock):
        info = locks.current_holder(lock)
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()


def test_no_json_file_is_read_around_fileio():
    """No module of training, evaluation, the sweep, the locks or the feature tool's
    records calls ``json.load`` / ``json.loads`` itself (every file goes through
    ``fileio.load_json``); allowed: fileio's own, and a config's JSON made in memory."""
    modules = [
        *Path(ROOT, "coleaf_jax", "training").glob("*.py"),
        *Path(ROOT, "coleaf_jax", "evaluation").glob("*.py"),
        Path(ROOT, "coleaf_jax", "sweep.py"),
        Path(ROOT, "coleaf_jax", "locks.py"),
        Path(ROOT, "coleaf_jax", "fileio.py"),
        Path(ROOT, "coleaf_jax", "features", "__main__.py"),
        Path(ROOT, "coleaf_jax", "features", "weights.py"),
        Path(ROOT, "coleaf_jax", "data", "unav100.py"),
    ]
    allowed = {
        ("fileio.py", "json.loads(text)"),
        ("workdir.py", "json.loads(config.to_json_best_effort())"),
        ("workdir.py", "json.loads(json.dumps(config))"),
    }
    found = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("json.load", "json.loads"):
                if (path.name, ast.unparse(node)) not in allowed:
                    found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_deep_json_through_train_py_is_a_warning_or_one_line(run, tmp_path):
    """The issue's files, 100,000 ``[`` each: a lock's record is handled (the lock taken
    over, its holder unnamed) and the finished run is a no-op; a config.json is one line
    naming it."""
    workdir = copy_run(run, tmp_path)
    Path(workdir, workdir_lib.LOCK_FILE).write_text(DEEP)
    proc = run_script("train.py", *tiny_flags(run.root), "--workdir", workdir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "taking over the lock of process ? on ?" in proc.stdout
    assert "this run is finished" in proc.stdout
    Path(workdir, workdir_lib.CONFIG_FILE).write_text(DEEP)
    proc = run_script("train.py", *tiny_flags(run.root), "--workdir", workdir, timeout=300)
    assert_one_line_error(
        proc,
        f"error: {os.path.join(workdir, 'config.json')}: cannot read the run's stored config",
        "nested more than 100 levels deep",
    )


def test_deep_json_through_the_other_tools_is_one_line(run, tmp_path, capsys):
    out = tmp_path / "feats"
    out.mkdir()
    Path(out, "features.json").write_text(DEEP)
    (tmp_path / "weights").mkdir()
    proc = run_script(
        "-m", "coleaf_jax.features", str(tmp_path / "v.mp4"), "--out", str(out),
        "--weights", str(tmp_path / "weights"),
    )  # fmt: skip
    assert_one_line_error(proc, f"error: {out / 'features.json'}: JSON nested more than 100")
    # a sweep: a run's metrics.jsonl line is skipped with a warning, the run summarized
    folder = tmp_path / "sweep"
    setting = {"name": "s", "config": "configs/synthetic.py:han", "num_epochs": 3, "seed": 0}
    sweep.write_manifest(str(folder), {"settings": [setting], "seeds": [0], "overrides": []})
    copy_run(run, folder / "s")
    Path(folder, "s", "run").rename(folder / "s" / "seed0")
    metrics = folder / "s" / "seed0" / records.METRICS_FILE
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + DEEP + "\n" + "".join(lines[1:]))
    tested = os.path.getmtime(folder / "s" / "seed0" / sweep.RESULT)
    os.utime(metrics, (tested - 1, tested - 1))  # the run was tested after its last row
    capsys.readouterr()
    assert sweep.main(["--workdir", str(folder), "--summarize"]) == 0
    captured = capsys.readouterr()
    assert captured.err == f"warning: {metrics}: line(s) 2 are not JSON objects; skipped\n"
    assert json.load(open(folder / sweep.SUMMARY))["settings"]["s"]["seeds"] == [0]
    Path(folder, sweep.MANIFEST).write_text(DEEP)
    assert sweep.main(["--workdir", str(folder), "--summarize"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {folder / sweep.MANIFEST}: not the JSON") and err.count("\n") == 1
    )
    workdir = copy_run(run, tmp_path)
    Path(workdir, "test_metrics.json").write_text(DEEP)
    with pytest.raises(SystemExit) as info:
        cli.exit_on_user_error(report.build_report, run_config(run.root), workdir)
    line = str(info.value)
    assert line.startswith(f"error: {workdir}/test_metrics.json: not a readable JSON record")
    assert "nested more than 100 levels deep" in line and "\n" not in line


# --- Several processes: the host pipeline's rows ----------------------------------------------


def test_the_host_pipeline_gives_each_process_the_rows_of_one_fitted_batch(monkeypatch):
    """Two processes of 2 devices each (4 in all) and a batch larger than the split of 5:
    the batch is fitted to 8 (the split rounded up to the devices), and each process's
    rows (``distributed.local_rows``: 4..7 for the second) index the host batch. Before,
    the host pipeline cut it back to 5 rows (``epoch_batches`` refitted with multiple=1):
    the second process's rows were out of range."""
    import jax

    from coleaf_jax.data import pipeline
    from coleaf_jax.training import distributed
    from coleaf_jax.training.device_data import device_batch

    if jax.local_device_count() < 2:
        pytest.skip("needs 2 local devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    n, n_dev, n_all = 5, 2, 4
    data = {
        "audio": np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, 2, 3), np.float32),
        "video_2d": np.zeros((n, 2, 4), np.float32),
        "video_3d": np.zeros((n, 2, 2), np.float32),
        "label": np.eye(n, dtype=np.float32),
    }
    batch_size = pipeline.fit_batch_size(10**8, n, n_all)
    assert batch_size == 8
    monkeypatch.setattr(distributed, "global_devices", lambda n_local: n_local * 2)
    first = distributed.local_rows(batch_size, n_dev)  # this process: axis indices 0, 1
    second = first + n_dev * (batch_size // n_all)  # the other: axis indices 2, 3
    np.testing.assert_array_equal(second, [[4, 5], [6, 7]])
    perm = np.array([3, 1, 4, 0, 2])
    (batch,) = list(train.host_batches(data, batch_size, perm, 0, n_all))
    assert all(len(v) == batch_size for v in batch.values())
    seen, real = [], 0
    for process_rows in (first, second):
        local = device_batch(batch, n_dev, process_rows)
        assert local["audio"].shape == (n_dev, batch_size // n_all, 2, 3)
        mask = np.asarray(local["video_mask"]).ravel()
        seen += [int(v) for v, m in zip(np.asarray(local["audio"])[..., 0, 0].ravel(), mask) if m]
        real += int(mask.sum())
    assert seen == perm.tolist() and real == n  # every video once, padding masked
    (cut,) = list(pipeline.epoch_batches(data, batch_size, perm))  # what it used to feed
    assert len(cut["audio"]) == n <= second.max()


# --- Out of memory -------------------------------------------------------------------------------


def test_a_failed_allocation_is_one_line_with_the_size_and_what_to_lower(
    run, tmp_path, monkeypatch
):
    monkeypatch.setattr(cli, "_MEMORY", dict(cli._MEMORY))  # this test's keys, for this test
    cli.remember_config(run_config(run.root), ("batch_size", "eval.batch_size"))
    with pytest.raises(SystemExit) as info:  # XLA's own error, for real
        cli.exit_on_user_error(lambda: jnp.zeros((200_000, 1_000_000)).block_until_ready())
    line = str(info.value)
    assert line.startswith("error: out of memory: an allocation of 800.0 GB failed")
    assert "lower config.batch_size (now 8) or config.eval.batch_size (now 16)" in line
    assert "\n" not in line
    with pytest.raises(SystemExit, match=r"^error: out of memory: an allocation of [\d.]+ PiB"):
        cli.exit_on_user_error(np.empty, (10**8, 10**8))  # numpy's MemoryError
    gpu = RuntimeError("Failed to allocate request for 1.20GiB (1288490188B) on device 0")
    assert cli.is_out_of_memory(gpu) and cli.memory_asked(gpu) == "1.3 GB"
    full = ValueError('RESOURCE_EXHAUSTED: Failed writing: "/x": No space left on device')
    assert not cli.is_out_of_memory(full) and fileio.is_disk_full(full)
    # The entry script, end to end: a model whose parameters cannot be allocated.
    proc = run_script(
        "train.py", *tiny_flags(run.root), "--config.model.d_model=2000000",
        "--workdir", str(tmp_path / "w"),
    )  # fmt: skip
    last = assert_one_line_error(proc, "out of memory: an allocation of", "TB failed")
    assert "config.batch_size (now 8) or config.eval.batch_size (now 16)" in last


# --- The config file runs once -------------------------------------------------------------------

COUNTED = """
import os
from coleaf_jax.config import PROJECT, load_config_file
with open({count!r}, "a") as f:
    f.write("ran\\n")
def get_config(arg=""):
    if arg == "bogus":
        raise ValueError("counted.py: unknown option 'bogus'")
    return load_config_file(os.path.join(PROJECT, "configs", "synthetic.py"))
"""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--config.batch_sise=3"], "has no key 'batch_sise' (did you mean batch_size"),
        (["--config.model.nope=1"], "has no key 'model.nope'"),
        ([":bogus"], "counted.py: unknown option 'bogus'"),
        ([], None),
    ],
    ids=["misspelt-key", "unknown-key", "file-error", "fine"],
)
def test_the_config_file_runs_once(tmp_path, monkeypatch, args, needle):
    """Config files are Python, run as code: a misspelt key ran the file a second time."""
    from absl import flags
    from ml_collections import config_flags

    count = tmp_path / "count"
    config_file = tmp_path / "counted.py"
    config_file.write_text(COUNTED.format(count=str(count)))
    spec = str(config_file) + (args[0] if args and args[0].startswith(":") else "")
    argv = ["train.py", f"--config={spec}", *(a for a in args if not a.startswith(":"))]
    monkeypatch.setattr(sys, "argv", argv)  # ml_collections defines --config.* from sys.argv
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    if needle is None:
        cli.parse_flags(argv, fv)
        assert fv["config"].value.batch_size > 0
    else:
        with pytest.raises(SystemExit) as info:
            cli.parse_flags(argv, fv)
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert count.read_text() == "ran\n"


def test_report_names_a_damaged_result_file(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    Path(workdir, "test_metrics.json").write_text('{"seg_a": 1')
    with pytest.raises(SystemExit, match=r"^error: \S+test_metrics.json: not a readable JSON"):
        cli.exit_on_user_error(report.build_report, run_config(run.root), workdir)
