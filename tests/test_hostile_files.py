"""Crafted checkpoints, safetensors files and model configs: every number from the file is
checked before it touches memory (issue 29). Each case here was, before the checks, an
out-of-bounds read (exit 0 with process memory in the weights), a segfault, or an
unnamed TypeError / MemoryError / RecursionError / ValueError / AttributeError."""

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from coleaf_jax.features import clap, clip, convert, weights
from tests import crafted as c

FORMATS = ["zip", "legacy"]


def _refused(path, match):
    with pytest.raises(convert.ConversionError, match=match) as info:
        convert.read_pth(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


# ----------------------------------------------------------------------------- .pth: tensors


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tensor_larger_than_its_storage_is_refused(tmp_path, fmt):
    """128x128 float32 on a 4-byte storage: read 64 kB of process memory before."""
    tensors = [c.Tensor("w", "0", (128, 128), (128, 1))]
    path = c.write(fmt, tmp_path / "x.pth", tensors, {"0": c.storage(np.ones(1, np.float32))})
    _refused(path, r"reaches element 16383 of storage 0, which holds 1")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "offset, size, stride, match",
    [
        (0, (2, 2), (2**40, 1), "reaches element"),  # segfaulted (exit 139)
        (0, (2, 2), (2, 2**62), "reaches element"),
        (4, (), (), "reaches element 4"),  # a 0-d tensor past the end
        (3, (2,), (1,), "reaches element 4"),  # one element past the end
        (-1, (2,), (1,), "negative"),
        (0, (2, 2), (-1, 1), "negative"),
        (0, (-2, 2), (1, 1), "negative"),
        (0, (2, 2), (1,), "one stride per size"),
        (0, (1,) * 40, (1,) * 40, "at most 32"),
        (0, (2, 2.0), (2, 1), "is a float, expected an integer"),
        (True, (2,), (1,), "is a bool, expected an integer"),
    ],
)
def test_offsets_sizes_and_strides_are_checked(tmp_path, fmt, offset, size, stride, match):
    tensors = [c.Tensor("w", "0", size, stride, offset)]
    storages = {"0": c.storage(np.arange(4, dtype=np.float32))}
    _refused(c.write(fmt, tmp_path / "x.pth", tensors, storages), match)


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_shared_storages_and_zero_sizes_read_correctly(tmp_path, fmt):
    """The positive side: what torch does write (a transposed view, an offset slice, two
    tensors on one storage, an empty tensor, stride 0 broadcasting) reads as numpy would
    index the storage."""
    data = np.arange(24, dtype=np.float64)
    tensors = [
        c.Tensor("t", "0", (4, 6), (1, 4)),  # a transposed (6, 4)
        c.Tensor("s", "0", (3,), (2,), 5),  # every second element from 5
        c.Tensor("tied", "0", (24,), (1,)),
        c.Tensor("empty", "0", (0, 7), (7, 1), 24),  # empty: its offset may be the end
        c.Tensor("bcast", "0", (3, 2), (0, 1), 22),
        c.Tensor("scalar", "0", (), (), 23),
    ]
    state = convert.read_pth(c.write(fmt, tmp_path / "x.pth", tensors, {"0": c.storage(data)}))
    np.testing.assert_array_equal(state["t"], data.reshape(6, 4).T)
    np.testing.assert_array_equal(state["s"], [5, 7, 9])
    np.testing.assert_array_equal(state["tied"], data)
    assert state["empty"].shape == (0, 7) and state["empty"].dtype == np.float64
    np.testing.assert_array_equal(state["bcast"], [[22, 23]] * 3)
    assert state["scalar"].shape == () and state["scalar"] == 23


