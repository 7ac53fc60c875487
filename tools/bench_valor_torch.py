"""VALOR's own training step timed on this machine (torch, CPU), for docs/performance.md.

    /tmp/torch/bin/python tools/bench_valor_torch.py --valor /path/to/VALOR [--plus] [--batch 64]

Builds VALOR's ``MMIL_Net`` from its checkout (``main_network.py``; VALOR's options, or
VALOR+'s with ``--plus``) and times its ``main_avvp.py:train`` step as written there
(forward, ``BCELoss`` on the clamped video probability, the two segment BCEs with logits,
backward, ``clip_grad_norm_(1.0)``, ``AdamW.step``) on random LLP-shaped batches: the
median of ``--steps`` steps after two warm-up steps, in videos/s. Compare with
``python -m coleaf_jax.bench --config configs/valor.py[:plus] --batch 64`` on the same,
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

import numpy as np


def main(argv=None) -> int:
    import torch
    import torch.nn.functional as F

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--valor", required=True)
    parser.add_argument("--plus", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    net = types.ModuleType("main_network")
    path = os.path.join(args.valor, "main_network.py")
    exec(compile(open(path).read(), path, "exec"), net.__dict__)  # noqa: S102
    width, layers = (256, 4) if args.plus else (512, 1)
    opts = types.SimpleNamespace(
        hidden_dim=width, nhead=8, ff_dim=1024, num_layers=layers, norm_where="post_norm",
        input_a_dim=128, input_v_dim=2048,
    )  # fmt: skip
    model = net.MMIL_Net(opts).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=1e-3, betas=(0.5, 0.999), eps=1e-8
    )
    criterion = torch.nn.BCELoss()
    rng = np.random.default_rng(0)
    b = args.batch
    audio = torch.from_numpy(rng.standard_normal((b, 10, 128), np.float32))
    video = torch.from_numpy(np.abs(rng.standard_normal((b, 80, 2048), np.float32)))
    st = torch.from_numpy(rng.standard_normal((b, 10, 512), np.float32))
    labels = torch.from_numpy((rng.random((b, 25)) < 0.08).astype(np.float32))
    pl_a = torch.from_numpy((rng.random((b, 10, 25)) < 0.05).astype(np.float32))
    pl_v = torch.from_numpy((rng.random((b, 10, 25)) < 0.05).astype(np.float32))

    def step():  # main_avvp.py:66-89, as written
        optimizer.zero_grad()
        output, _, _, _, frame_logits = model(audio, video, st)
        output.clamp_(min=1e-7, max=1 - 1e-7)
        loss = (
            F.binary_cross_entropy_with_logits(frame_logits[:, :, 0], pl_a)
            + F.binary_cross_entropy_with_logits(frame_logits[:, :, 1], pl_v)
            + criterion(output, labels)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    name = "VALOR+" if args.plus else "VALOR"
    print(
        f"{name} torch {torch.__version__} ({torch.get_num_threads()} threads): batch {b}, "
        f"{b / median:.1f} videos/s (median {median:.3f} s/step, min {min(times):.3f}, "
        f"max {max(times):.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
