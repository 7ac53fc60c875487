"""Checkpoint conversion without torch, the weights folder and its errors."""

import os
import zipfile

import numpy as np
import pytest

from coleaf_jax.features import convert, testing, weights

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "features")


@pytest.mark.parametrize("name", ["pth_zip.pth", "pth_legacy.pth"])
def test_reads_both_torch_formats_without_torch(name):
    expected = np.load(os.path.join(FIXTURES, "pth_expected.npz"))
    state = convert.read_pth(os.path.join(FIXTURES, name))
    assert list(state) == [
        "conv.weight",
        "conv.bias",
        "bn.num_batches_tracked",
        "half",
        "double",
        "transposed",
        "slice",
        "ints",
    ]
    for key, value in state.items():
        assert value.dtype == expected[key].dtype, key
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


@pytest.mark.parametrize("name", ["pth_zip.pth", "pth_legacy.pth"])
def test_write_pth_round_trips_what_torch_wrote(name, tmp_path):
    """testing.write_pth (no torch) writes what read_pth reads back as torch's own files."""
    state = convert.read_pth(os.path.join(FIXTURES, name))
    state = {k: v for k, v in state.items() if v.dtype in (np.float32, np.float64, np.int64)}
    path = testing.write_pth(str(tmp_path / "copy.pth"), state)
    again = convert.read_pth(path)
    assert list(again) == list(state)
    for key, value in state.items():
        assert again[key].dtype == value.dtype and again[key].shape == value.shape, key
        np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "resnet152-b121ed2d.pth"
    bad.write_bytes(b"\x80\x02not a checkpoint at all")
    with pytest.raises(convert.ConversionError, match="resnet152-b121ed2d.pth"):
        convert.read_pth(str(bad))


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


_LEGACY_RECORDS = ["magic", "protocol", "sys_info", "main", "storage_keys"]


def _legacy_with_payload(path, marker, record):
    """A legacy (pre-zip) torch file whose ``record`` carries the payload."""
    import pickle

    evil = _Payload(marker)
    values = {
        "magic": 0x1950A86A20F9469CFC6C,
        "protocol": 1001,
        "sys_info": {"protocol_version": 1001, "little_endian": True},
        "main": {"x": 1},
        "storage_keys": [],
    }
    with open(path, "wb") as f:
        for name in _LEGACY_RECORDS:
            value = values[name]
            if name == record:
                value = [value, evil] if name != "sys_info" else {**value, "e": evil}
            pickle.dump(value, f, protocol=2)


def _zip_with_payload(path, marker):
    import pickle
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": _Payload(marker)}, protocol=2))
        z.writestr("archive/version", "3\n")


@pytest.mark.parametrize("record", _LEGACY_RECORDS + ["zip"])
def test_no_record_of_a_checkpoint_can_run_code(tmp_path, record):
    marker = tmp_path / "pwned"
    path = tmp_path / "resnet152-b121ed2d.pth"
    if record == "zip":
        _zip_with_payload(path, marker)
    else:
        _legacy_with_payload(path, marker, record)
    with pytest.raises(convert.ConversionError, match=r"refusing (to load posix\.system|a)"):
        convert.read_pth(str(path))
    assert not marker.exists()
    # control: the same payload unpickled plainly does run (so the test can fail)
    if record == "main":
        import pickle

        pickle.loads(pickle.dumps(_Payload(marker)))
        assert marker.exists()


