"""The default configuration; files in ``configs/`` start from it.

The defaults are the recipe of the authors' code (faeghehsardari/coleaf at
a36a153, ``main.py`` / ``option.py``), which produced the published numbers;
where the paper's text says otherwise, the text's choice is a named option
and the ``paper`` variant (``configs/llp.py:paper``) selects all of them.
Every value says where it comes from: *official* (the authors' code),
*paper* (CoLeaF ECCV 2024, SPEC §3-§7) or *ours*.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """CoLeaF with the HAN Anchor on LLP, the authors' recipe."""
    c = ml_collections.ConfigDict()
    c.name = "coleaf_han_llp"
    # 'coleaf': Anchor + Reference with the collaborative losses;
    # 'anchor_only': the plain Anchor baseline (HAN), no Reference.
    c.method = "coleaf"
    c.seed = 0
    c.num_devices = 0  # data-parallel devices (pmap); 0 = all local devices
    c.num_seeds = 1  # K > 1: train seeds seed..seed+K-1 at once (vmap), report mean ± std
    c.num_epochs = 10  # official (the paper's text: 15)
    c.batch_size = 128  # paper; the global batch, split across devices
    c.learning_rate = 5e-4  # official (HAN used 3e-4)
    c.lr_decay_every_epochs = 6  # paper: lr x0.25 every 6 epochs
    c.lr_decay_factor = 0.25
    c.log_every_steps = 10
    # Matmul precision of training and evaluation: 'highest' = full float32 (as the authors'
    # torch); 'default' lets a GPU use TF32 / a TPU bfloat16 passes (faster, other numbers).
    c.matmul_precision = "highest"
    # JAX's persistent compilation cache (train.py, eval.py, parse.py, the demo): a second
    # run with the same shapes does not compile again. '' = off.
    c.compilation_cache_dir = "~/.cache/coleaf_jax/xla"
    c.scan_epoch = False  # with data on device: run each epoch as one lax.scan (no per-step bar)

    c.data = ml_collections.ConfigDict()
    # 'llp' / 'unav100' (features on disk), 'synthetic' / 'synthetic_unav100' (generated
    # on first use in the LLP / UnAV-100 layout)
    c.data.dataset = "llp"
    c.data.root = ""  # feature root (LLP: vggish/, res152/, r2plus1d_18/); required for real data
    c.data.num_classes = 25  # UnAV-100 and synthetic_unav100 only (LLP: the 25 classes)
    c.data.unav_features = "i3d"  # UnAV-100 feature set: 'i3d' (VGGish + I3D) or 'onepeace'
    c.data.unav_overlap = "any"  # UnAV-100 segment truth rule: 'any', 'half' or 'centre'
    c.data.unav_annotation_file = ""  # '' = ROOT/annotations/unav100_annotations.json
    # Variable-length data, host pipeline: crop each batch to a multiple of this many
    # segments holding its longest video (0 = always the split's longest video).
    c.data.bucket = 0
    c.data.annotation_dir = ""  # the five CSVs; '' = data.root
    c.data.tfds_dir = ""  # TFDS cache; '' = the TFDS default (~/tensorflow_datasets)
    # Val/test videos without feature files: False = an error (ours); True = score the
    # others and record the counts (videos_scored, videos_skipped) in every metrics file.
    c.data.allow_missing = False
    # A video listed in two split CSVs (e.g. a test video also in AVVP_train.csv) is an
    # error naming the videos and files; True trains and scores anyway, says so in the log
    # and records the count (videos_also_in_train) in every metrics file.
    c.data.allow_split_overlap = False
    # SPEC §9 / paper Table 6: train with VALOR's CLAP/CLIP segment pseudo-labels (files
    # ROOT/CLAP/segment_pseudo_labels/<id>.npy, ROOT/CLIP/...): modality labels from them
    # and an extra segment-level BCE on the Anchor (loss.pseudo_label_segment_weight).
    c.data.pseudo_labels = False
    # Splits are held in memory (val and test first, then train) while their features fit in
    # this many GiB together; a larger split is read from its prepared array_record files
    # batch by batch, a background thread reading ahead (bounded memory on the full LLP).
    c.data.resident_max_gib = 4.0
    c.data.on_device = True  # keep the training split on the device(s), gather batches there
    c.data.on_device_max_gib = 8.0  # ...when its arrays take at most this much (per device)
    c.data.synthetic_videos = 1000  # 'synthetic' only: total videos
    c.data.synthetic_seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.anchor = "han"  # 'han' (SPEC §4.1-4.2) or 'cmpae' (§4.3, Appendix A)
    c.model.class_tokens = True  # Reference class tokens (paper)
    c.model.d_model = 512  # paper
    c.model.ffn_dim = 512  # HAN
    c.model.dropout = 0.1  # HAN
    c.model.reference_head_dropout = 0.5  # paper §5
    # The visual Reference's temporal attention FC_time reads the head-dropped features, as
    # the authors' Self_Video_Net (their audio encoder reads the un-dropped ones).
    c.model.reference_visual_time_reads_dropped = True  # official
    # 'torch': every parameter drawn as the authors' PyTorch modules are initialised
    # (coleaf_jax/models/init.py); 'flax': flax's defaults.
    c.model.init = "torch"  # official
    # Average each second's 8 ResNet frames before the linear 2048→D projection (HAN
    # Anchor, Reference; exact, 8x fewer FLOPs). False: project every frame first, as
    # the authors' code does (for comparisons; CMPAE's ELU embedding always does).
    c.model.pool_frames_first = True
    c.model.cmpae_ca_mix = 0.8  # official: training h = 0.8 h_CA + 0.2 h_noCA
    c.model.cmpae_inference_mix = 0.7  # official: inference 0.7 P(mix) + 0.3 P(noCA)
    c.model.cmpae_visual_dropout = 0.5  # official
    c.model.cmpae_residual_dropout = 0.2  # official: in the cross-modal residual MLPs

    c.loss = ml_collections.ConfigDict()
    c.loss.visual_label_smoothing = (0.9, 0.05)  # HAN: y_v = 0.9 y + 0.05
    c.loss.pseudo_label_segment_weight = 1.0  # with data.pseudo_labels: segment BCE weight (ours)
    # The Reference's loss (weak, class-token and KD terms): 'asl' (official: asymmetric
    # loss, summed over videos and classes) or 'bce' (paper's text, mean).
    c.loss.reference = "asl"  # official
    c.loss.class_token_warmup_epochs = 3  # official: class-token weights change after 3 epochs
    c.loss.class_token_weight_audio = (1.2, 0.001)  # official (warm-up, after); paper: (1, 1)
    c.loss.class_token_weight_visual = (1.0, 0.0)  # official; paper: (1, 1)
    # (a) contrastive: 'event_aware' (paper), 'standard' (w = 1), 'bce' (BCE on pseudo-labels), 'none'.
    c.loss.contrastive = "event_aware"
    c.loss.nce_form = "expected"  # official: -log Σ q·π; 'cross_entropy': -Σ q·log π
    c.loss.nce_temperature = 0.2  # paper
    c.loss.nce_smoothing = 0.1  # official; 0 = plain InfoNCE
    c.loss.nce_weight_audio = 0.009  # official
    c.loss.nce_weight_visual = 1.0  # official
    c.loss.pseudo_label_threshold = 0.5  # r^m = 1[q^m >= 0.5]
    # (b) self-modality-aware KD
    c.loss.kd = True
    c.loss.kd_threshold_audio = 0.5  # paper
    c.loss.kd_threshold_visual = 0.6  # paper
    c.loss.kd_warmup_epochs = 3  # official: KD from epoch 4 on, then weak and KD weighted 0.5 each
    c.loss.kd_weight = 0.5
    # (c) co-occurrence class correlation
    c.loss.correlation = True
    c.loss.correlation_teacher = "confident"  # official mix; 'reference' = paper's text
    c.loss.correlation_confidence_audio = (0.8, 0.1)  # official (high, low)
    c.loss.correlation_confidence_visual = (0.6, 0.4)  # official
    c.loss.correlation_scaling = "official"  # sum / C x batch; 'mean' = plain MSE
    c.loss.correlation_weight = 1e-4  # official
    c.loss.collab_start_epoch = 1  # official: collaborative Anchor terms from epoch 2 (0-based 1)
    # CMPAE backbone: weights of BCE(p^a), BCE(p^v), BCE(p_glob), NCE_av, mutual (official).
    c.loss.cmpae_weights = (2.0, 1.0, 2.0, 1.0, 1.0)
    # JoMoLD label denoising (on with the CMPAE Anchor in the paper's setting).
    c.loss.denoise = False
    c.loss.denoise_ratios = "llp"  # 'llp' (shipped table) or an .npz with keys audio, visual
    # 'official': ratios 0 for the whole first epoch, full after (the authors' running
    # minimum); 'anneal': r·min(1, step/(0.9 epoch)) (JoMoLD's text).
    c.loss.denoise_schedule = "official"
    c.loss.denoise_anneal_epochs = 0.9

    c.eval = ml_collections.ConfigDict()
    # 'standard' (HAN 0.5/0.5, joint gate) or 'official' (0.52/0.25, per-modality gate: the
    # authors' CoLeaF evaluation); the variants set 'official' for the CMPAE Anchor.
    c.eval.thresholds = "standard"
    c.eval.batch_size = 256
    # Model selection on validation: 'avvp' = mean of the segment and event Ao, Vo, AV,
    # T@o, E@o (SPEC §7); 'av' = mean of segment and event AV (UnAV-100).
    c.eval.selection = "avvp"
    return c


