"""The weights folder: which public checkpoint each extractor needs, and where.

A weights folder holds the downloaded checkpoints (file names as published)
and their conversions::

    weights/resnet152-b121ed2d.pth            torchvision ResNet-152 (ImageNet)
    weights/r2plus1d_18-91a641e6.pth          torchvision R(2+1)D-18 (Kinetics-400)
    weights/vggish-10086976.pth               VGGish (torchvggish's port of Google's
      or weights/vggish_model.ckpt             checkpoint; Google's needs TensorFlow)
    weights/vggish_pca_params-970ea276.pth    only for --vggish-postprocess pca
      or weights/vggish_pca_params.npz
    weights/clip-vit-large-patch14/           CLIP ViT-L/14 (transformers folder) and
    weights/630k-fusion-best.pt               LAION-CLAP, with weights/roberta-base/ (its
                                              tokenizer): only for --features valor
    weights/<model>/  weights/<model>.json    the flax variables (orbax) and their source

Nothing is downloaded: a missing checkpoint raises :class:`MissingWeightsError`
with the file to download, its address and where to put it. A checkpoint
present but not converted is converted on first use.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from coleaf_jax import fileio
from coleaf_jax.features import clap, clip, convert
from coleaf_jax.features.convert import ConversionError
from coleaf_jax.training.workdir import RunError, check_output


class MissingWeightsError(FileNotFoundError):
    """An extractor's weights are not in the weights folder (the message says what to fetch)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One published checkpoint an extractor can be converted from."""

    file: str
    url: str
    kind: str  # 'pth', 'tf', 'npz'
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    description: str
    sources: tuple[Source, ...]


MODELS: dict[str, Model] = {
    "resnet152": Model(
        "resnet152",
        "ResNet-152, ImageNet (torchvision; HAN's res152/ features)",
        (
            Source(
                "resnet152-b121ed2d.pth",
                "https://download.pytorch.org/models/resnet152-b121ed2d.pth",
                "pth",
            ),
        ),
    ),
    "r2plus1d_18": Model(
        "r2plus1d_18",
        "R(2+1)D-18, Kinetics-400 (torchvision; HAN's r2plus1d_18/ features)",
        (
            Source(
                "r2plus1d_18-91a641e6.pth",
                "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth",
                "pth",
            ),
        ),
    ),
    "vggish": Model(
        "vggish",
        "VGGish, AudioSet (HAN's vggish/ features)",
        (
            Source(
                "vggish-10086976.pth",
                "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
                "pth",
                "torchvggish's port of Google's checkpoint",
            ),
            Source(
                "vggish_model.ckpt",
                "https://storage.googleapis.com/audioset/vggish_model.ckpt",
                "tf",
                "Google's TF-slim checkpoint; converting it needs TensorFlow",
            ),
        ),
    ),
    "clip": Model(
        "clip",
        "CLIP ViT-L/14 (openai/clip-vit-large-patch14, transformers; VALOR's CLIP teacher)",
        tuple(
            Source(
                f"clip-vit-large-patch14/{file}",
                f"https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/{file}",
                "hf",
                "with config.json and tokenizer.json (or vocab.json, merges.txt) beside it",
            )
            for file in clip.CHECKPOINT_FILES
        ),
    ),
    "clap": Model(
        "clap",
        "LAION-CLAP, HTSAT-tiny + RoBERTa, fusion, LAION-Audio-630K (VALOR's CLAP teacher)",
        (
            Source(
                "630k-fusion-best.pt",
                "https://huggingface.co/lukewys/laion_clap/resolve/main/630k-fusion-best.pt",
                "pth",
                "laion_clap's load_ckpt(model_id=2), as VALOR's utils/clap_preprocess.py",
            ),
        ),
    ),
    "vggish_pca": Model(
        "vggish_pca",
        "VGGish PCA parameters (only for --vggish-postprocess pca)",
        (
            Source(
                "vggish_pca_params-970ea276.pth",
                "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
                "vggish_pca_params-970ea276.pth",
                "pth",
            ),
            Source(
                "vggish_pca_params.npz",
                "https://storage.googleapis.com/audioset/vggish_pca_params.npz",
                "npz",
            ),
        ),
    ),
}


def converted_path(folder: str, name: str) -> str:
    return os.path.join(os.path.abspath(folder), name)


