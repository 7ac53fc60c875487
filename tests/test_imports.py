"""Released models imported (coleaf_jax.imports): the authors' own networks and save calls.

The fixtures ``tests/fixtures/imports/<case>.pt`` were written by the authors' code
(``tools/import_record.py``, torch 2.13 in a separate venv): VALOR's ``MMIL_Net``
(``main_network.py`` of Franklin905/VALOR at 2677da9) as VALOR, VALOR+ and VALOR++
configure it (8 heads, 1 or 4 layers, the visual stream from the updated audio; VALOR++
on CLAP token maps and CLIP features) and HAN's ``MMIL_Net`` (YapengTian/AVVP-ECCV20 at
fde5611, its literal widths shrunk), random weights, each saved by its project's own call
(VALOR: zip; HAN: the legacy format of torch < 1.6). ``<case>.npz`` holds their eval-mode
outputs in float64 on the inputs ``tools.import_record`` regenerates here. No torch.
"""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax import imports, registry
from coleaf_jax.config import load_config_file
from coleaf_jax.evaluation import report, runs
from coleaf_jax.features import convert
from tools import import_record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "imports")
# The released VALOR++ network is VALOR+'s on CLAP maps and CLIP features (the CLI does
# not import it yet: eval.py and parse.py cannot load those features).
VALOR_PLUS_PLUS = dataclasses.replace(
    imports.SOURCES["valor_plus"], name="valor_plus_plus", published={}
)
CASES = {
    "han": (imports.SOURCES["han"], import_record.han_inputs),
    "jomold": (imports.SOURCES["jomold"], lambda: import_record.han_inputs(10 + len("jomold"))),
    "cmpae": (imports.SOURCES["cmpae"], lambda: import_record.han_inputs(10 + len("cmpae"))),
    "valor": (imports.SOURCES["valor"], lambda: import_record.case_inputs("valor")),
    "valor_plus": (imports.SOURCES["valor_plus"], lambda: import_record.case_inputs("valor_plus")),
    "valor_plus_plus": (VALOR_PLUS_PLUS, lambda: import_record.case_inputs("valor_plus_plus")),
}
OUTPUTS = {  # ours -> the authors' (MMIL_Net.forward's first four outputs)
    "video_prob": "global_prob",
    "video_prob_a": "a_prob",
    "video_prob_v": "v_prob",
    "seg_prob": "frame_prob",
}


def _forward(case: str, update_order: str | None = None) -> tuple[dict, dict]:
    """Our Anchor, as the import configures it, on the case's inputs (evaluation mode:
    for CMPAE its inference mix of the passes with and without cross-attention)."""
    source, inputs = CASES[case]
    state = convert.read_pth(os.path.join(FIXTURES, f"{case}.pt"))
    config = _config()
    params, arch = imports.anchor_params(state, source, f"{case}.pt", config)
    if update_order:
        config.model.update_order = update_order
    model = registry.anchor(config.model.anchor).build(config.model, 25)
    x = inputs()
    out = model.apply(
        {"params": params},
        *(jnp.asarray(x[k], jnp.float32) for k in ("audio", "video_2d", "video_3d")),
    )
    return out, dict(np.load(os.path.join(FIXTURES, f"{case}.npz")))


def _largest_difference(out, theirs) -> float:
    return max(float(np.abs(np.asarray(out[o]) - theirs[t]).max()) for o, t in OUTPUTS.items())


@pytest.mark.parametrize("case", list(CASES))
def test_imported_network_computes_what_the_authors_network_computes(case):
    """Import + our float32 forward against the authors' float64 eval-mode outputs:
    measured 2.2e-7 at most (VALOR++: CLAP map resampled, 4 layers, 8 heads)."""
    out, theirs = _forward(case)
    assert _largest_difference(out, theirs) < 1e-5, case


def test_the_comparison_sees_the_update_order():
    """VALOR's visual stream reads the updated audio stream: HAN's parallel update is
    visibly different on the same weights (the check above can fail)."""
    out, theirs = _forward("valor_plus", update_order="parallel")
    assert _largest_difference(out, theirs) > 1e-3


