"""From video files to HAN's LLP features: decoding (PyAV) and the three extractors in flax.

* :mod:`~coleaf_jax.features.decode`: 8-fps frames and 16 kHz audio, as HAN's scripts made them.
* :mod:`~coleaf_jax.features.preprocess`: resize/crop/normalisation and VGGish's log-mel front end.
* :mod:`~coleaf_jax.features.vggish`, :mod:`~coleaf_jax.features.resnet`,
  :mod:`~coleaf_jax.features.r2plus1d`: VGGish (128-d per second), ResNet-152
  (2048-d per frame, 8 per second), R(2+1)D-18 (512-d per second).
* :mod:`~coleaf_jax.features.convert`, :mod:`~coleaf_jax.features.weights`: public
  checkpoints -> flax variables (orbax) in a weights folder; clear errors when missing.
* :mod:`~coleaf_jax.features.extract`: the whole pipeline, batched and jitted;
  ``python -m coleaf_jax.features VIDEOS --out ROOT --weights W`` writes an LLP-layout folder.

Every choice and its source (HAN's extraction scripts, file and line) is in docs/features.md.
"""
