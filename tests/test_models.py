"""Flax modules: shapes, masks, exact frame pooling, what the Anchor contains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax.models import (
    HANAnchor,
    HANLayer,
    ReferenceBranch,
    VisualEmbedding,
    dropout,
    mmil_pool,
)

D = 16
KW = dict(num_classes=5, d_model=D, ffn_dim=D)


def _inputs(b=2, t=4, frames=8, seed=0):
    r = np.random.default_rng(seed)
    return (
        jnp.asarray(r.standard_normal((b, t, 128)), jnp.float32),
        jnp.asarray(r.standard_normal((b, t * frames, 2048)), jnp.float32),
        jnp.asarray(r.standard_normal((b, t, 512)), jnp.float32),
    )


def test_anchor_shapes_and_probabilities():
    a, v2, v3 = _inputs()
    model = HANAnchor(**KW)
    params = model.init(jax.random.key(0), a, v2, v3)
    out = model.apply(params, a, v2, v3)
    assert out["seg_prob"].shape == (2, 4, 2, 5)
    for k in ("video_prob", "video_prob_a", "video_prob_v"):
        assert out[k].shape == (2, 5)
        assert bool(jnp.all((out[k] >= 0) & (out[k] <= 1)))
    assert out["tokens_a"].shape == (2, 4, D)
    # The Anchor holds no class tokens and nothing of the Reference.
    names = jax.tree_util.keystr(params)
    assert "class_tokens" not in names and "audio" not in params["params"]


def test_frames_pooled_before_projection_equal_raw_frames():
    a, v2, v3 = _inputs()
    model = HANAnchor(**KW)
    params = model.init(jax.random.key(0), a, v2, v3)
    raw = model.apply(params, a, v2, v3)
    pooled = model.apply(params, a, v2.reshape(2, 4, 8, 2048).mean(2), v3)
    np.testing.assert_allclose(raw["seg_prob"], pooled["seg_prob"], atol=1e-5)
    # With an activation (CMPAE's ELU) the average does not commute: frames are projected first.
    emb = VisualEmbedding(D, activation=jax.nn.elu)
    p = emb.init(jax.random.key(1), v2, v3)
    x = emb.apply(p, v2, v3)
    w = p["params"]["video_2d"]
    expected = jax.nn.elu(v2 @ w["kernel"] + w["bias"]).reshape(2, 4, 8, D).mean(2)
    fused = p["params"]["fusion"]
    v3e = jax.nn.elu(v3 @ p["params"]["video_3d"]["kernel"] + p["params"]["video_3d"]["bias"])
    ref = jax.nn.elu(jnp.concatenate([expected, v3e], -1) @ fused["kernel"] + fused["bias"])
    np.testing.assert_allclose(x, ref, atol=1e-5)


def test_padding_does_not_change_valid_outputs():
    a, v2, v3 = _inputs(b=1, t=4)
    pad = lambda x, n: jnp.concatenate([x, jnp.full((1, n) + x.shape[2:], 3.0)], 1)  # noqa: E731
    mask = jnp.array([[1, 1, 1, 1, 0, 0]], bool)
    for model in (HANAnchor(**KW), ReferenceBranch(**KW)):
        params = model.init(jax.random.key(0), a, v2, v3)
        short = model.apply(params, a, v2, v3)
        long = model.apply(params, pad(a, 2), pad(v2, 16), pad(v3, 2), mask)
        flat_s, flat_l = jax.tree_util.tree_leaves_with_path(short), jax.tree_util.tree_leaves(long)
        for (path, s), p in zip(flat_s, flat_l):
            if s.ndim >= 2 and s.shape[1] == 4 and p.shape[1] == 6:
                p = p[:, :4]  # segment-level outputs: compare the valid part
            np.testing.assert_allclose(s, p, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_mmil_pool_hand_case():
    seg = jnp.array([[[[0.2], [0.6]], [[0.8], [0.4]]]])  # (1, T=2, M=2, C=1)
    zeros = jnp.zeros_like(seg)
    out = mmil_pool(seg, zeros, zeros, jnp.ones((1, 2)))
    # uniform over T and M: p^a = mean_t P[:, 0] = 0.5, p^v = 0.5, p = mean = 0.5
    np.testing.assert_allclose(out["modality_prob"][0, :, 0], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out["video_prob"][0, 0], 0.5, rtol=1e-6)
    masked = mmil_pool(seg, zeros, zeros, jnp.array([[1, 0]]))
    np.testing.assert_allclose(masked["modality_prob"][0, :, 0], [0.2, 0.6], rtol=1e-6)


def test_reference_class_tokens_switch():
    a, v2, v3 = _inputs()
    with_tokens = ReferenceBranch(**KW)
    p = with_tokens.init(jax.random.key(0), a, v2, v3)
    out = with_tokens.apply(p, a, v2, v3)
    assert p["params"]["audio"]["class_tokens"].shape == (5, D)
    assert float(jnp.abs(p["params"]["audio"]["class_tokens"]).max()) == 0.0  # zero init
    assert out["a"]["class_prob"].shape == (2, 5) and out["v"]["seg_prob"].shape == (2, 4, 5)
    without = ReferenceBranch(**KW, class_tokens=False)
    p2 = without.init(jax.random.key(0), a, v2, v3)
    assert (
        "class_tokens" not in p2["params"]["audio"]
        and "class_prob" not in without.apply(p2, a, v2, v3)["a"]
    )


def test_dropout_needs_a_key_only_in_training():
    a, v2, v3 = _inputs()
    model = HANAnchor(**KW)
    params = model.init(jax.random.key(0), a, v2, v3)
    x1 = model.apply(params, a, v2, v3, train=True, rngs={"dropout": jax.random.key(1)})
    x2 = model.apply(params, a, v2, v3, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(x1["tokens_a"], x2["tokens_a"])
    with pytest.raises(Exception):  # noqa: B017 -- flax's error for a missing dropout rng
        model.apply(params, a, v2, v3, train=True)


# -- dropout masks from the counter-based hash (coleaf_jax/models/dropout.py) -----------


def _masks(keep, shape, keys):
    return np.stack([np.asarray(dropout.keep_mask(k, keep, shape)) for k in keys])


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
def test_dropout_masks_keep_the_right_share_independently(rate):
    """Keep rate within 4.5 standard errors; neighbouring elements, examples (keys) and
    call sites (keys folded as make_rng folds them) independent: their joint keep rate
    is keep² within 4.5 standard errors, and no byte pattern repeats."""
    keep, n = 1.0 - rate, 1 << 18
    keys = [jax.random.fold_in(jax.random.key(7), i) for i in range(4)]
    m = _masks(keep, (n,), keys).astype(np.float64)  # (4 keys, n)
    tol = lambda p, count: 4.5 * np.sqrt(p * (1 - p) / count)  # noqa: E731
    assert abs(m.mean() - keep) < tol(keep, m.size)
    both = keep * keep
    assert abs((m[:, 1:] * m[:, :-1]).mean() - both) < tol(both, m[:, 1:].size)  # neighbours
    assert abs((m[0] * m[1]).mean() - both) < tol(both, n)  # two examples' keys
    assert abs((m[2] * m[3]).mean() - both) < tol(both, n)
    # strides: element i and i + 2^k (a weak hash shows structure at powers of two)
    for s in (2, 16, 256, 4096):
        assert abs((m[0, s:] * m[0, :-s]).mean() - both) < tol(both, n - s), s
    # per-row keep rates of a (T, D) tensor do not drift along the row or the column
    grid = m[0].reshape(512, 512)
    for axis in (0, 1):
        rates = grid.mean(axis=axis)
        assert np.abs(rates - keep).max() < 5.5 * np.sqrt(keep * (1 - keep) / 512)


def test_dropout_module_scales_and_depends_only_on_its_key():
    x = jnp.ones((3, 10, 16))
    layer = dropout.Dropout(0.25)
    assert (layer.apply({}, x, deterministic=True) == x).all()
    y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    values = set(np.unique(np.asarray(y)).tolist())
    assert values == {0.0, float(np.float32(1.0) / np.float32(0.75))}
    again = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert (y == again).all() and not (y == other).all()
    # the mask of one example does not depend on the batch it is applied in (vmap)
    keys = jax.random.split(jax.random.key(3), 3)
    one = lambda xi, k: layer.apply({}, xi, deterministic=False, rngs={"dropout": k})  # noqa: E731
    batched = jax.vmap(one)(x, keys)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], one(x[i], keys[i]))
    with pytest.raises(ValueError, match=r"expected a value in \[0, 1\)"):
        dropout.Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": keys[0]})


# -- asymmetric audio / visual inputs: each stream from its own inputs -------------------


def _embedded(seed=5, b=2, t=4):
    r = np.random.default_rng(seed)
    x_a, x_v = (jnp.asarray(r.standard_normal((b, t, D)), jnp.float32) for _ in range(2))
    return x_a, x_v, jnp.ones((b, t), bool)


@pytest.mark.parametrize("cross", [True, False])
def test_han_layer_streams_are_computed_from_the_inputs(cross):
    """One set of weights for both streams, each from the layer's inputs (``h_v`` from
    ``(x_v, x_a)``, not from ``h_a``): exchanging the inputs exchanges the outputs; the
    cross term is the only way the other stream enters."""
    x_a, x_v, mask = _embedded()
    layer = HANLayer(D, D, 0.1)
    p = layer.init(jax.random.key(0), x_a, x_v, mask, deterministic=True)
    run = lambda a, v: layer.apply(p, a, v, mask, deterministic=True, cross=cross)  # noqa: E731
    h_a, h_v = run(x_a, x_v)
    g_a, g_v = run(x_v, x_a)
    np.testing.assert_allclose(g_a, h_v, atol=1e-6)
    np.testing.assert_allclose(g_v, h_a, atol=1e-6)
    assert not np.allclose(h_a, h_v, atol=1e-3)
    other_a, _ = run(x_a, x_v[::-1])  # another visual input
    assert np.allclose(other_a, h_a, atol=1e-6) != cross


def test_reference_encoders_see_only_their_modality():
    a, v2, v3 = _inputs()
    a2, v22, v32 = _inputs(seed=1)
    model = ReferenceBranch(**KW)
    p = model.init(jax.random.key(0), a, v2, v3)
    # away from the initial LayerNorm (γ = 1, β = 0), whose class-token means are all 0
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    p = tree.unflatten([x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    base = model.apply(p, a, v2, v3)
    new_visual = model.apply(p, a, v22, v32)
    new_audio = model.apply(p, a2, v2, v3)
    for k in base["a"]:
        np.testing.assert_array_equal(new_visual["a"][k], base["a"][k])
        np.testing.assert_array_equal(new_audio["v"][k], base["v"][k])
        assert not np.allclose(new_audio["a"][k], base["a"][k])
        assert not np.allclose(new_visual["v"][k], base["v"][k])


def _mmil_loop(seg, time_logits, mod_logits, mask):
    """HAN's attentive MMIL pooling (HAN net_audiovisual.py:119-129), per video and class."""
    b, t, m, c = seg.shape
    video, modality = np.zeros((b, c)), np.zeros((b, m, c))
    for i, k in np.ndindex(b, c):
        valid = np.flatnonzero(mask[i])
        for j in range(m):
            w_t = np.exp(time_logits[i, valid, j, k])
            w_t /= w_t.sum()
            modality[i, j, k] = (w_t * seg[i, valid, j, k]).sum()
            w_m = np.exp(mod_logits[i, valid, :, k])
            w_m = w_m[:, j] / w_m.sum(1)
            video[i, k] += (w_t * w_m * seg[i, valid, j, k]).sum()
    return video, modality