def test_each_source_refuses_the_others_files():
    """A file given as the wrong project: one line naming what did not match and what the
    file looks like."""
    han = convert.read_pth(os.path.join(FIXTURES, "han.pt"))
    valor = convert.read_pth(os.path.join(FIXTURES, "valor.pt"))
    with pytest.raises(imports.ImportError_, match=r"not a valor checkpoint .*looks like han"):
        imports.anchor_params(han, imports.SOURCES["valor"], "han.pt", _config())
    with pytest.raises(imports.ImportError_, match=r"not a han checkpoint .*looks like valor"):
        imports.anchor_params(valor, imports.SOURCES["han"], "valor.pt", _config())
    # CMPAE's Anchor (also CoLeaF's) given as VALOR's, and the other way round
    cmpae = convert.read_pth(os.path.join(FIXTURES, "cmpae.pt"))
    with pytest.raises(imports.ImportError_, match=r"missing fc_a.weight.*looks like cmpae"):
        imports.anchor_params(cmpae, imports.SOURCES["valor"], "cmpae.pt", _config())
    with pytest.raises(imports.ImportError_, match=r"not a cmpae checkpoint.*looks like valor"):
        imports.anchor_params(valor, imports.SOURCES["cmpae"], "valor.pt", _config())
    reference = {"cls_tokens_a": np.zeros((1, 25, 32), np.float32), **cmpae}
    with pytest.raises(imports.ImportError_, match=r"unexpected \(cls_tokens_a"):
        imports.anchor_params(reference, imports.SOURCES["cmpae"], "ref.pt", _config())
    bad = dict(valor)
    bad["hat_encoder.layers.0.linear2.weight"] = np.zeros((32, 63), np.float32)
    with pytest.raises(
        imports.ImportError_, match=r"linear2.weight has shape \[32, 63\], expected \[32, 64\]"
    ):
        imports.anchor_params(bad, imports.SOURCES["valor"], "valor.pt", _config())
    bad = dict(valor)
    bad["fc_prob.bias"] = np.full(25, np.nan, np.float32)
    with pytest.raises(imports.ImportError_, match="NaN"):
        imports.anchor_params(bad, imports.SOURCES["valor"], "valor.pt", _config())
    bad = dict(valor)
    del bad["hat_encoder.layers.0.norm2.bias"]
    with pytest.raises(imports.ImportError_, match=r"1 missing \(hat_encoder.layers.0.norm2.bias"):
        imports.anchor_params(bad, imports.SOURCES["valor"], "valor.pt", _config())


def test_an_imported_valor_network_gets_no_paper_row_of_han():
    """The report's published row is HAN's for HAN's network only."""
    from coleaf_jax.evaluation import paper

    for name, expected in (("han", "Table 5, HAN"), ("valor", None), ("valor_plus", None)):
        config = _config()
        imports.apply_source(
            config, imports.SOURCES[name], {"d_model": 32, "ffn_dim": 64, "num_layers": 1}
        )
        found = paper.paper_scores(config)
        assert (found and found[0]) == expected, name


def _config():
    return load_config_file("configs/synthetic.py:han")


