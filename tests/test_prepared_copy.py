"""The prepared copy (TFDS array_record files) is a cache of the user's features: it is
verified when opened, rebuilt when damaged, prepared by one process at a time, and what a
killed preparation left is removed."""

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from coleaf_jax.data import llp, synthetic
from tests.test_llp_data import make_layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    return root, tmp_path / "tfds"


def _copy_dir(root, cache) -> Path:
    return llp.cache_dir(root, None, cache) / llp.input_fingerprint(root)


def _version_dir(root, cache) -> Path:
    return _copy_dir(root, cache) / "llp" / str(llp.Llp.VERSION)


def _damage(version: Path, how: str) -> None:
    shard = sorted(version.glob("llp-test.array_record-*"))[0]
    if how == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif how == "emptied":
        shard.write_bytes(b"")
    elif how == "deleted":
        shard.unlink()
    elif how == "corrupted":  # same size: only reading finds it
        data = bytearray(shard.read_bytes())
        for i in range(64, len(data), 97):
            data[i] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif how == "info_truncated":
        info = version / "dataset_info.json"
        info.write_text(info.read_text()[:40])
    elif how == "labels_junk":
        (version / "labels_test.npz").write_bytes(b"not a zip file at all")


@pytest.mark.parametrize(
    "how", ["truncated", "emptied", "deleted", "corrupted", "info_truncated", "labels_junk"]
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_damaged_copy_is_named_moved_aside_and_prepared_again(layout, caplog, how, stream):
    root, cache = layout
    expected = llp.load_split(root, "test", tfds_dir=cache)
    _damage(_version_dir(root, cache), how)
    if stream and how == "corrupted":  # same sizes: found by the first read, in training
        opened = llp.load_split(root, "test", tfds_dir=cache, stream=True)
        with pytest.raises(llp.DamagedCopyError) as info:
            opened["audio"][np.arange(2)]
        assert "re-run the same command to prepare it again" in str(info.value)
        assert not _copy_dir(root, cache).exists()  # moved aside: the next run repairs it
    with caplog.at_level(logging.WARNING):
        got = llp.load_split(root, "test", tfds_dir=cache, stream=stream)
    if not (stream and how == "corrupted"):
        moved = [m for m in caplog.messages if "cannot be used" in m]
        assert len(moved) == 1 and "moved it to" in moved[0] and "preparing it again" in moved[0]
    assert any(m.startswith("LLP: prepared 6 videos") for m in caplog.messages)
    for key in ("audio", "video_3d", "label_audio"):
        np.testing.assert_array_equal(got[key][np.arange(2)], expected[key])
    assert (got["id"] == expected["id"]).all()


def test_a_copy_that_fails_again_is_one_error(layout, monkeypatch):
    root, cache = layout
    llp.load_split(root, "test", tfds_dir=cache)
    real = llp.read_examples

    def always_broken(source, indices, data_dir):
        raise llp.DamagedCopyError(data_dir, "reading it failed (RuntimeError: Riegeli)")

    monkeypatch.setattr(llp, "read_examples", always_broken)
    with pytest.raises(llp.LLPDataError) as info:
        llp.load_split(root, "test", tfds_dir=cache)
    message = str(info.value)
    assert "cannot be used: reading it failed" in message and "after preparing it again" in message
    assert "\n" not in message
    monkeypatch.setattr(llp, "read_examples", real)
    llp.load_split(root, "test", tfds_dir=cache)  # and the copy is usable again


def test_leftovers_of_a_killed_preparation_are_removed(layout, caplog):
    root, cache = layout
    left = _copy_dir(root, cache) / "llp" / "incomplete.ABCDEF_1.4.0"
    left.mkdir(parents=True)
    (left / "llp-train.array_record-00000-of-00001").write_bytes(b"x" * 1000)
    with caplog.at_level(logging.WARNING):
        llp.load_split(root, "val", tfds_dir=cache)
    assert not left.exists()
    assert any(f"removing {left}" in m for m in caplog.messages)


PREPARE = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
    "from coleaf_jax.data import llp\n"
    "split = llp.load_split(sys.argv[1], 'val', tfds_dir=sys.argv[2])\n"
    "print('loaded', len(split['id']))\n"
)


