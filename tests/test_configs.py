"""Config files: they load, validate, and fail clearly where a user must act."""

import jax.numpy as jnp
import ml_collections
import pytest

from coleaf_jax import step as step_lib
from coleaf_jax.data import pipeline
from configs import ablations, llp, synthetic


@pytest.mark.parametrize("module", [llp, synthetic])
@pytest.mark.parametrize("variant,method,anchor", [
    ("coleaf_cmpae", "coleaf", "cmpae"), ("coleaf_han", "coleaf", "han"),
    ("cmpae", "anchor_only", "cmpae"), ("han", "anchor_only", "han")])
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


def test_paper_defaults():
    c = llp.get_config()
    assert (c.num_epochs, c.batch_size, c.learning_rate) == (15, 128, 5e-4)
    assert (c.lr_decay_every_epochs, c.lr_decay_factor) == (6, 0.25)
    assert (c.loss.nce_weight_audio, c.loss.nce_weight_visual, c.loss.correlation_weight) == (0.009, 1.0, 1e-4)


def test_unknown_variant_and_values_fail_clearly():
    with pytest.raises(ValueError, match="unknown variant"):
        llp.get_config("cmpea")
    c = llp.get_config()
    c.loss.contrastive = "infonce"
    with pytest.raises(ValueError, match="config.loss.contrastive = 'infonce'"):
        step_lib.validate_config(c)


def test_llp_needs_a_root(tmp_path):
    with pytest.raises(ValueError, match="config.data.root is required"):
        pipeline.load_splits(llp.get_config(), str(tmp_path))


def test_learning_rate_decays_every_six_epochs():
    c = ml_collections.ConfigDict({"learning_rate": 5e-4, "lr_decay_every_epochs": 6,
                                   "lr_decay_factor": 0.25})
    tx = step_lib.make_optimizer(c, steps_per_epoch=10)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    lrs = []
    for _ in range(130):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        lrs.append(-float(updates["w"]))  # Adam's first update on a constant gradient is -lr
    # Adam normalises a constant gradient to 1, so the update is the learning rate.
    assert lrs[0] == pytest.approx(5e-4, rel=1e-3)
    assert lrs[59] == pytest.approx(5e-4, rel=1e-3)
    assert lrs[60] == pytest.approx(1.25e-4, rel=1e-3)
    assert lrs[120] == pytest.approx(5e-4 / 16, rel=1e-3)


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
    with pytest.raises(ValueError, match="unknown ablation"):
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
