"""Hostile and damaged inputs on the data side (issue 29): feature files replaced behind
the prepared copy's back, ``.npy`` files checked from their header before their data is
read, broken symbolic links named, a full disk during preparation as one line, and
batch sizes larger than the split."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from coleaf_jax import fileio
from coleaf_jax.data import llp, llp_prepared, npy, pipeline, synthetic, unav100
from tests.helpers import assert_one_line_error
from tests.test_llp_data import make_layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    return root, tmp_path / "tfds"


# --- The prepared copy's fingerprint -----------------------------------------------------


def _old_identity(path: Path) -> tuple[int, int]:
    """What the fingerprint looked at before (besides the name): size and mtime."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _same_size_other_content(path: Path, into: Path) -> None:
    """Writes a file of ``path``'s shape and size, other values, to ``into``, with
    ``path``'s mtime (``touch -r``)."""
    array = np.load(path)
    np.save(into, (array + 1.0).astype(array.dtype))
    subprocess.run(["touch", "-r", str(path), str(into)], check=True)
    assert into.stat().st_size == path.stat().st_size


def _replace_with_cp_p(target: Path, tmp: Path) -> None:
    new = tmp / "new.npy"
    _same_size_other_content(target, new)
    subprocess.run(["cp", "-p", str(new), str(target)], check=True)  # in place: same inode


def _replace_with_rsync_a(target: Path, tmp: Path) -> None:
    # rsync -a skips a file of the same size and mtime unless told to look (-I, or -c):
    # then it writes a temporary file and renames it over the target, mtime kept.
    new = tmp / "new.npy"
    _same_size_other_content(target, new)
    subprocess.run(["rsync", "-a", "-I", str(new), str(target)], check=True)


def _replace_with_touch_r(target: Path, tmp: Path) -> None:
    reference = tmp / "reference"
    subprocess.run(["cp", "-p", str(target), str(reference)], check=True)  # the old mtime
    array = np.load(target)
    np.save(target, (array + 1.0).astype(array.dtype))  # edited in place
    subprocess.run(["touch", "-r", str(reference), str(target)], check=True)


REPLACEMENTS = {
    "cp -p": _replace_with_cp_p,
    "rsync -a": _replace_with_rsync_a,
    "touch -r": _replace_with_touch_r,
}


@pytest.mark.parametrize("how", sorted(REPLACEMENTS), ids=lambda how: how.replace(" ", ""))
def test_a_feature_file_replaced_keeping_size_and_mtime_is_prepared_again(layout, tmp_path, how):
    """The three ways of replacing a file that keep its size and mtime (what the
    fingerprint looked at before): the fingerprint changes, and the next load reads the
    new values instead of the stale copy."""
    tool = how.split()[0]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    root, cache = layout
    before = llp.input_fingerprint(root)
    old = llp.load_split(root, "test", tfds_dir=cache)
    target = root / "vggish" / "testvideo01.npy"
    identity = _old_identity(target)
    time.sleep(0.05)  # past the clock tick of the files' creation (their ctime)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    REPLACEMENTS[how](target, scratch)
    assert _old_identity(target) == identity  # what the old fingerprint saw: unchanged
    assert llp.input_fingerprint(root) != before
    new = llp.load_split(root, "test", tfds_dir=cache)
    np.testing.assert_array_equal(new["audio"][0], old["audio"][0] + 1.0)
    np.testing.assert_array_equal(new["audio"][1], old["audio"][1])


def test_an_unchanged_folder_keeps_its_fingerprint(layout):
    """Reading every file (loading, preparing) and listing the folder change nothing the
    fingerprint looks at: the prepared copy is found again, not rebuilt."""
    root, cache = layout
    first = llp.input_fingerprint(root)
    for split in ("train", "val", "test"):
        llp.load_split(root, split, tfds_dir=cache)
    for path in sorted(root.rglob("*.npy")):
        np.load(path)
    assert llp.input_fingerprint(root) == first
    builder = llp.prepare(root, tfds_dir=cache)
    assert llp.prepared_copy(builder).name == first


