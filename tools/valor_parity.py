"""Step-level parity between VALOR's own training step and ``configs/valor.py`` (float64).

Two halves, run in two environments (as ``tools/parity.py`` for CoLeaF):

``record`` (a Python with torch and numpy, never the project's venv) executes VALOR's
``main_network.py`` and ``main_avvp.py:train`` from a checkout (github.com/Franklin905/VALOR
at 2677da9; ``main_avvp.py`` is executed from its own text with its ``wandb`` and
``prettytable`` imports stubbed, its dataset module replaced and its labels' ``.float()``
made ``.double()`` for the float64 run: only ``train`` and ``lr_warm_up_cos_anneal`` are
used), builds its ``MMIL_Net`` (VALOR's options at width 32,
8 heads, FFN 64, **2 layers**, so that the audio-first update runs across layers), sets
weights drawn from ``numpy.random.RandomState`` (LayerNorm and attention biases too),
switches every dropout off (masks cannot be reproduced), and runs VALOR's own ``train`` on
identical batches (weak labels, CLAP/CLIP segment pseudo-labels inside them) with its own
``AdamW`` (lr, weight decay 1e-3, β 0.5 / 0.999), its ``clip_grad_norm_`` (at 1.55 here:
:data:`GRAD_NORM`) and its
``lr_warm_up_cos_anneal`` set before each epoch: 2 steps each of epochs 1, 2 (warm-up), 3
(the first cosine epoch), 4 and 8 (the last), warm-up 3 of 8 epochs. It records every loss
term of every step, the learning rate of every epoch, and the parameters and AdamW
moments after steps 2, 6 and 10 (64 sampled positions of every tensor and its norm; the
entries whose exact gradient is 0 zeroed, as ``tools/parity_inputs.py:comparable``)::

    /tmp/torch/bin/python tools/valor_parity.py record --valor /path/to/VALOR \\
        --out tests/fixtures/parity_valor_f64.npz

``compare`` (the project's venv; no torch; float64) regenerates the weights and batches,
converts the weights (``coleaf_jax.models.authors_weights.han_table``), runs
``coleaf_jax.training.step``'s jitted step with ``configs/valor.py``'s recipe at the
same sizes and compares everything; exits 1 unless every group is within 1e-9 of the
largest magnitude of its tensor::

    python tools/valor_parity.py compare tests/fixtures/parity_valor_f64.npz
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# The entries whose exact gradient is 0 (softmax-normalised logit biases, attention key
# biases): float noise that AdamW turns into ±lr steps, zeroed before any comparison.
from tools.parity_inputs import comparable, random_entry  # noqa: E402  (numpy only: both venvs)

WIDTH, HEADS, FFN, LAYERS = 32, 8, 64, 2
BATCH, T, C = 4, 10, 25
EPOCHS, WARMUP, LR, LR_MIN = 8, 3, 3e-4, 3e-6
# VALOR's scripts clip at 1.0; these small networks' gradient norms are 1.4-1.7, so the
# fixture clips at 1.55: some steps clipped, some not (both branches of clip_grad_norm_).
GRAD_NORM = 1.55
PHASES = ((1, 2), (2, 2), (3, 2), (4, 2), (8, 2))  # (1-based epoch, steps)
SNAPSHOTS = (2, 6, 10)
SAMPLES = 64
EXACT_RTOL = 1e-9


def batches(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One batch per step: features, weak labels (1-3 classes), and segment pseudo-labels
    within them (each labelled class heard / seen in a random run of segments, or not)."""
    rng = np.random.RandomState(seed + 7)
    out = []
    for _ in range(sum(n for _, n in PHASES)):
        label = np.zeros((BATCH, C))
        pl_a, pl_v = np.zeros((BATCH, T, C)), np.zeros((BATCH, T, C))
        for b in range(BATCH):
            for c in rng.choice(C, 1 + rng.randint(3), replace=False):
                label[b, c] = 1
                for pl in (pl_a, pl_v):
                    if rng.rand() < 0.7:
                        start = rng.randint(T)
                        pl[b, start : start + 1 + rng.randint(T - start), c] = 1
        out.append(
            {
                "audio": rng.standard_normal((BATCH, T, 128)),
                "video_s": rng.standard_normal((BATCH, 8 * T, 2048)),
                "video_st": rng.standard_normal((BATCH, T, 512)),
                "label": label,
                "audio_pseudo_labels": pl_a,
                "visual_pseudo_labels": pl_v,
            }
        )
    return out


