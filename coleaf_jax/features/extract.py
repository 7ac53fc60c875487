"""Video files -> HAN's three features, batched and jitted (on the GPU when there is one).

For a video of ``T`` one-second segments (:func:`decode.num_segments`):

* ``audio (T, 128)``: VGGish of ``T`` log-mel examples (``preprocess.vggish_examples``);
* ``video_2d (8T, 2048)``: ResNet-152 of ``8T`` frames chosen among the 8-fps
  frames by ``np.round(np.linspace(0, K - 1, 8T))`` (HAN: 80 of about 82);
* ``video_3d (T, 512)``: R(2+1)D-18 of the same ``8T`` frames, 8 consecutive
  ones per clip.

Decoding (CPU: FFmpeg, PIL; ``workers`` threads) of the next videos overlaps
the networks' work on the current one. The networks run in fixed-size batches (one compiled
program each, whatever the video's length).

``T`` comes from the duration :func:`decode.decode` settles on: the header's for
a whole file, the streams' for one cut short or whose header lies (then
:attr:`VideoFeatures.warnings` says so; :meth:`Extractor.extract_many` prints
each warning as ``warning: ...``). Every video is capped at ``max_seconds``
(:data:`decode.DEFAULT_MAX_SECONDS`): decoding, and with it memory, stops there.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import io
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
from tqdm import tqdm

from coleaf_jax import fileio
from coleaf_jax import progress as progress_lib
from coleaf_jax.features import decode, preprocess, r2plus1d, resnet, vggish, weights

MODEL_NAMES = ("vggish", "resnet152", "r2plus1d_18")
LLP_FOLDERS = {"audio": "vggish", "video_2d": "res152", "video_3d": "r2plus1d_18"}


@dataclasses.dataclass(frozen=True)
class Options:
    """Extraction settings; the defaults reproduce HAN's released LLP features.

    ``vggish_relu``: keep fc2's ReLU (the VGGish of 2018 that HAN's linked
    extractor used); ``vggish_postprocess``: ``'none'`` (HAN: the raw
    embedding) or ``'pca'`` (AudioSet's PCA + 8-bit quantisation, needs the
    PCA parameters); ``jpeg``: HAN's JPEG round trip of the frames;
    ``frame_batch`` / ``clip_batch`` / ``example_batch``: batch sizes of
    ResNet-152 (frames), R(2+1)D-18 (8-frame clips) and VGGish (examples);
    ``precision``: matmul/convolution precision (``'highest'``: float32 as the
    reference; ``'default'`` lets a GPU use TF32). ``resnet_crop`` /
    ``r21d_size``: frame sizes (HAN: 224, resized from 256, and 112); other
    sizes do not reproduce HAN's features (quick checks and tests).
    """

    vggish_relu: bool = True
    vggish_postprocess: str = "none"
    jpeg: bool = True
    frame_batch: int = 40
    clip_batch: int = 5
    example_batch: int = 10
    precision: str = "highest"
    resnet_crop: int = preprocess.RESNET_SIZE
    r21d_size: int = preprocess.R21D_SIZE

    def __post_init__(self):
        if self.vggish_postprocess not in ("none", "pca"):
            raise ValueError(
                f"vggish_postprocess = {self.vggish_postprocess!r}: expected 'none' or 'pca'"
            )
        if self.precision not in ("highest", "high", "default"):
            raise ValueError(f"precision = {self.precision!r}: expected highest, high or default")
        if self.resnet_crop < 32 or self.r21d_size < 16:
            raise ValueError(
                f"frame sizes {self.resnet_crop} / {self.r21d_size}: expected at "
                f"least 32 (ResNet-152) and 16 (R(2+1)D-18)"
            )
        for name in ("frame_batch", "clip_batch", "example_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)}: expected at least 1")


@dataclasses.dataclass
class VideoFeatures:
    """One video's features (float32) and what they were made from."""

    id: str
    path: str
    duration: float
    audio: np.ndarray  # (T, 128)
    video_2d: np.ndarray  # (8T, 2048)
    video_3d: np.ndarray  # (T, 512)
    frames_decoded: int = 0
    seconds: dict = dataclasses.field(default_factory=dict)
    declared_duration: float | None = None  # the header's (decode.DecodedVideo)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_segments(self) -> int:
        return len(self.audio)

    def record(self) -> dict:
        """What the outputs record of the video: path, duration, segments, frames; the
        header's duration and the warnings when the file did not hold what it declared."""
        out = {
            "path": os.path.abspath(self.path),
            "duration": self.duration,
            "num_segments": self.num_segments,
            "frames_8fps": self.frames_decoded,
        }
        if self.declared_duration is not None and self.declared_duration != self.duration:
            out["declared_duration"] = self.declared_duration
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def video_id(path: str) -> str:
    """A video's id: its file name without the extension."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]


def check_ids(paths: list[str]) -> None:
    """Videos must have distinct ids (file stems): they name the output files."""
    seen: dict[str, str] = {}
    for p in paths:
        vid = video_id(p)
        if vid in seen:
            raise ValueError(
                f"{seen[vid]} and {p} have the same id {vid!r} (the file name without "
                f"its extension names the outputs): rename one"
            )
        seen[vid] = p


def _frame_fn(options: Options):
    crop, r21d = options.resnet_crop, options.r21d_size
    resize = int(crop / preprocess.RESNET_SCALE)  # floor(224 / 0.875) = 256

    def fn(image):
        return preprocess.resnet_frame(image, resize, crop), preprocess.r21d_frame(image, r21d)

    return fn


@dataclasses.dataclass
class Decoded:
    """A decoded video, ready for the networks (uint8 frames, float32 examples)."""

    path: str
    duration: float
    frames_decoded: int
    resnet_frames: np.ndarray  # (8T, 224, 224, 3) uint8
    clips: np.ndarray  # (T, 8, 112, 112, 3) uint8
    examples: np.ndarray  # (T, 96, 64) float32
    seconds: float
    declared_duration: float | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)


def prepare(
    path: str, options: Options = Options(), max_seconds: float = decode.DEFAULT_MAX_SECONDS
) -> Decoded:
    """Decodes ``path`` (at most ``max_seconds``: :func:`decode.decode`) and prepares the
    three networks' inputs (CPU)."""
    start = time.perf_counter()
    d = decode.decode(path, _frame_fn(options), jpeg=options.jpeg, max_seconds=max_seconds)
    t = d.num_segments
    idx = decode.han_sample(len(d.frames), preprocess.R21D_CLIP * t)
    resnet_frames = np.stack([d.frames[i][0] for i in idx])
    clips = np.stack([d.frames[i][1] for i in idx]).reshape(
        t, preprocess.R21D_CLIP, options.r21d_size, options.r21d_size, 3
    )
    examples = preprocess.vggish_examples(d.audio, t)
    return Decoded(
        d.path,
        d.duration,
        len(d.frames),
        resnet_frames,
        clips,
        examples,
        time.perf_counter() - start,
        d.declared_duration,
        list(d.warnings),
    )


