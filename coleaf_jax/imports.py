"""Released trained models of the field, imported as runs (docs/models.md).

    python -m coleaf_jax.imports SOURCE FILE --workdir W [--config configs/llp.py:han]
                                 [--config.data.root=/path/to/LLP ...] [--overwrite]

``SOURCE`` names the project whose network and save call wrote ``FILE``
(:data:`SOURCES`): ``han`` (HAN's ``MMIL_Net.pt``), ``valor``, ``valor_plus``
(VALOR's ``checkpoint_best.pt``). ``FILE`` is read with the restricted, bounded
``.pth`` reader of :mod:`coleaf_jax.features.convert` (nothing in it is executed;
sizes, strides and offsets are checked before any memory is touched), every entry
is checked against the source's network (what is missing, unexpected or
mis-shaped is named, and a file of another project is named as such), and ``W``
becomes a run that ``eval.py``, ``parse.py`` (``--features``, ``--split``,
``--video``) and the report read like a trained one, with ``--workdir W`` alone:

* ``W/config.json``: ``--config``'s values (default ``configs/llp.py:han``, the HAN
  baseline's) with the source's architecture (widths read from the file, heads and
  update order the source's) and the source's own evaluation rule as
  ``eval.thresholds``; ``--config.KEY=VALUE`` overrides the rest (``data.root``: where
  ``eval.py`` finds the features and annotations);
* ``W/checkpoints/0``: an orbax checkpoint of the imported Anchor (epoch 0);
* ``W/imported.json``: the source, the file's name, size and SHA-256, the architecture.

An existing non-empty ``W`` is refused (nothing is written) unless ``--overwrite`` is
given and ``W`` holds an earlier import (never a training run).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax import cli, fileio
from coleaf_jax.config import load_config_file, validate
from coleaf_jax.features import convert
from coleaf_jax.models import authors_weights as aw
from coleaf_jax.training import checkpoints, step
from coleaf_jax.training import workdir as workdir_lib

IMPORT_RECORD = "imported.json"


@dataclasses.dataclass(frozen=True)
class Source:
    """A project's released checkpoint: its network, how it was saved, its protocol.

    ``published``: the released model's widths (``d_model``, ``ffn_dim``, ``num_layers``,
    ``audio_dim``, ``video_dim``); a file with others is imported with a note.
    ``num_heads`` and ``update_order`` are not in a state dict: they are the source's.
    """

    name: str
    project: str
    network: str  # the authors' module that defines it, pinned
    released: str  # where the file is published
    saved_as: str
    unused: str  # key of authors_weights.UNUSED_PREFIXES
    num_heads: int
    update_order: str
    published: dict
    thresholds: str  # its own evaluation rule (coleaf_jax.evaluation.metrics presets)


SOURCES: dict[str, Source] = {
    "han": Source(
        name="han",
        project="HAN (Tian et al., ECCV 2020)",
        network="github.com/YapengTian/AVVP-ECCV20 @ fde5611, nets/net_audiovisual.py MMIL_Net",
        released="models/MMIL_Net.pt in that repository",
        saved_as="torch.save(model.state_dict()) (torch 1.x: legacy or zip format)",
        unused="han",
        num_heads=1,
        update_order="parallel",
        published=dict(
            d_model=512, ffn_dim=512, num_layers=1, audio_dim=128, video_dim=2048, video_3d_dim=512
        ),
        thresholds="standard",
    ),
    "valor": Source(
        name="valor",
        project="VALOR (Lai et al., NeurIPS 2023)",
        network="github.com/Franklin905/VALOR @ 2677da9, main_network.py MMIL_Net",
        released="checkpoint_best.pt, Hugging Face NTUBarista/valor_trained_models",
        saved_as="torch.save(model.state_dict(), 'checkpoint_best.pt') (zip format)",
        unused="valor",
        num_heads=8,
        update_order="audio_first",
        published=dict(
            d_model=512, ffn_dim=1024, num_layers=1, audio_dim=128, video_dim=2048, video_3d_dim=512
        ),
        thresholds="standard",
    ),
    "valor_plus": Source(
        name="valor_plus",
        project="VALOR+ (Lai et al., NeurIPS 2023)",
        network="github.com/Franklin905/VALOR @ 2677da9, main_network.py MMIL_Net",
        released="checkpoint_best.pt, Hugging Face NTUBarista/valor_trained_models",
        saved_as="torch.save(model.state_dict(), 'checkpoint_best.pt') (zip format)",
        unused="valor",
        num_heads=8,
        update_order="audio_first",
        published=dict(
            d_model=256, ffn_dim=1024, num_layers=4, audio_dim=128, video_dim=2048, video_3d_dim=512
        ),
        thresholds="standard",
    ),
}


class ImportError_(ValueError):
    """A file that cannot be imported as the source it is given as (one line)."""


def _shape(state, key):
    return tuple(state[key].shape) if key in state else None


def architecture(state: dict[str, np.ndarray], source: Source, path: str) -> dict:
    """The widths and layer count of a HAN-family state dict (checked further by
    :func:`anchor_params`)."""
    need = ("fc_a.weight", "fc_v.weight", "fc_st.weight", "fc_prob.weight")
    layer0 = "hat_encoder.layers.0.linear1.weight"
    missing = [k for k in (*need, layer0) if k not in state]
    if missing:
        raise ImportError_(_not_this(state, source, path, f"missing {', '.join(missing)}"))
    for key in (*need, layer0):
        if len(_shape(state, key)) != 2:
            raise ImportError_(
                f"{path}: {key} has shape {list(_shape(state, key))}, expected a matrix "
                f"(a {source.name} checkpoint: {source.network})"
            )
    layers = {int(k.split(".")[2]) for k in state if k.startswith("hat_encoder.layers.")}
    num_layers = max(layers) + 1
    d_model, audio_dim = _shape(state, "fc_a.weight")
    return dict(
        d_model=int(d_model),
        ffn_dim=int(_shape(state, layer0)[0]),
        num_layers=int(num_layers),
        audio_dim=int(audio_dim),
        video_dim=int(_shape(state, "fc_v.weight")[1]),
        video_3d_dim=int(_shape(state, "fc_st.weight")[1]),
        num_classes=int(_shape(state, "fc_prob.weight")[0]),
    )


def _expected_shapes(table, arch: dict) -> dict[str, tuple]:
    """The authors' shape of every entry of ``table`` for ``arch``."""
    d, f, c = arch["d_model"], arch["ffn_dim"], arch["num_classes"]
    linear_in = {
        "fc_a": arch["audio_dim"],
        "fc_v": arch["video_dim"],
        "fc_st": arch["video_3d_dim"],
        "fc_fusion": 2 * d,
        "fc_prob": d,
        "fc_frame_att": d,
        "fc_av_att": d,
        "linear1": d,
        "linear2": f,
        "out_proj": d,
    }
    linear_out = {"fc_prob": c, "fc_frame_att": c, "fc_av_att": c, "linear1": f}
    out = {}
    for name, _, kind in table:
        module, leaf = name.rsplit(".", 1)
        last = module.rsplit(".", 1)[-1]
        if kind == "qkv_t":
            out[name] = (3 * d, d)
        elif kind == "qkv":
            out[name] = (3 * d,)
        elif "norm" in last:
            out[name] = (d,)
        elif leaf == "weight":
            out[name] = (linear_out.get(last, d), linear_in[last])
        else:
            out[name] = (linear_out.get(last, d),)
    return out


