"""Losses and objectives of docs/method.md §4-§6: values on hand-made cases and against loop
references, no teacher gradient. Inputs are asymmetric (audio ≠ visual, class-varying) so that
exchanging the modalities, the classes or any two arguments changes the expected value (issue 30,
item 3); ``_differ`` checks that of the references themselves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coleaf_jax import registry
from coleaf_jax.training import losses, objectives
from configs import llp


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
        if not t:  # a padding video
            continue
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


def _bce_np(p, y):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _differ(a, b):
    """The test's inputs make an argument matter: the reference value changes with it."""
    assert not np.allclose(a, b, rtol=1e-3, atol=1e-6), (a, b)


def _kd_targets_loop(p_a, p_v, y_a, y_v, th_a=0.5, th_v=0.6):
    """docs/method.md §6b element by element: ỹ^m = ȳ_m where p^m >= θ_m, else 0."""
    t_a, t_v = np.zeros(y_a.shape), np.zeros(y_v.shape)
    for b, c in np.ndindex(*y_a.shape):
        t_a[b, c] = y_a[b, c] if p_a[b, c] >= th_a else 0.0
        t_v[b, c] = y_v[b, c] if p_v[b, c] >= th_v else 0.0
    return t_a, t_v


# KD inputs where every argument matters: p^a and p^v differ per class (0.55 passes the
# audio threshold and not the visual one; 0.5 sits on the audio one), ȳ_a is binary, ȳ_v
# the soft visual label (0.95 / 0.05, one denoised 0), q^a and q^v differ per class.
KD_P_A = np.array([[0.5, 0.45, 0.9, 0.2, 0.55], [0.7, 0.1, 0.3, 0.62, 0.49]], np.float32)
KD_P_V = np.array([[0.3, 0.61, 0.55, 0.8, 0.65], [0.62, 0.95, 0.1, 0.4, 0.7]], np.float32)
KD_Y_A = np.array([[1, 1, 0, 1, 1], [1, 0, 1, 1, 0]], np.float32)
KD_Y_V = np.array([[0.05, 0.95, 0.95, 0.0, 0.05], [0.95, 0.95, 0.05, 0.05, 0.95]], np.float32)
KD_Q_A = np.array([[0.8, 0.3, 0.6, 0.15, 0.9], [0.55, 0.25, 0.7, 0.4, 0.1]], np.float32)
KD_Q_V = np.array([[0.2, 0.85, 0.45, 0.65, 0.35], [0.9, 0.5, 0.3, 0.75, 0.6]], np.float32)


def test_kd_targets_per_modality_and_class():
    t_a, t_v = losses.kd_targets(KD_P_A, KD_P_V, KD_Y_A, KD_Y_V, 0.5, 0.6)
    e_a, e_v = _kd_targets_loop(KD_P_A, KD_P_V, KD_Y_A, KD_Y_V)
    np.testing.assert_array_equal(t_a, e_a)
    np.testing.assert_array_equal(t_v, e_v)
    np.testing.assert_allclose(e_v[0], [0, 0.95, 0, 0, 0.05], rtol=1e-6)  # by hand
    # each argument matters: the other modality's p or label, or the thresholds swapped
    _differ(e_v, _kd_targets_loop(KD_P_A, KD_P_A, KD_Y_A, KD_Y_V)[1])
    _differ(e_a, _kd_targets_loop(KD_P_V, KD_P_V, KD_Y_A, KD_Y_V)[0])
    _differ(e_v, _kd_targets_loop(KD_P_A, KD_P_V, KD_Y_A, KD_Y_A)[1])
    _differ((e_a, e_v), _kd_targets_loop(KD_P_A, KD_P_V, KD_Y_A, KD_Y_V, 0.6, 0.5))


