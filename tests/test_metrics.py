"""The AVVP metrics: hand-worked cases and equivalence with a loop reference."""

import dataclasses

import numpy as np
import pytest

from coleaf_jax.evaluation import metrics
from tests.reference_eval import reference_scores

T, C = 10, 25


def _video(events, t_len=T, c=C):
    """(1, T, C) array with 1s on [onset, offset) for (class, onset, offset)."""
    x = np.zeros((1, t_len, c), np.int32)
    for cls, on, off in events:
        x[0, on:off, cls] = 1
    return x


def test_keys_are_the_18_published_scores():
    x = _video([(0, 0, 5)])
    scores = metrics.avvp_scores(x, x, x, x)
    expected = [
        f"{lvl}_{n}"
        for lvl in ("seg", "evt")
        for n in ("a", "ao", "v", "vo", "av", "type", "type_o", "event", "event_o")
    ]
    assert list(scores) == expected
    assert len(scores) == 18
    assert all(isinstance(v, float) for v in scores.values())


def test_empty_video_scores_one():
    z = np.zeros((1, T, C))
    scores = metrics.avvp_scores(z, z, z, z)
    assert all(v == 100.0 for v in scores.values())


def test_segment_level_hand_worked():
    # Audio truth: class 0 on [0,4); prediction [2,6): TP 2, FP 2, FN 2 -> F 0.5.
    # Class 3: predicted [0,1) with no truth -> F 0. Mean over the two = 0.25.
    gt_a = _video([(0, 0, 4)])
    pred_a = _video([(0, 2, 6), (3, 0, 1)])
    z = np.zeros_like(gt_a)
    s = metrics.avvp_scores(pred_a, z, gt_a, z)
    assert s["seg_a"] == pytest.approx(25.0)
    # Visual: nothing predicted, nothing true -> 1.0.
    assert s["seg_v"] == pytest.approx(100.0)
    # Audio-only equals audio here (no visual at all).
    assert s["seg_ao"] == pytest.approx(25.0)
    # Event@AV pools A and V counts: V adds nothing -> same as A.
    assert s["seg_event"] == pytest.approx(25.0)
    # AV: nothing on either side -> 1.0; Type@AV = (25 + 100 + 100) / 3.
    assert s["seg_av"] == pytest.approx(100.0)
    assert s["seg_type"] == pytest.approx(75.0)


def test_event_iou_edges():
    gt = _video([(0, 0, 4)])  # one true event [0, 4)
    z = np.zeros_like(gt)
    # [0,2): IoU 2/4 = 0.5 -> matches (>=).
    assert metrics.avvp_scores(_video([(0, 0, 2)]), z, gt, z)["evt_a"] == pytest.approx(100.0)
    # [1,3) inside [0,4): IoU 0.5 -> match.  [2,5): inter 2, union 5 -> 0.4 -> no.
    assert metrics.avvp_scores(_video([(0, 1, 3)]), z, gt, z)["evt_a"] == pytest.approx(100.0)
    assert metrics.avvp_scores(_video([(0, 2, 5)]), z, gt, z)["evt_a"] == pytest.approx(0.0)
    # [0,1): IoU 0.25 -> FP 1, FN 1 -> F 0; segment level still gets credit.
    s = metrics.avvp_scores(_video([(0, 0, 1)]), z, gt, z)
    assert s["evt_a"] == 0.0
    assert s["seg_a"] == pytest.approx(100 * 2 * 1 / (2 * 1 + 0 + 3))


def test_event_tp_and_fn_are_counted_independently():
    # Predicted runs [0,2) and [3,4) vs one true [0,4): the first has IoU 0.5 (TP),
    # the second 0.25 (FP); the true event is matched (no FN) -> F = 2/(2+1) = 2/3.
    gt = _video([(0, 0, 4)])
    pred = _video([(0, 0, 2), (0, 3, 4)])
    z = np.zeros_like(gt)
    assert metrics.avvp_scores(pred, z, gt, z)["evt_a"] == pytest.approx(100 * 2 / 3)
    tp, fp, fn = metrics.event_counts(pred, gt)
    assert (tp[0, 0], fp[0, 0], fn[0, 0]) == (1, 1, 0)
    # Two predicted runs [0,2) and [2,4) would be one run [0,4): a single TP.
    tp, fp, fn = metrics.event_counts(_video([(0, 0, 4)]), gt)
    assert (tp[0, 0], fp[0, 0], fn[0, 0]) == (1, 0, 0)


def test_only_classes_that_occur_are_averaged():
    # Class 1 perfectly predicted, 24 classes absent everywhere -> 100, not 4.
    x = _video([(1, 3, 7)])
    z = np.zeros_like(x)
    assert metrics.avvp_scores(x, z, x, z)["seg_a"] == pytest.approx(100.0)


