"""Benchmark: compile time, training and evaluation throughput, memory, scaling.

    python -m coleaf_jax.bench [--config configs/llp.py[:variant]] [--batch 128] [--segments 10]
                               [--steps 12] [--eval-videos 1200] [--scaling] [--plain]
                               [--epoch N] [--seeds K] [--profile DIR] [--json OUT]

Full-size LLP shapes on random arrays (no data needed): audio (B, T, 128),
ResNet frames (B, 8T, 2048) — pre-pooled to (B, T, 2048) when the Anchor's
frame projection is linear, as training does — and R(2+1)D (B, T, 512).
Reports the compile time of the train step, steady-state training videos/s
(median of ``--steps`` steps after two warm-up steps, with min and max),
evaluation videos/s with and without the 18 metrics, and peak host memory.
It also measures this machine's own float32 matmul rate (the best of a few
large jitted matmuls) and reports the FLOP rate of the train step and of the
evaluation forward (XLA's FLOP count / measured time) as a fraction of it:
how close to the machine's limit the step runs, checked on every machine.
``--scaling`` adds training videos/s for batch 32/64/128/256 (T = 10) and
T = 10/30/60 (batch 128). ``--plain`` measures the unoptimised step (every
frame projected, the Anchor's forward pass recomputed inside its loss: the
authors' structure, same maths) for before/after tables. ``--epoch N`` times
whole epochs over N resident videos: host input pipeline, device-resident
batches, the epoch as one ``lax.scan``, and ``--seeds K`` models at once
(``config.num_seeds``) against K single runs. ``--profile DIR`` traces three
more training steps with ``jax.profiler`` (the trace stays in DIR for
TensorBoard/Perfetto) and prints where the step's time goes: the kernels of
the compiled step grouped by kind (``dot``, ``copy_bitcast_fusion``,
``wrapped_reduce-window``, ...) with their time per step. Measure on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import platform
import re
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from coleaf_jax import cli, fileio
from coleaf_jax.config import config_flags_as_set, load_config_file
from coleaf_jax.data import pipeline
from coleaf_jax.data.classes import LLP_FRAMES_PER_SEGMENT
from coleaf_jax.evaluation import evaluate
from coleaf_jax.training import device_data
from coleaf_jax.training import seeds as seeds_lib
from coleaf_jax.training import step as step_lib
from coleaf_jax.training.workdir import check_output

NUM_CLASSES = 25


def random_split(
    n: int, t: int, pooled: bool, seed: int = 0, dense: bool = False, pseudo: bool = False
) -> dict:
    """Random arrays with LLP shapes (``n`` videos of ``t`` segments); ``pseudo``: segment
    pseudo-labels ``pl_audio``, ``pl_visual`` ``(n, t, C)`` within the weak labels."""
    rng = np.random.default_rng(seed)
    frames = t if pooled else t * LLP_FRAMES_PER_SEGMENT
    data = {
        "audio": rng.standard_normal((n, t, 128), np.float32),
        "video_2d": np.abs(rng.standard_normal((n, frames, 2048), np.float32)),
        "video_3d": rng.standard_normal((n, t, 512), np.float32),
        "label": (rng.random((n, NUM_CLASSES)) < 0.08).astype(np.float32),
    }
    if dense:
        for k in ("label_audio", "label_visual"):
            data[k] = (rng.random((n, t, NUM_CLASSES)) < 0.05).astype(np.float32)
    if pseudo:
        for k in ("pl_audio", "pl_visual"):
            data[k] = (rng.random((n, t, NUM_CLASSES)) < 0.5) * data["label"][:, None, :]
    return data


def _batch(data: dict, b: int) -> dict:
    n, t = data["audio"].shape[:2]
    keys = ("audio", "video_2d", "video_3d", "label", "pl_audio", "pl_visual")
    batch = {k: jnp.asarray(data[k][:b]) for k in keys if k in data}
    batch["mask"] = jnp.ones((b, t), bool)
    batch["video_mask"] = jnp.ones((b,), jnp.float32)
    return batch


def bench_train(
    config,
    batch_size: int,
    segments: int,
    steps: int,
    plain: bool = False,
    profile_dir: str | None = None,
) -> dict:
    """Compile time and steady-state training throughput of one jitted step; with
    ``profile_dir``, also the step's kernels by kind (:func:`profile_kernels`)."""
    pooled = pipeline.can_pool_frames(config)
    pseudo = config.data.pseudo_labels
    batch = _batch(random_split(batch_size, segments, pooled, pseudo=pseudo), batch_size)
    state, anchor, reference, tx = step_lib.create_train_state(
        config, jax.random.key(0), batch, 100, NUM_CLASSES
    )
    step = jax.jit(step_lib.make_train_step(config, anchor, reference, tx, None, 100, plain=plain))
    key, epoch = jax.random.key(1), jnp.int32(config.num_epochs - 1)  # every term on
    t0 = time.perf_counter()
    lowered = step.lower(state, batch, epoch, key)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops = _flops(lowered)
    for _ in range(2):
        state, _ = compiled(state, batch, epoch, key)
    jax.block_until_ready(state)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, logs = compiled(state, batch, epoch, key)
        jax.block_until_ready((state, logs))
        times.append(time.perf_counter() - t0)
    kernels = None
    if profile_dir:
        with jax.profiler.trace(profile_dir):
            for _ in range(PROFILED_STEPS):
                state, logs = compiled(state, batch, epoch, key)
                jax.block_until_ready((state, logs))
        kernels = profile_kernels(profile_dir, PROFILED_STEPS)
    return {
        "kernels": kernels,
        "compile_s": compile_s,
        "step_s_median": statistics.median(times),
        "step_gflop": flops / 1e9,
        "gflops": flops / statistics.median(times) / 1e9,
        "videos_per_s_median": batch_size / statistics.median(times),
        "videos_per_s_min": batch_size / max(times),
        "videos_per_s_max": batch_size / min(times),
        "steps": steps,
    }