def _batched(fn, variables, x: np.ndarray, batch: int) -> np.ndarray:
    """``fn(variables, chunk)`` over ``x`` in chunks of ``batch`` (the last one padded); a
    short input uses the smallest power of two that holds it, so few shapes compile."""

    batch = min(batch, 1 << max(0, int(np.ceil(np.log2(max(len(x), 1))))))
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], chunk.dtype)])
        outs.append(fn(variables, chunk)[:n])
    return np.asarray(jax.device_get(jax.numpy.concatenate(outs)), np.float32)


@functools.cache
def _networks(precision: str, vggish_relu: bool, pca: bool):
    """The three jitted networks (weights are arguments: every :class:`Extractor` with
    these settings shares their compiled programs)."""

    res = resnet.ResNet152(precision=precision)
    r21d = r2plus1d.R2Plus1D18(precision=precision)
    vgg = vggish.VGGish(relu_embedding=vggish_relu, precision=precision)

    def resnet_fn(v, frames):
        x = preprocess.normalize(frames, preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)
        return res.apply(v, x)

    def r21d_fn(v, clips):
        x = preprocess.normalize(clips, preprocess.KINETICS_MEAN, preprocess.KINETICS_STD)
        return r21d.apply(v, x)

    def vggish_fn(v, examples):
        emb = vgg.apply(v["net"], examples)
        if pca:
            emb = vggish.postprocess(emb, v["pca"]["pca_eigen_vectors"], v["pca"]["pca_means"])
        return emb

    # The networks are compute-bound: on a CPU they are compiled at XLA's full backend
    # optimisation whatever XLA_FLAGS says (the test suite lowers it to save compile
    # time; the convolutions then run about 7 times slower).
    opts = {"xla_backend_optimization_level": 3} if jax.default_backend() == "cpu" else None
    return (
        jax.jit(resnet_fn, compiler_options=opts),
        jax.jit(r21d_fn, compiler_options=opts),
        jax.jit(vggish_fn, compiler_options=opts),
    )


