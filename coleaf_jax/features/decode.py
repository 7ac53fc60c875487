"""Decoding a video file with PyAV (FFmpeg): 8-fps frames and HAN's 16 kHz audio.

Two streams come out of a file, each prepared the way HAN's extraction
scripts prepared the released LLP features (``docs/features.md`` gives every
source line):

* **Frames** at 8 per second, exactly those of HAN's ``ffmpeg -i VIDEO -r 8
  %06d.jpg`` (``scripts/extract_frames.py``; FFmpeg 4's constant-rate
  conversion, :class:`CfrFrameRate`): about ``8 * duration`` frames (82 for
  a 10.03 s clip), through a JPEG round trip as HAN's frames were JPEG
  files (:class:`JpegRoundTrip`). Only output frames are converted
  (``frame_fn`` turns each into what the extractors need, so a long video
  never holds its full-size frames). The extractors then take ``8 T`` of
  them by :func:`han_sample`.
* **Audio** as moviepy 1.0.3 wrote HAN's WAV files
  (``scripts/extract_audio.py``: ``write_audiofile(fps=16000)``): FFmpeg
  resamples to 44.1 kHz stereo 16-bit, moviepy then takes, for the time
  ``k / 16000`` of every output sample, the 44.1 kHz sample at the nearest
  index (no low-pass filter; its reader's buffering adds a one-sample delay
  at every re-centring, :class:`_MoviepyReader`), clips to ±0.99 and
  truncates to 16 bits; VGGish reads that back as ``int16 / 32768`` and
  averages the channels.

``T = num_segments(duration)`` one-second segments: ``ceil(duration)`` with a
tail of less than one 8-fps frame (1/8 s, container or codec padding, as the
10.03 s of a 10 s LLP clip) not counted.

**Duration: measured, not trusted.** The container's header declares a
duration (what FFmpeg prints, hence what moviepy used); the streams say what
the file holds: the end of the last decoded frame (its time plus its
duration) and of the decoded audio (its first sample's time plus the samples
decoded). The measured duration is the longer of the two. When it is within
:data:`DURATION_TOLERANCE` of the header's, the header's is used, so a whole
file gives exactly the numbers it always gave (the last frame's duration,
audio priming and end padding differ by a few hundredths of a second). When
it is not (a file cut short, or a header that lies), the measured duration is
used (segments, frames, audio) and :attr:`DecodedVideo.warnings` says so,
naming the file and both durations. Packets the decoder refuses (the cut
last packet of a truncated file, a damaged one) are skipped, as the FFmpeg
command line skips them, and counted in a warning. The streams' own fields
are not trusted further than the header: a frame's duration counts up to the
header's end and past it for at most one frame interval (at most
:data:`MAX_FRAME_SECONDS`), so one frame cannot make a 2 s file last 5000 s;
streams that do hold more than the header declares (frames, or audio starting
late) are used, within the cap, with the warning.

**Length cap.** Every decode takes ``max_seconds`` (default
:data:`DEFAULT_MAX_SECONDS`; ``--max-seconds`` of the command-line tools): a
header declaring more is refused before anything is decoded
(:class:`TooLongError`), and because headers lie, decoding stops with the same
error as soon as a stream holds more than the cap (plus the tolerance): a
frame later than it, a last frame ending after it, audio whose first sample's
time plus the seconds of its decoded frames pass it (counted before a frame is
resampled). So the duration used, and what is held in memory, are bounded by
the cap whatever the header says. Audio is resampled in slices of at most
:data:`RESAMPLE_SLICE_SECONDS` (the same samples), and a sample rate outside
:data:`MIN_AUDIO_RATE` .. :data:`MAX_AUDIO_RATE` is refused, so one huge packet
cannot make gigabytes either.
"""

from __future__ import annotations

import dataclasses
import fractions
import io
import math
import os
from collections.abc import Callable

import av
import numpy as np
from PIL import Image

FPS = 8  # frames per second (extract_frames.py: ffmpeg -r 8)
SAMPLE_RATE = 16000  # Hz (extract_audio.py: write_audiofile(fps=16000))
MOVIEPY_AUDIO_RATE = 44100  # moviepy VideoFileClip(audio_fps=44100) reads audio at this rate
SEGMENT_TAIL_TOLERANCE = 1.0 / FPS  # seconds of a last segment that do not make a segment
# Header and streams agreeing within this many seconds is a whole file (module docstring).
DURATION_TOLERANCE = 0.5
DEFAULT_MAX_SECONDS = 600.0  # the length cap of every video path (--max-seconds)
# A frame's own duration (a field of the file) counts up to the header's end, and past it
# at most one frame interval of the stream, and never more than this many seconds.
MAX_FRAME_SECONDS = 1.0
# Sample rates a sound track can have (FFmpeg's resampler is refused anything else).
MIN_AUDIO_RATE, MAX_AUDIO_RATE = 1000, 768_000
# Audio is resampled in pieces of at most this many seconds of a decoded frame, so a
# frame of minutes (one PCM packet) does not make minutes of 44.1 kHz samples at once.
RESAMPLE_SLICE_SECONDS = 1.0
MP4_HINT_MAX_BOXES = 10_000  # top-level boxes _mp4_hint walks at most


