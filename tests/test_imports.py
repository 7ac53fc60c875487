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

from coleaf_jax import imports
from coleaf_jax.config import load_config_file
from coleaf_jax.features import convert
from coleaf_jax.models.han import HANAnchor
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
    source, inputs = CASES[case]
    state = convert.read_pth(os.path.join(FIXTURES, f"{case}.pt"))
    params, arch = imports.anchor_params(state, source, f"{case}.pt")
    model = HANAnchor(
        d_model=arch["d_model"],
        ffn_dim=arch["ffn_dim"],
        num_heads=source.num_heads,
        num_layers=arch["num_layers"],
        update_order=update_order or source.update_order,
    )
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
        imports.anchor_params(han, imports.SOURCES["valor"], "han.pt")
    with pytest.raises(imports.ImportError_, match=r"not a han checkpoint .*looks like valor"):
        imports.anchor_params(valor, imports.SOURCES["han"], "valor.pt")
    # CoLeaF's / CMPAE's Anchor (nets/net_audiovisual.py of CoLeaF): other names throughout
    cmpae = {
        "fc_a.0.weight": np.zeros((512, 128), np.float32),
        "fc_prob_beta.weight": han["fc_prob.weight"],
    }
    with pytest.raises(imports.ImportError_, match=r"missing fc_a.weight.*looks like the CMPAE"):
        imports.anchor_params(cmpae, imports.SOURCES["valor"], "cmpae.pt")
    bad = dict(valor)
    bad["hat_encoder.layers.0.linear2.weight"] = np.zeros((32, 63), np.float32)
    with pytest.raises(
        imports.ImportError_, match=r"linear2.weight has shape \[32, 63\], expected \[32, 64\]"
    ):
        imports.anchor_params(bad, imports.SOURCES["valor"], "valor.pt")
    bad = dict(valor)
    bad["fc_prob.bias"] = np.full(25, np.nan, np.float32)
    with pytest.raises(imports.ImportError_, match="NaN"):
        imports.anchor_params(bad, imports.SOURCES["valor"], "valor.pt")
    bad = dict(valor)
    del bad["hat_encoder.layers.0.norm2.bias"]
    with pytest.raises(imports.ImportError_, match=r"1 missing \(hat_encoder.layers.0.norm2.bias"):
        imports.anchor_params(bad, imports.SOURCES["valor"], "valor.pt")


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
    assert record["sha256"] == imports.sha256(pt) and record["bytes"] == os.path.getsize(pt)
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

    again = _cli("-m", "coleaf_jax.imports", "valor", pt, "--workdir", str(work), cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("error: --workdir")
    assert "--overwrite replaces it" in again.stderr
