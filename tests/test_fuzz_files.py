"""Fuzzing the files a run reads besides downloaded weights (issue 29; those are in
test_fuzz_weights.py): feature ``.npy`` files, ``features.json``, orbax checkpoint
folders (through ``eval.py``'s code path) and the prepared copy's shards. The
properties: a valid file reads as it should; a damaged one ends in one line naming it
(never another exception, never a signal, never wrong values read silently); memory
stays bounded. Profiles: tests/fuzzing.py."""

import io
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coleaf_jax import cli
from coleaf_jax.data import llp, npy
from coleaf_jax.evaluation import runs
from coleaf_jax.features import __main__ as features_cli
from tests.fuzzing import fuzz_settings, memory_bound, mutations
from tests.helpers import copy_run, expected_best, run_config
from tests.test_llp_data import make_layout


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


NPY = _npy_bytes(np.arange(10 * 128, dtype=np.float32).reshape(10, 128) / 7)
NPY_FORTRAN = _npy_bytes(np.asfortranarray(np.arange(40, dtype=">f8").reshape(5, 8)))


@fuzz_settings(150)
@given(data=st.data(), fortran=st.booleans())
def test_mutated_npy_files_read_or_are_refused_in_one_line(tmp_path_factory, data, fortran):
    """A mutated feature file: the expected shape and dtype read back with the file's
    size accounting for them, or one FeatureFileError naming it; memory at most the
    file's size plus a little (the header is checked before the data is read)."""
    original = NPY_FORTRAN if fortran else NPY
    raw = data.draw(mutations(original))
    path = tmp_path_factory.mktemp("npy") / "vid.npy"
    path.write_bytes(raw)
    shape = (5, 8) if fortran else (10, 128)
    with memory_bound(2 * len(raw) + (1 << 20)):
        try:
            array = npy.read_npy(path, shape=shape, kinds="f")
        except npy.FeatureFileError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
            return
    assert array.shape == shape and array.dtype.kind == "f"
    assert array.nbytes <= len(raw)


def _manifest() -> bytes:
    return json.dumps(
        {
            "options": {"jpeg": True, "precision": "highest"},
            "videos": {
                "a": {"path": "/v/a.mp4", "duration": 10.0, "segments": 10},
                "b": {"path": "/v/b.mp4", "duration": 4.2, "teachers": {"label": ["Speech"]}},
            },
        }
    ).encode()


@fuzz_settings(150)
@given(data=st.data(), structured=st.booleans())
def test_mutated_features_json_reads_or_is_refused_in_one_line(tmp_path_factory, data, structured):
    if structured:  # any JSON value in place of a record, an option set or the whole
        manifest = json.loads(_manifest())
        value = data.draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3)
                ),
                max_leaves=6,
            )
        )
        where = data.draw(st.sampled_from(["root", "videos", "options", "record", "teachers"]))
        if where == "root":
            manifest = value
        elif where == "record":
            manifest["videos"]["a"] = value
        elif where == "teachers":
            manifest["videos"]["b"]["teachers"] = value
        else:
            manifest[where] = value
        raw = json.dumps(manifest).encode()
    else:
        raw = data.draw(mutations(_manifest()))
    path = tmp_path_factory.mktemp("features") / "features.json"
    path.write_bytes(raw)
    try:
        manifest = features_cli.read_manifest(str(path))
    except ValueError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
        return
    assert isinstance(manifest["videos"], dict)
    assert all(isinstance(r, dict) for r in manifest["videos"].values())


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint_files(workdir: str, step: int) -> list[str]:
    folder = os.path.join(workdir, "checkpoints", str(step))
    return sorted(
        os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
    )


@fuzz_settings(10)
@given(data=st.data())
def test_eval_on_a_mutated_checkpoint_scores_it_or_names_it(run, tmp_path_factory, data):
    """``eval.py``'s code path (``runs.evaluate_checkpoint`` under the CLI's error
    boundary) on a checkpoint with one file mutated, cut or deleted: scores (a mutation
    orbax does not see: the same keys and shapes) or one ``error:`` line naming the
    checkpoint; never another exception."""
    workdir = copy_run(run, tmp_path_factory.mktemp("ckpt"))
    best = expected_best(workdir)
    name = data.draw(st.sampled_from(_checkpoint_files(workdir, best)))
    path = os.path.join(workdir, "checkpoints", str(best), name)
    if data.draw(st.booleans()):
        with open(path, "rb") as f:
            original = f.read()
        with open(path, "wb") as f:
            f.write(data.draw(mutations(original)) if original else b"\0")
    else:
        os.remove(path)
    try:
        result = cli.exit_on_user_error(
            runs.evaluate_checkpoint, run_config(run.root), workdir, verbose=False
        )
    except SystemExit as e:
        message = str(e)
        assert message.startswith("error: ") and "\n" not in message, message
        assert f"checkpoint {best}" in message or workdir in message, message
        return
    assert set(result["test"] if "test" in result else result) >= {"epoch"}
    shutil.rmtree(workdir)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_llp") / "llp"
    root.mkdir()
    make_layout(root)
    return root


@fuzz_settings(8)
@given(data=st.data())
def test_a_mutated_shard_is_never_read_silently(prepared, tmp_path_factory, data):
    """One shard of the prepared copy mutated: loading gives exactly the user's features
    (the damage found, the copy prepared again) or one error naming the copy; never
    other values."""
    cache = tmp_path_factory.mktemp("tfds")
    expected = llp.load_split(prepared, "test", tfds_dir=cache)
    version = llp.cache_dir(prepared, None, cache) / llp.input_fingerprint(prepared)
    shards = sorted((version / "llp" / str(llp.Llp.VERSION)).glob("llp-*.array_record-*"))
    shard = data.draw(st.sampled_from(shards))
    shard.write_bytes(data.draw(mutations(shard.read_bytes())))
    try:
        got = llp.load_split(prepared, "test", tfds_dir=cache)
    except llp.LLPDataError as e:
        assert "\n" not in str(e) and str(version) in str(e), str(e)
        return
    assert (got["id"] == expected["id"]).all()
    for key in ("audio", "video_2d", "video_3d", "label_audio", "label_visual"):
        np.testing.assert_array_equal(got[key][np.arange(len(got["id"]))], expected[key])