PROFILED_STEPS = 3
# Trace events that are not kernels of the compiled program (runtime, Python, thread pools).
_NOT_KERNELS = ("ThunkExecutor", "ThreadpoolListener", "$", "PjitFunction", "CommonPjRt", "end: ")


def profile_kernels(profile_dir: str, steps: int) -> list[dict]:
    """The kernels of the newest ``jax.profiler`` trace in ``profile_dir``, grouped by kind.

    A kernel's kind is its HLO name without the trailing ``.N`` (``copy_bitcast_fusion.87``
    → ``copy_bitcast_fusion``). Returns rows ``{kind, ms_per_step, count_per_step}``, the
    longest first. Times are summed over the threads that ran them (on a CPU, XLA's Eigen
    pool), so they add up to more than the step's wall clock when kernels overlap. On a
    CPU the ``dot`` rows time only the matmuls XLA runs inline; those it hands to Eigen's
    pool run outside any kernel event.
    """
    traces = sorted(glob.glob(os.path.join(profile_dir, "**", "*.xplane.pb"), recursive=True))
    if not traces:
        raise FileNotFoundError(f"{profile_dir}: no *.xplane.pb trace was written there")
    data = jax.profiler.ProfileData.from_file(max(traces, key=os.path.getmtime))
    total: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name.startswith(_NOT_KERNELS):
                    continue
                kind = re.sub(r"\.\d+$", "", event.name)
                total[kind] += event.duration_ns
                count[kind] += 1
    return [
        {"kind": k, "ms_per_step": v / 1e6 / steps, "count_per_step": count[k] / steps}
        for k, v in sorted(total.items(), key=lambda kv: -kv[1])
    ]


# Matmul shapes of the step: the per-frame ResNet projection, a D x D layer, the FFN.
MATMUL_SHAPES = ((10240, 2048, 512), (4096, 512, 512), (8192, 1024, 512))


def matmul_rate(repeats: int = 5) -> dict:
    """This machine's float32 matmul rate: GFLOP/s of jitted ``(m, k) @ (k, n)`` products
    at the matmul precision in effect, the best over ``MATMUL_SHAPES`` (each the median of
    ``repeats``)."""
    rates = {}
    for m, k, n in MATMUL_SHAPES:
        a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k), np.float32))
        b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n), np.float32))
        f = jax.jit(jnp.dot)  # at the precision in effect (config.matmul_precision)
        jax.block_until_ready(f(a, b))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(a, b))
            times.append(time.perf_counter() - t0)
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n / statistics.median(times) / 1e9
    return {"gflops_by_shape": rates, "gflops": max(rates.values())}


