"""Which dropout rate reaches which layer, and that evaluation and parsing draw none
(issue 30, item 2).

The authors' dropout masks cannot be reproduced (torch's generator; the parity harness
switches every dropout off), so the *sites* are checked instead. Every dropout call of
every Anchor and of the Reference is intercepted (flax ``nn.intercept_methods``; the
project's hash ``Dropout`` of ``models/dropout.py`` and flax's own ``nn.Dropout``), and
its module path, the rate it was built with and whether it drew a mask are recorded,
then compared with the table ``AUTHORS`` below, written down from the authors' code:

* CoLeaF, github.com/faeghehsardari/coleaf at a36a153 ("CoLeaF :n" is
  ``nets/net_audiovisual.py`` line n): the CMPAE Anchor (``MMIL_Net``) and the
  Reference (``Self_Audio_Net``, ``Self_Video_Net``). CMPAE's own code
  (MengyuanChen21/CVPR2023-CMPAE at 73345f7) has the same sites in its ``MMIL_Net``.
* HAN, github.com/YapengTian/AVVP-ECCV20 at fde5611 ("HAN :n", the same file name):
  the HAN Anchor (the CoLeaF code has none).

A torch ``nn.MultiheadAttention(dropout=p)`` drops its attention weights: it is a site.
Defined but never run, so not in the table: ``HANLayer.input_drp = nn.Dropout(p=1)``
(CoLeaF :93 and :341, its only use commented out at :125 and :368), the Reference
layer's ``cm_attn`` and ``dropout11`` (CoLeaF :329, :338; it runs with ``with_ca=False``
only, :448, :520), and HAN's ``audio_encoder``, ``visual_encoder``, ``cmt_encoder`` (HAN
:97-101, never called by ``forward``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax import registry
from coleaf_jax.evaluation import evaluate, parsing, runs
from coleaf_jax.models import cmpae as cmpae_lib
from coleaf_jax.models import dropout as dropout_lib
from coleaf_jax.models import reference as reference_lib
from coleaf_jax.training import step as step_lib
from configs import llp

VARIANTS = ("coleaf_cmpae", "coleaf_han", "cmpae", "han")  # configs/llp.py's methods
C, T, B = 25, 10, 2


class Site(NamedTuple):
    """One dropout of the authors' code: its rate, where it is built (and where that rate
    comes from), where their forward applies it."""

    rate: float
    defined: str
    applied: str


# The authors' dropout sites, read from their code.
AUTHORS: dict[str, Site] = {
    # HAN Anchor: HANLayer(dropout=0.1) (HAN :40), built by MMIL_Net with the default
    # (HAN :102); Encoder (HAN :27-30) runs the one layer for the audio and the visual stream.
    "HAN.cm_attn": Site(0.1, "HAN :43 MultiheadAttention(dropout)", "HAN :71 cross-attention"),
    "HAN.self_attn": Site(0.1, "HAN :42 MultiheadAttention(dropout)", "HAN :73 self-attention"),
    "HAN.dropout11": Site(0.1, "HAN :52", "HAN :75 cross-attention output"),
    "HAN.dropout12": Site(0.1, "HAN :53", "HAN :75 self-attention output"),
    "HAN.dropout": Site(0.1, "HAN :47", "HAN :78 FFN hidden, after ReLU"),
    "HAN.dropout2": Site(0.1, "HAN :54", "HAN :79 FFN output"),
    # CMPAE Anchor: MMIL_Net(att_dropout=0.1, cls_dropout=0.5) (CoLeaF :169), built with the
    # defaults (main.py:472); HANLayer gets att_dropout through Encoder (:198-199, :49-50)
    # and runs without (:260) and with (:261) cross-attention, each for both streams (:64-67).
    "CMPAE.cm_attn": Site(0.1, "CoLeaF :81 MultiheadAttention(dropout)", "CoLeaF :137"),
    "CMPAE.self_attn": Site(0.1, "CoLeaF :80 MultiheadAttention(dropout)", "CoLeaF :139, :154"),
    "CMPAE.dropout11": Site(0.1, "CoLeaF :90", "CoLeaF :142 cross-attention output"),
    "CMPAE.dropout12": Site(0.1, "CoLeaF :91", "CoLeaF :142, :157 self-attention output"),
    "CMPAE.dropout": Site(0.1, "CoLeaF :85", "CoLeaF :161 FFN hidden, after ReLU"),
    "CMPAE.dropout2": Site(0.1, "CoLeaF :92", "CoLeaF :161 FFN output"),
    "CMPAE.cls_dropout": Site(
        0.5,
        "CoLeaF :221-222 Dropout(p=cls_dropout)",
        "CoLeaF :292-293 the visual tokens x2, after the NCE tokens (:273-274), before the heads",
    ),
    "CMPAE.v2a": Site(0.2, "CoLeaF :203 Dropout(0.2) in v2a", "CoLeaF :303 v2a(x_a + x_v)"),
    "CMPAE.a2v": Site(0.2, "CoLeaF :209 Dropout(0.2) in a2v", "CoLeaF :304 a2v(x_a + x_v)"),
    # Reference: Self_Audio_Net / Self_Video_Net(att_dropout=0.1, cls_dropout=0.5) (CoLeaF
    # :423, :482), built with the defaults (main.py:475-476); Self_HANLayer gets att_dropout
    # through Self_Encoder (:429-430 / :493-494, :398-399), run with with_ca=False (:448, :520).
    "REF.self_attn": Site(0.1, "CoLeaF :328 MultiheadAttention(dropout)", "CoLeaF :380"),
    "REF.dropout12": Site(0.1, "CoLeaF :339", "CoLeaF :383 self-attention output"),
    "REF.dropout": Site(0.1, "CoLeaF :333", "CoLeaF :386 FFN hidden, after ReLU"),
    "REF.dropout2": Site(0.1, "CoLeaF :340", "CoLeaF :386 FFN output"),
    "REF.audio_cls_dropout": Site(
        0.5,
        "CoLeaF :438-439 Dropout(p=cls_dropout)",
        "CoLeaF :462 into fc_prob only; fc_frame_att reads the undropped x1 (:463)",
    ),
    "REF.visual_cls_dropout": Site(
        0.5,
        "CoLeaF :502-503 Dropout(p=cls_dropout)",
        "CoLeaF :531-532 x2, read by fc_prob (:533) and fc_frame_att (:535)",
    ),
}

# Ours, per forward pass in training: {module path: (the authors' sites it stands for,
# calls)}. One HANLayer ``Dropout_0`` serves both of the authors' dropout11 and dropout12.
HAN_SITES = {
    ("han", "cross_attn", "Dropout_0"): (("HAN.cm_attn",), 2),  # two streams
    ("han", "self_attn", "Dropout_0"): (("HAN.self_attn",), 2),
    ("han", "Dropout_0"): (("HAN.dropout11", "HAN.dropout12"), 4),
    ("han", "ffn", "Dropout_0"): (("HAN.dropout",), 2),
    ("han", "ffn", "Dropout_1"): (("HAN.dropout2",), 2),
}
# The CMPAE Anchor's one pass is the authors' with_ca=True forward (main.py:161, :191:
# the HAN layer without and with cross-attention) plus the heads of their with_ca=False
# forward (main.py:125, JoMoLD's ranking), which reuses the no-cross-attention layer
# output (docs/fidelity.md #18): the head sites run twice.
CMPAE_SITES = {
    ("han", "cross_attn", "Dropout_0"): (("CMPAE.cm_attn",), 2),  # with cross-attention only
    ("han", "self_attn", "Dropout_0"): (("CMPAE.self_attn",), 4),  # both passes, two streams
    ("han", "Dropout_0"): (("CMPAE.dropout11", "CMPAE.dropout12"), 6),  # 2 + 1 per stream
    ("han", "ffn", "Dropout_0"): (("CMPAE.dropout",), 4),
    ("han", "ffn", "Dropout_1"): (("CMPAE.dropout2",), 4),
    ("Dropout_0",): (("CMPAE.cls_dropout",), 2),  # mixed and no-cross-attention visual tokens
    ("heads", "mlp_v2a", "Dropout_0"): (("CMPAE.v2a",), 2),
    ("heads", "mlp_a2v", "Dropout_0"): (("CMPAE.a2v",), 2),
}
REFERENCE_SITES = {
    (m, *path): (sites, 1)
    for m in ("audio", "visual")
    for path, sites in (
        (("encoder", "self_attn", "Dropout_0"), ("REF.self_attn",)),
        (("encoder", "Dropout_0"), ("REF.dropout12",)),
        (("encoder", "ffn", "Dropout_0"), ("REF.dropout",)),
        (("encoder", "ffn", "Dropout_1"), ("REF.dropout2",)),
        (("Dropout_0",), (f"REF.{m}_cls_dropout",)),
    )
}
SITES = {"HANAnchor": HAN_SITES, "CMPAEAnchor": CMPAE_SITES, "ReferenceBranch": REFERENCE_SITES}


# ----------------------------------------------------------------------------- recording


class Call(NamedTuple):
    root: str  # class of the top-level module (which Anchor, or the Reference)
    path: tuple[str, ...]
    rate: float
    drew: bool  # a mask was drawn (the output is not the input itself)
    x: object  # the tensor it was given
    y: object  # what it returned


def _root(module) -> str:
    while isinstance(module.parent, nn.Module):
        module = module.parent
    return type(module).__name__


class Recorder:
    """``with Recorder() as rec:`` records every dropout call of every flax module."""

    def __init__(self):
        self.calls: list[Call] = []

    def _intercept(self, next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(
            module, (dropout_lib.Dropout, nn.Dropout)
        ):
            return next_fun(*args, **kwargs)
        x = args[0] if args else kwargs.get("x", kwargs.get("inputs"))
        y = next_fun(*args, **kwargs)
        self.calls.append(Call(_root(module), tuple(module.path), module.rate, y is not x, x, y))
        return y

    def __enter__(self):
        self._context = nn.intercept_methods(self._intercept)
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)

    def table(self) -> dict[tuple[str, tuple[str, ...]], list[float]]:
        """``{(root, path): [rate of each call]}``."""
        out = defaultdict(list)
        for c in self.calls:
            out[(c.root, c.path)].append(c.rate)
        return dict(out)


def _expected(root: str, passes: int = 1) -> dict[tuple[str, tuple[str, ...]], list[float]]:
    """The rates each of our sites must receive: the authors' rate of the sites it stands
    for (all equal), once per call."""
    out = {}
    for path, (sites, calls) in SITES[root].items():
        rates = {AUTHORS[s].rate for s in sites}
        assert len(rates) == 1, (path, sites)  # one module may stand for equal rates only
        out[(root, path)] = [rates.pop()] * calls * passes
    return out


def _config(variant: str, small: bool = False):
    config = llp.get_config(variant)
    if small:
        config.model.d_model = config.model.ffn_dim = 16
    return config


def _inputs(b=B, t=T, seed=0):
    r = np.random.default_rng(seed)
    return (
        jnp.asarray(r.standard_normal((b, t, 128)), jnp.float32),
        jnp.asarray(r.standard_normal((b, t * 8, 2048)), jnp.float32),
        jnp.asarray(r.standard_normal((b, t, 512)), jnp.float32),
        jnp.ones((b, t), bool),
    )


def _modules(config):
    anchor, reference = step_lib.build_models(config, C)
    return [m for m in (anchor, reference) if m is not None]


# ----------------------------------------------------------------------------- the sites


def test_the_table_covers_every_site_of_the_authors():
    """Each of the authors' sites is stood for by exactly one of our module paths (so a
    site of theirs without a counterpart fails here, not silently)."""
    used = Counter(s for table in SITES.values() for sites, _ in table.values() for s in sites)
    per_modality = {"REF.self_attn", "REF.dropout12", "REF.dropout", "REF.dropout2"}  # one layer
    assert used == {s: 2 if s in per_modality else 1 for s in AUTHORS}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_dropout_site_gets_the_authors_rate(variant):
    """Training forward of each module of a configs/llp.py variant, built as the training
    builds it (registry and config): the sites that draw, and the rate each receives, are
    the table's, call for call. Traced only (``jax.eval_shape``), at the full size."""
    config = _config(variant)
    a, v2, v3, mask = _inputs()
    for module in _modules(config):
        params = jax.eval_shape(module.init, jax.random.key(0), a, v2, v3, mask)
        with Recorder() as rec:
            jax.eval_shape(
                lambda p: module.apply(
                    p, a, v2, v3, mask, train=True, rngs={"dropout": jax.random.key(1)}
                ),
                params,
            )
        root = type(module).__name__
        assert rec.table() == _expected(root), root
        assert all(c.drew for c in rec.calls), [c.path for c in rec.calls if not c.drew]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_training_step_runs_the_authors_sites(variant):
    """What the jitted training step really runs (traced): the Anchor once, the Reference
    twice (its update and the updated Reference's teacher pass, both in training mode, as
    the authors' a_model/v_model at main.py:166/177 and :187/188 under ``.train()``),
    every site drawing, at the authors' rates."""
    config = _config(variant)
    anchor, reference = step_lib.build_models(config, C)
    a, v2, v3, mask = _inputs()
    batch = dict(
        audio=a,
        video_2d=v2,
        video_3d=v3,
        mask=mask,
        video_mask=jnp.ones(B),
        label=jnp.zeros((B, C)).at[:, :3].set(1.0),
    )
    tx = step_lib.make_optimizer(config)
    key = jax.random.key(0)
    a_params = jax.eval_shape(anchor.init, key, a, v2, v3, mask)["params"]
    with_ref = reference is not None
    r_params = jax.eval_shape(reference.init, key, a, v2, v3, mask)["params"] if with_ref else {}
    state = step_lib.TrainState(
        step=jnp.zeros((), jnp.int32),
        anchor_params=a_params,
        anchor_opt=jax.eval_shape(tx.init, a_params),
        ref_params=r_params,
        ref_opt=jax.eval_shape(tx.init, r_params) if with_ref else {},
    )
    step = step_lib.make_train_step(config, anchor, reference, tx, steps_per_epoch=4)
    with Recorder() as rec:
        jax.eval_shape(step, state, batch, jnp.int32(4), key)
    expected = _expected(type(anchor).__name__)
    if with_ref:
        expected.update(_expected("ReferenceBranch", passes=2))
    assert rec.table() == expected
    assert all(c.drew for c in rec.calls)