# ----------------------------------------------------------------------------- checks


class Check:
    """What a config value may be: ``problem(value)`` is None when it may, else what is
    allowed (the ``error:`` line says ``config.KEY = VALUE: expected …``)."""

    expected = "a value"

    def problem(self, value) -> str | None:
        return None if self.ok(value) else self.expected

    def ok(self, value) -> bool:
        raise NotImplementedError


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


class Int(Check):
    """A whole number in ``[lo, hi]`` (``hi`` None: no upper bound)."""

    def __init__(self, lo: int, hi: int | None = None):
        self.lo, self.hi = lo, hi
        self.expected = f"a whole number >= {lo}" + (f" and <= {hi}" if hi is not None else "")

    def ok(self, value) -> bool:
        return _is_int(value) and value >= self.lo and (self.hi is None or value <= self.hi)


class Float(Check):
    """A finite number in an interval; ``lo_open`` / ``hi_open`` exclude the ends."""

    def __init__(self, lo=None, hi=None, *, lo_open=False, hi_open=False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        if lo is not None and hi is not None:
            self.expected = (
                f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            )
        elif lo is not None:
            self.expected = f"a finite number {'>' if lo_open else '>='} {lo}"
        else:
            self.expected = "a finite number"

    def ok(self, value) -> bool:
        if not _is_number(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)


PROBABILITY = Float(0.0, 1.0)  # a probability or a threshold on one: [0, 1]
RATE = Float(0.0, 1.0, hi_open=True)  # a dropout or smoothing rate: [0, 1)
WEIGHT = Float(0.0)  # a loss weight: >= 0


class Bool(Check):
    expected = "True or False"

    def ok(self, value) -> bool:
        return isinstance(value, bool)


class Text(Check):
    """A string (a path, a name); ``nonempty`` rules out ''."""

    def __init__(self, nonempty: bool = False):
        self.nonempty = nonempty
        self.expected = "a non-empty string" if nonempty else "a string ('' for none)"

    def ok(self, value) -> bool:
        return isinstance(value, str) and (bool(value) or not self.nonempty)


class Choice(Check):
    def __init__(self, *values):
        self.values = values
        self.expected = f"one of {list(values)}"

    def ok(self, value) -> bool:
        return isinstance(value, str) and value in self.values


class Numbers(Check):
    """A tuple of ``n`` numbers, each passing ``each``."""

    def __init__(self, n: int, each: Float):
        self.n, self.each = n, each
        self.expected = f"{n} numbers, each {each.expected.removeprefix('a ')}"

    def ok(self, value) -> bool:
        return (
            isinstance(value, (tuple, list))
            and len(value) == self.n
            and all(self.each.ok(v) for v in value)
        )


class NoiseRatios(Check):
    expected = "'llp' (the shipped table) or the path of an .npz file"

    def ok(self, value) -> bool:
        return isinstance(value, str) and (value == "llp" or value.endswith(".npz"))


# Every key of base_config with what it may be (tests/test_configs.py: no key without a
# check, no check without a key). Cross-key rules are in validate().
SCHEMA: dict[str, Check] = {
    "name": Text(nonempty=True),
    "method": Choice("coleaf", "anchor_only"),
    "seed": Int(0),
    "num_devices": Int(0),
    "num_seeds": Int(1),
    "num_epochs": Int(1),
    "batch_size": Int(1),
    "learning_rate": Float(0.0, lo_open=True),
    "lr_decay_every_epochs": Int(1),
    "lr_decay_factor": Float(0.0, 1.0, lo_open=True),
    "log_every_steps": Int(1),
    "matmul_precision": Choice(
        "highest", "float32", "high", "tensorfloat32", "default", "bfloat16"
    ),
    "compilation_cache_dir": Text(),
    "scan_epoch": Bool(),
    "data.dataset": Choice("llp", "synthetic", "unav100", "synthetic_unav100"),
    "data.root": Text(),
    "data.num_classes": Int(1),
    "data.unav_features": Choice("i3d", "onepeace"),
    "data.unav_overlap": Choice("any", "half", "centre"),
    "data.unav_annotation_file": Text(),
    "data.bucket": Int(0),
    "data.annotation_dir": Text(),
    "data.tfds_dir": Text(),
    "data.allow_missing": Bool(),
    "data.allow_split_overlap": Bool(),
    "data.pseudo_labels": Bool(),
    "data.resident_max_gib": Float(0.0),
    "data.on_device": Bool(),
    "data.on_device_max_gib": Float(0.0),
    "data.synthetic_videos": Int(3),
    "data.synthetic_seed": Int(0),
    "model.anchor": Choice("han", "cmpae"),
    "model.class_tokens": Bool(),
    "model.d_model": Int(1),
    "model.ffn_dim": Int(1),
    "model.dropout": RATE,
    "model.reference_head_dropout": RATE,
    "model.reference_visual_time_reads_dropped": Bool(),
    "model.init": Choice("torch", "flax"),
    "model.pool_frames_first": Bool(),
    "model.cmpae_ca_mix": PROBABILITY,
    "model.cmpae_inference_mix": PROBABILITY,
    "model.cmpae_visual_dropout": RATE,
    "model.cmpae_residual_dropout": RATE,
    "loss.visual_label_smoothing": Numbers(2, PROBABILITY),
    "loss.pseudo_label_segment_weight": WEIGHT,
    "loss.reference": Choice("asl", "bce"),
    "loss.class_token_warmup_epochs": Int(0),
    "loss.class_token_weight_audio": Numbers(2, WEIGHT),
    "loss.class_token_weight_visual": Numbers(2, WEIGHT),
    "loss.contrastive": Choice("event_aware", "standard", "bce", "none"),
    "loss.nce_form": Choice("expected", "cross_entropy"),
    "loss.nce_temperature": Float(0.0, lo_open=True),
    "loss.nce_smoothing": RATE,
    "loss.nce_weight_audio": WEIGHT,
    "loss.nce_weight_visual": WEIGHT,
    "loss.pseudo_label_threshold": PROBABILITY,
    "loss.kd": Bool(),
    "loss.kd_threshold_audio": PROBABILITY,
    "loss.kd_threshold_visual": PROBABILITY,
    "loss.kd_warmup_epochs": Int(0),
    "loss.kd_weight": PROBABILITY,
    "loss.correlation": Bool(),
    "loss.correlation_teacher": Choice("confident", "reference"),
    "loss.correlation_confidence_audio": Numbers(2, PROBABILITY),
    "loss.correlation_confidence_visual": Numbers(2, PROBABILITY),
    "loss.correlation_scaling": Choice("official", "mean"),
    "loss.correlation_weight": WEIGHT,
    "loss.collab_start_epoch": Int(0),
    "loss.cmpae_weights": Numbers(5, WEIGHT),
    "loss.denoise": Bool(),
    "loss.denoise_ratios": NoiseRatios(),
    "loss.denoise_schedule": Choice("official", "anneal"),
    "loss.denoise_anneal_epochs": Float(0.0, lo_open=True),
    "eval.thresholds": Choice("standard", "official"),
    "eval.batch_size": Int(1),
    "eval.selection": Choice("avvp", "av"),
}


def flatten(tree, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` (or a ConfigDict) -> ``{'a.b': 1}``; tuples as lists, as
    ``config.json`` stores them."""
    if hasattr(tree, "to_dict"):
        tree = tree.to_dict()
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    if isinstance(tree, tuple):
        tree = list(tree)
    return {prefix[:-1]: tree}


def validate(config) -> None:
    """Every key against :data:`SCHEMA`, then the rules between keys. The first problem
    is a ``ValueError`` ``config.KEY = VALUE: expected …``, which the entry scripts print
    as one ``error:`` line. (What depends on the machine, the devices, is checked where
    they are known: ``train.validate_run_config``.)"""
    values = flatten(config)
    unknown = sorted(set(values) - set(SCHEMA))
    if unknown:
        raise ValueError(
            f"config.{unknown[0]}: not a key of this project's configs "
            f"(coleaf_jax/config.py SCHEMA lists them)"
        )
    for key, check in SCHEMA.items():
        if key not in values:
            raise ValueError(f"config.{key} is missing: expected {check.expected}")
        problem = check.problem(values[key])
        if problem is not None:
            raise ValueError(f"config.{key} = {values[key]!r}: expected {problem}")
    if config.data.pseudo_labels and config.data.dataset not in ("llp", "synthetic"):
        raise ValueError(
            f"config.data.pseudo_labels needs LLP-layout data (VALOR's CLAP/CLIP "
            f"folders), not config.data.dataset = {config.data.dataset!r}"
        )
    if config.data.dataset == "llp" and config.data.num_classes != 25:
        raise ValueError(
            f"config.data.num_classes = {config.data.num_classes}: LLP has 25 classes "
            f"(the key is for UnAV-100 and synthetic_unav100)"
        )


# Variant -> (method, anchor). '' is each dataset's default.
VARIANTS = {
    "coleaf_cmpae": ("coleaf", "cmpae"),  # the paper's best configuration
    "coleaf_han": ("coleaf", "han"),
    "cmpae": ("anchor_only", "cmpae"),  # the CMPAE baseline
    "han": ("anchor_only", "han"),  # the HAN baseline
}


def apply_variant(config: ml_collections.ConfigDict, variant: str, dataset: str):
    """Sets ``method``, ``model.anchor``, ``eval.thresholds`` and ``name`` for a variant of
    ``VARIANTS``.

    The CMPAE Anchor comes with JoMoLD label denoising and the authors' evaluation
    (video 0.52 / segment 0.25, each modality gated by its own probability), as in
    the code that produced the CMPAE/CoLeaF numbers; the HAN Anchor keeps HAN's
    (0.5 / 0.5, joint gate).
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"configs/{dataset}.py: unknown variant {variant!r} "
            f"(expected one of {sorted(VARIANTS)})"
        )
    config.method, config.model.anchor = VARIANTS[variant]
    config.loss.denoise = config.model.anchor == "cmpae"
    config.eval.thresholds = "official" if config.model.anchor == "cmpae" else "standard"
    config.name = f"{variant}_{dataset}"
    return config


def apply_paper_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The paper's text where it differs from the authors' code (SPEC §5-§7, Appendix A):
    BCE for the Reference with class-token weights 1, the Reference's ``q^m`` as the
    correlation teacher, JoMoLD ratios annealed over 0.9 epoch, 15 epochs."""
    config.num_epochs = 15
    config.loss.reference = "bce"
    config.loss.class_token_weight_audio = (1.0, 1.0)
    config.loss.class_token_weight_visual = (1.0, 1.0)
    config.loss.correlation_teacher = "reference"
    config.loss.denoise_schedule = "anneal"
    config.name += "_paper"
    return config


def llp_config(variant: str = "") -> ml_collections.ConfigDict:
    """``configs/llp.py``: the paper's setting on LLP (``data.root`` must be given).

    Default: CoLeaF with the CMPAE Anchor and JoMoLD denoising (paper Table 5),
    trained as the authors' code trains it. ``variant`` is ``[method][,paper]``:
    a method of ``VARIANTS`` and/or ``paper`` for the paper's text's recipe.
    """
    parts = [p for p in variant.split(",") if p]
    paper = "paper" in parts
    methods = [p for p in parts if p != "paper"]
    if len(methods) > 1:
        raise ValueError(f"configs/llp.py: variant {variant!r}: expected [method][,paper]")
    config = apply_variant(base_config(), methods[0] if methods else "coleaf_cmpae", "llp")
    return apply_paper_recipe(config) if paper else config


def synthetic_config(variant: str = "") -> ml_collections.ConfigDict:
    """``configs/synthetic.py``: the embedded dataset, sized to train in about a minute on 2 cores.

    Same model and losses as LLP but half the width (D = 256), fewer videos,
    smaller batches and fewer epochs, with every epoch-based schedule (lr
    decay, warm-ups) scaled to the shorter run.
    """
    c = base_config()
    c.data.dataset = "synthetic"
    c.data.synthetic_videos = 600
    c.model.d_model = 256
    c.model.ffn_dim = 256
    c.num_epochs = 8
    c.batch_size = 32
    c.lr_decay_every_epochs = 4
    c.loss.kd_warmup_epochs = 2
    c.loss.class_token_warmup_epochs = 2
    # The official correlation scaling (sum / C x batch) grows with batch²: at batch 32
    # this weight gives the term the strength 1e-4 has at the paper's batch of 128.
    c.loss.correlation_weight = 1e-4 * (128 / c.batch_size) ** 2
    c.log_every_steps = 5
    return apply_variant(c, variant or "coleaf_han", "synthetic")


def _split_variant(variant: str, config_file: str) -> tuple[str, bool]:
    """``'[method][,synthetic]'`` -> ``(method or '', synthetic?)``."""
    parts = [p for p in variant.split(",") if p]
    methods = [p for p in parts if p != "synthetic"]
    if len(methods) > 1:
        raise ValueError(f"{config_file}: variant {variant!r}: expected [method][,synthetic]")
    return (methods[0] if methods else ""), "synthetic" in parts


def pseudo_label_config(variant: str = "") -> ml_collections.ConfigDict:
    """``configs/llp_pseudo.py``: training with CLIP/CLAP segment pseudo-labels (SPEC §9).

    ``variant`` is ``[method][,synthetic]`` (default method ``coleaf_cmpae``, the
    Table 6 setting). JoMoLD is off (the modality labels come from the
    pseudo-labels, not from the weak label it denoises).
    """
    method, synthetic = _split_variant(variant, "configs/llp_pseudo.py")
    method = method or "coleaf_cmpae"
    c = synthetic_config(method) if synthetic else llp_config(method)
    c.data.pseudo_labels = True
    c.loss.denoise = False
    c.name = c.name.replace("_llp", "_llp_pseudo").replace("_synthetic", "_synthetic_pseudo")
    return c


def unav100_config(variant: str = "") -> ml_collections.ConfigDict:
    """``configs/unav100.py``: UnAV-100 (100 classes, variable length, audio-visual labels).

    ``variant`` is ``[method][,synthetic]``: a method of ``VARIANTS`` (default
    ``coleaf_han``), and ``synthetic`` for the generated variable-length set
    in the UnAV-100 layout (20 classes, 2-20 s videos, D = 256, 8 epochs). The
    labels are audio-visual only, so there is no modality noise for JoMoLD to
    remove (``loss.denoise`` off) and model selection uses the AV scores.
    """
    method, synthetic = _split_variant(variant, "configs/unav100.py")
    c = synthetic_config() if synthetic else base_config()
    c.data.dataset = "synthetic_unav100" if synthetic else "unav100"
    c.data.num_classes = 20 if synthetic else 100
    c.data.synthetic_videos = 400
    c.data.bucket = 8
    c.eval.selection = "av"
    apply_variant(c, method or "coleaf_han", "unav100")
    c.loss.denoise = False
    if synthetic:
        c.name += "_synthetic"
    return c


def load_config_file(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``FILE.py[:variant]`` like ``--config`` does and applies ``key=value`` overrides."""
    path, _, variant = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location("_coleaf_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
    config = apply_overrides(config, overrides)
    validate(config)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides=()) -> ml_collections.ConfigDict:
    """Applies ``KEY=VALUE`` strings (values read as Python literals, else strings)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected KEY=VALUE")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        override(config, key, value)
    return config


def config_flags_as_set(argv: list[str]) -> list[str]:
    """train.py's ``--config.KEY=VALUE`` (or ``--config.KEY VALUE``) rewritten as ``--set
    KEY=VALUE``, so that the argparse tools (report, noise_ratios, bench, sweep) take the
    entry scripts' syntax too."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--config.") and len(arg) > len("--config."):
            key, sep, value = arg[len("--config.") :].partition("=")
            if not sep and args:
                value = args.pop(0)
            out += ["--set", f"{key}={value}"]
        else:
            out.append(arg)
    return out


def override(config: ml_collections.ConfigDict, key: str, value) -> None:
    """Sets a dotted ``key`` (``'loss.kd'``), failing on keys the config does not have."""
    node = config
    *parents, leaf = key.split(".")
    for name in parents:
        if name not in node:
            raise KeyError(f"config has no key {key!r} (no {name!r})")
        node = node[name]
    if leaf not in node:
        raise KeyError(f"config has no key {key!r}")
    try:
        node[leaf] = value
    except TypeError:  # ml_collections' type safety: 1 for a bool, 'abc' for a float...
        check = SCHEMA.get(key)
        expected = check.expected if check else f"a {type(node[leaf]).__name__}"
        raise ValueError(f"config.{key} = {value!r}: expected {expected}") from None
