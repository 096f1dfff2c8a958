"""Time per action (batch 1) of an exported SMOSE controller: C, the stdlib Python file, ONNX Runtime, and torch.

    python benchmarks/inference.py --run RUN_DIR --out benchmarks/results/inference

Every contender computes the same deterministic action on the same ring of 256 states visited by the policy (so the
router picks the experts it really picks); each is checked against the library's policy before it is timed.

- C: the header of `smose export --format c`, compiled with `gcc -O2 -std=c99`, timed inside C with
  clock_gettime(CLOCK_MONOTONIC) over --c-calls calls per repeat (the loop sums the actions so none is skipped).
- Python: the module of `smose export --format python`, timed in batches of 1,000 calls (perf_counter_ns).
- ONNX Runtime: the model of `smose export --format onnx`, one `session.run` per action, one intra/inter-op thread.
- torch: `actor.act(obs[1, n_obs])` of the loaded model, one thread, under no_grad (as `smose eval` calls it).

Each row reports the median over --repeats repeats of the mean time per call within a repeat (C, Python) or the
median over single calls (ONNX Runtime, torch, whose per-call cost dwarfs the timer's ~30 ns).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from record import header, write
from smose.export import export_policy
from smose.interpret.distill import collect_states
from smose.serialization import load_model
from smose.tasks.envs import make_env

N_STATES = 256

C_BENCH = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "smose_policy.h"

#define N_STATES %(n_states)d

int main(int argc, char **argv)
{
    if (argc != 4) return 2;
    long calls = atol(argv[2]);
    int repeats = atoi(argv[3]);
    static float states[N_STATES][SMOSE_N_OBS];
    FILE *in = fopen(argv[1], "rb");
    if (!in || fread(states, sizeof(float), N_STATES * SMOSE_N_OBS, in) != N_STATES * SMOSE_N_OBS) return 3;
    fclose(in);
    float action[SMOSE_N_ACT];
    volatile float sink = 0.0f;
    for (long c = 0; c < calls / 10; ++c) { /* warm-up */
        smose_act(states[c %% N_STATES], action);
        sink += action[0];
    }
    for (int r = 0; r < repeats; ++r) {
        float total = 0.0f;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long c = 0; c < calls; ++c) {
            smose_act(states[c %% N_STATES], action);
            total += action[0] + action[SMOSE_N_ACT - 1];
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        sink += total;
        double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
        printf("%%.4f\n", ns / calls);
    }
    /* the actions for the first states, to check the compiled code against the library */
    for (int s = 0; s < N_STATES; ++s) {
        smose_act(states[s], action);
        for (int j = 0; j < SMOSE_N_ACT; ++j)
            printf("a %%.9g\n", action[j]);
    }
    return sink == 12345.0f; /* uses sink so the loop cannot be dropped */
}
"""


def rollout_states(actor, env_id: str, n: int) -> np.ndarray:
    env = make_env(env_id)
    chunks, total, seed = [], 0, 0
    while total < n:
        chunk, _ = collect_states(actor, env, 1, seed)
        chunks.append(chunk)
        total, seed = total + len(chunk), seed + 1
    env.close()
    return np.concatenate(chunks)[:n].astype(np.float32)


