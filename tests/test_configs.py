"""Config files: they load, validate, and fail clearly where a user must act."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax.data import pipeline
from coleaf_jax.training import step as step_lib
from configs import ablations, llp, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module", [llp, synthetic])
@pytest.mark.parametrize(
    "variant,method,anchor",
    [
        ("coleaf_cmpae", "coleaf", "cmpae"),
        ("coleaf_han", "coleaf", "han"),
        ("cmpae", "anchor_only", "cmpae"),
        ("han", "anchor_only", "han"),
    ],
)
def test_configs_load_and_validate(module, variant, method, anchor):
    config = module.get_config(variant)
    step_lib.validate_config(config)
    assert (config.method, config.model.anchor) == (method, anchor)
    assert config.loss.denoise == (anchor == "cmpae")  # JoMoLD comes with CMPAE
    for key in ("num_epochs", "batch_size", "learning_rate", "seed"):
        assert key in config
    assert config.data.root == "" and config.model.class_tokens


def test_dataset_defaults():
    assert (llp.get_config().method, llp.get_config().model.anchor) == ("coleaf", "cmpae")
    assert synthetic.get_config().model.anchor == "han"  # the demo's CoLeaF


def test_defaults_are_the_authors_recipe_and_paper_is_a_variant():
    """configs/llp.py trains as the authors' main.py/option.py (a36a153) do; :paper
    switches to the paper's text where it differs."""
    c = llp.get_config()
    assert (c.num_epochs, c.batch_size, c.learning_rate) == (10, 128, 5e-4)
    assert (c.lr_decay_every_epochs, c.lr_decay_factor) == (6, 0.25)
    assert (c.loss.nce_weight_audio, c.loss.nce_weight_visual, c.loss.correlation_weight) == (
        0.009,
        1.0,
        1e-4,
    )
    assert (c.loss.reference, c.loss.correlation_teacher, c.loss.denoise_schedule) == (
        "asl",
        "confident",
        "official",
    )
    assert (c.loss.class_token_weight_audio, c.loss.class_token_weight_visual) == (
        (1.2, 0.001),
        (1.0, 0.0),
    )
    assert (c.model.init, c.model.reference_visual_time_reads_dropped) == ("torch", True)
    assert c.eval.thresholds == "official"  # the authors' per-modality 0.52 / 0.25
    assert llp.get_config("cmpae").eval.thresholds == "official"
    assert llp.get_config("han").eval.thresholds == "standard"  # HAN keeps HAN's
    assert llp.get_config("coleaf_han").eval.thresholds == "standard"
    paper = llp.get_config("paper")
    step_lib.validate_config(paper)
    assert (
        paper.num_epochs,
        paper.loss.reference,
        paper.loss.correlation_teacher,
        paper.loss.denoise_schedule,
    ) == (15, "bce", "reference", "anneal")
    assert (paper.method, paper.model.anchor, paper.eval.thresholds) == (
        "coleaf",
        "cmpae",
        "official",
    )
    han_paper = llp.get_config("coleaf_han,paper")
    assert (han_paper.model.anchor, han_paper.loss.reference) == ("han", "bce")
    with pytest.raises(ValueError, match="options 'han' and 'cmpae' are both a method"):
        llp.get_config("han,cmpae")


def test_unknown_variant_and_values_fail_clearly():
    with pytest.raises(ValueError, match="unknown option 'cmpea' \\(expected method: .*han"):
        llp.get_config("cmpea")
    with pytest.raises(
        ValueError, match="'synthetic' is not an ablation: name one after the colon"
    ):
        ablations.get_config("synthetic")
    c = llp.get_config()
    c.loss.contrastive = "infonce"
    with pytest.raises(ValueError, match="config.loss.contrastive = 'infonce'"):
        step_lib.validate_config(c)


def test_llp_needs_a_root(tmp_path):
    with pytest.raises(ValueError, match="config.data.root is required"):
        pipeline.load_splits(llp.get_config(), str(tmp_path))


