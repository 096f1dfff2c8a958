"""The deployable tree-routed controller, kind by kind: routing fidelity, return before and after `smose finetune`.

    python benchmarks/tree_controller.py --runs sweeps/tree-controller/runs/*__smose__s* --finetune-steps 50000 \
        --control --workers 2 --work sweeps/tree-controller-finetune \
        --out benchmarks/results/tree-controller/tree-controller

For each SMOSE run (a run directory with its checkpoint, e.g. a sweep's) this runs the library's own commands:
`smose distill RUN --depth D --dagger R --kind all` (per-expert CART, multiclass CART, oblique CMA-ES; skipped when
the run already holds trees made that way; ``--kind K`` makes and measures one kind only), then for every kind
`smose finetune RUN --steps N --tree-kind KIND` into
``--work`` (continued with `--resume` when interrupted, skipped when finished). With ``--longer L`` each finished
fine-tuning run is then copied and continued to L steps (`smose finetune --resume COPY --steps L`): whether more
fine-tuning helps, with the N-step result kept. It reads the numbers back from the files those commands write
(trees/fidelity.json, each fine-tuning run's config.json record, eval.json and metrics.csv) and writes OUT.json
(every number) and OUT.md (the tables and the targets). Re-running it after an interruption redoes only what
is missing. ``--keep EARLIER.json`` carries the runs of an earlier OUT.json over into this one as they were recorded
(when their run and work directories are gone, say on another machine), unless this invocation measures them again;
each kept batch keeps its own command, date and note.

The fine-tuned controller has trained N steps more than the neural router it is compared with. With ``--control``
the source run is also copied and trained on for the same N steps under its neural router (`smose train --resume
COPY --steps S+N`), and the fine-tuned controller is compared with that too: how much of the gain is fine-tuning
under the trees, and how much is more training. With both ``--control`` and ``--longer L`` the control is continued
to L steps as well (a copy of the N-step one), and the longer fine-tuning is compared with it.

Ratios compare the tree-routed return with the neural router's on the same evaluation episodes: tree / neural for a
positive neural return; for a negative one (Reacher, where returns are costs) neural / tree while the tree's return
is negative too, so that on both sides 1 means equal and above 1 better, and a ratio of 0.95 lets the tree cost 1/0.95
of the neural router's cost. The difference tree − neural is shown beside it.

The library's default oblique tree (`smose distill RUN --kind oblique`: CMA-ES from the router's boundaries, 1000
generations, no DAgger) is measured with ``--kind oblique --dagger 0 --cma-start router --cma-iterations 1000``, on
copies of the runs in another sweep directory: distilling a run again replaces the trees its earlier fine-tuning runs
were made under, and the work directories are named by the sweep directory, so neither record's runs touch the other's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import sys
from pathlib import Path

from record import header, write
from smose.choices import KIND_GROUPS, KINDS, kinds_of
from smose.errors import SmoseError
from smose.experiments.distillation import Distillation, tree_settings
from smose.interpret.oblique import CMA_STARTS
from smose.run import RunDir, read_metrics
from smose.serialization import read_eval, read_json
from smose.training.checkpoint import read_checkpoint_json
from smose.training.finetune import holds_trees, read_record, selection_pending, source_dir
from smose_cli import run_smose

ALL_KINDS = "all"
DISTILLATION = Distillation(depth=3)  # the defaults of the settings the benchmark does not choose itself


def state(out: Path, source: Path, source_step: int, kind: str, steps: int, select_episodes: int = 0) -> str:
    """Where the fine-tuning run in ``out`` stands: "finished" (all ``steps`` steps from ``source``'s checkpoint, at
    ``source_step``, under its current ``kind`` trees, compared at the end on ``select_episodes`` episodes),
    "resumable" (the same, interrupted after a checkpoint) or "fresh" (anything else: nothing there, another source
    step or other trees, say after the source was distilled again)."""
    try:
        record, checkpoint = read_record(out), read_checkpoint_json(out)
    except SmoseError:
        return "fresh"
    if (record is None or "before" not in record or record["tree_kind"] != kind
            or record.get("select_episodes", 0) != select_episodes or record["source_step"] != source_step
            or not holds_trees(source, kind, record["trees_sha256"])
            or source_dir(out, record).resolve() != source.resolve()):
        return "fresh"
    done = checkpoint["step"] - record["source_step"]
    # the end still to complete (stopped during the comparison or its writes): `smose finetune --resume` makes it
    finished = checkpoint.get("finished") is True and done == steps and not selection_pending(out, record)
    return "finished" if finished else "resumable"


def ratio_or_gap(value: float, neural: float) -> dict:
    """How ``value`` (tree-routed) compares with ``neural`` (module docstring): the ratio (None where there is none:
    a zero neural return, or a negative one beaten by a non-negative tree return), the difference, and whether the
    tree is at or above."""
    if neural > 0:
        ratio = value / neural
    elif neural < 0 and value < 0:
        ratio = neural / value  # costs: the tree's cost is 1/ratio of the neural router's
    else:
        ratio = None
    return {"ratio": ratio, "difference": value - neural, "at_or_above": value >= neural, "costs": neural < 0}


def finetune(run: Path, out: Path, source_step: int, kind: str, steps: int, select_episodes: int = 0) -> None:
    """Fine-tune ``run`` under its ``kind`` trees for ``steps`` steps into ``out`` (compared with the controller as
    distilled at the end on ``select_episodes`` episodes), unless that is done already."""
    where = state(out, run, source_step, kind, steps, select_episodes)
    if where == "resumable":
        run_smose("finetune", "--resume", str(out), "--steps", str(steps), "--quiet")
    elif where == "fresh":
        run_smose("finetune", str(run), "--steps", str(steps), "--tree-kind", kind, "--out", str(out), "--force",
                  "--select-episodes", str(select_episodes), "--quiet")


def longer_copy(work: Path, steps: int) -> Path:
    """Where a finished ``--finetune-steps`` work directory (fine-tuning or control) is copied to continue to
    ``steps`` (``--longer``)."""
    return work.with_name(f"{work.name}-longer{steps}")


def longer(run: Path, out: Path, source_step: int, kind: str, steps: int, longer_steps: int,
           select_episodes: int = 0) -> Path:
    """``out`` (finished at ``steps``) copied and continued to ``longer_steps`` fine-tuning steps; the copy."""
    copy = longer_copy(out, longer_steps)
    if state(copy, run, source_step, kind, longer_steps, select_episodes) == "fresh":
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(out, copy)
    finetune(run, copy, source_step, kind, longer_steps, select_episodes)
    return copy


def comparable(config: dict) -> dict:
    """A run's configuration without what continuing it changes."""
    return {key: value for key, value in config.items() if key not in ("steps", "out", "checkpoint_every")}


