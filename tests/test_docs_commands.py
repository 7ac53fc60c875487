"""The README's and the docs' commands run as written.

Every line of every fenced ``bash`` block of ``README.md`` and ``docs/*.md`` is
either run here, as a subprocess of ``bash`` in a fresh folder holding the
repository's entry points (so relative paths such as ``runs/coleaf`` or
``weights/`` mean what they mean to a user), or listed in :data:`SKIPPED` with
the reason it cannot run in CI (a download, torch, the authors' checkout, this
suite itself). A command added to the docs and to neither fails
:func:`test_every_documented_command_is_run_or_skipped`.

What is substituted, and nothing else (:func:`as_run`):

* **paths**: ``/path/to/LLP``, ``/path/to/features``, ``/shared/LLP`` and
  ``ROOT`` become an LLP-layout folder written by the project's own generator;
  ``/path/to/unav100`` one in the UnAV-100 layout; ``/shared/`` a folder of the
  test; ``host0:1234`` a free local port. Inputs a user downloads are made
  here: random-weight checkpoints of the public file names (``weights/``),
  generated clips (``a.mp4``, ``b.mkv``, ``videos/``), the recorded parity
  fixtures (``f32.npz``, ``f64.npz``, ``cmpae_events_f64.npz``, ``han_events_f64.npz``),
  stand-ins of the authors' runs.
* **sizes**: one epoch, ``d_model = ffn_dim = 16``, batch 8, 60 videos, one
  seed in the sweeps, 32-pixel frames for the extractors.

Defaults stay on: progress output (one run of each kind goes through a
pseudo-terminal, so the progress bars' terminal path runs), the compilation
cache and TFDS folder under ``$HOME`` (a folder of the test), validation,
checkpoints, the report. Each command must exit 0 without a traceback and
write what the docs say it writes.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pty
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from coleaf_jax.data import synthetic
from coleaf_jax.data.classes import LLP_DENSE_CSV, LLP_FEATURES, LLP_SPLIT_CSV
from coleaf_jax.evaluation.metrics import SCORE_NAMES
from coleaf_jax.features import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md"))]
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
ENTRY_POINTS = ("configs", "tools", "train.py", "eval.py", "parse.py")

# -- the documented commands -------------------------------------------------------------


def documented_commands() -> list[tuple[str, str]]:
    """``[(file, command)]``: each line of the fenced ``bash`` blocks, continuation
    lines joined, comments dropped, whitespace normalised."""
    out = []
    for doc in DOCS:
        text = open(os.path.join(ROOT, doc)).read()
        for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True, posix=False)
                if tokens:
                    out.append((doc, " ".join(tokens)))
    return out


TORCH_VENV = "the parity harness's own venv with torch (never a dependency of the package)"
AUTHORS = (
    "needs torch and the authors' checkout (github.com/faeghehsardari/coleaf); the test "
    "writes stand-ins of its outputs"
)
SKIPPED = {
    "make test": "this suite itself (.ci/run)",
    "/tmp/torch/bin/python tools/bench_valor_torch.py --valor /path/to/VALOR --steps 12": (
        "times VALOR's own step (torch, its checkout): the other half of a measurement"
    ),
    "python tools/plant_bugs.py --out table.md": (
        "41 copies of the tree, each through the unit tests and every replay (40 min here): "
        "its table is in docs/fidelity.md §1.3; CI runs those checks once, unplanted"
    ),
    "python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy pandas": (
        TORCH_VENV
    ),
    "python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy pandas "
    "scikit-learn tqdm": TORCH_VENV,
    "/tmp/torch/bin/python tools/parity.py record --authors /path/to/coleaf --out f32.npz": (
        "records the authors' step (torch, their checkout): its recordings are "
        "tests/fixtures/parity_cmpae_f32.npz and _f64.npz, which the compare commands replay"
    ),
    "/tmp/torch/bin/python tools/parity.py record --authors /path/to/coleaf --out f64.npz "
    "--float64": "as the float32 recording",
    "/tmp/torch/bin/python tools/parity.py record --authors /path/to/coleaf --plan cmpae_events "
    "--float64 --out cmpae_events_f64.npz": (
        "as the float32 recording: tests/fixtures/parity_cmpae_events_f64.npz, replayed below"
    ),
    "/tmp/torch/bin/python tools/valor_parity.py record --valor /path/to/VALOR --out "
    "valor_f64.npz": (
        "records VALOR's step (torch, its checkout): tests/fixtures/parity_valor_f64.npz, "
        "replayed below"
    ),
    "git clone https://github.com/Franklin905/VALOR /path/to/VALOR && git -C /path/to/VALOR "
    "checkout 2677da9": "a download: VALOR's code, which only the torch recording uses",
    "git clone https://github.com/YapengTian/AVVP-ECCV20 /path/to/AVVP-ECCV20": (
        "a download: HAN's code, which only the torch recording uses"
    ),
    "/tmp/torch/bin/python tools/parity.py record --authors /path/to/coleaf --han "
    "/path/to/AVVP-ECCV20 --plan han_events --float64 --out han_events_f64.npz": (
        "as the float32 recording: tests/fixtures/parity_han_events_f64.npz, replayed below"
    ),
    "git clone https://github.com/faeghehsardari/coleaf coleaf_cpu && git -C coleaf_cpu "
    "checkout a36a153": AUTHORS,
    "(cd coleaf_cpu && patch -p1 < ../tools/authors/coleaf_cpu.patch)": AUTHORS,
    "for s in 1 2 3; do": AUTHORS,
    "/tmp/torch/bin/python tools/authors/run_authors.py --code coleaf_cpu --root D --seed $s "
    "--epochs 10 --out runs/authors/seed$s.json": AUTHORS,
    "done": AUTHORS,
    "python -m coleaf_jax.data.synthetic DV --videos 1000 --seed 0": (
        "the data of the VALOR side by side (docs/fidelity.md §4.1), measured once with "
        "torch and VALOR's checkout; the generator runs in other scenarios"
    ),
    "git clone https://github.com/Franklin905/VALOR VALOR && git -C VALOR checkout 2677da9": (
        "a download: VALOR's code, which only run_valor.py's torch run uses"
    ),
    "/tmp/torch/bin/pip install prettytable": TORCH_VENV,
    "/tmp/torch/bin/python tools/authors/run_valor.py run --code VALOR --root DV --epochs 10 "
    "--warm-up-epoch 2 --out runs/valor/seed1000.json": (
        "needs torch and VALOR's checkout (github.com/Franklin905/VALOR): the side by side "
        "of docs/fidelity.md §4.1, measured once"
    ),
    "python train.py --config configs/valor.py --config.data.root=DV --workdir runs/ours_valor "
    "--config.num_epochs=10 --config.lr_warmup_epochs=2 --config.num_seeds=3 > "
    "runs/ours_valor.log": (
        "our half of the VALOR side by side, measured with the torch run it is compared "
        "with; configs/valor.py on an LLP-layout root runs in scenario valor_training"
    ),
    "python tools/authors/run_valor.py table --valor runs/valor/seed1000.json --ours "
    "runs/ours_valor/seeds_metrics.json": (
        "reads the JSON of run_valor.py's torch run (VALOR's checkout), which CI does not make"
    ),
    "/tmp/torch/bin/python tools/authors/run_authors.py --code coleaf_cpu --root D --seed 1 "
    "--epochs 10 --out runs/authors/seed1.json": AUTHORS,
    "wget -O checkpoint_best.pt https://huggingface.co/NTUBarista/valor_trained_models/resolve/"
    "main/model_VALOR/checkpoint_best.pt": (
        "a download: the test puts there VALOR's own save of its network (random weights, "
        "width 32: tests/fixtures/imports/valor.pt)"
    ),
    "wget https://github.com/YapengTian/AVVP-ECCV20/raw/master/models/MMIL_Net.pt": (
        "a download: the test puts there HAN's own save of its network (random weights, "
        "width 32, legacy format: tests/fixtures/imports/han.pt)"
    ),
    "python -m coleaf_jax.imports SOURCE FILE --workdir W [--config configs/llp.py:han] "
    "[--config.data.root=/path/to/LLP] [--overwrite] [--thresholds FILE.xlsx]": (
        "the command's form; its uses run below"
    ),
    "wget https://raw.githubusercontent.com/MengyuanChen21/CVPR2023-CMPAE/73345f7/save/"
    "pretrained/cmpae_s0_early.xlsx": (
        "a download: the test copies that file (tests/fixtures/imports/cmpae_s0_early.xlsx)"
    ),
    "wget -P weights/ https://download.pytorch.org/models/resnet152-b121ed2d.pth": (
        "a download: the test puts a random-weight checkpoint of that name in weights/"
    ),
    "wget -P weights/ https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth": (
        "a download: as above"
    ),
    "wget -P weights/ https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
    "vggish-10086976.pth": "a download: as above",
    **{
        f"wget -P weights/{where} https://huggingface.co/{repo}/resolve/main/{file}": (
            "a download: the test puts small random teachers (converted) and byte-level "
            "tokenizer files in weights/ (testing.write_teacher_weights)"
        )
        for where, repo, file in (
            ("clip-vit-large-patch14/", "openai/clip-vit-large-patch14", "config.json"),
            ("clip-vit-large-patch14/", "openai/clip-vit-large-patch14", "model.safetensors"),
            ("clip-vit-large-patch14/", "openai/clip-vit-large-patch14", "tokenizer.json"),
            ("roberta-base/", "FacebookAI/roberta-base", "tokenizer.json"),
            ("", "lukewys/laion_clap", "630k-fusion-best.pt"),
        )
    },
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One documented command, as a scenario runs it."""

    command: str  # as documented (documented_commands' form)
    creates: tuple[str, ...] = ()  # paths (globs) the command must write, relative to cwd
    expect: tuple[str, ...] = ()  # regexes its output must match
    terminal: bool = False  # run through a pseudo-terminal
    together_with: str | None = None  # run at the same time as this documented command