def test_learning_rate_decays_every_six_epochs():
    """lr(epoch) = 5e-4 · 0.25^floor(epoch / 6), as torch's StepLR(6, 0.25) stepped per epoch;
    the optimiser gives Adam's direction, which the step scales by -lr."""
    c = llp.get_config()
    assert (c.learning_rate, c.lr_decay_every_epochs, c.lr_decay_factor) == (5e-4, 6, 0.25)
    lrs = [float(step_lib.learning_rate(c, jnp.int32(e))) for e in range(13)]
    assert lrs[:6] == pytest.approx([5e-4] * 6, rel=1e-6)
    assert lrs[6:12] == pytest.approx([1.25e-4] * 6, rel=1e-6)
    assert lrs[12] == pytest.approx(5e-4 / 16, rel=1e-6)
    tx = step_lib.make_optimizer(c)
    params = {"w": jnp.zeros(())}
    updates, _ = tx.update({"w": jnp.full((), 3.0)}, tx.init(params), params)
    # Adam's first direction is the sign (up to optax's float32 bias correction, 1 - 0.999).
    assert float(updates["w"]) == pytest.approx(1.0, rel=1e-5)


def test_warmup_cosine_is_valors_schedule():
    """``lr_schedule='warmup_cosine'`` against VALOR's ``lr_warm_up_cos_anneal``
    (``main_avvp.py:38-45``) as written, set before each 1-based epoch; VALOR's values."""
    import math

    def valor(cur_epoch, warm_up_epoch, max_epoch, lr_min, lr_max):
        if cur_epoch < warm_up_epoch:
            return cur_epoch / warm_up_epoch * lr_max
        return lr_min + 0.5 * (lr_max - lr_min) * (
            1.0 + math.cos((cur_epoch - warm_up_epoch) / (max_epoch - warm_up_epoch) * math.pi)
        )

    c = llp.get_config()
    c.lr_schedule, c.lr_warmup_epochs, c.num_epochs = "warmup_cosine", 10, 60
    c.learning_rate, c.lr_min = 3e-4, 3e-6
    ours = [float(step_lib.learning_rate(c, jnp.int32(e))) for e in range(60)]
    theirs = [valor(e, 10, 60, 3e-6, 3e-4) for e in range(1, 61)]
    assert ours == pytest.approx(theirs, rel=1e-5)  # float32: cos rounded
    assert ours[0] == pytest.approx(3e-5) and ours[9] == pytest.approx(3e-4)  # warm-up, top


