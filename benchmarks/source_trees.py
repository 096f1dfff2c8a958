"""Learning-step throughput of smose from two source trees (before and after a change), interleaved.

    python benchmarks/source_trees.py --before /path/to/old/checkout --after . --repeats 5 \
        --out benchmarks/results/throughput-before-after

Each measurement is a fresh subprocess with one compute thread and ``PYTHONPATH=<tree>/src``, timing the same
learning steps as `smose bench throughput` (Hopper-v5, 1 update per env step, batch 256, buffer 1e6, after the
warm-up); the two trees alternate within every repeat, and which goes first alternates between repeats, so that
machine noise hits both alike. Works with trees whose Trainer is ``smose.training.trainer`` or the older
``smose.train``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from record import git_state, header, write

WORKER = """
import json, sys, time
import torch
try:
    from smose.training.config import TrainConfig
    from smose.training.trainer import Trainer
except ImportError:
    from smose.config import TrainConfig
    from smose.train import Trainer
import smose
env_id, learning_starts, warm, measure, seed, update = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
torch.set_num_threads(1)
config = TrainConfig(env=env_id, algo="smose", learning_starts=learning_starts, eval_every=0, threads=1, seed=seed,
                     update=update)
trainer = Trainer(config)
trainer.run(learning_starts + warm)
start = time.perf_counter()
trainer.run(learning_starts + warm + measure)
print(json.dumps({"sps": measure / (time.perf_counter() - start), "module": smose.__file__}))
"""


def measure(tree: Path, args: argparse.Namespace, update: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", WORKER, args.env, str(args.learning_starts), str(args.warm),
                           str(args.measure), "0", update], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"source_trees: the worker failed in {tree}: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["module"].startswith(str(tree.resolve())):
        sys.exit(f"source_trees: {tree} did not provide smose (imported {result['module']})")
    return result


def git_commit(tree: Path) -> str:
    state = git_state(tree)
    return "?" if state is None else state[0] + (" (with uncommitted changes)" if state[1] else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--measure", type=int, default=2000)
    parser.add_argument("--update", default="fused", help="fused or autograd (both trees must know it)")
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    for tree in (args.before, args.after):
        if not (tree / "src" / "smose").is_dir():
            sys.exit(f"source_trees: {tree} has no src/smose")
    trees = {"before": args.before, "after": args.after}
    samples: dict[str, list[float]] = {"before": [], "after": []}
    for repeat in range(args.repeats):
        order = ["before", "after"] if repeat % 2 == 0 else ["after", "before"]
        for name in order:
            sps = measure(trees[name], args, args.update)["sps"]
            samples[name].append(sps)
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {sps:.1f} learning steps/s", flush=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    # the header's smose is the version this script imports; the code measured is the trees', named by their commits
    record = {
        **header("source_trees.py", args.note),
        "python": platform.python_version(),
        "settings": {k: getattr(args, k) for k in ("env", "repeats", "learning_starts", "warm", "measure", "update")},
        "commits": {name: git_commit(tree) for name, tree in trees.items()},
        "samples": samples,
        "medians": medians,
        "after_over_before": medians["after"] / medians["before"],
    }
    lines = [f"# Learning-step throughput before and after ({args.env}, `--update {args.update}`)", "",
             f"- Command: `{record['command']}`",
             f"- Date: {record['date']} {record['time']}; machine: {record['machine']}, Python {record['python']}",
             f"- Commits: before {record['commits']['before']}, after {record['commits']['after']}",
             f"- Settings: {args.repeats} interleaved repeats of {args.measure} timed learning steps after "
             f"{args.learning_starts} + {args.warm}; one thread; order alternating per repeat.",
             *([f"- Also on the machine: {args.note}"] if args.note else []), "",
             "| tree | learning steps/s (median) | samples |", "|---|---|---|"]
    for name in ("before", "after"):
        lines.append(f"| {name} | {medians[name]:.1f} | {', '.join(f'{v:.1f}' for v in samples[name])} |")
    lines += ["", f"after / before: {record['after_over_before']:.3f}", ""]
    write(args.out, record, "\n".join(lines))


if __name__ == "__main__":
    main()
