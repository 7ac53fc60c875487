"""A static HTML run report: ``WORKDIR/report.html``.

    python -m coleaf_jax.evaluation.report --config configs/llp.py --workdir runs/llp
    python -m coleaf_jax.evaluation.report --workdir runs/llp   # the run's own config.json

Sections: the run and its config; training curves (loss terms, validation
scores per epoch, from ``metrics.jsonl``); the final 2×9 test table next to
the paper's numbers for the same setting (``coleaf_jax.evaluation.paper``); per-class
F-scores; timelines of the best and worst test videos (prediction above,
truth below). Pictures are embedded, so the file can be copied anywhere.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import sys
import time

import numpy as np

from coleaf_jax import cli, fileio, registry
from coleaf_jax.config import apply_overrides, config_flags_as_set, load_config_file
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation import evaluate, metrics, paper, plots, runs
from coleaf_jax.training import records
from coleaf_jax.training import workdir as workdir_lib

REPORT_FILE = "report.html"
LOSS_KEYS = ("anchor_loss", "ref_loss", "backbone", "nce_a", "nce_v", "correlation", "ref_kd")
CURVE_SCORES = ("seg_a", "seg_ao", "seg_v", "seg_vo", "seg_av")

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}tr.paper td{color:#777;font-style:italic}
img{max-width:100%;border:1px solid #eee;margin:6px 0}pre{background:#f8f8f8;padding:8px;font-size:11px;
max-height:320px;overflow:auto}.note{color:#666;font-size:12px}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _score_table(rows: list[tuple[str, dict, str]]) -> str:
    """rows: (label, {score name: value}, css class)."""
    head = "".join(f"<th>{metrics.SCORE_TITLES[n]}</th>" for n in metrics.SCORE_NAMES)
    body = []
    for label, values, cls in rows:
        cells = "".join(
            f"<td>{values[n]:.1f}</td>" if n in values else "<td>–</td>"
            for n in metrics.SCORE_NAMES
        )
        body.append(f'<tr class="{cls}"><td class="l">{html.escape(label)}</td>{cells}</tr>')
    return f'<table><tr><th class="l"></th>{head}</tr>{"".join(body)}</table>'


def _read_history(workdir: str) -> list[dict]:
    """One row per epoch (a resumed run rewrites later epochs; a cut line is skipped)."""
    by_epoch = records.read_metrics(os.path.join(workdir, records.METRICS_FILE))
    return [by_epoch[k] for k in sorted(by_epoch)]


def build_report(
    config,
    workdir: str,
    *,
    test: dict | None = None,
    num_timelines: int = 3,
    checkpoint: int | None = None,
    predictions: dict | None = None,
) -> str:
    """Writes ``WORKDIR/report.html`` for a finished run; returns its path.

    ``test`` is the test split (loaded from ``config.data`` when omitted); the
    best checkpoint (or ``checkpoint``) is restored for the per-class scores
    and the timelines, unless ``predictions`` (``evaluate.predict_split``'s dict on
    ``test``, of checkpoint ``checkpoint``) are given, as training does.
    """
    parts = [f"<h1>CoLeaF-JAX run report: {html.escape(config.name)}</h1>"]
    result_path = os.path.join(workdir, "test_metrics.json")
    result = None
    if os.path.exists(result_path):
        try:  # JSON, UTF-8, nesting or not an object: a damaged record, named
            result = fileio.load_json(
                result_path, "the run's test scores (a JSON object)", require_object=True
            )
        except fileio.JSONFileError as e:
            raise ValueError(
                f"{result_path}: not a readable JSON record ({e.reason}); expected "
                f"{e.what}; delete it and run train.py again to re-test the best checkpoint"
            ) from None
    summary = [
        ("workdir", os.path.abspath(workdir)),
        ("method", config.method),
        ("Anchor", config.model.anchor),
        ("dataset", config.data.dataset),
        ("written", time.strftime("%Y-%m-%d %H:%M")),
    ]
    if result:
        summary += [
            ("best epoch (validation)", result["epoch"]),
            ("thresholds", result["thresholds"]),
        ]
    parts.append(
        "<table>"
        + "".join(
            f'<tr><th class="l">{k}</th><td class="l">{html.escape(str(v))}</td></tr>'
            for k, v in summary
        )
        + "</table>"
    )

    history = _read_history(workdir)
    imported = ""  # a model imported from a released checkpoint has no training records
    if os.path.exists(os.path.join(workdir, workdir_lib.IMPORT_RECORD)):
        imported = f"a released model imported by python -m coleaf_jax.imports ({workdir_lib.IMPORT_RECORD})"
    parts.append("<h2>Training curves</h2>")
    if history:
        losses = [k for k in LOSS_KEYS if k in history[0]["train"]]
        fig = plots.plot_curves(
            history, losses, [k for k in CURVE_SCORES if k in history[0]["val"]]
        )
        parts.append(_img(plots.save_png(fig), "training curves"))
        parts.append(
            f'<p class="note">{len(history)} epochs; validation selection score per epoch: '
            + ", ".join(f"{h['val_selection']:.1f}" for h in history)
            + "</p>"
        )
    elif imported:
        parts.append(f'<p class="note">{imported}: not trained here</p>')
    else:
        parts.append('<p class="note">no metrics.jsonl in this workdir</p>')

    parts.append("<h2>Test scores (%)</h2>")
    if result:
        rows = [
            (f"ours {lvl}", {n: result[f"{key}_{n}"] for n in metrics.SCORE_NAMES}, "")
            for lvl, key in (("segment", "seg"), ("event", "evt"))
        ]
        published = paper.paper_scores(config)
        if published:
            source, values = published
            rows += [
                (f"paper {lvl}", values[lvl], "paper")
                for lvl in ("segment", "event")
                if lvl in values
            ]
            note = f"Paper rows: {source} (LLP test, standard thresholds)."
            if not registry.dataset(config.data.dataset).published:
                note += " This run is on other data, so they are a reference, not a target."
        else:
            note = "The paper reports no LLP numbers for this setting."
        parts.append(_score_table(rows) + f'<p class="note">{html.escape(note)}</p>')
    elif imported:
        parts.append(
            f'<p class="note">{imported}: its test scores come from eval.py --workdir '
            f"{html.escape(workdir)}</p>"
        )
    else:
        parts.append('<p class="note">no test_metrics.json yet: the run has not finished</p>')

    if predictions is not None and test is not None:
        parts += _prediction_sections(config, workdir, test, predictions, checkpoint, num_timelines)
    else:
        try:
            test = (
                test
                if test is not None
                else pipeline.load_splits(config, workdir, ("test",))["test"]
            )
            _, anchor, params, step = runs.restore_anchor(config, workdir, test, checkpoint)
            probs = evaluate.predict_with_config(config, anchor, params, test)
        except (FileNotFoundError, ValueError) as e:
            parts.append(f'<p class="note">no predictions: {html.escape(str(e))}</p>')
        else:
            parts += _prediction_sections(config, workdir, test, probs, step, num_timelines)

    parts.append(
        "<h2>Config</h2><pre>" + html.escape(config.to_json_best_effort(indent=2)) + "</pre>"
    )
    path = os.path.join(workdir, REPORT_FILE)
    fileio.atomic_write_text(  # whole or not at all (a full disk: fileio.DiskFullError)
        path,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(config.name)}"
        f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>",
    )
    return path


def _prediction_sections(config, workdir, test, probs, step, num_timelines) -> list[str]:
    thresholds = evaluate.thresholds_from_config(config)
    pred_a, pred_v = evaluate.decisions(probs, thresholds)
    gt_a, gt_v, mask = test["label_audio"], test["label_visual"], test.get("mask")
    names = pipeline.class_names(config, workdir)
    out = [f"<h2>Per-class segment F-scores (%), test, epoch {step}</h2>"]
    pa, ga = (
        metrics.modality_decisions(pred_a, pred_v),
        metrics.modality_decisions(gt_a.astype(bool), gt_v.astype(bool)),
    )
    cols = ("a", "v", "av", "ao", "vo")
    table = {k: metrics.per_class_f_scores(pa[k], ga[k], mask) for k in cols}
    n_true = (ga["a"] | ga["v"]).any(axis=1).sum(axis=0)
    head = "".join(f"<th>{metrics.SCORE_TITLES[k]}</th>" for k in cols)
    rows = []
    for c in range(len(names)):
        cells = "".join(
            "<td>–</td>" if np.isnan(table[k][c]) else f"<td>{table[k][c]:.1f}</td>" for k in cols
        )
        rows.append(
            f'<tr><td class="l">{html.escape(str(names[c]))}</td><td>{n_true[c]}</td>{cells}</tr>'
        )
    out.append(
        f'<table><tr><th class="l">class</th><th>videos</th>{head}</tr>{"".join(rows)}</table>'
        '<p class="note">Mean over the videos where the class is predicted or true of that '
        "video's F for the class; – where it occurs nowhere.</p>"
    )

    scores = metrics.per_video_scores(pred_a, pred_v, gt_a, gt_v, mask)
    order = np.argsort(scores, kind="stable")
    k = min(num_timelines, len(order) // 2 or 1)
    out.append(
        "<h2>Timelines: best and worst test videos</h2>"
        '<p class="note">Ranked by segment-level Type@AV of the video. Bars: prediction; '
        "hatched bars below: ground truth.</p>"
    )
    ids = test.get("id", np.arange(len(scores)).astype(str))
    for label, picks in (("best", order[::-1][:k]), ("worst", order[:k])):
        for i in picks:
            length = int(mask[i].sum()) if mask is not None else None
            fig = plots.plot_timeline(
                ids[i],
                names,
                {config.name: (pred_a[i], pred_v[i])},
                (gt_a[i], gt_v[i]),
                length,
                title=f"{label}: {ids[i]} (Type@AV {scores[i]:.1f})",
            )
            out.append(_img(plots.save_png(fig), f"timeline {ids[i]}"))
    return out


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.evaluation.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", help="FILE.py[:variant], as for train.py (default: the run's config.json)"
    )
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timelines", type=int, default=3, help="best and worst videos shown")
    args = parser.parse_args(config_flags_as_set(sys.argv[1:] if argv is None else argv))
    cli.quiet_libraries()
    if args.config:
        config = cli.exit_on_user_error(load_config_file, args.config, args.set)
    else:  # the run's own config.json (a trained or imported run), then --set
        config = cli.exit_on_user_error(runs.run_config, None, args.workdir)
        config = cli.exit_on_user_error(apply_overrides, config, args.set)
    path = cli.exit_on_user_error(build_report, config, args.workdir, num_timelines=args.timelines)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
