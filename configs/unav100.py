"""CoLeaF on UnAV-100: untrimmed, variable-length videos with audio-visual labels.

    python train.py --config configs/unav100.py --config.data.root=/path/to/unav100 --workdir runs/unav
    python train.py --config configs/unav100.py:synthetic --workdir runs/unav_synthetic

``config.data.root`` holds annotations/unav100_annotations.json and
av_features/<id>_{vggish,rgb,flow}.npy (``--config.data.unav_features=onepeace``
for the ONE-PEACE features). Videos are cut into ceil(duration) one-second
segments, padded per batch to a multiple of ``data.bucket`` segments and masked.
Variants after a colon: a method (``coleaf_han`` default, ``coleaf_cmpae``,
``han``, ``cmpae``) and/or ``synthetic`` (the generated variable-length set),
e.g. ``configs/unav100.py:han,synthetic``.
"""

from coleaf_jax.config import unav100_config


def get_config(variant: str = ""):
    return unav100_config(variant)
