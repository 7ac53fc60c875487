"""Multi-process training (``jax.distributed``, gloo CPU collectives): 2 processes equal 1."""

import json
import os
import socket
import subprocess
import sys

import pytest

from coleaf_jax.config import load_config_file
from coleaf_jax.evaluation import metrics
from coleaf_jax.training import distributed, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# HAN alone (dropout 0.1 on): the cross-process mechanics (each device's rows, dropout keys
# from global positions, psum-ed losses and gradients) are those of the CoLeaF step, which
# tests/test_train.py checks term by term under pmap, at a third of its compile time.
CONFIG = "configs/synthetic.py:han"
TINY = {
    "model.d_model": 16,
    "model.ffn_dim": 16,
    "data.synthetic_videos": 30,
    "batch_size": 8,
    "num_epochs": 2,
    "lr_decay_every_epochs": 2,
    "loss.kd_warmup_epochs": 1,
    "loss.class_token_warmup_epochs": 1,
    "eval.batch_size": 16,
}


def _gloo_available() -> bool:
    try:
        from jax._src.lib import _jax
    except ImportError:
        return False
    return hasattr(_jax, "make_gloo_tcp_collectives")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(workdirs, overrides, timeout=300):
    """train.py as process i of len(workdirs), each on its own CPU device; returns
    ``[(returncode, output)]``."""
    env = dict(os.environ)
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    env["XLA_FLAGS"] = " ".join(flags + ["--xla_force_host_platform_device_count=1"])
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    port = _free_port()
    args = [f"--config.{k}={v}" for k, v in overrides.items()]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "train.py",
                "--config",
                CONFIG,
                *args,
                "--workdir",
                workdir,
                "--coordinator_address",
                f"localhost:{port}",
                "--num_processes",
                str(len(workdirs)),
                "--process_id",
                str(i),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, workdir in enumerate(workdirs)
    ]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [(p.returncode, out) for p, out in zip(procs, outs)]


def _rows(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.mark.skipif(
    not _gloo_available(),
    reason="this jaxlib has no gloo CPU collectives (jax._src.lib._jax.make_gloo_tcp_collectives)",
)
def test_two_processes_train_exactly_like_one(tmp_path, compilation_cache):
    data_root = str(tmp_path / "data")
    overrides = {**TINY, "data.root": data_root, "compilation_cache_dir": compilation_cache}
    # The one-process run (one device), which also generates the data both runs read.
    config = load_config_file(
        CONFIG, [f"{k}={v}" for k, v in {**overrides, "num_devices": 1}.items()]
    )
    single = str(tmp_path / "single")
    expected = train.train_and_evaluate(config, single, verbose=False)

    # 2 processes x 1 device, the batch of 8 split 4 + 4. Epoch 1 gathers the rows on
    # device (the default); process 1 is given a workdir of its own to show it writes
    # nothing (process 0 alone holds the run's files).
    workdir, other = str(tmp_path / "multi"), str(tmp_path / "process1")
    first = _launch([workdir, other], {**overrides, "num_epochs": 1})
    assert [rc for rc, _ in first] == [0, 0], first
    assert "2 processes, 2 devices in all, 4 videos of each batch per device" in first[0][1]
    # Epoch 2 resumes (process 0 restores, the state is broadcast) through the host
    # input pipeline, each process feeding its own rows of the global batch.
    second = _launch([workdir, other], {**overrides, "data.on_device": False})
    assert [rc for rc, _ in second] == [0, 0], second
    assert "resuming from the checkpoint after epoch 1" in second[0][1]
    assert not os.path.exists(other)

    # Equal to the one-process run: the float32 losses differ only by summation order
    # (two per-process partial sums added by the psum instead of one sum; measured
    # rel 5e-7 after 6 steps), the thresholded validation and test scores not at all.
    got, want = _rows(workdir), _rows(single)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == [1, 2]
    for a, b in zip(got, want):
        assert a["train"] == pytest.approx(b["train"], rel=1e-5)
        assert a["val"] == pytest.approx(b["val"], abs=1e-6)
    result = json.load(open(os.path.join(workdir, "test_metrics.json")))
    assert result["epoch"] == expected["epoch"]
    assert {k: result[k] for k in metrics.SCORE_KEYS} == pytest.approx(
        {k: expected[k] for k in metrics.SCORE_KEYS}, abs=1e-6
    )
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == sorted(
        os.listdir(os.path.join(single, "checkpoints"))
    )
    assert os.path.exists(os.path.join(workdir, "report.html"))

    # Process 0 fails before training (another config on this run's workdir): every
    # process ends at once with one line, none waits for the others.
    failed = _launch([workdir, other], {**overrides, "seed": 1}, timeout=120)
    assert [rc for rc, _ in failed] == [1, 1], failed
    assert "error:" in failed[0][1] and "seed" in failed[0][1]
    assert "error: process 0 stopped before training:" in failed[1][1]


def test_initialize_only_when_asked(monkeypatch):
    for name in (
        distributed.ENV_ADDRESS,
        distributed.ENV_NUM_PROCESSES,
        distributed.ENV_PROCESS_ID,
    ):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False  # one process: nothing changes
    with pytest.raises(ValueError, match="missing --num_processes, --process_id"):
        distributed.initialize(coordinator_address="localhost:1")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "2")
    with pytest.raises(ValueError, match="--process_id = 2: expected 0 to 1"):
        distributed.initialize(coordinator_address="localhost:1")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "x")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        distributed.initialize()
