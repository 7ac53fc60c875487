"""Plant one-line bugs, one at a time, in a scratch copy and see which the tests catch.

    .venv/bin/python tools/plant_bugs.py                 # every bug; the catch table
    .venv/bin/python tools/plant_bugs.py --bug kd_target_v_from_audio --bug lr_decay_early
    .venv/bin/python tools/plant_bugs.py --list          # the bugs, without running

Each bug is one exact replacement in one file of the package (the ``old`` text must
occur exactly once: a bug that no longer applies is an error, not a silent pass). For
each, the working tree (tracked and untracked files, not the ignored ones) is copied
to a scratch folder, the bug planted there, and the checks run in order until one
fails (first, a control run with no bug planted must pass them all): the unit and model tests (``UNIT_TESTS``, ``pytest -x``), then every parity
fixture's replay (``tools/parity.py compare tests/fixtures/parity_*.npz``, which
exits 1 when a group is out of tolerance). A bug is *caught* by the first check that
fails; one that passes them all *escapes*. The table (markdown) is printed at the end
and, with ``--out``, written to a file; docs/fidelity.md keeps the last one with its
date and command.

The same script judges every method's parity harness: a new method adds its bugs
(``BUGS``) and its fixtures; nothing else changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT_TESTS = [
    "tests/test_valor_training.py",
    "tests/test_losses.py",
    "tests/test_dropout_sites.py",
    "tests/test_models.py",
    "tests/test_cmpae.py",
    "tests/test_configs.py",
    "tests/test_metrics.py",
    "tests/test_parity.py",
]


# Which harness replays a fixture (by its name's prefix): a method's own, else CoLeaF's.
REPLAYS = {"parity_valor_": "tools/valor_parity.py"}
DEFAULT_REPLAY = "tools/parity.py"


@dataclasses.dataclass(frozen=True)
class Bug:
    name: str
    path: str  # relative to the repository
    old: str
    new: str
    what: str
    group: str  # objectives, losses, models, schedule, evaluation, ...


BUGS = [
    # --- named by issue 30 ------------------------------------------------------------
    Bug(
        "kd_target_v_from_audio",
        "coleaf_jax/training/losses.py",
        "(sg(p_v) >= threshold_v).astype(jnp.float32) * y_v",
        "(sg(p_a) >= threshold_v).astype(jnp.float32) * y_v",
        "the visual KD target computed from the audio probability",
        "losses",
    ),
    Bug(
        "nce_v_keys_from_audio",
        "coleaf_jax/training/objectives.py",
        'out[f"tokens_{m}"],',
        'out["tokens_a"],',
        "the visual NCE keys taken from the audio tokens",
        "objectives",
    ),
    Bug(
        "cmpae_han_dropout_residual_rate",
        "coleaf_jax/models/cmpae.py",
        'layer = HANLayer(self.d_model, self.ffn_dim, self.dropout, self.param_init, name="han")',
        'layer = HANLayer(self.d_model, self.ffn_dim, self.residual_dropout, self.param_init, name="han")',
        "the CMPAE HAN layer's dropout at the residual rate (0.2) instead of 0.1",
        "models",
    ),
    Bug(
        "visual_dropout_on_at_eval",
        "coleaf_jax/models/cmpae.py",
        "mixed = heads(h_a, vis_drop(h_v, deterministic=det), mask, deterministic=det)",
        "mixed = heads(h_a, vis_drop(h_v, deterministic=False), mask, deterministic=det)",
        "the CMPAE visual dropout left on at evaluation",
        "models",
    ),
    Bug(
        "lr_decay_early",
        "coleaf_jax/training/step.py",
        "config.lr_decay_factor ** (epoch // config.lr_decay_every_epochs)",
        "config.lr_decay_factor ** ((epoch + 1) // config.lr_decay_every_epochs)",
        "the learning-rate decay one epoch early",
        "schedule",
    ),
    Bug(
        "han_time_pooling_over_classes",
        "coleaf_jax/models/mmil.py",
        "w_t = masked_softmax(time_logits, mask[:, :, None, None], axis=1)",
        "w_t = masked_softmax(time_logits, mask[:, :, None, None], axis=3)",
        "HAN's temporal attention pooled over classes instead of segments",
        "models",
    ),
    Bug(
        "kd_targets_classes_shifted",
        "coleaf_jax/training/losses.py",
        "(sg(p_a) >= threshold_a).astype(jnp.float32) * y_a,",
        "(sg(p_a) >= threshold_a).astype(jnp.float32) * jnp.roll(y_a, 1, -1),",
        "the audio KD targets given to the wrong classes",
        "losses",
    ),
    Bug(
        "linear_init_fan_out",
        "coleaf_jax/models/init.py",
        "bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0",
        "bound = 2.0 / math.sqrt(fan_in) if fan_in else 0.0",
        "torch's Linear initialisation bound doubled",
        "models",
    ),
    Bug(
        "nce_v_weight_halved",
        "coleaf_jax/training/objectives.py",
        'lc.nce_weight_audio * terms["nce_a"] + lc.nce_weight_visual * terms["nce_v"]',
        'lc.nce_weight_audio * terms["nce_a"] + 0.5 * lc.nce_weight_visual * terms["nce_v"]',
        "the visual NCE term's weight halved",
        "objectives",
    ),
    # --- more one-line bugs -------------------------------------------------------------
    Bug(
        "event_weight_v_wrong_count",
        "coleaf_jax/training/losses.py",
        "n_vo = (r_v * (1 - r_a)).sum(-1)",
        "n_vo = (r_v * (1 - r_v)).sum(-1)",
        "visual-only events counted against the visual pseudo-labels",
        "losses",
    ),
    Bug(
        "event_weight_threshold_strict",
        "coleaf_jax/training/losses.py",
        "r_a = (sg(q_a) >= threshold).astype(q_a.dtype)",
        "r_a = (sg(q_a) > threshold + 0.1).astype(q_a.dtype)",
        "the audio pseudo-label threshold raised",
        "losses",
    ),
    Bug(
        "nce_temperature_inverted",
        "coleaf_jax/training/losses.py",
        'logits = jnp.einsum("btd,bsd->bts", u, z) / tau',
        'logits = jnp.einsum("btd,bsd->bts", u, z) * tau',
        "the NCE temperature multiplied instead of divided",
        "losses",
    ),
    Bug(
        "nce_smoothing_doubled",
        "coleaf_jax/training/losses.py",
        "target = jnp.where(eye, 1.0 - jnp.where(t_valid > 1, smoothing, 0.0), off) * pair",
        "target = jnp.where(eye, 1.0 - jnp.where(t_valid > 1, 2 * smoothing, 0.0), off) * pair",
        "the NCE label smoothing doubled on the diagonal",
        "losses",
    ),
    Bug(
        "confident_teacher_and",
        "coleaf_jax/training/losses.py",
        "m = ((q >= high) | (q <= low)).astype(q.dtype) * y",
        "m = ((q >= high) & (q <= low)).astype(q.dtype) * y",
        "the confident teacher's mask never set",
        "losses",
    ),
    Bug(
        "confident_teacher_fallback_q",
        "coleaf_jax/training/losses.py",
        "return m * q + (1.0 - m) * sg(p_anchor)",
        "return m * q + (1.0 - m) * sg(q)",
        "the correlation teacher falls back to the Reference instead of the Anchor",
        "losses",
    ),
    Bug(
        "correlation_scaling_no_class_division",
        "coleaf_jax/training/losses.py",
        "return (err * weights).sum() / p_anchor.shape[-1] * batch",
        "return (err * weights).sum() * batch",
        "the official correlation MSE not divided by the class count",
        "losses",
    ),
    Bug(
        "mutual_g_min",
        "coleaf_jax/training/losses.py",
        "g = jnp.maximum(u_glob, 0.9)[:, None]",
        "g = jnp.minimum(u_glob, 0.9)[:, None]",
        "CMPAE's mutual-learning gate g = min(u, 0.9)",
        "losses",
    ),
    Bug(
        "mutual_negatives_use_max",
        "coleaf_jax/training/losses.py",
        "per = term(p_max, u_max) * y + term(p_mean, u_mean) * (1 - y)",
        "per = term(p_max, u_max) * y + term(p_max, u_mean) * (1 - y)",
        "CMPAE's negatives learn from the most probable modality, not the mean",
        "losses",
    ),
    Bug(
        "cmpae_global_weight",
        "coleaf_jax/training/losses.py",
        '+ w_g * terms["bce_global"]',
        '+ w_v * terms["bce_global"]',
        "CMPAE's global BCE weighted 1 instead of 2",
        "losses",
    ),
    Bug(
        "jomold_largest_self",
        "coleaf_jax/training/losses.py",
        "large_self = rank_self >= count - n",
        "large_self = rank_self < n",
        "JoMoLD drops the smallest own losses instead of the largest",
        "losses",
    ),
    Bug(
        "jomold_visual_ratio_from_audio",
        "coleaf_jax/training/losses.py",
        "drop_v = drop(gv, loss_v, loss_a, ratio_v)",
        "drop_v = drop(gv, loss_v, loss_a, ratio_a)",
        "JoMoLD's visual drops use the audio ratios",
        "losses",
    ),
    Bug(
        "jomold_counts_rounded",
        "coleaf_jax/training/losses.py",
        "table = np.floor(ratio.astype(np.float64)[:, None] * np.arange(max_count + 1))",
        "table = np.round(ratio.astype(np.float64)[:, None] * np.arange(max_count + 1))",
        "JoMoLD's drop counts rounded instead of floored",
        "losses",
    ),
    Bug(
        "reference_weak_weight_kept",
        "coleaf_jax/training/objectives.py",
        "weak=1.0 - kd_on * (1.0 - lc.kd_weight),",
        "weak=1.0,",
        "the Reference's weak term not halved when KD starts",
        "schedule",
    ),
    Bug(
        "mutual_parity_flipped",
        "coleaf_jax/training/objectives.py",
        "parity=(index_in_epoch % 2 == 1).astype(jnp.float32),",
        "parity=(index_in_epoch % 2 == 0).astype(jnp.float32),",
        "CMPAE's mutual-learning direction in the opposite phase",
        "schedule",
    ),
    Bug(
        "collab_one_epoch_late",
        "coleaf_jax/training/objectives.py",
        "collab=_switch(epoch, lc.collab_start_epoch, 0.0, 1.0),",
        "collab=_switch(epoch, lc.collab_start_epoch + 1, 0.0, 1.0),",
        "the collaborative terms switched on one epoch late",
        "schedule",
    ),
    Bug(
        "denoise_from_epoch_3",
        "coleaf_jax/training/step.py",
        "return jnp.where(epoch >= 1, 1.0, 0.0)",
        "return jnp.where(epoch >= 2, 1.0, 0.0)",
        "JoMoLD switched on one epoch late",
        "schedule",
    ),
    Bug(
        "adam_b2",
        "configs/llp.py",
        "c.adam_betas = (0.9, 0.999)",
        "c.adam_betas = (0.9, 0.99)",
        "Adam's beta2 0.99 instead of torch's 0.999",
        "schedule",
    ),
    Bug(
        "modality_pool_over_time",
        "coleaf_jax/models/mmil.py",
        "w_m = jax.nn.softmax(mod_logits, axis=2)",
        "w_m = jax.nn.softmax(mod_logits, axis=1)",
        "HAN's modality attention normalised over segments",
        "models",
    ),
    Bug(
        "attention_init_bound",
        "coleaf_jax/models/init.py",
        "in_bound = math.sqrt(6.0 / (d_model + 3 * d_model))",
        "in_bound = math.sqrt(6.0 / (d_model + d_model))",
        "attention in-projection xavier bound from (D, D) instead of (3D, D)",
        "models",
    ),
    Bug(
        "event_iou_strict",
        "coleaf_jax/evaluation/metrics.py",
        "match = (2 * inter >= union) & pv[..., :, None] & gv[..., None, :]",
        "match = (2 * inter > union) & pv[..., :, None] & gv[..., None, :]",
        "event matching at IoU > 0.5 instead of >= 0.5",
        "evaluation",
    ),
    Bug(
        "video_f_empty_scores_zero",
        "coleaf_jax/evaluation/metrics.py",
        "return np.where(n_occ > 0, f.sum(axis=-1) / np.maximum(n_occ, 1), 1.0)",
        "return np.where(n_occ > 0, f.sum(axis=-1) / np.maximum(n_occ, 1), 0.0)",
        "a video with no event in prediction or truth scored 0 instead of 1",
        "evaluation",
    ),
    Bug(
        "audio_only_map",
        "coleaf_jax/evaluation/metrics.py",
        'return {"a": a, "v": v, "av": a & v, "ao": a & ~v, "vo": v & ~a}',
        'return {"a": a, "v": v, "av": a & v, "ao": a & ~a, "vo": v & ~a}',
        "the audible-only map empty",
        "evaluation",
    ),
    Bug(
        "official_segment_threshold",
        "coleaf_jax/evaluation/metrics.py",
        "video_a=0.52, video_v=0.52, segment_a=0.25, segment_v=0.25,",
        "video_a=0.52, video_v=0.52, segment_a=0.25, segment_v=0.5,",
        "the official visual segment threshold 0.5 instead of 0.25",
        "evaluation",
    ),
    Bug(
        "visual_gate_from_audio",
        "coleaf_jax/evaluation/metrics.py",
        "gate_v = np.asarray(video_prob_v) >= np.asarray(thresholds.video_v)",
        "gate_v = np.asarray(video_prob_a) >= np.asarray(thresholds.video_v)",
        "the visual video-level gate read from the audio probability",
        "evaluation",
    ),
    # --- VALOR's recipe (configs/valor.py; judged by tools/valor_parity.py's fixture) --
    Bug(
        "valor_clip_without_epsilon",
        "coleaf_jax/training/step.py",
        "scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))",
        "scale = jnp.minimum(1.0, max_norm / norm)",
        "torch's clipping without its 1e-6",
        "optimiser",
    ),
    Bug(
        "valor_decay_coupled",
        "coleaf_jax/training/step.py",
        "    parts = []\n    if config.grad_clip_norm > 0:",
        "    parts = []\n    if config.optimizer == 'adamw' and config.weight_decay > 0:\n"
        "        parts.append(optax.add_decayed_weights(config.weight_decay))\n"
        "    if config.grad_clip_norm > 0:",
        "AdamW's decay added to the gradient before clipping and Adam (L2, not decoupled)",
        "optimiser",
    ),
    Bug(
        "valor_warmup_from_zero",
        "coleaf_jax/training/step.py",
        "e = jnp.asarray(epoch, jnp.result_type(float)) + 1.0",
        "e = jnp.asarray(epoch, jnp.result_type(float))",
        "the warm-up counted from epoch 0 (VALOR sets the rate before 1-based epochs)",
        "schedule",
    ),
    Bug(
        "valor_parallel_update",
        "coleaf_jax/models/layers.py",
        "return out_a, one_stream(x_v, out_a if audio_first else x_a)",
        "return out_a, one_stream(x_v, x_a)",
        "VALOR's visual stream updated from the layer's input, not the updated audio",
        "models",
    ),
    Bug(
        "valor_pseudo_weight_one",
        "configs/valor.py",
        "c.loss.pseudo_label_segment_weight = 2.0",
        "c.loss.pseudo_label_segment_weight = 1.0",
        "VALOR's two modality BCEs averaged instead of summed",
        "objectives",
    ),
    Bug(
        "valor_selection_avvp",
        "configs/valor.py",
        'c.eval.selection = "type"',
        'c.eval.selection = "avvp"',
        "VALOR's checkpoint chosen by CoLeaF's criterion, not validation segment Type@AV",
        "evaluation",
    ),
    Bug(
        "reference_class_tokens_mean_over_time",
        "coleaf_jax/models/reference.py",
        'out["class_prob"] = jax.nn.sigmoid(h[:, :c].mean(axis=-1))',
        'out["class_prob"] = jax.nn.sigmoid(h[:, :c].max(axis=-1))',
        "the Reference's class tokens pooled by max instead of mean",
        "models",
    ),
]


def _copy_tree(dest: str) -> None:
    """Tracked and untracked (not ignored) files of the working tree into ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in (p.decode() for p in listed if p):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def plant(bug: Bug, root: str) -> None:
    path = os.path.join(root, bug.path)
    with open(path) as f:
        text = f.read()
    count = text.count(bug.old)
    if count != 1:
        raise SystemExit(
            f"error: bug {bug.name}: {bug.path} holds its text {count} times, not once"
        )
    with open(path, "w") as f:
        f.write(text.replace(bug.old, bug.new))


