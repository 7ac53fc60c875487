"""Anchors and datasets by name: two small interfaces the rest of the project reads
instead of branching on names.

An **Anchor** (the branch CoLeaF trains and deploys, docs/method.md §4) declares its
flax module, its backbone loss, which of its outputs JoMoLD's denoising and the
Reference's KD read, whether video frames may be averaged before its first
projection, and its default evaluation and label denoising. A **dataset** declares
how it loads its splits, its classes, how to read a folder of its features without
annotations, and its feature layout. The training step, the objectives, the data
pipeline, the configs, the report and the video-file path look them up here.

Adding one is a file plus its registration, from anywhere (``tests/test_registry.py``
registers a toy Anchor and a toy dataset from outside the package and trains them)::

    from coleaf_jax import registry

    registry.register_anchor(registry.Anchor(
        name="my_anchor", module=build_my_module, backbone_loss=my_loss,
        denoise_prob=("video_prob_a", "video_prob_v")))
    # then, in your config file: config.extensions = ("my_package.my_anchor",)
    #                              config.model.anchor = "my_anchor"

Callables may be given as ``"package.module:attribute"`` strings, imported on first
use (as big_vision imports ``big_vision.models.<name>``): this module imports
neither JAX nor the data stack, so that a config file can read an Anchor's
defaults cheaply. The built-in entries are registered at the bottom.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import Any

Ref = Callable[..., Any] | str  # a callable, or "package.module:attribute"


@functools.cache
def _import(ref: str) -> Callable[..., Any]:
    module, sep, attribute = ref.partition(":")
    if not sep:
        raise ValueError(f"{ref!r}: expected 'package.module:attribute'")
    return getattr(importlib.import_module(module), attribute)


def resolve(ref: Ref) -> Callable[..., Any]:
    """The callable ``ref`` names (itself when it is one)."""
    return _import(ref) if isinstance(ref, str) else ref


@dataclasses.dataclass(frozen=True)
class Anchor:
    """An Anchor and what the step, the objectives and the evaluation need to know of it.

    Attributes:
      name: its ``config.model.anchor``.
      module: ``(model_config, num_classes) -> flax Module`` mapping ``(audio,
        video_2d, video_3d, mask, *, train)`` to a dict with at least ``seg_prob``
        ``(B, T, 2, C)``, ``video_prob``, ``video_prob_a``, ``video_prob_v`` ``(B, C)``
        and ``tokens_a``, ``tokens_v`` ``(B, T, D)`` (the contrastive loss's keys).
      backbone_loss: ``(out, labels, loss_config, axis_name) -> (loss, terms)``: the
        Anchor's own loss on its train-mode outputs; ``labels`` is a
        :class:`training.objectives.Labels` (weak and modality labels, masks, the
        batch index's parity).
      denoise_prob: the two outputs (audio, visual video-level probabilities) that
        JoMoLD ranks to drop modality labels (docs/method.md Appendix A).
      kd_prob: the two outputs the Reference's KD targets are made from (§6b).
      pool_frames_first: whether averaging a second's frames before the first
        projection is exact (a linear projection; not CMPAE's ELU).
      thresholds: its evaluation preset by default (``'standard'``: HAN's 0.5 / 0.5,
        joint gate; ``'official'``: 0.52 / 0.25, per-modality gate).
      denoise: whether JoMoLD's label denoising comes with it by default.
    """

    name: str
    module: Ref
    backbone_loss: Ref
    denoise_prob: tuple[str, str] = ("video_prob_a", "video_prob_v")
    kd_prob: tuple[str, str] = ("video_prob_a", "video_prob_v")
    pool_frames_first: bool = True
    thresholds: str = "standard"
    denoise: bool = False

    def build(self, model_config, num_classes: int):
        """The flax module for ``model_config`` (``config.model``) and ``num_classes``."""
        return resolve(self.module)(model_config, num_classes)

    def loss(self, out, labels, loss_config, axis_name: str | None = None):
        """``backbone_loss``, resolved."""
        return resolve(self.backbone_loss)(out, labels, loss_config, axis_name)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset and what the pipeline, the evaluation and ``parse.py`` need to know of it.

    Attributes:
      name: its ``config.data.dataset``.
      load_splits: ``(config, workdir, splits, pool_frames) -> {split: SplitArrays}``
        with ``id``, ``audio``, ``video_2d``, ``video_3d``, ``label`` ``(N, C)`` and, for
        val and test, ``label_audio``, ``label_visual`` ``(N, T, C)``; a ``mask``
        ``(N, T)`` when lengths vary (``data.splits``).
      class_names: ``(config, workdir) -> [name of class c]``.
      num_classes: ``(config) -> C``.
      load_feature_dir: ``(config, directory, ids) -> {id, audio, video_2d, video_3d
        [, mask]}``: a folder of features, no annotations (``parse.py --features``).
      feature_layout: ``'llp'`` when its features are HAN's (VGGish, ResNet-152 at 8
        frames per second, R(2+1)D-18: ``parse.py --video`` can extract them).
      published: whether the paper's tables are on this dataset (the report shows them
        as targets; elsewhere as a reference).
    """

    name: str
    load_splits: Ref
    class_names: Ref
    num_classes: Ref
    load_feature_dir: Ref
    feature_layout: str = "llp"
    published: bool = False


ANCHORS: dict[str, Anchor] = {}
DATASETS: dict[str, Dataset] = {}


def register_anchor(anchor: Anchor) -> Anchor:
    """Makes ``anchor`` available as ``config.model.anchor = anchor.name``."""
    ANCHORS[anchor.name] = anchor
    return anchor


def register_dataset(dataset: Dataset) -> Dataset:
    """Makes ``dataset`` available as ``config.data.dataset = dataset.name``."""
    DATASETS[dataset.name] = dataset
    return dataset


def anchor(name: str) -> Anchor:
    """The Anchor registered as ``name``; an error listing the known ones otherwise."""
    if name not in ANCHORS:
        raise ValueError(f"config.model.anchor = {name!r}: expected one of {sorted(ANCHORS)}")
    return ANCHORS[name]


def dataset(name: str) -> Dataset:
    """The dataset registered as ``name``; an error listing the known ones otherwise."""
    if name not in DATASETS:
        raise ValueError(f"config.data.dataset = {name!r}: expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def import_extensions(modules) -> None:
    """Imports each module of ``config.extensions`` (which registers its Anchors and
    datasets); one that cannot be imported is a ``ValueError`` naming it."""
    if not isinstance(modules, (tuple, list)):
        return  # config.validate reports the wrong type
    for name in modules:
        if not isinstance(name, str):
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(
                f"config.extensions: cannot import {name!r} ({e}); expected a module "
                f"on the Python path that registers Anchors or datasets"
            ) from None


# ----------------------------------------------------------------------------- built-ins

register_anchor(
    Anchor(
        name="han",
        module="coleaf_jax.models.han:build",
        backbone_loss="coleaf_jax.training.objectives:han_backbone",
    )
)
register_anchor(
    Anchor(
        name="valor",  # VALOR's HAN (model.num_heads / num_layers / update_order) and its loss
        module="coleaf_jax.models.han:build",
        backbone_loss="coleaf_jax.training.objectives:valor_backbone",
    )
)
register_anchor(
    Anchor(
        name="cmpae",
        module="coleaf_jax.models.cmpae:build",
        backbone_loss="coleaf_jax.training.objectives:cmpae_backbone",
        denoise_prob=("noca_video_prob_a", "noca_video_prob_v"),  # the no-cross-attention pass
        pool_frames_first=False,  # ELU(Linear(2048 -> D)) before the 8-frame average
        thresholds="official",
        denoise=True,
    )
)
for _name, _published in (("llp", True), ("synthetic", False)):
    register_dataset(
        Dataset(
            name=_name,
            load_splits=f"coleaf_jax.data.datasets:{_name}_splits",
            class_names="coleaf_jax.data.datasets:llp_class_names",
            num_classes="coleaf_jax.data.datasets:llp_num_classes",
            load_feature_dir="coleaf_jax.data.datasets:llp_feature_dir",
            published=_published,
        )
    )
for _name in ("unav100", "synthetic_unav100"):
    register_dataset(
        Dataset(
            name=_name,
            load_splits=f"coleaf_jax.data.datasets:{_name}_splits",
            class_names="coleaf_jax.data.datasets:unav100_class_names",
            num_classes="coleaf_jax.data.datasets:unav100_num_classes",
            load_feature_dir="coleaf_jax.data.datasets:unav100_feature_dir",
            feature_layout="unav100",
        )
    )