SYNTH = "python -m coleaf_jax.data.synthetic OUT --videos 1000 --seed 0"
COLEAF = (
    "python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir runs/coleaf"
)
EVAL = (
    "python eval.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir runs/coleaf "
    "--split test"
)
PROC0 = (
    "python train.py --config configs/llp.py --config.data.root=/shared/LLP --workdir "
    "/shared/runs/x --coordinator_address host0:1234 --num_processes 2 --process_id 0"
)
SWEEP = (
    "python -m coleaf_jax.sweep --config configs/ablations.py:no_kd,synthetic --config "
    "configs/ablations.py:event_aware_nce,synthetic --seeds 3 --workers 2 --workdir runs/sweep"
)
RESULT = ("test_metrics.json", "report.html", "metrics.jsonl")


def _run_files(workdir: str) -> tuple[str, ...]:
    return tuple(f"{workdir}/{name}" for name in RESULT)


# Each scenario runs in its own folder, its steps in order; scenarios are independent
# (pytest-xdist spreads them over the workers).
SCENARIOS: dict[str, list[Step]] = {
    "llp_train_eval_parse": [
        Step(SYNTH, creates=("OUT/AVVP_train.csv", "OUT/vggish/*.npy", "OUT/res152/*.npy")),
        Step(COLEAF, creates=_run_files("runs/coleaf"), terminal=True),
        Step(EVAL, creates=("runs/coleaf/eval/test_epoch1_official.json",)),
        Step(
            EVAL + " --config.eval.thresholds=standard",
            creates=("runs/coleaf/eval/test_epoch1_standard.json",),
        ),
        Step(
            EVAL + " --select-thresholds",
            creates=(
                "runs/coleaf/eval/test_epoch1_official+selected.json",
                "runs/coleaf/checkpoints/selected_thresholds_*.json",
            ),
        ),
        Step(
            "python -m coleaf_jax.evaluation.noise_ratios --config configs/llp.py "
            "--config.data.root=/path/to/LLP --workdir runs/coleaf --output ratios.npz",
            creates=("ratios.npz",),
        ),
        Step(
            "python -m coleaf_jax.evaluation.report --config configs/llp.py --config.data.root=/path/to/LLP "
            "--workdir runs/coleaf",
            expect=(r"wrote .*runs/coleaf/report\.html",),
        ),
        Step(
            "python train.py --config configs/llp.py:han --config.data.root=/path/to/LLP "
            "--workdir runs/han",
            creates=_run_files("runs/han"),
        ),
        Step(
            "python parse.py --config configs/llp.py --workdir runs/coleaf --features "
            "/path/to/features --output parsed/",
            creates=("parsed/events.jsonl", "parsed/events.csv"),
        ),
        Step(
            "python parse.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir "
            "runs/coleaf --split test --output parsed_test/ --timelines 5 --compare-workdir "
            "runs/han --compare-config configs/llp.py:han",
            creates=("parsed_test/events.jsonl", "parsed_test/timelines/*.png"),
        ),
    ],
    "llp_variants": [
        Step(  # first: it prepares the copy, in two worker processes, through the CLI
            "python train.py --config configs/llp.py:han --config.data.root=ROOT --workdir W4 "
            "--config.num_epochs=1 --config.data.prepare_processes=2",
            creates=_run_files("W4"),
            expect=(r"LLP: writing \d+ shards in 2 processes",),
        ),
        Step(
            "python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir "
            "runs/x --config.num_epochs=15 --config.seed=1",
            creates=_run_files("runs/x"),
        ),
        Step(
            "python train.py --config configs/ablations.py:no_kd --config.data.root=/path/to/LLP "
            "--workdir runs/no_kd",
            creates=_run_files("runs/no_kd"),
        ),
        Step(
            "python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir "
            "runs/seeds --config.num_seeds=5",
            creates=("runs/seeds/seeds_metrics.json",),
            expect=(r"test, 5 seeds: mean ± std",),
        ),
        Step(
            "python train.py --config configs/llp.py --config.data.root=ROOT --workdir W "
            "--config.num_epochs=1",
            creates=_run_files("W"),
        ),
        Step(
            "python train.py --config configs/llp.py:han --config.data.root=ROOT --workdir W2 "
            "--config.num_epochs=1",
            creates=_run_files("W2"),
        ),
        Step(
            "python train.py --config configs/llp.py:han --config.data.root=ROOT --workdir W3 "
            "--config.num_epochs=2",
            creates=_run_files("W3"),
        ),
        Step(
            "python tools/time_to_result.py W3",
            expect=(r"training \(\d+ epochs?\)", r"compiling \(first step\)"),
        ),
    ],
    "other_datasets": [
        Step(
            "python train.py --config configs/ablations.py:standard_nce,synthetic --workdir "
            "runs/std_nce",
            creates=_run_files("runs/std_nce"),
        ),
        Step(
            "python train.py --config configs/unav100.py --config.data.root=/path/to/unav100 "
            "--workdir runs/unav",
            creates=_run_files("runs/unav"),
        ),
        Step(
            "python train.py --config configs/unav100.py:synthetic --workdir runs/unav_synthetic",
            creates=_run_files("runs/unav_synthetic"),
        ),
        Step(
            "python train.py --config configs/llp_pseudo.py --config.data.root=/path/to/LLP "
            "--workdir runs/pseudo",
            creates=_run_files("runs/pseudo"),
        ),
        Step(
            "python train.py --config configs/llp_pseudo.py:han,synthetic --workdir "
            "runs/pseudo_han_synthetic",
            creates=_run_files("runs/pseudo_han_synthetic"),
        ),
    ],
    "valor_training": [
        Step(
            "python train.py --config configs/valor.py --config.data.root=/path/to/LLP "
            "--workdir runs/valor",
            creates=_run_files("runs/valor"),
        ),
        Step(
            "python train.py --config configs/valor.py:plus,synthetic --workdir "
            "runs/valor_plus_synthetic",
            creates=_run_files("runs/valor_plus_synthetic"),
        ),
    ],
    "sweeps": [
        Step(SWEEP, creates=("runs/sweep/summary.json",)),
        Step(
            "python -m coleaf_jax.sweep --workdir runs/sweep --summarize",
            expect=(r"no_kd", r"event_aware_nce"),
        ),
        Step(
            "python -m coleaf_jax.sweep --table 3 --seeds 3 --set data.root=/path/to/LLP "
            "--workdir runs/tables",
            creates=("runs/tables/summary.json",),
        ),
    ],
    "two_processes": [
        Step(PROC0, creates=_run_files("shared/runs/x")),
        Step(PROC0[: -len("0")] + "1", together_with=PROC0),
    ],
    "seeds_side_by_side": [
        Step(
            "python -m coleaf_jax.data.synthetic D --videos 2143",
            creates=("D/AVVP_test_pd.csv",),
        ),
        Step(
            "python train.py --config configs/llp.py --config.data.root=D --workdir runs/ours "
            "--config.num_epochs=10 --config.num_seeds=3 > runs/ours.log",
            creates=("runs/ours/seeds_metrics.json", "runs/ours.log"),
        ),
        Step(
            "python tools/side_by_side.py --authors runs/authors/seed*.json --ours "
            "runs/ours/seeds_metrics.json --ours-log runs/ours.log",
            expect=(r"seg_ao|Ao",),
        ),
        Step(
            "python train.py --config configs/llp.py --config.data.root=D --workdir runs/ours1 "
            "--config.num_epochs=10 --config.seed=1",
            creates=_run_files("runs/ours1"),
        ),
        Step("python tools/time_to_result.py runs/ours1", expect=(r"compiling \(first step\)",)),
    ],
    "measure": [
        Step("python -m coleaf_jax.bench --config configs/llp.py", expect=(r"videos/s",)),
        Step(
            "python -m coleaf_jax.bench --config configs/llp.py --eval-videos 0 --profile "
            "runs/profile",
            expect=(r"profile \(3 steps", r"ms +\d+ x  dot\n"),
        ),
        Step("python -m coleaf_jax.flops --config configs/llp.py", expect=(r"FLOP",)),
        Step(
            "python -m coleaf_jax.bench --config configs/valor.py --batch 64 --steps 12 "
            "--eval-videos 256",
            expect=(r"valor_llp: batch 8", r"train: compile .* videos/s"),
        ),
    ],
    "video_files": [
        Step(
            "python -m coleaf_jax.features.convert weights/",
            creates=("weights/resnet152.json", "weights/r2plus1d_18.json", "weights/vggish.json"),
        ),
        Step(
            "python parse.py --config configs/llp.py --workdir runs/coleaf --video a.mp4 b.mkv "
            "--weights weights/ --output parsed/",
            creates=("parsed/events.jsonl", "parsed/pages/a.html", "parsed/pages/b.html"),
            terminal=True,
        ),
        Step(
            "python -m coleaf_jax.features videos/ --out feats/ --weights weights/",
            creates=("feats/features.json", "feats/vggish/c.npy", "feats/res152/c.npy"),
        ),
    ],
    "valor_teachers": [
        Step(
            "python -m coleaf_jax.features videos/ --out /path/to/LLP/ --weights weights/ "
            "--features valor --labels /path/to/LLP/",
            creates=(
                "../LLP/CLIP/segment_pseudo_labels/vidvalor000.npy",  # the LLP folder
                "../LLP/CLAP/segment_pseudo_labels/vidvalor003.npy",
                "../LLP/CLIP/features/vidvalor003.npy",
                "../LLP/CLAP/features/vidvalor002.npy",
            ),
            expect=(r"VALOR's CLIP/CLAP features and segment pseudo-labels of 4 videos",),
        ),
        Step(
            "python train.py --config configs/llp_pseudo.py --config.data.root=/path/to/LLP "
            "--workdir runs/valor",
            creates=("runs/valor/test_metrics.json",),
        ),
        Step(
            "python parse.py --config configs/llp_pseudo.py --workdir runs/valor --features "
            "/path/to/LLP --output parsed_valor/",
            creates=("parsed_valor/events.jsonl",),
        ),
    ],
    "parity": [
        Step("python tools/parity.py compare f32.npz", expect=(r"every group within tolerance",)),
        Step(
            "python tools/parity.py compare f64.npz",
            expect=(
                r"every group within tolerance",
                r"loss mutual \(epoch 2\)",
                r"JoMoLD labels \(epoch 7\)",
                r"KD targets \(epoch 7\)",
                r"correlation teachers \(epoch 4\)",
                r"Adam exp_avg_sq after step 20",
            ),
        ),
        Step("python tools/parity.py compare --float32 f64.npz", expect=(r"parity",)),
        Step("python tools/parity.py compare-recordings f32.npz f64.npz"),
        Step(
            "python tools/valor_parity.py compare valor_f64.npz",
            expect=(
                r"parity: every group within tolerance",
                r"coverage: 5 of 10 steps clipped",
                r"AdamW exp_avg_sq after step 10 .* ok",
                r"learning rate \(epoch 8\) .* ok",
            ),
        ),
        Step(
            "python tools/parity.py coverage cmpae_events_f64.npz han_events_f64.npz",
            expect=(r"every required condition met", r"plan han Anchor, events data"),
        ),
        Step(
            "python tools/parity.py compare cmpae_events_f64.npz han_events_f64.npz",
            expect=(
                r"every group within tolerance",
                r"initial weights, torch's init .* ok",
                r"KD targets \(epoch 6\)",
                r"event-aware weights \(epoch 3\)",
                r"parameters after step 12",
                r"loss backbone \(epoch 7\)",
                r"forward: Anchor global_prob",
            ),
        ),
    ],
    "imports": [
        Step(
            "python -m coleaf_jax.imports valor checkpoint_best.pt --workdir runs/valor "
            "--config.data.root=/path/to/LLP",
            creates=(
                "runs/valor/config.json",
                "runs/valor/imported.json",
                "runs/valor/checkpoints/0",
            ),
            expect=(r"imported checkpoint_best\.pt \(VALOR",),
        ),
        Step(
            "python eval.py --workdir runs/valor",
            creates=("runs/valor/eval/test_epoch0_standard.json",),
            expect=(r"valor_imported segment",),
        ),
        Step(
            "python -m coleaf_jax.evaluation.report --workdir runs/valor",
            expect=(r"wrote .*runs/valor/report\.html",),
        ),
        Step(
            "python parse.py --workdir runs/valor --features /path/to/features --output "
            "parsed_valor/ --probabilities",
            creates=("parsed_valor/events.jsonl", "parsed_valor/probabilities/*.npz"),
        ),
        Step(
            "python parse.py --workdir runs/valor --video a.mp4 --weights weights/ --output "
            "parsed_valor_video/",
            creates=("parsed_valor_video/events.jsonl", "parsed_valor_video/pages/*.html"),
        ),
        Step(
            "python -m coleaf_jax.imports han MMIL_Net.pt --workdir runs/han_released "
            "--config.data.root=/path/to/LLP",
            expect=(r"1 head\(s\), parallel update",),
        ),
        Step(
            "python -m coleaf_jax.imports jomold JoMoLD.pt --workdir runs/jomold_released "
            "--config.data.root=/path/to/LLP",
            expect=(r"evaluation rule 'jomold'",),
        ),
        Step(
            "python -m coleaf_jax.imports cmpae cmpae_s0.pt --thresholds cmpae_s0_early.xlsx "
            "--workdir runs/cmpae_released --config.data.root=/path/to/LLP",
            expect=(r"evaluation rule 'cmpae'",),
        ),
        Step(
            "python eval.py --workdir runs/cmpae_released",
            creates=("runs/cmpae_released/eval/test_epoch0_cmpae.json",),
        ),
    ],
    "demo": [
        Step(
            "make demo",
            creates=("runs/demo/coleaf_cmpae/report.html",),
            expect=(r"mean of Ao, Vo, AV", r"report: "),
        ),
    ],
}
# `make demo` creates .venv and runs `python -m coleaf_jax.demo`: the test runs that module.
MAKE_DEMO = "python -m coleaf_jax.demo"