def checks(root: str) -> list[tuple[str, list[str]]]:
    """The checks in order: (label, argv), run with cwd ``root``."""
    py = sys.executable
    pytest = [py, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider"]
    out = [("unit tests", [*pytest, *UNIT_TESTS])]
    for fixture in sorted(glob.glob(os.path.join(root, "tests", "fixtures", "parity_*.npz"))):
        rel = os.path.relpath(fixture, root)
        name = os.path.basename(fixture)
        tool = next((t for prefix, t in REPLAYS.items() if name.startswith(prefix)), DEFAULT_REPLAY)
        out.append((f"replay {name}", [py, tool, "compare", rel]))
    return out


def run_bug(bug: Bug | None, timeout: float) -> tuple[str, float]:
    """``(caught by, seconds)``: the first failing test (``file::name``) or replay;
    ``'ESCAPED'`` when every check passes. ``bug=None``: the control (nothing planted)."""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix=f"bug_{bug.name if bug else 'control'}_") as scratch:
        _copy_tree(scratch)
        if bug is not None:
            plant(bug, scratch)
        env = dict(
            os.environ,
            PYTHONPATH=scratch,
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            JAX_PLATFORMS="cpu",
        )
        probe = subprocess.run(
            [sys.executable, "-c", "import coleaf_jax; print(coleaf_jax.__file__)"],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
        )
        if not probe.stdout.startswith(scratch):
            raise SystemExit(f"error: the scratch copy's package is not imported: {probe.stdout}")
        for label, argv in checks(scratch):
            try:
                proc = subprocess.run(
                    argv, cwd=scratch, env=env, capture_output=True, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                return f"{label} (timeout)", time.time() - started
            if proc.returncode != 0:
                failed = [
                    line.split()[1].split("[")[0].removeprefix("tests/")
                    for line in proc.stdout.decode(errors="replace").splitlines()
                    if line.startswith("FAILED ")
                ]
                return (failed[0] if failed else label), time.time() - started
    return "ESCAPED", time.time() - started


def table(results: list[tuple[Bug, str, float]]) -> str:
    lines = ["| bug | group | planted | caught by | s |", "|---|---|---|---|---|"]
    for bug, caught, seconds in results:
        mark = f"**{caught}**" if caught == "ESCAPED" else caught
        lines.append(f"| `{bug.name}` | {bug.group} | {bug.what} | {mark} | {seconds:.0f} |")
    caught = sum(c != "ESCAPED" for _, c, _ in results)
    lines.append("")
    lines.append(
        f"{caught} of {len(results)} caught ({datetime.date.today().isoformat()}, "
        f"`python tools/plant_bugs.py`)."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bug", action="append", help="only this bug (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per check")
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument(
        "--no-control",
        action="store_true",
        help="skip the control run (the checks with no bug planted must pass first)",
    )
    args = parser.parse_args(argv)
    bugs = BUGS
    if args.bug:
        known = {b.name: b for b in BUGS}
        unknown = [n for n in args.bug if n not in known]
        if unknown:
            parser.error(f"unknown bug(s): {', '.join(unknown)} (--list shows them)")
        bugs = [known[n] for n in args.bug]
    if args.list:
        for b in bugs:
            print(f"{b.name:40s} {b.group:11s} {b.what}")
        return 0
    for b in bugs:  # every bug applies to today's code before anything runs
        with open(os.path.join(ROOT, b.path)) as f:
            if f.read().count(b.old) != 1:
                parser.error(f"bug {b.name}: its text is not (once) in {b.path}")
    if not args.no_control:
        failed, seconds = run_bug(None, args.timeout)
        if failed != "ESCAPED":
            raise SystemExit(
                f"error: with no bug planted the checks fail ({failed}, {seconds:.0f} s): "
                f"a catch table would mean nothing; fix them first"
            )
        print(f"control (no bug): every check passes ({seconds:.0f} s)", flush=True)
    results = []
    for i, b in enumerate(bugs, 1):
        caught, seconds = run_bug(b, args.timeout)
        print(f"[{i}/{len(bugs)}] {b.name}: {caught} ({seconds:.0f} s)", flush=True)
        results.append((b, caught, seconds))
    text = table(results)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if all(c != "ESCAPED" for _, c, _ in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