@pytest.mark.parametrize("fmt", FORMATS)
def test_many_tensors_over_one_storage_stop_at_the_memory_bound(tmp_path, fmt, monkeypatch):
    """Each tensor copies its elements: 100 full views of one 64 kB storage would build
    6.4 MB from a file of ~70 kB. The reader's budget (4x the file + slack; the slack
    set to 0 here) refuses it."""
    monkeypatch.setattr(convert, "MEMORY_SLACK", 0)
    tensors = [c.Tensor(f"w{i}", "0", (16384,), (1,)) for i in range(100)]
    path = c.write(fmt, tmp_path / "x.pth", tensors, {"0": c.storage(np.ones(16384, np.float32))})
    _refused(path, r"more than a \d+-byte checkpoint can hold")
    # control: four views fit (so the bound is what refuses a hundred)
    path = c.write(fmt, tmp_path / "y.pth", tensors[:2], {"0": c.storage(np.ones(16384, "f4"))})
    assert len(convert.read_pth(path)) == 2


# ----------------------------------------------------------------------------- .pth: storages


def test_a_storage_whose_bytes_disagree_with_its_declared_size_is_refused(tmp_path):
    tensors, storages = c.simple(np.ones(4, np.float32))
    storages["0"].numel = 1 << 40  # the persistent id claims 4 TB
    _refused(c.write_zip(tmp_path / "x.pth", tensors, storages), r"for 1099511627776")


def test_a_legacy_storage_larger_than_the_file_is_refused_before_reading(tmp_path):
    """The 8-byte element count before a storage's bytes: 2**60 raised MemoryError."""
    tensors, storages = c.simple(np.ones(4, np.float32))
    storages["0"].record_numel = 1 << 60
    _refused(c.write_legacy(tmp_path / "x.pth", tensors, storages), r"declares 115292")


def test_a_legacy_storage_never_stored_and_one_stored_twice_are_named(tmp_path):
    tensors, storages = c.simple(np.ones(4, np.float32))
    _refused(c.write_legacy(tmp_path / "a.pth", tensors, storages, keys=[]), "never stored")
    _refused(c.write_legacy(tmp_path / "b.pth", tensors, storages, keys=["0", "0"]), "twice")
    _refused(c.write_legacy(tmp_path / "c.pth", tensors, storages, keys=["9"]), "no tensor uses")


@pytest.mark.parametrize(
    "pid, match",
    [
        (
            c.plain("storage") + b"Q",
            "a persistent id is 'storage', expected a tuple",
        ),  # TypeError before
        (b"(" + c.plain("storage") + b"tQ", "a tuple of 5"),
        (b"(" + c.plain("blob") + c.plain(1) * 4 + b"tQ", "unknown persistent id 'blob'"),
        (
            b"(" + c.plain("storage") + c.plain("FloatStorage") + c.plain("0") * 2 + c.plain(4),
            "not a torch storage",
        ),
    ],
)
def test_malformed_persistent_ids_are_named(tmp_path, pid, match):
    if pid.count(b"(") and not pid.endswith(b"Q"):
        pid += b"tQ"
    tensors, storages = c.simple(np.ones(4, np.float32))
    _refused(c.write_zip(tmp_path / "x.pth", tensors, storages, pid=pid), match)


def test_a_compressed_entry_cannot_declare_more_than_deflate_allows(tmp_path):
    path = tmp_path / "x.pth"
    tensors, storages = c.simple(np.zeros(1 << 20, np.float32))  # 4 MB of zeros: ~4 kB
    c.write_zip(path, tensors, storages)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    assert len(convert.read_pth(path)["w"]) == 1 << 20  # a plausible ratio still reads
    # the central directory edited to declare 4 GB for the same bytes
    raw = bytearray(path.read_bytes())
    central = raw.rfind(b"PK\x01\x02archive/data/0"[:4])
    while raw[central + 46 : central + 46 + 14] != b"archive/data/0":
        central = raw.rfind(b"PK\x01\x02", 0, central)
    raw[central + 24 : central + 28] = struct.pack("<I", 0xFFFF0000)
    path.write_bytes(bytes(raw))
    _refused(path, r"entry archive/data/0 declares 4294901760 bytes")


# ----------------------------------------------------------------------------- .pth: pickle