def test_a_chmod_prepares_again(layout):
    """The price of looking at ctime: a metadata-only change (chmod, chown, a hard link)
    changes the fingerprint too, so the copy is prepared once more (documented)."""
    root, _ = layout
    first = llp.input_fingerprint(root)
    time.sleep(0.05)
    os.chmod(root / "res152" / "trainvid001.npy", 0o600)
    assert llp.input_fingerprint(root) != first


# --- Broken symbolic links ----------------------------------------------------------------


def test_a_broken_symlink_in_a_feature_folder_is_named_with_what_to_do(layout):
    root, cache = layout
    link = root / "r2plus1d_18" / "stray.npy"
    link.symlink_to(root / "gone" / "stray.npy")
    with pytest.raises(llp.LLPDataError) as info:
        llp.load_split(root, "train", tfds_dir=cache)
    message = str(info.value)
    assert message.startswith(f"{link}: a broken symbolic link (to {root / 'gone' / 'stray.npy'}")
    assert "restore its target, or remove the link" in message and "\n" not in message


def test_a_broken_symlink_as_a_feature_file_is_named_as_missing(tmp_path):
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    link = root / "vggish" / "trainvid001.npy"
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere.npy")
    with pytest.raises(llp.MissingFeatureError) as info:
        llp.load_features(root, "trainvid001")
    assert f"{link} (a broken symbolic link to {tmp_path / 'elsewhere.npy'})" in str(info.value)
    with pytest.raises(npy.FeatureFileError, match="a broken symbolic link .* restore its target"):
        npy.read_npy(link)


def test_a_broken_symlink_through_train_py_is_one_line(tmp_path):
    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=30, seed=1))
    link = root / "vggish" / "zz_stray.npy"
    link.symlink_to(tmp_path / "moved" / "zz_stray.npy")
    done = _train_py(tmp_path, root, tmp_path / "tfds")
    last = assert_one_line_error(done, str(link), "broken symbolic link", "remove the link")
    assert last.count(str(root)) == 1  # the file is named, not the folder alone


# --- .npy files: the header first ------------------------------------------------------------


def _write_npy(path: Path, array: np.ndarray, version=(1, 0), header_bytes: int = 0) -> None:
    """``array`` as a .npy file of format ``version``, its header padded with spaces to
    about ``header_bytes`` (what other writers may do; numpy's own pads to 64)."""
    header = repr(
        {
            "descr": np.lib.format.dtype_to_descr(array.dtype),
            "fortran_order": False,
            "shape": array.shape,
        }
    )
    length_format = "<H" if version == (1, 0) else "<I"
    header = header.ljust(max(header_bytes, len(header) + 1) - 1) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY" + bytes(version) + struct.pack(length_format, len(header)))
        f.write(header.encode("latin1"))
        f.write(np.ascontiguousarray(array).tobytes())


def _bytes_read() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def test_a_huge_file_of_the_wrong_shape_is_refused_from_its_header(tmp_path):
    """A 2 GB array of the wrong shape (a sparse file: no disk used) is refused after
    reading its header; numpy's np.load read the 2 GB first."""
    path = tmp_path / "vggish.npy"
    with open(path, "wb") as f:  # the header says (500000, 1024) float32: 2 GB, sparse
        header = {"descr": "<f4", "fortran_order": False, "shape": (500000, 1024)}
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + 500_000 * 1024 * 4)
    header = npy.read_header(path)
    assert header.shape == (500000, 1024) and header.nbytes == 2_048_000_000
    before = _bytes_read()
    with pytest.raises(npy.FeatureFileError) as info:
        npy.read_npy(path, shape=(10, 128), kinds="f")
    after = _bytes_read()
    assert str(info.value) == f"{path}: expected shape (10, 128), got (500000, 1024)"
    if before is not None:
        assert after - before < 1_000_000, after - before


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_long_headers_are_read(tmp_path, version):
    """A 20 kB header (padded by its writer) is an ordinary .npy file: read, not called
    'holds Python objects' (np.load refuses headers over 10,000 bytes, suggesting
    allow_pickle)."""
    path = tmp_path / "long.npy"
    array = np.arange(10 * 128, dtype=np.float32).reshape(10, 128) / 100
    _write_npy(path, array, version, header_bytes=20_000)
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(path, allow_pickle=False)  # numpy's refusal, for the record
    np.testing.assert_array_equal(npy.read_npy(path, shape=(10, 128), kinds="f"), array)
    assert npy.read_header(path).offset > 20_000