def test_import_refusals_write_nothing(tmp_path):
    """A payload, a truncated file, a wrong SOURCE, a training run's folder: one error
    each, nothing written."""

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    payload = tmp_path / "payload.pt"
    with zipfile.ZipFile(payload, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"fc_a.weight": Payload()}, protocol=2))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((open(os.path.join(FIXTURES, "valor.pt"), "rb").read())[:50_000])
    work = tmp_path / "w"
    for source, path, pattern in [
        ("valor", payload, "payload.pt"),
        ("valor", truncated, "truncated.pt"),
        ("valor_pp", os.path.join(FIXTURES, "valor.pt"), "SOURCE 'valor_pp': expected one of"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            imports.import_checkpoint(source, str(path), str(work), _config(), verbose=False)
        assert not work.exists()
    assert not (tmp_path / "pwned").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="is not an import"):
        imports.import_checkpoint(
            "valor", os.path.join(FIXTURES, "valor.pt"), str(run), _config(), verbose=False
        )
    assert sorted(os.listdir(run)) == ["metrics.jsonl"]


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_import_then_parse_and_eval_with_the_workdir_alone(tmp_path):
    """``python -m coleaf_jax.imports valor FILE --workdir W``; then ``parse.py --workdir W
    --features F --probabilities`` gives VALOR's own eval-mode probabilities (float32,
    measured ≤ 2.2e-7) and ``eval.py --workdir W`` scores it, neither given a --config;
    a second import into W is refused unless --overwrite."""
    pt = os.path.join(FIXTURES, "valor.pt")
    work = tmp_path / "valor"
    done = _cli(
        "-m", "coleaf_jax.imports", "valor", pt, "--workdir", str(work),
        "--config", os.path.join(ROOT, "configs/synthetic.py:han"),
        "--config.data.synthetic_videos=40", "--config.eval.batch_size=8", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "note: not the released valor network's widths: d_model 32" in done.stdout
    record = json.loads((work / "imported.json").read_text())
    assert record["sha256"] == convert.file_digest(pt) and record["bytes"] == os.path.getsize(pt)
    assert record["architecture"]["num_heads"] == 8
    stored = json.loads((work / "config.json").read_text())
    assert (
        stored["model"]["update_order"] == "audio_first"
        and stored["eval"]["thresholds"] == "standard"
    )

    x = import_record.case_inputs("valor")
    ids = [f"vid{i:08d}xyz" for i in range(len(x["audio"]))]
    for folder, key in (("vggish", "audio"), ("res152", "video_2d"), ("r2plus1d_18", "video_3d")):
        (tmp_path / "feats" / folder).mkdir(parents=True)
        for i, vid in enumerate(ids):
            np.save(tmp_path / "feats" / folder / f"{vid}.npy", x[key][i].astype(np.float32))
    done = _cli(
        os.path.join(ROOT, "parse.py"), "--workdir", str(work), "--features", "feats",
        "--output", "parsed", "--probabilities", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    theirs = np.load(os.path.join(FIXTURES, "valor.npz"))
    worst = 0.0
    for i, vid in enumerate(ids):
        ours = np.load(tmp_path / "parsed" / "probabilities" / f"{vid}.npz")
        assert ours["audio_prob"].shape == (10, 25) and ours["video_prob"].shape == (25,)
        worst = max(
            worst,
            np.abs(ours["video_prob"] - theirs["global_prob"][i]).max(),
            np.abs(ours["audio_prob"] - theirs["frame_prob"][i, :, 0]).max(),
            np.abs(ours["visual_prob"] - theirs["frame_prob"][i, :, 1]).max(),
            np.abs(ours["video_prob_a"] - theirs["a_prob"][i]).max(),
            np.abs(ours["video_prob_v"] - theirs["v_prob"][i]).max(),
        )
    assert worst < 1e-4

    done = _cli(
        os.path.join(ROOT, "eval.py"), "--workdir", str(work), "--split", "val", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "valor_imported segment" in done.stdout, done.stdout
    scores = json.loads((work / "eval" / "val_epoch0_standard.json").read_text())
    assert (
        scores["thresholds"] == "standard"
        and len([k for k in scores if k.startswith(("seg_", "evt_"))]) == 18
    )

    page = open(report.build_report(runs.run_config(None, str(work)), str(work))).read()
    assert "imported by python -m coleaf_jax.imports (imported.json): not trained here" in page
    assert "the run has not finished" not in page

    again = _cli("-m", "coleaf_jax.imports", "valor", pt, "--workdir", str(work), cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("error: --workdir")
    assert "--overwrite replaces it" in again.stderr


def test_cmpae_import_carries_its_rule_and_per_class_thresholds(tmp_path):
    """CMPAE's released thresholds file (its repository's ``cmpae_s0_early.xlsx``) becomes
    ``eval.visual_thresholds`` under CMPAE's rule; JoMoLD's import gets JoMoLD's rule."""
    from coleaf_jax.evaluation import evaluate

    xlsx = os.path.join(FIXTURES, "cmpae_s0_early.xlsx")
    record = imports.import_checkpoint(
        "cmpae", os.path.join(FIXTURES, "cmpae.pt"), str(tmp_path / "c"), _config(),
        verbose=False, thresholds_file=xlsx,
    )  # fmt: skip
    stored = json.loads((tmp_path / "c" / "config.json").read_text())
    assert stored["model"]["anchor"] == "cmpae" and stored["eval"]["thresholds"] == "cmpae"
    assert stored["eval"]["visual_thresholds"][:4] == [0.7, 0.4, 0.7, 0.3]
    assert record["thresholds_file"]["sha256"] == convert.file_digest(xlsx)
    config = _config()
    config.eval.thresholds = "cmpae"
    config.eval.visual_thresholds = tuple(stored["eval"]["visual_thresholds"])
    rule = evaluate.thresholds_from_config(config)
    assert rule.gate == "modality" and rule.video_a == 0.45 and rule.segment_v == 0.25
    np.testing.assert_allclose(rule.video_v, stored["eval"]["visual_thresholds"])
    imports.import_checkpoint(
        "jomold", os.path.join(FIXTURES, "jomold.pt"), str(tmp_path / "j"), _config(),
        verbose=False,
    )  # fmt: skip
    stored = json.loads((tmp_path / "j" / "config.json").read_text())
    assert (
        stored["eval"]["thresholds"] == "jomold" and stored["model"]["update_order"] == "parallel"
    )
    assert evaluate.thresholds_from_config(_with(stored)).gate == "modality"


def _with(stored):
    config = _config()
    config.eval.thresholds = stored["eval"]["thresholds"]
    return config


def _xlsx(path, sheet_xml: bytes, sheet="Thres"):
    real = zipfile.ZipFile(os.path.join(FIXTURES, "cmpae_s0_early.xlsx"))
    with zipfile.ZipFile(path, "w") as z:
        for name in real.namelist():
            data = real.read(name)
            if name == "xl/worksheets/sheet1.xml":
                data = sheet_xml
            if name == "xl/workbook.xml":
                data = data.replace(b'name="Thres"', f'name="{sheet}"'.encode())
            z.writestr(name, data)
    return str(path)


def test_a_hostile_or_wrong_thresholds_file_is_one_error(tmp_path):
    """An entity bomb, a missing sheet, a text cell, a value outside [0, 1], a non-zip,
    a part that unpacks to more than the cap: one error naming the file, nothing read."""
    rows = b"".join(b'<row><c r="A%d"><v>0.5</v></c></row>' % i for i in range(1, 26))
    ns = b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    ok = _xlsx(
        tmp_path / "ok.xlsx",
        b"<worksheet " + ns + b"><sheetData>" + rows + b"</sheetData></worksheet>",
    )
    assert imports.read_xlsx_column(ok, "Thres", 25) == (0.5,) * 25
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
    cases = {
        "DTD": _xlsx(tmp_path / "bomb.xlsx", bomb + b"<worksheet " + ns + b">&b;</worksheet>"),
        "no sheet 'Thres'": _xlsx(tmp_path / "sheet.xlsx", b"<worksheet/>", sheet="Other"),
        "cell A3: expected a number": _xlsx(
            tmp_path / "text.xlsx",
            b"<worksheet "
            + ns
            + b"><sheetData>"
            + rows.replace(b'A3"><v>0.5', b'A3" t="s"><v>0')
            + b"</sheetData></worksheet>",
        ),
        r"A25 = 7.0: not in \[0, 1\]": _xlsx(
            tmp_path / "range.xlsx",
            b"<worksheet "
            + ns
            + b"><sheetData>"
            + rows.replace(b'A25"><v>0.5', b'A25"><v>7')
            + b"</sheetData></worksheet>",
        ),
        "unpacks to": _xlsx(tmp_path / "big.xlsx", b" " * (imports.MAX_XLSX_PART + 10)),
    }
    not_zip = tmp_path / "plain.xlsx"
    not_zip.write_text("0.5\n" * 25)
    cases["not a readable .xlsx"] = str(not_zip)
    for pattern, path in cases.items():
        with pytest.raises(imports.ImportError_, match=pattern) as e:
            imports.read_xlsx_column(path, "Thres", 25)
        assert str(e.value).startswith(path)