def test_audible_only_and_visible_only_definitions():
    # Truth: class 0 audible [0,10), visible [5,10) -> Ao truth [0,5), Vo truth empty.
    gt_a, gt_v = _video([(0, 0, 10)]), _video([(0, 5, 10)])
    # Prediction: audio [0,10), visual [2,10) -> Ao prediction [0,2), Vo empty.
    pa, pv = _video([(0, 0, 10)]), _video([(0, 2, 10)])
    s = metrics.avvp_scores(pa, pv, gt_a, gt_v)
    assert s["seg_ao"] == pytest.approx(100 * 2 * 2 / (2 * 2 + 3))  # TP 2, FN 3
    assert s["seg_vo"] == pytest.approx(100.0)  # nothing true, nothing predicted
    assert s["seg_av"] == pytest.approx(100 * 2 * 5 / (2 * 5 + 3))  # TP 5, FP 3
    # Event level: Ao pred [0,2) vs truth [0,5): IoU 0.4 -> F 0; AV [2,10) vs [5,10): 5/8.
    assert s["evt_ao"] == 0.0
    assert s["evt_av"] == pytest.approx(100.0)
    # Event@AVo pools Ao (TP 2, FN 3) and Vo (nothing) -> same as Ao at segment level.
    assert s["seg_event_o"] == pytest.approx(s["seg_ao"])
    assert s["seg_type_o"] == pytest.approx((s["seg_ao"] + s["seg_vo"] + s["seg_av"]) / 3)


def test_mask_removes_padding():
    rng = np.random.default_rng(0)
    arrs = [rng.integers(0, 2, (4, 12, 5)) for _ in range(4)]
    mask = np.ones((4, 12), bool)
    mask[:, 9:] = False
    masked = metrics.avvp_scores(*arrs, mask=mask)
    cut = metrics.avvp_scores(*(a[:, :9] for a in arrs))
    assert masked == pytest.approx(cut, abs=1e-12)


@pytest.mark.parametrize("seed,density", [(0, 0.1), (1, 0.3), (2, 0.6), (3, 0.02)])
def test_equals_loop_reference_on_random_inputs(seed, density):
    rng = np.random.default_rng(seed)
    n = 60
    arrs = [(rng.random((n, T, C)) < density).astype(np.int64) for _ in range(4)]
    # Make some videos entirely empty and some predictions equal to the truth.
    arrs[0][:5] = 0
    arrs[1][:5] = 0
    arrs[2][:3] = 0
    arrs[3][:3] = 0
    arrs[0][10:15] = arrs[2][10:15]
    ours = metrics.avvp_scores(*arrs)
    ref = reference_scores(*arrs)
    for k in metrics.SCORE_KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-6), k


def test_equals_loop_reference_with_runs_at_other_lengths():
    rng = np.random.default_rng(7)
    for t_len in (1, 2, 3, 7):
        arrs = [(rng.random((30, t_len, 4)) < 0.5).astype(np.float32) for _ in range(4)]
        ours, ref = metrics.avvp_scores(*arrs), reference_scores(*arrs)
        for k in metrics.SCORE_KEYS:
            assert ours[k] == pytest.approx(ref[k], abs=1e-6), (t_len, k)


def test_dtypes_are_equivalent():
    rng = np.random.default_rng(3)
    arrs = [rng.random((20, T, C)) < 0.3 for _ in range(4)]
    as_bool = metrics.avvp_scores(*arrs)
    as_float = metrics.avvp_scores(*(a.astype(np.float32) for a in arrs))
    as_int = metrics.avvp_scores(*(a.astype(np.int8) for a in arrs))
    assert as_bool == as_float == as_int


def test_rejects_bad_inputs():
    x = np.zeros((2, T, C))
    with pytest.raises(ValueError, match="binary"):
        metrics.avvp_scores(x + 0.5, x, x, x)
    with pytest.raises(ValueError, match="shape"):
        metrics.avvp_scores(x, x[:, :5], x, x)
    with pytest.raises(ValueError, match="3-d"):
        metrics.avvp_scores(x[0], x, x, x)
    with pytest.raises(ValueError, match="mask"):
        metrics.avvp_scores(x, x, x, x, mask=np.ones((2, 3)))


