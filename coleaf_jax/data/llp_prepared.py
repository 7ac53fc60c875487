"""LLP prepared once as TFDS ``array_record`` files (no TensorFlow), a cache of the
user's features keyed by a fingerprint of the inputs, verified when opened.

* :class:`Llp`: the TFDS builder (shard by shard: bounded memory whatever a split's
  size), with a labels sidecar per split for streaming;
* :func:`prepare`: the copy of these inputs, built unless one exists; one process
  at a time (a lock), a damaged copy moved aside and built again, what a killed
  preparation left removed, a full disk one error naming the copy;
* :func:`input_fingerprint`: what names a copy (the CSVs' bytes; each feature file's
  name, size, mtime, ctime and inode, so a file replaced by ``cp -p``, ``rsync -a`` or
  ``touch -r`` is seen);
* :func:`read_examples`: reads that name the copy when they fail
  (:class:`DamagedCopyError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import math
import os
import pickle
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core import example_serializer

from coleaf_jax import fileio, locks
from coleaf_jax.data.classes import (
    DENSE_SPLITS,
    FEATURE_FOLDERS,
    LLP_CLASSES,
    LLP_DENSE_CSV,
    LLP_FEATURES,
    LLP_FRAMES_PER_SEGMENT,
    LLP_NUM_SEGMENTS,
    LLP_SPLIT_CSV,
)
from coleaf_jax.data.llp_annotations import (
    _MAX_SHOWN_LINES,
    LLPDataError,
    PathLike,
    check_dense_coverage,
    check_dense_orphans,
    check_dense_rows,
    read_dense_csv,
    read_weak_csv,
    split_overlap,
    video_id,
)
from coleaf_jax.data.llp_features import feature_path, load_features, warn_all_zero

logger = logging.getLogger("coleaf_jax.data.llp")  # one logger for the LLP dataset


class Llp(tfds.core.ShardBasedBuilder):
    """LLP with HAN features; the manual dir is the feature root.

    One ``FeaturesDict`` serves all splits: train examples carry all-zero
    ``label_audio``/``label_visual`` and ``has_dense = False``. Examples keep the
    CSV order. Videos whose feature files are missing are skipped; their ids
    per split are in ``info.metadata['skipped_videos']``. Val and test are
    cross-checked against the dense CSVs (:func:`check_dense_rows`,
    :func:`check_dense_coverage`); the
    ids of their videos with a weak class but no dense segment are in
    ``info.metadata['dense_uncovered']``.

    Each split is written shard by shard (``EXAMPLES_PER_SHARD`` videos each,
    in CSV order) straight to ``array_record`` files, by ``processes`` worker
    processes for large inputs (:func:`write_shards`): memory stays bounded by
    one shard per process whatever the split's size, and nothing needs TensorFlow (TFDS's
    ``GeneratorBasedBuilder`` buffers a whole split in memory and spills it to
    disk through TensorFlow above ≈ 1 GB).

    The prepared files do not record which feature root they came from: give
    each root its own ``data_dir`` (:func:`cache_dir` does, and :func:`load_split`
    uses it).
    """

    VERSION = tfds.core.Version("1.4.0")
    RELEASE_NOTES = {
        "1.4.0": "Videos listed in two split CSVs recorded (metadata split_overlap).",
        "1.0.0": "HAN features with weak and dense LLP labels.",
        "1.1.0": "Written shard by shard: bounded memory and no TensorFlow for any split size.",
        "1.2.0": "Dense CSVs cross-checked against the weak labels (lost rows fail).",
        "1.3.0": "Per-split labels sidecar (labels_<split>.npz) for streaming splits.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the LLP features released with HAN ("Unified Multisensory Perception:
    Weakly-Supervised Audio-Visual Video Parsing", Tian et al., ECCV 2020; links in
    the README of github.com/YapengTian/AVVP-ECCV20) and place them as
      <manual_dir>/vggish/<id>.npy        (10, 128)
      <manual_dir>/res152/<id>.npy        (80, 2048)
      <manual_dir>/r2plus1d_18/<id>.npy   (10, 512)
    where <id> is the first 11 characters of a CSV filename. Put the five
    annotation CSVs of that repository's data/ folder (AVVP_train.csv,
    AVVP_val_pd.csv, AVVP_test_pd.csv, AVVP_eval_audio.csv, AVVP_eval_visual.csv)
    in <manual_dir> too, or pass annotation_dir= to the builder.
    """

    # TFDS derives `code_path` for package modules through the optional
    # `importlib_resources` package; this file's path is what it would find.
    code_path = Path(__file__)

    def __init__(
        self, *, annotation_dir: PathLike | None = None, processes: int = 0, **kwargs: Any
    ) -> None:
        """``annotation_dir``: folder of the CSVs (default: the manual dir); ``processes``:
        how many write the shards (:func:`preparation_processes`; 0: automatic); the rest
        go to TFDS."""
        self._annotation_dir = None if annotation_dir is None else Path(annotation_dir)
        self.processes = processes
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown
    # size, ...)" before and "downloaded and prepared" after: nothing is downloaded
    # here, and :func:`prepare` logs the inputs, the rate and the output size itself.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        return _LocalDatasetInfo(
            builder=self,
            description="LLP audio-visual video parsing with HAN features (docs/method.md §2).",
            features=features_dict(),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _shard_iterators_per_split(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, list[_ShardJob]]:
        """Each split's shards, as jobs :meth:`_download_and_prepare` writes (TFDS's own
        writer would call them; ours hands them to :func:`write_shards`)."""
        root = Path(dl_manager.manual_dir)
        annotations = self._annotation_dir or root
        weak = {split: read_weak_csv(annotations / csv) for split, csv in LLP_SPLIT_CSV.items()}
        self.info.metadata["split_overlap"] = split_overlap(
            {split: [video_id(f) for f in filenames] for split, (filenames, _) in weak.items()}
        )
        known = [name for filenames, _ in weak.values() for name in filenames]
        dense, orphans = {}, set()
        for modality, csv in LLP_DENSE_CSV.items():
            dense[modality], report = read_dense_csv(annotations / csv, known_ids=known)
            orphans |= report.unknown_files
        dense_paths = {modality: annotations / csv for modality, csv in LLP_DENSE_CSV.items()}
        if all(weak[s][0] for s in DENSE_SPLITS):  # an empty split fails below, naming it
            check_dense_orphans(
                orphans,
                {s: len(weak[s][0]) for s in DENSE_SPLITS},
                {s: annotations / LLP_SPLIT_CSV[s] for s in DENSE_SPLITS},
                list(dense_paths.values()),
            )
        self.info.metadata["dense_uncovered"] = {}
        for split in DENSE_SPLITS:
            if weak[split][0]:
                check_dense_rows(split, weak[split][0], dense, dense_paths)
                self.info.metadata["dense_uncovered"][split] = check_dense_coverage(
                    split, *weak[split], dense, dense_paths
                )
        self.info.metadata["skipped_videos"] = {}
        shards = {}
        for split, (filenames, labels) in weak.items():
            present, skipped = [], []
            for filename, label in zip(filenames, labels):
                vid = video_id(filename)
                if all(feature_path(root, key, vid).is_file() for key in FEATURE_FOLDERS):
                    present.append((vid, label))
                else:
                    skipped.append(vid)
            self.info.metadata["skipped_videos"][split] = skipped
            csv = annotations / LLP_SPLIT_CSV[split]
            if not present:
                raise LLPDataError(
                    f"{csv}: no video of the {split} split to prepare: "
                    + (
                        f"none of its {len(filenames)} videos has all three feature files under "
                        f"{root}"
                        if filenames
                        else "the file has a header but no video rows"
                    )
                )
            if skipped:
                logger.warning(
                    "LLP %s: skipped %d of %d videos without feature files under %s (first: %s)",
                    split,
                    len(skipped),
                    len(filenames),
                    root,
                    ", ".join(skipped[:_MAX_SHOWN_LINES]),
                )
            _write_labels(Path(self.data_dir), split, present, dense)
            shards[split] = [
                _ShardJob.of(root, split, present[i : i + EXAMPLES_PER_SHARD], dense)
                for i in range(0, len(present), EXAMPLES_PER_SHARD)
            ]
        return shards

    def _download_and_prepare(
        self,
        dl_manager: tfds.download.DownloadManager,
        download_config: tfds.download.DownloadConfig | None = None,
    ) -> None:
        """TFDS's ``ShardBasedBuilder`` writes the shards one after the other in this
        process; here :func:`write_shards` writes them in ``self.processes`` processes
        (the same examples in the same shards whatever their number)."""
        del download_config
        jobs = self._shard_iterators_per_split(dl_manager)
        templates = {split: self._get_filename_template(split_name=split) for split in jobs}
        tasks = [
            (job, os.fspath(templates[split].sharded_filepath(shard_index=i, num_shards=len(js))))
            for split, js in jobs.items()
            for i, job in enumerate(js)
        ]
        progress = _PrepareProgress({s: sum(len(j.videos) for j in js) for s, js in jobs.items()})
        lengths = {path: 0 for _, path in tasks}
        videos = sum(progress.totals.values())
        processes = preparation_processes(self.processes, videos, len(tasks))
        if processes > 1:
            logger.info("LLP: writing %d shards in %d processes", len(tasks), processes)

        def done(result: _ShardResult) -> None:
            lengths[result.path] = result.videos
            progress.add(result.split, result.videos, result.feature_bytes, result.all_zero)

        write_shards(tasks, processes, done)
        self.info.set_splits(
            tfds.core.SplitDict(
                [
                    tfds.core.SplitInfo(
                        name=split,
                        shard_lengths=[lengths[path] for job, path in tasks if job.split == split],
                        num_bytes=sum(
                            os.path.getsize(path) for job, path in tasks if job.split == split
                        ),
                        filename_template=templates[split],
                    )
                    for split in jobs
                ]
            )
        )


