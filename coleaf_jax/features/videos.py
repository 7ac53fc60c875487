"""``parse.py --video``: video files -> features -> a trained Anchor -> events and pages.

Writes, under ``OUTPUT``: ``events.jsonl`` / ``events.csv`` (as ``--features``),
``pages/<id>.html`` (the video with its timeline, :mod:`~coleaf_jax.features.page`),
``features/`` (the extracted features in the LLP layout, reusable with
``--features``; ``features/videos.json`` records each video's path, duration and
segments, and for a file that held less than its header declared, the header's
``declared_duration`` and the ``warnings``, also shown on its page) and
``timelines/<id>.png`` with ``--timelines``. Every file is written whole or not
at all; videos are capped at ``max_seconds`` (:mod:`~coleaf_jax.features.decode`).
"""

from __future__ import annotations

import os

from coleaf_jax import fileio, registry
from coleaf_jax.data import pipeline
from coleaf_jax.evaluation.parsing import parse_videos
from coleaf_jax.features import decode, extract, page


def check_config(config) -> None:
    """--video extracts HAN's LLP features; the run must have been trained on them."""
    if registry.dataset(config.data.dataset).feature_layout != "llp":
        raise ValueError(
            f"--video extracts HAN's LLP features (VGGish 128-d, ResNet-152 2048-d, R(2+1)D-18 "
            f"512-d); this run's config has data.dataset = {config.data.dataset!r}, whose models "
            f"take other features: use a run trained on LLP (configs/llp.py)"
        )


def parse_video_files(
    config,
    workdir: str,
    output: str,
    videos: list[str],
    weights_dir: str | None,
    *,
    options: extract.Options | None = None,
    step: int | None = None,
    select_thresholds: bool = False,
    timelines: int = 0,
    verbose: bool = True,
    max_seconds: float = decode.DEFAULT_MAX_SECONDS,
    probabilities: bool = False,
) -> list[dict]:
    """Extracts the features of ``videos`` (each at most ``max_seconds`` long), parses them
    with the run's checkpoint (``step``, default: best on validation) and writes the
    outputs (module docstring). A video's warnings are printed (``warning: ...``) and
    recorded."""

    check_config(config)
    if not videos:
        raise ValueError("--video: no video file given")
    paths = [os.fspath(v) for v in videos]
    extract.check_ids(paths)
    for p in paths:  # every file checked before any weight is loaded or frame decoded
        decode.probe(p, max_seconds=max_seconds)
    extractor = extract.Extractor(weights_dir, options or extract.Options(), verbose=verbose)
    feats = []
    folder = os.path.join(output, "features")
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    many = extractor.extract_many(paths, progress=verbose, workers=workers, max_seconds=max_seconds)
    for f in many:
        extract.write_llp(f, folder)
        feats.append(f)
    data = extract.stack_features(feats, pool_frames=pipeline.can_pool_frames(config))
    records = parse_videos(
        config,
        workdir,
        output,
        data=data,
        step=step,
        select_thresholds=select_thresholds,
        timelines=timelines,
        verbose=verbose,
        probabilities=probabilities,
    )
    info = {f.id: f.record() for f in feats}
    fileio.atomic_write_json(os.path.join(folder, "videos.json"), info)
    subtitle = f"{config.name} · {os.path.abspath(workdir)}"
    pages = page.write_video_pages(records, info, output, subtitle)
    if verbose:
        print(
            f"wrote {len(pages)} video pages to {os.path.join(output, 'pages')} and the "
            f"features to {folder}"
        )
    return records
