"""The torch half of the parity harness: runs the authors' own training step
(``main.train`` of github.com/faeghehsardari/coleaf) on the shared weights and
batches and records what it computed into a ``.npz`` fixture.

Runs in a Python with ``torch``, numpy and pandas, never the project's venv
(torch is a tool of this harness, not a dependency of the package); the command
is ``python tools/parity.py record`` (``tools/parity.py`` says what is recorded).
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np

from tools.parity_inputs import (
    GRAD_STEPS,
    NETWORKS,
    PHASES,
    SNAPSHOTS,
    batches,
    initial_weights,
    sample_positions,
    summarise,
    token_projection,
)

# record: the authors' code (torch)


def _load_authors(authors: str, float64: bool = False):
    """Imports the authors' main.py from a checkout, patched only to run on a CPU
    (and, with ``float64``, to keep its labels in double precision)."""
    import torch

    sys.path.insert(0, authors)
    for name in ("wandb", "openpyxl"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["openpyxl"].load_workbook = None
    tv = types.ModuleType("torchvision")
    tv.transforms = types.SimpleNamespace(Compose=lambda fns: lambda x: [f(x) for f in fns][-1])
    sys.modules["torchvision"] = tv
    path = os.path.join(authors, "main.py")
    with open(path) as f:
        source = f.read().replace("'cuda'", "'cpu'").replace(".cuda()", ".cpu()")
    if float64:
        torch.set_default_dtype(torch.float64)
        source = source.replace("torch.FloatTensor", "torch.DoubleTensor").replace(
            ".float()", ".double()"
        )
    module = types.ModuleType("authors_main")
    module.__file__ = path
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102
    return module


def record(authors: str, out_path: str, batch_size: int, seed: int, float64: bool = False) -> None:
    import torch
    import torch.nn as tnn

    torch.manual_seed(seed)
    main = _load_authors(authors, float64)
    dtype = np.float64 if float64 else np.float32
    saved_argv = sys.argv
    sys.argv = [
        "main.py",
        "-w",
        "-s",
        "--noise_ratio_file",
        os.path.join(authors, "noise_ratios.npz"),
    ]
    args = main.build_args()
    sys.argv = saved_argv
    nets = {
        "anchor": main.MMIL_Net(args.num_layers, args.temperature),
        "audio": main.Self_Audio_Net(num_layers=args.num_layers, temperature=args.temperature),
        "visual": main.Self_Video_Net(num_layers=args.num_layers, temperature=args.temperature),
    }
    shapes = {
        n: {k: tuple(v.shape) for k, v in net.state_dict().items()} for n, net in nets.items()
    }
    weights = initial_weights(shapes, seed)
    for n, net in nets.items():
        sd = net.state_dict()
        for name, x in weights[n].items():
            sd[name].copy_(torch.from_numpy(x.astype(dtype)))
        for m in net.modules():  # dropout off everywhere (attention weights included)
            if isinstance(m, tnn.Dropout):
                m.p = 0.0
            if isinstance(m, tnn.MultiheadAttention):
                m.dropout = 0.0
    opts = {
        n: torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        for n, net in nets.items()
    }
    names = {n: {id(p): k for k, p in net.named_parameters()} for n, net in nets.items()}
    positions = sample_positions(shapes, seed)
    proj = torch.from_numpy(token_projection(seed))

    calls: list[tuple[str, list]] = []

    def recorded(name, fn):
        def wrapper(*a, **kw):
            out = fn(*a, **kw)
            arrays = [x.detach().numpy().copy() if torch.is_tensor(x) else x for x in a]
            calls.append((name, [out.detach().numpy().copy(), *arrays]))
            return out

        return wrapper

    criterions = [
        recorded("bce", tnn.BCELoss()),
        recorded("asl", main.AsymmetricLoss()),
        recorded("cc", main.cc_loss),
        recorded("nce", main.NCE_loss),
        recorded("mutual", main.MutualLearningLoss(eta=args.mutual_eta)),
    ]
    forward_calls: list[tuple[str, tuple]] = []
    for n, net in nets.items():
        net.register_forward_hook(
            lambda mod, inp, out, n=n: forward_calls.append(
                (n, tuple(o.detach().numpy().copy() for o in out))
            )
        )

    data = batches(batch_size, seed)
    result: dict[str, np.ndarray] = {}
    step_calls: list[list] = []
    step = 0

    def snapshot():
        if step in SNAPSHOTS:
            params = {
                n: {
                    k: v.detach().numpy().copy()
                    for k, v in net.state_dict().items()
                    if k in weights[n]
                }
                for n, net in nets.items()
            }
            result.update(summarise(params, positions, f"params_{step}"))
            for moment in ("exp_avg", "exp_avg_sq"):
                tensors = {
                    n: {
                        names[n][id(p)]: s[moment].numpy().copy()
                        for p, s in opts[n].state.items()
                        if names[n][id(p)] in weights[n]
                    }
                    for n in nets
                }
                result.update(summarise(tensors, positions, f"{moment}_{step}"))
        if step in GRAD_STEPS:
            grads = {
                n: {
                    k: p.grad.numpy().copy()
                    for k, p in net.named_parameters()
                    if k in weights[n] and p.grad is not None
                }
                for n, net in nets.items()
            }
            result.update(summarise(grads, positions, f"grads_{step}"))

    class Loader:
        """The epoch's batches; snapshots the state after each step as the next is asked."""

        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __iter__(self):
            nonlocal step
            for i, item in enumerate(self.items):
                if i:
                    step += 1
                    step_calls.append(list(calls))
                    calls.clear()
                    snapshot()
                yield item

    offset = 0
    for epoch, n in PHASES:
        lr = args.lr * args.lr_gamma ** ((epoch - 1) // args.lr_step_size)  # StepLR per epoch
        for opt in opts.values():
            for group in opt.param_groups:
                group["lr"] = lr
        items = []
        for b in data[offset : offset + n]:
            label = torch.from_numpy(b["label"].astype(np.float64))
            items.append(
                {
                    "audio": torch.from_numpy(b["audio"].astype(dtype)),
                    "video_s": torch.from_numpy(b["video_2d"].astype(dtype)),
                    "video_st": torch.from_numpy(b["video_3d"].astype(dtype)),
                    "label": label,
                    "Pa": args.a_smooth * label + (1 - args.a_smooth) * 0.5,
                    "Pv": args.v_smooth * label + (1 - args.v_smooth) * 0.5,
                }
            )
        main.train(
            args,
            nets["anchor"],
            nets["audio"],
            nets["visual"],
            Loader(items),
            opts["anchor"],
            opts["audio"],
            opts["visual"],
            criterions,
            epoch=epoch,
        )
        step += 1
        step_calls.append(list(calls))
        calls.clear()
        snapshot()
        offset += n

    # Forward outputs of the first step (initial weights): Anchor calls 1 (no
    # cross-attention, for denoising) and 3 (with gradient), Reference calls 1.
    anchor_calls = [o for n, o in forward_calls if n == "anchor"]
    noca, ca = anchor_calls[0], anchor_calls[2]
    keys = (
        "global_prob",
        "a_prob",
        "v_prob",
        "frame_prob",
        "tok_a",
        "tok_v",
        "_",
        "_",
        "global_uct",
        "a_uct",
        "v_uct",
        "frame_uct",
    )
    for k, x in zip(keys, ca):
        if k.startswith("tok"):
            x = x @ proj.numpy()
        if k != "_":
            result[f"forward/anchor/{k}"] = x
    result["forward/anchor_noca/a_prob"], result["forward/anchor_noca/v_prob"] = noca[1], noca[2]
    for n in ("audio", "visual"):
        out = next(o for m, o in forward_calls if m == n)
        for k, x in zip(("video_prob", "seg_prob", "class_prob", "tokens"), out[:4]):
            result[f"forward/{n}/{k}"] = x @ proj.numpy() if k == "tokens" else x

    # Per-step criterion calls -> named terms and the teachers' tensors.
    for s, cs in enumerate(step_calls):
        by = {
            name: [c for n, c in cs if n == name] for name in ("bce", "asl", "cc", "nce", "mutual")
        }
        bce, asl, cc, nce, mutual = by["bce"], by["asl"], by["cc"], by["nce"], by["mutual"]
        terms = {
            "bce_a": bce[0][0],
            "bce_v": bce[1][0],
            "bce_global": bce[2][0],
            "nce_av": nce[0][0],
            "mutual": mutual[0][0],
            "correlation_a": cc[0][0],
            "correlation_v": cc[1][0],
            "nce_a": nce[1][0],
            "nce_v": nce[2][0],
        }
        per = len(asl) // 2  # 2 calls per modality in the warm-up, 3 after (KD)
        for m, calls_m in (("a", asl[:per]), ("v", asl[per:])):
            terms[f"ref_weak_{m}"], terms[f"ref_token_{m}"] = calls_m[0][0], calls_m[1][0]
            result[f"step{s}/denoised_{m}"] = calls_m[0][2]
            if per == 3:
                terms[f"ref_kd_{m}"] = calls_m[2][0]
                result[f"step{s}/kd_target_{m}"] = calls_m[2][2]
        for k, v in terms.items():
            result[f"step{s}/loss/{k}"] = np.asarray(v)
        result[f"step{s}/event_weight_a"] = nce[1][6][:, 0]
        result[f"step{s}/event_weight_v"] = nce[2][6][:, 0]
        result[f"step{s}/cc_teacher_a"], result[f"step{s}/cc_teacher_v"] = cc[0][2], cc[1][2]
    meta = {
        "batch_size": batch_size,
        "seed": seed,
        "float64": float64,
        "phases": PHASES,
        "snapshots": SNAPSHOTS,
        "grad_steps": GRAD_STEPS,
        "torch": torch.__version__,
        "authors": os.path.abspath(authors),
        "authors_commit": _git_commit(authors),
        "shapes": {
            n: {k: list(v) for k, v in shapes[n].items() if k in weights[n]} for n in NETWORKS
        },
    }
    result["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(out_path, **result)
    print(
        f"wrote {out_path}: {len(result)} arrays, {os.path.getsize(out_path) / 1e6:.2f} MB; "
        f"authors' code {meta['authors_commit']}, torch {torch.__version__}"
    )


def _git_commit(path: str) -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