def _zip_with_main(path, main: bytes):
    tensors, storages = c.simple(np.ones(2, np.float32))
    return c.write_zip(path, tensors, storages, pickle_bytes=main)


def test_deep_nesting_and_non_tensor_entries_are_named(tmp_path):
    deep = b"\x80\x02}" + c.plain("w") + b"]" * 300 + b"a" * 299 + b"s."  # 300 deep
    _refused(_zip_with_main(tmp_path / "a.pth", deep), r"entry 'w' holds a list, not a tensor")
    text = pickle.dumps({"w": "a string"}, protocol=2)
    _refused(_zip_with_main(tmp_path / "b.pth", text), r"entry 'w' holds a str, not a tensor")
    keys = pickle.dumps({3: 1.0}, protocol=2)
    _refused(_zip_with_main(tmp_path / "c.pth", keys), "a state dict key is int 3")


def test_only_latin1_bytes_may_be_decoded(tmp_path):
    evil = b"\x80\x02" + c.glob("_codecs", "encode") + c.plain(("x", "zlib_codec")) + b"R."
    _refused(_zip_with_main(tmp_path / "x.pth", evil), "refusing _codecs.encode")
    # a numpy array pickled with protocol 2 (its bytes as a latin-1 string) still reads
    ok = pickle.dumps({"a": np.arange(3, dtype=np.int16)}, protocol=2)
    assert b"_codecs" in ok
    np.testing.assert_array_equal(
        convert.read_pth(_zip_with_main(tmp_path / "y.pth", ok))["a"], [0, 1, 2]
    )


