"""Parsing: segment decisions → typed events, the export schema, timelines."""

import csv
import json

import numpy as np
import pytest

from coleaf_jax.evaluation import parsing, plots


def _loop_events(pred_a, pred_v, prob_a, prob_v, ids, names, mask):
    """Reference: walk every video, class and second."""
    out = []
    for i in range(pred_a.shape[0]):
        t_len = int(mask[i].sum())
        for c in range(pred_a.shape[2]):
            for kind in parsing.EVENT_TYPES:
                run = None
                for t in range(t_len + 1):
                    a = t < t_len and pred_a[i, t, c]
                    v = t < t_len and pred_v[i, t, c]
                    on = {
                        "audible-only": a and not v,
                        "visible-only": v and not a,
                        "audible-visible": a and v,
                    }[kind]
                    if on and run is None:
                        run = t
                    if not on and run is not None:
                        p = {
                            "audible-only": prob_a[i, run:t, c],
                            "visible-only": prob_v[i, run:t, c],
                            "audible-visible": np.minimum(prob_a, prob_v)[i, run:t, c],
                        }[kind]
                        out.append(
                            (
                                ids[i],
                                names[c],
                                kind,
                                float(run),
                                float(t),
                                round(float(p.mean()), 4),
                            )
                        )
                        run = None
    return sorted(out)


def test_hand_case():
    pred_a = np.zeros((1, 6, 2), bool)
    pred_v = np.zeros((1, 6, 2), bool)
    pred_a[0, 0:3, 0] = True
    pred_v[0, 1:4, 0] = True
    prob_a = np.full((1, 6, 2), 0.8)
    prob_v = np.full((1, 6, 2), 0.6)
    prob_a[0, 0, 0] = 0.9
    records = parsing.merge_events(pred_a, pred_v, prob_a, prob_v, ["vid"], ["dog", "cat"])
    assert [(r["type"], r["onset"], r["offset"], r["score"]) for r in records] == [
        ("audible-only", 0.0, 1.0, 0.9),
        ("audible-visible", 1.0, 3.0, 0.6),
        ("visible-only", 3.0, 4.0, 0.6),
    ]
    assert {r["class"] for r in records} == {"dog"} and {r["video"] for r in records} == {"vid"}


def test_equals_loop_reference_with_masks():
    rng = np.random.default_rng(0)
    n, t, c = 7, 12, 5
    pred_a, pred_v = rng.random((n, t, c)) < 0.4, rng.random((n, t, c)) < 0.4
    prob_a, prob_v = rng.random((n, t, c)), rng.random((n, t, c))
    mask = np.arange(t)[None] < rng.integers(1, t + 1, n)[:, None]
    ids, names = [f"v{i}" for i in range(n)], [f"c{k}" for k in range(c)]
    records = parsing.merge_events(pred_a, pred_v, prob_a, prob_v, ids, names, mask)
    got = sorted(
        (r["video"], r["class"], r["type"], r["onset"], r["offset"], r["score"]) for r in records
    )
    assert got == _loop_events(pred_a, pred_v, prob_a, prob_v, ids, names, mask)
    assert len(records) > 50
    # Output order: by video (input order), then onset.
    keys = [(ids.index(r["video"]), r["onset"]) for r in records]
    assert keys == sorted(keys)


def test_export_schema_round_trip(tmp_path):
    pred = np.zeros((1, 4, 1), bool)
    pred[0, 1:3] = True
    records = parsing.merge_events(
        pred, pred, np.full((1, 4, 1), 0.7), np.full((1, 4, 1), 0.9), ["abc"], ["Speech"]
    )
    jsonl, csv_path = parsing.write_events(records, str(tmp_path / "out"))
    with open(jsonl) as f:
        rows = [json.loads(line) for line in f]
    assert rows == [
        {
            "video": "abc",
            "class": "Speech",
            "type": "audible-visible",
            "onset": 1.0,
            "offset": 3.0,
            "score": 0.7,
        }
    ]
    with open(csv_path) as f:
        reader = csv.reader(f)
        assert next(reader) == list(parsing.RECORD_FIELDS)
        assert next(reader) == ["abc", "Speech", "audible-visible", "1.0", "3.0", "0.7"]
    assert parsing.read_events(csv_path) == parsing.read_events(jsonl) == rows


def test_mismatched_names_are_an_error():
    x = np.zeros((2, 3, 4), bool)
    with pytest.raises(ValueError, match="1 video ids and 4 class names"):
        parsing.merge_events(x, x, x, x, ["a"], list("abcd"))


def test_timeline_png(tmp_path):
    a = np.zeros((10, 3), bool)
    v = np.zeros((10, 3), bool)
    a[2:6, 1] = True
    v[4:9, 1] = True
    fig = plots.plot_timeline("vid", ["x", "y", "z"], {"A": (a, v), "B": (v, a)}, (a, v), length=9)
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["y"]  # only classes that are predicted or true get a row
    data = plots.save_png(fig, str(tmp_path / "t.png"))
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "t.png").stat().st_size == len(data)


def test_reading_back_a_damaged_events_file_names_its_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"video": "a"}\n' + "[" * 100000 + "\n")
    with pytest.raises(ValueError, match=rf"^{path}:2: ") as info:
        parsing.read_events(str(path))
    assert "\n" not in str(info.value)
