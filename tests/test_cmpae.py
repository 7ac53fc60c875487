"""The CMPAE Anchor: evidential maths, inference fusion, mutual learning, JoMoLD denoising."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax.models.cmpae import CMPAEAnchor, dirichlet_presence, evidence
from coleaf_jax.training import losses, objectives
from coleaf_jax.training.noise_ratios import estimate_noise_ratios, load_noise_ratios
from configs import llp
from tests.test_losses import _bce_np, _differ, _nce_loop


def test_evidence_and_dirichlet_hand_values():
    assert float(evidence(jnp.array(0.0))) == pytest.approx(1.0)
    assert float(evidence(jnp.array(50.0))) == pytest.approx(np.exp(10 / 0.8), rel=1e-5)  # clipped
    p, u = dirichlet_presence(jnp.array([[0.0, 0.0], [0.8, -0.8], [100.0, -100.0]]))
    # α = e + 1: (2, 2) -> p 0.5, u 2/4;  (e^1 + 1, e^-1 + 1);  (e^12.5 + 1, e^-12.5 + 1)
    a0, a1 = np.exp(1) + 1, np.exp(-1) + 1
    np.testing.assert_allclose(
        p, [0.5, a0 / (a0 + a1), (np.exp(12.5) + 1) / (np.exp(12.5) + np.exp(-12.5) + 2)], rtol=1e-5
    )
    np.testing.assert_allclose(
        u, [0.5, 2 / (a0 + a1), 2 / (np.exp(12.5) + np.exp(-12.5) + 2)], rtol=1e-5
    )


def _inputs(b=2, t=4):
    r = np.random.default_rng(0)
    return (
        jnp.asarray(r.standard_normal((b, t, 128)), jnp.float32),
        jnp.asarray(r.standard_normal((b, t * 8, 2048)), jnp.float32),
        jnp.asarray(r.standard_normal((b, t, 512)), jnp.float32),
    )


def test_cmpae_outputs_and_inference_fusion():
    a, v2, v3 = _inputs()
    kw = dict(
        num_classes=5, d_model=16, ffn_dim=16, dropout=0.0, visual_dropout=0.0, residual_dropout=0.0
    )
    model = CMPAEAnchor(**kw)
    params = model.init(jax.random.key(0), a, v2, v3)
    train_out = model.apply(params, a, v2, v3, train=True, rngs={"dropout": jax.random.key(1)})
    assert train_out["seg_prob"].shape == (2, 4, 2, 5) and train_out["global_unc"].shape == (2,)
    assert train_out["video_unc"].shape == (2, 2, 5)
    # inference_mix = 1 keeps only the mixed (training) pass, 0 only the no-cross-attention pass.
    only_mixed = CMPAEAnchor(**kw, inference_mix=1.0).apply(params, a, v2, v3)
    np.testing.assert_allclose(only_mixed["video_prob_a"], train_out["video_prob_a"], atol=1e-6)
    only_noca = CMPAEAnchor(**kw, inference_mix=0.0).apply(params, a, v2, v3)
    np.testing.assert_allclose(only_noca["video_prob_v"], train_out["noca_video_prob_v"], atol=1e-6)
    fused = model.apply(params, a, v2, v3)
    np.testing.assert_allclose(
        fused["seg_prob"], 0.7 * only_mixed["seg_prob"] + 0.3 * only_noca["seg_prob"], atol=1e-6
    )


def test_mutual_learning_alternates_direction():
    r = np.random.default_rng(1)
    p_a, p_v, p_g = (jnp.asarray(r.random((3, 4)), jnp.float32) for _ in range(3))
    u = jnp.full((3, 4), 0.3)
    y = jnp.asarray(r.random((3, 4)) < 0.5, jnp.float32)
    u_glob = jnp.array([0.5, 0.95, 0.99])
    f = lambda pa, pv, pg, o: losses.uncertainty_mutual_learning(  # noqa: E731
        pa, pv, u, u, pg, u_glob, y, jnp.ones(3), o
    )
    g1 = jax.grad(f, argnums=(0, 1, 2))(p_a, p_v, p_g, 1.0)
    assert float(jnp.abs(g1[0]).max()) == 0 and float(jnp.abs(g1[1]).max()) == 0
    assert float(jnp.abs(g1[2]).max()) > 0  # o = 1: the global branch learns
    g0 = jax.grad(f, argnums=(0, 1, 2))(p_a, p_v, p_g, 0.0)
    assert float(jnp.abs(g0[2]).max()) == 0 and float(jnp.abs(g0[0]).max()) > 0
    # Value on one hand-computed element: o = 1, class positive, modality a the larger.
    pa, pv, pg = jnp.array([[0.9]]), jnp.array([[0.2]]), jnp.array([[0.5]])
    val = losses.uncertainty_mutual_learning(
        pa,
        pv,
        jnp.array([[0.1]]),
        jnp.array([[0.4]]),
        pg,
        jnp.array([0.5]),
        jnp.ones((1, 1)),
        jnp.ones(1),
        1.0,
    )
    assert float(val) == pytest.approx(0.9 * (1 - 0.1) * (0.5 - 0.9) ** 2, rel=1e-5)


def test_mutual_learning_weights_carry_gradients():
    """As the authors' mutual_loss.py: only the target p is detached; g = max(u_glob, .9),
    u_max and u_mean carry gradients (the (1 - u) factor presses on the evidence)."""
    r = np.random.default_rng(3)
    p_a, p_v, p_g = (jnp.asarray(r.random((3, 4)), jnp.float32) for _ in range(3))
    u_a, u_v = (jnp.asarray(r.uniform(0.1, 0.9, (3, 4)), jnp.float32) for _ in range(2))
    y = jnp.asarray([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
    u_glob = jnp.array([0.5, 0.95, 0.99])
    for o in (0.0, 1.0):
        g_ua, g_uv, g_ug = jax.grad(
            lambda a, v, gl: losses.uncertainty_mutual_learning(
                p_a, p_v, a, v, p_g, gl, y, jnp.ones(3), o
            ),
            argnums=(0, 1, 2),
        )(u_a, u_v, u_glob)
        assert float(jnp.abs(g_ua).max()) > 0 and float(jnp.abs(g_uv).max()) > 0
        assert float(g_ug[0]) == 0.0  # clamped at 0.9 there
        assert float(jnp.abs(g_ug[1:]).min()) > 0


def test_jomold_denoise_hand_batch():
    # 5 videos all labelled class 0 for both modalities; r^v = 0.4 -> n = 2 per class.
    y_a = jnp.ones((5, 2))
    y_v = jnp.ones((5, 2))
    # audio loss small (p^a high) for videos 0, 1, 2; visual loss large (p^v low) for 1, 2, 4.
    p_a = jnp.array([[0.99, 0.5], [0.98, 0.5], [0.97, 0.5], [0.3, 0.5], [0.2, 0.5]])
    p_v = jnp.array([[0.9, 0.5], [0.1, 0.5], [0.2, 0.5], [0.8, 0.5], [0.05, 0.5]])
    # Visual n=2: smallest audio losses {0, 1}; largest visual losses {4, 1} -> drop video 1 only.
    ra, rv = jnp.array([0.0, 0.0]), jnp.array([0.4, 0.0])
    new_a, new_v = losses.jomold_denoise(p_a, p_v, y_a, y_v, ra, rv, jnp.ones(5))
    np.testing.assert_array_equal(np.asarray(new_v[:, 0]), [1, 0, 1, 1, 1])
    np.testing.assert_array_equal(np.asarray(new_v[:, 1]), 1)
    np.testing.assert_array_equal(np.asarray(new_a), 1)
    # Audio with r^a = 0.4: largest audio losses {4, 3}, smallest visual losses {0, 3} -> video 3.
    new_a, _ = losses.jomold_denoise(p_a, p_v, y_a, y_v, rv, ra, jnp.ones(5))
    np.testing.assert_array_equal(np.asarray(new_a[:, 0]), [1, 1, 1, 0, 1])
    # Annealing scale 0 drops nothing; a padded video is never ranked nor dropped.
    _, v0 = losses.jomold_denoise(p_a, p_v, y_a, y_v, ra, rv, jnp.ones(5), scale=0.0)
    assert float(v0.min()) == 1.0
    _, vpad = losses.jomold_denoise(p_a, p_v, y_a, y_v, ra, rv, jnp.array([1, 0, 1, 1, 1.0]))
    # 4 real positives -> n = floor(1.6) = 1: smallest audio loss {0}, largest visual {4} -> none.
    np.testing.assert_array_equal(np.asarray(vpad[:, 0]), 1)


def test_jomold_ties_and_exact_counts():
    """Ranks follow the authors' ascending torch.sort: among equal losses the 'largest n'
    are the last n positions; counts are floor(r·n) in float64, as their float64 ratios."""
    y = jnp.ones((4, 1))
    p_a = jnp.full((4, 1), 0.9)  # equal audio losses
    p_v = jnp.full((4, 1), 0.3)  # equal visual losses
    ratio = np.array([0.5])  # n = 2
    _, new_v = losses.jomold_denoise(p_a, p_v, y, y, np.array([0.0]), ratio, jnp.ones(4))
    # smallest audio: positions {0, 1}; largest visual: the last two {2, 3} -> none dropped
    np.testing.assert_array_equal(np.asarray(new_v[:, 0]), 1)
    r_a, r_v = load_noise_ratios("llp", 25)
    n = np.arange(129)
    for r in (r_a, r_v):
        got = losses.drop_counts(r, jnp.asarray(np.tile(n, (25, 1)).T), 1.0, max_count=128)
        np.testing.assert_array_equal(np.asarray(got), np.floor(r[None] * n[:, None]))
    # float32 arithmetic would differ (e.g. Clapping's audio r = 2/41 at n = 41: 1 instead of 2),
    # the float64 table is what makes it exact.
    f32 = np.floor(r_a.astype(np.float32)[None] * n[:, None].astype(np.float32))
    assert f32[41, 24] == 1 and np.floor(r_a[24] * 41) == 2
    assert int(losses.drop_counts(r_a, jnp.full(25, 41), 1.0, max_count=128)[24]) == 2


def test_noise_ratio_table_and_estimate(tmp_path):
    r_a, r_v = load_noise_ratios("llp", 25)
    assert r_v[0] == pytest.approx(0.994, abs=1e-3) and r_a.shape == (25,)
    probs_a = np.array([[0.9, 0.9], [0.2, 0.9], [0.9, 0.1]])
    probs_v = np.array([[0.1, 0.9], [0.9, 0.9], [0.9, 0.1]])
    labels = np.array([[1, 1], [1, 1], [1, 0]])
    est_a, est_v = estimate_noise_ratios(probs_a, probs_v, labels)
    np.testing.assert_allclose(est_v, [1 / 3, 0.0])  # video 0: heard, not seen
    np.testing.assert_allclose(est_a, [1 / 3, 0.0])  # video 1: seen, not heard
    np.savez(tmp_path / "t.npz", audio=est_a, visual=est_v)
    with pytest.raises(ValueError, match="must be 25 ratios"):
        load_noise_ratios(str(tmp_path / "t.npz"), 25)
    with pytest.raises(FileNotFoundError):
        load_noise_ratios(str(tmp_path / "missing.npz"), 25)


# -- every argument matters: asymmetric audio / visual inputs against loop references ----


def _mutual_loop(p_a, p_v, u_a, u_v, p_g, u_g, y, vm, o):
    """``mutual_loss.py`` (a36a153) element by element: per class the more probable
    modality for a positive (audio on a tie), the modality mean for a negative."""
    total, count = 0.0, 0
    for b, c in np.ndindex(*p_a.shape):
        if not vm[b]:
            continue
        g = max(u_g[b], 0.9)
        pm, um = (p_a[b, c], u_a[b, c]) if p_a[b, c] >= p_v[b, c] else (p_v[b, c], u_v[b, c])
        mean_p, mean_u = (p_a[b, c] + p_v[b, c]) / 2, (u_a[b, c] + u_v[b, c]) / 2

        def delta(t, u):
            return (o * g + (1 - o) * (1 - g)) * (1 - u) * (p_g[b, c] - t) ** 2

        total += y[b, c] * delta(pm, um) + (1 - y[b, c]) * delta(mean_p, mean_u)
        count += 1
    return total / count


def _mutual_case(seed=4, b=4, c=5):
    r = np.random.default_rng(seed)
    p_a, p_v, p_g = (r.uniform(0.05, 0.95, (b, c)).astype(np.float32) for _ in range(3))
    u_a, u_v = (r.uniform(0.1, 0.9, (b, c)).astype(np.float32) for _ in range(2))
    u_g = np.array([0.5, 0.93, 0.97, 0.99], np.float32)[:b]
    y = (r.random((b, c)) < 0.5).astype(np.float32)
    return p_a, p_v, u_a, u_v, p_g, u_g, y


@pytest.mark.parametrize("parity", [0.0, 1.0])
def test_mutual_learning_equals_loop_reference(parity):
    p_a, p_v, u_a, u_v, p_g, u_g, y = _mutual_case()
    vm = np.array([1, 1, 0, 1], np.float32)  # a padding video does not count
    got = losses.uncertainty_mutual_learning(p_a, p_v, u_a, u_v, p_g, u_g, y, vm, parity)
    want = _mutual_loop(p_a, p_v, u_a, u_v, p_g, u_g, y, vm, parity)
    assert float(got) == pytest.approx(want, rel=1e-5)
    _differ(want, _mutual_loop(p_a, p_v, u_v, u_a, p_g, u_g, y, vm, parity))  # u swapped
    _differ(want, _mutual_loop(p_v, p_a, u_a, u_v, p_g, u_g, y, vm, parity))  # p swapped
    _differ(want, _mutual_loop(p_a, p_v, u_a, u_v, p_g, u_g, 1 - y, vm, parity))


def test_cmpae_backbone_equals_its_terms_recomputed():
    """``Σ w_i·term_i`` with non-default weights, τ and ε: the audio BCE on ``ȳ_a``, the
    visual on ``ȳ_v``, the global on ``y``; the NCE with the audio tokens as queries and
    the visual as keys (gradient through both); mutual learning as ``mutual_loss.py``."""
    p_a, p_v, u_a, u_v, p_g, u_g, y = _mutual_case(seed=6)
    r = np.random.default_rng(7)
    tok_a, tok_v = r.standard_normal((2, 4, 6, 8)).astype(np.float32)
    out = {
        "video_prob_a": p_a,
        "video_prob_v": p_v,
        "global_prob": p_g,
        "video_unc": np.stack([u_a, u_v], axis=1),
        "global_unc": u_g,
        "tokens_a": tok_a,
        "tokens_v": tok_v,
    }
    y_a = y * (r.random(y.shape) < 0.7)  # denoised
    y_v = np.where(y > 0.5, 0.95, 0.05).astype(np.float32)
    mask = np.ones((4, 6), bool)
    mask[2, 4:] = False
    vm = np.ones(4, np.float32)
    lc = llp.get_config("cmpae").loss
    lc.cmpae_weights = (1.5, 0.7, 2.5, 0.3, 1.9)
    lc.nce_temperature, lc.nce_smoothing = 0.3, 0.15
    labels = objectives.Labels(y, y_a, y_v, mask, vm, jnp.float32(1.0))
    total, terms = objectives.cmpae_backbone(out, labels, lc)
    want = {
        "bce_a": _bce_np(p_a, y_a).mean(),
        "bce_v": _bce_np(p_v, y_v).mean(),
        "bce_global": _bce_np(p_g, y).mean(),
        "nce_av": _nce_loop(tok_a, tok_v, np.ones(4), mask, 0.3, 0.15, "expected"),
        "mutual": _mutual_loop(p_a, p_v, u_a, u_v, p_g, u_g, y, vm, 1.0),
    }
    for k, v in want.items():
        assert float(terms[k]) == pytest.approx(v, rel=2e-5), k
    weighted = zip(lc.cmpae_weights, ("bce_a", "bce_v", "bce_global", "nce_av", "mutual"))
    assert float(total) == pytest.approx(sum(w * want[k] for w, k in weighted), rel=2e-5)
    # the inputs tell the arguments apart
    _differ(want["nce_av"], _nce_loop(tok_v, tok_a, np.ones(4), mask, 0.3, 0.15, "expected"))
    _differ(1.5 * want["bce_a"] + 0.7 * want["bce_v"], 1.5 * want["bce_v"] + 0.7 * want["bce_a"])
    _differ(want["bce_a"], _bce_np(p_a, y).mean())
    # CMPAE's own NCE trains both token streams (no stop-gradient on the queries)
    grads = jax.grad(
        lambda a, v: objectives.cmpae_backbone(dict(out, tokens_a=a, tokens_v=v), labels, lc)[0],
        argnums=(0, 1),
    )(jnp.asarray(tok_a), jnp.asarray(tok_v))
    assert all(float(jnp.abs(g).max()) > 0 for g in grads)


def _authors_jomold(p_a, p_v, pa, pv, ratio_a, ratio_v):
    """main.py:124-159 (a36a153) in numpy: sort each modality's losses ascending, keep
    the positives of the modality being denoised, drop where both picks agree."""
    pa, pv = pa.astype(np.float64).copy(), pv.astype(np.float64).copy()
    loss_a, loss_v = _bce_np(p_a, pa), _bce_np(p_v, pv)
    sort_a, sort_v = np.argsort(loss_a, 0, kind="stable"), np.argsort(loss_v, 0, kind="stable")
    pos_a, pos_v = pa > 0.5, pv > 0.5
    for i in range(pa.shape[1]):
        n_a = int(np.float64(ratio_a[i]) * pos_a[:, i].sum())
        n_v = int(np.float64(ratio_v[i]) * pos_v[:, i].sum())
        if n_v > 0:
            small_a = sort_a[pos_v[sort_a[:, i], i], i][:n_v]
            large_v = sort_v[pos_v[sort_v[:, i], i], i][-n_v:]
            pv[np.intersect1d(small_a, large_v), i] = 0
        if n_a > 0:
            large_a = sort_a[pos_a[sort_a[:, i], i], i][-n_a:]
            small_v = sort_v[pos_a[sort_v[:, i], i], i][:n_a]
            pa[np.intersect1d(large_a, small_v), i] = 0
    return pa, pv


def test_jomold_equals_the_authors_loop_with_different_modality_labels():
    """Audio and visual labels with different positives (binary / soft 0.95-0.05), other
    ratios per class and modality, distinct losses (no ties): the denoised labels are the
    authors' loop's."""
    r = np.random.default_rng(8)
    b, c = 16, 6
    p_a, p_v = (r.uniform(0.02, 0.98, (b, c)).astype(np.float32) for _ in range(2))
    y_a = (r.random((b, c)) < 0.6).astype(np.float32)
    y_v = np.where(r.random((b, c)) < 0.6, 0.95, 0.05).astype(np.float32)
    ratio_a, ratio_v = r.uniform(0.2, 0.9, c), r.uniform(0.2, 0.9, c)
    got_a, got_v = losses.jomold_denoise(p_a, p_v, y_a, y_v, ratio_a, ratio_v, jnp.ones(b))
    want_a, want_v = _authors_jomold(p_a, p_v, y_a, y_v, ratio_a, ratio_v)
    np.testing.assert_allclose(got_a, want_a, rtol=1e-6)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-6)
    assert (want_a < y_a).sum() >= 3 and (want_v < y_v - 0.5).sum() >= 3  # both drop some
    # the inputs tell the modalities apart
    _differ(want_v, _authors_jomold(p_v, p_a, y_a, y_v, ratio_a, ratio_v)[1])
    _differ(want_v, _authors_jomold(p_a, p_v, y_a, y_v, ratio_v, ratio_a)[1])
    _differ(want_a, _authors_jomold(p_a, p_v, y_a, y_v, ratio_v, ratio_a)[0])