def test_fortran_order_and_big_endian_files_read_the_same_values(tmp_path):
    array = np.random.default_rng(0).standard_normal((10, 512)).astype(np.float32)
    np.save(tmp_path / "f.npy", np.asfortranarray(array))
    np.save(tmp_path / "b.npy", array.astype(">f4"))
    np.save(tmp_path / "d.npy", array.astype(np.float64))
    assert npy.read_header(tmp_path / "f.npy").fortran_order
    for name in ("f", "b", "d"):
        got = npy.read_npy(tmp_path / f"{name}.npy", shape=(10, 512), kinds="f")
        np.testing.assert_array_equal(got, array)
        assert got.flags.c_contiguous


@pytest.mark.parametrize(
    "damage, needles",
    [
        ("cut", ["its header says shape (10, 128) float32, 5120 bytes of data", "truncated?"]),
        ("appended", ["5120 bytes of data; the file holds 10240", "another array appended"]),
        ("long_header", ["a header of 3000000000 bytes", "beyond the 65535 read"]),
        ("header_cut", ["its header of 118 bytes is cut short"]),
        ("version", ["format version 9.0; expected 1.0 or 2.0"]),
        ("not_a_dict", ["its header is not NumPy's"]),
        ("structured", ["its dtype [('a', '<f4')] is not plain numbers"]),
        # a second reading's findings: ValueErrors naming no file before
        ("subarray", ["its dtype ('<f4', (3,)) is not plain numbers"]),
        ("empty_dtype", ["its dtype |V0 is not plain numbers"]),
        ("huge_empty", ["its header's shape has 3 axes of up to 4611686018427387904"]),
        ("many_axes", ["its header's shape has 100 axes"]),
    ],
)
def test_damaged_npy_files_are_one_line_naming_the_file(tmp_path, damage, needles):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((10, 128), np.float32))
    data = path.read_bytes()
    if damage == "cut":
        path.write_bytes(data[:200])
    elif damage == "appended":
        path.write_bytes(data + data[128:])
    elif damage == "long_header":
        path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 3_000_000_000) + b"{}")
    elif damage == "header_cut":
        path.write_bytes(data[:60])
    elif damage == "version":
        path.write_bytes(data[:6] + b"\x09\x00" + data[8:])
    elif damage == "not_a_dict":
        _write_npy(path, np.zeros((10, 128), np.float32))
        data = path.read_bytes()
        path.write_bytes(data.replace(b"{", b"[", 1).replace(b"}", b"]", 1))
    elif damage == "structured":
        np.save(path, np.zeros((10, 128), [("a", "<f4")]))
    else:
        descr, shape = {
            "subarray": ("('<f4', (3,))", "(10, 128)"),
            "empty_dtype": ("'|V0'", "(10, 128)"),
            "huge_empty": ("'<f4'", f"(0, {2**62}, {2**62})"),
            "many_axes": ("'<f4'", "(" + "1, " * 99 + "0)"),
        }[damage]
        text = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}"
        text += " " * (63 - (len(text) + 10) % 64) + "\n"
        path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode())
    with pytest.raises(npy.FeatureFileError) as info:
        npy.read_npy(path)  # no expected shape or dtype: the header's own checks
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert "allow_pickle" not in message and "Python objects" not in message, message
    for needle in needles:
        assert needle in message, message


