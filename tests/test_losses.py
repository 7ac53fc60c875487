"""Losses of docs/method.md §4-§6: values on hand-made cases, loop references, no teacher gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax.training import losses


def test_bce_clamps_and_averages():
    p = jnp.array([[1.0, 0.0], [0.5, 0.25]])
    y = jnp.array([[1.0, 1.0], [0.0, 1.0]])
    vm = jnp.ones(2)
    expected = np.mean([-np.log(1 - 1e-7), -np.log(1e-7), -np.log(0.5), -np.log(0.25)])
    assert float(losses.bce(p, y, vm)) == pytest.approx(expected, rel=1e-5)
    # A padded video does not count.
    assert float(losses.bce(p, y, jnp.array([1.0, 0.0]))) == pytest.approx(
        np.mean([-np.log(1 - 1e-7), -np.log(1e-7)]), rel=1e-5
    )


def test_modality_labels_smooth_visual_only():
    y = jnp.array([[1.0, 0.0]])
    y_a, y_v = losses.modality_labels(y)
    np.testing.assert_allclose(y_a, [[1, 0]])
    np.testing.assert_allclose(y_v, [[0.95, 0.05]])


def _authors_asl(p, y, clip=0.05, eps=1e-8):
    """The authors' AsymmetricLoss.forward (utils/eval_metrics.py, a36a153) in numpy."""
    xs_pos, xs_neg = p, np.minimum(1 - p + clip, 1.0)
    loss = y * np.log(np.maximum(xs_pos, eps)) + (1 - y) * np.log(np.maximum(xs_neg, eps))
    pt = xs_pos * y + xs_neg * (1 - y)
    return -(loss * (1 - pt) ** (1.0 * y + 1.0 * (1 - y))).sum()


def test_asymmetric_loss_value_and_constant_focusing():
    p = jnp.array([[0.8, 0.3]])
    y = jnp.array([[1.0, 0.0]])
    pn = min(1 - 0.3 + 0.05, 1.0)
    expected = -(np.log(0.8) * 0.2 + np.log(pn) * (1 - pn))
    assert float(losses.asymmetric_loss(p, y, jnp.ones(1))) == pytest.approx(expected, rel=1e-5)
    # d/dp of -log(p)·sg(1-p) is -(1-p)/p: the focusing factor carries no gradient.
    g = jax.grad(lambda q: losses.asymmetric_loss(q, y, jnp.ones(1)))(p)
    assert float(g[0, 0]) == pytest.approx(-0.2 / 0.8, rel=1e-5)


def test_asymmetric_loss_soft_labels_as_the_authors():
    """One focusing weight (1 - p_t), p_t = p·y + p⁻·(1 - y): with the soft visual targets
    the loss equals the authors' and its fixed points are theirs (y = .95 -> p = .9975,
    y = .05 -> p = .0525), not the per-side form's (.837 / .213)."""
    r = np.random.default_rng(0)
    p = r.uniform(0.01, 0.99, (4, 6)).astype(np.float32)
    y = np.where(r.random((4, 6)) < 0.4, 0.95, 0.05).astype(np.float32)
    got = losses.asymmetric_loss(jnp.asarray(p), jnp.asarray(y), jnp.ones(4))
    assert float(got) == pytest.approx(
        _authors_asl(p.astype(np.float64), y.astype(np.float64)), rel=1e-5
    )
    grad = jax.grad(lambda q, t: losses.asymmetric_loss(q, t, jnp.ones(1)))
    for target, fixed in ((0.95, 0.9975), (0.05, 0.0525)):
        assert abs(float(grad(jnp.array([[fixed]]), jnp.array([[target]]))[0, 0])) < 1e-3
        away = 0.5 * (fixed + 0.5)  # halfway to 0.5: not a fixed point
        assert abs(float(grad(jnp.array([[away]]), jnp.array([[target]]))[0, 0])) > 1e-2


def test_event_aware_weights_hand_case():
    # video 0: audio-only {0}, av {1} -> w_a = 1/2, w_v = 0/1 = 0
    # video 1: nothing -> 0, 0;  video 2: all unaligned (ao {0}, vo {1}) -> 1, 1
    q_a = jnp.array([[0.9, 0.9, 0.1], [0.1, 0.1, 0.1], [0.9, 0.2, 0.1]])
    q_v = jnp.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.1], [0.1, 0.8, 0.1]])
    w_a, w_v = losses.event_aware_weights(q_a, q_v)
    np.testing.assert_allclose(w_a, [0.5, 0.0, 1.0])
    np.testing.assert_allclose(w_v, [0.0, 0.0, 1.0])


def _nce_loop(u, z, w, mask, tau, eps, form):
    """Per-video, per-segment loop of docs/method.md §6a."""
    total, count = 0.0, 0
    for b in range(u.shape[0]):
        idx = np.flatnonzero(mask[b])
        t = len(idx)
        uu = u[b, idx] / np.linalg.norm(u[b, idx], axis=-1, keepdims=True)
        zz = z[b, idx] / np.linalg.norm(z[b, idx], axis=-1, keepdims=True)
        s = uu @ zz.T / tau
        pi = np.exp(s - s.max(1, keepdims=True))
        pi /= pi.sum(1, keepdims=True)
        for i in range(t):
            q = np.full(t, eps / (t - 1) if t > 1 else 0.0)
            q[i] = 1 - eps if t > 1 else 1.0
            val = -np.log((q * pi[i]).sum()) if form == "expected" else -(q * np.log(pi[i])).sum()
            total += w[b] * val
            count += 1
    return total / count