class VideoError(ValueError):
    """A video that cannot be used; the message names the file."""


class NoAudioError(VideoError):
    """A video without an audio stream."""


class TooLongError(VideoError):
    """A video longer than the length cap (declared by its header, or found while decoding).

    ``seconds``: the header's duration, or how far decoding went; ``declared``: which."""

    def __init__(self, message: str, seconds: float = 0.0, declared: bool = True):
        super().__init__(message)
        self.seconds, self.declared = seconds, declared


def check_max_seconds(max_seconds: float) -> float:
    """``max_seconds`` as a positive float (a ValueError naming ``--max-seconds`` otherwise)."""
    value = float(max_seconds)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"--max-seconds {max_seconds}: expected a positive number of seconds")
    return value


def too_long_message(path: str, seconds: float, declared: bool, limit: str) -> str:
    """``PATH: its header declares S s, longer than LIMIT`` (or ``its streams hold more
    than``): :class:`TooLongError`'s message."""
    what = "its header declares" if declared else "its streams hold more than"
    return f"{path}: {what} {seconds:.1f} s, longer than {limit}"


def _too_long(path: str, seconds: float, max_seconds: float, declared: bool) -> TooLongError:
    limit = f"the limit of {max_seconds:g} s (--max-seconds raises it)"
    return TooLongError(too_long_message(path, seconds, declared, limit), seconds, declared)


def num_segments(duration: float) -> int:
    """One-second segments of a video of ``duration`` seconds (module docstring)."""
    return max(1, math.ceil(duration - SEGMENT_TAIL_TOLERANCE))


@dataclasses.dataclass
class DecodedVideo:
    """What :func:`decode` returns.

    ``frames``: the ``frame_fn`` results of the 8-fps frames (a list, in
    order; a repeated frame may be the same object); ``audio``: ``(S, 2)`` float64 in ``[-1, 1)`` at 16 kHz (moviepy's
    16-bit samples over 32768) or ``None`` without an audio stream;
    ``duration``: seconds, what the segments are made of (the header's when the
    streams agree with it, else the measured one: module docstring);
    ``declared_duration``: the header's (the container's, else the longest
    stream's); ``video_seconds`` / ``audio_seconds``: where the decoded video and
    audio end (``audio_seconds`` ``None`` without audio decoding);
    ``stream_warnings``: what reading met (packets skipped, no decodable audio)
    and ``duration_warning``: a duration that disagrees with the header, one
    line each naming the file (both in :attr:`warnings`).
    """

    path: str
    duration: float
    frames: list
    audio: np.ndarray | None
    width: int = 0
    height: int = 0
    declared_duration: float = 0.0
    video_seconds: float = 0.0
    audio_seconds: float | None = None
    stream_warnings: list[str] = dataclasses.field(default_factory=list)
    duration_warning: str | None = None

    @property
    def num_segments(self) -> int:
        return num_segments(self.duration)

    @property
    def warnings(self) -> list[str]:
        return self.stream_warnings + ([self.duration_warning] if self.duration_warning else [])


def _open(path: str):

    if not os.path.exists(path):
        raise VideoError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"{path}: is a folder, not a video file")
    try:
        return av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VideoError(
            f"{path}: cannot be read as a video by FFmpeg ({_ffmpeg_reason(e)}){_mp4_hint(path)}"
        ) from e


def _mp4_hint(path: str) -> str:
    """Why an MP4/MOV file does not open, when its top-level boxes say: it ends inside
    its media data (``mdat``) before any index (``moov``), as a file cut short whose
    index was written last."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            pos, seen, walked = 0, set(), 0
            while pos + 8 <= size and len(seen) < 64 and walked < MP4_HINT_MAX_BOXES:
                walked += 1
                f.seek(pos)
                head = f.read(16)
                length, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if length == 1 and len(head) >= 16:
                    length = int.from_bytes(head[8:16], "big")
                if kind == b"moov" or length < 8 and length != 0:
                    return ""
                seen.add(kind)
                if length == 0 or pos + length > size:
                    if kind == b"mdat":
                        return (
                            f"; the file ends inside its media data, {size} of "
                            f"{pos + length if length else '?'} bytes, before its index "
                            f"(moov atom): cut short? An MP4 whose index comes last cannot "
                            f"be read without it"
                        )
                    return ""
                pos += length
    except OSError:
        return ""
    return ""


def _ffmpeg_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def probe_duration(container) -> float:
    """Seconds of a container: its duration, else the longest stream's."""
    if container.duration:
        return container.duration / 1e6
    best = 0.0
    for s in container.streams:
        if s.duration and s.time_base:
            best = max(best, float(s.duration * s.time_base))
    return best


