"""VALOR's recipe (configs/valor.py) against VALOR's own code.

The step: ``tests/fixtures/parity_valor_f64.npz`` holds what VALOR's ``main_avvp.py:train``
computed (``tools/valor_parity.py record``, torch 2.13 in a separate venv, float64, dropout
off): every loss term of 10 steps over the warm-up, its last epoch, the first cosine epoch
and the last epoch, the learning rates, the parameters and AdamW moments after steps 2, 6
and 10, half of the steps clipped. ``compare`` replays it with our jitted step (measured:
every group within 2.4e-15; a missing clip, weight decay, warm-up or β changes 25-32 groups).
The replay is a documented command of docs/fidelity.md §4, run as written by
``tests/test_docs_commands.py`` (scenario ``parity``). Here: the configs' values.
"""

import pytest

from coleaf_jax.config import validate
from configs import valor


@pytest.mark.parametrize(
    "arg, width, layers, lr, seed",
    [("", 512, 1, 1e-4, 1000), ("plus", 256, 4, 3e-4, 64)],
)
def test_valor_configs_state_valors_scripts(arg, width, layers, lr, seed):
    """scripts/train_valor.sh and train_valor+.sh, value by value."""
    c = valor.get_config(arg)
    validate(c)
    assert (c.model.d_model, c.model.num_layers, c.learning_rate, c.seed) == (
        width,
        layers,
        lr,
        seed,
    )
    assert (c.model.num_heads, c.model.ffn_dim, c.model.update_order) == (8, 1024, "audio_first")
    assert (c.optimizer, tuple(c.adam_betas), c.adam_eps, c.weight_decay) == (
        "adamw",
        (0.5, 0.999),
        1e-8,
        1e-3,
    )
    assert (c.grad_clip_norm, c.lr_schedule, c.lr_warmup_epochs) == (1.0, "warmup_cosine", 10)
    assert c.lr_min == pytest.approx(lr / 100)  # --lr_min 1e-6 / 3e-6
    assert (c.batch_size, c.num_epochs, c.eval.selection, c.eval.thresholds) == (
        64,
        60,
        "type",
        "standard",
    )
    assert c.data.pseudo_labels and c.method == "anchor_only" and c.model.anchor == "valor"


def test_valor_plus_plus_is_refused_in_one_line():
    with pytest.raises(ValueError, match="VALOR\\+\\+ reads CLAP token maps"):
        valor.get_config("plus_plus")