def _not_this(state, source: Source, path: str, what: str) -> str:
    """One line: the file is not a ``source`` checkpoint, what did not match, and what
    it looks like instead."""
    looks = _looks_like(state)
    hint = f"; it looks like {looks}" if looks and looks != source.name else ""
    return f"{path}: not a {source.name} checkpoint ({source.project}): {what}{hint}"


def _looks_like(state) -> str | None:
    keys = set(state)
    if "fc_prob_beta.weight" in keys or "fc_a.0.weight" in keys:
        return "the CMPAE / CoLeaF Anchor (nets/net_audiovisual.py of CMPAE or CoLeaF)"
    if any(k.startswith("cls_tokens_") for k in keys):
        return "CoLeaF's Reference (Self_Audio_Net / Self_Video_Net)"
    if any(k.startswith(("audio_encoder.", "cmt_encoder.")) for k in keys):
        return "han (HAN's MMIL_Net)"
    if any(k.startswith("hat_encoder.final_norm_") for k in keys):
        return "valor or valor_plus (VALOR's MMIL_Net)"
    return None


def anchor_params(state: dict[str, np.ndarray], source: Source, path: str) -> tuple[dict, dict]:
    """``(our HANAnchor params, architecture)`` of a ``source`` state dict, every entry
    checked: missing, unexpected and mis-shaped entries are one :class:`ImportError_`."""
    arch = architecture(state, source, path)
    if arch["d_model"] % source.num_heads:
        raise ImportError_(
            f"{path}: width {arch['d_model']} is not divisible by {source.name}'s "
            f"{source.num_heads} heads"
        )
    table = aw.han_table(arch["num_layers"])
    known = {name for name, _, _ in table}
    unused = aw.UNUSED_PREFIXES[source.unused]
    missing = [k for k in known if k not in state]
    unexpected = [k for k in state if k not in known and not k.startswith(unused)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:3])}...)")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}...)")
    if problems:
        raise ImportError_(_not_this(state, source, path, "; ".join(problems)))
    expected = _expected_shapes(table, arch)
    for name, shape in expected.items():
        if _shape(state, name) != shape:
            raise ImportError_(
                f"{path}: {name} has shape {list(_shape(state, name))}, expected "
                f"{list(shape)} (a {source.name} network of width {arch['d_model']}, "
                f"FFN {arch['ffn_dim']}, {arch['num_layers']} layer(s))"
            )
        if not np.issubdtype(state[name].dtype, np.floating):
            raise ImportError_(f"{path}: {name} holds {state[name].dtype}, expected floats")
        if not np.all(np.isfinite(state[name])):
            raise ImportError_(f"{path}: {name} holds NaN or infinite values")
    return aw.from_authors(state, table, source.unused), arch


