"""A run's records in its workdir: ``metrics.jsonl`` (one row per epoch: losses,
validation scores, timings) and ``test_metrics.json`` (the best checkpoint's test
scores), written so that a kill or a full disk at any moment leaves them readable
(:mod:`coleaf_jax.fileio`): rewrites are atomic, an append that fails is cut back, and
a last line cut anyway (a kill mid-append) is skipped on reading with a warning.
"""

from __future__ import annotations

import json
import os

from coleaf_jax import fileio
from coleaf_jax.training.checkpoints import CheckpointDamagedError, best_epoch, selection_scores

RESULT_FILE = "test_metrics.json"
METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str) -> dict[int, dict]:
    """The rows of ``metrics.jsonl`` by epoch (of rows for one epoch, the last). A last
    line cut by a kill mid-write, or any line that is not a row, is skipped with a
    warning naming the file (``fileio.read_jsonl``); so is a row without an epoch."""
    rows, no_epoch = {}, 0
    for row in fileio.read_jsonl(path):
        if isinstance(row.get("epoch"), int):
            rows[row["epoch"]] = row
        else:
            no_epoch += 1
    if no_epoch:
        fileio.warning(f"{path}: {no_epoch} row(s) without an epoch; skipped")
    return rows


def keep_metrics_rows(path: str, last_epoch: int) -> None:
    """Keeps one row per epoch ``<= last_epoch`` (the latest checkpoint) in metrics.jsonl:
    rows of epochs that are trained again after a resume are not duplicated. The file is
    rewritten whole or not at all (a full disk: ``fileio.DiskFullError``, the old file
    kept)."""
    if not os.path.exists(path):
        return
    rows = {epoch: row for epoch, row in read_metrics(path).items() if epoch <= last_epoch}
    fileio.atomic_write_text(path, "".join(json.dumps(rows[e]) + "\n" for e in sorted(rows)))


def append_jsonl(path: str, record: dict) -> int:
    """Appends ``record`` as one line (``fileio.append_line``: a failed append is cut
    back); returns the file's size before it, so that a caller whose next step fails
    (the epoch's checkpoint) can take the row back with ``fileio.truncate``."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    fileio.append_line(path, json.dumps(record))
    return size


def finished_result(mngr, workdir: str, num_epochs: int) -> dict | None:
    """The stored test result when the run in ``workdir`` (its checkpoints: ``mngr``) is
    complete: it trained at least ``num_epochs`` epochs and ``test_metrics.json`` scores
    its best checkpoint."""
    path = os.path.join(workdir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    try:
        scores = selection_scores(mngr)
    except CheckpointDamagedError:  # the normal path names it and falls back
        return None
    if not scores or max(scores) < num_epochs:
        return None
    try:
        result = fileio.load_json(path, "the run's test scores", require_object=True)
    except (OSError, ValueError):  # unreadable (JSON, nesting): the best is tested again
        return None
    return result if result.get("epoch") == best_epoch(scores) else None
