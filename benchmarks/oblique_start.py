"""Where the oblique tree's CMA-ES starts: from zeros (the authors), from the best tree of the router's boundaries, or
from the better of that and the best tree of expert groups.

    python benchmarks/oblique_start.py --runs benchmarks/results/runs/*-v4__smose__s0 --dagger 0 \
        --out benchmarks/results/oblique-start/oblique-start

For each SMOSE run this does what `smose distill --kind oblique --cma-start START` does (the same functions, seeds
and defaults: depth 3, 20 fitting and 20 held-out episodes, 10 evaluation episodes; but 200 generations unless told,
those of its first records, made before smose distill's default became 1000), for every start on the same states,
one after the other, and the two CART kinds beside them for reference (`--kind per-expert`, `--kind multiclass`, the
same DAgger rounds); ``--contenders`` fits only those named. Nothing is written into the run directories. Writes
OUT.json (every number) and OUT.md (the table).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from record import header, write
from smose.choices import CMA_DEFAULT_START, CMA_STARTS
from smose.evaluate import evaluate
from smose.interpret.distill import HOLDOUT_SEED_OFFSET, TreeRouter, collect_states, fit_with_dagger, require_smose
from smose.serialization import check_env_compatible, load_model
from smose.tasks.envs import make_run_env

# the generations of the records made without --cma-iterations (module docstring): their commands still reproduce them
RECORDED_ITERATIONS = 200
# what is compared, in the order it runs: (name, tree kind, CMA-ES start)
CONTENDERS = [("per-expert", "per-expert", None), ("multiclass", "multiclass", None),
              *((f"oblique from {start}", "oblique", start) for start in CMA_STARTS)]


def measure(run_dir: Path, args: argparse.Namespace) -> dict:
    """Every contender's trees for one run, fitted on the same states and scored on the same held-out states and
    evaluation episodes."""
    actor, meta = load_model(run_dir)
    actor = require_smose(actor, meta, run_dir)
    env = make_run_env(meta)
    check_env_compatible(meta, env, run_dir)
    env_id, seed = meta["env_id"], 0
    try:
        states, labels = collect_states(actor, env, args.episodes, seed)
        heldout_states, heldout_labels = collect_states(actor, env, args.episodes, seed, offset=HOLDOUT_SEED_OFFSET)
        neural = evaluate(actor, env, args.eval_episodes, seed)
        result = {"run": str(run_dir), "env_id": env_id, "train_states": len(labels),
                  "heldout_states": len(heldout_labels), "neural_return": neural["mean"], "contenders": {}}
        for name, kind, start in contenders(args.contenders):
            started = time.perf_counter()
            trees, fit_states, fit_labels, _ = fit_with_dagger(
                actor, env, kind, states, labels, args.depth, env_id, args.dagger, args.episodes, seed,
                cma_iterations=args.cma_iterations, cma_start=start or CMA_DEFAULT_START)
            seconds = time.perf_counter() - started
            router = TreeRouter(trees)
            routed = evaluate(actor, env, args.eval_episodes, seed, router=router)
            result["contenders"][name] = {
                "agreement": float(np.mean(router.predict(heldout_states) == heldout_labels)),
                "train_agreement": float(np.mean(router.predict(fit_states) == fit_labels)),
                "closed_loop_agreement": routed["router_agreement"], "return": routed["mean"],
                "ratio": routed["mean"] / neural["mean"] if neural["mean"] > 0 else None,
                "fit_seconds": round(seconds, 2), **({"cma": trees["cma"]} if "cma" in trees else {})}
            print(f"{run_dir.name} {name}: held-out {result['contenders'][name]['agreement']:.3f} "
                  f"({seconds:.0f} s)", flush=True)
    finally:
        env.close()
    return result


def contenders(names: list[str] | None) -> list[tuple[str, str, str | None]]:
    """The CONTENDERS named (all of them for None), in CONTENDERS' order."""
    return [c for c in CONTENDERS if names is None or c[0] in names]


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(record: dict) -> str:
    names = [name for name, _, _ in contenders(record.get("contenders"))]
    lines = ["# The oblique tree's CMA-ES start", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']}; smose {record['smose']}; {record['date']}. {record['note']}".rstrip(), "",
             f"Depth-{record['depth']} trees, {record['dagger']} DAgger round{'' if record['dagger'] == 1 else 's'}, "
             f"{record['episodes']} fitting and as many held-out episodes, oblique trees "
             f"{record['cma_iterations']} CMA-ES generations. Every contender of a run is fitted on the same "
             "states. *held-out*: agreement with the router on the held-out states; "
             "*train*: on the states fitted on; *closed loop*: on the steps the tree-routed policy takes itself; "
             f"*ratio*: tree-routed / neural return ({record['eval_episodes']} episodes; none for negative returns); "
             "*start → end*: the oblique fit's misrouted fraction of the training states at its start and after "
             "CMA-ES; *s*: wall clock of the fit with its DAgger rollouts.", "",
             "| run | tree | held-out | train | closed loop | return (ratio) | start → end misrouted | s |",
             "|---|---|---|---|---|---|---|---|"]
    for run in record["runs"]:
        for name in names:
            c = run["contenders"][name]
            cma = c.get("cma")
            moved = f"{pct(cma['start_misrouted'])} → {pct(cma['train_misrouted'])}" if cma else "–"
            ratio = "" if c["ratio"] is None else f" ({c['ratio']:.2f})"
            lines.append(f"| {Path(run['run']).name} | {name} | {pct(c['agreement'])} | {pct(c['train_agreement'])} "
                         f"| {pct(c['closed_loop_agreement'])} | {c['return']:.1f}{ratio} | {moved} | "
                         f"{c['fit_seconds']:.0f} |")
    lines += ["", "## Means over the runs", "", "| tree | held-out | closed loop | runs at >= 95% held out | s |",
              "|---|---|---|---|---|"]
    for name in names:
        cs = [run["contenders"][name] for run in record["runs"]]
        lines.append(f"| {name} | {pct(statistics.mean(c['agreement'] for c in cs))} | "
                     f"{pct(statistics.mean(c['closed_loop_agreement'] for c in cs))} | "
                     f"{sum(c['agreement'] >= 0.95 for c in cs)} of {len(cs)} | "
                     f"{statistics.mean(c['fit_seconds'] for c in cs):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="SMOSE run directories")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--dagger", type=int, default=0, help="DAgger rounds of every contender")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--cma-iterations", type=int, default=RECORDED_ITERATIONS)
    parser.add_argument("--contenders", nargs="+", choices=[name for name, _, _ in CONTENDERS], default=None,
                        metavar="NAME", help="fit only these (default: all: "
                                             + ", ".join(repr(name) for name, _, _ in CONTENDERS) + ")")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    runs = [measure(run, args) for run in args.runs]
    record = {**header("oblique_start.py", args.note), "depth": args.depth, "dagger": args.dagger,
              "episodes": args.episodes, "eval_episodes": args.eval_episodes, "cma_iterations": args.cma_iterations,
              **({"contenders": args.contenders} if args.contenders else {}), "runs": runs}
    write(args.out, record, markdown(record))


if __name__ == "__main__":
    main()