def test_adamw_with_clipping_is_torchs():
    """``optimizer='adamw'`` with ``grad_clip_norm``: three steps against torch's
    ``clip_grad_norm_`` then ``AdamW`` (decoupled decay, bias-corrected moments) written
    out in numpy, on gradients that are clipped (step 1, 3) and not (step 2)."""
    c = llp.get_config()
    c.optimizer, c.weight_decay, c.grad_clip_norm = "adamw", 1e-3, 1.0
    c.adam_betas, c.adam_eps = (0.5, 0.999), 1e-8
    step_lib.validate_config(c)
    lr = 3e-4
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(2, 5))
    grads = [rng.normal(size=(2, 5)) * s for s in (3.0, 0.05, 10.0)]
    tx = step_lib.make_optimizer(c)
    ours = {"w": jnp.asarray(theta[0]), "b": jnp.asarray(theta[1])}
    state = tx.init(ours)
    p, m, v = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        coef = 1.0 / (np.sqrt((g**2).sum()) + 1e-6)  # clip_grad_norm_(max_norm=1.0)
        g = g * coef if coef < 1 else g
        p = p * (1 - lr * 1e-3)  # AdamW: decay first
        m, v = 0.5 * m + 0.5 * g, 0.999 * v + 0.001 * g**2
        p = p - lr * (m / (1 - 0.5**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        direction, state = tx.update(
            {"w": jnp.asarray(grads[t - 1][0]), "b": jnp.asarray(grads[t - 1][1])}, state, ours
        )
        ours = jax.tree_util.tree_map(lambda x, u: x - lr * u, ours, direction)
        np.testing.assert_allclose(np.stack([ours["w"], ours["b"]]), p, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="use 'adamw'"):
        c.optimizer = "adam"
        step_lib.validate_config(c)


@pytest.mark.parametrize("name", sorted(ablations.ABLATIONS))
def test_every_ablation_loads_and_validates(name):
    for arg in (name, f"{name},synthetic", f"{name},synthetic,cmpae"):
        config = ablations.get_config(arg)
        step_lib.validate_config(config)
        assert name in config.name


def test_ablations_change_what_they_say():
    base = ablations.get_config("event_aware_nce,synthetic")
    assert ablations.get_config("no_kd,synthetic").loss.kd is False and base.loss.kd
    assert ablations.get_config("standard_nce,synthetic").loss.contrastive == "standard"
    c = ablations.get_config("no_tokens_no_corr,synthetic")
    assert not c.model.class_tokens and not c.loss.correlation
    assert ablations.get_config("cmpae,synthetic").method == "anchor_only"
    assert ablations.get_config("coleaf_cmpae").loss.denoise
    official = ablations.get_config("official")
    assert (official.loss.reference, official.eval.thresholds) == ("asl", "official")
    assert ablations.get_config("paper").loss.reference == "bce"
    assert ablations.get_config("han").eval.thresholds == "standard"
    assert ablations.get_config("coleaf_cmpae,synthetic").eval.thresholds == "official"
    with pytest.raises(ValueError, match="'no_such_thing' is not an ablation"):
        ablations.get_config("no_such_thing")
    with pytest.raises(ValueError, match="unknown option"):
        ablations.get_config("no_kd,imagenet")


def test_load_config_file_with_variant_and_overrides():
    from coleaf_jax.config import load_config_file

    c = load_config_file("configs/ablations.py:no_kd,synthetic", ["num_epochs=3", "data.root=/x"])
    assert (c.num_epochs, c.data.root, c.loss.kd) == (3, "/x", False)
    with pytest.raises(KeyError, match="no key 'loss.kdd'"):
        load_config_file("configs/llp.py", ["loss.kdd=1"])


def test_num_devices_is_validated():
    import jax

    c = synthetic.get_config()
    c.num_devices = jax.local_device_count() + 1
    with pytest.raises(ValueError, match="config.num_devices"):
        step_lib.validate_config(c)
    c.num_devices = 1
    c.batch_size = 7
    step_lib.validate_config(c)  # one device: any batch size
    assert step_lib.num_devices(c) == 1


def test_every_key_has_a_check_and_every_check_a_key():
    """A key added to the defaults without a declared check (or the reverse) fails here."""
    from coleaf_jax import config as config_lib

    keys = set(config_lib.flatten(llp.get_config()))
    assert keys == set(config_lib.SCHEMA), (
        sorted(keys - set(config_lib.SCHEMA)),
        sorted(set(config_lib.SCHEMA) - keys),
    )


@pytest.mark.parametrize(
    "spec",
    [
        "configs/llp.py",
        "configs/llp.py:paper",
        "configs/llp.py:coleaf_han,paper",
        "configs/synthetic.py:coleaf_cmpae",
        "configs/unav100.py",
        "configs/unav100.py:synthetic",
        "configs/llp_pseudo.py",
        "configs/llp_pseudo.py:han,synthetic",
        "configs/ablations.py:no_kd,synthetic,cmpae",
    ],
)
def test_every_config_file_passes_its_checks(spec):
    from coleaf_jax.config import load_config_file, validate

    validate(load_config_file(spec))  # load_config_file validates too


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lr_decay_factor", 0.0, "a number in (0.0, 1.0]"),
        ("lr_decay_factor", 1.5, "a number in (0.0, 1.0]"),
        (
            "data.dataset",
            "imagenet",
            "one of ['llp', 'synthetic', 'synthetic_unav100', 'unav100'] (coleaf_jax.registry)",
        ),
        ("loss.cmpae_weights", (1.0, -1.0, 1.0, 1.0, 1.0), "5 numbers, each finite number >= 0.0"),
        (
            "loss.denoise_ratios",
            "ratios.txt",
            "'llp' (the shipped table) or the path of an .npz file",
        ),
        ("data.synthetic_videos", 2, "a whole number >= 3"),
        ("model.cmpae_ca_mix", 1.5, "a number in [0.0, 1.0]"),
        ("name", "", "a non-empty string"),
        ("data.on_device", 1, "True or False"),
    ],
)
def test_a_value_outside_its_check_names_key_value_and_what_is_allowed(key, value, expected):
    from coleaf_jax.config import load_config_file

    with pytest.raises(ValueError) as info:
        load_config_file("configs/synthetic.py", [f"{key}={value!r}"])
    assert str(info.value) == f"config.{key} = {value!r}: expected {expected}".replace(
        "(1.0, -1.0, 1.0, 1.0, 1.0)", "[1.0, -1.0, 1.0, 1.0, 1.0]"
    )