class Extractor:
    """The three networks with their weights, jitted.

    ``Extractor(weights_dir)`` loads (converting if needed) every model's
    weights first, so a missing checkpoint fails before any video is decoded
    (:class:`weights.MissingWeightsError` says what to download). ``variables``
    (``{model: variables}``) bypasses the folder (tests).
    """

    def __init__(
        self,
        weights_dir: str | None,
        options: Options = Options(),
        *,
        variables: dict | None = None,
        verbose: bool = True,
    ):

        self.options = options
        needed = list(MODEL_NAMES) + (["vggish_pca"] if options.vggish_postprocess == "pca" else [])
        loaded = dict(variables or {})
        for name in needed:
            if name not in loaded:
                loaded[name] = weights.load(weights_dir, name, verbose=verbose)
        self.variables = {k: jax.device_put(v) for k, v in loaded.items() if k in needed}
        self._resnet, self._r21d, self._vggish = _networks(
            options.precision, options.vggish_relu, options.vggish_postprocess == "pca"
        )
        post = options.vggish_postprocess == "pca"
        self._vggish_vars = {"net": self.variables["vggish"]}
        if post:
            self._vggish_vars["pca"] = self.variables["vggish_pca"]

    def run(self, d: Decoded) -> VideoFeatures:
        """The networks on a prepared video."""
        o = self.options
        start = time.perf_counter()
        audio = _batched(self._vggish, self._vggish_vars, d.examples, o.example_batch)
        video_2d = _batched(
            self._resnet, self.variables["resnet152"], d.resnet_frames, o.frame_batch
        )
        video_3d = _batched(self._r21d, self.variables["r2plus1d_18"], d.clips, o.clip_batch)
        return VideoFeatures(
            video_id(d.path),
            d.path,
            d.duration,
            audio,
            video_2d,
            video_3d,
            d.frames_decoded,
            {"decode": d.seconds, "networks": time.perf_counter() - start},
            d.declared_duration,
            list(d.warnings),
        )

    def extract(self, path: str, max_seconds: float = decode.DEFAULT_MAX_SECONDS) -> VideoFeatures:
        """One video's features."""
        return self.run(prepare(path, self.options, max_seconds))

    def extract_many(
        self,
        paths: Iterable[str],
        progress: bool = True,
        workers: int = 1,
        max_seconds: float = decode.DEFAULT_MAX_SECONDS,
    ) -> Iterator[VideoFeatures]:
        """Features of ``paths`` in order. ``workers`` threads decode the next videos while
        the networks run on the current one (FFmpeg and PIL release the GIL; on a GPU
        decoding is the bottleneck: give it the CPU's cores). A bar on a terminal, one
        line per video otherwise; a video's warnings (:func:`decode.decode`: a file
        shorter than its header declares, skipped packets) as ``warning: ...`` lines on
        stderr, with or without ``progress``."""

        paths = [os.fspath(p) for p in paths]
        prepared = prefetched(
            lambda p: prepare(p, self.options, max_seconds), paths, max(1, workers)
        )
        bar = progress_lib.bar(prepared, total=len(paths), desc="extracting", enabled=progress)
        for i, d in enumerate(bar, start=1):
            print_warnings(d.warnings)
            f = self.run(d)
            if progress and bar.disable:  # asked for progress, but not on a terminal
                print(
                    f"[{i}/{len(paths)}] {f.path}: {f.num_segments} segments "
                    f"({f.duration:.2f} s), decoded in {f.seconds['decode']:.1f} s, networks "
                    f"{f.seconds['networks']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            elif not bar.disable:
                bar.set_postfix(video=f.id)
            yield f
        bar.close()


def print_warnings(warnings: Iterable[str]) -> None:
    """``warning: ...`` on stderr, one line each (above a progress bar when one is shown)."""
    for w in warnings:
        tqdm.write("warning: " + " ".join(str(w).split()), file=sys.stderr)


def prefetched(fn, items: list, workers: int) -> Iterator:
    """``fn(item)`` for ``items`` in order, computed by ``workers`` threads up to
    ``workers + 1`` items ahead; an exception is raised when its item is reached."""

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coleaf-decode") as pool:
        pending = collections.deque()
        it = iter(items)
        try:
            for item in itertools.islice(it, workers + 1):
                pending.append(pool.submit(fn, item))
            while pending:
                result = pending.popleft().result()
                for item in itertools.islice(it, 1):
                    pending.append(pool.submit(fn, item))
                yield result
        finally:
            for f in pending:
                f.cancel()


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` of ``array``, written whole or not at all (``fileio``)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    fileio.atomic_write_bytes(path, buffer.getvalue())


def write_llp(features: VideoFeatures, root: str) -> dict[str, str]:
    """Writes ``ROOT/vggish/<id>.npy``, ``ROOT/res152/<id>.npy``, ``ROOT/r2plus1d_18/<id>.npy``
    (float32, each whole or not at all); returns the paths by feature key."""
    out = {}
    for key, folder in LLP_FOLDERS.items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        path = os.path.join(root, folder, f"{features.id}.npy")
        save_npy(path, getattr(features, key).astype(np.float32))
        out[key] = path
    return out


def stack_features(videos: list[VideoFeatures], pool_frames: bool = False) -> dict[str, np.ndarray]:
    """Videos of any lengths as one split for the models: ``audio (N, T, 128)``,
    ``video_2d (N, 8T or T, 2048)`` (``pool_frames``: each second's 8 frames
    averaged), ``video_3d (N, T, 512)`` padded with zeros to the longest ``T``,
    ``mask (N, T)`` and ``id``."""
    t = max(v.num_segments for v in videos)
    n = len(videos)
    per = preprocess.R21D_CLIP
    audio = np.zeros((n, t, videos[0].audio.shape[1]), np.float32)
    frames = np.zeros((n, t * per, videos[0].video_2d.shape[1]), np.float32)
    clips = np.zeros((n, t, videos[0].video_3d.shape[1]), np.float32)
    mask = np.zeros((n, t), bool)
    for i, v in enumerate(videos):
        k = v.num_segments
        audio[i, :k], frames[i, : k * per], clips[i, :k], mask[i, :k] = (
            v.audio,
            v.video_2d,
            v.video_3d,
            True,
        )
    if pool_frames:
        frames = frames.reshape(n, t, per, -1).mean(2)
    return {
        "audio": audio,
        "video_2d": frames,
        "video_3d": clips,
        "mask": mask,
        "id": np.array([v.id for v in videos], dtype=str),
    }
