"""The built-in datasets, as ``coleaf_jax.registry`` declares them: LLP and the
synthetic set in its layout, UnAV-100 and the synthetic set in that one.

Each provides ``<name>_splits(config, workdir, splits, pool_frames)`` and, per
layout, its class names, class count and reader of a feature folder without
annotations (``parse.py --features``).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from coleaf_jax.data import llp, pipeline, synthetic, unav100
from coleaf_jax.data.classes import LLP_CLASSES
from coleaf_jax.data.splits import SplitArrays

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- LLP layout


def llp_splits(config, workdir: str, splits, pool_frames: bool) -> dict[str, SplitArrays]:
    """LLP from ``config.data.root`` (features) and ``data.annotation_dir`` (CSVs)."""
    del workdir
    if not config.data.root:
        raise ValueError(
            "config.data.root is required for LLP: the folder holding vggish/, "
            "res152/ and r2plus1d_18/ (pass --config.data.root=/path/to/LLP)"
        )
    return _llp_layout(config, config.data.root, config.data.tfds_dir or None, splits, pool_frames)


def synthetic_splits(config, workdir: str, splits, pool_frames: bool) -> dict[str, SplitArrays]:
    """The embedded synthetic set in the LLP layout, generated on first use."""
    root = ensure_synthetic(config, workdir)
    tfds_dir = config.data.tfds_dir or os.path.join(root, "tfds")
    return _llp_layout(config, root, tfds_dir, splits, pool_frames)


def _llp_layout(config, root, tfds_dir, splits, pool_frames) -> dict[str, SplitArrays]:
    common = dict(
        annotation_dir=config.data.annotation_dir or None,
        tfds_dir=tfds_dir,
        pool_frames=pool_frames,
        prepare_processes=config.data.prepare_processes,
    )
    # One look at the inputs for all splits (their fingerprint stats every feature file).
    common["prepared"] = llp.prepare(
        root, common["annotation_dir"], tfds_dir, common["prepare_processes"]
    )
    streamed = streamed_splits(config, splits, lambda s: llp.split_feature_bytes(root, s, **common))
    out = {
        s: llp.load_split(
            root,
            s,
            allow_missing=config.data.allow_missing,
            allow_split_overlap=config.data.allow_split_overlap,
            stream=s in streamed,
            **common,
        )
        for s in splits
    }
    if config.data.pseudo_labels and "train" in out:
        out["train"].update(llp.load_pseudo_labels(root, out["train"]["id"]))
    return out


def streamed_splits(config, splits, feature_bytes) -> set[str]:
    """The splits to stream: held in memory, val and test first (read every epoch), then
    train, while their features fit ``config.data.resident_max_gib`` together; the rest
    are read from disk batch by batch. ``feature_bytes(split)`` gives a split's size."""
    budget = config.data.resident_max_gib * 2**30
    streamed = set()
    for split in sorted(splits, key=lambda s: s == "train"):
        size = feature_bytes(split)
        if size <= budget:
            budget -= size
        else:
            streamed.add(split)
    if streamed:
        logger.info(
            "streaming %s from disk (features over config.data.resident_max_gib = %g GiB)",
            ", ".join(sorted(streamed)),
            config.data.resident_max_gib,
        )
    return streamed


def llp_class_names(config, workdir: str) -> list[str]:
    del config, workdir
    return list(LLP_CLASSES)


def llp_num_classes(config) -> int:
    del config
    return len(LLP_CLASSES)


def llp_feature_dir(config, directory: str, ids=None) -> dict[str, np.ndarray]:
    """``vggish/``, ``res152/``, ``r2plus1d_18/`` under ``directory``."""
    return llp.load_feature_dir(directory, ids, pool_frames=pipeline.can_pool_frames(config))


# ----------------------------------------------------------------------------- synthetic


def synthetic_root(config, workdir: str) -> str:
    """Where a synthetic dataset lives: ``data.root`` or ``<workdir>/data``."""
    return config.data.root or os.path.join(workdir, "data")


