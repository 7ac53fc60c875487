"""Released trained models of the field, imported as runs (docs/models.md).

    python -m coleaf_jax.imports SOURCE FILE --workdir W [--config configs/llp.py:han]
                                 [--config.data.root=/path/to/LLP ...] [--overwrite]
                                 [--thresholds FILE.xlsx]

``SOURCE`` names the project whose network and save call wrote ``FILE``
(:data:`SOURCES`): ``han`` (HAN's ``MMIL_Net.pt``), ``valor``, ``valor_plus``
(VALOR's ``checkpoint_best.pt``), ``jomold`` (``JoMoLD.pt``), ``cmpae`` (``cmpae_s0.pt``,
with ``--thresholds cmpae_s0_early.xlsx``: its per-class visual thresholds). ``FILE`` is read with the restricted, bounded
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
import os
import re
import shutil
import sys
import zipfile
from xml.etree import ElementTree

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax import cli, fileio, registry
from coleaf_jax.config import load_config_file, validate
from coleaf_jax.features import convert
from coleaf_jax.models import authors_weights as aw
from coleaf_jax.training import checkpoints, step
from coleaf_jax.training import workdir as workdir_lib


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
    anchor: str = "han"  # ours: coleaf_jax.registry's 'han', 'valor' or 'cmpae'

    @property
    def anchor_kind(self) -> str:
        """What :func:`_looks_like` calls a file of this source's network."""
        return "cmpae" if self.anchor == "cmpae" else self.name


def _widths(d_model: int, ffn_dim: int, num_layers: int) -> dict:
    """A released network's widths (all of them read LLP's VGGish / ResNet / R(2+1)D)."""
    return dict(
        d_model=d_model,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        audio_dim=128,
        video_dim=2048,
        video_3d_dim=512,
    )


_HAN = Source(
    name="han",
    project="HAN (Tian et al., ECCV 2020)",
    network="github.com/YapengTian/AVVP-ECCV20 @ fde5611, nets/net_audiovisual.py MMIL_Net",
    released="models/MMIL_Net.pt in that repository",
    saved_as="torch.save(model.state_dict()) (torch 1.x: legacy or zip format)",
    unused="han",
    num_heads=1,
    update_order="parallel",
    published=_widths(512, 512, 1),
    thresholds="standard",
)
_VALOR = Source(
    name="valor",
    project="VALOR (Lai et al., NeurIPS 2023)",
    network="github.com/Franklin905/VALOR @ 2677da9, main_network.py MMIL_Net",
    released="model_VALOR/checkpoint_best.pt, Hugging Face NTUBarista/valor_trained_models",
    saved_as="torch.save(model.state_dict(), 'checkpoint_best.pt') (zip format)",
    unused="valor",
    num_heads=8,
    update_order="audio_first",
    published=_widths(512, 1024, 1),
    thresholds="standard",
    anchor="valor",
)
# JoMoLD's and CMPAE's main.py save {'model': state_dict, 'optimizer', 'scheduler',
# 'epochs', RNG states}; the reader keeps 'model'.
_TRAINING_DICT = "torch.save({'model': ..., 'optimizer', 'scheduler', 'epochs', RNG states})"
SOURCES: dict[str, Source] = {
    "han": _HAN,
    "valor": _VALOR,
    "valor_plus": dataclasses.replace(
        _VALOR,
        name="valor_plus",
        project="VALOR+ (Lai et al., NeurIPS 2023)",
        released="model_VALOR+/checkpoint_best.pt, Hugging Face NTUBarista/valor_trained_models",
        published=_widths(256, 1024, 4),
    ),
    "jomold": dataclasses.replace(
        _HAN,
        name="jomold",
        project="JoMoLD (Cheng et al., ECCV 2022)",
        network="github.com/MCG-NJU/JoMoLD @ a7dc2d5, nets/net_audiovisual.py MMIL_Net",
        released="JoMoLD.pt, the Google Drive folder of its README",
        saved_as=f"{_TRAINING_DICT} (main.py:530-535)",
        thresholds="jomold",
    ),
    "cmpae": dataclasses.replace(
        _HAN,
        name="cmpae",
        project="CMPAE (Gao et al., CVPR 2023)",
        network="github.com/MengyuanChen21/CVPR2023-CMPAE @ 73345f7, "
        "nets/net_audiovisual.py MMIL_Net",
        released="cmpae_s0.pt (Google Drive, its README); thresholds: "
        "save/pretrained/cmpae_s0_early.xlsx in its repository",
        saved_as=f"{_TRAINING_DICT} (main.py:376-381)",
        unused="anchor",
        thresholds="cmpae",
        anchor="cmpae",
    ),
}