def work_dir(run: Path, what: str, args: argparse.Namespace) -> Path:
    """Where ``what`` of ``run`` goes in ``--work``: named by the run's sweep directory, its name and the fine-tuning
    steps, so that another sweep's run of the same name, or another length, is never taken for it."""
    return args.work / f"{run.resolve().parent.parent.name}-{run.name}-{what}-{args.finetune_steps}"


def eval_rows(run_dir: Path, from_step: int = 0) -> list[dict]:
    """The evaluation rows of a run's metrics.csv, from ``from_step`` on."""
    return [row for row in read_metrics(RunDir(run_dir).metrics)
            if row.get("event") == "eval" and int(row["step"]) >= from_step]


def seconds_between(evals: list[dict]) -> float | None:
    """Seconds from the first to the last of ``evals`` by metrics.csv's time column: training time (resumed runs
    continue it), evaluations included."""
    return float(evals[-1]["time"]) - float(evals[0]["time"]) if evals and evals[-1].get("time") else None


def continued(run: Path, source_step: int, args: argparse.Namespace, steps: int | None = None) -> Path:
    """A copy of ``run`` trained on under its neural router to ``source_step + steps`` (the control; ``steps``
    defaults to ``--finetune-steps``). A longer control continues a copy of the ``--finetune-steps`` one."""
    short = work_dir(run, "continued", args)
    steps = args.finetune_steps if steps is None else steps
    copy = short if steps == args.finetune_steps else longer_copy(short, steps)
    target = source_step + steps
    try:
        mine = comparable(read_json(RunDir(copy).config, "config")) == comparable(read_json(RunDir(run).config,
                                                                                          "config"))
        checkpoint = read_checkpoint_json(copy)
        if not mine or not source_step <= checkpoint["step"] <= target:
            raise SmoseError("another run")
        finished = checkpoint.get("finished") is True and checkpoint["step"] == target
    except SmoseError:
        base = run if copy == short else continued(run, source_step, args)
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(base, copy)
        finished = False
    if not finished:
        run_smose("train", "--resume", str(copy), "--steps", str(target), "--quiet")
    return copy