def test_every_documented_command_is_run_or_skipped():
    run = [s.command for steps in SCENARIOS.values() for s in steps]
    assert len(run) == len(set(run)), "a command is run by two scenarios"
    assert not set(run) & set(SKIPPED), "a command is both run and skipped"
    documented = {command for _, command in documented_commands()}
    unaccounted = sorted(
        f"{doc}: {command}"
        for doc, command in documented_commands()
        if command not in run and command not in SKIPPED
    )
    assert not unaccounted, (
        "documented commands neither run by a scenario nor skipped with a reason "
        "(tests/test_docs_commands.py):\n" + "\n".join(unaccounted)
    )
    stale = sorted(set(run) - documented) + sorted(set(SKIPPED) - documented)
    assert not stale, f"no longer documented: {stale}"


# -- substitutions ------------------------------------------------------------------------

TINY = {
    "num_epochs": 1,
    "model.d_model": 16,
    "model.ffn_dim": 16,
    "batch_size": 8,
    "eval.batch_size": 32,
    "data.synthetic_videos": 60,
}
VIDEOS = 60


def _with_config_sizes(command: str, flag: str) -> str:
    """Sets each TINY key with ``flag`` (``--config.`` or ``--set ``), replacing a value
    the command gives."""
    for key, value in TINY.items():
        pattern = re.compile(rf"{re.escape(flag)}{re.escape(key)}=\S+")
        setting = f"{flag}{key}={value}"
        command = (
            pattern.sub(setting, command) if pattern.search(command) else command + " " + setting
        )
    return command


