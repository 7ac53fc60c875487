"""The torch half of the parity harness: runs the authors' own training step
(``main.train`` of github.com/faeghehsardari/coleaf) on the shared weights and
batches and records what it computed into a ``.npz`` fixture.

Runs in a Python with ``torch``, numpy and pandas, never the project's venv
(torch is a tool of this harness, not a dependency of the package); the command
is ``python tools/parity.py record`` (``tools/parity.py`` says what is recorded).

With ``--plan han_events`` the Anchor is HAN's own ``MMIL_Net`` (``nets/net_audiovisual.py``
of a checkout of github.com/YapengTian/AVVP-ECCV20, ``--han``), in the place of the
authors' CMPAE ``MMIL_Net``, trained by the same ``main.train`` with HAN's backbone loss
(:func:`_han_anchor`), as ``configs/llp.py:coleaf_han`` claims to train it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import types

import numpy as np

from tools.parity_inputs import (
    NETWORKS,
    PLANS,
    batches,
    coverage,
    coverage_table,
    init_statistics,
    initial_weights,
    sample_positions,
    summarise,
    tables,
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


def _han_anchor(han: str):
    """HAN's ``MMIL_Net`` (its checkout's ``nets/net_audiovisual.py``, unchanged) made to
    answer the authors' ``main.train`` as their Anchor does.

    Their ``train`` calls the Anchor as ``model(audio, video, video_st, with_ca=...)`` and
    reads twelve outputs: HAN's four (``global_prob, a_prob, v_prob, frame_prob``), then
    the unit-normalised segment tokens before and after pooling (here HAN's layer outputs
    ``x1, x2``, normalised as the authors' Anchor normalises its own: the keys of the
    event-aware NCE), then the evidential uncertainties of CMPAE's mutual learning, which
    HAN has not: they are 1, so that term is exactly 0 (it is also weighted 0).
    ``with_ca`` is ignored: HAN always uses cross-attention.
    """
    import torch
    import torch.nn.functional as F

    path = os.path.join(han, "nets", "net_audiovisual.py")
    module = types.ModuleType("han_net")
    module.__file__ = path
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), module.__dict__)  # noqa: S102

    class HANAsAnchor(module.MMIL_Net):
        def forward(self, audio, visual, visual_st, with_ca=True):
            del with_ca
            tokens = []
            hook = self.hat_encoder.register_forward_hook(lambda m, i, o: tokens.append(o))
            try:
                global_prob, a_prob, v_prob, frame_prob = super().forward(audio, visual, visual_st)
            finally:
                hook.remove()
            x1, x2 = (F.normalize(x, p=2, dim=-1) for x in tokens[0])
            one = torch.ones_like(a_prob)
            return (
                global_prob,
                a_prob,
                v_prob,
                frame_prob,
                x1,
                x2,
                x1,
                x2,
                one[:, 0],
                one,
                one,
                torch.ones_like(frame_prob),
            )

    return HANAsAnchor


def record(
    authors: str,
    out_path: str,
    batch_size: int | None = None,
    seed: int | None = None,
    float64: bool = False,
    plan_name: str = "cmpae",
    han: str | None = None,
) -> bool:
    """Records the plan's steps into ``out_path`` (its batch size and seed unless given);
    prints the coverage table. Returns False (and writes nothing) when a condition the
    plan requires is not met."""
    import torch
    import torch.nn as tnn

    plan = PLANS[plan_name]
    batch_size = plan.batch_size if batch_size is None else batch_size
    seed = plan.seed if seed is None else seed
    plan = dataclasses.replace(plan, batch_size=batch_size, seed=seed)
    if plan.anchor == "han" and not han:
        raise SystemExit(f"plan {plan_name!r}: --han (a checkout of YapengTian/AVVP-ECCV20)")
    torch.manual_seed(seed)
    main = _load_authors(authors, float64)
    dtype = np.float64 if float64 else np.float32
    tmp = tempfile.TemporaryDirectory()
    ratio_file = os.path.join(authors, "noise_ratios.npz")
    if plan.anchor == "han":  # configs/llp.py:coleaf_han: no JoMoLD (ratios 0 drop nothing)
        ratio_file = os.path.join(tmp.name, "zero_ratios.npz")
        np.savez(ratio_file, audio=np.zeros(25), visual=np.zeros(25))
    saved_argv = sys.argv
    sys.argv = ["main.py", "-w", "-s", "--noise_ratio_file", ratio_file]
    args = main.build_args()
    sys.argv = saved_argv
    if plan.anchor == "han":
        # HAN's backbone loss BCE(p, y) + BCE(p^a, Pa) + BCE(p^v, Pv) (HAN main_avvp.py):
        # main.train's loss1-3 weighted 1 each, CMPAE's NCE_av and mutual terms 0.
        args.audio_weight = args.visual_weight = args.video_weight = 1.0
        args.nce_weight = args.mutual_weight = 0.0
        anchor_net = _han_anchor(han)()
    else:
        anchor_net = main.MMIL_Net(args.num_layers, args.temperature)
    nets = {
        "anchor": anchor_net,
        "audio": main.Self_Audio_Net(num_layers=args.num_layers, temperature=args.temperature),
        "visual": main.Self_Video_Net(num_layers=args.num_layers, temperature=args.temperature),
    }
    table = tables(plan.anchor)
    used = {n: {name for name, _, _ in table[n]} for n in NETWORKS}
    shapes = {
        n: {k: tuple(v.shape) for k, v in net.state_dict().items()} for n, net in nets.items()
    }
    result: dict[str, np.ndarray] = {}
    # The initial weights as torch drew them (their statistics), before they are replaced.
    for n, net in nets.items():
        for k, v in net.state_dict().items():
            if k in used[n]:
                result[f"init/{n}/{k}"] = init_statistics(v.detach().numpy())
    weights = initial_weights(shapes, seed, plan.anchor)
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
    positions = sample_positions(shapes, seed, plan.anchor)
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

    data = batches(plan)
    step_calls: list[list] = []
    step = 0

    def snapshot():
        if step in plan.snapshots:
            params = {
                n: {
                    k: v.detach().numpy().copy()
                    for k, v in net.state_dict().items()
                    if k in used[n]
                }
                for n, net in nets.items()
            }
            result.update(summarise(params, positions, f"params_{step}"))
            for moment in ("exp_avg", "exp_avg_sq"):
                tensors = {
                    n: {
                        names[n][id(p)]: s[moment].numpy().copy()
                        for p, s in opts[n].state.items()
                        if names[n][id(p)] in used[n]
                    }
                    for n in nets
                }
                result.update(summarise(tensors, positions, f"{moment}_{step}"))
        if step in plan.grad_steps:
            grads = {
                n: {
                    k: p.grad.numpy().copy()
                    for k, p in net.named_parameters()
                    if k in used[n] and p.grad is not None
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
    for epoch, n in plan.phases:
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
    if plan.anchor == "han":  # no uncertainties, one pass
        keys = keys[:6]
    for k, x in zip(keys, ca):
        if k.startswith("tok"):
            x = x @ proj.numpy()
        if k != "_":
            result[f"forward/anchor/{k}"] = x
    if plan.anchor == "cmpae":
        result["forward/anchor_noca/a_prob"] = noca[1]
        result["forward/anchor_noca/v_prob"] = noca[2]
    for n in ("audio", "visual"):
        out = next(o for m, o in forward_calls if m == n)
        for k, x in zip(("video_prob", "seg_prob", "class_prob", "tokens"), out[:4]):
            result[f"forward/{n}/{k}"] = x @ proj.numpy() if k == "tokens" else x

    # Per-step criterion calls -> named terms and the teachers' tensors.
    cc_reference: dict[str, list[int]] = {"a": [], "v": []}
    for s, cs in enumerate(step_calls):
        by = {
            name: [c for n, c in cs if n == name] for name in ("bce", "asl", "cc", "nce", "mutual")
        }
        bce, asl, cc, nce, mutual = by["bce"], by["asl"], by["cc"], by["nce"], by["mutual"]
        terms = {
            "correlation_a": cc[0][0],
            "correlation_v": cc[1][0],
            "nce_a": nce[1][0],
            "nce_v": nce[2][0],
        }
        if plan.anchor == "han":  # HAN's backbone: the three BCEs, weighted 1 (our 'backbone')
            terms["backbone"] = bce[0][0] + bce[1][0] + bce[2][0]
        else:
            terms.update(
                bce_a=bce[0][0],
                bce_v=bce[1][0],
                bce_global=bce[2][0],
                nce_av=nce[0][0],
                mutual=mutual[0][0],
            )
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
        # cc(p_anchor, teacher): entries where the confident mix took the Reference's value
        for m, c in (("a", cc[0]), ("v", cc[1])):
            cc_reference[m].append(int((c[2] != c[1]).sum()))
    # The schedule's boundaries, from the authors' options: the collaborative terms and
    # JoMoLD's ratios from epoch 2 (main.py: `epoch > 1`, warm_up_epoch < 1), KD and the
    # class-token weights after second_warm_up_epoch, each StepLR decay within the epochs.
    boundaries = {
        "collaborative terms, JoMoLD ratios": [2],
        "KD, class-token weights": [args.second_warm_up_epoch + 1],
        "learning rate x0.25": list(
            range(1 + args.lr_step_size, args.epochs + 1, args.lr_step_size)
        ),
    }
    meta = {
        "plan": plan_name,
        "anchor": plan.anchor,
        "data": plan.data,
        "batch_size": batch_size,
        "seed": seed,
        "float64": float64,
        "phases": plan.phases,
        "snapshots": plan.snapshots,
        "grad_steps": plan.grad_steps,
        "boundaries": boundaries,
        "counts": {f"cc_reference_{m}": v for m, v in cc_reference.items()},
        "torch": torch.__version__,
        "authors": os.path.abspath(authors),
        "authors_commit": _git_commit(authors),
        "shapes": {n: {k: list(v) for k, v in shapes[n].items() if k in used[n]} for n in NETWORKS},
    }
    if plan.anchor == "han":
        meta["han"] = os.path.abspath(han)
        meta["han_commit"] = _git_commit(han)
    rows = coverage(plan, result, meta, [b["label"] for b in data])
    table_text, ok = coverage_table(rows)
    print(f"coverage of plan {plan_name!r} (seed {seed}):\n{table_text}")
    if not ok:
        print(f"coverage FAILED: {out_path} not written", file=sys.stderr)
        return False
    result["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(out_path, **result)
    print(
        f"wrote {out_path}: {len(result)} arrays, {os.path.getsize(out_path) / 1e6:.2f} MB; "
        f"authors' code {meta['authors_commit']}, torch {torch.__version__}"
    )
    return True


def _git_commit(path: str) -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
