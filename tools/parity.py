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

``tests/test_parity.py`` replays the committed fixture in CI the same way.
Tolerances (float32, CPU): ``OUTPUT_RTOL`` on outputs, losses and gradients,
``PARAM_RTOL`` on parameters and Adam moments after 20 steps (relative to each
tensor's largest magnitude).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from coleaf_jax.models import authors_weights as aw  # noqa: E402  (numpy only)

PHASES = ((1, 5), (2, 5), (4, 5), (7, 5))  # (1-based epoch, steps): every schedule phase
SNAPSHOTS = (1, 5, 10, 15, 20)  # parameters / Adam moments after these steps
GRAD_STEPS = (1, 20)
SAMPLES = 64  # sampled positions per tensor
TOKEN_PROJ = 8
NUM_CLASSES, T, D = 25, 10, 512
OUTPUT_RTOL = 1e-5  # float32: outputs, losses, gradients of the first step
PARAM_RTOL = 1e-4  # float32: parameters and Adam moments after the first step
EXACT_RTOL = 1e-9  # float64: every group, every step (measured: at most 5e-12)
DRIFT_RTOL = 1e-1  # float32 after the first step: rounding amplified by training, as much
# in the authors' float32 code against its own float64 run (docs/fidelity.md)
DISCRETE = ("JoMoLD labels", "KD targets", "event-aware weights")
# Our float32 step against a float64 recording (compare --float32): the discrete groups'
# values (labels 0.05 / 0.9, weights) differ by their float32 rounding (measured 1.2e-8
# relative); a different decision differs by order one.
MIXED_DISCRETE_RTOL = 1e-7
NETWORKS = ("anchor", "audio", "visual")
# Parameters no output depends on: a softmax is invariant to a shift of its logits, so
# the bias of the temporal-attention logits (fc_frame_att) and the key bias of every
# attention (the middle third of in_proj_bias: q·b_k is the same for every key) have an
# exact gradient of 0, which both codes compute as float noise (~1e-10) that Adam turns
# into ±lr steps. They are zeroed before any comparison.
SHIFT_INVARIANT = {
    "anchor/fc_frame_att.bias",
    "audio/fc_frame_att.bias",
    "visual/fc_frame_att.bias",
}


def comparable(key: str, x: np.ndarray) -> np.ndarray:
    """``x`` (``network/name``) as a flat float64 array with its shift-invariant part zeroed."""
    flat = np.array(x, np.float64).ravel()
    if key in SHIFT_INVARIANT:
        flat[:] = 0.0
    elif key.endswith("in_proj_bias"):
        d = flat.size // 3
        flat[d : 2 * d] = 0.0
    return flat


# ---------------------------------------------------------------------------
# Identical inputs on both sides (numpy's frozen RandomState stream)


def initial_weights(
    shapes: dict[str, dict[str, tuple]], seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """Weights for every mapped entry of the three networks, in the authors' layout.

    Drawn as torch initialises them (linear U(±1/√in), attention in-projection
    xavier), except that attention biases, LayerNorm parameters and class
    tokens get small random values instead of 0/1 so that a wrong mapping of
    any of them shows. ``shapes[network][name]`` gives each shape.
    """
    rng = np.random.RandomState(seed)
    out = {}
    for network in NETWORKS:
        out[network] = {}
        fan_in = None
        for name, path, kind in aw.TABLES[network]:
            shape = tuple(shapes[network][name])
            if kind == "t":  # linear weight (out, in)
                fan_in = shape[1]
                x = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
            elif kind == "qkv_t":  # in_proj_weight (3D, D)
                x = rng.uniform(-1, 1, shape) * np.sqrt(6.0 / (shape[0] + shape[1]))
            elif path.endswith("/scale"):  # LayerNorm weight
                x = 1.0 + rng.uniform(-0.1, 0.1, shape)
            elif kind in ("qkv", "tokens") or "/norm" in path:
                x = rng.uniform(-0.1, 0.1, shape)
            else:  # linear bias
                x = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
            out[network][name] = x.astype(np.float32)
    return out


def batches(batch_size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """20 batches in the LLP layout: features, weak labels (1-3 classes, Speech common)."""
    rng = np.random.RandomState(seed + 1)
    out = []
    for _ in range(sum(n for _, n in PHASES)):
        label = np.zeros((batch_size, NUM_CLASSES), np.float32)
        for b in range(batch_size):
            k = rng.choice([1, 2, 3], p=[0.4, 0.55, 0.05])
            classes = rng.choice(NUM_CLASSES, size=k, replace=False)
            if rng.rand() < 0.5:
                classes[0] = 0
            label[b, classes] = 1.0
        out.append(
            {
                "audio": rng.standard_normal((batch_size, T, 128)).astype(np.float32),
                "video_2d": np.abs(rng.standard_normal((batch_size, T * 8, 2048))).astype(
                    np.float32
                ),
                "video_3d": np.abs(rng.standard_normal((batch_size, T, 512))).astype(np.float32),
                "label": label,
            }
        )
    return out


def sample_positions(shapes: dict[str, dict[str, tuple]], seed: int) -> dict[str, np.ndarray]:
    """Fixed flat positions sampled in every tensor (``network/name`` -> indices)."""
    rng = np.random.RandomState(seed + 2)
    out = {}
    for network in NETWORKS:
        for name, _, _ in aw.TABLES[network]:
            size = int(np.prod(shapes[network][name]))
            out[f"{network}/{name}"] = rng.randint(0, size, min(SAMPLES, size))
    return out


def token_projection(seed: int) -> np.ndarray:
    return np.random.RandomState(seed + 3).standard_normal((D, TOKEN_PROJ)).astype(np.float32)


def summarise(
    tensors: dict[str, dict[str, np.ndarray]], positions: dict[str, np.ndarray], prefix: str
) -> dict[str, np.ndarray]:
    """``{prefix/network/name/{sample,norm,scale}}``: sampled values, L2 norm, max |x|."""
    out = {}
    for network, named in tensors.items():
        for name, x in named.items():
            key = f"{network}/{name}"
            flat = comparable(key, x)
            out[f"{prefix}/{key}/sample"] = flat[positions[key]].astype(x.dtype)
            out[f"{prefix}/{key}/norm"] = np.array(np.linalg.norm(flat))
            out[f"{prefix}/{key}/scale"] = np.array(np.abs(flat).max())
    return out


# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# compare: coleaf-jax (jax) against a recorded fixture


def parity_config(batch_size: int):
    """``configs/llp.py`` (the authors' recipe) with every dropout off."""
    from coleaf_jax.config import llp_config

    c = llp_config()
    c.batch_size = batch_size
    c.model.dropout = 0.0
    c.model.reference_head_dropout = 0.0
    c.model.cmpae_visual_dropout = 0.0
    c.model.cmpae_residual_dropout = 0.0
    c.data.on_device = False
    return c


def replay(fixture: str, float32: bool = False) -> dict[str, float]:
    """Runs our step on the fixture's weights and batches; returns the worst relative
    error per compared group (see ``report``). The fixture's precision is used unless
    ``float32`` (e.g. our float32 step against a float64 recording: the rounding noise)."""
    import jax
    import jax.numpy as jnp

    from coleaf_jax.training import losses
    from coleaf_jax.training import step as step_lib

    ref = dict(np.load(fixture))
    meta = json.loads(str(ref.pop("meta")))
    batch_size, seed = meta["batch_size"], meta["seed"]
    dtype = np.float64 if meta.get("float64") and not float32 else np.float32
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    shapes = {n: {k: tuple(v) for k, v in meta["shapes"][n].items()} for n in NETWORKS}
    weights = initial_weights(shapes, seed)
    positions = sample_positions(shapes, seed)
    proj = token_projection(seed)
    data = batches(batch_size, seed)
    config = parity_config(batch_size)
    spe = PHASES[0][1]
    errors: dict[str, float] = {}

    def err(group, ours, theirs, scale=None):
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        if ours.shape != theirs.shape:
            raise ValueError(f"{group}: shape {ours.shape} vs the authors' {theirs.shape}")
        scale = np.abs(theirs).max() if scale is None else scale
        e = float(np.abs(ours - theirs).max() / max(scale, 1e-30)) if theirs.size else 0.0
        errors[group] = max(errors.get(group, 0.0), e)

    def to_batch(b):
        out = {k: jnp.asarray(v.astype(dtype)) for k, v in b.items()}
        out["mask"] = jnp.ones((batch_size, T), bool)
        out["video_mask"] = jnp.ones(batch_size, dtype)
        return out

    cast = lambda tree: jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), tree)  # noqa: E731
    anchor_params = cast(aw.anchor_from_authors(weights["anchor"]))
    ref_params = cast(aw.reference_from_authors(weights["audio"], weights["visual"]))
    state, anchor, reference, tx = step_lib.create_train_state(
        config, jax.random.key(0), to_batch(data[0]), spe, NUM_CLASSES
    )
    _check_tree(state.anchor_params, anchor_params, "anchor")
    _check_tree(state.ref_params, ref_params, "reference")
    state = state.replace(
        anchor_params=anchor_params,
        ref_params=ref_params,
        anchor_opt=tx.init(anchor_params),
        ref_opt=tx.init(ref_params),
    )

    # Forward outputs at the initial weights.
    b0 = to_batch(data[0])
    inputs = (b0["audio"], b0["video_2d"], b0["video_3d"], b0["mask"])
    a_out = jax.jit(lambda p, *x: anchor.apply({"params": p}, *x, train=True))(
        anchor_params, *inputs
    )
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    ours = {
        "global_prob": a_out["global_prob"],
        "a_prob": a_out["video_prob_a"],
        "v_prob": a_out["video_prob_v"],
        "frame_prob": a_out["seg_prob"],
        "tok_a": unit(np.asarray(a_out["tokens_a"])) @ proj,
        "tok_v": unit(np.asarray(a_out["tokens_v"])) @ proj,
        "global_uct": a_out["global_unc"],
        "a_uct": a_out["video_unc"][:, 0],
        "v_uct": a_out["video_unc"][:, 1],
    }
    for k, v in ours.items():
        err(f"forward: Anchor {k}", v, ref[f"forward/anchor/{k}"])
    err("forward: Anchor no-CA p^a", a_out["noca_video_prob_a"], ref["forward/anchor_noca/a_prob"])
    err("forward: Anchor no-CA p^v", a_out["noca_video_prob_v"], ref["forward/anchor_noca/v_prob"])
    r_out = jax.jit(lambda p, *x: reference.apply({"params": p}, *x, train=True))(
        ref_params, *inputs
    )
    for m, n in (("a", "audio"), ("v", "visual")):
        for k in ("video_prob", "seg_prob", "class_prob"):
            err(f"forward: Reference {n} {k}", r_out[m][k], ref[f"forward/{n}/{k}"])
        err(
            f"forward: Reference {n} tokens",
            unit(np.asarray(r_out[m]["tokens"])) @ proj,
            ref[f"forward/{n}/tokens"],
        )

    step_fn = jax.jit(
        step_lib.make_train_step(config, anchor, reference, tx, None, spe, diagnostics=True)
    )
    lc = config.loss
    s = 0
    for epoch, n in PHASES:
        for _ in range(n):
            state, logs, diag = step_fn(
                state, to_batch(data[s]), jnp.int32(epoch - 1), jax.random.key(0)
            )
            tag = "step 1" if s == 0 else f"epoch {epoch}"
            for k in [k for k in ref if k.startswith(f"step{s}/loss/")]:
                name = k.rsplit("/", 1)[1]
                err(f"loss {name} ({tag})", logs[name], ref[k], scale=max(abs(float(ref[k])), 1e-3))
            for m in ("a", "v"):
                err(
                    f"JoMoLD labels ({tag})",
                    diag[f"y_{m}"],
                    ref[f"step{s}/denoised_{m}"],
                    scale=1.0,
                )
                if f"step{s}/kd_target_{m}" in ref:
                    t = losses.kd_targets(
                        diag["anchor_out"]["video_prob_a"],
                        diag["anchor_out"]["video_prob_v"],
                        diag["y_a"],
                        diag["y_v"],
                        lc.kd_threshold_audio,
                        lc.kd_threshold_visual,
                    )
                    err(
                        f"KD targets ({tag})",
                        t[0 if m == "a" else 1],
                        ref[f"step{s}/kd_target_{m}"],
                        1.0,
                    )
            q = {m: diag["teacher"][m]["video_prob"] for m in ("a", "v")}
            w = losses.event_aware_weights(q["a"], q["v"], lc.pseudo_label_threshold)
            err(f"event-aware weights ({tag})", w[0], ref[f"step{s}/event_weight_a"], 1.0)
            err(f"event-aware weights ({tag})", w[1], ref[f"step{s}/event_weight_v"], 1.0)
            clamp = lambda p: jnp.clip(p, losses.EPS_PROB, 1 - losses.EPS_PROB)  # noqa: E731
            for m, y_m, conf in (
                ("a", diag["y_a"], lc.correlation_confidence_audio),
                ("v", diag["y_v"], lc.correlation_confidence_visual),
            ):
                t_m = losses.confident_teacher(
                    q[m], clamp(diag["anchor_out"][f"video_prob_{m}"]), y_m, *conf
                )
                err(f"correlation teachers ({tag})", t_m, ref[f"step{s}/cc_teacher_{m}"])
            s += 1
            if s in GRAD_STEPS:
                grads = {"anchor": aw.anchor_to_authors(jax.device_get(diag["anchor_grads"]))}
                grads["audio"], grads["visual"] = aw.reference_to_authors(
                    jax.device_get(diag["ref_grads"])
                )
                _compare_summaries(
                    err, grads, ref, positions, f"grads_{s}", f"gradients after step {s}"
                )
            if s in SNAPSHOTS:
                host = jax.device_get(state)
                params = {"anchor": aw.anchor_to_authors(host.anchor_params)}
                params["audio"], params["visual"] = aw.reference_to_authors(host.ref_params)
                _compare_summaries(
                    err, params, ref, positions, f"params_{s}", f"parameters after step {s}"
                )
                for moment, ours_m in (("exp_avg", "mu"), ("exp_avg_sq", "nu")):
                    mom = {"anchor": aw.anchor_to_authors(getattr(host.anchor_opt, ours_m))}
                    mom["audio"], mom["visual"] = aw.reference_to_authors(
                        getattr(host.ref_opt, ours_m)
                    )
                    _compare_summaries(
                        err, mom, ref, positions, f"{moment}_{s}", f"Adam {moment} after step {s}"
                    )
    return errors


def fixture_is_float64(fixture: str) -> bool:
    with np.load(fixture) as f:
        return bool(json.loads(str(f["meta"])).get("float64"))


def compare_recordings(a: str, b: str) -> dict[str, float]:
    """The same groups as ``replay`` between two recordings (``a`` against ``b``)."""
    ra, rb = dict(np.load(a)), dict(np.load(b))
    ra.pop("meta"), rb.pop("meta")
    errors: dict[str, float] = {}
    for key in sorted(rb, key=_group_order):
        if key.endswith(("/norm", "/scale")) or key not in ra:
            continue
        group = _group_name(key)
        scale = (
            float(rb[key.rsplit("/", 1)[0] + "/scale"])
            if key.endswith("/sample")
            else max(abs(float(rb[key])), 1e-3)
            if "/loss/" in key
            else np.abs(rb[key]).max()
        )
        if any(
            key.startswith(f"{p}_")
            and key.split("/")[1] + "/" + key.split("/")[2] in SHIFT_INVARIANT
            for p in ("params", "grads", "exp_avg", "exp_avg_sq")
        ):
            continue
        e = float(np.abs(np.asarray(ra[key], np.float64) - rb[key]).max() / max(scale, 1e-30))
        errors[group] = max(errors.get(group, 0.0), e)
    return errors


def _group_order(key: str):
    head = key.split("/")[0]
    return (0 if head == "forward" else 1, int(head[4:]) if head.startswith("step") else 0, key)


def _group_name(key: str) -> str:
    head = key.split("/")[0]
    if head == "forward":
        return "forward outputs"
    if head.startswith("step"):
        s = int(head[4:])
        tag = (
            "step 1" if s == 0 else f"epoch {next(e for e, first in _phase_starts() if s >= first)}"
        )
        what = {
            "denoised_a": "JoMoLD labels",
            "denoised_v": "JoMoLD labels",
            "kd_target_a": "KD targets",
            "kd_target_v": "KD targets",
            "event_weight_a": "event-aware weights",
            "event_weight_v": "event-aware weights",
            "cc_teacher_a": "correlation teachers",
            "cc_teacher_v": "correlation teachers",
        }.get(key.split("/")[1], key.split("/")[1])
        return f"loss {key.split('/')[2]} ({tag})" if what == "loss" else f"{what} ({tag})"
    kind, step = head.rsplit("_", 1)
    return {
        "params": "parameters",
        "grads": "gradients",
        "exp_avg": "Adam exp_avg",
        "exp_avg_sq": "Adam exp_avg_sq",
    }[kind] + f" after step {step}"


def _phase_starts():
    starts, s = [], 0
    for epoch, n in PHASES:
        starts.append((epoch, s))
        s += n
    return sorted(starts, key=lambda x: -x[1])


def _check_tree(template, converted, what: str) -> None:
    import jax

    a = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(template)
    }
    b = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(converted)
    }
    if a != b:
        raise ValueError(
            f"{what}: converted parameters do not match the model: "
            f"missing {sorted(set(a) - set(b))[:5]}, extra {sorted(set(b) - set(a))[:5]}, "
            f"shapes {[k for k in a if k in b and a[k] != b[k]][:5]}"
        )


