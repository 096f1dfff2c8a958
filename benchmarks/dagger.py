"""Per-expert trees round by round of DAgger: held-out agreement, closed-loop agreement and tree-routed return.

    python benchmarks/dagger.py --runs benchmarks/results/runs/*__smose__s0 --rounds 4 --out benchmarks/results/dagger

For each SMOSE run this does what `smose distill --kind per-expert --dagger R` does (same functions, seeds and
defaults: depth 3, 20 fitting and 20 held-out episodes, 10 evaluation episodes), but evaluates the trees after every
round instead of only the last, so one command shows how rounds 0 (the method's plain form) to R compare. Nothing is
written into the run directories. Writes OUT.json (every number) and OUT.md (the table).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from record import header, write
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.interpret.distill import HOLDOUT_SEED_OFFSET, TreeRouter, collect_states, dagger_fits, require_smose
from smose.serialization import load_model
from smose.tasks.envs import make_env


def measure(run_dir: Path, rounds: int, depth: int, episodes: int, eval_episodes: int, seed: int = 0) -> dict:
    """Round by round numbers for one run (round 0: fitted on the neural policy's states only)."""
    actor, meta = load_model(run_dir)
    actor = require_smose(actor, meta, run_dir)
    env = make_env(meta["env_id"])
    started = time.monotonic()
    try:
        states, labels = collect_states(actor, env, episodes, seed)
        heldout_states, heldout_labels = collect_states(actor, env, episodes, seed + HOLDOUT_SEED_OFFSET)
        neural = evaluate(actor, env, eval_episodes, seed)
        per_round = []
        fits = dagger_fits(actor, env, "per-expert", states, labels, depth, meta["env_id"], rounds, episodes, seed)
        for r, (trees, _, labels) in enumerate(fits):
            router = TreeRouter(trees)
            routed = evaluate(actor, env, eval_episodes, seed, router=router)
            per_round.append({
                "round": r, "train_states": len(labels),
                "agreement": float(np.mean(router.predict(heldout_states) == heldout_labels)),
                "closed_loop_agreement": routed["router_agreement"],
                "return_mean": routed["mean"], "return_std": routed["std"],
                "ratio": routed["mean"] / neural["mean"] if neural["mean"] > 0 else None,
            })
    finally:
        env.close()
    return {"run": str(run_dir), "env_id": meta["env_id"], "neural_mean": neural["mean"], "neural_std": neural["std"],
            "rounds": per_round, "seconds": round(time.monotonic() - started, 1)}


def markdown(record: dict, args: argparse.Namespace) -> str:
    results, rounds = record["results"], args.rounds
    lines = ["# DAgger for the per-expert trees", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']}; smose {record['smose']}; {record['date']}. One thread. "
             f"{record['note']}".rstrip(), "",
             f"Per run: depth-{args.depth} per-expert trees after each round (round 0: fitted on {args.episodes} "
             "deterministic episodes of the neural policy, the method's plain form; each round adds "
             f"{args.episodes} episodes driven by the current trees, labelled by the router). *held-out*: agreement "
             f"with the router on {args.episodes} held-out episodes of the neural policy; *closed loop*: on the steps "
             "the tree-routed policy takes itself; *ratio*: tree-routed / neural return over the same "
             f"{args.eval_episodes} evaluation episodes.", "",
             "| run | neural return | " + " | ".join(f"round {r}: held-out / closed loop / ratio" for r in
                                                     range(rounds + 1)) + " |",
             "|---|---|" + "---|" * (rounds + 1)]
    for result in results:
        cells = []
        for r in result["rounds"]:
            ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}"
            cells.append(f"{100 * r['agreement']:.1f}% / {100 * r['closed_loop_agreement']:.1f}% / {ratio}")
        lines.append(f"| {Path(result['run']).name} | {result['neural_mean']:.1f} | " + " | ".join(cells) + " |")
    for label, r in (("round 0", 0), (f"round {rounds}", rounds)):
        ratios = [res["rounds"][r]["ratio"] for res in results if res["rounds"][r]["ratio"] is not None]
        closed = [res["rounds"][r]["closed_loop_agreement"] for res in results]
        if ratios:
            lines.append(f"\n{label}: median ratio {np.median(ratios):.2f} (min {min(ratios):.2f}) over "
                         f"{len(ratios)} runs with a positive neural return; median closed-loop agreement "
                         f"{100 * np.median(closed):.1f}% over {len(closed)} runs.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="SMOSE run directories")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", required=True, help="output path without extension (.json and .md are written)")
    args = parser.parse_args()
    if args.rounds < 0 or min(args.depth, args.episodes, args.eval_episodes) < 1:
        parser.error("--rounds must be >= 0; --depth, --episodes and --eval-episodes >= 1")
    torch.set_num_threads(1)
    results = []
    for run in args.runs:
        try:
            results.append(measure(Path(run), args.rounds, args.depth, args.episodes, args.eval_episodes))
        except SmoseError as exc:
            sys.exit(f"dagger.py: error: {exc}")
        last = results[-1]["rounds"]
        print(f"{run}: ratio {last[0]['ratio']} -> {last[-1]['ratio']} ({results[-1]['seconds']} s)", flush=True)
        # rewritten after every run, so that the runs measured so far are kept when a later one fails
        record = {**header("dagger.py", args.note), "results": results}
        write(Path(args.out), record, markdown(record, args), echo=False)
    print(markdown(record, args))


if __name__ == "__main__":
    main()