class _LocalDatasetInfo(tfds.core.DatasetInfo):
    """TFDS's ``DatasetInfo`` without the look-up of precomputed information on GCS for
    a dataset not prepared yet (it is disabled, but leaves an empty ``/tmp/*tfds``
    folder behind each time: one per preparation)."""

    def initialize_from_bucket(self) -> None:
        pass


@functools.cache
def features_dict() -> tfds.features.FeaturesDict:
    """The features of one prepared example (every split: train examples carry all-zero
    dense labels and ``has_dense = False``)."""
    num_classes = len(LLP_CLASSES)
    dense = (LLP_NUM_SEGMENTS, num_classes)
    return tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(doc="YouTube id (feature file stem)"),
            **{
                # BYTES: raw buffer; the default float_list proto costs ~50 ms per
                # (80, 2048) example to serialize, BYTES ~2 ms (same size on disk).
                key: tfds.features.Tensor(
                    shape=LLP_FEATURES[folder],
                    dtype=np.float32,
                    encoding=tfds.features.Encoding.BYTES,
                )
                for key, folder in FEATURE_FOLDERS.items()
            },
            "label": tfds.features.Tensor(shape=(num_classes,), dtype=np.float32),
            "label_audio": tfds.features.Tensor(shape=dense, dtype=np.float32),
            "label_visual": tfds.features.Tensor(shape=dense, dtype=np.float32),
            "has_dense": tfds.features.Scalar(dtype=np.bool_),
        }
    )