def control(copy: Path, source_step: int, steps: int) -> dict:
    """The control's final evaluation, its run and the seconds its ``steps`` steps took."""
    evaluation = read_eval(RunDir(copy).eval)
    return {"steps": steps, "return": evaluation["mean"], "run": str(copy), "episodes": evaluation["episodes"],
            "seed": evaluation["seed"], "seconds": seconds_between(eval_rows(copy, source_step))}


def after_finetuning(out: Path, record: dict) -> dict:
    """The fine-tuned controller's final evaluation (checked to be on the episodes of ``record["before"]``), its
    evaluations during fine-tuning and the seconds it took."""
    result = read_eval(RunDir(out).eval)
    before = record["before"]
    if any(result.get(key) != before.get(key) for key in ("episodes", "seed", "mode")):
        raise SmoseError(f"{out}: the final evaluation is not on the episodes of the evaluation before fine-tuning")
    evals = eval_rows(out)
    curve = {int(row["step"]) - record["source_step"]: float(row["eval_return_mean"]) for row in evals}
    return {"after": result["mean"], "curve": curve, "seconds": seconds_between(evals)}


def measure(run: Path, args: argparse.Namespace) -> dict:
    """Distil (if needed) and fine-tune under every kind; the numbers of one run (with "error" if a step failed)."""
    try:
        return _measure(run, args)
    except SmoseError as exc:
        return {"run": str(run), "error": str(exc)}


def _measure(run: Path, args: argparse.Namespace) -> dict:
    checkpoint = read_checkpoint_json(run)
    if checkpoint.get("finished") is not True:
        raise SmoseError(f"{run}: the run has not finished training (its checkpoint is at step {checkpoint['step']})")
    wanted = Distillation(depth=args.depth, dagger=args.dagger, kind=args.kind, episodes=args.episodes,
                          eval_episodes=args.eval_episodes, cma_iterations=args.cma_iterations,
                          cma_start=args.cma_start)
    if tree_settings(run) != wanted:
        run_smose("distill", *wanted.command(run)[4:])
    fidelity = read_json(RunDir(run).fidelity, "tree fidelity summary")
    source_step = checkpoint["step"]
    result = {"run": str(run), "env_id": fidelity["env_id"], "seed": read_json(RunDir(run).config, "config")["seed"],
              "source_step": source_step,
              # distill's own evaluation (its seed and episodes), not the fine-tuning runs' "neural_return" below
              "distill_neural_return": fidelity["returns"]["neural"]["mean"],
              "kinds": {}}
    if args.control:
        result["continued"] = control(continued(run, source_step, args), source_step, args.finetune_steps)
        if args.longer:
            result["continued"]["longer"] = control(continued(run, source_step, args, args.longer), source_step,
                                                    args.longer)
    for kind in kinds_of(args.kind):
        out = work_dir(run, f"finetune-{kind}", args)
        finetune(run, out, source_step, kind, args.finetune_steps, args.select_episodes)
        record = read_record(out)
        before = record["before"]
        done = after_finetuning(out, record)
        after, curve, seconds = done["after"], done["curve"], done["seconds"]
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
        if args.control:
            if any(result["continued"][key] != before[key] for key in ("episodes", "seed")):
                raise SmoseError(f"{result['continued']['run']}: its evaluation is not on the fine-tuning's episodes")
            result["kinds"][kind]["after_vs_continued"] = ratio_or_gap(after, result["continued"]["return"])
        if args.longer:
            copy = longer(run, out, source_step, kind, args.finetune_steps, args.longer, args.select_episodes)
            more = after_finetuning(copy, read_record(copy))
            result["kinds"][kind]["longer"] = {
                "steps": args.longer, "after": more["after"],
                "after_vs_neural": ratio_or_gap(more["after"], before["neural_return"]),
                "curve": more["curve"], "finetune_run": str(copy), "finetune_seconds": more["seconds"]}
            if args.control:
                result["kinds"][kind]["longer"]["after_vs_continued"] = ratio_or_gap(
                    more["after"], result["continued"]["longer"]["return"])
    return result