@pytest.mark.parametrize("kind", ["bce", "asl"])
def test_self_modality_kd_targets(kind):
    """``L(q^a, ỹ^a) + L(q^v, ỹ^v)`` with class-varying q: the loss depends on which classes
    get which target (a constant q made every permutation of the targets equal)."""
    vm = jnp.ones(2)
    got = losses.self_modality_kd(KD_Q_A, KD_Q_V, KD_P_A, KD_P_V, KD_Y_A, KD_Y_V, vm, kind=kind)

    def expected(t_a, t_v, q_a=KD_Q_A, q_v=KD_Q_V):
        q_a, q_v = q_a.astype(np.float64), q_v.astype(np.float64)
        if kind == "bce":
            return _bce_np(q_a, t_a).mean() + _bce_np(q_v, t_v).mean()
        # With the ASL Reference loss, KD uses ASL too (summed), as the authors' criterion_bce_2.
        return _authors_asl(q_a, t_a) + _authors_asl(q_v, t_v)

    t_a, t_v = _kd_targets_loop(KD_P_A, KD_P_V, KD_Y_A, KD_Y_V)
    assert float(got) == pytest.approx(expected(t_a, t_v), rel=1e-5)
    _differ(expected(t_a, t_v), expected(t_a, _kd_targets_loop(KD_P_A, KD_P_A, KD_Y_A, KD_Y_V)[1]))
    _differ(expected(t_a, t_v), expected(t_v, t_a))
    _differ(expected(t_a, t_v), expected(t_a, t_v, KD_Q_V, KD_Q_A))
    # thresholds are passed through, per modality
    got = losses.self_modality_kd(
        KD_Q_A, KD_Q_V, KD_P_A, KD_P_V, KD_Y_A, KD_Y_V, vm, 0.6, 0.5, kind=kind
    )
    swapped = _kd_targets_loop(KD_P_A, KD_P_V, KD_Y_A, KD_Y_V, 0.6, 0.5)
    assert float(got) == pytest.approx(expected(*swapped), rel=1e-5)


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


# -- every argument matters: asymmetric audio / visual inputs against loop references ----


def _rand(rng, *shape, lo=0.05, hi=0.95):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def test_han_loss_weighs_each_output_against_its_own_label():
    rng = np.random.default_rng(10)
    out = {k: _rand(rng, 3, 4) for k in ("video_prob", "video_prob_a", "video_prob_v")}
    y = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    y_a = y * np.array([[1, 0, 0, 1]], np.float32)  # denoised: not y
    y_v = np.where(y > 0.5, 0.95, 0.05).astype(np.float32)
    vm = np.array([1.0, 1.0, 0.0], np.float32)  # a padding video does not count

    def expected(y, y_a, y_v, out=out):
        real = vm > 0
        return sum(
            _bce_np(out[k][real], t[real]).mean()
            for k, t in (("video_prob", y), ("video_prob_a", y_a), ("video_prob_v", y_v))
        )

    assert float(losses.han_loss(out, y, y_a, y_v, vm)) == pytest.approx(
        expected(y, y_a, y_v), rel=1e-5
    )
    _differ(expected(y, y_a, y_v), expected(y, y_v, y_a))
    _differ(expected(y, y_a, y_v), expected(y_a, y, y_v))
    swapped = dict(out, video_prob_a=out["video_prob_v"], video_prob_v=out["video_prob_a"])
    _differ(expected(y, y_a, y_v), expected(y, y_a, y_v, swapped))


def _event_weights_loop(q_a, q_v, threshold=0.5):
    w_a, w_v = np.zeros(len(q_a)), np.zeros(len(q_a))
    for b in range(len(q_a)):
        r_a, r_v = q_a[b] >= threshold, q_v[b] >= threshold
        ao, vo, av = (r_a & ~r_v).sum(), (r_v & ~r_a).sum(), (r_a & r_v).sum()
        w_a[b] = ao / max(ao + av, 1)
        w_v[b] = vo / max(vo + av, 1)
    return w_a, w_v


def test_event_aware_weights_equal_loop_reference():
    rng = np.random.default_rng(11)
    q_a, q_v = _rand(rng, 6, 7, lo=0, hi=1), _rand(rng, 6, 7, lo=0, hi=1)
    for threshold in (0.5, 0.3):
        got = losses.event_aware_weights(q_a, q_v, threshold)
        want = _event_weights_loop(q_a, q_v, threshold)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    w_a, w_v = _event_weights_loop(q_a, q_v)
    _differ(w_a, w_v)
    _differ(w_a, _event_weights_loop(q_v, q_a)[0])
    _differ(w_a, _event_weights_loop(q_a, q_v, 0.3)[0])