def test_two_processes_preparing_the_same_inputs_take_turns(tmp_path):
    """Two processes started while a third (this test) holds the preparation lock both wait,
    naming the holder; once it is free, one prepares and the other uses its copy: both end
    well, the inputs are prepared once. (Holding the lock here makes the overlap certain:
    a preparation can end before a second process starts.)"""
    from coleaf_jax import locks

    root, cache = tmp_path / "d", tmp_path / "tfds"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=600, seed=1))
    lock = Path(f"{_copy_dir(root, cache)}.lock")
    lock.parent.mkdir(parents=True)
    outs: list[list[str]] = [[], []]
    with locks.exclusive(str(lock)):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", PREPARE, str(root), str(cache)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        readers = [
            threading.Thread(target=lambda p=p, out=out: out.extend(p.stdout), daemon=True)
            for p, out in zip(procs, outs)
        ]
        for reader in readers:
            reader.start()
        waiting = f"LLP: waiting for process {os.getpid()} on"
        deadline = time.monotonic() + 240
        while not all(any(waiting in line for line in out) for out in outs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), outs
            time.sleep(0.1)
    for p, reader in zip(procs, readers):
        p.wait(timeout=300)
        reader.join(timeout=60)
    text = ["".join(out) for out in outs]
    assert [p.returncode for p in procs] == [0, 0], text
    assert all("loaded 90" in out for out in text), text
    assert all("preparing the same inputs" in out for out in text), text
    assert sum(out.count("LLP: prepared 600 videos") for out in text) == 1, text
    assert "Traceback" not in text[0] + text[1]


def test_shards_are_written_uncompressed_and_a_compressed_copy_reads_the_same(
    layout, tmp_path, monkeypatch
):
    """Preparation writes uncompressed array_record shards (llp_prepared.SHARD_OPTIONS: no
    CPU spent compressing float32 features) and leaves TFDS's writer as it was; a copy
    written with TFDS's default (zstd, older versions) is read to the same arrays."""
    from array_record.python import array_record_module
    from tensorflow_datasets.core import file_adapters

    from coleaf_jax.data import llp_prepared

    root, cache = layout
    before = file_adapters.ArrayRecordFileAdapter.__dict__["write_examples"]
    ours = {s: llp.load_split(root, s, tfds_dir=cache) for s in ("train", "test")}
    assert file_adapters.ArrayRecordFileAdapter.__dict__["write_examples"] is before
    shard = sorted(_version_dir(root, cache).glob("llp-test.array_record-*"))[0]
    assert (
        "uncompressed" in array_record_module.ArrayRecordReader(str(shard)).writer_options_string()
    )

    monkeypatch.setattr(llp_prepared, "SHARD_OPTIONS", "group_size:1")  # zstd:3, TFDS's
    other = tmp_path / "tfds_zstd"
    old = {s: llp.load_split(root, s, tfds_dir=other) for s in ("train", "test")}
    shard = sorted(_version_dir(root, other).glob("llp-test.array_record-*"))[0]
    assert "zstd" in array_record_module.ArrayRecordReader(str(shard)).writer_options_string()
    for split in ours:
        assert set(ours[split]) == set(old[split])
        for key in ours[split]:
            np.testing.assert_array_equal(ours[split][key], old[split][key])


def _load_all(root, cache, processes: int) -> dict:
    return {
        s: llp.load_split(root, s, tfds_dir=cache, prepare_processes=processes)
        for s in ("train", "val", "test")
    }