def _flops(lowered) -> float:
    """XLA's FLOP count of a lowered program, before backend compilation (a GPU backend's
    own count misses the matmuls it hands to cuBLAS); 0 when none is given."""
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def bench_epoch(config, n: int, segments: int, seeds: int) -> dict:
    """Seconds per training epoch over ``n`` videos (after a compiling epoch)."""
    pooled = pipeline.can_pool_frames(config)
    data = random_split(n, segments, pooled, seed=2, pseudo=config.data.pseudo_labels)
    b = config.batch_size
    spe = pipeline.num_batches(n, b)
    state, anchor, reference, tx = step_lib.create_train_state(
        config, jax.random.key(0), _batch(data, 2), spe, NUM_CLASSES
    )
    step = step_lib.make_train_step(config, anchor, reference, tx, None, spe)
    device_step = device_data.make_device_step(step, b)
    order = jnp.asarray(device_data.padded_order(np.arange(n), b))
    resident = jax.device_put(pipeline.resident_fields(data))
    key, epoch = jax.random.key(1), jnp.int32(config.num_epochs - 1)

    host_step, dev_step = jax.jit(step), jax.jit(device_step)
    scan = jax.jit(device_data.make_scan_epoch(device_step, spe))

    def host_epoch(s):
        for batch in pipeline.epoch_batches(data, b):
            s, _ = host_step(s, {k: jnp.asarray(v) for k, v in batch.items()}, epoch, key)
        return s

    def device_epoch(s):
        for i in range(spe):
            s, _ = dev_step(s, resident, order, jnp.int32(i), epoch, key)
        return s

    modes = {
        "host pipeline": host_epoch,
        "device-resident": device_epoch,
        "device-resident, lax.scan epoch": lambda s: scan(s, resident, order, epoch, key)[0],
    }
    result = {"videos": n, "batch": b, "epoch_s": {}}
    for name, fn in modes.items():
        _timed(fn, state)  # compile
        result["epoch_s"][name] = _timed(fn, state)
    if seeds > 1:
        vstep = jax.jit(seeds_lib.vmap_seeds(device_step))
        stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x] * seeds), state)
        orders, keys = jnp.stack([order] * seeds), jax.random.split(key, seeds)

        def seeds_epoch(s):
            for i in range(spe):
                s, _ = vstep(s, resident, orders, jnp.int32(i), epoch, keys)
            return s

        _timed(seeds_epoch, stacked)
        result["seeds"] = seeds
        result["epoch_s"][f"{seeds} seeds at once (vmap)"] = _timed(seeds_epoch, stacked)
        result["epoch_s"][f"{seeds} single runs (device-resident)"] = (
            seeds * result["epoch_s"]["device-resident"]
        )
    return result


def bench_eval(config, n: int, segments: int) -> dict:
    """Evaluation throughput over ``n`` videos, forward only and forward + 18 metrics."""
    pooled = pipeline.can_pool_frames(config)
    data = random_split(n, segments, pooled, seed=1, dense=True)
    anchor = step_lib.build_models(config, NUM_CLASSES)[0]
    sample = _batch(data, 2)
    params = anchor.init(
        jax.random.key(0), sample["audio"], sample["video_2d"], sample["video_3d"], sample["mask"]
    )["params"]
    predict = evaluate.make_predict_fn(anchor)
    thresholds = evaluate.thresholds_from_config(config)
    b = min(config.eval.batch_size, n)
    one = {k: jnp.asarray(v) for k, v in pipeline.make_batch(data, np.arange(b), b).items()}
    gflop = _flops(jax.jit(predict).lower(params, one)) / 1e9 * pipeline.num_batches(n, b)
    evaluate.predict_split(predict, params, data, config.eval.batch_size)  # compile
    t0 = time.perf_counter()
    probs = evaluate.predict_split(predict, params, data, config.eval.batch_size)
    forward_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate.score_split(probs, data, thresholds)
    metrics_s = time.perf_counter() - t0
    return {
        "videos": n,
        "forward_s": forward_s,
        "metrics_s": metrics_s,
        "forward_gflop": gflop,
        "forward_gflops": gflop / forward_s,
        "total_s": forward_s + metrics_s,
        "videos_per_s_forward": n / forward_s,
        "videos_per_s_with_metrics": n / (forward_s + metrics_s),
    }