def test_convert_cli_names_a_crafted_file_in_one_line(tmp_path):
    """Through the command line (a crafted ResNet-152 download): exit 1, one line, no
    traceback, no signal; the old reader converted it (exit 0) or segfaulted (139)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    tensors = [c.Tensor("conv1.weight", "0", (64, 3, 7, 7), (2**40, 1, 1, 1))]
    c.write_zip(folder / "resnet152-b121ed2d.pth", tensors, {"0": c.storage(np.ones(4, "f4"))})
    proc = subprocess.run(
        [sys.executable, "-m", "coleaf_jax.features.convert", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: ") and "resnet152-b121ed2d.pth" in lines[0]
    )
    assert "reaches element" in lines[0]


# ----------------------------------------------------------------------------- safetensors


def _safetensors(path, header, data=b"") -> str:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


@pytest.mark.parametrize(
    "header, data, match",
    [
        (b"[" * 100000 + b"]" * 100000, b"", "nested too deeply"),  # RecursionError before
        ({"w": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}, b"", "shape"),
        (  # each dimension within the buffer, their product not: a ValueError before
            {
                "a": {"dtype": "U8", "shape": [1000], "data_offsets": [0, 1000]},
                "b": {"dtype": "F32", "shape": [0] + [1000] * 8, "data_offsets": [0, 0]},
            },
            b"\0" * 1000,
            "has shape",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
            },
            b"\0" * 24,
            "overlap",
        ),
        ({"w": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}, b"\0" * 16, "outside"),
        (
            {"w": {"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}},
            b"\0" * 4,
            "malformed",
        ),
        ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4, "malformed"),
        ({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "dtype"),
        ([1, 2], b"", "not a JSON object"),
    ],
)
def test_safetensors_headers_are_checked(tmp_path, header, data, match):
    path = _safetensors(tmp_path / "model.safetensors", header, data)
    with pytest.raises(convert.ConversionError, match=match) as info:
        clip.read_safetensors(path)
    assert str(info.value).startswith(path)


def test_safetensors_tensors_read_back(tmp_path):
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7], np.int64)
    header = {
        "__metadata__": {"format": "pt"},
        "b": {"dtype": "I64", "shape": [1], "data_offsets": [24, 32]},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [24, 24]},
    }
    out = clip.read_safetensors(
        _safetensors(tmp_path / "m.safetensors", header, a.tobytes() + b.tobytes())
    )
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)
    assert out["e"].shape == (0, 5)


# ----------------------------------------------------------------------------- configs


def _clip_folder(tmp_path, config) -> str:
    folder = tmp_path / "clip"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(config) if not isinstance(config, str) else config
    )
    return str(folder)


@pytest.mark.parametrize(
    "config, match",
    [
        ([1, 2], "a JSON list, expected an object"),  # AttributeError before
        (
            {"vision_config": {"num_hidden_layers": 1e9}},
            r"layers = 1000000000: expected an integer from 1 to 256",
        ),
        ({"text_config": {"hidden_size": "512"}}, "512 is not an integer"),
        ({"text_config": {"hidden_size": True}}, "True is not an integer"),
        ({"text_config": [1]}, "text_config is a JSON list"),
        ({"vision_config": {"patch_size": 448}}, "patch_size 448 > image_size 224"),
        (
            {"text_config": {"layer_norm_eps": -1}, "vision_config": {"layer_norm_eps": -1}},
            "layer_norm_eps",
        ),
        ('{"a": ' * 5000 + "1" + "}" * 5000, "not JSON"),
        ("{" + " " * (2 << 20) + "}", "bytes, more than such a file holds"),
    ],
)
def test_clip_config_json_is_checked_before_anything_is_sized(tmp_path, config, match):
    """A billion layers looped and took 6 GB before; now refused before any key list."""
    folder = _clip_folder(tmp_path, config)
    with pytest.raises(convert.ConversionError, match=match) as info:
        clip.load_folder(folder)
    assert os.path.join(folder, "config.json") in str(info.value)


def test_a_valid_clip_config_still_loads(tmp_path):
    config = clip.config_from_hf({"vision_config": {"num_hidden_layers": 24.0}}, "c")
    assert config.vision.layers == 24


@pytest.mark.parametrize(
    "record, match",
    [
        ([1], "a list"),
        ({"audio": {"depths": [10**9, 2, 6, 2]}, "text": {}}, "depths = 1000000000"),
        ({"audio": {"depths": [2] * 100}, "text": {}}, "at most 8"),
        ({"audio": {"embed_dim": 96.5}, "text": {}}, "embed_dim = 96.5"),
        ({"audio": {}, "text": {"layers": 10**9}}, "layers = 1000000000"),
        ({"audio": {}, "text": "roberta"}, "not objects"),
        ({"audio": {"norm_eps": "x"}, "text": {}}, "norm_eps = x"),  # a flax TypeError before
        ({"audio": {"mlp_ratio": float("nan")}, "text": {}}, "mlp_ratio = nan"),
        ({"audio": {"ape": 1}, "text": {}}, "ape = 1: expected true or false"),
        ({"audio": {}, "text": {}, "enable_fusion": "yes"}, "enable_fusion = yes"),
    ],
)
def test_clap_records_are_checked(record, match):
    with pytest.raises(ValueError, match=match):
        clap.config_from_dict(record)


@pytest.mark.parametrize(
    "record, match",
    [
        ({"vision": {"layers": 10**9}, "text": {}}, "layers = 1000000000"),
        ({"vision": [], "text": {}}, "not objects"),
        ("vit", "a str"),
        ({"vision": {}, "text": {}, "layer_norm_eps": "x"}, "layer_norm_eps x"),
        ({"vision": {}, "text": {}, "layer_norm_eps": float("nan")}, "layer_norm_eps nan"),
        ({"vision": {}, "text": {}, "activation": 3}, "activation 3: expected a name"),
    ],
)
def test_clip_records_are_checked(record, match):
    with pytest.raises(ValueError, match=match):
        clip.config_from_dict(record)


def test_converted_weights_declaring_more_than_any_extractor_are_refused(tmp_path, monkeypatch):
    folder = str(tmp_path)
    pca = {"pca_eigen_vectors": np.ones((128, 128), "f4"), "pca_means": np.ones(128, "f4")}
    weights.save_converted(folder, "vggish_pca", pca)
    assert (
        weights._restored_bytes(
            weights.ocp.StandardCheckpointer(), weights.converted_path(folder, "vggish_pca")
        )
        == 66048
    )
    monkeypatch.setattr(weights, "MAX_CONVERTED_BYTES", 66047)
    with pytest.raises(weights.MissingWeightsError, match="declares 66048 bytes"):
        weights.load(folder, "vggish_pca")
    monkeypatch.setattr(weights, "MAX_CONVERTED_BYTES", 66048)
    np.testing.assert_array_equal(weights.load(folder, "vggish_pca")["pca_means"], pca["pca_means"])


def test_pickle_memo_indices_and_frames_cannot_size_allocations(tmp_path):
    """Found by the long fuzz profile: one LONG_BINPUT with index 174417761 made the C
    unpickler size its memo table to 2.8 GB before anything else was checked."""
    put = b"\x80\x02}r" + struct.pack("<I", 174417761) + b"."
    _refused(_zip_with_main(tmp_path / "a.pth", put), "a pickle memo index 174417761")
    frame = b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"}."
    _refused(_zip_with_main(tmp_path / "b.pth", frame), "a pickle frame of 1099511627776 bytes")
    # control: sequential memo indices (what pickle writes) read
    ok = b"\x80\x02}q\x00" + c.plain("n") + b"K\x03s."
    assert convert.read_pth(_zip_with_main(tmp_path / "c.pth", ok))["n"] == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_tensor_with_a_huge_dimension_is_refused(tmp_path, fmt):
    """Found by the long fuzz profile: shape (0, 2**62) made numpy raise 'array is too
    big' (a ValueError naming no file)."""
    tensors = [c.Tensor("w", "0", (0, 2**62), (1, 1))]
    path = c.write(fmt, tmp_path / "x.pth", tensors, {"0": c.storage(np.ones(1, np.float32))})
    _refused(path, r"more than 2\*\*48 elements")