class ImportError_(ValueError):
    """A file that cannot be imported as the source it is given as (one line)."""


def _shape(state, key):
    return tuple(state[key].shape) if key in state else None


# The entries an architecture is read from, per Anchor: (audio, 2D visual, 3D visual
# projections, the first layer's FFN, the class head).
_KEYS = {
    "han": ("fc_a.weight", "fc_v.weight", "fc_st.weight", "fc_prob.weight"),
    "valor": ("fc_a.weight", "fc_v.weight", "fc_st.weight", "fc_prob.weight"),
    "cmpae": ("fc_a.0.weight", "fc_v.0.weight", "fc_st.0.weight", "fc_prob.weight"),
}
_LAYER0 = "hat_encoder.layers.0.linear1.weight"


def architecture(state: dict[str, np.ndarray], source: Source, path: str) -> dict:
    """The widths, layer count and classes of a state dict (every entry is checked
    afterwards by :func:`anchor_params` against the network these describe)."""
    audio, video, video_3d, classes = _KEYS[source.anchor]
    missing = [k for k in (audio, video, video_3d, classes, _LAYER0) if k not in state]
    if missing:
        raise ImportError_(_not_this(state, source, path, f"missing {', '.join(missing)}"))
    for key in (audio, video, video_3d, classes, _LAYER0):
        if len(_shape(state, key)) != 2:
            raise ImportError_(
                f"{path}: {key} has shape {list(_shape(state, key))}, expected a matrix "
                f"(a {source.name} checkpoint: {source.network})"
            )
    layers = {k.split(".")[2] for k in state if k.startswith("hat_encoder.layers.")}
    d_model, audio_dim = _shape(state, audio)
    return dict(
        d_model=int(d_model),
        ffn_dim=int(_shape(state, _LAYER0)[0]),
        num_layers=len(layers),
        audio_dim=int(audio_dim),
        video_dim=int(_shape(state, video)[1]),
        video_3d_dim=int(_shape(state, video_3d)[1]),
        num_classes=int(_shape(state, classes)[0]),
    )


def _not_this(state, source: Source, path: str, what: str) -> str:
    """One line: the file is not a ``source`` checkpoint, what did not match, and what
    it looks like instead."""
    looks = _looks_like(state)
    hint = f"; it looks like {looks}" if looks and not looks.startswith(source.anchor_kind) else ""
    return f"{path}: not a {source.name} checkpoint ({source.project}): {what}{hint}"


def _looks_like(state) -> str | None:
    keys = set(state)
    if "fc_prob_beta.weight" in keys or "fc_a.0.weight" in keys:
        return "cmpae (the CMPAE / CoLeaF Anchor, nets/net_audiovisual.py MMIL_Net)"
    if any(k.startswith("cls_tokens_") for k in keys):
        return "CoLeaF's Reference (Self_Audio_Net / Self_Video_Net), not an Anchor"
    if any(k.startswith(("audio_encoder.", "cmt_encoder.")) for k in keys):
        return "han (HAN's MMIL_Net)"
    if any(k.startswith("hat_encoder.final_norm_") for k in keys):
        return "valor or valor_plus (VALOR's MMIL_Net)"
    return None


