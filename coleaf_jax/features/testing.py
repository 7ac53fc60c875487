"""Deterministic inputs for the extractors' tests and fixtures (no torch needed).

* :func:`random_state_dict`: a state dict with the public checkpoint's key
  names and shapes (``convert.torch_shapes``) and random values drawn with
  numpy's PCG64, so ``tools/make_feature_fixtures.py`` (torch, torchvision,
  torchvggish) and the tests (flax) use the very same weights without
  storing them. Scales keep a 152-layer network's activations of order one.
* :func:`test_waveform`, :func:`test_frames`: small audio / image inputs.
* :func:`write_test_video`: a video file with coloured frames and a tone
  (PyAV), with or without an audio track.
* :func:`write_pth`: a state dict saved in torch's zip format (``torch.save``'s
  layout, written with the pickle opcodes themselves: no torch), so the tests can
  put "downloaded" checkpoints in a weights folder.
"""

from __future__ import annotations

import fractions
import struct
import zipfile

import numpy as np


def _is_bn(key: str, state_keys) -> bool:
    stem = key.rsplit(".", 1)[0]
    return f"{stem}.running_var" in state_keys


def _last_bn_of_branch(name: str, key: str) -> bool:
    """Batch norms that close a residual branch: drawn small so the sum of 50 branches
    stays of order one (as trained networks' are)."""
    if name == "resnet152":
        return ".bn3." in key
    if name == "r2plus1d_18":
        return key.split(".")[2:4] == ["conv2", "1"]
    return False


def random_state_dict(
    name: str, seed: int = 0, shapes: dict | None = None
) -> dict[str, np.ndarray]:
    """Random float32 weights for ``name`` (``'resnet152'``, ``'r2plus1d_18'``,
    ``'vggish'``), keyed as the public checkpoints (classifier left out).

    ``shapes`` (``{key: shape}``) defaults to ``convert.torch_shapes(name)``; the
    fixture script passes the torch model's own (this module needs only numpy).
    """
    if shapes is None:
        from coleaf_jax.features import convert

        shapes = convert.torch_shapes(name)
    rng = np.random.default_rng(seed)
    keys = sorted(shapes)
    out = {}
    for key in keys:
        shape = shapes[key]
        if _is_bn(key, shapes):
            field = key.rsplit(".", 1)[1]
            if field == "weight":
                lo, hi = (0.1, 0.3) if _last_bn_of_branch(name, key) else (0.6, 1.0)
                v = rng.uniform(lo, hi, shape)
            elif field == "bias":
                v = rng.normal(0.0, 0.1, shape)
            elif field == "running_mean":
                v = rng.normal(0.0, 0.1, shape)
            else:
                v = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bias"):
            v = rng.normal(0.0, 0.01, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            v = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        out[key] = np.asarray(v, np.float32)
    return out


def random_pca(seed: int = 0) -> dict[str, np.ndarray]:
    """Random PCA parameters of VGGish's post-processor's shapes."""
    rng = np.random.default_rng(seed)
    return {
        "pca_eigen_vectors": (rng.standard_normal((128, 128)) / 8).astype(np.float32),
        "pca_means": rng.normal(0.0, 0.5, 128).astype(np.float32),
    }


def test_waveform(seconds: float = 2.5, seed: int = 0, channels: int = 2) -> np.ndarray:
    """``(S, channels)`` float64 16 kHz test audio: two tones, a chirp and noise, in
    16-bit steps (as a WAV file read back)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000.0
    mono = (
        0.3 * np.sin(2 * np.pi * 440 * t)
        + 0.2 * np.sin(2 * np.pi * 1500 * t)
        + 0.1 * np.sin(2 * np.pi * (200 + 800 * t) * t)
        + 0.05 * rng.standard_normal(len(t))
    )
    wave = np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return np.round(np.clip(wave, -1, 1) * 32767) / 32768.0


def test_frames(count: int = 2, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """``(count, H, W, 3)`` uint8 smooth random images (gradients plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    out = []
    for i in range(count):
        base = np.stack(
            [(x * (3 + i) + y * 2) % 256, (y * (5 + i)) % 256, (x + y * (1 + i)) * 2 % 256], axis=-1
        )
        out.append(np.clip(base + rng.normal(0, 12, base.shape), 0, 255))
    return np.asarray(out, np.uint8)


def write_test_video(
    path: str,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    fps: int = 25,
    audio: bool = True,
    codec: str = "mpeg4",
    audio_codec: str = "aac",
    sample_rate: int = 44100,
    tone_hz: float = 440.0,
) -> str:
    """Writes a video of ``seconds`` with frames whose colour changes every second and a
    sine tone (``audio``), with PyAV; returns ``path``. ``size`` is (width, height)."""
    import av

    width, height = size
    with av.open(path, "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio:
            sound = out.add_stream(audio_codec, rate=sample_rate, layout="stereo")
        colours = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 60, 200)]
        for i in range(int(round(seconds * fps))):
            c = colours[int(i / fps) % len(colours)]
            img = np.empty((height, width, 3), np.uint8)
            img[:] = c
            img[:, : max(1, (i % fps) * width // fps)] //= 2  # a moving edge
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            n = int(round(seconds * sample_rate))
            t = np.arange(n) / sample_rate
            tone = (0.4 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            chunk = 1024
            for start in range(0, n, chunk):
                block = tone[start : start + chunk]
                frame = av.AudioFrame.from_ndarray(
                    np.stack([block, block], axis=1).reshape(1, -1), format="flt", layout="stereo"
                )
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = fractions.Fraction(1, sample_rate)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


_PTH_STORAGES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.int64): "LongStorage",
}


def _pickle_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _pickle_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _pickle_tuple(values) -> bytes:
    return b"(" + b"".join(_pickle_int(int(v)) for v in values) + b"t"  # MARK ... TUPLE


def write_pth(path: str, state: dict[str, np.ndarray]) -> str:
    """Saves ``state`` as ``torch.save(OrderedDict of tensors)`` does (zip format: the
    pickle in ``archive/data.pkl``, one raw little-endian storage per tensor in
    ``archive/data/<i>``); float32, float64 and int64 arrays. Returns ``path``."""
    ordered_dict = b"ccollections\nOrderedDict\n)R"  # GLOBAL, EMPTY_TUPLE, REDUCE
    body = [b"\x80\x02", ordered_dict]
    storages = []
    for i, (key, value) in enumerate(state.items()):
        a = np.asarray(value, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        storage = _PTH_STORAGES[a.dtype]
        strides = [s // a.itemsize for s in a.strides] if a.ndim else []
        persistent_id = (
            b"("
            + _pickle_str("storage")
            + f"ctorch\n{storage}\n".encode()
            + _pickle_str(str(i))
            + _pickle_str("cpu")
            + _pickle_int(a.size)
            + b"tQ"  # TUPLE, BINPERSID
        )
        body += [
            _pickle_str(key),
            b"ctorch._utils\n_rebuild_tensor_v2\n",
            b"(" + persistent_id + _pickle_int(0) + _pickle_tuple(a.shape),
            _pickle_tuple(strides) + b"\x89" + ordered_dict + b"tR",  # NEWFALSE; TUPLE, REDUCE
            b"s",  # SETITEM
        ]
        storages.append(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
    body.append(b".")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"".join(body))
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for i, raw in enumerate(storages):
            z.writestr(f"archive/data/{i}", raw)
    return path
