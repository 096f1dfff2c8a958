"""Time of one CMA-ES generation's loss in the oblique fit: each tree on its own, or the whole generation at once.

    python benchmarks/oblique_loss.py --runs benchmarks/results/runs/*-v4__smose__s0 \
        --out benchmarks/results/oblique-start/loss-speed

For each SMOSE run: the states `smose distill --kind oblique` fits on (20 deterministic episodes, seed 0), and
--generations real CMA-ES generations of the fit from the router's start (the candidates of the default fit's first
generations). Each generation's misrouted fractions are computed by `smose.interpret.oblique.misrouted`, one tree
after the other (the reference), and by `misrouted_many`, the generation at once (what the fit calls); the two are
interleaved, generation by generation, on one thread, and must give the same numbers (the benchmark says where they
do not). Reports the median time per generation of each and their ratio, and the peak memory each allocates for the
first generation (traced apart from the timed calls). With --episodes 100 the states are as many as after distill's
4 DAgger rounds of 20 episodes.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from record import header, write
from smose.choices import CMA_POPULATION
from smose.interpret import oblique
from smose.interpret.distill import collect_states, require_smose
from smose.serialization import check_env_compatible, load_model
from smose.tasks.envs import make_run_env


def peak_mb(function, *args) -> float:
    """The peak of the memory that ``function(*args)`` allocates through Python's allocators (numpy's arrays
    included; not BLAS's own work buffers), in MB."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        function(*args)
        return (tracemalloc.get_traced_memory()[1] - before) / 1e6
    finally:
        if not tracing:
            tracemalloc.stop()


def measure(run_dir: Path, generations: int, episodes: int) -> dict:
    import cma

    actor, meta = load_model(run_dir)
    actor = require_smose(actor, meta, run_dir)
    env = make_run_env(meta)
    check_env_compatible(meta, env, run_dir)
    try:
        states, labels = collect_states(actor, env, episodes, 0)
    finally:
        env.close()
    n_obs, n_classes = states.shape[1], actor.n_experts
    left, right = oblique.complete_tree(3)
    n_internal = int((left >= 0).sum())
    mean, scale = oblique.standardisation(states)
    x = oblique.loss_inputs(states, mean, scale)
    router = (actor.router.weight.detach().double().numpy(), actor.router.bias.detach().double().numpy())
    x0 = oblique.boundary_start(x, labels, n_classes, 3, router, mean, scale).ravel()
    es = cma.CMAEvolutionStrategy(x0, oblique.CMA_SIGMA0["router"],
                                  {"popsize": CMA_POPULATION, "seed": 1, "verbose": -9})
    each, many, disagreements, peaks = [], [], 0, {}
    with threadpool_limits(limits=1, user_api="blas"):
        for generation in range(generations):
            params = np.stack([np.reshape(c, (n_internal, n_obs + 1)) for c in es.ask()])
            if generation == 0:  # traced apart from the timed calls, which tracing would slow
                peaks = {"each_peak_mb": peak_mb(lambda: [oblique.misrouted(x, labels, p, left, right, n_classes)
                                                          for p in params]),
                         "many_peak_mb": peak_mb(oblique.misrouted_many, x, labels, params, left, right, n_classes)}
            started = time.perf_counter()
            reference = [oblique.misrouted(x, labels, p, left, right, n_classes) for p in params]
            each.append(time.perf_counter() - started)
            started = time.perf_counter()
            fast = oblique.misrouted_many(x, labels, params, left, right, n_classes)
            many.append(time.perf_counter() - started)
            disagreements += int(np.sum(np.asarray(reference) != fast))
            es.tell(list(params.reshape(len(params), -1)), fast.tolist())
    return {"run": str(run_dir), "env_id": meta["env_id"], "states": len(labels), "n_obs": n_obs,
            "generations": generations, "each_ms": 1000 * statistics.median(each),
            "many_ms": 1000 * statistics.median(many), "ratio": statistics.median(each) / statistics.median(many),
            "disagreements": disagreements, **peaks}


def peak_column(run: dict) -> str:
    """The peak memory column: "each / at once" in MB; "–" for records made before it was measured."""
    if "many_peak_mb" not in run:
        return "–"
    return f"{run['each_peak_mb']:.0f} / {run['many_peak_mb']:.0f}"


def markdown(record: dict) -> str:
    lines = ["# One CMA-ES generation's loss: each tree on its own, or the generation at once", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']}; smose {record['smose']}; {record['date']}. {record['note']}".rstrip(), "",
             f"Median wall clock of the misrouted fraction of {CMA_POPULATION} depth-3 oblique trees (one CMA-ES "
             "generation) on the states distill fits on, one thread, the two interleaved; *differ*: losses "
             "where the two disagree, of all the generations' trees; *peak MB*: the most memory either allocates at "
             "once for the first generation (each tree / at once).", "",
             "| run | states | observations | each tree (ms) | at once (ms) | faster | differ | peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    for run in record["runs"]:
        lines.append(f"| {Path(run['run']).name} | {run['states']:,} | {run['n_obs']} | {run['each_ms']:.0f} | "
                     f"{run['many_ms']:.0f} | {run['ratio']:.1f}× | {run['disagreements']} of "
                     f"{run['generations'] * CMA_POPULATION} | {peak_column(run)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="SMOSE run directories")
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    runs = []
    for run in args.runs:
        runs.append(measure(run, args.generations, args.episodes))
        print(f"{run.name}: {runs[-1]['each_ms']:.0f} ms -> {runs[-1]['many_ms']:.0f} ms", flush=True)
    record = {**header("oblique_loss.py", args.note), "runs": runs}
    write(args.out, record, markdown(record))


if __name__ == "__main__":
    main()