def anchor_params(
    state: dict[str, np.ndarray], source: Source, path: str, config
) -> tuple[dict, dict]:
    """``(our Anchor's params, architecture)`` of a ``source`` state dict; ``config``
    (changed in place) gets the source's network and evaluation rule
    (:func:`apply_source`). Every entry is checked against the network: missing,
    unexpected and mis-shaped entries, integers, NaN or infinite values are one
    :class:`ImportError_` naming the file and the entry."""
    arch = architecture(state, source, path)
    if arch["d_model"] % source.num_heads:
        raise ImportError_(
            f"{path}: width {arch['d_model']} is not divisible by {source.name}'s "
            f"{source.num_heads} heads"
        )
    if source.anchor == "cmpae" and arch["num_layers"] != 1:
        raise ImportError_(f"{path}: {arch['num_layers']} HAN layers; CMPAE's Anchor has one")
    table = aw.ANCHOR_TABLE if source.anchor == "cmpae" else aw.han_table(arch["num_layers"])
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
    apply_source(config, source, arch)
    validate(config)
    if arch["num_classes"] != config.data.num_classes:
        raise ImportError_(
            f"{path}: {arch['num_classes']} classes, config.data.num_classes = "
            f"{config.data.num_classes}"
        )
    # The shape of every entry as the network the architecture describes has it.
    anchor = registry.anchor(config.model.anchor).build(config.model, arch["num_classes"])
    t = 10
    shapes = jax.eval_shape(
        anchor.init,
        jax.random.key(0),
        jnp.zeros((1, t, arch["audio_dim"])),
        jnp.zeros((1, t * 8, arch["video_dim"])),
        jnp.zeros((1, t, arch["video_3d_dim"])),
        jnp.ones((1, t), bool),
    )["params"]
    zeros = jax.tree.map(lambda x: np.broadcast_to(np.float32(0), x.shape), shapes)
    expected = {k: v.shape for k, v in aw.to_authors(zeros, table).items()}
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
    params = jax.tree.map(jnp.asarray, aw.from_authors(state, table, source.unused))
    fits = jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(shapes)
    if not fits or any(
        p.shape != s.shape for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shapes))
    ):  # the table and the module disagree: a bug of ours, not the file's
        raise AssertionError(f"{source.name}: the weight table does not fit the Anchor's params")
    return params, arch


def apply_source(config, source: Source, arch: dict) -> None:
    """``config`` (in place) with the source's network and evaluation rule."""
    m = config.model
    m.anchor = source.anchor
    m.d_model, m.ffn_dim = arch["d_model"], arch["ffn_dim"]
    if source.anchor != "cmpae":  # HAN's network, or VALOR's generalisation of it
        m.num_layers, m.num_heads, m.update_order = (
            arch["num_layers"],
            source.num_heads,
            source.update_order,
        )
        m.pool_frames_first = True
    config.method = "anchor_only"
    config.eval.thresholds = source.thresholds
    config.name = f"{source.name}_imported"


MAX_XLSX_BYTES = 4 << 20  # an .xlsx of thresholds (CMPAE's: 5 kB)
MAX_XLSX_PART = 1 << 20  # one of its XML parts, uncompressed
_SHEET_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def read_xlsx_column(path: str, sheet: str, rows: int) -> tuple[float, ...]:
    """Column A, rows 1..``rows``, of the sheet named ``sheet`` of an ``.xlsx`` file, each a
    number in [0, 1] (CMPAE's per-class visual thresholds: ``utils/write_excel.py`` writes
    class ``c``'s in ``A{c+1}`` of sheet ``Thres``). No spreadsheet library: the file is a
    zip of XML parts, read bounded (the file, each part uncompressed) and without DTDs (no
    entity expansion); anything else is one :class:`ImportError_` naming the file."""
    size = os.path.getsize(path)
    if size > MAX_XLSX_BYTES:
        raise ImportError_(f"{path}: {size} bytes, more than an .xlsx of thresholds holds")

    def part(z: zipfile.ZipFile, name: str):
        try:
            info = z.getinfo(name)
        except KeyError:
            raise ImportError_(f"{path}: no {name} in it (not an .xlsx workbook)") from None
        if info.file_size > MAX_XLSX_PART:
            raise ImportError_(f"{path}: {name} unpacks to {info.file_size} bytes")
        with z.open(info) as f:
            data = f.read(MAX_XLSX_PART + 1)
        if len(data) > MAX_XLSX_PART or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
            raise ImportError_(f"{path}: {name} is too large or declares a DTD")
        return ElementTree.fromstring(data)

    try:
        with zipfile.ZipFile(path) as z:
            sheets = {
                e.get("name"): e.get(_REL_ID)
                for e in part(z, "xl/workbook.xml").iter(f"{_SHEET_NS}sheet")
            }
            if sheet not in sheets:
                raise ImportError_(f"{path}: no sheet {sheet!r} (sheets: {sorted(sheets)[:5]})")
            targets = {
                e.get("Id"): e.get("Target")
                for e in part(z, "xl/_rels/workbook.xml.rels").iter(f"{_REL_NS}Relationship")
            }
            target = targets.get(sheets[sheet]) or ""
            target = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
            cells = {}
            for c in part(z, target).iter(f"{_SHEET_NS}c"):
                match = re.fullmatch(r"A(\d+)", c.get("r") or "")
                v = c.find(f"{_SHEET_NS}v")
                if match and v is not None and c.get("t", "n") == "n":
                    cells[int(match.group(1))] = v.text
    except (zipfile.BadZipFile, ElementTree.ParseError, OSError) as e:
        raise ImportError_(f"{path}: not a readable .xlsx file ({e})") from None
    values = []
    for row in range(1, rows + 1):
        try:
            value = float(cells[row])
        except (KeyError, TypeError, ValueError):
            raise ImportError_(
                f"{path}: sheet {sheet!r} cell A{row}: expected a number, found "
                f"{cells.get(row)!r} ({rows} classes, one per row)"
            ) from None
        if not 0.0 <= value <= 1.0:
            raise ImportError_(f"{path}: sheet {sheet!r} cell A{row} = {value}: not in [0, 1]")
        values.append(value)
    return tuple(values)


