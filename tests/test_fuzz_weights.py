"""Fuzzing the readers of downloaded weights (issue 29): torch ``.pth`` (both formats),
``.safetensors`` and a CLIP ``config.json``. The properties: a valid file reads as it
should, any other ends in one :class:`ConversionError` naming the file (never another
exception, never a signal: a segfault would end the test process), and the reader never
allocates more than its stated bound. Profiles: tests/fuzzing.py."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from coleaf_jax.features import clip, convert
from tests import crafted as c
from tests.fuzzing import assert_one_error_line, fuzz_settings, memory_bound, mutations

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "features")
HUGE = [2**31, 2**40, 2**62, 2**64]


def _pth_bound(path) -> int:
    """read_pth's stated bound plus what numpy, zipfile and pickle keep meanwhile."""
    return convert.MEMORY_FACTOR * os.path.getsize(path) + convert.MEMORY_SLACK + (8 << 20)


def _read_or_refuse(path):
    """``read_pth`` under its memory bound: the state dict, or None when refused in one
    line naming the file."""
    with memory_bound(_pth_bound(path)):
        try:
            return convert.read_pth(path)
        except convert.ConversionError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
            return None


@st.composite
def layouts(draw):
    """One tensor over one storage, with numbers anywhere from valid to hostile."""
    ndim = draw(st.integers(0, 4))
    dim = st.one_of(st.integers(0, 5), st.sampled_from(HUGE), st.integers(-3, -1))
    size = tuple(draw(st.lists(dim, min_size=ndim, max_size=ndim)))
    stride = st.one_of(st.integers(0, 8), st.sampled_from(HUGE), st.integers(-3, -1))
    strides = tuple(draw(st.lists(stride, min_size=ndim, max_size=ndim)))
    offset = draw(st.one_of(st.integers(0, 40), st.sampled_from(HUGE), st.integers(-3, -1)))
    numel = draw(st.integers(0, 40))
    declared = draw(st.one_of(st.just(numel), st.integers(0, 40), st.sampled_from(HUGE)))
    return size, strides, offset, numel, declared


def _expected(size, strides, offset, numel, declared):
    """What the tensor holds, indexed another way (flat indices into the storage), or
    None when no valid checkpoint has these numbers."""
    if declared != numel or offset < 0 or min(size + strides, default=0) < 0:
        return None
    if np.prod([max(d, 1) for d in size], dtype=object) > convert.MAX_ELEMENTS:
        return None
    count = int(np.prod(size, dtype=object)) if size else 1
    if count == 0:
        return np.zeros(size, np.float32)
    last = offset + sum((d - 1) * s for d, s in zip(size, strides))
    if last >= numel:
        return None
    data = np.arange(numel, dtype=np.float32) + 0.5
    index = np.full(size, offset, dtype=np.int64)
    for axis, (d, s) in enumerate(zip(size, strides)):
        shape = [1] * len(size)
        shape[axis] = d
        index = index + (np.arange(d) * s).reshape(shape)
    return data[index]


@fuzz_settings(120)
@given(layout=layouts(), fmt=st.sampled_from(["zip", "legacy"]))
def test_any_tensor_layout_reads_correctly_or_is_refused(tmp_path_factory, layout, fmt):
    size, strides, offset, numel, declared = layout
    data = np.arange(numel, dtype=np.float32) + 0.5
    st_ = c.Storage(np.dtype(np.float32), declared, data.tobytes())
    if fmt == "legacy":
        st_.record_numel = numel if declared == numel else declared
    tensors = [c.Tensor("w", "0", size, strides, offset)]
    path = c.write(fmt, tmp_path_factory.mktemp("pth") / "x.pth", tensors, {"0": st_})
    state = _read_or_refuse(path)
    expected = _expected(size, strides, offset, numel, declared)
    if expected is None:
        assert state is None, (layout, state)
    else:
        assert state is not None, layout
        assert state["w"].shape == expected.shape and state["w"].dtype == np.float32
        np.testing.assert_array_equal(state["w"], expected)