# the settings a record's numbers depend on: an earlier record is kept (``--keep``) only where they agree
SETTINGS = ("kind", "depth", "dagger", "episodes", "eval_episodes", "cma_iterations", "cma_start", "finetune_steps",
            "select_episodes",
            "control", "longer")
# what a record that does not name a setting was measured with: the benchmark's only choice, or its default, before
# it recorded the setting
UNRECORDED = {"kind": ALL_KINDS, "episodes": 20, "eval_episodes": 10, "cma_iterations": 200, "cma_start": "zeros",
              "select_episodes": 0}


def record_settings(record: dict, where: Path) -> dict:
    """The SETTINGS of a record of this benchmark (``--control`` and ``--longer`` read off its runs when it does not
    name them)."""
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
        raise SmoseError(f"{where}: not a record of this benchmark (no list of runs)")
    runs = [run for run in record["runs"] if "error" not in run]
    derived = {"control": any("continued" in run for run in runs),
               "longer": next((k["longer"]["steps"] for run in runs for k in run["kinds"].values() if "longer" in k),
                              None)}
    try:
        return {key: record[key] if key in record else {**UNRECORDED, **derived}[key] for key in SETTINGS}
    except KeyError as missing:
        raise SmoseError(f"{where}: not a record of this benchmark (no {missing})") from None


def run_key(run: str | Path) -> tuple[str, str]:
    """A measured run, wherever the record was made: its sweep directory's name and its own (as in ``work_dir``)."""
    path = Path(run)
    return path.parent.parent.name, path.name


def kept_runs(earlier: dict, where: Path, settings: dict) -> tuple[list[dict], list[dict]]:
    """The measured runs of an ``earlier`` record (read from ``where``) and its batches (its own and those it kept
    itself), each with its command, date, machine, note and the runs it measured. A record made with other
    settings is refused."""
    theirs = record_settings(earlier, where)
    for key in SETTINGS:
        if theirs[key] != settings[key]:
            raise SmoseError(f"{where}: measured with {key} = {theirs[key]}, not {settings[key]}; "
                             f"its runs cannot be kept in this record")
    runs = [run for run in earlier["runs"] if "error" not in run]
    own = {key: earlier.get(key) for key in ("command", "date", "machine", "smose", "note")}
    batches = earlier.get("earlier", []) + [own | {"runs": [run["run"] for run in earlier["runs"]]}]
    return runs, batches


def merged(kept: list[dict], batches: list[dict], measured: list[dict]) -> tuple[list[dict], list[dict]]:
    """This invocation's ``measured`` runs with the ``kept`` ones it did not measure, or failed to measure again
    (the earlier numbers stand then); the ``batches`` pruned to the kept runs they account for."""
    kept_by_key = {run_key(run["run"]): run for run in kept}
    new = [kept_by_key.get(run_key(run["run"]), run) if "error" in run else run for run in measured]
    again = {run_key(run["run"]) for run in new}
    runs = [run for run in kept if run_key(run["run"]) not in again] + new
    names = {run["run"] for run in runs if any(run is earlier for earlier in kept)}
    pruned = []
    for batch in batches:
        if mine := [name for name in batch["runs"] if name in names]:
            pruned.append(batch | {"runs": mine})
            names -= set(mine)
    return runs, pruned


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def versus(v: dict) -> str:
    """The ratio, with the difference beside it where returns are costs; the difference alone without a ratio."""
    if v["ratio"] is None:
        return f"{v['difference']:+.2f}"
    return f"{v['ratio']:.2f}" + (f" ({v['difference']:+.2f})" if v.get("costs") else "")


def longer_cell(longer: dict) -> str:
    """After the longer fine-tuning: against the neural router, and against the longer control where there is one."""
    return versus(longer["after_vs_neural"]) + (f" / {versus(longer['after_vs_continued'])}"
                                                 if "after_vs_continued" in longer else "")


def fmt_seconds(seconds: float | None, unit: float) -> str:
    return "–" if seconds is None else f"{seconds / unit:.1f}"


