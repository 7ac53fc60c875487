"""What a config may hold and how config files are read.

The values of an experiment live in its file in ``configs/`` (``configs/llp.py``
writes out every key with its source; the other files start from it and write
out their differences). Here: :data:`SCHEMA` (every key and what it may be) and
:func:`validate`, the shared pieces of the files (:data:`METHODS`,
:func:`parse_options`, :func:`set_method`, :func:`use_paper_recipe`,
:func:`load_sibling`), and reading a file with ``--config.KEY=VALUE`` overrides
(:func:`load_config_file`, :func:`override`).
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os

import ml_collections

from coleaf_jax import registry

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


class Registered(Check):
    """A name registered in ``coleaf_jax.registry`` (``'anchor'`` or ``'dataset'``): the
    built-in ones and any a user registered."""

    def __init__(self, kind: str):
        self.kind = kind

    @property
    def names(self) -> list[str]:
        return sorted(registry.ANCHORS if self.kind == "anchor" else registry.DATASETS)

    @property
    def expected(self) -> str:
        return f"one of {self.names} (coleaf_jax.registry)"

    def ok(self, value) -> bool:
        return isinstance(value, str) and value in self.names


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


class PerClass(Check):
    """``()`` or one number per class (the count is checked in :func:`validate`)."""

    def __init__(self, each: Float):
        self.each = each
        self.expected = f"() or one number per class, each {each.expected.removeprefix('a ')}"

    def ok(self, value) -> bool:
        return isinstance(value, (tuple, list)) and all(self.each.ok(v) for v in value)


class NoiseRatios(Check):
    expected = "'llp' (the shipped table) or the path of an .npz file"

    def ok(self, value) -> bool:
        return isinstance(value, str) and (value == "llp" or value.endswith(".npz"))


class Modules(Check):
    expected = "a tuple of importable module names ('package.module')"

    def ok(self, value) -> bool:
        return isinstance(value, (tuple, list)) and all(
            isinstance(v, str) and v.strip() for v in value
        )


# Every key of configs/llp.py with what it may be (tests/test_configs.py: no key without a
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
    "lr_schedule": Choice("step", "warmup_cosine"),
    "lr_warmup_epochs": Int(0),
    "lr_min": Float(0.0),
    "optimizer": Choice("adam", "adamw"),
    "adam_betas": Numbers(2, Float(0.0, 1.0, hi_open=True)),
    "adam_eps": Float(0.0, lo_open=True),
    "weight_decay": Float(0.0),
    "grad_clip_norm": Float(0.0),
    "log_every_steps": Int(1),
    "matmul_precision": Choice(
        "highest", "float32", "high", "tensorfloat32", "default", "bfloat16"
    ),
    "compilation_cache_dir": Text(),
    "scan_epoch": Bool(),
    "extensions": Modules(),
    "data.dataset": Registered("dataset"),
    "data.root": Text(),
    "data.num_classes": Int(1),
    "data.unav_features": Choice("i3d", "onepeace"),
    "data.unav_overlap": Choice("any", "half", "centre"),
    "data.unav_annotation_file": Text(),
    "data.bucket": Int(0),
    "data.annotation_dir": Text(),
    "data.tfds_dir": Text(),
    "data.prepare_processes": Int(0),
    "data.allow_missing": Bool(),
    "data.allow_split_overlap": Bool(),
    "data.pseudo_labels": Bool(),
    "data.resident_max_gib": Float(0.0),
    "data.on_device": Bool(),
    "data.on_device_max_gib": Float(0.0),
    "data.synthetic_videos": Int(3),
    "data.synthetic_seed": Int(0),
    "model.anchor": Registered("anchor"),
    "model.class_tokens": Bool(),
    "model.d_model": Int(1),
    "model.ffn_dim": Int(1),
    "model.dropout": RATE,
    "model.num_heads": Int(1),
    "model.num_layers": Int(1),
    "model.update_order": Choice("parallel", "audio_first"),
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
    "loss.pseudo_label_segment_form": Choice("probabilities", "logits"),
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
    "eval.thresholds": Choice("standard", "official", "jomold", "cmpae"),
    "eval.visual_thresholds": PerClass(PROBABILITY),
    "eval.batch_size": Int(1),
    "eval.selection": Choice("avvp", "av", "type"),
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
    registry.import_extensions(values.get("extensions", ()))
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
    if config.optimizer == "adam" and config.weight_decay > 0:
        raise ValueError(
            f"config.weight_decay = {config.weight_decay}: expected 0 with config.optimizer "
            f"= 'adam' (torch's Adam adds it to the gradient, which no method here does); "
            f"use 'adamw'"
        )
    per_class = config.eval.visual_thresholds
    if per_class and len(per_class) != config.data.num_classes:
        raise ValueError(
            f"config.eval.visual_thresholds: {len(per_class)} values, expected () or one per "
            f"class ({config.data.num_classes})"
        )
    m = config.model
    if m.d_model % m.num_heads:
        raise ValueError(
            f"config.model.num_heads = {m.num_heads}: expected a divisor of "
            f"config.model.d_model = {m.d_model}"
        )
    if config.loss.pseudo_label_segment_form == "logits" and m.anchor == "cmpae":
        raise ValueError(
            "config.loss.pseudo_label_segment_form = 'logits': the CMPAE Anchor's segment "
            "probabilities mix two passes (no logits); expected 'probabilities'"
        )
    if m.anchor == "cmpae" and (m.num_heads, m.num_layers, m.update_order) != (1, 1, "parallel"):
        raise ValueError(
            f"config.model.num_heads/num_layers/update_order = {m.num_heads}/{m.num_layers}/"
            f"{m.update_order}: expected 1/1/parallel with the CMPAE Anchor (its HAN layer is HAN's)"
        )
    layout = registry.dataset(config.data.dataset).feature_layout
    if config.data.pseudo_labels and layout != "llp":
        raise ValueError(
            f"config.data.pseudo_labels needs LLP-layout data (VALOR's CLAP/CLIP "
            f"folders), not config.data.dataset = {config.data.dataset!r}"
        )
    if layout == "llp" and config.data.num_classes != 25:
        raise ValueError(
            f"config.data.num_classes = {config.data.num_classes}: LLP has 25 classes "
            f"(the key is for UnAV-100 and synthetic_unav100)"
        )


# ----------------------------------------------------------------------------- config files


PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Method option -> (config.method, config.model.anchor).
METHODS = {
    "coleaf_cmpae": ("coleaf", "cmpae"),  # the paper's best configuration
    "coleaf_han": ("coleaf", "han"),
    "cmpae": ("anchor_only", "cmpae"),  # the CMPAE baseline
    "han": ("anchor_only", "han"),  # the HAN baseline
}


def parse_options(arg: str, config_file: str, **groups) -> dict[str, str]:
    """The options after a config file's colon, ``'a,b'``: at most one name of each group
    (``{group: names}``). Returns ``{group: the name given or ''}``; an unknown name, or
    two of one group, is a ``ValueError`` listing what the file takes."""
    chosen = dict.fromkeys(groups, "")
    for name in (part.strip() for part in arg.split(",")):
        if not name:
            continue
        group = next((g for g, names in groups.items() if name in names), None)
        if group is None:
            allowed = "; ".join(f"{g}: {', '.join(sorted(n))}" for g, n in groups.items())
            raise ValueError(f"{config_file}: unknown option {name!r} (expected {allowed})")
        if chosen[group]:
            raise ValueError(
                f"{config_file}: options {chosen[group]!r} and {name!r} are both a {group}"
            )
        chosen[group] = name
    return chosen


def set_method(config: ml_collections.ConfigDict, method: str, dataset: str):
    """``method``, ``model.anchor``, ``name`` and the Anchor's defaults for a method of
    :data:`METHODS`: the CMPAE Anchor comes with JoMoLD label denoising and the authors'
    evaluation (video 0.52 / segment 0.25, each modality gated by its own probability),
    as in the code that produced the CMPAE/CoLeaF numbers; the HAN Anchor keeps HAN's
    (0.5 / 0.5, joint gate). Its registry entry says which (``Anchor.denoise``,
    ``Anchor.thresholds``)."""
    config.method, config.model.anchor = METHODS[method]
    anchor = registry.anchor(config.model.anchor)
    config.loss.denoise = anchor.denoise
    config.eval.thresholds = anchor.thresholds
    config.name = f"{method}_{dataset}"
    return config


def use_paper_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The paper's text where it differs from the authors' code (docs/method.md §5-§7,
    Appendix A): BCE for the Reference with class-token weights 1, the Reference's ``q^m``
    as the correlation teacher, JoMoLD ratios annealed over 0.9 epoch, 15 epochs."""
    config.num_epochs = 15
    config.loss.reference = "bce"
    config.loss.class_token_weight_audio = (1.0, 1.0)
    config.loss.class_token_weight_visual = (1.0, 1.0)
    config.loss.correlation_teacher = "reference"
    config.loss.denoise_schedule = "anneal"
    config.name += "_paper"
    return config


def resolve_config_path(spec: str) -> str:
    """``FILE.py[:options]`` with ``FILE`` relative to the working directory, else to the
    project (so ``configs/llp.py`` is found from anywhere)."""
    path, sep, options = spec.partition(":")
    if not os.path.exists(path) and os.path.exists(os.path.join(PROJECT, path)):
        path = os.path.join(PROJECT, path)
    return path + sep + options


def load_sibling(config_file: str, name: str, arg: str = "") -> ml_collections.ConfigDict:
    """The config of the file ``name`` in ``config_file``'s folder with options ``arg``:
    how a file of ``configs/`` starts from another and writes out its differences."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
    return load_config_file(f"{path}:{arg}" if arg else path)


def defaults() -> ml_collections.ConfigDict:
    """``configs/llp.py``'s config: the values of keys an older ``config.json`` lacks."""
    return load_config_file(os.path.join(PROJECT, "configs", "llp.py"))


def load_config_file(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``FILE.py[:variant]`` like ``--config`` does and applies ``key=value`` overrides.

    A config file is Python and runs as code, each call (as every ml_collections config
    file does): load a file you trust, once."""
    path, _, variant = resolve_config_path(spec).partition(":")
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