def apply_source(config, source: Source, arch: dict) -> None:
    """``config`` (in place) with the source's network and evaluation rule."""
    m = config.model
    m.anchor = "han"
    m.d_model, m.ffn_dim, m.num_layers = arch["d_model"], arch["ffn_dim"], arch["num_layers"]
    m.num_heads, m.update_order = source.num_heads, source.update_order
    m.pool_frames_first = True
    config.method = "anchor_only"
    config.eval.thresholds = source.thresholds
    config.name = f"{source.name}_imported"


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _prepare_workdir(workdir: str, overwrite: bool) -> None:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ImportError_(f"--workdir {workdir}: exists and is not a folder")
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not os.path.exists(os.path.join(workdir, IMPORT_RECORD)):
            raise ImportError_(
                f"--workdir {workdir}: exists and is not an import (a training run, or "
                f"another folder): nothing written; give an empty or new folder"
            )
        if not overwrite:
            raise ImportError_(
                f"--workdir {workdir}: already holds an imported model "
                f"({IMPORT_RECORD}); --overwrite replaces it"
            )


def import_checkpoint(
    source_name: str, path: str, workdir: str, config, overwrite: bool = False, verbose=True
) -> dict:
    """Imports ``path`` (a ``source_name`` checkpoint) into ``workdir`` (module docstring).
    Returns the import record. Nothing is written when anything fails before the
    checkpoint is saved."""
    if source_name not in SOURCES:
        raise ImportError_(f"SOURCE {source_name!r}: expected one of {', '.join(SOURCES)}")
    source = SOURCES[source_name]
    if not os.path.isfile(path):
        raise ImportError_(f"{path}: no such file")
    _prepare_workdir(workdir, overwrite)
    state = convert.read_pth(path)  # restricted and bounded: ConversionError names the file
    params, arch = anchor_params(state, source, path)
    apply_source(config, source, arch)
    validate(config)
    if arch["num_classes"] != config.data.num_classes:
        raise ImportError_(
            f"{path}: {arch['num_classes']} classes, config.data.num_classes = "
            f"{config.data.num_classes}"
        )
    notes = [
        f"{k} {arch[k]} (published {v})" for k, v in source.published.items() if arch.get(k) != v
    ]
    # The run's state: the Anchor's parameters in the template a trained run has.
    t = 10
    sample = {
        "audio": jnp.zeros((1, t, arch["audio_dim"])),
        "video_2d": jnp.zeros((1, t, arch["video_dim"])),
        "video_3d": jnp.zeros((1, t, arch["video_3d_dim"])),
        "mask": jnp.ones((1, t), bool),
    }
    template, _, _, _ = step.create_train_state(
        config, jax.random.key(0), sample, 1, config.data.num_classes
    )
    theirs = jax.tree_util.tree_structure(params)
    ours = jax.tree_util.tree_structure(template.anchor_params)
    if theirs != ours:  # the table and the module disagree: a bug of ours, not the file's
        raise AssertionError(f"imported parameters {theirs} do not fit the Anchor's {ours}")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(template.anchor_params)):
        assert a.shape == b.shape, (a.shape, b.shape)
    run_state = template.replace(
        anchor_params=jax.tree.map(jnp.asarray, params),
        anchor_opt=step.make_optimizer(config).init(params),
    )
    record = {
        "source": source.name,
        "project": source.project,
        "network": source.network,
        "file": os.path.basename(path),
        "path": os.path.abspath(path),
        "bytes": os.path.getsize(path),
        "sha256": sha256(path),
        "architecture": {
            **arch,
            "num_heads": source.num_heads,
            "update_order": source.update_order,
        },
        "thresholds": source.thresholds,
    }
    if os.path.isdir(workdir) and overwrite:
        for name in os.listdir(workdir):
            target = os.path.join(workdir, name)
            shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lib.lock(workdir, verbose=False):
        workdir_lib.write_config(workdir, config)
        mngr = checkpoints.checkpoint_manager(workdir)
        # The selection score of the only checkpoint: it is the best by construction.
        checkpoints.save_checkpoint(mngr, 0, run_state, 0.0)
        mngr.close()
        fileio.atomic_write_text(
            os.path.join(workdir, IMPORT_RECORD), json.dumps(record, indent=2) + "\n"
        )
    if verbose:
        print(
            f"imported {path} ({source.project}: width {arch['d_model']}, FFN "
            f"{arch['ffn_dim']}, {arch['num_layers']} layer(s), {source.num_heads} head(s), "
            f"{source.update_order} update) into {workdir}; evaluation rule "
            f"{source.thresholds!r}"
        )
        if notes:
            print(f"note: not the released {source.name} network's widths: {', '.join(notes)}")
    return record


def main(argv=None) -> int:
    """The command line (module docstring): argparse, with ``--config.KEY=VALUE``
    overrides as the entry scripts take them; every error is one line."""
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.imports", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source", choices=sorted(SOURCES), help="the project that wrote FILE")
    parser.add_argument("file", help="the checkpoint file (.pt / .pth)")
    parser.add_argument("--workdir", required=True, help="folder to write the imported run into")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier import")
    parser.add_argument(
        "--config",
        default="configs/llp.py:han",
        help="base config, FILE.py[:options] (data, evaluation); default configs/llp.py:han",
    )
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config.") or "=" not in item:
            parser.error(f"unrecognized argument {item!r} (overrides are --config.KEY=VALUE)")
        overrides.append(item[len("--config.") :])
    cli.quiet_libraries()
    config = cli.exit_on_user_error(load_config_file, args.config, overrides)
    cli.exit_on_user_error(
        import_checkpoint, args.source, args.file, args.workdir, config, overwrite=args.overwrite
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