def is_converted(folder: str, name: str) -> bool:
    path = converted_path(folder, name)
    return os.path.isdir(path) and os.path.exists(path + ".json")


def find_source(folder: str, name: str) -> tuple[Source, str] | None:
    for source in MODELS[name].sources:
        path = os.path.join(folder, source.file)
        if os.path.isfile(path):
            return source, path
    return None


def missing_message(folder: str, name: str) -> str:
    model = MODELS[name]
    folder = os.path.abspath(folder)
    lines = [
        f"{converted_path(folder, name)}: no converted {model.description} weights, and no "
        f"checkpoint to convert in {folder}. Download"
    ]
    for i, s in enumerate(model.sources):
        note = f" ({s.note})" if s.note else ""
        lines.append(f"  {'or ' if i else ''}{s.url}{note}")
        lines.append(f"     to {os.path.join(folder, s.file)}")
    lines.append(
        f"then run: python -m coleaf_jax.features.convert {folder}  (or extract again: "
        f"it converts what it finds)"
    )
    return "\n".join(lines)


def _read_source(source: Source, path: str, name: str) -> tuple[dict, dict]:
    """``(variables, record)``: the converted variables and what the record beside them
    keeps of their configuration (CLIP's and CLAP's; their shapes do not give it)."""
    if name == "clip":
        config, variables = clip.load_folder(os.path.dirname(path))
        return variables, {"config": dataclasses.asdict(config)}
    if name == "clap":
        state = convert.read_pth(path)
        variables = clap.variables_from_state_dict(state, clap.CLAP_TINY_FUSION, path)
        return variables, {"config": clap.config_to_dict(clap.CLAP_TINY_FUSION)}
    return _read_plain(source, path, name), {}


def _read_plain(source: Source, path: str, name: str) -> dict:
    if source.kind == "npz":
        return convert.pca_params(convert.read_npz(path, ("pca_eigen_vectors", "pca_means")), path)
    if source.kind == "tf":
        try:
            import tensorflow as tf  # noqa: F401
        except ImportError as e:
            raise ConversionError(
                f"{path}: converting Google's TF checkpoint needs TensorFlow (pip install "
                f"tensorflow); or download {MODELS[name].sources[0].url} instead, which needs "
                f"nothing more"
            ) from e
        return convert.vggish_tf_variables(tf.train.load_checkpoint(path), path)
    state = convert.read_pth(path)
    mapping = {
        "resnet152": convert.resnet152_variables,
        "r2plus1d_18": convert.r2plus1d_variables,
        "vggish": convert.vggish_variables,
        "vggish_pca": convert.pca_params,
    }[name]
    return mapping(state, path)


def convert_model(folder: str, name: str, force: bool = False, verbose: bool = True) -> bool:
    """Converts ``name``'s checkpoint in ``folder`` (if there and not yet converted, or
    ``force``); returns whether a converted copy exists afterwards."""
    if is_converted(folder, name) and not force:
        return True
    found = find_source(folder, name)
    if found is None:
        return False
    source, path = found
    if verbose:
        print(f"converting {path} -> {converted_path(folder, name)}", flush=True)
    variables, record = _read_source(source, path, name)
    _save(
        folder,
        name,
        variables,
        {
            "model": name,
            "source": source.file,
            "url": source.url,
            "bytes": os.path.getsize(path),
            "sha256": convert.file_digest(path)[:16],
            **record,
        },
    )
    return True


def _save(folder: str, name: str, variables: dict, record: dict) -> str:
    """Writes ``name``'s converted variables (orbax) and the record beside them, replacing
    what was there (the record last: a copy without it is not converted)."""
    os.makedirs(folder, exist_ok=True)
    out = converted_path(folder, name)
    if os.path.exists(out):
        shutil.rmtree(out)
    if os.path.exists(out + ".json"):
        os.remove(out + ".json")
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(out, variables)
    ckpt.wait_until_finished()
    fileio.atomic_write_json(out + ".json", record)  # whole or not at all
    return out


def provenance(folder: str, name: str) -> dict:
    """The record beside ``name``'s converted weights (source file, digest, config), or
    ``{}`` when there is none or it is not a record (damaged, deeply nested, not an
    object): callers treat it as no record and convert again."""
    try:
        record = fileio.load_json(converted_path(folder, name) + ".json")
    except (OSError, ValueError):  # missing, or JSON, UTF-8, nesting (fileio.JSONFileError)
        return {}
    return record if isinstance(record, dict) else {}