def as_run(command: str, ctx: dict) -> str:
    """The documented ``command`` with the paths and sizes of the test."""
    if command == "make demo":
        command = MAKE_DEMO
    for placeholder in ("/path/to/LLP", "/path/to/features", "/shared/LLP"):
        command = command.replace(placeholder, ctx["llp"])
    command = command.replace("--config.data.root=ROOT", f"--config.data.root={ctx['llp']}")
    command = command.replace("/path/to/unav100", ctx["unav"])
    command = command.replace("/shared/", os.path.join(ctx["cwd"], "shared") + "/")
    command = command.replace("host0:1234", f"localhost:{ctx['port']}")
    command = re.sub(r"--videos \d+", f"--videos {VIDEOS}", command)
    uses = command.split(" > ")[0]  # sizes go before a redirection
    rest = command[len(uses) :]
    if re.search(
        r"^python (train|eval|parse)\.py|-m coleaf_jax\.(evaluation\.noise_ratios|evaluation\.report|flops)",
        uses,
    ) and re.search(r"--config[ =]", uses):  # without --config: the run's config.json
        uses = _with_config_sizes(uses, "--config.")
    elif "-m coleaf_jax.sweep" in uses and "--summarize" not in uses:
        uses = _with_config_sizes(re.sub(r"--seeds \d+", "--seeds 1", uses), "--set ")
    elif "-m coleaf_jax.demo" in uses:
        uses = _with_config_sizes(uses, "--config.")
    elif "-m coleaf_jax.bench" in uses:
        uses = _with_config_sizes(uses, "--config.") + " --batch 8 --steps 2"
        uses += "" if "--eval-videos" in uses else " --eval-videos 16"
    if "--video " in uses:
        uses += " --frame-sizes 32,16"
    elif "-m coleaf_jax.features " in uses:
        uses += " --frame-sizes 32 16"
    return uses + rest


