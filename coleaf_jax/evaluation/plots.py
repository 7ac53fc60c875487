"""Pictures: parsed-video timelines and training curves (matplotlib, PNG).

A timeline has one row per class that is predicted or true in the video:
the predicted audible-only, visible-only and audible-visible segments as
coloured bars and, when the truth is known, the true ones in a thinner,
hatched row just below. Several predictions (two checkpoints, two methods)
are drawn side by side with the same rows.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from coleaf_jax import fileio  # noqa: E402
from coleaf_jax.evaluation import metrics  # noqa: E402

TYPE_COLOURS = {
    "ao": ("audible-only", "#1f77b4"),
    "vo": ("visible-only", "#ff7f0e"),
    "av": ("audible-visible", "#2ca02c"),
}


def _runs_1d(x: np.ndarray) -> list[tuple[int, int]]:
    """``(start, length)`` of the runs of 1s in a 1-D bool array (``metrics.runs``)."""
    start, end, valid = (a[0, 0] for a in metrics.runs(np.asarray(x, bool)[None, None]))
    return [(int(s), int(e - s)) for s, e in zip(start[valid], end[valid])]


def plot_timeline(
    video_id: str,
    class_names,
    predictions: dict[str, tuple[np.ndarray, np.ndarray]],
    truth: tuple[np.ndarray, np.ndarray] | None = None,
    length: int | None = None,
    title: str = "",
):
    """A timeline figure of one video.

    Args:
      predictions: ``{name: (pred_a (T, C), pred_v (T, C))}`` binary decisions,
        one column per entry (e.g. ``{"CoLeaF": ..., "HAN": ...}``).
      truth: ``(gt_a, gt_v)`` ``(T, C)``, drawn under each predicted row.
      length: valid segments (variable-length videos); default ``T``.
    Returns:
      The matplotlib figure (``save_png`` writes it).
    """
    first = next(iter(predictions.values()))[0]
    t_len = length or first.shape[0]
    shown = np.zeros(first.shape[1], bool)
    for a, v in list(predictions.values()) + ([truth] if truth is not None else []):
        shown |= np.asarray(a)[:t_len].any(0) | np.asarray(v)[:t_len].any(0)
    classes = np.flatnonzero(shown)
    rows = max(len(classes), 1)
    fig, axes = plt.subplots(
        1,
        len(predictions),
        squeeze=False,
        sharey=True,
        figsize=(4.2 * len(predictions) + 1.6, 0.55 * rows + 1.3),
    )
    for ax, (name, (a, v)) in zip(axes[0], predictions.items()):
        tracks = [
            (
                metrics.modality_decisions(
                    np.asarray(a, bool)[:t_len], np.asarray(v, bool)[:t_len]
                ),
                0.0,
                0.5,
                None,
            )
        ]
        if truth is not None:
            tracks.append(
                (
                    metrics.modality_decisions(
                        np.asarray(truth[0], bool)[:t_len], np.asarray(truth[1], bool)[:t_len]
                    ),
                    -0.38,
                    0.22,
                    "///",
                )
            )
        for row, c in enumerate(classes):
            y = rows - 1 - row
            for decisions, dy, height, hatch in tracks:
                for key, (_, colour) in TYPE_COLOURS.items():
                    runs = _runs_1d(decisions[key][:, c])
                    if runs:
                        ax.broken_barh(
                            runs,
                            (y + dy - height / 2, height),
                            facecolors=colour,
                            alpha=0.55 if hatch else 0.9,
                            hatch=hatch,
                            edgecolor="white",
                        )
        ax.set_xlim(0, t_len)
        ax.set_xlabel("time (s)")
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xticks(range(0, t_len + 1, max(1, t_len // 10)))
    axes[0][0].set_yticks(range(rows))
    axes[0][0].set_yticklabels([str(class_names[c]) for c in classes[::-1]] or [""], fontsize=8)
    axes[0][0].set_ylim(-0.7, rows - 0.5)
    handles = [Patch(color=colour, label=label) for label, colour in TYPE_COLOURS.values()]
    if truth is not None:
        handles.append(
            Patch(facecolor="grey", alpha=0.55, hatch="///", label="ground truth (below)")
        )
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title or video_id, fontsize=10, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.9))
    return fig


def plot_curves(history: list[dict], loss_keys, score_keys):
    """Training curves: loss terms (left) and validation scores (right) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(11, 3.6))
    for k in loss_keys:
        ax_l.plot(epochs, [h["train"][k] for h in history], marker="o", ms=3, label=k)
    ax_l.set_xlabel("epoch")
    if any(h["train"][k] > 0 for h in history for k in loss_keys):
        # Terms differ by orders of magnitude (raw, unweighted); zeros (a term not yet
        # switched on) are left out.
        ax_l.set_yscale("log", nonpositive="mask")
    ax_l.set_title("training losses (epoch means, unweighted)", fontsize=10)
    ax_l.legend(fontsize=7, ncol=2)
    for k in score_keys:
        level, _, name = k.partition("_")
        label = f"{'segment' if level == 'seg' else 'event'} {metrics.SCORE_TITLES.get(name, name)}"
        ax_s.plot(epochs, [h["val"][k] for h in history], marker="o", ms=3, label=label)
    ax_s.set_xlabel("epoch")
    ax_s.set_ylabel("%")
    ax_s.set_title("validation scores", fontsize=10)
    ax_s.legend(fontsize=7, ncol=2)
    for ax in (ax_l, ax_s):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_png(fig, path: str | None = None, dpi: int = 110) -> bytes:
    """Writes ``fig`` as PNG to ``path`` (if given; whole or not at all:
    ``fileio.atomic_write_bytes``), closes it and returns the bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    data = buf.getvalue()
    if path:
        fileio.atomic_write_bytes(path, data)
    return data