def longer_steps_of(runs: list[dict]) -> int | None:
    """The ``--longer`` steps of a record's runs; None when it has no longer fine-tuning."""
    return next((k["longer"]["steps"] for run in runs for k in run["kinds"].values() if "longer" in k), None)


def markdown(record: dict) -> str:
    runs = [run for run in record["runs"] if "error" not in run]
    longer_steps = longer_steps_of(runs)
    longer = longer_steps is not None
    control = any("continued" in run for run in runs)
    kind_setting = record.get("kind", UNRECORDED["kind"])
    lines = ["# The deployable tree-routed controller: fidelity and return before and after fine-tuning", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']}; smose {record['smose']}; {record['date']}. {record['note']}".rstrip(), "",
             *[line for batch in record.get("earlier", []) for line in (
                 f"Kept from an earlier record ({batch['date']}; {batch.get('machine') or 'machine not recorded'}; "
                 f"smose {batch['smose']}): {', '.join(Path(name).name for name in batch['runs'])}, measured by "
                 f"`{batch['command']}`. {batch['note'] or ''}".rstrip(), "")],
             f"Depth-{record['depth']} trees with {record['dagger']} DAgger "
             f"round{'s' if record['dagger'] != 1 else ''} (`smose distill --kind {kind_setting}`), "
             f"then `smose finetune --steps {record['finetune_steps']}"
             + (f" --select-episodes {record['select_episodes']}` under each kind (*after*: the controller it keeps, "
                "the fine-tuned one or the one as distilled). " if record.get("select_episodes") else
                " --select-episodes 0` under each kind (*after*: the fine-tuned controller). ")
             + "*held-out*: agreement with "
             "the router on held-out states of the neural policy; *closed loop*: on the steps the tree-routed policy "
             "takes itself; *before* / *after*: the tree-routed return against the neural router's, on the "
             "fine-tuning run's evaluation episodes: tree / neural, or for negative returns (costs) neural / tree "
             "with the difference tree − neural beside it, so 1 is equal and above 1 better on both; *best*: the "
             "best periodic evaluation during fine-tuning, likewise (picked on the episodes it is scored on, so it "
             "flatters)" + (f"; *after {longer_steps:,}*: the same fine-tuning continued to {longer_steps:,} steps, "
                            "against the neural router (and, after the slash, against the control trained on as "
                            "long)" if longer else "")
             + ("; *vs continued*: after fine-tuning against the neural router trained on for as many steps "
                "(`--control`), on the same episodes" if control else "")
             + ". Times: *fit s*, wall clock of fitting that kind's trees with DAgger, from the distillation's "
             "record (the rollouts all kinds share are not in it); *fine-tune min*, of fine-tuning, evaluations "
             "included.", ""]
    return "\n".join(lines + tables(record)) + "\n"