@dataclasses.dataclass(frozen=True)
class _ShardJob:
    """The videos of one shard, in CSV order, with what their examples need; picklable,
    so that another process can write the shard."""

    root: str
    split: str
    videos: tuple[tuple[str, np.ndarray], ...]  # (id, weak label (C,))
    dense: dict[str, dict[str, np.ndarray]]  # modality -> id -> (T, C), val/test only

    @classmethod
    def of(cls, root, split, videos, dense) -> _ShardJob:
        ids = {vid for vid, _ in videos}
        mine = {m: {v: a for v, a in labels.items() if v in ids} for m, labels in dense.items()}
        return cls(os.fspath(root), split, tuple(videos), mine if split in DENSE_SPLITS else {})

    def examples(self, parent_pid: int | None = None) -> Iterator[tuple[str, dict[str, Any], bool]]:
        """``(id, example, whether one of its feature files is all zeros)``; stops with
        :class:`_ParentGone` once ``parent_pid`` is no longer this process's parent."""
        has_dense = self.split in DENSE_SPLITS
        empty = np.zeros((LLP_NUM_SEGMENTS, len(LLP_CLASSES)), np.float32)
        for vid, label in self.videos:
            if parent_pid is not None and os.getppid() != parent_pid:
                raise _ParentGone()  # the process that started this one ended (killed)
            features = load_features(self.root, vid)
            example = {
                "id": vid,
                **features,
                "label": label,
                "label_audio": self.dense.get("audio", {}).get(vid, empty),
                "label_visual": self.dense.get("visual", {}).get(vid, empty),
                "has_dense": has_dense,
            }
            yield vid, example, bool(features.all_zero)


@dataclasses.dataclass(frozen=True)
class _ShardResult:
    split: str
    path: str
    videos: int
    feature_bytes: int
    all_zero: tuple[str, ...]  # videos with a feature file of zeros only


class _ParentGone(Exception):
    pass


