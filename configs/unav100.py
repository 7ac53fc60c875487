"""CoLeaF on UnAV-100: untrimmed, variable-length videos with audio-visual labels.
configs/llp.py's values (or configs/synthetic.py's), with the differences below.

    python train.py --config configs/unav100.py --config.data.root=/path/to/unav100 --workdir runs/unav
    python train.py --config configs/unav100.py:synthetic --workdir runs/unav_synthetic

``config.data.root`` holds annotations/unav100_annotations.json and
av_features/<id>_{vggish,rgb,flow}.npy (``--config.data.unav_features=onepeace``
for the ONE-PEACE features). Videos are cut into ceil(duration) one-second
segments, padded per batch to a multiple of ``data.bucket`` segments and masked.
Options: a method (``coleaf_han`` default, ``coleaf_cmpae``, ``han``, ``cmpae``)
and/or ``synthetic`` (the generated variable-length set in the UnAV-100 layout:
20 classes, 2-20 s videos, configs/synthetic.py's sizes), e.g.
``configs/unav100.py:han,synthetic``.
"""

import ml_collections

from coleaf_jax.config import METHODS, load_sibling, parse_options, set_method


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_options(arg, "configs/unav100.py", method=METHODS, data=("synthetic",))
    synthetic = bool(options["data"])
    c = load_sibling(__file__, "synthetic.py" if synthetic else "llp.py")  # then:
    c.data.dataset = "synthetic_unav100" if synthetic else "unav100"
    c.data.num_classes = 20 if synthetic else 100
    c.data.synthetic_videos = 400  # synthetic_unav100 only
    c.data.bucket = 8
    c.eval.selection = "av"  # the labels are audio-visual only: select on the AV scores
    set_method(c, options["method"] or "coleaf_han", "unav100")
    c.loss.denoise = False  # audio-visual labels: no modality noise for JoMoLD to remove
    if synthetic:
        c.name += "_synthetic"
    return c
