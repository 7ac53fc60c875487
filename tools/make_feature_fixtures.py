"""Writes tests/fixtures/features/: the reference outputs the extractors' parity tests replay.

Run once, in a venv of its own with torch and torchvision (never the
project's), from the repository root:

    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy pillow
    /tmp/fx/bin/python tools/make_feature_fixtures.py --torchvggish /path/to/torchvggish-checkout

``--torchvggish``: a checkout of github.com/harritaylor/torchvggish (its
``torchvggish/`` package: ``mel_features.py``, ``vggish_input.py``,
``vggish.py``); its imports of resampy and soundfile are stubbed (no
resampling or file reading happens: the audio is already at 16 kHz).

Every reference runs on the same inputs and random weights the tests use
(``coleaf_jax.features.testing``, numpy only), in float32 (float64 for the
log-mel front end, as the reference computes it), with the classifier heads
dropped exactly as HAN's scripts drop them:

* ``preprocess.npz``: pretrainedmodels' ``TransformImage`` for ResNet-152
  (torchvision Resize(256), CenterCrop(224), ToTensor, Normalize) and
  ``scripts/utils.py``'s for R(2+1)D (Resize((112, 112)), ...) on PIL images.
* ``vggish.npz``: ``vggish_input.waveform_to_examples`` and torchvggish's
  ``VGG`` + ``Postprocessor`` (random PCA).
* ``resnet152.npz``: torchvision ``resnet152`` with ``fc`` replaced by the
  identity (pretrainedmodels' ``last_linear = Identity()``), one 64x64 frame.
* ``r2plus1d_18.npz``: ``nn.Sequential(*list(r2plus1d_18().children())[:-1])``
  on one (8, 32, 32) clip.
* ``pth_zip.pth``, ``pth_legacy.pth``, ``pth_expected.npz``: a small state dict
  saved in both of torch's formats, for the torch-free reader; ``pth_numpy.pth``:
  numpy arrays in a checkpoint.
* Each model's real state-dict keys and shapes (``*_keys.json``), so the
  converters are checked against torchvision's naming.
* With ``--han CHECKOUT`` (github.com/YapengTian/AVVP-ECCV20):
  ``han_example_frames.json``, the decoded frames its ``ffmpeg -r 8`` kept of
  its example video (matched to the 82 JPEGs it ships).
* With ``--moviepy`` (moviepy==1.0.3, scipy; pip installs it with its FFmpeg):
  ``moviepy_audio.npz``, which 44.1 kHz sample each 16 kHz sample of
  ``write_audiofile(fps=16000)`` is, for a 10.03 s stream (as its delay
  behind ``round(44100 k / 16000)``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from coleaf_jax.features import testing  # noqa: E402  (numpy only)

OUT = os.path.join(REPO, "tests", "fixtures", "features")


def torch_shapes(model) -> dict:
    return {
        k: list(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    }


def load_random(model, name: str):
    import torch

    shapes = {k: tuple(v) for k, v in torch_shapes(model).items()}
    state = testing.random_state_dict(name, 0, shapes)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(v) for k, v in state.items()}, strict=False
    )
    assert not unexpected, unexpected
    assert all(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in missing), missing
    return model.eval()


def write_keys(name: str, model) -> None:
    with open(os.path.join(OUT, f"{name}_keys.json"), "w") as f:
        json.dump(torch_shapes(model), f, indent=0, sort_keys=True)


def preprocess_fixture():
    import torchvision.transforms as T
    from PIL import Image

    frames = testing.test_frames(2, 48, 64)
    imgs = [Image.fromarray(f, "RGB") for f in frames]
    imagenet = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    kinetics = dict(mean=[0.43216, 0.394666, 0.37645], std=[0.22803, 0.22145, 0.216989])
    # pretrainedmodels utils.TransformImage(scale=0.875) for input_size 224, at full size
    # (kept as the uint8 crop) and at a reduced size (normalised output).
    full = [np.asarray(T.CenterCrop(224)(T.Resize(256)(imgs[0])))]
    small = T.Compose([T.Resize(40), T.CenterCrop(32), T.ToTensor(), T.Normalize(**imagenet)])
    r21d_u8 = [np.asarray(T.Resize((112, 112))(im)) for im in imgs]
    r21d_small = T.Compose([T.Resize((16, 16)), T.ToTensor(), T.Normalize(**kinetics)])
    np.savez_compressed(
        os.path.join(OUT, "preprocess.npz"),
        frames=frames,
        resnet_full_u8=np.stack(full),
        resnet_small=np.stack([small(im).numpy() for im in imgs]),
        r21d_u8=np.stack(r21d_u8),
        r21d_small=np.stack([r21d_small(im).numpy() for im in imgs]),
    )


def vggish_fixture(torchvggish: str):
    import torch

    sys.modules.setdefault("resampy", types.ModuleType("resampy"))
    sys.modules.setdefault("soundfile", types.ModuleType("soundfile"))
    sys.path.insert(0, torchvggish)
    from torchvggish import vggish as tv_vggish
    from torchvggish import vggish_input

    wave = testing.test_waveform(2.0)
    examples = vggish_input.waveform_to_examples(wave, 16000, return_tensor=False)
    model = tv_vggish.VGG(tv_vggish.make_layers())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = testing.random_state_dict("vggish", 0, shapes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model.eval()
    pca = testing.random_pca(0)
    post = tv_vggish.Postprocessor()
    post.load_state_dict(
        {
            "pca_eigen_vectors": torch.from_numpy(pca["pca_eigen_vectors"]),
            "pca_means": torch.from_numpy(pca["pca_means"].reshape(-1, 1)),
        }
    )
    with torch.no_grad():
        x = torch.from_numpy(examples)[:, None].float()
        emb = model(x)
        # fc2 without its ReLU (the TF code since 2020).
        feats = model.features(x).permute(0, 2, 3, 1).reshape(len(x), -1)
        pre_relu = model.embeddings[:-1](feats)
        quantized = post(emb)
    with open(os.path.join(OUT, "vggish_keys.json"), "w") as f:
        json.dump({k: list(v) for k, v in shapes.items()}, f, indent=0, sort_keys=True)
    np.savez_compressed(
        os.path.join(OUT, "vggish.npz"),
        waveform_sum=wave.sum(),
        examples=examples,
        embedding=emb.numpy(),
        embedding_no_relu=pre_relu.numpy(),
        postprocessed=quantized.numpy(),
    )


def resnet_fixture():
    import torch
    import torchvision

    model = torchvision.models.resnet152(weights=None)
    write_keys("resnet152", model)
    load_random(model, "resnet152")
    model.fc = torch.nn.Identity()  # pretrainedmodels: last_linear = utils.Identity()
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    np.savez_compressed(os.path.join(OUT, "resnet152.npz"), input=x, output=y)


def r2plus1d_fixture():
    import torch
    import torchvision

    model = torchvision.models.video.r2plus1d_18(weights=None)
    write_keys("r2plus1d_18", model)
    load_random(model, "r2plus1d_18")
    trunk = torch.nn.Sequential(*list(model.children())[:-1])  # extract_3D_feat.py
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 32, 32)).astype(np.float32)
    with torch.no_grad():
        y = trunk(torch.from_numpy(x)).squeeze(-1).squeeze(-1).squeeze(-1).numpy()
    np.savez_compressed(os.path.join(OUT, "r2plus1d_18.npz"), input=x, output=y)


def pth_fixture():
    import collections

    import torch

    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    state = collections.OrderedDict(
        [
            ("conv.weight", torch.randn(2, 3, 3, 3, generator=g)),
            ("conv.bias", torch.randn(2, generator=g)),
            ("bn.num_batches_tracked", torch.tensor(7)),
            ("half", torch.randn(5, generator=g).half()),
            ("double", torch.randn(3, generator=g).double()),
            ("transposed", base.t()),  # non-contiguous view
            ("slice", base[1:3, 2:5]),  # offset into a shared storage
            ("ints", torch.arange(6, dtype=torch.int32).reshape(2, 3)),
        ]
    )
    torch.save(state, os.path.join(OUT, "pth_zip.pth"))
    torch.save(state, os.path.join(OUT, "pth_legacy.pth"), _use_new_zipfile_serialization=False)
    np.savez_compressed(
        os.path.join(OUT, "pth_expected.npz"), **{k: v.numpy() for k, v in state.items()}
    )
    # numpy arrays pickled inside a checkpoint (as torchvggish's PCA parameters file)
    torch.save(
        {
            "pca_eigen_vectors": np.arange(6, dtype=np.float32).reshape(2, 3),
            "pca_means": np.array([0.5, -1.0], np.float64),
        },
        os.path.join(OUT, "pth_numpy.pth"),
    )


def han_frames_fixture(han: str):
    """The frames HAN's ffmpeg -r 8 kept of its example video: for each of the 82 JPEGs
    of data/LLP_dataset/frame/BjCEufrlXm4, the decoded frame it is closest to."""
    import glob

    import av
    from PIL import Image

    video = os.path.join(han, "data", "LLP_dataset", "video", "BjCEufrlXm4.mp4")
    with av.open(video) as c:
        stream = c.streams.video[0]
        rate = float(stream.guessed_rate)
        frames, times = [], []
        for f in c.decode(stream):
            frames.append(f.to_ndarray(format="rgb24").astype(np.float32))
            times.append(float(f.pts * f.time_base))
    frames = np.stack(frames)
    chosen = []
    for path in sorted(
        glob.glob(os.path.join(han, "data", "LLP_dataset", "frame", "BjCEufrlXm4", "*.jpg"))
    ):
        jpg = np.asarray(Image.open(path).convert("RGB"), np.float32)
        chosen.append(int(((frames - jpg) ** 2).mean(axis=(1, 2, 3)).argmin()))
    with open(os.path.join(OUT, "han_example_frames.json"), "w") as f:
        json.dump({"video": "BjCEufrlXm4.mp4", "rate": rate, "times": times, "chosen": chosen}, f)


def moviepy_fixture():
    """moviepy 1.0.3's write_audiofile(fps=16000) (extract_audio.py) of a 10.03 s,
    44.1 kHz stereo WAV whose samples encode their own index: the source index
    behind every 16 kHz output sample."""
    import tempfile

    from moviepy.editor import AudioFileClip
    from scipy.io import wavfile

    n = int(44100 * 10.03) + 500
    i = np.arange(n)
    src = np.stack([i % 30000 - 15000, i // 30000 - 15000], axis=1).astype(np.int16)
    with tempfile.TemporaryDirectory() as d:
        wavfile.write(os.path.join(d, "src.wav"), 44100, src)
        clip = AudioFileClip(os.path.join(d, "src.wav"))
        duration = clip.duration
        clip.write_audiofile(os.path.join(d, "out.wav"), fps=16000, logger=None)
        _, out = wavfile.read(os.path.join(d, "out.wav"))
    out = out.astype(np.int64)
    index = (out[:, 0] + 15000) + 30000 * (out[:, 1] + 15000)
    delay = np.round(44100 * np.arange(len(index)) / 16000).astype(np.int64) - index
    np.savez_compressed(
        os.path.join(OUT, "moviepy_audio.npz"),
        source_samples=n,
        duration=duration,
        delay=delay.astype(np.int16),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--torchvggish",
        required=True,
        help="checkout of harritaylor/torchvggish (the folder holding torchvggish/)",
    )
    parser.add_argument(
        "--han",
        help="checkout of YapengTian/AVVP-ECCV20 (its example video and "
        "frames): writes han_example_frames.json",
    )
    parser.add_argument(
        "--moviepy",
        action="store_true",
        help="also write moviepy_audio.npz (needs moviepy==1.0.3 and scipy)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    for step in (
        preprocess_fixture,
        lambda: vggish_fixture(args.torchvggish),
        resnet_fixture,
        r2plus1d_fixture,
        pth_fixture,
    ):
        step()
    if args.han:
        han_frames_fixture(args.han)
    if args.moviepy:
        moviepy_fixture()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