def _write_shard(job: _ShardJob, path: str, parent_pid: int | None = None) -> _ShardResult:
    """Writes one shard's examples to the ``array_record`` file ``path``
    (:data:`SHARD_OPTIONS`), serialised as TFDS's writer does."""
    features = features_dict()
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    videos = nbytes = 0
    all_zero = []
    try:
        writer = array_record_module.ArrayRecordWriter(path, SHARD_OPTIONS)
    except Exception as e:  # noqa: BLE001 - array_record raises RuntimeError for OS errors
        raise _os_error(e, path) from None
    try:
        for vid, example, zero in job.examples(parent_pid):
            writer.write(serializer.serialize_example(features.encode_example(example)))
            videos += 1
            nbytes += sum(example[key].nbytes for key in FEATURE_FOLDERS)
            if zero:
                all_zero.append(vid)
    except BaseException as e:
        with contextlib.suppress(Exception):  # closing fails again on a full disk: one error
            writer.close()
        del writer  # its file descriptor too: the space of the removed file is freed now
        if isinstance(e, RuntimeError):
            raise _os_error(e, path) from None
        raise
    try:
        writer.close()  # flushes: where a full disk is usually found
    except Exception as e:  # noqa: BLE001 - array_record raises RuntimeError for OS errors
        raise _os_error(e, path) from None
    return _ShardResult(job.split, path, videos, nbytes, tuple(all_zero))


# What array_record's RuntimeErrors say for a full disk or quota (they carry no errno).
_NO_SPACE_TEXTS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT}


def _os_error(e: Exception, path: str) -> Exception:
    """array_record's ``RuntimeError`` for a full disk as the ``OSError`` it stands for
    (picklable, so a worker process hands it over as it is); other errors unchanged."""
    for text, number in _NO_SPACE_TEXTS.items():
        if text in str(e):
            return OSError(number, os.strerror(number), path)
    return e


def _labels_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"labels_{split}.npz"


def _write_labels(
    data_dir: Path,
    split: str,
    videos: list[tuple[str, np.ndarray]],
    dense: Mapping[str, Mapping[str, np.ndarray]],
) -> None:
    """The per-video labels of a split in prepared order, beside its array_record files,
    so a streamed split knows its labels without reading any features."""
    ids = [vid for vid, _ in videos]
    arrays = {
        "id": np.array(ids, dtype=str),
        "label": np.stack([label for _, label in videos]).astype(np.float32),
    }
    if split in DENSE_SPLITS:
        empty = np.zeros((LLP_NUM_SEGMENTS, len(LLP_CLASSES)), np.float32)
        for modality in ("audio", "visual"):
            arrays[f"label_{modality}"] = np.stack([dense[modality].get(v, empty) for v in ids])
    np.savez(_labels_path(data_dir, split), **arrays)


# The shards' array_record options: one record per group (random access by index, as
# TFDS writes them) and no compression. TFDS's default (zstd level 3) spent 72 % of
# the preparation compressing float32 features that shrink little (post-ReLU ResNet
# averages; 0.56 of their size on the synthetic set, whose ReLU leaves exact zeros):
# 146 videos/s compressed, 417 uncompressed on 2 cores, and the copy loads as fast
# (docs/performance.md). Readers take either: a copy written by an older version is used.
SHARD_OPTIONS = "group_size:1,uncompressed"


# Videos per array_record shard: preparation holds one shard's examples in memory
# (≈ 90 MB of LLP features), reading picks shards by index.
EXAMPLES_PER_SHARD = 128


class _PrepareProgress:
    """Logs a preparation: videos done per split, videos/s, feature bytes read; warns
    once per split about videos with an all-zero feature file."""

    def __init__(self, totals: Mapping[str, int], every_seconds: float = 10.0) -> None:
        self.totals, self.every = dict(totals), every_seconds
        self.done = dict.fromkeys(totals, 0)
        self.bytes = 0
        self.start = self.last = time.monotonic()
        self.all_zero: dict[str, list[str]] = {split: [] for split in totals}

    def add(self, split: str, videos: int, nbytes: int, all_zero: tuple[str, ...] = ()) -> None:
        """``videos`` more of ``split`` prepared, ``nbytes`` of features read;
        ``all_zero``: those of them with a feature file of zeros only."""
        self.done[split] += videos
        self.bytes += nbytes
        self.all_zero[split].extend(all_zero)
        if self.done[split] == self.totals[split]:
            warn_all_zero(f"LLP {split}", self.all_zero[split])
        now = time.monotonic()
        done, total = sum(self.done.values()), sum(self.totals.values())
        if done == total or now - self.last >= self.every:
            self.last = now
            logger.info(
                "LLP: prepared %d/%d videos (%s; %.0f videos/s, %.2f GB of features)",
                done,
                total,
                ", ".join(f"{s} {self.done[s]}/{self.totals[s]}" for s in self.totals),
                done / max(now - self.start, 1e-9),
                self.bytes / 1e9,
            )


# Preparation in several processes: each is a fresh interpreter that imports only this
# module (the caller has JAX's threads running, and forking a threaded process can
# deadlock; multiprocessing's "spawn" would also re-run the caller's script), which
# costs about a second before it writes anything, so the automatic choice gives each
# process at least this many videos.
VIDEOS_PER_PROCESS = 1024


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # "<quota> <period>" or "max <period>"