def test_what_unpickling_builds_is_charged_to_the_budget(tmp_path, monkeypatch):
    """A second reading's finding: 2 million empty dicts from a 2 kB deflated data.pkl
    peaked at 567 MB (the budget counted only the pickle's bytes). Each opcode is now
    charged before unpickling; a checkpoint's own opcodes fit."""
    bomb = b"\x80\x02(" + b"}" * 2_000_000 + b"l."
    path = tmp_path / "x.pth"
    tensors, storages = c.simple(np.ones(2, np.float32))
    c.write_zip(path, tensors, storages, pickle_bytes=bomb)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    assert path.stat().st_size < 10_000
    _refused(path, r"unpickling 2000004 opcodes needs \d+ bytes")
    assert convert.read_pth(os.path.join(FIXTURES, "clap_checkpoint.pt"))  # with its optimiser


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "features")


@pytest.mark.parametrize(
    "main, match",
    [
        # numpy.ndarray((10**8,), 'f8'): an 800 MB uninitialised "tensor" before
        (
            b"\x80\x02}"
            + c.plain("w")
            + c.glob("numpy", "ndarray")
            + c.plain(((10**8,), "f8"))
            + b"Rs.",
            "is not callable",
        ),
        # _reconstruct(ndarray, (10**8,), 'f8') allocated 800 MB before
        (
            b"\x80\x02}"
            + c.plain("w")
            + c.glob("numpy.core.multiarray", "_reconstruct")
            + b"("
            + c.glob("numpy", "ndarray")
            + c.plain((10**8,))
            + c.plain(b"b")
            + b"tRs.",
            "otherwise than numpy pickles arrays",
        ),
        # scalar(dtype('V300000000'), ...) allocated 300 MB before
        (
            b"\x80\x02}"
            + c.plain("w")
            + c.glob("numpy.core.multiarray", "scalar")
            + b"("
            + c.glob("numpy", "dtype")
            + c.plain(("V300000000", False, True))
            + b"R"
            + c.plain(b"x")
            + b"tRs.",
            "a numpy dtype 'V300000000'",
        ),
        (
            b"\x80\x02}"
            + c.plain("w")
            + c.glob("numpy", "dtype")
            + c.plain(("O", False, True))
            + b"Rs.",
            "numbers of at most 16 bytes",
        ),
    ],
)
def test_numpy_globals_build_only_what_numpy_pickles(tmp_path, main, match):
    _refused(_zip_with_main(tmp_path / "x.pth", main), match)


