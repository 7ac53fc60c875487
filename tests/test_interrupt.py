"""Ctrl-C ends train.py with one line saying where it stopped and how to go on (exit
status 130, no traceback) at every moment, and re-running the same command then finishes
the run; the message itself for each phase."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from coleaf_jax import interrupt
from coleaf_jax.training import train
from coleaf_jax.training.train import RunStatus
from tests.test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.num_epochs=3",
    "--config.model.d_model=16",
    "--config.model.ffn_dim=16",
    "--config.batch_size=8",
    "--config.eval.batch_size=16",
    "--config.data.synthetic_videos=60",
    "--config.lr_decay_every_epochs=2",
]


def _env(home):
    env = dict(os.environ, HOME=home, PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = " ".join(
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    )
    return env


def _command(workdir, data):
    return [
        sys.executable,
        "train.py",
        "--config",
        "configs/synthetic.py:han",
        "--workdir",
        workdir,
        f"--config.data.root={data}",
        *TINY,
    ]


def _interrupt_at(marker, workdir, data, home, extra=0.0):
    """Starts train.py, sends SIGINT once ``marker`` is printed (None: right away), plus
    ``extra`` seconds; returns (exit status, output)."""
    proc = subprocess.Popen(
        _command(workdir, data),
        cwd=ROOT,
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = []
    if marker is None:
        time.sleep(0.2)
    else:
        for line in proc.stdout:
            out.append(line)
            if marker in line:
                break
    time.sleep(extra)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(out) + rest


@pytest.mark.parametrize(
    ("marker", "extra", "expected"),
    [
        (None, 0.0, "interrupted while starting; re-run the same command"),
        ("training on", 0.0, "interrupted in epoch 1 (compiling)"),
        ("epoch 1/3", 0.0, "interrupted in epoch 2"),
        ("test, best epoch", 0.0, "interrupted while writing the report"),
    ],
    ids=["starting", "compiling", "training", "reporting"],
)
def test_ctrl_c_is_one_line_and_the_same_command_finishes_the_run(
    tmp_path_factory, marker, extra, expected
):
    base = tmp_path_factory.getbasetemp()
    home, data = str(base / "interrupt-home"), str(base / "interrupt-data")
    os.makedirs(home, exist_ok=True)
    workdir = str(tmp_path_factory.mktemp("run"))
    shutil.rmtree(workdir)
    rc, out = _interrupt_at(marker, workdir, data, home, extra)
    lines = [line for line in out.splitlines() if line.strip()]
    assert rc == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert lines[-1].startswith(expected), lines[-1]
    # the same command again: the run resumes (or starts) and finishes
    again = subprocess.run(
        _command(workdir, data), cwd=ROOT, env=_env(home), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert os.path.exists(os.path.join(workdir, "test_metrics.json"))


def test_the_line_says_where_the_run_stopped_and_where_it_resumes():
    s = RunStatus(num_epochs=10)
    assert interrupt.interrupt_message(s) == "interrupted while starting; re-run the same " + (
        "command to start it again (no epoch was saved)"
    )
    s.phase = "loading"
    assert interrupt.interrupt_message(s).startswith("interrupted while loading the data;")
    s.phase, s.epoch, s.resume_epoch = "training", 5, 4
    assert interrupt.interrupt_message(s) == (
        "interrupted in epoch 5; re-run the same command to resume from epoch 4"
    )
    s.phase = "saving"
    assert interrupt.interrupt_message(s).startswith("interrupted in epoch 5 (saving); ")
    s.phase, s.best_epoch = "testing", 3
    assert interrupt.interrupt_message(s) == (
        "interrupted while testing the checkpoint of epoch 3; re-run the same command to "
        "test it (no epoch is trained again)"
    )
    assert interrupt.interrupt_message(None).startswith("interrupted; nothing was written")


def test_the_status_moves_to_the_next_epoch_once_an_epoch_is_saved(tmp_path):
    """Between an epoch's saved checkpoint (its line printed) and the next epoch's first
    step, a Ctrl-C is in the next epoch: the status says so, not "saving" (a race the
    CLI test above hit)."""
    status, seen = RunStatus(), []
    config = tiny_config("han", **{"data.synthetic_videos": 30})
    train.train_and_evaluate(
        config,
        str(tmp_path / "run"),
        status=status,
        on_epoch_end=lambda epoch, state: seen.append(
            (epoch, status.epoch, status.phase, status.resume_epoch)
        ),
        verbose=False,
    )
    assert seen == [(1, 2, "training", 2), (2, 3, "training", 3), (3, 3, "saving", 4)]
    assert status.phase == "finished"