# ----------------------------------------------------------------------------- wiring


def _small_params(module):
    a, v2, v3, mask = _inputs(t=4)
    return module.init(jax.random.key(0), a, v2, v3, mask), (a, v2, v3, mask)


def test_reference_head_dropout_feeds_what_the_authors_feed():
    """The Reference's head dropout (rate 0.5) takes the segment tokens after the class
    tokens are removed (the NCE tokens are taken before it); ``FC_prob`` reads the dropped
    tokens in both encoders, ``FC_time`` the undropped ones in the audio encoder
    (CoLeaF :462-463) and the dropped ones in the visual encoder (:532-535)."""
    model = reference_lib.build(_config("coleaf_cmpae", small=True).model, C)
    params, (a, v2, v3, mask) = _small_params(model)
    with Recorder() as rec:
        out = model.apply(params, a, v2, v3, mask, train=True, rngs={"dropout": jax.random.key(3)})
    p = params["params"]
    for m, name, time_reads_dropped in (("a", "audio", False), ("v", "visual", True)):
        (call,) = [c for c in rec.calls if c.path == (name, "Dropout_0")]
        assert call.rate == 0.5
        np.testing.assert_array_equal(call.x, out[m]["tokens"])  # tokens before the dropout
        dropped = np.asarray(call.y, np.float64)

        def lin(x, k, name=name):
            return x @ np.asarray(p[name][k]["kernel"]) + np.asarray(p[name][k]["bias"])

        seg = 1 / (1 + np.exp(-lin(dropped, "fc_prob")))
        np.testing.assert_allclose(out[m]["seg_prob"], seg, rtol=1e-5, atol=1e-6)
        time_in = dropped if time_reads_dropped else np.asarray(out[m]["tokens"], np.float64)
        logits = lin(time_in, "fc_time")
        w = np.exp(logits - logits.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        np.testing.assert_allclose(out[m]["video_prob"], (w * seg).sum(1), rtol=1e-5, atol=1e-6)


def test_cmpae_visual_dropout_feeds_what_the_authors_feed():
    """The CMPAE Anchor's visual dropout (0.5) takes the visual tokens of each head pass,
    never the audio ones, after the NCE tokens are taken: first the mixed tokens
    ``tokens_v``, then the no-cross-attention ones (CoLeaF :292-293, once in each of
    their forwards); the heads read ``(h_a, dropped h_v)``. Only that site is stochastic
    here (the others at rate 0), so the heads can be rerun deterministically."""
    cfg = _config("coleaf_cmpae", small=True).model
    cfg.dropout = cfg.cmpae_residual_dropout = 0.0
    model = registry.anchor("cmpae").build(cfg, C)
    params, (a, v2, v3, mask) = _small_params(model)
    with Recorder() as rec:
        out = model.apply(params, a, v2, v3, mask, train=True, rngs={"dropout": jax.random.key(5)})
    drawn = [c for c in rec.calls if c.drew]
    assert [(c.path, c.rate) for c in drawn] == [(("Dropout_0",), 0.5)] * 2
    mixed, noca = drawn
    np.testing.assert_array_equal(mixed.x, out["tokens_v"])
    # the no-cross-attention tokens: the same Anchor with the mix at 0 (h = h_noCA)
    no = model.clone(ca_mix=0.0).apply(params, a, v2, v3, mask)
    np.testing.assert_array_equal(noca.x, no["tokens_v"])
    assert not np.allclose(noca.x, mixed.x)
    heads = cmpae_lib.EvidentialHeads(C, cfg.d_model, 0.0, cfg.init)
    hp = {"params": params["params"]["heads"]}
    again = heads.apply(hp, out["tokens_a"], mixed.y, mask, deterministic=True)
    np.testing.assert_allclose(out["seg_prob"], again["seg_prob"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["video_prob_v"], again["modality_prob"][:, 1], rtol=1e-6)
    again = heads.apply(hp, no["tokens_a"], noca.y, mask, deterministic=True)
    np.testing.assert_allclose(out["noca_video_prob_a"], again["modality_prob"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(out["noca_video_prob_v"], again["modality_prob"][:, 1], rtol=1e-6)


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_mode_draws_no_dropout(variant):
    """In evaluation mode every site is passed through (as the authors' ``model.eval()``,
    main.py:284): no module asks for a dropout key, and none is given."""
    config = _config(variant, small=True)
    a, v2, v3, mask = _inputs(t=4)
    for module in _modules(config):
        params = module.init(jax.random.key(0), a, v2, v3, mask)
        with Recorder() as rec:
            once = module.apply(params, a, v2, v3, mask)  # no rngs: a draw would raise
        assert rec.calls and not [c.path for c in rec.calls if c.drew]
        twice = module.apply(params, a, v2, v3, mask, train=False)
        for x, y in zip(jax.tree_util.tree_leaves(once), jax.tree_util.tree_leaves(twice)):
            np.testing.assert_array_equal(x, y)


def _split(n=5, t=T, seed=1):
    a, v2, v3, _ = _inputs(b=n, t=t, seed=seed)
    return {
        "id": np.array([f"vid{i:08d}xyz" for i in range(n)]),
        "audio": np.asarray(a),
        "video_2d": np.asarray(v2),
        "video_3d": np.asarray(v3),
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_evaluation_and_parsing_need_no_dropout_key(variant, tmp_path, monkeypatch):
    """evaluate.py's predict functions and parsing.parse_videos run without a dropout key
    and give bit-identical outputs twice (the checkpoint restore is replaced by freshly
    initialised parameters: what is tested is the prediction path)."""
    config = _config(variant, small=True)
    config.eval.batch_size = 2  # several batches, the last one padded
    anchor = registry.anchor(config.model.anchor).build(config.model, C)
    data = _split()
    sample = {k: jnp.asarray(v[:1]) for k, v in data.items() if k != "id"}
    params = anchor.init(jax.random.key(0), *sample.values())["params"]
    with Recorder() as rec:  # the first call traces the jitted predict function
        first = evaluate.predict_with_config(config, anchor, params, data)
    assert rec.calls and not [c.path for c in rec.calls if c.drew]
    second = evaluate.predict_with_config(config, anchor, params, data)
    assert first.keys() == second.keys() == set(evaluate.PREDICTION_KEYS)
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
    direct = evaluate.make_predict_fn(anchor)
    batch = {k: jnp.asarray(v) for k, v in data.items() if k != "id"}
    batch["mask"] = jnp.ones(data["audio"].shape[:2], bool)
    # one batch of 5 instead of 2 + 2 + 1: another program, equal to float32 rounding
    np.testing.assert_allclose(direct(params, batch)["seg_prob"], first["seg_prob"], atol=1e-6)

    monkeypatch.setattr(runs, "restore_anchor", lambda *a, **k: (None, anchor, params, 1))
    outputs = []
    for name in ("one", "two"):
        out_dir = tmp_path / name
        records = parsing.parse_videos(
            config, str(tmp_path), str(out_dir), data=data, verbose=False
        )
        files = [(out_dir / f"events.{ext}").read_bytes() for ext in ("jsonl", "csv")]
        outputs.append((records, files))
    assert len(outputs[0][0]) > 10 and outputs[0] == outputs[1]