def _assignments(path: str) -> dict[str, bool]:
    """``{key: has a comment}`` for every ``c.KEY = ...`` line of a config file: a comment
    on the line, or a comment block right above it."""
    import re

    lines = open(path).read().splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r"\s+c\.([a-z_.]+) = ", line)
        if m and "ConfigDict()" not in line:
            out[m.group(1)] = "  # " in line or lines[i - 1].strip().startswith("#")
    return out


def test_llp_config_file_writes_out_every_key_with_a_comment():
    """configs/llp.py read alone tells every value of the run: each key of SCHEMA is
    assigned there, with a comment saying what it is or where it comes from."""
    from coleaf_jax import config as config_lib

    written = _assignments(os.path.join(ROOT, "configs", "llp.py"))
    assert set(written) == set(config_lib.SCHEMA), set(config_lib.SCHEMA) ^ set(written)
    assert [k for k, commented in written.items() if not commented] == []


# What the shared pieces of the config files set (coleaf_jax/config.py).
SET_METHOD = {"method", "model.anchor", "loss.denoise", "eval.thresholds", "name"}
PAPER = {
    "num_epochs",
    "loss.reference",
    "loss.class_token_weight_audio",
    "loss.class_token_weight_visual",
    "loss.correlation_teacher",
    "loss.denoise_schedule",
    "name",
}


@pytest.mark.parametrize(
    "spec,bases,shared",
    [
        ("configs/synthetic.py", ["synthetic.py"], SET_METHOD),
        ("configs/synthetic.py:cmpae,paper", ["synthetic.py"], SET_METHOD | PAPER),
        ("configs/unav100.py", ["unav100.py"], SET_METHOD),
        ("configs/unav100.py:synthetic", ["synthetic.py", "unav100.py"], SET_METHOD),
        ("configs/llp_pseudo.py:han", ["llp_pseudo.py"], SET_METHOD),
        ("configs/llp_pseudo.py:synthetic", ["synthetic.py", "llp_pseudo.py"], SET_METHOD),
        ("configs/ablations.py:no_kd,synthetic", ["synthetic.py", "ablations.py"], SET_METHOD),
        ("configs/ablations.py:paper", ["ablations.py"], SET_METHOD | PAPER),
    ],
)
def test_other_config_files_write_out_their_differences(spec, bases, shared):
    """Every value in which a file's config differs from configs/llp.py's is assigned in
    the files it is made of, or set by a shared helper (set_method, use_paper_recipe)."""
    import re

    from coleaf_jax import config as config_lib

    base = config_lib.flatten(llp.get_config())
    derived = config_lib.flatten(config_lib.load_config_file(spec))
    text = "".join(open(os.path.join(ROOT, "configs", b)).read() for b in bases)
    written = set(re.findall(r"\bc(?:onfig)?\.([a-z_.]+) = ", text))
    written |= {k.replace("__", ".") for k in re.findall(r"\b([a-z_]+)=", text)}  # _set(...)
    changed = {k for k in base if base[k] != derived[k]}
    assert changed - written - shared == set()