def _compare_summaries(err, tensors, ref, positions, prefix: str, group: str) -> None:
    for network, named in tensors.items():
        for name, x in named.items():
            key = f"{network}/{name}"
            if f"{prefix}/{key}/sample" not in ref or key in SHIFT_INVARIANT:
                continue
            flat = comparable(key, x)
            scale = float(ref[f"{prefix}/{key}/scale"])
            err(group, flat[positions[key]], ref[f"{prefix}/{key}/sample"], scale)
            err(group, np.linalg.norm(flat), ref[f"{prefix}/{key}/norm"])


def tolerance(group: str, float64: bool, mixed: bool = False) -> float:
    """The bound on a group's relative error.

    float64: ``EXACT_RTOL`` everywhere (the maths). float32: ``OUTPUT_RTOL`` on the
    forward outputs and the first step's losses and gradients, ``PARAM_RTOL`` on the
    parameters and Adam moments after it, 0 for the discrete decisions (denoised labels,
    KD targets, event weights; ``MIXED_DISCRETE_RTOL`` when ``mixed``: our float32
    against a float64 recording), ``DRIFT_RTOL`` after the first step.
    """
    if float64:
        return EXACT_RTOL
    if group.startswith(DISCRETE):
        return MIXED_DISCRETE_RTOL if mixed else 0.0
    first = group.startswith("forward") or group.endswith(("(step 1)", "after step 1"))
    if not first:
        return DRIFT_RTOL
    return PARAM_RTOL if group.startswith(("parameters", "Adam")) else OUTPUT_RTOL


def report(errors: dict[str, float], float64: bool, mixed: bool = False) -> tuple[str, bool]:
    """A table of the worst relative error per group, and whether all are within tolerance."""
    width = max(len(g) for g in errors)
    lines, ok = [], True
    for group, e in errors.items():
        tol = tolerance(group, float64, mixed)
        good = e <= tol
        ok &= good
        lines.append(f"{group:<{width}}  {e:9.2e}  (tol {tol:.0e}) {'ok' if good else 'FAIL'}")
    return "\n".join(lines), ok


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
    if args.command == "record":
        record(args.authors, args.out, args.batch_size, args.seed, args.float64)
        return 0
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