def _prepare_workdir(workdir: str, overwrite: bool) -> None:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ImportError_(f"--workdir {workdir}: exists and is not a folder")
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not os.path.exists(os.path.join(workdir, workdir_lib.IMPORT_RECORD)):
            raise ImportError_(
                f"--workdir {workdir}: exists and is not an import (a training run, or "
                f"another folder): nothing written; give an empty or new folder"
            )
        if not overwrite:
            raise ImportError_(
                f"--workdir {workdir}: already holds an imported model "
                f"({workdir_lib.IMPORT_RECORD}); --overwrite replaces it"
            )


def import_checkpoint(
    source_name: str,
    path: str,
    workdir: str,
    config,
    overwrite: bool = False,
    verbose=True,
    thresholds_file: str | None = None,
) -> dict:
    """Imports ``path`` (a ``source_name`` checkpoint) into ``workdir`` (module docstring);
    ``thresholds_file``: CMPAE's per-class visual thresholds (its ``*_early.xlsx``).
    Returns the import record. Nothing is written when anything fails before the
    checkpoint is saved."""
    if source_name not in SOURCES:
        raise ImportError_(f"SOURCE {source_name!r}: expected one of {', '.join(SOURCES)}")
    source = SOURCES[source_name]
    if thresholds_file and source.name != "cmpae":
        raise ImportError_(f"--thresholds {thresholds_file}: only CMPAE has per-class thresholds")
    for what in (path, thresholds_file):
        if what and not os.path.isfile(what):
            raise ImportError_(f"{what}: no such file")
    _prepare_workdir(workdir, overwrite)
    state = convert.read_pth(path)  # restricted and bounded: ConversionError names the file
    params, arch = anchor_params(state, source, path, config)
    if thresholds_file:
        config.eval.visual_thresholds = read_xlsx_column(
            thresholds_file, "Thres", config.data.num_classes
        )
        validate(config)
    notes = [
        f"{k} {arch[k]} (published {v})" for k, v in source.published.items() if arch.get(k) != v
    ]
    # The run's state, as create_train_state makes it for method 'anchor_only'.
    run_state = step.TrainState(
        step=jnp.zeros((), jnp.int32),
        anchor_params=params,
        anchor_opt=step.make_optimizer(config).init(params),
        ref_params={},
        ref_opt={},
    )
    record = {
        "source": source.name,
        "project": source.project,
        "network": source.network,
        "file": os.path.basename(path),
        "path": os.path.abspath(path),
        "bytes": os.path.getsize(path),
        "sha256": convert.file_digest(path),
        "architecture": {
            **arch,
            "num_heads": source.num_heads,
            "update_order": source.update_order,
        },
        "thresholds": source.thresholds,
        "visual_thresholds": list(config.eval.visual_thresholds),
    }
    if thresholds_file:
        record["thresholds_file"] = {
            "file": os.path.basename(thresholds_file),
            "bytes": os.path.getsize(thresholds_file),
            "sha256": convert.file_digest(thresholds_file),
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
        fileio.atomic_write_json(os.path.join(workdir, workdir_lib.IMPORT_RECORD), record)
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
        "--thresholds",
        help="cmpae: its per-class visual thresholds (the .xlsx its select_thresholds mode wrote)",
    )
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
        import_checkpoint,
        args.source,
        args.file,
        args.workdir,
        config,
        overwrite=args.overwrite,
        thresholds_file=args.thresholds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
