"""The deployable tree-routed controller, kind by kind: routing fidelity, return before and after `smose finetune`.

    python benchmarks/tree_controller.py --runs sweeps/tree-controller/runs/*__smose__s* \
        --finetune-steps 50000 --workers 2 --out benchmarks/results/tree-controller

For each SMOSE run (a run directory with its checkpoint, e.g. a sweep's) this runs the library's own commands:
`smose distill RUN --depth D --dagger R --kind all` (per-expert CART, multiclass CART, oblique CMA-ES; skipped when
the run already holds trees made that way), then for every kind `smose finetune RUN --steps N --tree-kind KIND` into
``--work`` (continued with `--resume` when interrupted, skipped when finished). It reads the numbers back from the
files those commands write (trees/fidelity.json, each fine-tuning run's config.json record, eval.json and metrics.csv)
and writes OUT.json (every number) and OUT.md (the tables and the issue's targets). Re-running it after an
interruption redoes only what is missing.

Ratios are tree-routed / neural return on the same evaluation episodes, defined for a positive neural return; for a
negative one (Reacher) the difference tree − neural is shown and "at or above" means a difference >= 0.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

from smose import __version__
from smose.choices import KINDS
from smose.errors import SmoseError
from smose.experiments.distillation import Distillation, tree_settings
from smose.interpret.oblique import DEFAULT_ITERATIONS
from smose.interpret.tree_policy import trees_digest
from smose.interpret.trees import tree_file
from smose.run import RunDir, read_metrics
from smose.serialization import read_eval, read_json
from smose.training.checkpoint import read_checkpoint_json
from smose.training.finetune import read_record
from smose_cli import run_smose

ALL_KINDS = "all"


def state(out: Path, source: Path, source_step: int, kind: str, steps: int) -> str:
    """Where the fine-tuning run in ``out`` stands: "finished" (all ``steps`` steps from ``source``'s checkpoint, at
    ``source_step``, under its current ``kind`` trees), "resumable" (the same, interrupted after a checkpoint) or
    "fresh" (anything else: nothing there, another source step or other trees, say after the source was distilled
    again)."""
    try:
        record, checkpoint = read_record(out), read_checkpoint_json(out)
        trees = read_json(tree_file(source, kind), "tree file")
    except SmoseError:
        return "fresh"
    if (record is None or record["tree_kind"] != kind or record["source_step"] != source_step
            or record["trees_sha256"] != trees_digest(trees)):
        return "fresh"
    done = checkpoint["step"] - record["source_step"]
    return "finished" if checkpoint.get("finished") is True and done == steps else "resumable"


def ratio_or_gap(value: float, neural: float) -> dict:
    """tree / neural for a positive neural return, else the difference; and whether the tree is at or above."""
    return {"ratio": value / neural if neural > 0 else None, "difference": value - neural,
            "at_or_above": value >= neural}


def measure(run: Path, args: argparse.Namespace) -> dict:
    """Distil (if needed) and fine-tune under every kind; the numbers of one run."""
    wanted = Distillation(depth=args.depth, dagger=args.dagger, kind=ALL_KINDS, cma_iterations=args.cma_iterations)
    if tree_settings(run) != wanted:
        run_smose("distill", *wanted.command(run)[4:])
    fidelity = read_json(RunDir(run).fidelity, "tree fidelity summary")
    neural = fidelity["returns"]["neural"]["mean"]
    source_step = read_checkpoint_json(run)["step"]
    result = {"run": str(run), "env_id": fidelity["env_id"], "seed": read_json(RunDir(run).config, "config")["seed"],
              "source_step": source_step, "neural_return": neural,
              "kinds": {}}
    for kind in KINDS:
        out = args.work / f"{run.parent.name}-{run.name}-finetune-{kind}"
        where = state(out, run, source_step, kind, args.finetune_steps)
        if where == "resumable":
            run_smose("finetune", "--resume", str(out), "--steps", str(args.finetune_steps), "--quiet")
        elif where == "fresh":
            run_smose("finetune", str(run), "--steps", str(args.finetune_steps), "--tree-kind", kind,
                  "--out", str(out), "--force", "--quiet")
        record = read_record(out)
        before = record["before"]
        after = read_eval(RunDir(out).eval)["mean"]
        evals = [row for row in read_metrics(RunDir(out).metrics) if row.get("event") == "eval"]
        curve = {int(row["step"]) - record["source_step"]: float(row["eval_return_mean"]) for row in evals}
        # metrics.csv's time column: seconds of training (resumed runs continue it), evaluations included
        seconds = float(evals[-1]["time"]) - float(evals[0]["time"]) if evals and evals[-1].get("time") else None
        result["kinds"][kind] = {
            "agreement": fidelity[kind]["agreement"],
            "closed_loop_agreement": fidelity[kind]["closed_loop_agreement"],
            "fit_seconds": fidelity[kind].get("fit_seconds"),
            # the fine-tuning run's own evaluation before its first step: the same episodes as every later one
            "neural_return": before["neural_return"],
            "before": before["tree_return"], "after": after,
            "before_vs_neural": ratio_or_gap(before["tree_return"], before["neural_return"]),
            "after_vs_neural": ratio_or_gap(after, before["neural_return"]),
            "best_during": max((v for step, v in curve.items() if step > 0), default=None),  # not the "before"
            "curve": curve, "finetune_run": str(out), "finetune_seconds": seconds,
        }
    return result


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def versus(v: dict) -> str:
    return f"{v['ratio']:.2f}" if v["ratio"] is not None else f"{v['difference']:+.2f}"


def markdown(record: dict) -> str:
    runs = record["runs"]
    lines = ["# The deployable tree-routed controller: fidelity and return before and after fine-tuning", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']}; smose {record['smose']}; {record['date']}. {record['note']}".rstrip(), "",
             f"Depth-{record['depth']} trees with {record['dagger']} DAgger "
             f"round{'s' if record['dagger'] != 1 else ''} (`smose distill --kind all`), "
             f"then `smose finetune --steps {record['finetune_steps']}` under each kind. *held-out*: agreement with "
             "the router on held-out states of the neural policy; *closed loop*: on the steps the tree-routed policy "
             "takes itself; *before* / *after*: tree-routed return over the neural router's, on the fine-tuning "
             "run's evaluation episodes (ratio; the difference where the neural return is negative); *best*: the "
             "best evaluation during fine-tuning, likewise. Times: wall clock of fitting (with DAgger) and of "
             "fine-tuning.", "",
             "| run | neural | kind | held-out | closed loop | before | after | best | fit s | fine-tune min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        for kind, k in run["kinds"].items():
            best = (ratio_or_gap(k["best_during"], k["neural_return"]) if k["best_during"] is not None else None)
            lines.append(f"| {Path(run['run']).name} | {k['neural_return']:.1f} | {kind} | {pct(k['agreement'])} | "
                         f"{pct(k['closed_loop_agreement'])} | {versus(k['before_vs_neural'])} | "
                         f"{versus(k['after_vs_neural'])} | {versus(best) if best else '–'} | "
                         f"{k['fit_seconds'] if k['fit_seconds'] is not None else '–'} | "
                         f"{'–' if k['finetune_seconds'] is None else round(k['finetune_seconds'] / 60, 1)} |")
    lines += ["", "## By task", "",
              "Means over seeds of the returns (tree-routed before and after fine-tuning, neural), then their ratio "
              "(the difference where the mean neural return is negative); *worst run*: the lowest single run's ratio.",
              "", "| task | seeds | kind | held-out | closed loop | neural | before | after | worst run, after | "
              "runs at or above the neural router, after |", "|---|---|---|---|---|---|---|---|---|---|"]
    tasks = sorted({run["env_id"] for run in runs})
    met: dict[str, list[str]] = {kind: [] for kind in KINDS}
    worst_run: dict[str, float | None] = {kind: None for kind in KINDS}
    best_agreement: dict[str, float] = {}
    for task in tasks:
        mine = [run for run in runs if run["env_id"] == task]
        for kind in KINDS:
            ks = [run["kinds"][kind] for run in mine]
            neural = statistics.mean(k["neural_return"] for k in ks)
            before = ratio_or_gap(statistics.mean(k["before"] for k in ks), neural)
            after = ratio_or_gap(statistics.mean(k["after"] for k in ks), neural)
            ratios = [k["after_vs_neural"]["ratio"] for k in ks if k["after_vs_neural"]["ratio"] is not None]
            worst = min(ratios, default=None)
            if worst is not None:
                worst_run[kind] = worst if worst_run[kind] is None else min(worst_run[kind], worst)
            if after["at_or_above"]:
                met[kind].append(task)
            agreement = statistics.mean(k["agreement"] for k in ks)
            best_agreement[task] = max(best_agreement.get(task, 0.0), agreement)
            above = sum(k["after_vs_neural"]["at_or_above"] for k in ks)
            lines.append(f"| {task} | {len(ks)} | {kind} | {pct(agreement)} | "
                         f"{pct(statistics.mean(k['closed_loop_agreement'] for k in ks))} | {neural:.1f} | "
                         f"{versus(before)} | {versus(after)} | {'–' if worst is None else f'{worst:.2f}'} | "
                         f"{above} of {len(ks)} |")
    lines += ["", "## Targets", ""]
    for kind in KINDS:
        worst = worst_run[kind]
        lines.append(f"- {kind}, after fine-tuning: mean tree-routed return at or above the neural router's on "
                     f"{len(met[kind])} of {len(tasks)} tasks (target: 5 of 6); lowest single-run ratio "
                     f"{'–' if worst is None else f'{worst:.2f}'} (target: never below 0.95).")
    high = [task for task, a in best_agreement.items() if a >= 0.95]
    lines.append(f"- Held-out agreement >= 95% for the best kind on {len(high)} of {len(tasks)} tasks (target: 4 of "
                 f"6): {', '.join(high) or 'none'}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="SMOSE run directories with checkpoints")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--dagger", type=int, default=4)
    parser.add_argument("--cma-iterations", type=int, default=DEFAULT_ITERATIONS, help="oblique trees' CMA-ES")
    parser.add_argument("--finetune-steps", type=int, default=50_000)
    parser.add_argument("--work", type=Path, default=Path("sweeps/tree-controller-finetune"),
                        help="where the fine-tuning runs go (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="runs measured at once (one per core)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:  # each job is a chain of subprocesses
            runs = list(pool.map(lambda run: measure(run, args), args.runs))
    except SmoseError as exc:
        sys.exit(f"tree_controller: {exc}")
    record = {"command": "python benchmarks/tree_controller.py " + shlex.join(sys.argv[1:]),
              "date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {platform.system()}, "
              f"{os.cpu_count()} CPUs", "smose": __version__, "note": args.note, "depth": args.depth,
              "dagger": args.dagger, "finetune_steps": args.finetune_steps, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