def test_event_aware_nce_passes_its_arguments_through():
    """Reference tokens are the queries, Anchor tokens the keys; τ, ε, the form and the
    per-video weights reach ``segment_nce`` (against the loop, non-default values)."""
    rng = np.random.default_rng(12)
    ref, anc = rng.standard_normal((2, 3, 6, 8)).astype(np.float32)
    w = np.array([0.7, 0.2, 1.0], np.float32)
    mask = np.ones((3, 6), bool)
    mask[1, 3:] = False
    vm = np.array([1.0, 1.0, 0.0], np.float32)  # the last video is padding
    seg_mask = mask & (vm[:, None] > 0)
    for form in ("expected", "cross_entropy"):
        got = losses.event_aware_nce(ref, anc, w, mask, vm, tau=0.35, smoothing=0.2, form=form)
        want = _nce_loop(ref, anc, w, seg_mask, 0.35, 0.2, form)
        assert float(got) == pytest.approx(want, rel=1e-4)
        _differ(want, _nce_loop(anc, ref, w, seg_mask, 0.35, 0.2, form))  # queries vs keys
        _differ(want, _nce_loop(ref, anc, w, seg_mask, 0.2, 0.2, form))
        _differ(want, _nce_loop(ref, anc, w, seg_mask, 0.35, 0.1, form))


def test_pseudo_label_bce_value():
    rng = np.random.default_rng(13)
    p, q = _rand(rng, 3, 5), _rand(rng, 3, 5, lo=0, hi=1)
    vm = jnp.ones(3)
    for threshold in (0.5, 0.7):
        r = (q >= threshold).astype(np.float64)
        want = _bce_np(p, r).mean()
        got = losses.pseudo_label_bce(p, q, vm, threshold)
        assert float(got) == pytest.approx(want, rel=1e-5)
    _differ(_bce_np(p, (q >= 0.5)).mean(), _bce_np(q, (p >= 0.5)).mean())


def _cc_loop(p, t, vm, scaling):
    err, count = 0.0, 0
    for b in range(len(p)):
        if vm[b]:
            err += ((np.outer(p[b], p[b]) - np.outer(t[b], t[b])) ** 2).sum()
            count += 1
    c = p.shape[1]
    return err / c * count if scaling == "official" else err / (count * c * c)


def test_class_correlation_mse_equals_loop_with_padding():
    rng = np.random.default_rng(14)
    p, t = _rand(rng, 4, 6), _rand(rng, 4, 6)
    vm = np.array([1, 1, 0, 1], np.float32)
    for scaling in ("official", "mean"):
        got = losses.class_correlation_mse(p, t, vm, scaling)
        assert float(got) == pytest.approx(_cc_loop(p, t, vm, scaling), rel=1e-5)
    g = jax.grad(lambda x: losses.class_correlation_mse(x, t, vm))(jnp.asarray(p))
    assert float(jnp.abs(g[2]).max()) == 0.0 and float(jnp.abs(g[0]).max()) > 0


def _confident_loop(q, p, y, high, low):
    out = np.zeros(q.shape)
    for i in np.ndindex(*q.shape):
        m = float(q[i] >= high or q[i] <= low) * y[i]
        out[i] = m * q[i] + (1 - m) * p[i]
    return out


# -- the objectives: each branch's loss from its own outputs, each modality from its own --


def _lc(variant="coleaf_han", **overrides):
    lc = llp.get_config(variant).loss
    for k, v in overrides.items():
        setattr(lc, k, v)
    return lc