def _fixture(name) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def _rezip(original: bytes, pickle_bytes: bytes) -> bytes:
    """The zip checkpoint with its data.pkl replaced (valid CRCs: the mutation reaches
    the unpickler instead of stopping at zipfile's checksum)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, pickle_bytes if name.endswith("data.pkl") else src.read(name))
    return out.getvalue()


def _data_pkl(original: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(original)) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


ZIP, LEGACY = _fixture("pth_zip.pth"), _fixture("pth_legacy.pth")


@fuzz_settings(150)
@given(data=st.data(), kind=st.sampled_from(["legacy", "zip", "zip-pickle"]))
def test_mutated_checkpoints_read_or_are_refused_in_one_line(tmp_path_factory, data, kind):
    if kind == "legacy":
        raw = data.draw(mutations(LEGACY))
    elif kind == "zip":
        raw = data.draw(mutations(ZIP))
    else:
        raw = _rezip(ZIP, data.draw(mutations(_data_pkl(ZIP))))
    path = tmp_path_factory.mktemp("pth") / "x.pth"
    path.write_bytes(raw)
    state = _read_or_refuse(path)
    if state is not None:
        assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items())


def _safetensors_file() -> bytes:
    a, b = np.arange(6, dtype=np.float32), np.arange(3, dtype=np.int64)
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "I64", "shape": [3], "data_offsets": [24, 48]},
        }
    ).encode()
    return len(header).to_bytes(8, "little") + header + a.tobytes() + b.tobytes()


SAFETENSORS = _safetensors_file()


@st.composite
def safetensors_headers(draw):
    """A header whose numbers are drawn from valid to hostile (structure kept)."""
    n = st.one_of(st.integers(0, 64), st.sampled_from(HUGE), st.integers(-2, -1))
    shape = draw(st.lists(n, max_size=4))
    begin, end = draw(n), draw(n)
    dtype = draw(st.sampled_from(["F32", "F16", "BF16", "I64", "BOOL", "X9", "f32"]))
    return {"w": {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}}, draw(
        st.integers(0, 64)
    )


@fuzz_settings(120)
@given(data=st.data(), structured=st.booleans())
def test_mutated_safetensors_read_or_are_refused_in_one_line(tmp_path_factory, data, structured):
    if structured:
        header, nbytes = data.draw(safetensors_headers())
        text = json.dumps(header).encode()
        raw = len(text).to_bytes(8, "little") + text + bytes(range(nbytes))
    else:
        raw = data.draw(mutations(SAFETENSORS))
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(raw)
    with memory_bound(2 * len(raw) + (8 << 20)):
        try:
            out = clip.read_safetensors(path)
        except convert.ConversionError as e:
            assert str(e).startswith(str(path)) and "\n" not in str(e), str(e)
            return
    assert sum(v.nbytes for v in out.values()) <= len(raw)


CONFIG = json.dumps(
    {
        "projection_dim": 8,
        "text_config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
        "vision_config": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2},
    }
).encode()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
CONFIG_KEYS = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "image_size",
    "patch_size",
    "vocab_size",
    "max_position_embeddings",
    "layer_norm_eps",
    "hidden_act",
    "eos_token_id",
]


@fuzz_settings(150)
@given(data=st.data(), structured=st.booleans())
def test_mutated_clip_configs_load_or_are_refused_in_one_line(tmp_path_factory, data, structured):
    """Only the config is read (no weights in the folder): a config that passes builds a
    CLIPConfig whose sizes are within the stated limits; any other is one error naming
    the file, before anything is sized from it."""
    if structured:
        config = json.loads(CONFIG)
        tower = data.draw(st.sampled_from(["text_config", "vision_config"]))
        key = data.draw(st.sampled_from(CONFIG_KEYS))
        config[tower][key] = data.draw(JSON_VALUES)
        raw = json.dumps(config).encode()
    else:
        raw = data.draw(mutations(CONFIG))
    folder = tmp_path_factory.mktemp("clip")
    (folder / "config.json").write_bytes(raw)
    with memory_bound(8 << 20):
        try:
            clip.load_folder(folder)
        except convert.ConversionError as e:
            message = str(e)
            assert "\n" not in message and str(folder) in message, message
            assume("no model.safetensors" not in message)  # the config passed: check it
            return
    raise AssertionError("a folder without weights loaded")


def test_a_passing_config_is_within_the_limits(tmp_path):
    """The counterpart of the property above: a config that passes its checks."""
    (tmp_path / "config.json").write_bytes(CONFIG)
    try:
        clip.load_folder(tmp_path)
    except convert.ConversionError as e:
        assert "no model.safetensors or pytorch_model.bin" in str(e)


@fuzz_settings(4)
@given(raw=mutations(ZIP))
def test_the_convert_command_ends_in_one_line_on_mutated_downloads(tmp_path_factory, raw):
    """Through the command line (a mutated 'ResNet-152' download): exit 0 or one error
    line naming the file; never a traceback or a signal; the child's peak memory below
    2 GB (JAX and orbax loaded)."""
    folder = tmp_path_factory.mktemp("weights")
    (folder / "resnet152-b121ed2d.pth").write_bytes(raw)
    proc = subprocess.run(
        [sys.executable, "-m", "coleaf_jax.features.convert", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_error_line(proc, "resnet152-b121ed2d.pth")