def test_messages_never_print_a_shared_structure_whole(tmp_path):
    """A 4 kB persistent id [[[0] * 1000] * 100] * 1000 shared by reference: printing it
    took 455 MB and 5.5 s before; messages now name its type and length."""
    inner = b"(" + b"K\x00" * 1000 + b"lq\x01"  # [0] * 1000, memoized
    middle = b"(" + b"h\x01" * 100 + b"lq\x02"
    outer = b"(" + b"h\x02" * 1000 + b"l"
    main = b"\x80\x02}" + c.plain("w") + c.glob("torch._utils", "_rebuild_tensor_v2")
    main += b"(" + inner + middle + outer + b"Q" + c.plain(0) + c.plain((1,)) + c.plain((1,))
    main += b"\x89" + c.glob("collections", "OrderedDict") + b")RtRs."
    _refused(_zip_with_main(tmp_path / "x.pth", main), r"a persistent id is a list of 1000,")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"PK\x03\x04garbage", "cannot be read as .npz"),  # zipfile.BadZipFile before
        ("no_means", "no pca_means array"),
        ("huge_shape", r"pca_eigen_vectors.s header says \(1000000000, 128\)"),
        ("objects", "numbers of at most 16 bytes"),
    ],
)
def test_downloaded_npz_arrays_are_checked_before_they_are_read(tmp_path, content, match):
    """Google's vggish_pca_params.npz: only the two arrays read, each header checked
    before its data (np.load allocated what a header declared; a non-zip was a
    BadZipFile traceback through the converter)."""
    path = tmp_path / "vggish_pca_params.npz"
    vectors, means = np.ones((128, 128), np.float32), np.zeros(128, np.float32)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "no_means":
        np.savez(path, pca_eigen_vectors=vectors)
    else:
        np.savez(path, pca_eigen_vectors=vectors, pca_means=means)
        with zipfile.ZipFile(path) as z:
            entries = {n: z.read(n) for n in z.namelist()}
        raw = entries["pca_eigen_vectors.npy"]
        if content == "huge_shape":
            raw = raw.replace(b"(128, 128)", b"(1000000000, 128)")
        else:
            raw = raw.replace(b"'<f4'", b"'|O' ")
        entries["pca_eigen_vectors.npy"] = raw
        with zipfile.ZipFile(path, "w") as z:
            for name, data in entries.items():
                z.writestr(name, data)
    with pytest.raises(convert.ConversionError, match=match) as info:
        convert.read_npz(path, ("pca_eigen_vectors", "pca_means"))
    assert str(info.value).startswith(str(path))


def test_downloaded_npz_reads_its_arrays(tmp_path):
    path = tmp_path / "p.npz"
    vectors = np.arange(128 * 128, dtype=np.float64).reshape(128, 128)
    np.savez(path, pca_eigen_vectors=np.asfortranarray(vectors), pca_means=np.ones(128), x=1)
    out = convert.read_npz(path, ("pca_eigen_vectors", "pca_means"))
    assert set(out) == {"pca_eigen_vectors", "pca_means"}
    np.testing.assert_array_equal(out["pca_eigen_vectors"], vectors)


@pytest.mark.parametrize(
    "content, match",
    [
        ("[" * 100000 + "]" * 100000, "not JSON"),  # RecursionError before
        ("[1, 2]", "a JSON list, expected an object"),
        (b"\xff\xfe{}", "not JSON"),
    ],
)
def test_tokenizer_json_files_are_checked(tmp_path, content, match):
    path = tmp_path / "vocab.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(convert.ConversionError, match=match):
        convert.read_json(str(path))