@pytest.mark.parametrize("record", ["sys_info", "main"])
def test_convert_cli_refuses_a_payload_in_one_error_line(tmp_path, record):
    import subprocess
    import sys

    marker = tmp_path / "pwned"
    folder = tmp_path / "weights"
    folder.mkdir()
    _legacy_with_payload(folder / "resnet152-b121ed2d.pth", marker, record)
    proc = subprocess.run(
        [sys.executable, "-m", "coleaf_jax.features.convert", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert not marker.exists()
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "resnet152-b121ed2d.pth" in lines[0] and "refusing" in lines[0]
    assert "Traceback" not in proc.stderr


def test_mapping_names_missing_unexpected_and_misshaped_keys():
    state = testing.random_state_dict("r2plus1d_18")
    del state["layer2.0.downsample.0.weight"]
    state["layer1.0.conv1.0.0.weight"] = state["layer1.0.conv1.0.0.weight"][:, :, :, :2]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["fc.weight"] = np.zeros((400, 512), np.float32)  # the classifier: ignored
    with pytest.raises(convert.ConversionError) as info:
        convert.r2plus1d_variables(state, "r2plus1d_18-91a641e6.pth")
    message = str(info.value)
    assert message.startswith("r2plus1d_18-91a641e6.pth: not a torchvision R(2+1)D-18 state dict")
    assert "1 missing: layer2.0.downsample.0.weight" in message
    assert (
        "1 wrong shape: layer1.0.conv1.0.0.weight (144, 64, 1, 2, 3) (expected (144, 64, 1, 3, 3))"
        in message
    )
    assert "1 unexpected: extra.weight" in message


def test_a_resnet_checkpoint_is_not_an_r2plus1d_one():
    with pytest.raises(convert.ConversionError, match="missing: layer1.0.conv1.0.0.weight"):
        convert.r2plus1d_variables(testing.random_state_dict("resnet152"), "x.pth")


def test_tf_checkpoint_names_map_to_the_flax_layers():
    shapes = convert.torch_shapes("vggish")

    # the variable scopes of AudioSet's vggish_model.ckpt (vggish_slim.py), and the
    # torch VGGish layer each corresponds to
    tf_scopes = {
        "conv1": "features.0",
        "conv2": "features.3",
        "conv3/conv3_1": "features.6",
        "conv3/conv3_2": "features.8",
        "conv4/conv4_1": "features.11",
        "conv4/conv4_2": "features.13",
        "fc1/fc1_1": "embeddings.0",
        "fc1/fc1_2": "embeddings.2",
        "fc2": "embeddings.4",
    }

    class Reader:  # tf.train.load_checkpoint's get_tensor, on a dict
        def __init__(self):
            self.tensors = {}
            for scope, key in tf_scopes.items():
                w = shapes[key + ".weight"]
                tf_shape = (w[2], w[3], w[1], w[0]) if len(w) == 4 else (w[1], w[0])
                self.tensors[f"vggish/{scope}/weights"] = np.zeros(tf_shape, np.float32)
                self.tensors[f"vggish/{scope}/biases"] = np.zeros(w[0], np.float32)

        def get_tensor(self, name):
            return self.tensors[name]

    variables = convert.vggish_tf_variables(Reader())
    torch_based = convert.vggish_variables(testing.random_state_dict("vggish"))
    same = lambda a, b: (
        {k: {p: v.shape for p, v in d.items()} for k, d in a["params"].items()}
        == {k: {p: v.shape for p, v in d.items()} for k, d in b["params"].items()}
    )
    assert same(variables, torch_based)


def test_missing_weights_say_what_to_download_and_where(tmp_path):
    folder = str(tmp_path / "weights")
    os.makedirs(folder)
    with pytest.raises(weights.MissingWeightsError) as info:
        weights.load(folder, "resnet152")
    message = str(info.value)
    assert "https://download.pytorch.org/models/resnet152-b121ed2d.pth" in message
    assert os.path.join(folder, "resnet152-b121ed2d.pth") in message
    assert f"python -m coleaf_jax.features.convert {folder}" in message
    with pytest.raises(weights.MissingWeightsError, match="vggish-10086976.pth"):
        weights.load(folder, "vggish")
    with pytest.raises(weights.MissingWeightsError, match="no weights folder given"):
        weights.load(None, "r2plus1d_18")


def test_a_checkpoint_in_the_folder_is_converted_on_first_use(tmp_path):
    folder = str(tmp_path)
    pca = testing.random_pca(3)
    np.savez(os.path.join(folder, "vggish_pca_params.npz"), **pca)
    assert "vggish_pca_params.npz (not converted yet)" in weights.describe_folder(folder)
    loaded = weights.load(folder, "vggish_pca", verbose=False)
    np.testing.assert_array_equal(loaded["pca_eigen_vectors"], pca["pca_eigen_vectors"])
    assert weights.is_converted(folder, "vggish_pca")
    assert "vggish_pca   converted" in weights.describe_folder(folder)
    assert weights.convert_main([folder]) == 0  # already converted: nothing to do


def test_convert_cli_lists_what_is_missing(tmp_path, capsys):
    assert weights.convert_main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "resnet152" in out and "missing: download https://download.pytorch.org" in out


def test_reads_numpy_arrays_pickled_in_a_checkpoint():
    state = convert.read_pth(os.path.join(FIXTURES, "pth_numpy.pth"))
    np.testing.assert_array_equal(
        state["pca_eigen_vectors"], np.arange(6, dtype=np.float32).reshape(2, 3)
    )
    assert state["pca_means"].dtype == np.float64 and state["pca_means"].tolist() == [0.5, -1.0]
    with pytest.raises(convert.ConversionError, match=r"PCA shapes \(2, 3\)"):
        convert.pca_params(state, "vggish_pca_params-970ea276.pth")


def test_only_the_state_dict_s_storages_are_read(monkeypatch):
    """A training checkpoint (state_dict + optimiser state + scaler, as laion_clap saves
    them): the optimiser's storages are never read from the archive (a 2 GB checkpoint
    does not need 2-3x its size in memory)."""
    path = os.path.join(FIXTURES, "clap_checkpoint.pt")
    read = []
    real = zipfile.ZipFile.read

    def counting(self, name, *args):
        read.append(name)
        return real(self, name, *args)

    monkeypatch.setattr(zipfile.ZipFile, "read", counting)
    state = convert.read_pth(path)
    data = [n for n in read if "/data/" in n]
    with zipfile.ZipFile(path) as z:
        stored = [n for n in z.namelist() if "/data/" in n]
    assert len(data) == len(set(data)) <= len(state) < len(stored)