def test_two_preparation_processes_write_the_same_copy(tmp_path, monkeypatch, caplog):
    """``prepare_processes=2``: the shards are written by two worker processes, and the
    copy holds the same examples in the same shards as one process writes (the files'
    bytes differ: TFDS's serialiser orders each example's fields by string hash)."""
    from coleaf_jax.data import llp_prepared

    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=120, seed=2))
    monkeypatch.setattr(llp_prepared, "EXAMPLES_PER_SHARD", 16)  # 6 + 2 + 2 shards
    one = _load_all(root, tmp_path / "one", 1)
    with caplog.at_level(logging.INFO, logger="coleaf_jax.data.llp"):
        two = _load_all(root, tmp_path / "two", 2)
    assert "LLP: writing 10 shards in 2 processes" in caplog.messages
    assert any(m.startswith("LLP: prepared 120/120 videos (train 84/84") for m in caplog.messages)
    for split in one:
        assert set(one[split]) == set(two[split])
        for key in one[split]:
            np.testing.assert_array_equal(one[split][key], two[split][key], err_msg=key)
    infos = [llp.prepare(root, tfds_dir=tmp_path / cache).info.splits for cache in ("one", "two")]
    for split in one:
        assert infos[0][split].shard_lengths == infos[1][split].shard_lengths
        assert infos[0][split].num_bytes == infos[1][split].num_bytes