def test_the_callers_check_shape_and_dtype_before_reading(tmp_path, monkeypatch):
    """LLP features, VALOR pseudo-labels and UnAV-100 features: a file of the wrong shape
    is refused from its header (no data read) with the caller's message."""
    reads = []
    real = npy._data
    monkeypatch.setattr(npy, "_data", lambda *a: reads.append(a[0]) or real(*a))
    root = tmp_path / "llp"
    root.mkdir()
    make_layout(root)
    np.save(root / "res152" / "trainvid001.npy", np.zeros((10, 2048), np.float32))
    with pytest.raises(llp.LLPDataError, match=r"expected shape \(80, 2048\), got \(10, 2048\)"):
        llp.load_features(root, "trainvid001")
    assert not any("res152" in str(p) for p in reads)
    folder = tmp_path / "CLIP" / "segment_pseudo_labels"
    folder.mkdir(parents=True)
    (tmp_path / "CLAP" / "segment_pseudo_labels").mkdir(parents=True)
    np.save(tmp_path / "CLAP" / "segment_pseudo_labels" / "a.npy", np.zeros((10, 25)))
    np.save(folder / "a.npy", np.zeros((10, 24)))
    with pytest.raises(llp.LLPDataError, match=r"expected shape \(10, 25\) \(segments"):
        llp.load_pseudo_labels(str(tmp_path), ["a"])
    path = tmp_path / "v_rgb.npy"
    np.save(path, np.zeros((5, 7), np.float32))
    with pytest.raises(ValueError, match=r"shape \(5, 7\), expected \(steps >= 1, 1024\)"):
        unav100._load_feature(str(path), 1024)
    np.save(path, np.zeros((5, 1024), np.int32))
    with pytest.raises(ValueError, match="dtype int32, expected floating point"):
        unav100._load_feature(str(path), 1024)
    assert not any("segment_pseudo_labels/a.npy" in str(p) and "CLIP" in str(p) for p in reads)
    assert str(path) not in map(str, reads)


# --- A full disk while preparing -------------------------------------------------------------


class _FullDiskWriter:
    """array_record's writer on a full disk: its writes fail as array_record reports it
    (a RuntimeError naming errno's text, no errno), and so does close."""

    def __init__(self, path, options):
        self.path = path
        Path(path).write_bytes(b"x" * 1000)  # a partial shard

    def write(self, record):
        raise RuntimeError(
            f"write() failed: No space left on device; writing {self.path}; at byte 1000"
        )

    def close(self):
        raise RuntimeError(f"close() failed: No space left on device; writing {self.path}")


def test_a_full_disk_while_preparing_is_one_error_and_a_rerun_prepares(layout, monkeypatch):
    root, cache = layout
    monkeypatch.setattr(llp_prepared.array_record_module, "ArrayRecordWriter", _FullDiskWriter)
    with pytest.raises(fileio.DiskFullError) as info:
        llp.load_split(root, "val", tfds_dir=cache)
    copy = llp.cache_dir(root, None, cache) / llp.input_fingerprint(root)
    message = str(info.value)
    assert message.startswith(f"{copy}: no space left on the device (") and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not list(cache.rglob("*.array_record*")) and not list(cache.rglob("incomplete.*"))
    monkeypatch.undo()
    got = llp.load_split(root, "val", tfds_dir=cache)
    assert list(got["id"]) == ["valvideo001", "valvideo002"]