@pytest.mark.parametrize("form,eps", [("expected", 0.1), ("cross_entropy", 0.1), ("expected", 0.0)])
def test_nce_equals_loop_reference_with_padding(form, eps):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((3, 6, 8)).astype(np.float32)
    z = rng.standard_normal((3, 6, 8)).astype(np.float32)
    w = np.array([1.0, 0.5, 0.2], np.float32)
    mask = np.ones((3, 6), bool)
    mask[1, 4:] = False
    mask[2, 2:] = False
    ours = losses.segment_nce(u, z, w, mask, jnp.ones(3), tau=0.2, smoothing=eps, form=form)
    assert float(ours) == pytest.approx(_nce_loop(u, z, w, mask, 0.2, eps, form), rel=1e-4)


def test_plain_infonce_forms_agree():
    rng = np.random.default_rng(1)
    u, z = rng.standard_normal((2, 2, 5, 4))
    args = (u, z, jnp.ones(2), jnp.ones((2, 5), bool), jnp.ones(2))
    a = losses.segment_nce(*args, smoothing=0.0, form="expected")
    b = losses.segment_nce(*args, smoothing=0.0, form="cross_entropy")
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_self_modality_kd_targets():
    q = jnp.array([[0.5, 0.5, 0.5]])
    p_a = jnp.array([[0.6, 0.4, 0.9]])
    p_v = jnp.array([[0.55, 0.7, 0.9]])
    y_a = jnp.array([[1.0, 1.0, 0.0]])
    y_v = jnp.array([[0.95, 0.95, 0.05]])
    # audio target [1, 0, 0]; visual target: 1[p_v >= 0.6] * y_v = [0, 0.95, 0.05]
    got = losses.self_modality_kd(q, q, p_a, p_v, y_a, y_v, jnp.ones(1))
    bce = lambda p, t: -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))  # noqa: E731
    t_a, t_v = np.array([1, 0, 0.0]), np.array([0, 0.95, 0.05])
    expected = bce(np.full(3, 0.5), t_a) + bce(np.full(3, 0.5), t_v)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # With the ASL Reference loss, KD uses ASL too (summed), as the authors' criterion_bce_2.
    got_asl = losses.self_modality_kd(q, q, p_a, p_v, y_a, y_v, jnp.ones(1), kind="asl")
    q_np = np.full((1, 3), 0.5)
    expected_asl = _authors_asl(q_np, t_a[None]) + _authors_asl(q_np, t_v[None])
    assert float(got_asl) == pytest.approx(expected_asl, rel=1e-5)


def test_class_correlation_mse_scalings():
    p = jnp.array([[0.5, 1.0], [0.2, 0.0]])
    t = jnp.array([[0.5, 0.0], [0.2, 0.0]])
    # video 0: K(p) - K(t) = [[0, .5], [.5, 1]] -> squares sum 1.5; video 1: 0.
    vm = jnp.ones(2)
    assert float(losses.class_correlation_mse(p, t, vm, "mean")) == pytest.approx(1.5 / 8)
    assert float(losses.class_correlation_mse(p, t, vm, "official")) == pytest.approx(1.5 / 2 * 2)


def test_confident_teacher_mix():
    q = jnp.array([[0.9, 0.5, 0.05, 0.9]])
    p = jnp.array([[0.1, 0.2, 0.3, 0.4]])
    y = jnp.array([[1.0, 1.0, 1.0, 0.0]])
    np.testing.assert_allclose(losses.confident_teacher(q, p, y, 0.8, 0.1), [[0.9, 0.2, 0.05, 0.4]])
    # The confidence mask is weighted by the (soft) modality label, as the authors'
    # s_v_prob4 = (conf) * Pv: 0.95 on a positive, 0.05 on a negative.
    y_v = jnp.array([[0.95, 0.95, 0.05, 0.05]])
    expected = [[0.95 * 0.9 + 0.05 * 0.1, 0.2, 0.05 * 0.05 + 0.95 * 0.3, 0.05 * 0.9 + 0.95 * 0.4]]
    np.testing.assert_allclose(losses.confident_teacher(q, p, y_v, 0.8, 0.1), expected, rtol=1e-6)


def test_no_gradient_reaches_a_teacher():
    rng = np.random.default_rng(2)
    ref_tokens = jnp.asarray(rng.standard_normal((2, 5, 4)), jnp.float32)
    anchor_tokens = jnp.asarray(rng.standard_normal((2, 5, 4)), jnp.float32)
    q = jnp.asarray(rng.random((2, 3)), jnp.float32)
    p = jnp.asarray(rng.random((2, 3)), jnp.float32)
    mask, vm = jnp.ones((2, 5), bool), jnp.ones(2)
    y = jnp.ones((2, 3))

    def teacher_side(ref_tokens, q_a, q_v, p_a, p_v):
        w_a, w_v = losses.event_aware_weights(q_a, q_v)
        return (
            losses.event_aware_nce(ref_tokens, anchor_tokens, w_a + 0.5, mask, vm)
            + losses.class_correlation_mse(p, q_a, vm)
            + losses.pseudo_label_bce(p, q_v, vm)
            + losses.self_modality_kd(q, q, p_a, p_v, y, y, vm)
        )

    grads = jax.grad(teacher_side, argnums=(0, 1, 2, 3, 4))(ref_tokens, q, q, p, p)
    for g in grads:
        assert float(jnp.abs(g).max()) == 0.0
    # ...while the students do get gradients.
    g_student = jax.grad(lambda z: losses.event_aware_nce(ref_tokens, z, jnp.ones(2), mask, vm))(
        anchor_tokens
    )
    assert float(jnp.abs(g_student).max()) > 0
