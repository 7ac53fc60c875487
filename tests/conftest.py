"""Test-session setup: a persistent XLA compilation cache shared by the tests.

Several tests compile the same training step (fresh runs, resumed runs, eval):
with the cache, each distinct program is compiled once per session.
"""

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace

# Tests run tiny shapes: XLA's optimisations cost more compile time than they save. The
# CoLeaF step (CMPAE Anchor, tiny dims) compiles in 9.3 s with the backend optimisation
# level 0 alone, 3.9 s with the fast-compile preset and the classic fusion emitters too
# (measured 2026-12-06). Set before jax creates its CPU client; inherited by the
# subprocesses the tests start (the documented commands included).
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_opt_preset=FAST_COMPILE",
    "--xla_cpu_use_fusion_emitters=false",
)
for _flag in FAST_COMPILE_FLAGS:
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from coleaf_jax.data import pipeline  # noqa: E402
from coleaf_jax.training import train  # noqa: E402
from tests.helpers import run_config  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One cache for the session, shared by the pytest-xdist workers (their base folders
    are siblings): a program the other worker compiled is read, not compiled again."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla-cache"
    folder.mkdir(exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield str(folder)


# The slowest tests (measured durations, longest first) are started first: pytest-xdist
# hands tests to its workers in collection order, and a long test started last leaves
# the other worker idle at the end.
SLOWEST_FIRST = (
    "test_docs_commands.py::test_documented_commands_run[parity]",
    "test_docs_commands.py::test_documented_commands_run[sweeps]",
    "test_docs_commands.py::test_documented_commands_run[other_datasets]",
    "test_docs_commands.py::test_documented_commands_run[llp_variants]",
    "test_docs_commands.py::test_documented_commands_run[llp_train_eval_parse]",
    "test_distributed.py::test_two_processes_train_exactly_like_one",
    "test_docs_commands.py::test_documented_commands_run[video_files]",
    "test_docs_commands.py::test_documented_commands_run[two_processes]",
    "test_docs_commands.py::test_documented_commands_run[demo]",
    "test_train.py::test_interrupted_run_resumes_to_the_same_state",
    "test_sweep.py::test_sweep_runs_every_seed_once_split_over_workers",
    "test_docs_commands.py::test_documented_commands_run[seeds_side_by_side]",
    "test_docs_commands.py::test_documented_commands_run[valor_teachers]",
    "test_train.py::test_pmap_step_equals_single_device_step[coleaf_cmpae]",
    "test_train.py::test_pmap_step_equals_single_device_step[coleaf_han]",
    "test_docs_commands.py::test_documented_commands_run[measure]",
    "test_registry.py::test_toy_anchor_and_dataset_train_and_evaluate_through_the_cli",
    "test_streaming.py::test_training_on_a_streamed_split_equals_training_in_memory",
    "test_features_parse.py::test_parse_videos_end_to_end",
    "test_train.py::test_device_resident_data_trains_exactly_like_the_host_pipeline",
    "test_unav100.py::test_padding_never_changes_outputs_losses_or_gradients[coleaf_cmpae]",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}

    def key(item):
        name = item.nodeid.split("tests/", 1)[-1]
        return rank.get(name, len(rank))

    items.sort(key=key)  # stable: the others keep their order


# ----------------------------------------------------------------------------- a finished run
# One tiny 3-epoch run (HAN baseline, D = 16, 30 synthetic videos), trained once per test
# process; the tests that damage or extend it work on copies (tests/helpers.py:copy_run).


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability_data")
    root = str(base / "data")
    return root, pipeline.load_splits(run_config(root), str(base))


@pytest.fixture(scope="session")
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