def test_mmil_pool_equals_loop_reference():
    r = np.random.default_rng(6)
    seg = r.uniform(0.05, 0.95, (3, 5, 2, 4))
    time_logits, mod_logits = r.standard_normal((2, 3, 5, 2, 4))
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    out = mmil_pool(*(jnp.asarray(x, jnp.float32) for x in (seg, time_logits, mod_logits)), mask)
    video, modality = _mmil_loop(seg, time_logits, mod_logits, mask)
    np.testing.assert_allclose(out["video_prob"], video, rtol=1e-5)
    np.testing.assert_allclose(out["modality_prob"], modality, rtol=1e-5)
    assert not np.allclose(modality[:, 0], modality[:, 1], rtol=1e-2)


def test_han_anchor_modality_outputs_from_their_own_stream():
    """``p^a`` pools the audio row of the MMIL heads over ``h_a``, ``p^v`` the visual row
    over ``h_v`` (recomputed here from the tokens and the head weights)."""
    a, v2, v3 = _inputs()
    model = HANAnchor(**KW)
    params = model.init(jax.random.key(0), a, v2, v3)
    out = model.apply(params, a, v2, v3)
    head = params["params"]["mmil"]
    h = np.stack([out["tokens_a"], out["tokens_v"]], axis=2).astype(np.float64)
    lin = lambda k: h @ np.asarray(head[k]["kernel"]) + np.asarray(head[k]["bias"])  # noqa: E731
    seg = 1 / (1 + np.exp(-lin("fc_prob")))
    video, modality = _mmil_loop(seg, lin("fc_time"), lin("fc_mod"), np.ones((2, 4), bool))
    np.testing.assert_allclose(out["seg_prob"], seg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["video_prob"], video, rtol=1e-5)
    np.testing.assert_allclose(out["video_prob_a"], modality[:, 0], rtol=1e-5)
    np.testing.assert_allclose(out["video_prob_v"], modality[:, 1], rtol=1e-5)
    assert not np.allclose(modality[:, 0], modality[:, 1], rtol=1e-3)