def test_a_full_disk_in_a_worker_process_is_the_same_error(tmp_path):
    """In a worker process the writer's RuntimeError becomes the OSError it stands for
    (which pickles), and the parent raises the same DiskFullError as one process."""
    e = llp_prepared._os_error(
        RuntimeError("write() failed: No space left on device; writing /x/s; at byte 9"), "/x/s"
    )
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename == "/x/s"
    back = pickle.loads(pickle.dumps(e))
    assert fileio.is_disk_full(back)
    other = RuntimeError("Riegeli: corrupted")
    assert llp_prepared._os_error(other, "/x/s") is other


def _train_py(tmp_path, root, tfds, *extra, code: str | None = None):
    args = [
        "train.py",
        "--config=configs/llp.py:han",
        f"--config.data.root={root}",
        f"--config.data.tfds_dir={tfds}",
        f"--workdir={tmp_path / 'w'}",
        "--config.num_epochs=1",
        "--config.batch_size=8",
        *extra,
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


FULL_DISK_TRAIN = (
    "import runpy, sys\n"
    "from coleaf_jax.data import llp_prepared\n"
    "from tests.test_data_hardening import _FullDiskWriter\n"
    "llp_prepared.array_record_module.ArrayRecordWriter = _FullDiskWriter\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
)


def test_a_full_disk_through_train_py_is_one_line(tmp_path):
    root = tmp_path / "d"
    synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=30, seed=1))
    done = _train_py(tmp_path, root, tmp_path / "tfds", code=FULL_DISK_TRAIN)
    assert_one_line_error(done, "no space left on the device", "config.data.tfds_dir")