def test_an_error_in_a_preparation_process_is_raised_as_in_one_process(tmp_path, monkeypatch):
    """A feature file that is not a .npy array, met by a worker process: the same one-line
    error as when this process meets it, naming the file."""
    from coleaf_jax.data import llp_prepared

    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=120, seed=2))
    monkeypatch.setattr(llp_prepared, "EXAMPLES_PER_SHARD", 16)
    bad = sorted((root / "res152").glob("*.npy"))[-1]
    bad.write_text("0.1 0.2\n")
    messages = []
    for processes in (1, 2):
        with pytest.raises(llp.LLPDataError) as info:
            llp.load_split(
                root, "val", tfds_dir=tmp_path / f"c{processes}", prepare_processes=processes
            )
        messages.append(str(info.value))
    assert messages[0] == messages[1] and messages[0].startswith(str(bad)), messages


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the workers through /proc")
def test_preparation_processes_stop_when_their_parent_is_killed(tmp_path):
    """SIGKILL of the preparing process (or its Ctrl-C, which ends it with os._exit): its
    worker processes stop at their next video instead of writing the rest of the copy
    into a folder the next run removes. The workers are frozen (SIGSTOP) once they write
    their first shards, the parent is killed, then they go on: they must end having
    started at most one more shard each (without watching their parent, and with results
    written to a closed pipe ignored, they write all 39)."""
    import signal

    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=600, seed=1))
    code = PREPARE.replace("tfds_dir=sys.argv[2]", "tfds_dir=sys.argv[2], prepare_processes=2")
    code = "from coleaf_jax.data import llp_prepared\nllp_prepared.EXAMPLES_PER_SHARD = 16\n" + code
    parent = subprocess.Popen(
        [sys.executable, "-c", code, str(root), str(tmp_path / "tfds")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    workers: list[int] = []
    written: list[Path] = []
    while len(workers) < 2 or not written:  # both started, writing their first shards
        assert parent.poll() is None and time.monotonic() < deadline, "no workers started"
        workers = [pid for pid in _children(parent.pid) if "_shard_worker" in _cmdline(pid)]
        written = list((tmp_path / "tfds").rglob("*.array_record-*"))
        time.sleep(0.005)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    frozen = len(list((tmp_path / "tfds").rglob("*.array_record-*")))
    parent.kill()
    parent.wait()
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "the workers went on without their parent"
        time.sleep(0.05)
    shards = list((tmp_path / "tfds").rglob("*.array_record-*"))
    assert len(shards) <= frozen + 2 < 39, (frozen, sorted(s.name for s in shards))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by init, counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_how_many_processes_prepare(monkeypatch):
    from coleaf_jax.data import llp_prepared

    monkeypatch.setattr(llp_prepared, "available_cores", lambda: 16)
    count = llp_prepared.preparation_processes
    assert count(0, 11_849, 93) == 11  # automatic: at least 1,024 videos each
    assert count(0, 1_000, 8) == 1  # small inputs: this process alone
    assert count(0, 100_000, 800) == 16  # one per core
    assert count(0, 100_000, 4) == 4  # at most one per shard
    assert count(3, 100, 1) == 1 and count(3, 100, 10) == 3  # as asked, at most per shard


def test_available_cores_respect_a_container_quota(tmp_path, monkeypatch):
    from coleaf_jax.data import llp_prepared

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(llp_prepared, "CGROUP_CPU_MAX", cpu_max)
    assert llp_prepared.available_cores() == 16  # no cgroup file
    cpu_max.write_text("max 100000\n")
    assert llp_prepared.available_cores() == 16  # no quota
    cpu_max.write_text("250000 100000\n")
    assert llp_prepared.available_cores() == 3  # 2.5 CPUs of time: 3 processes
    cpu_max.write_text("50000 100000\n")
    assert llp_prepared.available_cores() == 1


def test_preparing_leaves_no_empty_folder_in_the_temp_dir(layout, tmp_path, monkeypatch):
    """TFDS looks a dataset it has not prepared up on GCS (disabled) through an empty
    ``mkdtemp`` folder it never removes: one per preparation in /tmp, which our builder
    skips."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    root, cache = layout
    llp.load_split(root, "val", tfds_dir=cache)
    assert list(temp.iterdir()) == []


def test_preparation_processes_import_what_their_parent_imported(tmp_path):
    """A script run from a folder holding another ``coleaf_jax`` (a second checkout):
    the script imports the one beside it, and so must its preparation workers, although
    ``python -c`` would put the current folder first on their path."""
    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=120, seed=2))
    decoy = tmp_path / "elsewhere" / "coleaf_jax"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the other checkout was imported')\n")
    script = tmp_path / "scripts" / "prepare.py"
    script.parent.mkdir()
    script.write_text(
        f"import sys\nsys.path.insert(0, {ROOT!r})\n"
        "from coleaf_jax.data import llp_prepared\n"
        "llp_prepared.EXAMPLES_PER_SHARD = 16\n"
        + PREPARE.replace("tfds_dir=sys.argv[2]", "tfds_dir=sys.argv[2], prepare_processes=2")
    )
    done = subprocess.run(
        [sys.executable, str(script), str(root), str(tmp_path / "tfds")],
        cwd=decoy.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "loaded 18" in done.stdout, done.stdout + done.stderr


def test_loading_every_split_looks_at_the_inputs_once(tmp_path, monkeypatch):
    """The inputs' fingerprint stats every feature file (35,547 on LLP): loading the three
    splits for a run computes it once, not once per split and per size query."""
    from coleaf_jax.data import llp_prepared, pipeline
    from tests.test_train import tiny_config

    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=60, seed=2))
    config = tiny_config("han", **{"data.root": str(root), "data.tfds_dir": str(tmp_path / "t")})
    calls = []
    real = llp_prepared.input_fingerprint
    monkeypatch.setattr(
        llp_prepared, "input_fingerprint", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    data = pipeline.load_splits(config, str(tmp_path / "w"), ("train", "val", "test"))
    assert {s: len(data[s]["id"]) for s in data} == {"train": 42, "val": 9, "test": 9}
    assert len(calls) == 1, calls


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the workers through /proc")
def test_a_killed_preparation_process_is_an_error_naming_it(tmp_path, monkeypatch):
    """A worker killed (out of memory, by hand) before it wrote its shards: one error
    naming its exit status and how far it got, not a wait for results that never come."""
    import signal

    from coleaf_jax.data import llp_prepared

    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=300, seed=1))
    monkeypatch.setattr(llp_prepared, "EXAMPLES_PER_SHARD", 8)
    outcome: list[BaseException] = []

    def prepare():
        try:
            llp_prepared.prepare(root, tfds_dir=tmp_path / "tfds", processes=2)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome.append(e)

    thread = threading.Thread(target=prepare)
    thread.start()
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while not workers:
        assert thread.is_alive() and time.monotonic() < deadline, "no worker started"
        workers = [pid for pid in _children(os.getpid()) if "_shard_worker" in _cmdline(pid)]
        time.sleep(0.005)
    os.kill(workers[0], signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], llp.LLPDataError), outcome
    message = str(outcome[0])
    assert f"(pid {workers[0]}) ended with exit status -9 after 0 of its 20 shards" in message