def moviepy_duration(seconds: float) -> float:
    """The duration moviepy works with: FFmpeg's printed ``Duration: hh:mm:ss.cc``
    (rounded to the nearest centisecond, FFmpeg's ``dump.c``), as moviepy parses it."""
    return math.floor(seconds * 100 + 0.5) / 100


class CfrFrameRate:
    """FFmpeg 4's constant-frame-rate conversion (``ffmpeg -i VIDEO -r 8 %06d.jpg``,
    ``fftools/ffmpeg.c: do_video_out``, VSYNC_CFR), one input frame at a time.

    ``push(t)`` takes the next input frame's time in seconds (from the stream's
    start) and returns ``(copies of the previous frame, copies of this frame)``
    to output: with ``ipts = t * fps`` and the output count so far ``opts``,
    ``delta0 = ipts - opts`` and ``delta = delta0 + duration`` (``duration`` =
    ``fps / input rate``, at most 1), ``delta0`` is clipped to 0 when the frame
    straddles ``opts``; the frame is dropped when ``delta < -1.1``, output
    ``lrint(delta)`` times when ``delta > 1.1`` (the first ``lrint(delta0 -
    0.6)`` of them the previous frame, when ``delta0 > 1.1``), else once. On
    the HAN repository's example video this picks exactly the 82 frames of
    its ``data/LLP_dataset/frame/BjCEufrlXm4`` (tests/test_features_decode.py).
    """

    def __init__(self, input_rate: float, fps: int = FPS):
        self.fps = fps
        self.duration = min(fps / input_rate, 1.0) if input_rate > 0 else 1.0
        self.opts = 0

    def push(self, t: float) -> tuple[int, int]:
        delta0 = t * self.fps - self.opts
        delta = delta0 + self.duration
        if delta0 < 0 < delta:
            delta0 = 0.0
        nb, nb0 = 1, 0
        if delta < -1.1:
            nb = 0
        elif delta > 1.1:
            nb = int(np.rint(delta))
            if delta0 > 1.1:
                nb0 = min(nb, int(np.rint(delta0 - 0.6)))
        self.opts += nb
        return nb0, nb - nb0


def cfr_indices(times, input_rate: float, fps: int = FPS) -> list[int]:
    """The input frame shown by each output frame of :class:`CfrFrameRate`."""
    conv, out = CfrFrameRate(input_rate, fps), []
    for i, t in enumerate(times):
        before, this = conv.push(float(t))
        out += [max(i - 1, 0)] * before + [i] * this
    return out


def han_sample(num_frames: int, num_samples: int) -> np.ndarray:
    """HAN's choice of ``num_samples`` of ``num_frames`` extracted frames:
    ``np.round(np.linspace(0, num_frames - 1, num_samples))``
    (``scripts/extract_rgb_feat.py`` and ``extract_3D_feat.py``)."""
    return np.round(np.linspace(0, num_frames - 1, num_samples)).astype(np.int64)


