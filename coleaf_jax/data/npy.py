"""Reading one feature file (``.npy``) and checking its values, for every dataset.

* :func:`read_npy`: a ``.npy`` array, or an error naming the file and what it is
  instead (a text or pickle file renamed ``.npy``, a truncated file); never numpy's
  ``allow_pickle`` advice, which would run code from the file.
* :func:`check_values`: finite, and no value beyond :data:`FEATURE_MAX_ABS`
  (an error naming the file); whether the array is all zeros (the callers warn
  once per split with the count and the first ids).

The rule: the released LLP features (VGGish embeddings, ResNet-152 and
R(2+1)D-18 pooled activations, VGGish's 8-bit PCA codes at most 255) and the
UnAV-100 I3D / ONE-PEACE features are all far below 1e4 in magnitude; a file
beyond it holds another unit, a wrong dtype reinterpreted or a corrupt write,
and would dominate training (a loss of 1e30 stops it, naming no file).
"""

from __future__ import annotations

import os

import numpy as np

FEATURE_MAX_ABS = 1e4
NPY_MAGIC = b"\x93NUMPY"


class FeatureFileError(ValueError):
    """A feature file that cannot be used; the message names it."""


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array in ``path`` (``allow_pickle=False``); :class:`FeatureFileError` naming
    the file when it is not a ``.npy`` array."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as e:
        raise FeatureFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if head != NPY_MAGIC:
        kind = "an empty file" if not head else "not a .npy array (it lacks NumPy's header"
        kind += "" if not head else "; a text, pickle or other file named .npy?)"
        raise FeatureFileError(f"{path}: {kind}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        reason = str(e)
        if "pickle" in reason:  # an object array: numpy suggests allow_pickle, which runs code
            reason = "it holds Python objects, not numbers"
        raise FeatureFileError(f"{path}: cannot read as a .npy array ({reason})") from None


def check_values(path: str | os.PathLike, array: np.ndarray) -> bool:
    """Raises :class:`FeatureFileError` naming ``path`` on NaN/inf or a value beyond
    ``FEATURE_MAX_ABS``; returns whether every value is zero."""
    finite = np.isfinite(array)
    if not finite.all():
        raise FeatureFileError(
            f"{path}: expected finite values, got {np.count_nonzero(~finite)} NaN/inf"
        )
    peak = float(np.abs(array).max()) if array.size else 0.0
    if peak > FEATURE_MAX_ABS:
        raise FeatureFileError(
            f"{path}: values up to {peak:.3g}, beyond the plausible {FEATURE_MAX_ABS:.0e} for "
            f"extracted features (another unit, a wrong dtype or a corrupt write?): fix or "
            f"remove the file"
        )
    return peak == 0.0
