"""One training per workdir: the lock, its holder's record, a dead holder taken over,
filesystems without flock.

Uses the tiny finished run of ``tests/conftest.py`` (``run``, ``data_root``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import threading

import pytest

from coleaf_jax import locks
from coleaf_jax.training import checkpoints, train
from coleaf_jax.training import workdir as workdir_lib
from tests.helpers import (
    ROOT,
    assert_one_line_error,
    run_script,
)
from tests.test_train import tiny_config

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
