"""CoLeaF on the embedded synthetic dataset (the README demo): configs/llp.py's
values, with the differences below.

    python train.py --config configs/synthetic.py --workdir runs/synthetic

The dataset is generated under ``<workdir>/data`` on first use (no download).
Same model, losses and schedules as on LLP but a quarter of the width (D = 128),
1,000 videos, batches of 32 and 12 epochs: each method trains in under a minute
on 2 cores.
Options as in configs/llp.py: a method (``coleaf_han`` default, ``coleaf_cmpae``,
``cmpae``, ``han``) and/or ``paper``.
"""

import ml_collections

from coleaf_jax.config import METHODS, load_sibling, parse_options, set_method, use_paper_recipe


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_options(arg, "configs/synthetic.py", method=METHODS, recipe=("paper",))
    c = load_sibling(__file__, "llp.py")  # every value of configs/llp.py, then:
    c.data.dataset = "synthetic"
    c.data.synthetic_videos = 1000  # 700 train, 150 val, 150 test
    c.model.d_model = 128
    c.model.ffn_dim = 128
    c.num_epochs = 12  # the schedules (lr decay, warm-ups) as on LLP
    c.batch_size = 32
    # The official correlation scaling (sum / C x batch) grows with batch²: at batch 32
    # this weight gives the term the strength 1e-4 has at the paper's batch of 128.
    c.loss.correlation_weight = 1e-4 * (128 / c.batch_size) ** 2
    c.log_every_steps = 5
    set_method(c, options["method"] or "coleaf_han", "synthetic")
    if options["recipe"]:
        use_paper_recipe(c)
    return c
