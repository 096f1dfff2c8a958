"""A tree-controller record's returns again, on more episodes: every controller it compares, evaluated anew.

    cd sweeps && python ../benchmarks/tree_controller_episodes.py \
        --record ../benchmarks/results/tree-controller/tree-controller.json --episodes 100 --seed 1000 \
        --out ../benchmarks/results/tree-controller/tree-controller-100-episodes

A record of benchmarks/tree_controller.py compares the controllers on their runs' own final evaluation: 5 episodes.
Where the return depends much on how an episode starts (Reacher: where the target is drawn), 5 episodes move a ratio
by several per cent. This evaluates, for each run of the record whose directories are still there (its paths are
relative to where it was made: run this from there), on the same N episodes:

- the neural router (the source run);
- each kind's trees as distilled: the source run's experts routed by the trees its fine-tuning run was made under
  (that run's own copy, bound to it by SHA-256), as `smose eval SOURCE --router tree --tree-kind KIND` does;
- each fine-tuned controller, as `smose eval FINETUNE_RUN` (for a run fine-tuned with the comparison at the end,
  the controller it kept);
- the control trained on as long under its neural router, where the record has one.

With ``--select-episodes N``, *after* is the controller `smose finetune --select-episodes N` keeps (its default
since the library compares at the end; the record's fine-tuning runs were made with the comparison off, and training
is the same either way): the fine-tuned one, or the one as distilled where that did better on N episodes of their own
(``smose.training.finetune.choose``, on the fine-tuning run's seed: the library's own comparison, made here on the
finished runs). ``fine_tuned_after`` keeps the fine-tuned controller's return, ``selection`` the comparison.

All deterministic, gated, loaded from the run directories and evaluated in this process: nothing is trained, and
nothing is written into a run directory (`smose eval` would replace a run's eval.json, which the record's own
read-back checks against). OUT.json holds the record in tree_controller.py's shape (``before``/``after`` are now
N-episode returns; ``recorded_after_vs_neural`` keeps the record's own comparison), so OUT.md has its tables and
targets, over the runs evaluated; runs that could not be are listed with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from record import header, write
from smose.api import load_for_eval
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.interpret.tree_router import TreeRouter
from smose.interpret.trees import load_trees, tree_file
from smose.serialization import load_model, read_json
from smose.training.config import read_run_config
from smose.training.finetune import AS_DISTILLED, choose, distilled_controller, read_record
from tree_controller import ratio_or_gap, record_settings, tables, versus


def returns_of(run_dir: Path | str, episodes: int, seed: int, trees_from: Path | None = None,
               kind: str | None = None) -> dict:
    """Mean and spread of ``run_dir``'s deterministic (gated) return over ``episodes`` episodes from ``seed``;
    with ``trees_from``, its experts routed by the ``kind`` trees of that run directory instead of its own router."""
    run = load_for_eval(run_dir)
    router = None
    if trees_from is not None:
        router = TreeRouter(load_trees(tree_file(trees_from, kind), run.actor, run.env_id))
    env = run.make_env()
    try:
        result = evaluate(run.actor, env, episodes, seed, "gated", router=router)
    finally:
        env.close()
    return {"mean": result["mean"], "std": result["std"]}


def selection_of(finetuned: Path, episodes: int) -> dict:
    """The comparison `smose finetune --select-episodes EPISODES` makes at the end of the fine-tuning run
    ``finetuned`` (the library's functions, on its finished run): which controller it keeps, and both returns."""
    record = read_record(finetuned)
    if record.get("select_episodes"):
        raise SmoseError(f"{finetuned}: fine-tuned with the comparison on: its own controller is the one kept")
    as_distilled = distilled_controller(finetuned, record)
    fine_tuned, _ = load_model(finetuned)
    env = load_for_eval(finetuned).make_env()
    try:
        return choose(fine_tuned, as_distilled, env, episodes, read_run_config(finetuned / "config.json").seed)
    finally:
        env.close()


def again(run: dict, episodes: int, seed: int, select_episodes: int = 0) -> dict:
    """One run of the record on ``episodes`` episodes from ``seed``, in the record's shape (``select_episodes``: as
    the module says); ``{"run", "error"}`` when a directory it needs is gone or fails to load (SmoseError)."""
    try:
        for path in [run["run"], *(k["finetune_run"] for k in run["kinds"].values())]:
            if not Path(path).is_dir():
                raise SmoseError(f"{path}: no such directory here")
        neural = returns_of(run["run"], episodes, seed)
        result = {key: run[key] for key in ("run", "env_id", "seed", "source_step")} | {
            "neural": neural, "kinds": {}}
        if "continued" in run and Path(run["continued"]["run"]).is_dir():
            continued = returns_of(run["continued"]["run"], episodes, seed)
            result["continued"] = {"return": continued["mean"], "std": continued["std"],
                                   "run": run["continued"]["run"], "episodes": episodes, "seed": seed}
        for kind, recorded in run["kinds"].items():
            finetuned = Path(recorded["finetune_run"])
            if (read_record(finetuned) or {}).get("tree_kind") != kind:
                raise SmoseError(f"{finetuned}: not a fine-tuning run under {kind} trees")
            before = returns_of(run["run"], episodes, seed, trees_from=finetuned, kind=kind)
            after = fine_tuned = returns_of(finetuned, episodes, seed)
            selection = selection_of(finetuned, select_episodes) if select_episodes else None
            if selection and selection["kept"] == AS_DISTILLED:
                after = before
            mine = {"neural_return": neural["mean"], "before": before["mean"], "after": after["mean"],
                    "before_std": before["std"], "after_std": after["std"],
                    "before_vs_neural": ratio_or_gap(before["mean"], neural["mean"]),
                    "after_vs_neural": ratio_or_gap(after["mean"], neural["mean"]),
                    "recorded_after_vs_neural": recorded["after_vs_neural"], "best_during": None}
            if selection:
                mine |= {"selection": selection, "fine_tuned_after": fine_tuned["mean"],
                         "fine_tuned_after_vs_neural": ratio_or_gap(fine_tuned["mean"], neural["mean"])}
            if "continued" in result:
                mine["after_vs_continued"] = ratio_or_gap(after["mean"], result["continued"]["return"])
            # what does not depend on the episodes, as recorded
            keep = ("agreement", "closed_loop_agreement", "fit_seconds", "finetune_run", "finetune_seconds")
            result["kinds"][kind] = {key: recorded[key] for key in keep} | mine
        return result
    except SmoseError as exc:
        return {"run": run["run"], "error": str(exc)}


def markdown(record: dict) -> str:
    episodes, seed = record["compared_on"]["episodes"], record["compared_on"]["seed"]
    lines = [f"# The tree-routed controllers of a record on {episodes} episodes", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']}; smose {record['smose']}; {record['date']}. {record['note']}".rstrip(), "",
             f"Every controller of `{record['record']}` (made by `{record['record_command']}`)"
             + (f" on {', '.join(record['envs'])}" if record.get("envs") else "") + " evaluated again on "
             f"the same {episodes} episodes (reset seeds from {seed}; deterministic, gated): the "
             "neural router, each kind's trees as distilled (*before*) and fine-tuned (*after*), and the control "
             "trained on as long (*vs continued*). Compared as in that record: tree / neural, or for negative "
             "returns (costs) neural / tree with the difference beside it. Agreement and times are the record's; "
             "*best* is not measured here.", ""]
    select = record["compared_on"].get("select_episodes")
    if select:
        kept = [(Path(run["run"]).name, kind, k["selection"]) for run in record["runs"] if "error" not in run
                for kind, k in run["kinds"].items()]
        lines += [f"*After* is the controller `smose finetune --select-episodes {select}` keeps: the fine-tuned one "
                  f"unless the one as distilled does better on {select} episodes of their own (reset seeds from the "
                  "run's seed + 30,000), compared by the library's own function on the finished fine-tuning runs. "
                  f"It kept the one as distilled on {sum(s['kept'] == AS_DISTILLED for _, _, s in kept)} of "
                  f"{len(kept)}:", "",
                  "| run | kind | fine-tuned, comparison | as distilled, comparison | kept | fine-tuned, these "
                  "episodes | kept, these episodes |", "|---|---|---|---|---|---|---|"]
        for run in record["runs"]:
            for kind, k in run.get("kinds", {}).items():
                s = k["selection"]
                lines.append(f"| {Path(run['run']).name} | {kind} | {s['fine_tuned_return']:.1f} | "
                             f"{s['as_distilled_return']:.1f} | {s['kept']} | "
                             f"{versus(k['fine_tuned_after_vs_neural'])} | {versus(k['after_vs_neural'])} |")
        lines.append("")
    return "\n".join(lines + tables(record)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, required=True, help="a record of benchmarks/tree_controller.py")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per controller (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1000,
                        help="reset seed of the first episode (default %(default)s: none of the episodes the trees "
                             "were fitted or checked on)")
    parser.add_argument("--envs", nargs="+", default=None, metavar="ENV_ID",
                        help="only the record's runs of these tasks (default: all of them)")
    parser.add_argument("--select-episodes", type=int, default=0, metavar="N",
                        help="after: the controller smose finetune --select-episodes N keeps (default 0: the "
                             "fine-tuned one)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the record")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    if args.episodes < 1:
        sys.exit(f"tree_controller_episodes: --episodes must be at least 1, got {args.episodes}")
    if args.select_episodes < 0:
        sys.exit(f"tree_controller_episodes: --select-episodes must be at least 0, got {args.select_episodes}")
    try:
        source = read_json(args.record, "benchmark record")
        settings = record_settings(source, args.record)
    except SmoseError as exc:
        sys.exit(f"tree_controller_episodes: {exc}")
    torch.set_num_threads(1)  # one core per process, as the runs were evaluated
    wanted = [run for run in source["runs"]
              if "error" not in run and (args.envs is None or run["env_id"] in args.envs)]
    if not wanted:
        sys.exit(f"tree_controller_episodes: {args.record} has no measured runs of {', '.join(args.envs or [])}")
    runs = [again(run, args.episodes, args.seed, args.select_episodes) for run in wanted]
    # the record's own settings keep their names (its "episodes" are distill's); these are the new evaluations'
    record = {**header("tree_controller_episodes.py", args.note), **settings, "record": str(args.record),
              "record_command": source["command"], "compared_on": {"episodes": args.episodes, "seed": args.seed,
                                                         **({"select_episodes": args.select_episodes}
                                                            if args.select_episodes else {})},
              **({"envs": args.envs} if args.envs else {}),
              "runs": runs}
    write(args.out, record, markdown(record))
    if not any("error" not in run for run in runs):
        sys.exit(f"tree_controller_episodes: none of the record's runs could be evaluated (listed in "
                 f"{args.out.with_suffix('.md')})")


if __name__ == "__main__":
    main()
