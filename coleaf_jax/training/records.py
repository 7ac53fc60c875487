"""A run's records in its workdir: ``metrics.jsonl`` (one row per epoch: losses,
validation scores, timings) and ``test_metrics.json`` (the best checkpoint's test
scores), written so that a kill at any moment leaves them readable.
"""

from __future__ import annotations

import json
import os

from coleaf_jax.training.checkpoints import CheckpointDamagedError, best_epoch, selection_scores

RESULT_FILE = "test_metrics.json"
METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str) -> dict[int, dict]:
    """The rows of ``metrics.jsonl`` by epoch (of rows for one epoch, the last). A line cut
    by a kill mid-write, or a row without an epoch, is skipped."""
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut by a kill mid-write
                    continue
                if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                    rows[row["epoch"]] = row
    return rows


def keep_metrics_rows(path: str, last_epoch: int) -> None:
    """Keeps one row per epoch ``<= last_epoch`` (the latest checkpoint) in metrics.jsonl:
    rows of epochs that are trained again after a resume are not duplicated."""
    if not os.path.exists(path):
        return
    rows = {epoch: row for epoch, row in read_metrics(path).items() if epoch <= last_epoch}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for epoch in sorted(rows):
            f.write(json.dumps(rows[epoch]) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    return result if result.get("epoch") == best_epoch(scores) else None
