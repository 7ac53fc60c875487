"""The sweep: (setting, seed) runs as train.py processes, split over workers, one summary."""

import contextlib
import json
import os
import select
import subprocess
import sys

import numpy as np
import pytest

from coleaf_jax import sweep
from coleaf_jax.evaluation import metrics
from coleaf_jax.training import workdir as workdir_lib

# Two names for one model (HAN alone): after the first compile every run reuses the
# programs from the compilation cache, and equal seeds must give equal scores.
SPECS = ["configs/synthetic.py:han", "configs/ablations.py:han,synthetic"]
TINY = {
    "model.d_model": 16,
    "model.ffn_dim": 16,
    "data.synthetic_videos": 30,
    "batch_size": 8,
    "num_epochs": 1,
    "eval.batch_size": 16,
}


def test_sweep_runs_every_seed_once_split_over_workers(tmp_path, compilation_cache, monkeypatch):
    # The runs inherit the environment: one CPU device each (not the suite's two).
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags))
    workdir = str(tmp_path / "sweep")
    sets = [
        f"{k}={v}"
        for k, v in {
            **TINY,
            "data.root": str(tmp_path / "data"),
            "compilation_cache_dir": compilation_cache,
        }.items()
    ]
    args = (
        [a for spec in SPECS for a in ("--config", spec)]
        + [a for s in sets for a in ("--set", s)]
        + ["--seeds", "2", "--seed-start", "3", "--workdir", workdir, "--workers", "2"]
    )
    # Two machines sharing the folder: worker 0 takes runs 0 and 2 (seed 3 of each
    # setting), worker 1 runs 1 and 3 (seed 4), each two at a time.
    assert sweep.main(args + ["--worker", "0", "--num-workers", "2"]) == 0
    names = ["han_synthetic", "han_han_synthetic"]
    for name in names:
        assert os.path.exists(os.path.join(workdir, name, "seed3", "test_metrics.json"))
        assert not os.path.exists(os.path.join(workdir, name, "seed4"))
    partial = sweep.summarize(workdir)
    assert partial["settings"]["han_synthetic"]["missing_seeds"] == [4]
    assert sweep.main(args + ["--worker", "1", "--num-workers", "2"]) == 0
    assert sweep.main(["--workdir", workdir, "--summarize"]) == 0

    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["seeds"] == [3, 4] and list(summary["settings"]) == names
    results = {
        name: [
            json.load(open(os.path.join(workdir, name, f"seed{s}", "test_metrics.json")))
            for s in (3, 4)
        ]
        for name in names
    }
    for name in names:
        entry = summary["settings"][name]
        assert entry["seeds"] == [3, 4] and entry["missing_seeds"] == []
        for k in metrics.SCORE_KEYS:
            values = [r[k] for r in results[name]]
            assert entry["mean"][k] == pytest.approx(np.mean(values))
            assert entry["std"][k] == pytest.approx(np.std(values, ddof=1))
        heads = [np.mean([r[k] for k in sweep.HEADLINE_KEYS]) for r in results[name]]
        assert entry["headline"]["mean"] == pytest.approx(np.mean(heads))
        assert entry["headline"]["std"] == pytest.approx(np.std(heads, ddof=1))
        config = json.load(open(os.path.join(workdir, name, "seed4", "config.json")))
        assert config["seed"] == 4 and config["model"]["d_model"] == 16
    for a, b in zip(*results.values()):  # one model under two names: the same scores
        assert {k: a[k] for k in metrics.SCORE_KEYS} == {k: b[k] for k in metrics.SCORE_KEYS}
    assert results[names[0]][0]["seg_a"] != results[names[0]][1]["seg_a"]  # seeds differ

    # Resumable: a finished run is a no-op (train.py says so; nothing is rewritten).
    done = os.path.join(workdir, names[0], "seed4", "test_metrics.json")
    before = os.path.getmtime(done)
    assert sweep.main(args + ["--worker", "1", "--num-workers", "2"]) == 0
    assert os.path.getmtime(done) == before
    assert "this run is finished" in open(os.path.join(os.path.dirname(done), "train.log")).read()