def ensure_synthetic(config, workdir: str) -> str:
    """Generates the synthetic dataset once (the generator's ``.complete`` marker records
    it, so a folder written by the CLI with other settings is used as it is).

    ``data.dataset = 'synthetic'`` writes the LLP layout; ``'synthetic_unav100'``
    the variable-length UnAV-100 layout.
    """
    root = synthetic_root(config, workdir)
    if not os.path.exists(os.path.join(root, synthetic.COMPLETE_MARKER)):
        if config.data.dataset == "synthetic_unav100":
            cfg = synthetic.SyntheticUnavConfig(
                num_videos=config.data.synthetic_videos,
                num_classes=config.data.num_classes,
                seed=config.data.synthetic_seed,
            )
            synthetic.generate_unav(root, cfg, verbose=True)
        else:
            cfg = synthetic.SyntheticConfig(
                num_videos=config.data.synthetic_videos, seed=config.data.synthetic_seed
            )
            synthetic.generate(root, cfg, verbose=True)
    return root


# ----------------------------------------------------------------------------- UnAV-100


def unav100_splits(config, workdir: str, splits, pool_frames: bool) -> dict[str, SplitArrays]:
    """UnAV-100 from ``config.data.root`` (annotations/ and av_features/)."""
    del workdir, pool_frames  # features are pooled to one per second at load
    if not config.data.root:
        raise ValueError(
            "config.data.root is required for UnAV-100: the folder holding "
            "annotations/unav100_annotations.json and av_features/ (pass "
            "--config.data.root=/path/to/unav100)"
        )
    return _unav_layout(config, config.data.root, splits)


def synthetic_unav100_splits(
    config, workdir: str, splits, pool_frames: bool
) -> dict[str, SplitArrays]:
    """The variable-length synthetic set in the UnAV-100 layout, generated on first use."""
    del pool_frames
    return _unav_layout(config, ensure_synthetic(config, workdir), splits)


def _unav_layout(config, root: str, splits) -> dict[str, SplitArrays]:
    out = {}
    for s in splits:
        split = SplitArrays(
            unav100.load_split(
                root,
                s,
                features=config.data.unav_features,
                overlap=config.data.unav_overlap,
                annotation_file=config.data.unav_annotation_file or None,
                num_classes=config.data.num_classes,
            )
        )
        split.skipped = _unav_skipped(config, root, s, split["id"])
        if split.skipped and s != "train" and not config.data.allow_missing:
            raise llp.MissingFeatureError(
                f"UnAV-100 {s}: {len(split.skipped)} videos have no feature files under "
                f"{os.path.join(root, unav100.FEATURE_DIR)} (first: "
                f"{', '.join(split.skipped[:5])}); their scores would be missing from every "
                f"{s} result. Restore the files, or pass --config.data.allow_missing=True to "
                f"score the remaining videos (the counts are then recorded in every metrics "
                f"file)"
            )
        out[s] = split
    return out


def _unav_annotation_file(config, root: str) -> str:
    return config.data.unav_annotation_file or os.path.join(root, unav100.ANNOTATION_FILE)


def _unav_skipped(config, root: str, split: str, loaded_ids) -> tuple[str, ...]:
    """The annotated videos of an UnAV-100 split that ``unav100.load_split`` left out."""
    videos = unav100.read_annotations(_unav_annotation_file(config, root), config.data.num_classes)
    expected = {v.video_id for v in videos[0].values() if v.subset == unav100.SUBSETS[split]}
    return tuple(sorted(expected - set(np.asarray(loaded_ids).tolist())))


def unav100_class_names(config, workdir: str) -> list[str]:
    root = (
        synthetic_root(config, workdir)
        if config.data.dataset == "synthetic_unav100"
        else config.data.root
    )
    return unav100.read_annotations(_unav_annotation_file(config, root), config.data.num_classes)[1]


def unav100_num_classes(config) -> int:
    return config.data.num_classes


def unav100_feature_dir(config, directory: str, ids=None) -> dict[str, np.ndarray]:
    """``<id>_{vggish,rgb,flow}.npy`` (or ``onepeace``'s files) under ``directory``."""
    return unav100.load_feature_dir(directory, ids, features=config.data.unav_features)
