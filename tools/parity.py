"""Step-level parity between the authors' PyTorch CoLeaF and coleaf-jax.

Two halves, run in two environments:

``record`` (a Python with ``torch``, numpy and pandas — never the project's
venv; torch is a tool of this harness, not a dependency of the package)
imports the authors' code from a checkout, builds their three networks
(``MMIL_Net``, ``Self_Audio_Net``, ``Self_Video_Net``), sets identical weights
drawn from ``numpy.random.RandomState(seed)``, switches every dropout off and
runs their own ``main.train`` on 20 identical batches, in every schedule phase:
5 steps each of epoch 1 (backbone only, no denoising), epoch 2 (collaborative
terms, JoMoLD), epoch 4 (KD, class-token weights changed) and epoch 7 (after
the learning-rate decay). It records every loss term (each criterion call),
the JoMoLD-denoised labels, the KD targets, the event-aware weights, the
correlation teachers, the forward outputs of step 1, the gradients of steps 1
and 20, and the parameters and Adam moments after steps 1, 5, 10, 15 and 20
(at fixed sampled positions of every tensor, plus its norm), into a small
``.npz`` fixture::

    /path/to/torch-venv/bin/python tools/parity.py record --authors /path/to/coleaf \\
        --out tests/fixtures/parity_cmpae.npz

``compare`` (the project's venv; no torch) regenerates the same weights and
batches, converts the weights with ``coleaf_jax.models.authors_weights``, runs
``coleaf_jax.training.step``'s jitted step on them with the same schedule, and compares
everything leaf by leaf::

    python tools/parity.py compare tests/fixtures/parity_cmpae.npz

The two halves are ``tools/parity_record.py`` (torch) and ``tools/parity_replay.py``
(JAX), sharing ``tools/parity_inputs.py``; ``tests/test_parity.py`` replays the
committed fixtures in CI through the replay half.
Tolerances (float32, CPU): ``OUTPUT_RTOL`` on outputs, losses and gradients,
``PARAM_RTOL`` on parameters and Adam moments after 20 steps (relative to each
tensor's largest magnitude).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


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
    rec.add_argument("--batch-size", type=int, default=16)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument(
        "--float64",
        action="store_true",
        help="both codes in double precision: differences then measure the maths, not rounding",
    )
    cmp = sub.add_parser("compare", help="replay a fixture with coleaf-jax and compare")
    cmp.add_argument("fixture")
    cmp.add_argument(
        "--float32", action="store_true", help="replay in float32 whatever the fixture's precision"
    )
    two = sub.add_parser(
        "compare-recordings", help="two recordings of the authors' code (e.g. float32 vs float64)"
    )
    two.add_argument("a")
    two.add_argument("b")
    args = parser.parse_args(argv)
    # Each half imports only its side's stack: torch (record) or JAX (compare).
    if args.command == "record":
        from tools.parity_record import record

        record(args.authors, args.out, args.batch_size, args.seed, args.float64)
        return 0
    from tools.parity_replay import compare_recordings, fixture_is_float64, replay, report

    if args.command == "compare-recordings":
        table, _ = report(compare_recordings(args.a, args.b), float64=False)
        print(table)
        return 0
    recorded64 = fixture_is_float64(args.fixture)
    float64 = recorded64 and not args.float32
    table, ok = report(
        replay(args.fixture, args.float32), float64, mixed=recorded64 and not float64
    )
    print(table)
    print("parity: " + ("every group within tolerance" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