def test_reference_objective_each_modality_from_its_own():
    rng = np.random.default_rng(20)
    ref_out = {
        m: {"video_prob": _rand(rng, 2, 5), "class_prob": _rand(rng, 2, 5)} for m in ("a", "v")
    }
    y_a, y_v = KD_Y_A, KD_Y_V
    vm = jnp.ones(2)
    weights = objectives.ReferenceWeights(
        weak=jnp.float32(0.7), token_a=jnp.float32(1.3), token_v=jnp.float32(0.4), kd=0.9
    )
    for kind in ("asl", "bce"):
        lc = _lc(reference=kind)
        total, terms, teachers = objectives.reference_objective(
            ref_out, y_a, y_v, KD_P_A, KD_P_V, vm, weights, lc
        )

        def loss(p, y):
            p = np.asarray(p, np.float64)
            return _authors_asl(p, y) if kind == "asl" else _bce_np(p, y).mean()

        t_a, t_v = _kd_targets_loop(KD_P_A, KD_P_V, y_a, y_v)
        want = {
            "ref_weak_a": loss(ref_out["a"]["video_prob"], y_a),
            "ref_weak_v": loss(ref_out["v"]["video_prob"], y_v),
            "ref_token_a": loss(ref_out["a"]["class_prob"], y_a),
            "ref_token_v": loss(ref_out["v"]["class_prob"], y_v),
            "ref_kd_a": loss(ref_out["a"]["video_prob"], t_a),
            "ref_kd_v": loss(ref_out["v"]["video_prob"], t_v),
        }
        for k, v in want.items():
            assert float(terms[k]) == pytest.approx(v, rel=1e-5), (kind, k)
        want_total = (
            0.7 * (want["ref_weak_a"] + want["ref_weak_v"])
            + 1.3 * want["ref_token_a"]
            + 0.4 * want["ref_token_v"]
            + 0.9 * (want["ref_kd_a"] + want["ref_kd_v"])
        )
        assert float(total) == pytest.approx(want_total, rel=1e-5)
        np.testing.assert_array_equal(teachers["kd_target_a"], t_a)
        np.testing.assert_array_equal(teachers["kd_target_v"], t_v)
        # the inputs make the modalities distinguishable
        _differ(want["ref_kd_v"], loss(ref_out["v"]["video_prob"], t_a))
        _differ(want["ref_token_a"], loss(ref_out["v"]["class_prob"], y_a))
        _differ(want["ref_token_a"], want["ref_token_v"])


def _anchor_case(seed=21, b=3, t=5, c=6, d=8):
    rng = np.random.default_rng(seed)
    out = {
        "video_prob": _rand(rng, b, c),
        "video_prob_a": _rand(rng, b, c),
        "video_prob_v": _rand(rng, b, c),
        "tokens_a": rng.standard_normal((b, t, d)).astype(np.float32),
        "tokens_v": rng.standard_normal((b, t, d)).astype(np.float32),
    }
    teacher = {
        m: {
            "video_prob": _rand(rng, b, c, lo=0.0, hi=1.0),
            "tokens": rng.standard_normal((b, t, d)).astype(np.float32),
        }
        for m in ("a", "v")
    }
    y = (rng.random((b, c)) < 0.5).astype(np.float32)
    y_a = y * (rng.random((b, c)) < 0.8)
    y_v = np.where(y > 0.5, 0.95, 0.05).astype(np.float32)
    mask = np.ones((b, t), bool)
    mask[1, 3:] = False
    labels = objectives.Labels(y, y_a, y_v, mask, np.ones(b, np.float32), jnp.float32(0))
    return out, teacher, labels


