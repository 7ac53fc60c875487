"""Step-level parity between the authors' PyTorch CoLeaF and coleaf-jax (docs/fidelity.md §1).

Two halves, run in two environments:

``record`` (a Python with ``torch``, numpy and pandas — never the project's
venv; torch is a tool of this harness, not a dependency of the package)
imports the authors' code from a checkout, builds their three networks
(``MMIL_Net``, ``Self_Audio_Net``, ``Self_Video_Net``; with ``--plan han_events``
HAN's own ``MMIL_Net`` from a checkout of YapengTian/AVVP-ECCV20 as the Anchor),
records the statistics of the weights torch drew, sets identical weights drawn
from ``numpy.random.RandomState(seed)``, switches every dropout off and runs their
own ``main.train`` on identical batches, epoch by epoch as a plan
(``tools/parity_inputs.py:PLANS``) samples them: ``cmpae`` 5 steps each of epochs
1, 2, 4 and 7 on features without structure; ``cmpae_events`` and ``han_events``
3 steps each of epochs 1, 2, 3, 4, 6 and 7 (every schedule boundary and the epoch
before it) on features that carry audio-only, visual-only and audio-visual events.
It records every loss term (each criterion call), the JoMoLD-denoised labels, the
KD targets, the event-aware weights, the correlation teachers, the forward outputs
of step 1, the gradients and the parameters and Adam moments after the plan's
steps (at fixed sampled positions of every tensor, plus its norm), into a small
``.npz`` fixture, after printing what it exercises: it writes nothing and exits 1
when a coverage condition of its plan is not met::

    /path/to/torch-venv/bin/python tools/parity.py record --authors /path/to/coleaf \\
        --plan cmpae_events --float64 --out tests/fixtures/parity_cmpae_events_f64.npz

``compare`` (the project's venv; no torch) regenerates the same weights and
batches, converts the weights with ``coleaf_jax.models.authors_weights``, runs
``coleaf_jax.training.step``'s jitted step on them with the same schedule
(``configs/llp.py``, ``:coleaf_han`` for the HAN Anchor, dropout off), compares
our initialisation with torch's in law and everything else leaf by leaf, and
exits 1 unless every group is within its tolerance::

    python tools/parity.py compare tests/fixtures/parity_cmpae_events_f64.npz

``coverage`` prints what a fixture exercises (numpy only); ``compare-recordings``
compares two recordings of the authors' code (float32 against float64).

The two halves are ``tools/parity_record.py`` (torch) and ``tools/parity_replay.py``
(JAX), sharing ``tools/parity_inputs.py``. The committed fixtures are replayed in CI
by the documented commands of docs/fidelity.md, run as written by
``tests/test_docs_commands.py`` (scenario ``parity``); ``tests/test_parity.py``
checks the tolerances, the weight conversion and each fixture's coverage.
Tolerances (relative to each tensor's largest magnitude): float64 ``EXACT_RTOL`` on
every group of every step; float32 ``OUTPUT_RTOL`` / ``PARAM_RTOL`` on the first
step, then one measured drift bound per observable (``DRIFT_RTOL``).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools.parity_inputs import PLANS  # noqa: E402  (numpy only: both venvs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the authors' code (needs torch) and write a fixture")
    rec.add_argument(
        "--authors", required=True, help="checkout of github.com/faeghehsardari/coleaf"
    )
    rec.add_argument("--out", required=True, help="fixture (.npz) to write")
    rec.add_argument(
        "--plan",
        default="cmpae",
        choices=sorted(PLANS),
        help="which Anchor, data, epochs and steps (tools/parity_inputs.py:PLANS)",
    )
    rec.add_argument(
        "--han", help="checkout of github.com/YapengTian/AVVP-ECCV20 (plan han_events)"
    )
    rec.add_argument("--batch-size", type=int, default=None, help="the plan's unless given")
    rec.add_argument("--seed", type=int, default=None, help="the plan's unless given")
    rec.add_argument(
        "--float64",
        action="store_true",
        help="both codes in double precision: differences then measure the maths, not rounding",
    )
    cmp = sub.add_parser(
        "compare", help="replay fixtures (of one precision) with coleaf-jax and compare"
    )
    cmp.add_argument("fixture", nargs="+")
    cmp.add_argument(
        "--float32", action="store_true", help="replay in float32 whatever the fixture's precision"
    )
    cov = sub.add_parser(
        "coverage", help="what a fixture exercises (the recorder's coverage table; numpy only)"
    )
    cov.add_argument("fixture", nargs="+")
    two = sub.add_parser(
        "compare-recordings", help="two recordings of the authors' code (e.g. float32 vs float64)"
    )
    two.add_argument("a")
    two.add_argument("b")
    args = parser.parse_args(argv)
    if args.command == "coverage":
        from tools.parity_inputs import coverage_table, fixture_coverage

        ok = True
        for fixture in args.fixture:
            plan, rows = fixture_coverage(fixture)
            table, met = coverage_table(rows)
            print(f"{fixture}: plan {plan.anchor} Anchor, {plan.data} data, seed {plan.seed}")
            print(table)
            ok &= met
        print("coverage: " + ("every required condition met" if ok else "FAILED"))
        return 0 if ok else 1
    # Each half imports only its side's stack: torch (record) or JAX (compare).
    if args.command == "record":
        from tools.parity_record import record

        ok = record(
            args.authors, args.out, args.batch_size, args.seed, args.float64, args.plan, args.han
        )
        return 0 if ok else 1
    from tools.parity_replay import compare_recordings, fixture_is_float64, replay, report

    if args.command == "compare-recordings":
        table, _ = report(compare_recordings(args.a, args.b), float64=False)
        print(table)
        return 0
    recorded64 = {fixture_is_float64(f) for f in args.fixture}
    if len(recorded64) > 1:  # one process, one JAX precision (jax_enable_x64)
        parser.error("compare: give fixtures of one precision (float32 or float64 recordings)")
    recorded64 = recorded64.pop()
    float64 = recorded64 and not args.float32
    ok = True
    for fixture in args.fixture:
        table, good = report(
            replay(fixture, args.float32), float64, mixed=recorded64 and not float64
        )
        if len(args.fixture) > 1:
            print(f"== {fixture}")
        print(table)
        ok &= good
    print("parity: " + ("every group within tolerance" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