# -- inputs a user would download or record -------------------------------------------------


def _llp(path: str) -> str:
    synthetic.generate(path, synthetic.SyntheticConfig(num_videos=VIDEOS, seed=3))
    return path


def _unav(path: str) -> str:
    synthetic.generate_unav(
        path, synthetic.SyntheticUnavConfig(num_videos=40, num_classes=100, max_duration=8.0)
    )
    return path


def _weights(folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for name, file in (
        ("resnet152", "resnet152-b121ed2d.pth"),
        ("r2plus1d_18", "r2plus1d_18-91a641e6.pth"),
        ("vggish", "vggish-10086976.pth"),
    ):
        testing.write_pth(os.path.join(folder, file), testing.random_state_dict(name))


def _valor_inputs(cwd: str, llp: str) -> None:
    """Four 10 s videos named by 11-character ids; an LLP folder with their CSVs (2 train,
    1 val, 1 test) and features standing for the released ones (random, LLP's shapes);
    a weights folder with small random teachers."""
    testing.write_teacher_weights(os.path.join(cwd, "weights"))
    os.makedirs(os.path.join(cwd, "videos"))
    classes = [["Speech", "Dog"], ["Cello"], ["Speech", "Car"], ["Dog", "Cat"]]
    splits = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(0)
    for i, labels in enumerate(classes):
        vid = f"vidvalor{i:03d}"
        testing.write_test_video(
            os.path.join(cwd, "videos", f"{vid}.mp4"), seconds=10.0, tone_hz=220.0 * (1 + i)
        )
        splits["train" if i < 2 else "val" if i == 2 else "test"].append((vid, labels))
        for folder, shape in LLP_FEATURES.items():
            os.makedirs(os.path.join(llp, folder), exist_ok=True)
            feature = np.abs(rng.standard_normal(shape)).astype(np.float32)
            np.save(os.path.join(llp, folder, f"{vid}.npy"), feature)
    for split, name in LLP_SPLIT_CSV.items():
        rows = [f"{vid}_0_10\t{','.join(labels)}" for vid, labels in splits[split]]
        with open(os.path.join(llp, name), "w") as f:
            f.write("filename\tevent_labels\n" + "\n".join(rows) + "\n")
    for name in LLP_DENSE_CSV.values():
        rows = [
            f"{vid}_0_10\t0\t10\t{label}"
            for vid, labels in splits["val"] + splits["test"]
            for label in labels
        ]
        with open(os.path.join(llp, name), "w") as f:
            f.write("filename\tonset\toffset\tevent_labels\n" + "\n".join(rows) + "\n")


def _authors_runs(folder: str) -> None:
    """Stand-ins of ``run_authors.py``'s JSON (its layout; made-up scores)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    keys = [f"{lvl}_{n}" for lvl in ("seg", "evt") for n in SCORE_NAMES]
    for seed in (1, 2, 3):
        run = {
            "seed": seed,
            "test": {k: float(rng.uniform(40, 70)) for k in keys},
            "val_per_epoch": [{"epoch": 1, "selection": float(rng.uniform(40, 70))}],
            "best_epoch": 1,
        }
        with open(os.path.join(folder, f"seed{seed}.json"), "w") as f:
            json.dump(run, f)


def _prepare(name: str, cwd: str, ctx: dict) -> None:
    """The inputs of scenario ``name`` (what a user downloads or records)."""
    if name in (
        "llp_variants",
        "other_datasets",
        "sweeps",
        "two_processes",
        "video_files",
        "valor_training",
    ):
        _llp(ctx["llp"])
    if name == "other_datasets":
        _unav(ctx["unav"])
    if name == "video_files":
        _weights(os.path.join(cwd, "weights"))
        testing.write_test_video(os.path.join(cwd, "a.mp4"), seconds=2.0)
        testing.write_test_video(
            os.path.join(cwd, "b.mkv"), seconds=1.6, codec="libx264", audio_codec="libmp3lame"
        )
        os.makedirs(os.path.join(cwd, "videos"))
        testing.write_test_video(os.path.join(cwd, "videos", "c.mp4"), seconds=1.2)
        # the trained run parse.py --video uses (as the README's first command makes it)
        subprocess.run(
            as_run(COLEAF, ctx), shell=True, cwd=cwd, env=ctx["env"], check=True,
            capture_output=True, timeout=600,
        )  # fmt: skip
    if name == "imports":
        _llp(ctx["llp"])
        _weights(os.path.join(cwd, "weights"))
        testing.write_test_video(os.path.join(cwd, "a.mp4"), seconds=2.0)
        imports = os.path.join(FIXTURES, "imports")
        shutil.copy(os.path.join(imports, "valor.pt"), os.path.join(cwd, "checkpoint_best.pt"))
        shutil.copy(os.path.join(imports, "han.pt"), os.path.join(cwd, "MMIL_Net.pt"))
        shutil.copy(os.path.join(imports, "jomold.pt"), os.path.join(cwd, "JoMoLD.pt"))
        shutil.copy(os.path.join(imports, "cmpae.pt"), os.path.join(cwd, "cmpae_s0.pt"))
        shutil.copy(os.path.join(imports, "cmpae_s0_early.xlsx"), cwd)
    if name == "valor_teachers":
        _valor_inputs(cwd, ctx["llp"])
    if name == "parity":
        shutil.copy(os.path.join(FIXTURES, "parity_cmpae_f32.npz"), os.path.join(cwd, "f32.npz"))
        shutil.copy(os.path.join(FIXTURES, "parity_cmpae_f64.npz"), os.path.join(cwd, "f64.npz"))
        shutil.copy(
            os.path.join(FIXTURES, "parity_valor_f64.npz"), os.path.join(cwd, "valor_f64.npz")
        )
        for plan in ("cmpae_events", "han_events"):
            shutil.copy(
                os.path.join(FIXTURES, f"parity_{plan}_f64.npz"),
                os.path.join(cwd, f"{plan}_f64.npz"),
            )
    if name == "seeds_side_by_side":
        _authors_runs(os.path.join(cwd, "runs", "authors"))


# -- running -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(home: str) -> dict:
    """A user's environment: ``python`` is this venv's, ``$HOME`` a folder of the test (the
    compilation cache and the TFDS folder live there), one CPU device (CI's 2 virtual
    devices are for the pmap tests), the suite's faster compile flag kept."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["HOME"] = home
    env.pop("TFDS_DATA_DIR", None)
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    env["XLA_FLAGS"] = " ".join(
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    )
    return env


def run_in_terminal(command: str, cwd: str, env: dict, timeout: float) -> tuple[int, str]:
    """``bash -c command`` with stdin, stdout and stderr on a pseudo-terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, stdin=follower, stdout=follower,
        stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the terminal closed with the process
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
    finally:
        os.close(leader)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def _start(command: str, cwd: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return -9, out
    return proc.returncode, out


def _check(step: Step, command: str, rc: int, out: str, cwd: str) -> None:
    where = f"documented: {step.command}\nran: {command}\n--- output (tail) ---\n{out[-4000:]}"
    assert rc == 0, where
    assert "Traceback" not in out, where
    for path in step.creates:
        assert glob.glob(os.path.join(cwd, path)), f"{path} not written\n{where}"
    for pattern in step.expect:
        assert re.search(pattern, out), f"{pattern!r} not in the output\n{where}"


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """One ``$HOME`` for every scenario, shared by the pytest-xdist workers (their base
    folders are siblings): the compilation cache in it serves programs common to several
    scenarios (the same config at the same sizes) once."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "docs-home"
    folder.mkdir(exist_ok=True)
    return str(folder)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_documented_commands_run(name, tmp_path, home):
    cwd = str(tmp_path / "work")
    os.makedirs(cwd)
    for entry in ENTRY_POINTS:  # the repository's entry points, as in a checkout
        os.symlink(os.path.join(ROOT, entry), os.path.join(cwd, entry))
    ctx = {
        "cwd": cwd,
        "llp": os.path.join(cwd, "OUT")
        if name == "llp_train_eval_parse"
        else str(tmp_path / "LLP"),
        "unav": str(tmp_path / "unav100"),
        "port": _free_port(),
        "env": _env(home),
    }
    _prepare(name, cwd, ctx)
    steps = SCENARIOS[name]
    for step in steps:
        if step.together_with:
            continue  # started with its partner
        command = as_run(step.command, ctx)
        partners = [s for s in steps if s.together_with == step.command]
        if partners:
            runs = [(step, command)] + [(p, as_run(p.command, ctx)) for p in partners]
            procs = [_start(c, cwd, ctx["env"]) for _, c in runs]
            for (s, c), p in zip(runs, procs):
                _check(s, c, *_finish(p, 600), cwd)
        elif step.terminal:
            rc, out = run_in_terminal(command, cwd, ctx["env"], timeout=600)
            assert "\r" in out, f"no progress bar drawn on the terminal: {command}\n{out[-2000:]}"
            _check(step, command, rc, out, cwd)
        else:
            _check(step, command, *_finish(_start(command, cwd, ctx["env"]), 600), cwd)