@pytest.mark.parametrize("contrastive", ["event_aware", "standard", "bce"])
@pytest.mark.parametrize("correlation_teacher", ["confident", "reference"])
def test_anchor_objective_each_modality_from_its_own(contrastive, correlation_teacher):
    """``L_A`` of the HAN Anchor with the authors' weights (0.009 / 1 / 1e-4), against
    terms recomputed here: the audio NCE contrasts the Reference's audio tokens with the
    Anchor's audio tokens, the visual one the visual tokens; each modality's correlation
    teacher uses its own q, p, label and confidence band."""
    out, teacher, labels = _anchor_case()
    lc = _lc(contrastive=contrastive, correlation_teacher=correlation_teacher)
    weights = objectives.AnchorWeights(collab=jnp.float32(1.0), parity=jnp.float32(0.0))
    backbone = registry.anchor("han").loss
    total, terms, teachers = objectives.anchor_objective(
        out, teacher, labels, weights, lc, backbone
    )
    vm = np.asarray(labels.video_mask)
    q = {m: teacher[m]["video_prob"] for m in ("a", "v")}
    p = {m: out[f"video_prob_{m}"] for m in ("a", "v")}
    y = {"a": labels.y_a, "v": labels.y_v}
    want = {
        "backbone": _bce_np(out["video_prob"], labels.y).mean()
        + _bce_np(p["a"], y["a"]).mean()
        + _bce_np(p["v"], y["v"]).mean()
    }
    if contrastive == "bce":
        for m in ("a", "v"):
            want[f"nce_{m}"] = _bce_np(p[m], q[m] >= 0.5).mean()
        _differ(want["nce_v"], _bce_np(p["a"], q["v"] >= 0.5).mean())
    else:
        w = _event_weights_loop(q["a"], q["v"])
        if contrastive == "standard":
            w = (np.ones(3), np.ones(3))

        def nce(queries, keys, w_m):  # the official τ = 0.2, ε = 0.1, expected form
            return _nce_loop(queries, keys, w_m, labels.mask, 0.2, 0.1, "expected")

        for m, w_m in zip(("a", "v"), w):
            np.testing.assert_allclose(teachers[f"event_weight_{m}"], w_m, rtol=1e-6)
            want[f"nce_{m}"] = nce(teacher[m]["tokens"], out[f"tokens_{m}"], w_m)
        _differ(want["nce_v"], nce(teacher["v"]["tokens"], out["tokens_a"], w[1]))  # audio keys
        _differ(want["nce_a"], nce(teacher["v"]["tokens"], out["tokens_a"], w[0]))  # visual queries
    bands = {"a": (0.8, 0.1), "v": (0.6, 0.4)}
    for m in ("a", "v"):
        t_m = (
            _confident_loop(q[m], p[m], y[m], *bands[m])
            if correlation_teacher == "confident"
            else q[m].astype(np.float64)
        )
        np.testing.assert_allclose(teachers[f"cc_teacher_{m}"], t_m, rtol=1e-6)
        want[f"correlation_{m}"] = _cc_loop(p[m], t_m, vm, "official")
    if correlation_teacher == "confident":
        _differ(
            _confident_loop(q["v"], p["v"], y["v"], *bands["v"]),
            _confident_loop(q["v"], p["v"], y["v"], *bands["a"]),
        )
        _differ(
            _confident_loop(q["v"], p["v"], y["v"], *bands["v"]),
            _confident_loop(q["v"], p["v"], y["a"], *bands["v"]),
        )
    for k, v in want.items():
        assert float(terms[k]) == pytest.approx(v, rel=2e-5), k
    want_total = (
        want["backbone"]
        + 0.009 * want["nce_a"]
        + 1.0 * want["nce_v"]
        + 1e-4 * (want["correlation_a"] + want["correlation_v"])
    )
    assert float(total) == pytest.approx(want_total, rel=2e-5)
    # epoch 1 (collab = 0): the backbone alone
    off = objectives.AnchorWeights(collab=jnp.float32(0.0), parity=jnp.float32(0.0))
    alone, _, _ = objectives.anchor_objective(out, teacher, labels, off, lc, backbone)
    assert float(alone) == pytest.approx(want["backbone"], rel=1e-6)


def test_reference_weights_per_modality_and_epoch():
    lc = _lc()
    warm, after = (1.0, 1.2, 1.0, 0.0), (0.5, 0.001, 0.0, 0.5)  # (weak, token_a, token_v, kd)
    for epoch, want in ((0, warm), (2, warm), (3, after), (7, after)):
        got = objectives.reference_weights(lc, jnp.int32(epoch))
        np.testing.assert_allclose([float(x) for x in got], want, rtol=1e-6, err_msg=str(epoch))
