"""A researcher's own config file: CoLeaF with the toy Anchor on the toy dataset, both
registered by ``tests/extension/toy.py`` (named in ``extensions``, so that ``eval.py``
and ``parse.py`` import it again when they restore the run)."""

from configs import synthetic


def get_config(arg: str = ""):
    config = synthetic.get_config(arg)
    config.extensions = ("tests.extension.toy",)
    config.name = "coleaf_toy"
    config.model.anchor = "toy_anchor"
    config.data.dataset = "toy"
    config.data.synthetic_videos = 48  # the toy dataset's training videos
    config.model.d_model = 16
    config.model.ffn_dim = 16
    config.batch_size = 16
    config.num_epochs = 1
    config.eval.batch_size = 24
    return config