def test_sweep_arguments_fail_before_any_run(tmp_path, capsys):
    workdir = str(tmp_path / "sweep")
    assert (
        sweep.main(
            ["--config", "configs/synthetic.py:han", "--set", "no_such_key=1", "--workdir", workdir]
        )
        == 1
    )
    assert "no_such_key" in capsys.readouterr().err
    assert (
        sweep.main(
            [
                "--config",
                "configs/synthetic.py:han",
                "--config",
                "configs/synthetic.py:han",
                "--workdir",
                workdir,
            ]
        )
        == 1
    )
    assert "same setting" in capsys.readouterr().err
    assert sweep.main(["--workdir", workdir, "--summarize"]) == 1  # no sweep there
    assert not os.path.exists(os.path.join(workdir, "sweep.json"))
    assert sweep.table_specs(["2", "3"], "synthetic") == [
        f"configs/ablations.py:{n},synthetic"
        for n in ("event_aware_nce", "no_contrastive", "standard_nce", "pseudo_label_bce", "no_kd")
    ]


HOLD_DRIVER = """
import sys
from coleaf_jax import sweep
folder, worker, num_workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
manifest = sweep.read_manifest(folder)
with sweep.driving(folder, sweep.share(manifest, worker, num_workers)):
    print("driving", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def driver(folder: str, worker: int, num_workers: int):
    """Another process holding what a driver of worker ``worker`` of ``num_workers`` holds."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DRIVER, folder, str(worker), str(num_workers)],
        cwd=sweep.ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 60)
        assert ready and holder.stdout.readline().strip() == "driving"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_drivers_of_overlapping_runs_are_refused(tmp_path, capsys):
    """Before, a sweep driven whole (``sweep.lock``) and worker 0 of two
    (``sweep.worker0.lock``) took different locks and both drove the same runs. Now a
    driver locks each run it drives: any two drivers sharing a run are refused, whatever
    their --worker / --num-workers; the workers of one --num-workers run side by side."""
    folder = str(tmp_path / "sweep")
    args = ["--config", "configs/synthetic.py:han", "--seeds", "3", "--workdir", folder]
    found = sweep.settings(["configs/synthetic.py:han"], [])
    start = found[0]["seed"]
    manifest = {"settings": found, "seeds": [start, start + 1, start + 2], "overrides": []}
    sweep.write_manifest(folder, manifest)
    name = found[0]["name"]
    with driver(folder, 0, 1) as pid:  # the whole sweep: runs 0, 1, 2
        for worker in ("0", "1"):
            assert sweep.main(args + ["--worker", worker, "--num-workers", "2"]) == 1
            err = capsys.readouterr().err
            seed = start + int(worker)
            assert err.startswith(
                f"error: --workdir {folder}: run {name} seed {seed} is being driven by process "
                f"{pid} on "
            )
            assert err.count("\n") == 1 and "one driver per run" in err
        for worker, num_workers in ((0, 2), (1, 3)):
            with pytest.raises(workdir_lib.OutputInUseError):
                with sweep.driving(folder, sweep.share(manifest, worker, num_workers)):
                    pass
    with driver(folder, 0, 2):  # runs 0 and 2
        with sweep.driving(folder, sweep.share(manifest, 1, 2)):  # run 1: side by side
            pass
        with pytest.raises(workdir_lib.OutputInUseError, match=f"run {name} seed {start + 2} "):
            with sweep.driving(folder, sweep.share(manifest, 2, 3)):  # run 2: shared
                pass
        with sweep.driving(folder, sweep.share(manifest, 1, 3)):  # run 1 alone: shares none
            pass
    assert sorted(os.listdir(os.path.join(folder, name))) == [f"seed{s}" for s in manifest["seeds"]]
    for seed in manifest["seeds"]:  # released: empty records, protected as a run's records
        lock = sweep.lock_path(folder, name, seed)
        assert open(lock).read() == "" and os.path.basename(lock) in workdir_lib.RECORD_FILES