@pytest.mark.parametrize("how", ["errno", "numpy_short_write"])
def test_a_full_disk_while_writing_the_synthetic_set_names_its_folder(
    tmp_path, monkeypatch, capsys, how
):
    """numpy's np.save on a full disk raises OSError(28) or, cut in the middle of its
    data, an OSError with no errno ("163840 requested and 72672 written"): either is one
    DiskFullError naming the folder, and the command-line tool prints it as one line."""
    real, calls = np.save, []

    def save(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 5:
            if how == "errno":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise OSError("163840 requested and 72672 written")
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    out = tmp_path / "syn"
    with pytest.raises(fileio.DiskFullError) as info:
        synthetic.generate(str(out), synthetic.SyntheticConfig(num_videos=30, seed=1))
    assert str(info.value).startswith(f"{out}: no space left on the device")
    assert not (out / synthetic.COMPLETE_MARKER).exists()  # written again by the next run
    calls.clear()
    capsys.readouterr()
    assert synthetic.main([str(tmp_path / "cli"), "--videos", "30"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'cli'}: no space left on the device (")
    assert err.count("\n") == 1 and "the next run writes it again" in err


def test_other_os_errors_of_the_synthetic_writer_are_not_called_a_full_disk(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert synthetic.main([str(blocker / "syn"), "--videos", "30"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no space" not in err, err


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.parametrize("processes", [1, 2])
def test_a_really_full_disk_through_train_py(tmp_path, processes):
    """ENOSPC for real: the prepared copy goes to a 3 MB tmpfs (the layout's copy needs
    about 20 MB). One line naming the copy's folder, nothing left there but the lock; with
    room again, the same command prepares and trains. Needs root (mount)."""
    disk = tmp_path / "small"
    if not _mount_tmpfs(disk, "3m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        root = tmp_path / "d"
        synthetic.generate(str(root), synthetic.SyntheticConfig(num_videos=30, seed=1))
        extra = f"--config.data.prepare_processes={processes}"
        done = _train_py(tmp_path, root, disk / "tfds", extra)
        assert_one_line_error(done, str(disk / "tfds"), "no space left on the device")
        left = [p for p in (disk / "tfds").rglob("*") if p.is_file()]
        assert [p.suffix for p in left] == [".lock"], left
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        done = _train_py(tmp_path, root, disk / "tfds", extra)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "LLP: prepared 30 videos" in done.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# --- Batch sizes larger than the split ---------------------------------------------------------


def test_batch_sizes_are_fitted_to_the_split():
    fit = pipeline.fit_batch_size
    assert fit(128, 1000) == 128 and fit(128, 128) == 128  # normal sizes: unchanged
    assert fit(10**8, 64) == 64 and fit(10**8, 63, multiple=2) == 64
    assert fit(10**8, 5, multiple=8) == 8 and fit(6, 5, multiple=4) == 6
    assert pipeline.batch_size_note(128, 1000) is None
    note = pipeline.batch_size_note(10**8, 63, 2)
    assert note == (
        "config.batch_size = 100000000 is larger than the 63 videos of the split: one batch "
        "of 64 per epoch instead (the same results)"
    )


def _split(n: int) -> dict[str, np.ndarray]:
    return {
        "audio": np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, 2, 3), np.float32),
        "video_2d": np.zeros((n, 2, 4), np.float32),
        "video_3d": np.zeros((n, 2, 2), np.float32),
        "label": np.eye(n, dtype=np.float32),
    }


def test_a_huge_batch_is_the_split_on_host_and_device():
    import jax.numpy as jnp

    from coleaf_jax.training import device_data

    data = _split(5)
    perm = np.array([4, 0, 2, 1, 3])
    (batch,) = list(pipeline.epoch_batches(data, 10**8, perm))
    assert len(batch["audio"]) == 5 and batch["video_mask"].tolist() == [1] * 5
    (batch2,) = list(pipeline.epoch_batches(data, 10**8, perm, multiple=2))
    assert batch2["video_mask"].tolist() == [1] * 5 + [0]
    on_devices = device_data.device_batch(batch, 2)
    assert on_devices["audio"].shape == (2, 3, 2, 3)
    np.testing.assert_array_equal(np.asarray(on_devices["video_mask"]).ravel(), [1] * 5 + [0])
    order = device_data.padded_order(perm, 10**8)
    np.testing.assert_array_equal(order, perm)
    assert len(device_data.padded_order(perm, 10**8, n_devices=4)) == 8
    np.testing.assert_array_equal(device_data.padded_order(perm, 4), [4, 0, 2, 1, 3, -1, -1, -1])
    seen = device_data.make_device_step(lambda s, b, e, k: b, batch_size=10**8)(
        None, data, jnp.asarray(order), jnp.int32(0), 0, None
    )
    host = pipeline.make_batch(data, perm, 5)
    for k in host:
        np.testing.assert_array_equal(np.asarray(seen[k]), host[k], err_msg=k)


@pytest.mark.parametrize("on_device", [True, False])
def test_training_with_a_batch_larger_than_the_split_equals_one_batch_of_it(on_device, tmp_path):
    """A batch of 1e8 on the tiny training split (22 videos, on the test session's
    devices) trains exactly as a batch of the split's size rounded to the devices (it ran
    out of memory: 1e8 rows of padding)."""
    import jax

    from coleaf_jax.training.train import train_and_evaluate
    from tests.test_train import tiny_config

    config = tiny_config("han", num_epochs=1, **{"data.on_device": on_device})
    data = pipeline.load_splits(config, str(tmp_path / "data"))
    n_train, n_dev = len(data["train"]["label"]), jax.local_device_count()
    split = pipeline.fit_batch_size(10**8, n_train, n_dev)
    assert split < 32
    runs, rows = {}, {}
    for name, batch in (("huge", 10**8), ("split", split)):
        config.batch_size = batch
        workdir = str(tmp_path / name)
        runs[name] = train_and_evaluate(config, workdir, data=data, verbose=False)
        rows[name] = json.loads(open(os.path.join(workdir, "metrics.jsonl")).readline())
    assert rows["huge"]["train"] == rows["split"]["train"]
    assert rows["huge"]["val"] == rows["split"]["val"]
    for key in runs["split"]:
        if key.startswith(("seg_", "evt_")):
            assert runs["huge"][key] == runs["split"][key], key
