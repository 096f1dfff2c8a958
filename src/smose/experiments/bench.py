"""Learning-step throughput of smose against Stable-Baselines3 and SBX, the FLOP floor, scaling and buffer memory.

    smose bench throughput --repeats 3 --out benchmarks/results/throughput   (or python benchmarks/throughput.py ...)

Each measurement runs in its own subprocess with one compute thread (one run per core is the fastest way to use this
CPU), contenders interleaved A/B/C/D per repeat so that machine noise hits all of them alike. A "learning step" is
one env step plus one SAC update (batch 256, twin 256-256 critics, buffer capacity 1e6), timed after the warm-up and
after `--warm-updates` updates (JIT compilation for SBX). SB3 and SBX come from the `bench` extra.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from smose.limits import MAX_REPEATS, MAX_STEPS, Count

CONTENDERS = ("smose", "sac-l", "sb3", "sbx")
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


# ---- workers (run in subprocesses) ----------------------------------------------------------------------------------
def worker_ours(algo: str, env_id: str, learning_starts: int, warm: int, measure: int, seed: int) -> dict:
    import numpy as np
    import torch

    from smose.training.config import TrainConfig
    from smose.training.trainer import Trainer

    config = TrainConfig(env=env_id, algo=algo, learning_starts=learning_starts, eval_every=0, threads=1, seed=seed)
    trainer = Trainer(config)
    trainer.run(learning_starts + warm)
    start = time.perf_counter()
    trainer.run(learning_starts + warm + measure)
    elapsed = time.perf_counter() - start
    # Update alone (with its replay sampling), on the same filled buffer: what the FLOP floor is compared against.
    rng = np.random.default_rng(seed)
    update_ms = time_updates(lambda: trainer.learner.update(trainer.buffer.sample(config.batch_size, rng)),
                             max(200, measure // 4))
    return {"sps": measure / elapsed, **update_ms, "torch_threads": torch.get_num_threads()}


def time_updates(update, n: int, sync=lambda: None) -> dict:
    """Mean wall-clock and CPU (process) milliseconds per call; CPU time ignores other processes' load."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        update()
    sync()
    return {"update_ms": (time.perf_counter() - wall) / n * 1e3, "update_cpu_ms": (time.process_time() - cpu) / n * 1e3}


class _Clock:
    """SB3/SBX callback: time between two step counts."""

    def __init__(self, start_step: int):
        self.start_step, self.t0 = start_step, None

    def make(self):
        from stable_baselines3.common.callbacks import BaseCallback

        clock = self

        class Callback(BaseCallback):
            def _on_step(self) -> bool:
                if self.num_timesteps == clock.start_step:
                    clock.t0 = time.perf_counter()
                return True

        return Callback()


