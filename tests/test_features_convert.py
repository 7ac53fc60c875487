"""Checkpoint conversion without torch, the weights folder and its errors."""

import os

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


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "resnet152-b121ed2d.pth"
    bad.write_bytes(b"\x80\x02not a checkpoint at all")
    with pytest.raises(convert.ConversionError, match="resnet152-b121ed2d.pth"):
        convert.read_pth(str(bad))


def test_unpickler_refuses_other_objects(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f)
        pickle.dump(1001, f)
        pickle.dump({}, f)
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(convert.ConversionError, match="refusing to load"):
        convert.read_pth(str(path))


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
    assert convert.main([folder]) == 0  # already converted: nothing to do


def test_convert_cli_lists_what_is_missing(tmp_path, capsys):
    assert convert.main([str(tmp_path)]) == 1
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