def bench_c(workdir: Path, states: np.ndarray, calls: int, repeats: int) -> tuple[list[float], np.ndarray]:
    """Compile a timing driver next to ``workdir/smose_policy.h``; returns ns/call per repeat and the actions."""
    (workdir / "bench.c").write_text(C_BENCH % {"n_states": N_STATES})
    states.tofile(workdir / "states.bin")
    subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Werror", "bench.c", "-o", "bench", "-lm"], cwd=workdir,
                   check=True)
    out = subprocess.run([str(workdir / "bench"), "states.bin", str(calls), str(repeats)], cwd=workdir,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    times = [float(line) for line in out if line and not line.startswith("a ")]
    actions = np.array([float(line[2:]) for line in out if line.startswith("a ")]).reshape(len(states), -1)
    return times, actions


def bench_python(module_path: Path, states: np.ndarray, repeats: int,
                 batch: int = 1000) -> tuple[list[float], np.ndarray]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("exported_policy", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = states.astype(np.float64).tolist()  # the file takes plain Python numbers
    for row in rows:
        module.act(row)
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for i in range(batch):
            module.act(rows[i % len(rows)])
        times.append((time.perf_counter_ns() - start) / batch)
    return times, np.array([module.act(row) for row in rows])


def bench_single_calls(call, inputs: list, repeats: int) -> list[float]:
    for x in inputs:
        call(x)
    times = []
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        start = time.perf_counter_ns()
        call(x)
        times.append(time.perf_counter_ns() - start)
    return times


def gcc_version() -> str:
    out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run directory of a trained model")
    parser.add_argument("--mode", choices=("gated", "linear"), default="gated")
    parser.add_argument("--c-calls", type=int, default=1_000_000, help="calls per timed repeat in C")
    parser.add_argument("--c-repeats", type=int, default=21)
    parser.add_argument("--py-repeats", type=int, default=101, help="batches of 1,000 calls for the Python file")
    parser.add_argument("--single-calls", type=int, default=20_000, help="timed calls for ONNX Runtime and torch")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()

    torch.set_num_threads(1)
    run = Path(args.run)
    actor, meta = load_model(run)
    states = rollout_states(actor, meta["env_id"], N_STATES)
    reference, _ = actor.act(torch.from_numpy(states), args.mode)
    reference = reference.numpy()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        paths = {fmt: export_policy(run, fmt, workdir, mode=args.mode) for fmt in ("c", "python", "onnx")}

        times, actions = bench_c(paths["c"].parent, states, args.c_calls, args.c_repeats)
        results.append(("C (gcc -O2, float32)", times, actions, f"{args.c_repeats} x {args.c_calls:,} calls"))

        times, actions = bench_python(paths["python"], states, args.py_repeats)
        results.append(("Python file (stdlib, float64)", times, actions, f"{args.py_repeats} x 1,000 calls"))

        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(paths["onnx"]), options, providers=["CPUExecutionProvider"])
        rows = [states[i : i + 1] for i in range(len(states))]
        times = bench_single_calls(lambda x: session.run(["action"], {"obs": x}), rows, args.single_calls)
        actions = session.run(["action"], {"obs": states})[0]
        results.append((f"ONNX Runtime {onnxruntime.__version__}", times, actions, f"{args.single_calls:,} calls"))

    tensors = [torch.from_numpy(row) for row in rows]
    times = bench_single_calls(lambda x: actor.act(x, args.mode), tensors, args.single_calls)
    actions = np.concatenate([actor.act(x, args.mode)[0].numpy() for x in tensors])
    results.append((f"torch {torch.__version__} (in-library)", times, actions, f"{args.single_calls:,} calls"))

    torch_median = statistics.median(results[-1][1])
    rows_out = []
    for name, times, actions, calls in results:
        median_ns = statistics.median(times)
        rows_out.append({
            "implementation": name,
            "median_us": median_ns / 1e3,
            "p10_us": float(np.percentile(times, 10)) / 1e3,
            "p90_us": float(np.percentile(times, 90)) / 1e3,
            "speedup_vs_torch": torch_median / median_ns,
            "max_abs_diff_vs_torch": float(np.max(np.abs(np.asarray(actions, dtype=np.float64) - reference))),
            "timed": calls,
        })
    counts = actor.parameter_counts()
    # beside the header's machine, what else the timings depend on: Python, the C compiler, torch's threads, the load
    report = {
        **header("inference.py", args.note),
        "python": platform.python_version(), "gcc": gcc_version(), "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "policy": {"run": str(run), "env_id": meta["env_id"], "architecture": meta["architecture"],
                   "mode": args.mode, "router": "neural", "parameter_counts": counts},
        "results": rows_out,
    }
    arch = meta["architecture"]
    shape = f"{arch.get('n_experts')} experts" if arch["algo"] == "smose" else f"hidden {arch.get('hidden')}"
    lines = [
        f"# Inference time per action, batch 1 ({meta['env_id']}, {arch['algo']}, {shape}, mode {args.mode})",
        "",
        f"Command: `{report['command']}`  ",
        (f"Machine: {report['machine']}, {report['gcc']}, Python {report['python']}; smose "
         f"{report['smose']}; date {report['date']} {report['time']}; 1-min load average at the end "
         f"{report['load_average_1min_at_end']}. {report['note']}".rstrip() + "  "),
        f"Policy: {run} ({meta.get('trained_steps')} training steps).  ",
        f"Parameters: {counts['deploy']:,} in the deployed policy, {counts['active']:,} used per decision.",
        "",
        "| implementation | median µs/action | p10–p90 µs | vs torch | max abs diff vs torch | timed |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows_out:
        lines.append(f"| {r['implementation']} | {r['median_us']:.3f} | {r['p10_us']:.3f}–{r['p90_us']:.3f} | "
                     f"{r['speedup_vs_torch']:.0f}x | {r['max_abs_diff_vs_torch']:.1e} | {r['timed']} |")
    lines += ["", ("C and Python rows: spread over repeats of the mean per call; ONNX Runtime and torch rows: spread "
              "over single calls. All single-threaded; the states are 256 states visited by the policy.")]
    text = "\n".join(lines) + "\n"
    if args.out:
        write(Path(args.out), report, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