def _input_rate(stream) -> float:
    for rate in (getattr(stream, "guessed_rate", None), stream.average_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


class JpegRoundTrip:
    """HAN's frames were JPEG files written by FFmpeg 4.3 (``%06d.jpg``: the mjpeg
    encoder's defaults, 200 kb/s rate control at 8 fps, optimal Huffman tables,
    full-range ``yuvj420p``) and read back by PIL (``LoadImage``: ``convert('RGB')``).
    This encodes the output frames in the same order with PyAV's FFmpeg and decodes
    them with PIL. On the HAN repository's example video the quantiser matches on
    80 of its 82 frames and the pixels on average within one level (mean squared
    difference 0.94, against 26.9 without the round trip; docs/features.md)."""

    BIT_RATE = 200_000  # FFmpeg's default ``-b`` (AVCodecContext bit_rate)

    def __init__(self, width: int, height: int, fps: int = FPS):

        self.cc = av.CodecContext.create("mjpeg", "w")
        self.cc.width, self.cc.height = width, height
        self.cc.pix_fmt = "yuvj420p"
        self.cc.time_base = fractions.Fraction(1, fps)
        self.cc.framerate = fractions.Fraction(fps, 1)
        self.cc.bit_rate = self.BIT_RATE
        self.cc.thread_count = 1  # one slice: no restart markers, as the CLI's output
        self.cc.options = {"huffman": "optimal"}
        self.count = 0

    def __call__(self, frame):

        yuv = frame.reformat(format="yuvj420p")
        yuv.pts, yuv.time_base = self.count, self.cc.time_base
        self.count += 1
        packets = self.cc.encode(yuv)
        if len(packets) != 1:
            raise VideoError(f"the JPEG encoder returned {len(packets)} packets for one frame")
        with Image.open(io.BytesIO(bytes(packets[0]))) as img:
            return img.convert("RGB")


@dataclasses.dataclass
class _StreamRead:
    """What reading one stream met: packets the decoder refused (skipped, as the FFmpeg
    command line skips them) and a read error that ended the stream early."""

    kind: str
    skipped: int = 0
    reason: str = ""
    stopped: str = ""

    def warnings(self, path: str) -> list[str]:
        out = []
        if self.skipped:
            out.append(
                f"{path}: {self.skipped} packet{'s' if self.skipped > 1 else ''} of the "
                f"{self.kind} stream could not be decoded ({self.reason}) and "
                f"{'were' if self.skipped > 1 else 'was'} skipped"
            )
        if self.stopped:
            out.append(f"{path}: reading the {self.kind} stream stopped early ({self.stopped})")
        return out


def _frames_of(container, stream, read: _StreamRead):
    """The decoded frames of ``stream``, packet by packet: a packet the decoder refuses is
    counted in ``read`` and skipped; a read error ends the stream (``read.stopped``)."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as e:
            read.stopped = _ffmpeg_reason(e)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            read.skipped += 1
            read.reason = read.reason or _ffmpeg_reason(e)
            continue
        yield from frames


def _start_seconds(container, stream) -> float:
    if container.start_time is not None:
        return container.start_time / 1e6
    if stream.start_time is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


@dataclasses.dataclass
class _Frames:
    frames: list
    width: int
    height: int
    end: float  # seconds: the last decoded frame's time plus its duration
    read: _StreamRead


def _decode_frames(
    container,
    path: str,
    frame_fn: Callable,
    jpeg: bool,
    max_seconds: float,
    declared: float = 0.0,
) -> _Frames:
    """Decodes the first video stream into its 8-fps frames (:class:`CfrFrameRate`),
    each given to ``frame_fn`` as a PIL image (through :class:`JpegRoundTrip` when
    ``jpeg``; otherwise each distinct frame is converted once). A frame later than
    ``max_seconds`` (plus the tolerance), or a stream ending later, stops decoding:
    :class:`TooLongError`.

    Where the stream ends is the last frame's time plus its duration, a field of the
    file: it counts up to the ``declared`` end (a still picture shown to the end of a
    song), past that for at most one frame interval (``1 / rate``, at most
    :data:`MAX_FRAME_SECONDS`), so one frame cannot make a 2 s file last 5000 s."""

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    start = _start_seconds(container, stream)
    rate = _input_rate(stream)
    conv = CfrFrameRate(rate)
    interval = min(1.0 / rate, MAX_FRAME_SECONDS) if rate > 0 else MAX_FRAME_SECONDS
    out: list = []
    width = height = 0
    end = 0.0
    roundtrip = None
    previous, converted = None, None  # the previous frame and its conversion (when not jpeg)
    read = _StreamRead("video")
    limit = max_seconds + DURATION_TOLERANCE

    def emit(frame, copies: int, cache: list):
        nonlocal roundtrip
        for _ in range(copies):
            if jpeg:
                if roundtrip is None:
                    roundtrip = JpegRoundTrip(frame.width, frame.height)
                out.append(frame_fn(roundtrip(frame)))
            else:
                if not cache:
                    cache.append(frame_fn(frame.to_image()))
                out.append(cache[0])

    try:
        for frame in _frames_of(container, stream, read):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base) - start
            if t > limit:  # before CfrFrameRate repeats a frame up to it
                raise _too_long(path, limit, max_seconds, declared=False)
            width, height = frame.width, frame.height
            shown = float(frame.duration * frame.time_base) if frame.duration else 0.0
            shown = shown or (1.0 / rate if rate > 0 else 0.0)
            end = max(end, t + max(0.0, min(shown, max(interval, declared - t))))
            before, this = conv.push(t)
            if before and previous is not None:
                emit(previous, before, converted)
            previous, converted = frame, []
            emit(frame, this, converted)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: the video stream cannot be decoded ({_ffmpeg_reason(e)})") from e
    if not out:
        why = f" ({read.reason or read.stopped})" if read.reason or read.stopped else ""
        raise VideoError(f"{path}: the video stream has no decodable frame{why}")
    if end > limit:  # the last frame's duration took it past the cap
        raise _too_long(path, limit, max_seconds, declared=False)
    return _Frames(out, width, height, end, read)


def _audio_error(path: str, e: Exception) -> VideoError:
    """What a failure while decoding or resampling the audio stream is, naming the file
    (our own VideoError, e.g. TooLongError, is itself)."""
    if isinstance(e, VideoError):
        return e
    if isinstance(e, av.FFmpegError):
        return VideoError(f"{path}: the audio stream cannot be decoded ({_ffmpeg_reason(e)})")
    # PyAV's resampler: "Frame does not match AudioResampler setup."
    return VideoError(
        f"{path}: the audio stream changes its sample rate or layout mid-stream ({e}); "
        f"re-encode it (ffmpeg -i IN -ar 44100 OUT)"
    )


def _decode_audio_44k(
    container, path: str, max_seconds: float
) -> tuple[np.ndarray, float, _StreamRead]:
    """The first audio stream as FFmpeg's 44.1 kHz stereo 16-bit samples (moviepy's
    pipe), where they end (seconds from the container's start) and what reading met.
    More than ``max_seconds`` (plus the tolerance) of audio: :class:`TooLongError`."""

    stream = container.streams.audio[0]
    start = _start_seconds(container, stream)
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=MOVIEPY_AUDIO_RATE)
    chunks, total, first, seconds = [], 0, None, 0.0
    read = _StreamRead("audio")
    limit = max_seconds + DURATION_TOLERANCE
    try:
        for frame in _frames_of(container, stream, read):
            _check_audio_rate(path, frame)
            if first is None and frame.pts is not None:
                first = float(frame.pts * frame.time_base) - start
            # counted before resampling: the frame's seconds, from its first sample's time
            seconds += frame.samples / frame.sample_rate
            if max(first or 0.0, 0.0) + seconds > limit:
                raise _too_long(path, limit, max_seconds, declared=False)
            for piece in _resample_slices(frame):
                for out in resampler.resample(piece):
                    chunks.append(out.to_ndarray().reshape(-1, 2))
                    total += len(chunks[-1])
            if total > limit * MOVIEPY_AUDIO_RATE:
                raise _too_long(path, limit, max_seconds, declared=False)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1, 2))
            total += len(chunks[-1])
    except (av.FFmpegError, ValueError) as e:
        raise _audio_error(path, e) from None
    samples = np.concatenate(chunks) if chunks else np.zeros((0, 2), np.int16)
    end = (first or 0.0) + total / MOVIEPY_AUDIO_RATE if total else 0.0
    if end > limit:  # (the resampler's last samples)
        raise _too_long(path, limit, max_seconds, declared=False)
    return samples, end, read


def _check_audio_rate(path: str, frame) -> None:
    """A decoded audio frame's sample rate within :data:`MIN_AUDIO_RATE` ..
    :data:`MAX_AUDIO_RATE`, else a :class:`VideoError` naming the file."""
    rate = frame.sample_rate
    if not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE:
        raise VideoError(
            f"{path}: the audio stream's sample rate is {rate} Hz, not that of a sound track "
            f"({MIN_AUDIO_RATE} to {MAX_AUDIO_RATE} Hz): a damaged or crafted file?"
        )


# Sample formats PyAV converts to and from numpy (av.audio.frame.format_dtypes).
_SLICEABLE_FORMATS = {"u8", "u8p", "s16", "s16p", "s32", "s32p", "flt", "fltp", "dbl", "dblp"}


def _resample_slices(frame):
    """``frame`` in pieces of at most :data:`RESAMPLE_SLICE_SECONDS` (the frame itself
    when shorter), for the resampler: what it allocates for one piece is bounded
    whatever a frame holds, and its output is the same, sample for sample."""
    step = max(1, int(frame.sample_rate * RESAMPLE_SLICE_SECONDS))
    channels = frame.layout.nb_channels
    if frame.samples <= step or not channels or frame.format.name not in _SLICEABLE_FORMATS:
        yield frame  # (an s64 frame is resampled whole: its seconds are capped all the same)
        return
    data, planar = frame.to_ndarray(), frame.format.is_planar
    for a in range(0, frame.samples, step):
        b = min(a + step, frame.samples)
        piece = data[:, a:b] if planar else data[:, a * channels : b * channels]
        out = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(piece), format=frame.format, layout=frame.layout
        )
        out.sample_rate = frame.sample_rate
        if frame.time_base is not None:
            out.time_base = frame.time_base
            if frame.pts is not None:
                out.pts = frame.pts + round(a / frame.sample_rate / frame.time_base)
        yield out


def resolve_duration(
    path: str, declared: float, measured: float, what: str = "its streams"
) -> tuple[float, str | None]:
    """The duration to use and a warning (module docstring): ``declared`` when
    ``measured`` is within :data:`DURATION_TOLERANCE` of it, else ``measured`` and a
    line naming the file and both durations."""
    if abs(measured - declared) <= DURATION_TOLERANCE:
        return declared, None
    hold = "hold" if what.endswith("s") else "holds"
    if measured < declared:
        return measured, (
            f"{path}: {what} {hold} {measured:.2f} s, its header declares {declared:.2f} s "
            f"(a cut or damaged file?); parsed for the {measured:.2f} s it holds"
        )
    return measured, (
        f"{path}: {what} {hold} {measured:.2f} s, more than the {declared:.2f} s its header "
        f"declares; parsed for all {measured:.2f} s"
    )


MOVIEPY_READER_BUFFER = 200_000  # VideoFileClip(audio_buffersize=200000), samples at 44.1 kHz
MOVIEPY_WRITE_CHUNK = 2000  # AudioClip.write_audiofile(buffersize=2000), samples at 16 kHz


class _MoviepyReader:
    """moviepy 1.0.3's ``FFMPEG_AudioReader`` buffering (``audio/io/readers.py``), on
    sample indices: which 44.1 kHz sample ``get_frame`` returns for each request.

    Its ``buffer_around`` keeps one sample too many when it re-centres an
    overlapping buffer (``conserved = current_f_end - new_bufferstart + 1``), so
    every re-centring delays the rest of the audio by one more 44.1 kHz sample
    (a 10 s clip is read 1 sample late after 4.5 s, 2 after 6.8 s, ...). This is
    reproduced, as it is in the released features.

    Audio ending long before the duration (a 5 s picture with 0.1 s of sound) makes
    moviepy 1.0.3 raise ``IndexError`` (its short last buffer is read as if it ended at
    the duration, at indices before its start); from the request it would raise on,
    the buffer is padded with silence instead, as later moviepy pads it (the sound, then
    silence). Nothing it did not raise on changes.
    """

    def __init__(self, total: int, duration: float):
        self.total = total  # samples the FFmpeg pipe delivers
        self.duration = duration
        self.nframes = int(MOVIEPY_AUDIO_RATE * duration)
        self.buffersize = min(self.nframes + 1, MOVIEPY_READER_BUFFER)
        self.read_at = 0  # the pipe's position (samples actually delivered so far)
        self.pos = 0  # moviepy's own count (advances by the chunk asked for)
        self.buffer = None  # source indices held
        self.start = 1
        self.padded = False  # silence past the audio's end (where moviepy 1.0.3 raises)
        self.buffer_around(1)

    def _read(self, n: int) -> np.ndarray:
        n = int(round(n))
        got = np.arange(self.read_at, min(self.read_at + n, self.total))
        self.read_at += len(got)
        self.pos += n
        if self.padded and len(got) < n:
            got = np.concatenate([got, np.full(n - len(got), -1, got.dtype)])
        return got

    def _seek(self, pos: int) -> None:
        if pos < self.pos or pos > self.pos + 1_000_000:
            self.read_at = self.pos = int(np.round(pos))  # FFmpeg restarted with -ss
        elif pos > self.pos:
            self._read(pos - self.pos)
        self.pos = pos

    def buffer_around(self, frame: int) -> None:
        new_start = max(0, frame - self.buffersize // 2)
        if self.buffer is not None:
            current_end = self.start + self.buffersize
            if new_start < current_end < new_start + self.buffersize:
                conserved = current_end - new_start + 1
                kept = self.buffer[-conserved:] if conserved > 0 else self.buffer[:0]
                self.buffer = np.concatenate([kept, self._read(self.buffersize - conserved)])
            else:
                self._seek(new_start)
                self.buffer = self._read(self.buffersize)
        else:
            self._seek(new_start)
            self.buffer = self._read(self.buffersize)
        self.start = new_start

    def get_frame(self, tt: np.ndarray) -> np.ndarray:
        """Source index per time (-1: silence), as ``get_frame(tt)`` picks samples."""
        in_time = (tt >= 0) & (tt < self.duration)
        out = np.full(len(tt), -1, np.int64)
        if not in_time.any():
            return out
        frames = np.round(MOVIEPY_AUDIO_RATE * tt).astype(int)[in_time]
        lo, hi = frames.min(), frames.max()
        if not 0 <= lo - self.start < len(self.buffer):
            self.buffer_around(lo)
        elif not 0 <= hi - self.start < len(self.buffer):
            self.buffer_around(hi)
        idx = frames - self.start
        if len(self.buffer) == 0:
            return out
        if len(self.buffer) < self.buffersize // 2 and not self.padded:
            shifted = idx - (self.buffersize // 2 - len(self.buffer) + 1)
            if (shifted >= -len(self.buffer)).all():
                idx = shifted
            else:  # moviepy 1.0.3 raises IndexError: silence past the end (class docstring)
                self.padded = True
                pad = np.full(self.buffersize - len(self.buffer), -1, self.buffer.dtype)
                self.buffer = np.concatenate([self.buffer, pad])
        if (idx >= len(self.buffer)).any() or (idx < -len(self.buffer)).any():
            idx = np.where(idx >= len(self.buffer), len(self.buffer) - 1, idx)  # moviepy's repeat
        before = idx < -len(self.buffer)  # (where moviepy raises too: silence)
        got = self.buffer[np.where(before, 0, idx)]
        got[before] = -1
        out[in_time] = got
        return out


def moviepy_resample(samples_44k: np.ndarray, duration: float) -> np.ndarray:
    """moviepy 1.0.3's ``write_audiofile(fps=16000)`` of 44.1 kHz int16 samples, read back
    as VGGish reads a WAV file (``int16 / 32768``).

    ``int(16000 * duration)`` output samples, written in chunks of 2000: the
    one at time ``t = k / 16000`` is the 44.1 kHz sample ``round(44100 t)``
    (``readers.py: get_frame``, through :class:`_MoviepyReader`'s buffering;
    zero at ``t >= duration``); values ``x / 32768`` are clipped to ±0.99 and
    truncated to 16 bits (``AudioClip.to_soundarray(quantize=True)``).
    """
    samples_44k = np.asarray(samples_44k)
    channels = samples_44k.shape[1] if samples_44k.ndim == 2 else 1
    samples_44k = samples_44k.reshape(len(samples_44k), channels)
    total = int(SAMPLE_RATE * duration)
    reader = _MoviepyReader(len(samples_44k), duration)
    nchunks = total // MOVIEPY_WRITE_CHUNK + 1
    bounds = np.linspace(0, total, nchunks + 1, endpoint=True, dtype=int)
    src = np.full(total, -1, np.int64)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            src[a:b] = reader.get_frame((1.0 / SAMPLE_RATE) * np.arange(a, b))
    x = np.zeros((total, channels), np.float64)
    valid = src >= 0
    x[valid] = samples_44k[src[valid]] / 32768.0
    x = np.maximum(-0.99, np.minimum(0.99, x))
    q = (32768 * x).astype(np.int16)
    return q / 32768.0


def probe(path: str, audio: bool = True, max_seconds: float = DEFAULT_MAX_SECONDS) -> float:
    """Checks that ``path`` opens, has a video stream (and, with ``audio``, an audio
    stream) and that its header declares at most ``max_seconds``, without decoding it;
    returns the declared duration. Raises as :func:`decode`."""

    path = os.fspath(path)
    max_seconds = check_max_seconds(max_seconds)
    container = _open(path)
    try:
        return _checked_duration(container, path, audio, max_seconds)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: {_ffmpeg_reason(e)}") from e
    finally:
        container.close()


def _checked_duration(container, path: str, audio: bool, max_seconds: float) -> float:
    """The container's duration, after checking its streams (a video stream, and an
    audio stream when ``audio``) and the length cap; raises :class:`VideoError` /
    :class:`NoAudioError` / :class:`TooLongError`."""
    if not container.streams.video:
        raise VideoError(
            f"{path}: no video stream (streams: "
            f"{', '.join(s.type for s in container.streams) or 'none'})"
        )
    if audio and not container.streams.audio:
        raise NoAudioError(_no_audio_message(path))
    duration = probe_duration(container)
    if duration <= 0:
        raise VideoError(f"{path}: the container has no duration")
    if duration > max_seconds:
        raise _too_long(path, duration, max_seconds, declared=True)
    return duration


def _no_audio_message(path: str) -> str:
    return (
        f"{path}: no audio stream; the audio features (VGGish) need one. A silent video "
        f"can be parsed with a silent track added, e.g. ffmpeg -i {os.path.basename(path)} "
        f"-f lavfi -i anullsrc=r=44100:cl=stereo -shortest -c:v copy out.mp4"
    )


def decode(
    path: str,
    frame_fn: Callable | None = None,
    *,
    audio: bool = True,
    jpeg: bool = True,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> DecodedVideo:
    """Decodes ``path`` (module docstring).

    ``frame_fn(PIL.Image)`` converts each 8-fps frame (default: an RGB ``(H, W,
    3)`` uint8 array); ``jpeg`` passes the frames through HAN's JPEG files first
    (:class:`JpegRoundTrip`). ``audio=False`` skips the audio stream (the
    duration is then measured on the video stream alone). A missing,
    unreadable or undecodable file, a file without a video stream and, with
    ``audio``, one without an audio stream raise :class:`VideoError`
    (:class:`NoAudioError`) naming the file; one longer than ``max_seconds``
    (declared, or found while decoding) :class:`TooLongError`.
    """

    path = os.fspath(path)
    max_seconds = check_max_seconds(max_seconds)
    frame_fn = frame_fn or (lambda img: np.asarray(img, np.uint8))
    container = _open(path)
    try:
        declared = _checked_duration(container, path, audio, max_seconds)
        video = _decode_frames(container, path, frame_fn, jpeg, max_seconds, declared)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: {_ffmpeg_reason(e)}") from e
    finally:
        container.close()
    warnings = video.read.warnings(path)
    samples, audio_end = None, None
    if audio:
        # A fresh demuxer: after a seek FFmpeg may not trim the codec's priming
        # samples as a first read does (and as the FFmpeg command line does).
        container = _open(path)
        try:
            samples, audio_end, read = _decode_audio_44k(container, path, max_seconds)
        except av.FFmpegError as e:
            raise VideoError(f"{path}: {_ffmpeg_reason(e)}") from e
        finally:
            container.close()
        warnings += read.warnings(path)
        if not len(samples):
            warnings.append(
                f"{path}: the audio stream has no decodable sample; its audio features are "
                f"those of silence"
            )
    measured = max(video.end, audio_end or 0.0)
    if measured > max_seconds + DURATION_TOLERANCE:  # (each stream's reading stops there)
        raise _too_long(path, max_seconds + DURATION_TOLERANCE, max_seconds, declared=False)
    duration, note = resolve_duration(
        path, declared, measured, "its streams" if audio else "its video stream"
    )
    wave = moviepy_resample(samples, moviepy_duration(duration)) if audio else None
    return DecodedVideo(
        path,
        duration,
        video.frames,
        wave,
        video.width,
        video.height,
        declared_duration=declared,
        video_seconds=video.end,
        audio_seconds=audio_end,
        stream_warnings=warnings,
        duration_warning=note,
    )


def decode_audio_mono(
    path: str,
    rate: int,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    warnings: list[str] | None = None,
) -> np.ndarray:
    """The first audio stream of ``path`` as ``(S,)`` float32 mono at ``rate`` Hz, as
    VALOR's ``librosa.load(path, sr=48000)`` reads it (audioread: FFmpeg's 16-bit samples
    of every channel, ``/ 32768``; the mean of all channels, weighted equally; resampled):
    FFmpeg decodes, its ``swresample`` resamples (when the stream's rate differs; librosa
    uses soxr) and writes 16-bit samples of the stream's own channel layout, which are
    averaged here. Raises :class:`VideoError` / :class:`NoAudioError` naming the file, and
    :class:`TooLongError` past ``max_seconds`` of audio (plus the tolerance; decoding
    stops there). Skipped packets are appended to ``warnings`` (one line each)."""

    path = os.fspath(path)
    max_seconds = check_max_seconds(max_seconds)
    container = _open(path)
    chunks, total, seconds = [], 0, 0.0
    read = _StreamRead("audio")
    limit = max_seconds + DURATION_TOLERANCE
    try:
        if not container.streams.audio:
            raise NoAudioError(_no_audio_message(path).replace("VGGish", "VGGish, CLAP"))
        stream = container.streams.audio[0]
        layout = stream.layout if stream.layout.channels else "mono"
        channels = len(stream.layout.channels) or 1
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        for frame in _frames_of(container, stream, read):
            _check_audio_rate(path, frame)
            seconds += frame.samples / frame.sample_rate  # counted before resampling
            if seconds > limit:
                raise _too_long(path, limit, max_seconds, declared=False)
            for piece in _resample_slices(frame):
                for out in resampler.resample(piece):
                    chunks.append(out.to_ndarray().reshape(-1, channels))
                    total += len(chunks[-1])
            if total > limit * rate:
                raise _too_long(path, limit, max_seconds, declared=False)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1, channels))
    except (av.FFmpegError, ValueError) as e:
        raise _audio_error(path, e) from None
    finally:
        container.close()
    if not chunks:
        why = f" ({read.reason or read.stopped})" if read.reason or read.stopped else ""
        raise VideoError(f"{path}: the audio stream has no decodable sample{why}")
    if warnings is not None:
        warnings += read.warnings(path)
    return (np.concatenate(chunks).astype(np.float32) / 32768.0).mean(axis=1)