def worker_sb3_like(kind: str, env_id: str, learning_starts: int, warm: int, measure: int, seed: int) -> dict:
    import gymnasium as gym

    if kind == "sb3":
        import torch
        from stable_baselines3 import SAC

        torch.set_num_threads(1)
        extra = {"device": "cpu"}
    else:
        from sbx import SAC

        extra = {}
    env = gym.make(env_id)
    model = SAC("MlpPolicy", env, learning_starts=learning_starts, batch_size=256, buffer_size=1_000_000,
                train_freq=1, gradient_steps=1, policy_kwargs={"net_arch": [256, 256]}, seed=seed, verbose=0, **extra)
    clock = _Clock(learning_starts + warm)
    model.learn(learning_starts + warm + measure, callback=clock.make())
    elapsed = time.perf_counter() - clock.t0
    def sync() -> None:  # JAX dispatches asynchronously: wait for the last update's result before reading clocks
        if kind == "sbx":
            import jax

            jax.block_until_ready(model.policy.qf_state.params)

    update_ms = time_updates(lambda: model.train(gradient_steps=1, batch_size=256), max(200, measure // 4), sync)
    return {"sps": measure / elapsed, **update_ms}


def gemm_gflops(size: int = 256, repeats: int = 2000, batch: int = 1) -> float:
    """One core's fp32 GEMM rate on [batch, size, size] @ [batch, size, size] (batch 2 = the twin critics' GEMMs)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(batch, size, size), torch.randn(batch, size, size)
    out = torch.empty(batch, size, size)
    for _ in range(100):
        torch.bmm(a, b, out=out)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats // 5):
            torch.bmm(a, b, out=out)
        times.append((time.perf_counter() - start) / (repeats // 5))
    times.sort()
    return 2 * batch * size**3 / times[len(times) // 2] / 1e9


def worker_memory(env_id: str, capacity: int) -> dict:
    """Peak RSS of a trainer whose replay buffer of ``capacity`` rows is completely filled."""
    import numpy as np

    from smose.training.config import TrainConfig
    from smose.training.trainer import Trainer

    trainer = Trainer(TrainConfig(env=env_id, buffer_size=capacity, eval_every=0, threads=1))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    buffer = trainer.buffer
    rng = np.random.default_rng(0)
    chunk = 50_000
    row = np.zeros(buffer.width, dtype=np.float32)
    for start in range(0, capacity, chunk):  # writes every row, as a full run would
        rows = min(chunk, capacity - start)
        buffer.data[start:start + rows] = rng.standard_normal((rows, buffer.width), dtype=np.float32)
    buffer.size, buffer.pos = capacity, 0
    buffer.add(row[: buffer.n_obs], row[: buffer.n_act], 0.0, row[: buffer.n_obs], False)
    for _ in range(200):
        trainer.learner.update(buffer.sample(256, rng))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"env": env_id, "capacity": capacity, "row_floats": buffer.width, "storage_bytes": buffer.nbytes,
            "baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
            "overhead_bytes": peak - baseline - buffer.nbytes}


# ---- FLOP model -----------------------------------------------------------------------------------------------------
def update_flops(n_obs: int, n_act: int, algo: str, executed: bool = True, batch: int = 256, hidden: int = 256,
                 n_experts: int = 8) -> float:
    """GEMM FLOPs of one learning step (elementwise work is ignored); a multiply-add counts as 2.

    With policy delay d there are d actor and d α steps every d steps, so one of each per learning step on average.
    ``executed=False`` counts what autograd computes; ``executed=True`` what smose computes. In the actor step the
    gradient of min(Q1, Q2) reaches only the smaller twin of each row, so smose back-propagates each row through one
    twin, and to the action columns only (autograd runs both twins over every row, to all inputs).
    """
    def gemm(rows: int, fan_in: int, fan_out: int) -> float:
        return 2.0 * rows * fan_in * fan_out

    twins = 2
    critic_layers = [(n_obs + n_act, hidden), (hidden, hidden), (hidden, 1)]
    fwd = twins * sum(gemm(batch, i, o) for i, o in critic_layers)
    weight_grads = fwd
    input_grads_inner = twins * sum(gemm(batch, i, o) for i, o in critic_layers[1:])
    if executed:  # B rows in all through the inner layers, then only to the actions
        actor_input_grads = sum(gemm(batch, i, o) for i, o in critic_layers[1:]) + gemm(batch, hidden, n_act)
    else:
        actor_input_grads = fwd
    if algo == "smose":
        actor_layers = [(n_obs, n_experts), (n_obs, n_experts * 2 * n_act)]
    elif algo == "sac-l":
        actor_layers = [(n_obs, 256), (256, 256), (256, 2 * n_act)]
    else:
        raise ValueError(algo)
    actor_fwd = sum(gemm(batch, i, o) for i, o in actor_layers)
    # critic step: target actor + target twin + online twin forward, online backward (weights + inner inputs)
    critic_step = actor_fwd + fwd + fwd + weight_grads + input_grads_inner
    # actor step: actor fwd + twin fwd + twin input grads (critic weights fixed) + actor backward (≈ 2 × its forward);
    # the α step re-samples the policy (one actor forward)
    actor_step = actor_fwd + fwd + actor_input_grads + 2 * actor_fwd + actor_fwd
    return critic_step + actor_step


# ---- driver ---------------------------------------------------------------------------------------------------------
def _pin_to(cpu: int):
    """preexec hook: keep the worker and every thread it starts on one core. Thread-count settings alone do not
    bind every library (XLA's CPU client still used about 1.75 cores), and one run per core is the comparison."""
    return lambda: os.sched_setaffinity(0, {cpu % os.cpu_count()})


def run_parallel(args_list: list[list[str]]) -> list[dict]:
    """Start one worker per entry, worker i pinned to core i, and wait for all of them."""
    env = {**os.environ, **SINGLE_THREAD_ENV}
    procs = [subprocess.Popen([sys.executable, "-m", "smose.experiments.bench", "--worker", *a], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_pin_to(i))
             for i, a in enumerate(args_list)]
    out = []
    for a, p in zip(args_list, procs):
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"worker {a} failed:\n{stderr[-2000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def run_worker(args: list[str]) -> dict:
    return run_parallel([args])[0]


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    from smose.cli import OneLineParser

    parser = OneLineParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--repeats", type=Count(1, MAX_REPEATS), default=3)
    parser.add_argument("--learning-starts", type=Count(0, MAX_STEPS), default=1000)
    parser.add_argument("--warm", type=Count(0, MAX_STEPS), default=500, help="learning steps before timing starts")
    parser.add_argument("--measure", type=Count(1, MAX_STEPS), default=2000,
                        help="timed learning steps per measurement")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--memory-env", default="Ant-v5")
    parser.add_argument("--memory-capacity", type=Count(1, MAX_STEPS), default=1_000_000)
    parser.add_argument("--out", default="benchmarks/results/throughput")
    args = parser.parse_args(argv)

    if args.worker:
        kind, rest = args.worker[0], args.worker[1:]
        if kind in ("smose", "sac-l"):
            env_id, ls, warm, measure, seed = rest[0], *map(int, rest[1:])
            result = worker_ours(kind, env_id, ls, warm, measure, seed)
        elif kind in ("sb3", "sbx"):
            env_id, ls, warm, measure, seed = rest[0], *map(int, rest[1:])
            result = worker_sb3_like(kind, env_id, ls, warm, measure, seed)
        elif kind == "gemm":
            result = {"gflops": gemm_gflops(), "gflops_twin": gemm_gflops(batch=2, repeats=1000)}
        elif kind == "memory":
            result = worker_memory(rest[0], int(rest[1]))
        else:
            raise SystemExit(f"unknown worker {kind}")
        print(json.dumps(result))
        return

    import gymnasium as gym

    env = gym.make(args.env)
    n_obs, n_act = env.observation_space.shape[0], env.action_space.shape[0]
    contenders = args.contenders.split(",")
    common = [args.env, str(args.learning_starts), str(args.warm), str(args.measure)]
    samples: dict[str, list[dict]] = {c: [] for c in contenders}
    gemm: list[dict] = []
    for repeat in range(args.repeats):
        for c in contenders:
            samples[c].append(run_worker([c, *common, str(repeat)]))
            print(f"repeat {repeat} {c}: {samples[c][-1]}", flush=True)
        gemm.append(run_worker(["gemm"]))
    parallel = run_parallel([["smose", *common, str(100 + i)] for i in range(2)])
    single_after = run_worker(["smose", *common, "200"])
    memory = run_worker(["memory", args.memory_env, str(args.memory_capacity)])

    sps = {c: median([s["sps"] for s in samples[c]]) for c in contenders}
    gflops = median([g["gflops"] for g in gemm])
    gflops_twin = median([g["gflops_twin"] for g in gemm])
    update_ms = {c: median([s["update_ms"] for s in samples[c]]) for c in contenders}
    update_cpu_ms = {c: median([s["update_cpu_ms"] for s in samples[c]]) for c in contenders}
    floors = {}
    for c in ("smose", "sac-l"):
        if c in samples:
            flops = update_flops(n_obs, n_act, c)
            floor_ms = flops / (gflops_twin * 1e9) * 1e3  # the twin GEMMs dominate: their rate is the fair one
            floors[c] = {"update_flops": flops, "autograd_flops": update_flops(n_obs, n_act, c, executed=False),
                         "update_ms": update_ms[c], "floor_ms": floor_ms,
                         "floor_over_measured": floor_ms / update_ms[c]}
    single_sps = median([s["sps"] for s in samples["smose"]] + [single_after["sps"]]) if "smose" in samples else None
    result = {
        "command": " ".join([prog or "python -m smose.experiments.bench", *(sys.argv[1:] if argv is None else argv)]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "env": args.env, "settings": {"learning_starts": args.learning_starts, "warm": args.warm,
                                      "measure": args.measure, "repeats": args.repeats, "batch": 256,
                                      "critic": "256-256 twin", "buffer": 1_000_000, "threads_per_run": 1},
        "samples": samples, "median_sps": sps, "median_update_ms": update_ms, "median_update_cpu_ms": update_cpu_ms,
        "gemm_gflops_256": gflops, "gemm_gflops_twin_256": gflops_twin, "floor": floors,
        "parallel_two_runs": {"sps_each": [p["sps"] for p in parallel], "sps_total": sum(p["sps"] for p in parallel),
                              "single_run_sps": single_sps,
                              "scaling": sum(p["sps"] for p in parallel) / single_sps if single_sps else None},
        "memory": memory,
    }
    for ours in ("smose", "sac-l"):
        for ref in ("sb3", "sbx"):
            if ours in sps and ref in sps:
                result.setdefault("ratios", {})[f"{ours}/{ref}"] = sps[ours] / sps[ref]
                result.setdefault("update_speedups", {})[f"{ours}/{ref}"] = update_ms[ref] / update_ms[ours]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [
        f"# Training throughput ({r['env']})", "",
        f"- Command: `{r['command']}`",
        f"- Date: {r['date']}; machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, "
        f"Python {r['machine']['python']}",
        "- Settings: 1 update per env step, batch 256, twin 256-256 critics, buffer 1e6, each run pinned to one core "
        f"(one compute thread), {r['settings']['repeats']} interleaved repeats of {r['settings']['measure']} timed "
        "learning steps (medians).",
        "", "| contender | learning steps/s (median) | samples |", "|---|---|---|",
    ]
    for c, v in r["median_sps"].items():
        runs = ", ".join(f"{s['sps']:.1f}" for s in r["samples"][c])
        lines.append(f"| {c} | {v:.1f} | {runs} |")
    lines += ["", "| ratio | learning steps/s | update alone (inverse time) |", "|---|---|---|"]
    lines += [f"| {k} | {v:.2f}× | {r['update_speedups'][k]:.2f}× |" for k, v in r.get("ratios", {}).items()]
    lines += ["", "Update alone (one SAC update with its replay sampling, no env step), medians:", "",
              "| contender | wall ms | CPU ms |", "|---|---|---|"]
    lines += [f"| {c} | {v:.2f} | {r['median_update_cpu_ms'][c]:.2f} |" for c, v in r["median_update_ms"].items()]
    lines += ["", f"GEMM rate, one thread, same run: {r['gemm_gflops_256']:.1f} GFLOP/s on 256³, "
              f"{r['gemm_gflops_twin_256']:.1f} GFLOP/s on the twin critics' [2,256,256]² (the floor uses the latter).",
              "", "| actor | GEMM FLOPs per learning step (autograd would do) | floor ms | measured update ms | "
              "floor / measured |", "|---|---|---|---|---|"]
    for c, f in r["floor"].items():
        lines.append(f"| {c} | {f['update_flops'] / 1e6:.0f} M ({f['autograd_flops'] / 1e6:.0f} M) | "
                     f"{f['floor_ms']:.2f} | {f['update_ms']:.2f} | {100 * f['floor_over_measured']:.0f}% |")
    p = r["parallel_two_runs"]
    lines += ["", f"Two runs at once (one per core): {p['sps_each'][0]:.1f} + {p['sps_each'][1]:.1f} = "
              f"{p['sps_total']:.1f} steps/s vs {p['single_run_sps']:.1f} for one run: **{p['scaling']:.2f}×**."]
    m, mib = r["memory"], 2**20
    lines += ["", f"Memory, {m['env']} with a full {m['capacity']:,}-row buffer ({m['row_floats']} float32 per row): "
              f"storage {m['storage_bytes'] / mib:.0f} MiB, "
              f"RSS before filling {m['baseline_rss_bytes'] / mib:.0f} MiB, peak {m['peak_rss_bytes'] / mib:.0f} MiB, "
              f"overhead beyond storage {m['overhead_bytes'] / mib:.0f} MiB.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
