"""Deterministic inputs for the extractors' tests and fixtures (no torch needed).

* :func:`random_state_dict`: a state dict with the public checkpoint's key
  names and shapes (``convert.torch_shapes``) and random values drawn with
  numpy's PCG64, so ``tools/make_feature_fixtures.py`` (torch, torchvision,
  torchvggish) and the tests (flax) use the very same weights without
  storing them. Scales keep a 152-layer network's activations of order one.
* :func:`test_waveform`, :func:`test_frames`: small audio / image inputs.
* :func:`write_test_video`: a video file with coloured frames and a tone
  (PyAV), with or without an audio track.
* :func:`cut_file`, :func:`declare_duration`: damaged and lying files made from
  real ones: the first bytes of a file (a download cut short), and a Matroska
  file whose header declares another duration than its streams hold.
* :func:`write_crafted_mkv`, :func:`write_mp4_boxes`: hostile files: a last frame
  lasting hours, audio starting late or held in one huge PCM packet at an odd rate;
  an MP4 of many empty boxes.
* :func:`write_pth`: a state dict saved in torch's zip format (``torch.save``'s
  layout, written with the pickle opcodes themselves: no torch), so the tests can
  put "downloaded" checkpoints in a weights folder.
* :func:`write_teacher_weights`: small random CLIP and CLAP teachers (converted) and
  byte-level tokenizer files in a weights folder (``--features valor`` in tests).
"""

from __future__ import annotations

import fractions
import json
import os
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax.features import clap, clip, weights


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
    audio_seconds: float | None = None,
    faststart: bool = False,
) -> str:
    """Writes a video of ``seconds`` with frames whose colour changes every second and a
    sine tone (``audio``; ``audio_seconds`` long, default ``seconds``), with PyAV; returns
    ``path``. ``size`` is (width, height); ``faststart``: an MP4's index (``moov``) before
    its media data, as for streaming (FFmpeg's default writes it last)."""
    import av

    width, height = size
    options = {"movflags": "faststart"} if faststart else None
    with av.open(path, "w", options=options) as out:
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
            n = int(round((seconds if audio_seconds is None else audio_seconds) * sample_rate))
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


def cut_file(path: str, out: str, fraction: float = 0.5) -> str:
    """Writes the first ``fraction`` of ``path``'s bytes to ``out`` (a download or copy cut
    short); returns ``out``."""
    with open(path, "rb") as f:
        data = f.read()
    with open(out, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return out


MKV_DURATION_ID = b"\x44\x89"  # Segment > Info > Duration (float, in TimestampScale units)
MKV_TIMESTAMP_SCALE_ID = b"\x2a\xd7\xb1"  # Segment > Info > TimestampScale (ns, default 1e6)


def declare_duration(path: str, seconds: float) -> str:
    """Rewrites, in place, the duration a Matroska/WebM file's header declares (its
    ``Info/Duration`` element, the one FFmpeg reports) to ``seconds``; the streams are left
    as they are: a header that lies. Returns ``path``."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    scale = 1_000_000
    at = data.find(MKV_TIMESTAMP_SCALE_ID)
    if at >= 0 and 0x81 <= data[at + 3] <= 0x88:
        size = data[at + 3] - 0x80
        scale = int.from_bytes(data[at + 4 : at + 4 + size], "big")
    at = data.find(MKV_DURATION_ID + b"\x88")
    fmt, size = ">d", 8
    if at < 0:
        at, fmt, size = data.find(MKV_DURATION_ID + b"\x84"), ">f", 4
    if at < 0:
        raise ValueError(f"{path}: no Matroska Duration element found")
    data[at + 3 : at + 3 + size] = struct.pack(fmt, seconds * 1e9 / scale)
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_crafted_mkv(
    path: str,
    *,
    frames: int = 16,
    fps: int = 8,
    declared: float | None = None,
    last_frame_seconds: float | None = None,
    audio_rate: int | None = None,
    audio_seconds: float = 0.0,
    audio_start: float = 0.0,
    audio_packet_samples: int | None = None,
) -> str:
    """Writes a hostile Matroska file with PyAV: ``frames`` small grey frames at ``fps``
    (MPEG-4), the last packet's duration set to ``last_frame_seconds`` when given, and with
    ``audio_rate``, ``audio_seconds`` of a 16-bit PCM stereo tone at that rate whose first
    sample is at ``audio_start`` seconds, in packets of ``audio_packet_samples`` (default:
    all in one packet, as one frame for the decoder). Its header then declares
    ``declared`` seconds (default ``frames / fps``; :func:`declare_duration`). Returns
    ``path``."""
    import av

    with av.open(path, "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.time_base = fractions.Fraction(1, fps)
        sound = None
        if audio_rate:
            sound = out.add_stream("pcm_s16le", rate=audio_rate)
            sound.layout = "stereo"
        packets = []
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), "rgb24")
            frame.pts = i
            packets += video.encode(frame)
        packets += video.encode(None)
        if last_frame_seconds is not None:
            last = max((p for p in packets if p.pts is not None), key=lambda p: p.pts)
            last.duration = int(round(last_frame_seconds / float(last.time_base)))
        for packet in packets:
            out.mux(packet)
        if sound is not None:
            n = int(round(audio_seconds * audio_rate))
            tone = np.round(8000 * np.sin(2 * np.pi * 440 * np.arange(n) / audio_rate))
            stereo = np.stack([tone, -tone], axis=1).astype(np.int16).reshape(1, -1)
            step = audio_packet_samples or max(n, 1)
            for start in range(0, n, step):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(stereo[:, 2 * start : 2 * (start + step)]),
                    format="s16",
                    layout="stereo",
                )
                frame.sample_rate = audio_rate
                frame.time_base = fractions.Fraction(1, audio_rate)
                frame.pts = int(round(audio_start * audio_rate)) + start
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return declare_duration(path, frames / fps if declared is None else declared)


def write_mp4_boxes(path: str, boxes: int, kind: bytes = b"free") -> str:
    """Writes ``boxes`` empty top-level MP4 boxes of ``kind`` (8 bytes each), then the
    start of a media data box (``mdat``) declaring more bytes than the file holds: an MP4
    cut short before its index, behind any number of boxes. Returns ``path``."""
    with open(path, "wb") as f:
        f.write(((8).to_bytes(4, "big") + kind) * boxes)
        f.write((1 << 20).to_bytes(4, "big") + b"mdat" + bytes(64))
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


# Small teachers for tests (not VALOR's models: random weights, tiny widths).
SMALL_CLIP_VOCAB = 2 * 256 + 2  # byte-level characters, with and without </w>; bos, eos


def _byte_chars() -> list[str]:
    """GPT-2's ``bytes_to_unicode``: one printable character per byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def small_teacher_configs():
    """``(clip config, clap config)`` of :func:`write_teacher_weights`."""
    clip_config = clip.CLIPConfig(
        vision=clip.VisionConfig(
            image_size=32, patch_size=8, width=16, layers=1, heads=2, mlp_dim=32
        ),
        text=clip.TextConfig(
            vocab_size=SMALL_CLIP_VOCAB, context_length=77, width=16, layers=1, heads=2, mlp_dim=32
        ),
        projection_dim=8,
    )
    clap_config = clap.CLAPConfig(
        clap.AudioConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), class_num=7),
        clap.TextConfig(
            vocab_size=261, hidden=16, layers=1, heads=2, intermediate=32, max_positions=80
        ),
        joint_embed=8,
        enable_fusion=True,
    )
    return clip_config, clap_config