def convert_folder(folder: str, force: bool = False, verbose: bool = True) -> list[str]:
    """Converts every checkpoint found in ``folder``; returns the converted models."""
    if not os.path.isdir(folder):
        raise MissingWeightsError(
            f"{folder}: no such folder (put the downloaded checkpoints in it)"
        )
    check_output(folder, "the weights folder", folder=True)  # never a run's records
    return [name for name in MODELS if convert_model(folder, name, force, verbose)]


def describe_folder(folder: str) -> str:
    """What ``folder`` holds and what it lacks, one line per model."""
    lines = [f"{os.path.abspath(folder)}:"]
    for name, model in MODELS.items():
        if is_converted(folder, name):
            state = "converted"
        elif find_source(folder, name):
            state = f"{find_source(folder, name)[0].file} (not converted yet)"
        else:
            state = "missing: download " + " or ".join(s.url for s in model.sources)
        lines.append(f"  {name:12s} {state}")
    return "\n".join(lines)


def load(folder: str, name: str, verbose: bool = True) -> dict:
    """The converted variables of ``name`` (converting a checkpoint found in ``folder``
    first); :class:`MissingWeightsError` with download instructions when there is none."""
    if folder is None:
        raise MissingWeightsError(
            "no weights folder given (--weights DIR): it holds the "
            "extractors' checkpoints;\n" + missing_message("weights", name)
        )
    if not is_converted(folder, name) and not convert_model(folder, name, verbose=verbose):
        raise MissingWeightsError(missing_message(folder, name))
    path = converted_path(folder, name)
    again = (
        f"delete {path} and {path}.json and convert again: python -m "
        f"coleaf_jax.features.convert {os.path.abspath(folder)}"
    )
    ckpt = ocp.StandardCheckpointer()
    try:
        nbytes = _restored_bytes(ckpt, path)
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise plain exceptions
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise MissingWeightsError(
            f"{path}: the converted weights cannot be read ({why}); {again}"
        ) from None
    if nbytes > MAX_CONVERTED_BYTES:
        raise MissingWeightsError(
            f"{path}: its metadata declares {nbytes} bytes of weights, more than any extractor "
            f"has ({MAX_CONVERTED_BYTES}); a damaged or crafted copy: {again}"
        )
    try:
        return ckpt.restore(path)
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise plain exceptions
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise MissingWeightsError(
            f"{path}: the converted weights cannot be read ({why}); {again}"
        ) from None


# The most a converted copy may declare (read from its metadata before anything is
# restored): CLIP ViT-L/14, the largest extractor, is 1.7 GB in float32.
MAX_CONVERTED_BYTES = 4 << 30


def _restored_bytes(ckpt, path: str) -> int:
    """What restoring ``path`` would allocate, from its metadata (shapes and dtypes)."""
    tree = ckpt.metadata(path).item_metadata.tree
    total = 0
    for leaf in jax.tree_util.tree_leaves(tree, is_leaf=lambda x: hasattr(x, "shape")):
        shape = tuple(leaf.shape)
        if len(shape) > convert.MAX_NDIM or any(type(d) is not int or d < 0 for d in shape):
            raise ValueError(f"a weight of shape {shape[:8]}")
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def save_converted(
    folder: str, name: str, variables: dict, source: str = "random", config=None
) -> str:
    """Saves ``variables`` as ``name``'s converted weights (tests and tools; ``config``:
    CLIP's or CLAP's configuration dataclass, kept in the record)."""
    record = {"config": dataclasses.asdict(config)} if config is not None else {}
    return _save(folder, name, variables, {"model": name, "source": source, **record})


def convert_main(argv=None) -> int:
    """``python -m coleaf_jax.features.convert FOLDER``: converts what the folder holds;
    an unreadable or unsafe checkpoint is one ``error:`` line and exit status 1."""
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.features.convert",
        description="Convert the extractors' public checkpoints found in a weights folder "
        "to flax variables (orbax) in the same folder.",
    )
    parser.add_argument("folder", help="the weights folder holding the downloaded checkpoints")
    parser.add_argument("--force", action="store_true", help="convert again even if converted")
    args = parser.parse_args(argv)
    try:
        done = convert_folder(args.folder, force=args.force, verbose=True)
    except (ConversionError, MissingWeightsError, OSError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(describe_folder(args.folder))
    return 0 if done else 1