def peak_host_memory_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coleaf_jax.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default="configs/llp.py", help="FILE.py[:variant]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-videos", type=int, default=1200)
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="the unoptimised step: per-frame projection, Anchor recomputed",
    )
    parser.add_argument(
        "--epoch",
        type=int,
        default=0,
        metavar="N",
        help="also time whole epochs over N videos (host, resident, scan)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="K",
        help="with --epoch: K models at once (vmap) against K single runs",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="trace 3 training steps into DIR and print the step's kernels by kind",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(config_flags_as_set(sys.argv[1:] if argv is None else argv))
    # Outputs first (never a run's records), then the config: one error: line each.
    if args.json:
        cli.exit_on_user_error(check_output, args.json, "--json")
    if args.profile:
        cli.exit_on_user_error(check_output, args.profile, "--profile", folder=True)
    config = cli.exit_on_user_error(load_config_file, args.config, args.set)
    cli.remember_config(config, ("batch_size", "eval.batch_size"))  # for an out-of-memory line
    if args.plain:
        config.model.pool_frames_first = False
    result = {
        "config": config.name,
        "method": config.method,
        "anchor": config.model.anchor,
        "device": str(jax.devices()[0]),
        "device_count": jax.device_count(),
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "batch": args.batch,
        "segments": args.segments,
        "plain": args.plain,
    }
    print(
        f"{config.name}{' (plain step)' if args.plain else ''}: batch {args.batch}, "
        f"T {args.segments}, on {result['device']}, matmul precision "
        f"{config.matmul_precision}",
        flush=True,
    )
    result["matmul_precision"] = config.matmul_precision
    with step_lib.matmul_precision(config):
        cli.exit_on_user_error(_run, config, args, result)
    result["peak_host_memory_mib"] = peak_host_memory_mib()
    print(f"peak host memory {result['peak_host_memory_mib']:.0f} MiB")
    if args.json:  # whole or not at all
        cli.exit_on_user_error(fileio.atomic_write_json, args.json, result)
    return 0


def _print_kernels(kernels: list[dict], step_s: float, profile_dir: str, top: int = 12) -> None:
    busy = sum(k["ms_per_step"] for k in kernels)
    print(
        f"profile ({PROFILED_STEPS} steps, trace in {profile_dir}): kernel time "
        f"{busy:.0f} ms per step over all threads (step {1e3 * step_s:.0f} ms wall)"
    )
    if not kernels:
        print("  no kernel events in the trace")
    for k in kernels[:top]:
        print(
            f"  {k['ms_per_step']:8.1f} ms  {k['count_per_step']:6.0f} x  {k['kind']}",
            flush=True,
        )


def _run(config, args, result: dict) -> None:
    result["matmul"] = matmul_rate()
    peak = result["matmul"]["gflops"]
    print(
        f"this machine's float32 matmul rate: {peak:.0f} GFLOP/s (best of "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["matmul"]["gflops_by_shape"].items())
        + ")",
        flush=True,
    )
    result["train"] = bench_train(
        config, args.batch, args.segments, args.steps, args.plain, args.profile
    )
    tr = result["train"]
    tr["fraction_of_matmul_rate"] = tr["gflops"] / peak
    print(
        f"train: compile {tr['compile_s']:.1f}s, {tr['videos_per_s_median']:.1f} videos/s "
        f"(min {tr['videos_per_s_min']:.1f}, max {tr['videos_per_s_max']:.1f}; "
        f"{tr['step_s_median']:.3f}s/step); {tr['step_gflop']:.0f} GFLOP per step, "
        f"{tr['gflops']:.0f} GFLOP/s = {100 * tr['fraction_of_matmul_rate']:.0f} % of the "
        f"matmul rate",
        flush=True,
    )
    if tr["kernels"] is not None:
        _print_kernels(tr["kernels"], tr["step_s_median"], args.profile)
    if args.eval_videos:
        result["eval"] = bench_eval(config, args.eval_videos, args.segments)
        ev = result["eval"]
        ev["fraction_of_matmul_rate"] = ev["forward_gflops"] / peak
        print(
            f"eval {ev['videos']} videos: forward {ev['forward_s']:.2f}s, metrics "
            f"{ev['metrics_s']:.2f}s, total {ev['total_s']:.2f}s "
            f"({ev['videos_per_s_with_metrics']:.0f} videos/s); forward {ev['forward_gflop']:.0f} "
            f"GFLOP at {ev['forward_gflops']:.0f} GFLOP/s = "
            f"{100 * ev['fraction_of_matmul_rate']:.0f} % of the matmul rate "
            f"(floor {ev['forward_gflop'] / peak:.2f}s)",
            flush=True,
        )
    if args.epoch:
        config.batch_size = args.batch
        result["epoch"] = bench_epoch(config, args.epoch, args.segments, args.seeds)
        for name, sec in result["epoch"]["epoch_s"].items():
            k = args.seeds if "seeds" in name or "single runs" in name else 1
            print(
                f"epoch of {args.epoch} videos, {name}: {sec:.2f}s "
                f"({k * args.epoch / sec:.1f} videos/s)",
                flush=True,
            )
    if args.scaling:
        result["scaling"] = {"batch": {}, "segments": {}}
        for b in (32, 64, 128, 256):
            r = bench_train(config, b, 10, max(3, args.steps // 2))
            result["scaling"]["batch"][b] = r["videos_per_s_median"]
            print(f"  batch {b:>3}, T 10: {r['videos_per_s_median']:.1f} videos/s", flush=True)
        for t in (10, 30, 60):
            r = bench_train(config, 128, t, max(3, args.steps // 2))
            result["scaling"]["segments"][t] = r["videos_per_s_median"]
            print(f"  batch 128, T {t:>2}: {r['videos_per_s_median']:.1f} videos/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