def test_binarize_standard_and_per_class():
    seg_a = np.full((1, 2, 3), 0.6)
    seg_v = np.array([[[0.4, 0.6, 0.9], [0.6, 0.6, 0.1]]])
    p = np.array([[0.7, 0.3, 0.5]])
    pa, pv = metrics.binarize(seg_a, seg_v, p)  # HAN: joint gate for both
    np.testing.assert_array_equal(pa[0], [[1, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(pv[0], [[0, 0, 1], [1, 0, 0]])
    th = metrics.Thresholds(video_v=np.array([0.8, 0.2, 0.5]))
    _, pv = metrics.binarize(seg_a, seg_v, p, p, th)
    np.testing.assert_array_equal(pv[0], [[0, 1, 1], [0, 1, 0]])
    pa, _ = metrics.binarize(seg_a, seg_v, p, p, metrics.OFFICIAL)
    np.testing.assert_array_equal(pa[0], [[1, 0, 0], [1, 0, 0]])  # 0.5 < 0.52


def test_threshold_search_finds_the_known_answer():
    # Class 0 is visible in videos 0-1 (p^v = 0.6) and absent in 2-3 (p^v = 0.45):
    # any threshold in (0.45, 0.6] is perfect; the grid's nearest to 0.5 is 0.5.
    # Class 1 is visible in video 0 with p^v = 0.3 only: needs θ <= 0.3 -> 0.3
    # (0.25 also works; 0.30 is closer to the base 0.5).
    n, c = 4, 3
    seg = np.full((n, T, c), 0.9)
    vid = np.array([[0.6, 0.3, 0.1], [0.6, 0.2, 0.1], [0.45, 0.2, 0.1], [0.45, 0.2, 0.1]])
    gt = np.zeros((n, T, c), int)
    gt[0:2, :, 0] = 1
    gt[0, :, 1] = 1
    th = metrics.search_visual_thresholds(seg, vid, gt)
    assert th[0] == pytest.approx(0.5)
    assert th[1] == pytest.approx(0.3)
    assert th[2] == pytest.approx(0.5)  # class 2 never present nor predicted: base


def test_selection_score_and_table():
    scores = {k: float(i) for i, k in enumerate(metrics.SCORE_KEYS)}
    expected = np.mean([scores[k] for k in metrics.SELECTION_KEYS])
    assert metrics.selection_score(scores) == pytest.approx(expected)
    table = metrics.format_table({"HAN": scores}, title="test")
    assert "HAN segment" in table and "HAN event" in table and "E@o" in table


def _authors_rule(seg_a, seg_v, p, p_a, p_v, rule, v_thres=None):
    """Each project's test-time decisions, written as its code writes them, one video and
    one modality at a time: HAN ``main_avvp.py`` (and VALOR's), JoMoLD ``main.py:299-307``,
    CoLeaF ``main.py:326-339``, CMPAE ``main.py:212-232`` (``v_thres``: its per-class list)."""
    gates = {
        "standard": (p, p, 0.5, 0.5, 0.5),
        "jomold": (p_a, p_v, 0.5, 0.5, 0.5),
        "official": (p_a, p_v, 0.52, 0.52, 0.25),
        "cmpae": (p_a, p_v, 0.45, v_thres, 0.25),
    }
    gate_a, gate_v, th_a, th_v, th_seg = gates[rule]
    out_a, out_v = np.zeros(seg_a.shape, bool), np.zeros(seg_v.shape, bool)
    for n in range(seg_a.shape[0]):
        oa = (gate_a[n] >= th_a).astype(np.int_)
        ov = (gate_v[n] >= np.full(seg_a.shape[2], 1.0) * th_v).astype(np.int_)
        out_a[n] = (seg_a[n] >= th_seg).astype(np.int_) * np.repeat(oa[None], seg_a.shape[1], 0)
        out_v[n] = (seg_v[n] >= th_seg).astype(np.int_) * np.repeat(ov[None], seg_a.shape[1], 0)
    return out_a, out_v


@pytest.mark.parametrize("rule", ["standard", "jomold", "official", "cmpae"])
def test_each_preset_decides_as_its_projects_code(rule):
    """Probabilities drawn at and around every threshold of every project (0.25, 0.45,
    0.5, 0.52, CMPAE's per-class values): each preset's decisions are its project's."""
    rng = np.random.default_rng(0)
    levels = np.array([0.2, 0.25, 0.3, 0.4, 0.45, 0.47, 0.5, 0.51, 0.52, 0.55, 0.6, 0.7, 0.9])
    n, t, c = 40, 10, 25
    seg_a, seg_v = rng.choice(levels, (n, t, c)), rng.choice(levels, (n, t, c))
    p, p_a, p_v = (rng.choice(levels, (n, c)) for _ in range(3))
    v_thres = rng.choice([0.3, 0.4, 0.45, 0.55, 0.7], c)
    thresholds = metrics.THRESHOLD_PRESETS[rule]
    if rule == "cmpae":
        thresholds = dataclasses.replace(thresholds, video_v=v_thres)
    gate = (p, None) if thresholds.gate == "joint" else (p_a, p_v)
    ours = metrics.binarize(seg_a, seg_v, *gate, thresholds=thresholds)
    theirs = _authors_rule(seg_a, seg_v, p, p_a, p_v, rule, v_thres)
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