def tables(record: dict) -> list[str]:
    """The markdown's tables and targets (each run, by task, against the control) of a record of this benchmark, or
    of one in its shape (benchmarks/tree_controller_episodes.py: its returns on more episodes)."""
    runs = [run for run in record["runs"] if "error" not in run]
    failed = [run for run in record["runs"] if "error" in run]
    longer_steps = longer_steps_of(runs)
    longer = longer_steps is not None
    control = any("continued" in run for run in runs)
    kinds = kinds_of(record.get("kind", UNRECORDED["kind"]))
    lines = ["| run | source step | neural | kind | held-out | closed loop | before | after | best | "
             + ("vs continued | " if control else "") + (f"after {longer_steps:,} | " if longer else "") + "fit s | "
             "fine-tune min |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if control else "") + ("---|" if longer else "")
             + "---|---|"]
    for run in runs:
        for kind, k in run["kinds"].items():
            best = (ratio_or_gap(k["best_during"], k["neural_return"]) if k["best_during"] is not None else None)
            more = ""
            if control:
                more += (f"{versus(k['after_vs_continued'])} | " if "after_vs_continued" in k else "– | ")
            if longer:
                more += (f"{longer_cell(k['longer'])} ({fmt_seconds(k['longer']['finetune_seconds'], 60)} min) | "
                         if "longer" in k else "– | ")
            lines.append(f"| {Path(run['run']).name} | {run['source_step']:,} | {k['neural_return']:.1f} | {kind} | "
                         f"{pct(k['agreement'])} | {pct(k['closed_loop_agreement'])} | "
                         f"{versus(k['before_vs_neural'])} | {versus(k['after_vs_neural'])} | "
                         f"{versus(best) if best else '–'} | {more}"
                         f"{fmt_seconds(k['fit_seconds'], 1)} | {fmt_seconds(k['finetune_seconds'], 60)} |")
    lines += ["", "## By task", "",
              "Means over seeds of the returns (tree-routed before and after fine-tuning, neural), compared as above; "
              "*worst run*: the lowest single run's ratio after fine-tuning.",
              "", "| task | seeds | kind | held-out | closed loop | neural | before | after | worst run, after | "
              "runs at or above the neural router, after |", "|---|---|---|---|---|---|---|---|---|---|"]
    tasks = sorted({run["env_id"] for run in runs})
    met: dict[str, list[str]] = {kind: [] for kind in kinds}
    worst_run: dict[str, float | None] = {kind: None for kind in kinds}
    high: dict[str, list[str]] = {kind: [] for kind in kinds}
    for task in tasks:
        mine = [run for run in runs if run["env_id"] == task]
        for kind in kinds:
            ks = [run["kinds"][kind] for run in mine]
            neural = statistics.mean(k["neural_return"] for k in ks)
            before = ratio_or_gap(statistics.mean(k["before"] for k in ks), neural)
            after = ratio_or_gap(statistics.mean(k["after"] for k in ks), neural)
            # a run without a ratio is at or above (a non-negative tree return against a negative neural one) or
            # has a zero neural return; neither can be the worst
            ratios = [k["after_vs_neural"]["ratio"] for k in ks if k["after_vs_neural"]["ratio"] is not None]
            worst = min(ratios, default=None)
            if worst is not None:
                worst_run[kind] = worst if worst_run[kind] is None else min(worst_run[kind], worst)
            if after["at_or_above"]:
                met[kind].append(task)
            agreement = statistics.mean(k["agreement"] for k in ks)
            if agreement >= 0.95:
                high[kind].append(task)
            above = sum(k["after_vs_neural"]["at_or_above"] for k in ks)
            lines.append(f"| {task} | {len(ks)} | {kind} | {pct(agreement)} | "
                         f"{pct(statistics.mean(k['closed_loop_agreement'] for k in ks))} | {neural:.1f} | "
                         f"{versus(before)} | {versus(after)} | {'–' if worst is None else f'{worst:.2f}'} | "
                         f"{above} of {len(ks)} |")
    if control:
        lines += ["", "## Against the neural router trained as long", "",
                  f"Each source run trained on for {record['finetune_steps']:,} steps under its neural router "
                  "(`--control`): its mean final return over the seeds, and the fine-tuned controllers' mean against "
                  "it" + ("; the rows marked with a number of steps, both trained on as long as `--longer` says"
                          if longer else "") + ".", "",
                  "| task | seeds | neural, continued | " + " | ".join(kinds) + " |",
                  "|---|---|---|" + "---|" * len(kinds)]
        for task in tasks:
            mine = [run for run in runs if run["env_id"] == task and "continued" in run]
            if not mine:
                continue
            neural = statistics.mean(run["continued"]["return"] for run in mine)
            cells = [versus(ratio_or_gap(statistics.mean(run["kinds"][kind]["after"] for run in mine), neural))
                     for kind in kinds]
            lines.append(f"| {task} | {len(mine)} | {neural:.1f} | " + " | ".join(cells) + " |")
            mine = [run for run in mine if "longer" in run["continued"]
                    and all("longer" in run["kinds"][kind] for kind in kinds)]
            if mine:
                neural = statistics.mean(run["continued"]["longer"]["return"] for run in mine)
                cells = [versus(ratio_or_gap(statistics.mean(run["kinds"][kind]["longer"]["after"] for run in mine),
                                             neural)) for kind in kinds]
                lines.append(f"| {task}, {mine[0]['continued']['longer']['steps']:,} steps | {len(mine)} | "
                             f"{neural:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets", ""]
    for kind in kinds:
        worst = worst_run[kind]
        lines.append(f"- {kind}, after fine-tuning: mean tree-routed return at or above the neural router's on "
                     f"{len(met[kind])} of {len(tasks)} tasks (target: 5 of 6); lowest single-run ratio "
                     f"{'–' if worst is None else f'{worst:.2f}'} (target: never below 0.95).")
    best_kind = max(kinds, key=lambda kind: len(high[kind]))
    lines.append(f"- Held-out agreement >= 95%, best kind ({best_kind}): {len(high[best_kind])} of {len(tasks)} "
                 f"tasks (target: 4 of 6): {', '.join(high[best_kind]) or 'none'}. By kind: "
                 + "; ".join(f"{kind} {len(high[kind])}" for kind in kinds) + ".")
    if failed:
        lines += ["", "## Runs not measured", ""] + [f"- {run['error']}" for run in failed]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="SMOSE run directories with checkpoints")
    parser.add_argument("--kind", choices=[*KIND_GROUPS, *KINDS], default=ALL_KINDS,
                        help="the tree kinds to make and fine-tune under (smose distill --kind; default %(default)s)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--dagger", type=int, default=4)
    # 200 generations and zeros: the committed record's, made before the router start existed and before smose
    # distill's default became 1000 generations; re-running its command must not distil the runs again (which would
    # fine-tune them again under other trees)
    parser.add_argument("--cma-iterations", type=int, default=UNRECORDED["cma_iterations"],
                        help="CMA-ES generations of the oblique trees (smose distill --cma-iterations; default "
                             "%(default)s, as the committed record)")
    parser.add_argument("--cma-start", choices=CMA_STARTS, default="zeros",
                        help="where the oblique trees' CMA-ES starts (smose distill --cma-start; default %(default)s, "
                             "as the committed record)")
    parser.add_argument("--episodes", type=int, default=DISTILLATION.episodes,
                        help="episodes of the neural policy the trees are fitted on (smose distill --episodes)")
    parser.add_argument("--eval-episodes", type=int, default=DISTILLATION.eval_episodes,
                        help="episodes of distill's own evaluation (smose distill --eval-episodes); the fine-tuning "
                             "runs evaluate on their source run's episodes")
    parser.add_argument("--finetune-steps", type=int, default=50_000)
    parser.add_argument("--select-episodes", type=int, default=UNRECORDED["select_episodes"], metavar="N",
                        help="smose finetune --select-episodes: at the end keep the controller as distilled where it "
                             "does better on N episodes of their own (default %(default)s, as the committed records: "
                             "the fine-tuned controller; benchmarks/tree_controller_episodes.py --select-episodes "
                             "makes the comparison on finished runs)")
    parser.add_argument("--control", action="store_true",
                        help="also train each source run on under its neural router for --finetune-steps steps (a "
                             "copy) and compare with that")
    parser.add_argument("--longer", type=int, default=None, metavar="L",
                        help="also continue each fine-tuning run (a copy) to L steps: whether more helps")
    parser.add_argument("--work", type=Path, default=Path("sweeps/tree-controller-finetune"),
                        help="where the fine-tuning runs go (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="runs measured at once (one per core)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--keep", type=Path, default=None, metavar="EARLIER.json",
                        help="also report the runs of an earlier OUT.json as recorded there (those --runs does not "
                             "measure again), e.g. when their work directories are gone")
    args = parser.parse_args()
    if args.longer is not None and args.longer <= args.finetune_steps:
        sys.exit(f"tree_controller: --longer {args.longer} must exceed --finetune-steps {args.finetune_steps}")
    settings = {key: getattr(args, key) for key in SETTINGS}
    kept, batches = [], []
    if args.keep is not None:
        try:
            kept, batches = kept_runs(read_json(args.keep, "benchmark record"), args.keep, settings)
        except SmoseError as exc:
            sys.exit(f"tree_controller: {exc}")
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:  # each job is a chain of subprocesses
        measured = list(pool.map(lambda run: measure(run, args), args.runs))
    runs, batches = merged(kept, batches, measured)
    record = {**header("tree_controller.py", args.note), **settings, **({"earlier": batches} if batches else {}),
              "runs": runs}
    write(args.out, record, markdown(record))
    failed = [run for run in measured if "error" in run]
    if failed:
        sys.exit(f"tree_controller: {len(failed)} of {len(measured)} runs not measured (listed in "
                 f"{args.out.with_suffix('.md')})")


if __name__ == "__main__":
    main()
