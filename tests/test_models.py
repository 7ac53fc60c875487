"""Flax modules: shapes, masks, exact frame pooling, what the Anchor contains."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax.models import HANAnchor, ReferenceBranch, VisualEmbedding, dropout, mmil_pool

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