def available_cores() -> int:
    """The CPU cores this process may use: its affinity (else the machine's count),
    bounded by a container's CPU quota (cgroup v2 ``cpu.max``) when it has one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 quota to read
        pass
    return cores


def preparation_processes(requested: int, videos: int, shards: int) -> int:
    """How many processes write ``shards`` shards of ``videos`` videos: ``requested``
    (at most one per shard), or for 0 one per available core while each gets at least
    :data:`VIDEOS_PER_PROCESS` videos."""
    if requested > 0:
        return max(1, min(requested, shards))
    return max(1, min(available_cores(), videos // VIDEOS_PER_PROCESS, shards))


def write_shards(
    tasks: list[tuple[_ShardJob, str]],
    processes: int,
    done: Callable[[_ShardResult], None],
) -> None:
    """Writes every ``(job, path)`` shard, in this process or in ``processes`` worker
    processes (shard i in worker i mod n), calling ``done`` with each shard's result as it
    arrives. A worker's error is raised here as the worker raised it. The workers are in
    their own session (a Ctrl-C is this process's to handle) and stop once this process
    ends, however it ends: they watch their parent."""
    if processes <= 1:
        for job, path in tasks:
            done(_write_shard(job, path))
        return
    # The worker imports with this process's sys.path (not the worker's current folder
    # first, as `python -c` would): the same coleaf_jax and the same dependencies.
    code = (
        "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
        f"from {__name__} import _shard_worker; _shard_worker(int(sys.argv[2]))"
    )
    argv = [sys.executable, "-c", code, json.dumps(sys.path), str(os.getpid())]
    arrived: queue.Queue = queue.Queue()
    workers = []
    try:
        for i in range(processes):
            worker = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            workers.append(worker)
            threading.Thread(
                target=_talk_to, args=(worker, tasks[i::processes], arrived), daemon=True
            ).start()
        for _ in tasks:
            result = arrived.get()  # every worker's thread puts a result or an error per shard
            if isinstance(result, BaseException):
                raise result
            done(result)
        for worker in workers:
            worker.wait()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _talk_to(worker: subprocess.Popen, tasks: list, arrived: queue.Queue) -> None:
    """Gives a worker its shards, then hands each result it writes to ``arrived``; an
    error if it ends before a result or an error for each of them."""
    try:
        pickle.dump(tasks, worker.stdin)
        worker.stdin.close()
    except OSError:  # it ended before reading them: its exit status says why, below
        pass
    results = 0
    while True:
        try:
            item = pickle.load(worker.stdout)
        except EOFError:
            break
        except Exception as e:  # noqa: BLE001 - a garbled stream: the worker died mid-write
            arrived.put(LLPDataError(f"a preparation process's output was cut ({e})"))
            return
        arrived.put(item)
        if isinstance(item, BaseException):  # the worker stopped there
            return
        results += 1
    status = worker.wait()
    if results < len(tasks):
        arrived.put(
            LLPDataError(
                f"a preparation process (pid {worker.pid}) ended with exit status {status} "
                f"after {results} of its {len(tasks)} shards (out of memory? killed?)"
            )
        )


def _shard_worker(parent: int) -> None:
    """A preparation process started by ``parent``: reads its ``(job, path)`` shards
    (pickled) on stdin, writes them, and writes each result (or the error that stopped
    it, then nothing more), pickled, on its original stdout (what else would print
    there goes to stderr). Ends early once ``parent`` has ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if os.getppid() != parent:  # ended while this process was starting
        return
    try:
        tasks = pickle.load(sys.stdin.buffer)
    except (EOFError, pickle.UnpicklingError):  # the parent ended while handing them over
        return
    for job, path in tasks:
        try:
            result = _write_shard(job, path, parent)
        except _ParentGone:
            return
        except Exception as e:  # noqa: BLE001 - handed to the parent, which raises it
            try:
                pickle.loads(pickle.dumps(e))
            except Exception:  # noqa: BLE001 - an error that cannot cross processes
                e = LLPDataError(f"{type(e).__name__}: {e}")
            pickle.dump(e, out)
            out.flush()
            return
        try:
            pickle.dump(result, out)
            out.flush()
        except BrokenPipeError:  # the parent is gone
            return


def cache_dir(
    root: PathLike, annotation_dir: PathLike | None = None, tfds_dir: PathLike | None = None
) -> Path:
    """The folder of one (feature root, annotation dir) pair's prepared datasets.

    ``<tfds_dir or the TFDS default>/llp_<hash>``, where ``<hash>`` is 12 hex
    digits of the SHA-256 of both absolute paths. The TFDS ``data_dir`` is a
    subfolder named by :func:`input_fingerprint`, so edited inputs are
    prepared again.
    """
    root = Path(root).resolve()
    annotations = Path(annotation_dir).resolve() if annotation_dir is not None else root
    digest = hashlib.sha256(f"{root}\n{annotations}".encode()).hexdigest()[:12]
    base = Path(tfds_dir) if tfds_dir is not None else Path(tfds.core.constants.DATA_DIR)
    return base.expanduser() / f"llp_{digest}"


def input_fingerprint(root: PathLike, annotation_dir: PathLike | None = None) -> str:
    """16 hex digits naming what a prepared dataset was built from.

    Hashes the bytes of the five annotation CSVs and, for every file of the
    three feature folders, its name, size, modification time, status-change time
    (``ctime``) and inode: editing a CSV, or adding, removing or replacing a feature
    file, changes it. ``ctime`` is what catches a file replaced by ``cp -p``,
    ``rsync -a`` or ``touch -r`` (they set the size and mtime back; the kernel sets the
    ctime at every change and no tool sets it back); it also changes on ``chmod``,
    ``chown``, a new hard link, or a copy of the folder elsewhere (new inodes too), each
    of which costs one needless preparation. One ``stat`` per feature file, no read
    (docs/performance.md: 0.14 s of CPU, 0.3-0.75 s on 2 busy cores, for the 35,547
    files of LLP). A broken symbolic link, or a file that cannot be looked at, is an
    error naming it.
    """
    root = Path(root)
    annotations = Path(annotation_dir) if annotation_dir is not None else root
    h = hashlib.sha256()
    for csv in [*LLP_SPLIT_CSV.values(), *LLP_DENSE_CSV.values()]:
        path = annotations / csv
        h.update(f"{csv}\n".encode())
        try:
            h.update(path.read_bytes())
        except FileNotFoundError:
            h.update(b"<missing>")
        except OSError as e:
            raise LLPDataError(f"{path}: cannot read annotation file: {e.strerror or e}") from e
    for folder in FEATURE_FOLDERS.values():
        listing = []  # "name size mtime ctime inode" of each file (of a link's target)
        try:
            with os.scandir(root / folder) as entries:
                for entry in entries:
                    try:
                        st = entry.stat()
                    except OSError as e:
                        raise _unusable_entry(entry, e) from None
                    listing.append(
                        f"{entry.name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t"
                        f"{st.st_ino}"
                    )
        except OSError as e:
            raise LLPDataError(
                f"{root / folder}: cannot list the feature folder: {e.strerror or e}"
            ) from e
        listing.sort()
        h.update(f"{folder}\n".encode())
        h.update("\n".join(listing).encode())
    return h.hexdigest()[:16]


def _unusable_entry(entry: os.DirEntry, e: OSError) -> LLPDataError:
    """The error for a file of a feature folder that cannot be looked at: named, with
    what to do."""
    path = entry.path
    if isinstance(e, FileNotFoundError) and entry.is_symlink():
        try:
            target = f"to {os.readlink(path)}, which does not exist"
        except OSError:
            target = "its target does not exist"
        return LLPDataError(
            f"{path}: a broken symbolic link ({target}) in a feature folder: restore its "
            f"target, or remove the link (a video of the CSVs without this file is then left "
            f"out as missing)"
        )
    return LLPDataError(
        f"{path}: cannot look at this file of a feature folder ({e.strerror or e}): fix its "
        f"permissions or remove it"
    )


def _not_unprepared_variant(record: logging.LogRecord) -> bool:
    return "has no dataset_info.json" not in record.getMessage()


@contextlib.contextmanager
def _no_unprepared_variant_warning():
    """Hides TFDS's "Variant folder … has no dataset_info.json" while :func:`prepare` looks
    for a prepared copy: not finding one is expected, and :func:`prepare` logs itself which
    copy is used or why one is built."""
    absl = logging.getLogger("absl")
    absl.addFilter(_not_unprepared_variant)
    try:
        yield
    finally:
        absl.removeFilter(_not_unprepared_variant)


class DamagedCopyError(LLPDataError):
    """The prepared copy cannot be read (``data_dir``: its folder)."""

    def __init__(self, data_dir: Path, problem: str):
        super().__init__(f"the prepared copy in {data_dir} cannot be used: {problem}")
        self.data_dir, self.problem = Path(data_dir), problem


def prepared_copy(builder: Llp) -> Path:
    """The folder of one prepared copy (``cache_dir(...)/<fingerprint>``): what is moved
    aside when damaged (the builder's ``data_dir`` is its ``llp/<version>`` inside)."""
    return Path(builder.data_dir).parents[1]


def verify_prepared(builder: Llp) -> str | None:
    """Cheap checks of a prepared copy, run each time it is opened: every shard file there
    with the split's recorded byte count (a truncated, emptied or deleted shard), the
    labels sidecar readable with one row per example. The first problem, or None."""
    for split, info in builder.info.splits.items():
        paths = [Path(p) for p in info.filepaths]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            return f"{missing[0].name} is missing"
        size = sum(p.stat().st_size for p in paths)
        if size != int(info.num_bytes):
            return f"the {split} shards hold {size} bytes, {int(info.num_bytes)} were written"
        labels = _labels_path(builder.data_dir, split)
        try:
            with np.load(labels, allow_pickle=False) as z:
                rows = len(z["id"])
        except Exception as e:  # noqa: BLE001 - zip, npy and key errors alike: unreadable
            return f"{labels.name} cannot be read ({type(e).__name__}: {e})"
        if rows != info.num_examples:
            return f"{labels.name} holds {rows} videos, the {split} split {info.num_examples}"
    return None


def _quarantine(data_dir: Path, problem: str, rebuild: bool = True) -> Path:
    """Moves a damaged copy aside (removed with the other stale copies once a new one is
    prepared); returns where it went."""
    aside = data_dir.with_name(f"{data_dir.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(data_dir, aside)
    logger.warning(
        "LLP: the prepared copy in %s cannot be used (%s); moved it to %s%s",
        data_dir,
        problem,
        aside,
        " and preparing it again from the inputs" if rebuild else "",
    )
    return aside


def _open_prepared(annotation_dir, data_dir: Path) -> tuple[Llp | None, bool, str | None]:
    """``(builder, prepared, problem)`` for ``data_dir``: ``problem`` when it holds a copy
    that fails :func:`verify_prepared` or whose ``dataset_info.json`` cannot be read."""
    try:
        with _no_unprepared_variant_warning():
            builder = Llp(annotation_dir=annotation_dir, data_dir=data_dir)
            prepared = builder.is_prepared()
    except Exception as e:  # noqa: BLE001 - TFDS raises JSON, protobuf and OS errors alike
        return None, False, f"its dataset_info.json cannot be read ({type(e).__name__}: {e})"
    problem = verify_prepared(builder) if prepared else None
    return builder, prepared and problem is None, problem


def _remove_incomplete(data_dir: Path) -> None:
    """Removes what a killed preparation of these inputs left (TFDS's
    ``llp/incomplete.*`` folders); only called while holding the preparation lock, so no
    live process is writing them."""
    for left in sorted((data_dir / "llp").glob("incomplete.*")):
        logger.warning("LLP: removing %s, left by a preparation that did not finish", left)
        shutil.rmtree(left, ignore_errors=True)


def prepare(
    root: PathLike,
    annotation_dir: PathLike | None = None,
    tfds_dir: PathLike | None = None,
    processes: int = 0,
) -> Llp:
    """Builds the TFDS dataset of ``root`` unless one built from the same inputs exists.

    The dataset lives in ``cache_dir(...)/<input_fingerprint(...)>``. A cache
    built from other inputs (a CSV edited, a feature file replaced) is
    replaced; which one is used, or why it is rebuilt, is logged. One process at a
    time prepares the same inputs (``<fingerprint>.lock``): another waits for it and
    uses its copy. A copy that fails :func:`verify_prepared` is moved aside and
    prepared again; what a killed preparation left is removed. ``processes`` write the
    shards (:func:`preparation_processes`; 0: one per core for large inputs). A full disk
    (here or in a worker process) is one :class:`fileio.DiskFullError` naming the copy's
    folder, what was written removed: the same call prepares it once there is room.

    Returns:
      The builder, ready for ``as_data_source``.
    """
    missing = [folder for folder in FEATURE_FOLDERS.values() if not (Path(root) / folder).is_dir()]
    if missing:
        raise LLPDataError(
            f"{root}: expected the LLP feature folders {sorted(FEATURE_FOLDERS.values())} there, "
            f"missing {missing}. {' '.join(Llp.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}"
        )
    parent = cache_dir(root, annotation_dir, tfds_dir)
    fingerprint = input_fingerprint(root, annotation_dir)
    data_dir = parent / fingerprint
    builder, prepared, problem = _open_prepared(annotation_dir, data_dir)
    if prepared:
        logger.info("LLP: using the dataset prepared from these inputs in %s", data_dir)
        return builder

    def waiting(holder: dict) -> None:
        logger.warning(
            "LLP: waiting for %s, which is preparing the same inputs into %s",
            locks.describe(holder),
            data_dir,
        )

    try:
        parent.mkdir(parents=True, exist_ok=True)
        with locks.exclusive(os.fspath(parent / f"{fingerprint}.lock"), wait=True, on_busy=waiting):
            builder, prepared, problem = _open_prepared(annotation_dir, data_dir)  # holding it
            if prepared:
                logger.info("LLP: using the dataset prepared from these inputs in %s", data_dir)
                return builder
            if problem is not None:
                _quarantine(data_dir, problem)
                builder, _, _ = _open_prepared(annotation_dir, data_dir)
            _remove_incomplete(data_dir)
            builder.processes = processes
            return _build(builder, root, parent, fingerprint)
    except locks.LockUnsupportedError as e:
        raise LLPDataError(f"cannot prepare into {parent}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a full disk in TFDS, numpy or a worker: one line
        if not fileio.is_disk_full(e):
            raise
        full = fileio.DiskFullError(os.fspath(data_dir), e if isinstance(e, OSError) else None)
        full.add_note(
            "while preparing the LLP copy; what it had written is removed; "
            "config.data.tfds_dir chooses where it goes"
        )
        raise full from None


def _build(builder: Llp, root: PathLike, parent: Path, fingerprint: str) -> Llp:
    data_dir = parent / fingerprint
    stale = sorted(p for p in parent.glob("*") if p.is_dir() and p.name != fingerprint)
    changed = [p for p in stale if ".damaged-" not in p.name]
    logger.warning(
        "LLP: preparing %s into %s%s",
        root,
        data_dir,
        f" (the annotation CSVs or feature files changed since {changed[-1]} was prepared; "
        "it will be replaced)"
        if changed
        else "",
    )
    start = time.monotonic()
    config = tfds.download.DownloadConfig(manual_dir=os.fspath(root), try_download_gcs=False)
    builder.download_and_prepare(download_config=config)
    seconds = time.monotonic() - start
    videos = sum(split.num_examples for split in builder.info.splits.values())
    logger.warning(
        "LLP: prepared %d videos in %.0f s (%.0f videos/s), %.2f GB in %s",
        videos,
        seconds,
        videos / max(seconds, 1e-9),
        builder.info.dataset_size / 1e9,
        data_dir,
    )
    problem = verify_prepared(builder)
    if problem is not None:
        raise DamagedCopyError(
            prepared_copy(builder), f"{problem} right after preparing it (disk full?)"
        )
    for old in stale:
        shutil.rmtree(old, ignore_errors=True)
    return builder


def feature_shapes(builder: Llp, pool_frames: bool = False) -> dict[str, tuple[int, ...]]:
    """Per-video feature shapes of the prepared dataset (``video_2d`` with the frames of
    each second averaged when ``pool_frames``)."""
    shapes = {key: tuple(builder.info.features[key].shape) for key in FEATURE_FOLDERS}
    if pool_frames:
        steps, dim = shapes["video_2d"]
        shapes["video_2d"] = (steps // LLP_FRAMES_PER_SEGMENT, dim)
    return shapes


def split_feature_bytes(
    root: PathLike,
    split: str,
    *,
    annotation_dir: PathLike | None = None,
    tfds_dir: PathLike | None = None,
    pool_frames: bool = False,
    prepare_processes: int = 0,
    prepared: Llp | None = None,
) -> int:
    """Bytes the features of one split take in memory (float32), without reading them
    (preparing the copy first if there is none and no ``prepared`` builder is given)."""
    builder = prepared or prepare(root, annotation_dir, tfds_dir, prepare_processes)
    per_video = sum(
        4 * int(np.prod(shape)) for shape in feature_shapes(builder, pool_frames).values()
    )
    return builder.info.splits[split].num_examples * per_video


def read_examples(source, indices, data_dir: Path) -> list:
    """``source``'s examples ``indices``; :class:`DamagedCopyError` when a read fails (a
    corrupted or truncated shard: Riegeli's errors name no dataset)."""
    try:
        return source.__getitems__(list(indices)) if len(indices) else []
    except Exception as e:  # noqa: BLE001 - array_record/Riegeli raise RuntimeError, OSError...
        raise DamagedCopyError(data_dir, f"reading it failed ({type(e).__name__}: {e})") from None


def streamed_reader(source, copy: Path) -> Callable[[list[int]], list]:
    """``StreamedSplit``'s ``read`` for a prepared split: a read that fails in the middle
    of training moves the copy aside, so that the next run prepares it again."""

    def read(indices: list[int]) -> list:
        try:
            return read_examples(source, indices, copy)
        except DamagedCopyError as e:  # found while training: repaired by the next run
            if e.data_dir.exists():
                aside = _quarantine(e.data_dir, e.problem, rebuild=False)
                raise DamagedCopyError(
                    e.data_dir,
                    f"{e.problem}; moved it to {aside}: re-run the same command to prepare "
                    f"it again (training resumes from its last checkpoint)",
                ) from None
            raise

    return read