def initial_weights(shapes: dict[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
    """Every entry of VALOR's state dict (names sorted), drawn by
    :func:`tools.parity_inputs.random_entry`."""
    rng = np.random.RandomState(seed)
    return {name: random_entry(name, shapes[name], rng) for name in sorted(shapes)}


def positions(shapes: dict[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed + 3)
    return {
        n: rng.randint(0, int(np.prod(s)), min(SAMPLES, int(np.prod(s))))
        for n, s in sorted(shapes.items())
    }


# ----------------------------------------------------------------------------- record (torch)


def _valor_modules(valor: str):
    import torch

    torch.set_default_dtype(torch.float64)
    net = types.ModuleType("main_network")
    path = os.path.join(valor, "main_network.py")
    exec(compile(open(path).read(), path, "exec"), net.__dict__)  # noqa: S102
    sys.modules["main_network"] = net
    for stub in ("wandb", "prettytable", "dataloader_avvp", "utils", "utils.eval_metrics"):
        sys.modules.setdefault(stub, types.ModuleType(stub))
    sys.modules["dataloader_avvp"].LLP_dataset = None
    sys.modules["utils.eval_metrics"].segment_level = None
    sys.modules["utils.eval_metrics"].event_level = None
    sys.modules["prettytable"].PrettyTable = None
    main = types.ModuleType("main_avvp")
    path = os.path.join(valor, "main_avvp.py")
    text = open(path).read().replace(".float()", ".double()")  # labels in float64 too
    exec(compile(text, path, "exec"), main.__dict__)  # noqa: S102
    return net, main


def record(valor: str, out: str, seed: int = 0) -> None:
    import torch
    import torch.nn.functional as F

    net, main = _valor_modules(valor)
    args = types.SimpleNamespace(
        hidden_dim=WIDTH, nhead=HEADS, ff_dim=FFN, num_layers=LAYERS, norm_where="post_norm",
        input_a_dim=128, input_v_dim=2048, grad_norm=GRAD_NORM, use_wandb=False,
    )  # fmt: skip
    model = net.MMIL_Net(args)
    for m in model.modules():  # dropout off: its masks cannot be reproduced
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = initial_weights(shapes, seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(torch.from_numpy(weights[k]))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, weight_decay=1e-3, betas=(0.5, 0.999), eps=1e-8
    )
    names = {id(p): k for k, p in model.named_parameters()}
    where = positions(shapes, seed)
    data = batches(seed)
    result: dict[str, np.ndarray] = {}
    calls: list[tuple[str, float]] = []
    bce_logits = F.binary_cross_entropy_with_logits

    def logged_bce_logits(x, y, *a, **k):
        value = bce_logits(x, y, *a, **k)
        calls.append(("pseudo", float(value)))
        return value

    class LoggedBCE(torch.nn.BCELoss):
        def forward(self, x, y):
            value = super().forward(x, y)
            calls.append(("video", float(value)))
            return value

    main.F.binary_cross_entropy_with_logits = logged_bce_logits
    clip = torch.nn.utils.clip_grad_norm_
    norms = []  # each step's gradient norm before clipping (what clip_grad_norm_ returns)

    def logged_clip(parameters, max_norm, *a, **k):
        norms.append(float(clip(parameters, max_norm, *a, **k)))
        return norms[-1]

    main.nn.utils.clip_grad_norm_ = logged_clip
    step, lrs, losses = 0, [], []

    def snapshot():
        for k, v in model.state_dict().items():
            flat = comparable(f"anchor/{k}", v.detach().numpy())
            result[f"param_{step}/{k}/sample"] = flat[where[k]].copy()
            result[f"param_{step}/{k}/norm"] = np.array(np.linalg.norm(flat))
        for p, s in optimizer.state.items():
            for moment in ("exp_avg", "exp_avg_sq"):
                k = names[id(p)]
                flat = comparable(f"anchor/{k}", s[moment].numpy())
                result[f"{moment}_{step}/{k}/sample"] = flat[where[k]].copy()
                result[f"{moment}_{step}/{k}/norm"] = np.array(np.linalg.norm(flat))

    original_step = optimizer.step

    def counted_step(*a, **k):
        nonlocal step
        value = original_step(*a, **k)
        step += 1
        if step in SNAPSHOTS:
            snapshot()
        return value

    optimizer.step = counted_step
    offset = 0
    for epoch, n in PHASES:
        main.lr_warm_up_cos_anneal(optimizer, epoch, WARMUP, EPOCHS, LR_MIN, LR)
        lrs.append(optimizer.param_groups[0]["lr"])
        loader = [{k: torch.from_numpy(v) for k, v in b.items()} for b in data[offset : offset + n]]
        offset += n
        calls.clear()
        main.train(args, model, loader, optimizer, LoggedBCE(), epoch, "cpu")
        # per step: video BCE, then audio and visual pseudo BCE (main_avvp.py:72-75)
        for i in range(n):
            video, pa, pv = (v for _, v in calls[3 * i : 3 * i + 3])
            losses.append((video, pa, pv))
    meta = {"shapes": {k: list(v) for k, v in shapes.items()}, "seed": seed,
            "torch": torch.__version__, "phases": PHASES, "snapshots": SNAPSHOTS}  # fmt: skip
    clipped = sum(n > GRAD_NORM for n in norms)
    if not 0 < clipped < len(norms):
        raise SystemExit(
            f"coverage: {clipped} of {len(norms)} steps clipped; expected some, not all"
        )
    np.savez(
        out,
        losses=np.array(losses),
        lrs=np.array(lrs),
        grad_norms=np.array(norms),
        meta=json.dumps(meta),
        **result,
    )
    print(f"gradient norms before clipping: {np.round(norms, 2).tolist()} ({clipped} clipped)")
    print(f"recorded {step} steps of VALOR's train into {out}")


# ----------------------------------------------------------------------------- compare (JAX)


def compare(fixture: str) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    from coleaf_jax.models import authors_weights as aw
    from coleaf_jax.training import step as step_lib
    from configs import valor as valor_config

    with np.load(fixture) as f:
        rec = {k: f[k] for k in f.files}
    meta = json.loads(str(rec["meta"]))
    shapes = {k: tuple(v) for k, v in meta["shapes"].items()}
    seed = meta["seed"]
    c = valor_config.get_config("synthetic")
    c.model.d_model, c.model.num_heads, c.model.ffn_dim = WIDTH, HEADS, FFN
    c.model.num_layers, c.model.dropout = LAYERS, 0.0
    c.num_epochs, c.lr_warmup_epochs, c.learning_rate, c.lr_min = EPOCHS, WARMUP, LR, LR_MIN
    c.batch_size, c.grad_clip_norm = BATCH, GRAD_NORM
    table = aw.han_table(LAYERS)
    weights = initial_weights(shapes, seed)
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, jnp.float64), aw.from_authors(weights, table, "valor")
    )
    anchor, _ = step_lib.build_models(c, C)
    tx = step_lib.make_optimizer(c)
    state = step_lib.TrainState(
        step=jnp.zeros((), jnp.int32), anchor_params=params, anchor_opt=tx.init(params),
        ref_params={}, ref_opt={},
    )  # fmt: skip
    step_fn = jax.jit(step_lib.make_train_step(c, anchor, None, tx, steps_per_epoch=2))
    errors: dict[str, float] = {}

    def rel(ours, theirs):
        theirs = np.asarray(theirs)
        return float(np.abs(np.asarray(ours) - theirs).max() / max(np.abs(theirs).max(), 1e-300))

    where = positions(shapes, seed)

    def worst_sampled(tree, prefix: str) -> float:
        """The worst relative error of a tree's sampled positions and norms (authors' names)."""
        worst = 0.0
        for k, v in aw.to_authors(jax.device_get(tree), table).items():
            flat = comparable(f"anchor/{k}", v)
            worst = max(worst, rel(flat[where[k]], rec[f"{prefix}/{k}/sample"]))
            worst = max(worst, rel(np.linalg.norm(flat), rec[f"{prefix}/{k}/norm"]))
        return worst

    def check_params(n):
        errors[f"parameters after step {n}"] = worst_sampled(state.anchor_params, f"param_{n}")
        adam = next(
            s
            for s in jax.tree_util.tree_leaves(
                state.anchor_opt, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
            )
            if isinstance(s, optax.ScaleByAdamState)
        )
        for moment, tree in (("exp_avg", adam.mu), ("exp_avg_sq", adam.nu)):
            errors[f"AdamW {moment} after step {n}"] = worst_sampled(tree, f"{moment}_{n}")

    data = batches(seed)
    i = 0
    for (epoch, n), lr in zip(PHASES, rec["lrs"]):
        errors[f"learning rate (epoch {epoch})"] = rel(
            step_lib.learning_rate(c, jnp.int32(epoch - 1)), lr
        )
        for _ in range(n):
            b = data[i]
            batch = {
                "audio": jnp.asarray(b["audio"]),
                "video_2d": jnp.asarray(b["video_s"]),
                "video_3d": jnp.asarray(b["video_st"]),
                "mask": jnp.ones((BATCH, T), bool),
                "video_mask": jnp.ones((BATCH,)),
                "label": jnp.asarray(b["label"]),
                "pl_audio": jnp.asarray(b["audio_pseudo_labels"]),
                "pl_visual": jnp.asarray(b["visual_pseudo_labels"]),
            }
            state, logs = step_fn(state, batch, jnp.int32(epoch - 1), jax.random.key(0))
            video, pa, pv = rec["losses"][i]
            errors[f"loss: video BCE (step {i + 1}, epoch {epoch})"] = rel(logs["backbone"], video)
            errors[f"loss: pseudo-label BCEs (step {i + 1}, epoch {epoch})"] = rel(
                2 * logs["pseudo_segment"], pa + pv
            )
            i += 1
            if i in SNAPSHOTS:
                check_params(i)
    clipped = int((rec["grad_norms"] > GRAD_NORM).sum())
    print(f"coverage: {clipped} of {len(rec['grad_norms'])} steps clipped (norm > {GRAD_NORM}), "
          f"epochs {[e for e, _ in PHASES]} (warm-up {WARMUP} of {EPOCHS})")  # fmt: skip
    ok = 0 < clipped < len(rec["grad_norms"])
    width = max(len(g) for g in errors)
    for group, e in errors.items():
        good = e <= EXACT_RTOL
        ok &= good
        print(f"{group:<{width}}  {e:9.2e}  (tol {EXACT_RTOL:.0e}) {'ok' if good else 'FAIL'}")
    print("parity: " + ("every group within tolerance" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run VALOR's train (torch venv) and record it")
    rec.add_argument("--valor", required=True, help="checkout of Franklin905/VALOR (2677da9)")
    rec.add_argument("--out", required=True)
    rec.add_argument("--seed", type=int, default=0)
    cmp = sub.add_parser("compare", help="replay with coleaf-jax (float64) and compare")
    cmp.add_argument("fixture")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.valor, args.out, args.seed)
        return 0
    return compare(args.fixture)


if __name__ == "__main__":
    sys.exit(main())