def write_teacher_weights(folder: str, seed: int = 0, configs=None) -> None:
    """Random CLIP and CLAP teachers (``configs``: ``(clip config, clap config)``, default
    :func:`small_teacher_configs`) saved as converted weights in ``folder``, with byte-level
    tokenizer files (every text tokenises; no merges) in ``folder/clip-vit-large-patch14/``
    and ``folder/roberta-base/``."""
    clip_config, clap_config = configs or small_teacher_configs()
    k1, k2 = jax.random.split(jax.random.key(seed))
    size = clip_config.vision.image_size
    clip_vars = _random_variables(
        clip.CLIP(clip_config).init,
        k1,
        jnp.zeros((1, size, size, 3)),
        jnp.zeros((1, 77), jnp.int32),
    )
    clap_vars = _random_variables(
        clap.CLAP(clap_config).init,
        k2,
        jnp.zeros((1, clap_config.audio.clip_samples)),
        jnp.zeros((1, 77), jnp.int32),
        jnp.ones((1, 77), jnp.int32),
    )
    # scales as the public checkpoints' (CLIP's 100; CLAP's at most 100), so random
    # embeddings cross some of VALOR's thresholds
    clip_vars["params"]["logit_scale"] = np.float32(np.log(100.0))
    clap_vars["params"]["logit_scale_a"] = np.float32(np.log(100.0))
    weights.save_converted(folder, "clip", clip_vars, config=clip_config)
    weights.save_converted(folder, "clap", clap_vars, config=clap_config)
    chars = _byte_chars()
    clip_dir = os.path.join(folder, "clip-vit-large-patch14")
    os.makedirs(clip_dir, exist_ok=True)
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    _write_tokenizer_files(clip_dir, vocab)
    roberta_dir = os.path.join(folder, "roberta-base")
    os.makedirs(roberta_dir, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({c: 4 + i for i, c in enumerate(chars)})
    vocab["<mask>"] = 260
    _write_tokenizer_files(roberta_dir, vocab)


def _random_variables(init, key, *inputs) -> dict:
    """Variables with ``init``'s structure and shapes (found without compiling it) and
    random values of a trained network's scale: kernels and embeddings ``N(0, 1/fan_in)``,
    biases ``N(0, 0.02)``, norm scales ``1 + N(0, 0.1)``, running variances 1, means 0."""
    shapes = jax.eval_shape(init, key, *inputs)
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))

    def draw(path, leaf) -> np.ndarray:
        name = str(path[-1].key) if hasattr(path[-1], "key") else str(path[-1])
        shape = leaf.shape
        if name == "var":
            return np.ones(shape, np.float32)
        if name == "mean":
            return np.zeros(shape, np.float32)
        if name == "scale":
            return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        if name == "bias" or len(shape) <= 1:
            return (0.02 * rng.standard_normal(shape)).astype(np.float32)
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _write_tokenizer_files(folder: str, vocab: dict[str, int]) -> None:
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
