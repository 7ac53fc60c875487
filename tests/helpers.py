"""Helpers of the reliability tests (test_run_records, test_resume, test_faults,
test_workdir_lock, test_errors): the tiny run's config, copies, records, scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from coleaf_jax.config import override
from tests.test_train import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3


def run_config(root: str, **overrides):
    c = tiny_config("han", num_epochs=EPOCHS, **{"data.root": root})
    for key, value in overrides.items():
        override(c, key, value)
    return c


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
