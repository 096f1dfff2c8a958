"""The ``smose`` command line: train, eval, distill, finetune, info, explain, video, export, sweep, table.

Each command imports the modules it needs when it runs, and this module imports nothing heavy, so ``smose --help``
and ``smose COMMAND --help`` answer without loading torch (tests/test_imports.py keeps it so).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from smose._version import __version__
from smose.choices import (
    ACTION_MODES,
    CMA_DEFAULT_ITERATIONS,
    CMA_DEFAULT_START,
    CMA_POPULATION,
    CMA_STARTS,
    DEFAULT_SELECT_EPISODES,
    DEFAULT_TREE_KIND,
    KIND_GROUPS,
    KINDS,
    ROUTERS,
    UPDATES,
)
from smose.errors import SmoseError
from smose.export.formats import format_help, format_titles
from smose.limits import (
    MAX_BATCH_SIZE,
    MAX_CMA_ITERATIONS,
    MAX_DAGGER_ROUNDS,
    MAX_EPISODES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TREE_DEPTH,
    MAX_WORKERS,
    Count,
)
from smose.run import REPORT_MARKDOWN, RunDir, read_metrics
from smose.training.config import add_config_arguments, config_from_args, explicit_options


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``smose: error: ...``, with exit status 2, like every other
    refusal of the command line (argparse's own print the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"smose: error: {message} (see `{self.prog} --help`)\n")


EPISODES = Count(1, MAX_EPISODES)
SEED = Count(0, MAX_SEED)


# Options `smose train --resume` accepts: the rest of the configuration comes from the run's config.json.
RESUME_OPTIONS = ("steps", "checkpoint_every")


def cmd_train(args: argparse.Namespace) -> int:
    from smose.serialization import read_eval
    from smose.training.trainer import TrainingInterrupted, resume, train

    try:
        if args.resume is not None:
            given = explicit_options(args)
            refused = sorted(set(given) - set(RESUME_OPTIONS)) + (["force"] if args.force else [])
            if refused:
                flags = ", ".join("--" + name.replace("_", "-") for name in refused)
                raise SmoseError(f"--resume continues with the run's config.json; only --steps and --checkpoint-every "
                                 f"may be given (got {flags})")
            run_dir = resume(Path(args.resume), given.get("steps"), given.get("checkpoint_every"),
                             progress=not args.quiet)
        else:
            config = config_from_args(args)
            run_dir = train(config, Path(config.out) if config.out else None, force=args.force,
                            progress=not args.quiet)
    except TrainingInterrupted as exc:
        print(f"smose: {exc}", file=sys.stderr)
        return 130
    if args.resume is not None:
        from smose.training.finetune import read_record

        if read_record(run_dir) is not None:  # a fine-tuning run, resumed: what `smose finetune --resume` prints
            return _print_finetune_summary(run_dir)
    result = read_eval(RunDir(run_dir).eval)
    summary = {"run_dir": str(run_dir), "final_eval_mean": result["mean"], "final_eval_std": result["std"]}
    if "success_rate" in result:
        summary["final_eval_success_rate"] = result["success_rate"]
    print(json.dumps(summary))
    return 0


def _print_finetune_summary(run_dir: Path) -> int:
    """A fine-tuning run's summary on stdout (JSON) and what it calls for on stderr: the comparison at the end not
    completed, the controller as distilled kept, the return fallen."""
    from smose.training.finetune import fell, kept_as_distilled, not_compared, summary
    from smose.training.logger import warn

    result = summary(run_dir)
    print(json.dumps(result))
    for message in (not_compared(result), kept_as_distilled(result), fell(result)):
        if message:
            warn(message)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from smose.training.finetune import finetune, resume_finetune
    from smose.training.trainer import TrainingInterrupted

    try:
        if args.resume is not None:
            given = [flag for flag, value in (("RUN_DIR", args.run_dir), ("--tree-kind", args.tree_kind),
                                              ("--out", args.out), ("--force", args.force),
                                              ("--update", args.update),
                                              ("--select-episodes", args.select_episodes is not None)) if value]
            if given:
                raise SmoseError(f"--resume continues a fine-tuning run with its own source, trees and directory; "
                                 f"only --steps and --checkpoint-every may be given (got {', '.join(given)})")
            run_dir = resume_finetune(Path(args.resume), args.steps, args.checkpoint_every, progress=not args.quiet)
        else:
            if args.run_dir is None or args.steps is None:
                raise SmoseError("give the run to fine-tune and --steps N (or --resume FINETUNE_DIR)")
            run_dir = finetune(Path(args.run_dir), args.steps, args.tree_kind or DEFAULT_TREE_KIND,
                               Path(args.out) if args.out else None, force=args.force,
                               checkpoint_every=args.checkpoint_every, progress=not args.quiet,
                               update=args.update, select_episodes=DEFAULT_SELECT_EPISODES
                               if args.select_episodes is None else args.select_episodes)
    except TrainingInterrupted as exc:
        print(f"smose: {exc}", file=sys.stderr)
        return 130
    return _print_finetune_summary(run_dir)


def _eval_protocols(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The (mode, episodes) evaluations `smose eval` runs: those of --protocol, or of --mode and --episodes."""
    from smose.evaluate import EVAL_PROTOCOLS

    if args.protocol is None:
        mode, episodes = EVAL_PROTOCOLS["smose"]
        return [(args.mode or mode, args.episodes or episodes)]
    if args.mode is not None or args.episodes is not None:
        raise SmoseError("--protocol sets the mode and the number of episodes; give either --protocol or "
                         "--mode/--episodes")
    if args.router == "tree" and args.protocol != "smose":
        raise SmoseError("--protocol authors/both evaluates the neural router; use --mode linear with --router tree")
    names = ("smose", "authors") if args.protocol == "both" else (args.protocol,)
    return [EVAL_PROTOCOLS[name] for name in names]


def cmd_eval(args: argparse.Namespace) -> int:
    from smose.api import load_for_eval
    from smose.evaluate import evaluate
    from smose.interpret.tree_policy import TreeRoutedActor, routing
    from smose.serialization import eval_file, write_eval, write_json

    protocols = _eval_protocols(args)
    loaded = []
    for name in args.run_dir:  # everything is checked before the first episode runs
        run = load_for_eval(name)
        if any(mode == "linear" for mode, _ in protocols) and run.algo != "smose":
            raise SmoseError(f"--mode linear exists only for SMOSE models; {run.path} holds {run.algo}")
        router = None
        # A controller fine-tuned under its trees routes with them on its own: that evaluation is its eval.json.
        own = run.actor.tree_kind if isinstance(run.actor, TreeRoutedActor) and args.router is None else None
        chosen, kind = routing(run.actor, run.path, args.router, args.tree_kind)
        if chosen == "tree" and own is None:
            from smose.interpret.distill import load_tree_router, require_smose

            router = load_tree_router(run.path, kind, require_smose(run.actor, run.meta, run.path), run.env_id)
        loaded.append((run, router, kind, own))
    for run, router, kind, own in loaded:
        env = run.make_env(args.env)  # each evaluation resets it with its own seeds
        for mode, episodes in protocols:
            result = evaluate(run.actor, env, episodes, args.seed, mode, router=router)
            result |= {"env_id": env.spec.id, "algo": run.algo,
                       "router": "neural" if router is None and own is None else "tree"}
            if own is not None:
                result["tree_kind"] = own
            if router is None:  # eval.json (gated) stays the run's reference; a linear evaluation goes beside it
                other_env = env.spec.id if env.spec.id != run.env_id else None
                write_eval(run.path / eval_file(mode, other_env), result | {"source": "eval"})
            else:  # the neural evaluation in eval.json stays the run's reference
                from smose.interpret.distill import tree_eval_file

                result["tree_kind"] = kind
                write_json(tree_eval_file(run.path, kind), result | {"source": "eval"})
            if len(loaded) > 1:
                result = {"run_dir": str(run.path), **result}
            print(json.dumps(result), flush=True)
        env.close()
    return 0


def _last_metrics(run_dir: Path) -> dict[str, dict[str, str]]:
    """The last episode row and the last evaluation row of metrics.csv."""
    last: dict[str, dict[str, str]] = {}
    for row in read_metrics(RunDir(run_dir).metrics):
        prefix = "last_eval" if row.get("event") == "eval" else "last_episode"
        last[prefix] = {k: v for k, v in row.items() if isinstance(k, str) and v not in ("", None)}
    return last


def cmd_distill(args: argparse.Namespace) -> int:
    from smose.interpret.distill import distill, print_summary

    summary = distill(args.run_dir, depth=args.depth, episodes=args.episodes, kind=args.kind, seed=args.seed,
                      eval_episodes=args.eval_episodes, mode=args.mode, dagger=args.dagger,
                      cma_iterations=args.cma_iterations, cma_start=args.cma_start, progress=not args.quiet)
    print_summary(summary, Path(args.run_dir))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from smose.api import load_for_eval

    run = load_for_eval(args.run_dir)
    run_dir, meta, paths = run.path, run.meta, RunDir(run.path)
    info = {
        "run_dir": str(run_dir),
        "env_id": run.env_id,
        "env_kwargs": run.env_kwargs,
        "architecture": meta["architecture"],
        "parameter_counts": run.actor.parameter_counts(),
        "trained_steps": meta.get("trained_steps"),
        **_last_metrics(run_dir),
    }
    if paths.config.is_file():
        from smose.training.finetune import FINETUNE_KEY, read_record, selection_pending, source_dir

        record = read_record(run_dir)
        if record is not None:  # with where the source run is from here, and whether its end is still to complete
            info[FINETUNE_KEY] = {**record, "source_dir": str(source_dir(run_dir, record)),
                                  "selection_pending": selection_pending(run_dir, record)}
    if paths.eval.is_file():
        from smose.serialization import read_eval

        evaluation = read_eval(paths.eval)
        keys = ("mean", "std", "success_rate", "episodes", "mode", "expert_usage")
        info["eval"] = {k: evaluation.get(k) for k in keys if k in evaluation}
    if args.json:
        print(json.dumps(info))
        return 0
    arch, counts = meta["architecture"], info["parameter_counts"]
    print(f"run        {run_dir}")
    print(f"env        {meta['env_id']}  ({arch['n_obs']} observations, {arch['n_act']} actions)")
    if info["env_kwargs"]:
        from smose.tasks.envs import format_env_kwargs

        print(f"env kwargs {' '.join(format_env_kwargs(info['env_kwargs']))}")
    if "router" in arch:  # fine-tuned under fixed trees (smose.interpret.tree_policy)
        shape = (f"{arch['n_experts']} linear experts chosen by fixed {arch['tree_kind']} trees, gated by a linear "
                 "router")
    elif arch["algo"] == "smose":
        shape = f"{arch['n_experts']} linear experts, linear top-1 router"
    else:
        shape = f"MLP hidden {arch['hidden']}"
    print(f"algorithm  {arch['algo']}: {shape}")
    if "finetune" in info:
        record = info["finetune"]
        print(f"routing    fixed {record['tree_kind']} trees (fine-tuned under them from {record['source_dir']} at "
              f"step {record['source_step']})")
        if record["selection_pending"]:
            print(f"kept       not yet known: the comparison at the end was not completed; `smose finetune --resume "
                  f"{run_dir}` completes it")
        elif selection := record.get("selection"):
            print(f"kept       the controller {selection['kept']} ({selection['fine_tuned_return']:.6g} fine-tuned, "
                  f"{selection['as_distilled_return']:.6g} as distilled on {selection['episodes']} episodes of their "
                  "own)")
    print(f"parameters train {counts['train']:,} / deploy {counts['deploy']:,} / active {counts['active']:,}")
    print(f"trained    {info['trained_steps']} steps")
    for key in ("last_episode", "last_eval"):
        if key in info:
            print(f"{key.replace('_', ' '):<10} " + ", ".join(f"{k}={v}" for k, v in info[key].items()))
    if "eval" in info:
        print("eval       " + json.dumps(info["eval"]))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from smose.interpret.report import explain

    path = explain(args.run_dir, episodes=args.episodes, seed=args.seed, distill_missing=not args.no_distill,
                   progress=lambda message: print(f"smose: {message}", file=sys.stderr))
    print(f"report: {path} (and {path.with_name(REPORT_MARKDOWN)})")
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from smose.interpret.video import record_video

    summary = record_video(args.run_dir, args.out, router=args.router, tree_kind=args.tree_kind, seed=args.seed,
                           max_steps=args.max_steps)
    print(json.dumps(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from smose.export import export_policy

    path = export_policy(args.run_dir, args.format, args.out, router=args.router, mode=args.mode,
                         tree_kind=args.tree_kind)
    print(f"wrote {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from smose.experiments.sweep import Distillation, Grid, parse_list, parse_seeds, run_sweep
    from smose.tasks.envs import parse_env_kwargs

    if args.dagger is not None and args.distill is None:
        raise SmoseError("--dagger needs --distill DEPTH")

    settings = {name: getattr(args, name) for name in ("learning_starts", "eval_every", "eval_episodes", "batch_size")}
    grid = Grid(
        envs=parse_list(args.envs, str, "--envs"),
        algos=parse_list(args.algos, str, "--algos"),
        seeds=parse_seeds(args.seeds),
        steps=args.steps,
        experts=parse_list(args.experts, int, "--experts") if args.experts else Grid.experts,
        lb_weights=parse_list(args.lb_weight, float, "--lb-weight") if args.lb_weight else Grid.lb_weights,
        settings=tuple(sorted((k, v) for k, v in settings.items() if v is not None)),
        env_kwargs=tuple(sorted(parse_env_kwargs(args.env_kwargs or []).items())),
    )
    result = run_sweep(grid, Path(args.out), backend=args.backend, workers=args.workers, address=args.address,
                       export=Path(args.export) if args.export else None,
                       distill=Distillation(args.distill, args.dagger or 0) if args.distill else None)
    print(result.summary())
    return 1 if result.failed else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from smose.experiments.bench import main as bench_main

    bench_main(args.bench_args, prog=f"smose bench {args.benchmark}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from smose.experiments.table import write_tables

    paths = write_tables(Path(args.directory), Path(args.out) if args.out else None, args.steps)
    print(paths["markdown"].read_text(), end="")
    print(f"tables and plots in {paths['markdown'].parent}", file=sys.stderr)
    return 0


def _add_router_arguments(p: argparse.ArgumentParser, tree_kind_help: str = "which distilled trees route") -> None:
    p.add_argument("--router", choices=ROUTERS, default=None,
                   help="route with the trained router (default) or with the trees saved by `smose distill`; a run "
                        "fine-tuned under its trees routes with those only")
    p.add_argument("--tree-kind", choices=KINDS, default=None, help=f"{tree_kind_help} (default: {DEFAULT_TREE_KIND})")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="smose", description="Sparse Mixture of Shallow Experts: interpretable SAC controllers.")
    parser.add_argument("--version", action="version", version=f"smose {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a SMOSE (or dense SAC) agent into a run directory")
    add_config_arguments(p)
    p.add_argument("--force", action="store_true",
                   help="start an existing run directory afresh: delete the earlier run's files (refused for a "
                        "directory holding anything else)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue RUN_DIR from its last checkpoint with its config.json (--steps may extend it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained policy deterministically; writes eval.json")
    p.add_argument("run_dir", nargs="+", help="one or more run directories")
    p.add_argument("--episodes", type=EPISODES, default=None, help="number of episodes (default: 10)")
    p.add_argument("--mode", choices=ACTION_MODES, default=None,
                   help="gated (default; tanh of the gated mean, writes eval.json) or linear (the chosen expert's raw "
                        "output clipped to the action bounds, writes eval-linear.json)")
    p.add_argument("--protocol", choices=("smose", "authors", "both"), default=None,
                   help="smose: gated, 10 episodes (the default); authors: linear, 100 episodes (the authors' "
                        "evaluation scripts); both: one after the other")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--env", default=None,
                   help="evaluate on another version of the training task, e.g. Hopper-v4 (default: the training env)")
    _add_router_arguments(p, "which distilled trees route with --router tree (writes trees/eval-<kind>.json)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("distill", help="distil the router into decision trees; report fidelity and tree-routed return")
    p.add_argument("run_dir")
    p.add_argument("--depth", type=Count(1, MAX_TREE_DEPTH), default=3, help="maximum tree depth")
    p.add_argument("--episodes", type=EPISODES, default=20,
                   help="deterministic episodes to fit on (and as many held-out episodes to score on)")
    p.add_argument("--kind", choices=(*KINDS, *KIND_GROUPS), default="both",
                   help="per-expert or multiclass CART trees, the oblique CMA-ES tree (depth <= 3), both CART kinds "
                        "(default) or all three")
    p.add_argument("--seed", type=SEED, default=0, help="reset seed of the first fitting episode")
    p.add_argument("--eval-episodes", type=EPISODES, default=10,
                   help="episodes for the neural vs tree-routed return comparison")
    p.add_argument("--mode", choices=ACTION_MODES, default="gated")
    p.add_argument("--cma-iterations", type=Count(1, MAX_CMA_ITERATIONS), default=CMA_DEFAULT_ITERATIONS, metavar="N",
                   help=f"CMA-ES generations of each oblique fit (population {CMA_POPULATION}; default "
                        f"{CMA_DEFAULT_ITERATIONS})")
    p.add_argument("--cma-start", choices=CMA_STARTS, default=CMA_DEFAULT_START,
                   help="where each oblique fit's CMA-ES starts: router, the best tree of the router's own boundaries "
                        "between two experts (default); groups, the better of that and the best tree whose nodes "
                        "separate groups of experts (slower, often closer to the router); zeros, all weights zero as "
                        "in the authors' code")
    p.add_argument("--dagger", type=Count(0, MAX_DAGGER_ROUNDS), default=0, metavar="ROUNDS",
                   help="DAgger rounds: roll out the trees for --episodes episodes, label the states they reach with "
                        "the router's choice, refit on everything so far (default 0: the neural policy's states only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the oblique fits show one on a terminal)")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("finetune", help="continue SAC with the router's choice replaced by the run's distilled "
                                        "trees: trains the tree-routed controller that is deployed, into a new run")
    p.add_argument("run_dir", nargs="?", help="a SMOSE run with a checkpoint and distilled trees")
    p.add_argument("--steps", type=Count(1, MAX_STEPS), default=None,
                   help="fine-tuning steps (with --resume: in all, counted from the source run's checkpoint)")
    p.add_argument("--tree-kind", choices=KINDS, default=None,
                   help=f"which of the run's distilled trees choose the expert (default: {DEFAULT_TREE_KIND})")
    p.add_argument("--out", default=None, help="the new run directory (default: RUN_DIR-finetune-<kind> beside it)")
    p.add_argument("--force", action="store_true",
                   help="start an existing --out afresh (refused for a directory that is not a run directory)")
    p.add_argument("--checkpoint-every", type=Count(0, MAX_STEPS), default=None, metavar="N",
                   help="write a resumable checkpoint every N steps (default: the source run's setting)")
    p.add_argument("--update", choices=UPDATES, default=None,
                   help="the SAC update's implementation, as for train (default: the source run's, fused unless it "
                        "was trained with --update autograd)")
    p.add_argument("--select-episodes", type=Count(0, MAX_EPISODES), default=None, metavar="N",
                   help="at the end, keep the controller as distilled instead when it does better on N episodes of "
                        f"their own (default {DEFAULT_SELECT_EPISODES}; 0: keep the fine-tuned one)")
    p.add_argument("--resume", metavar="FINETUNE_DIR", default=None,
                   help="continue a fine-tuning run from its last checkpoint (--steps may extend it; compared again "
                        "at the end as it was first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("info", help="architecture, parameter counts and last metrics of a run")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("explain", help="write the run's visual report: RUN_DIR/report/index.html and report.md")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=EPISODES, default=5,
                   help="deterministic episodes behind the usage, timeline and per-expert statistics")
    p.add_argument("--seed", type=SEED, default=0, help="evaluation seed of those episodes (as in `smose eval`)")
    p.add_argument("--no-distill", action="store_true",
                   help="do not run `smose distill` when the run has no trees (the report then says how to get them)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("video", help="render one deterministic episode headless with the active expert on each frame")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="output file, .mp4 or .gif")
    _add_router_arguments(p)
    p.add_argument("--seed", type=SEED, default=0, help="evaluation seed: the first episode of `smose eval --seed`")
    p.add_argument("--max-steps", type=Count(1, MAX_STEPS), default=None, help="stop after this many steps")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("export", help=f"write the deterministic policy as a standalone {format_titles()} file")
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, help=format_help())
    _add_router_arguments(p)
    p.add_argument("--mode", choices=ACTION_MODES, default="gated",
                   help="gated: tanh of the gated mean (as trained); linear: the chosen expert's output, clipped")
    p.add_argument("--out", required=True, help="output file (or an existing directory for the default file name)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="train a grid of envs x algos x seeds (x M x lambda), locally or on Ray; "
                                     "re-running skips finished runs")
    p.add_argument("--envs", required=True, help="comma-separated env ids, e.g. Hopper-v5,Walker2d-v5")
    p.add_argument("--algos", default="smose", help="comma-separated: smose,sac-l,sac-m,sac-s (default: smose)")
    p.add_argument("--seeds", default="0", help="e.g. 0-4 or 0,1,2 (default: 0)")
    p.add_argument("--steps", type=Count(1, MAX_STEPS), required=True, help="environment steps per run")
    p.add_argument("--experts", default=None, help="comma-separated numbers of experts M (default: 8)")
    p.add_argument("--lb-weight", default=None, help="comma-separated load-balancing weights (default: 0.1)")
    p.add_argument("--learning-starts", type=Count(0, MAX_STEPS), default=None, help="as in `smose train`")
    p.add_argument("--eval-every", type=Count(0, MAX_STEPS), default=None, help="as in `smose train`")
    p.add_argument("--eval-episodes", type=EPISODES, default=None, help="as in `smose train`")
    p.add_argument("--batch-size", type=Count(1, MAX_BATCH_SIZE), default=None, help="as in `smose train`")
    p.add_argument("--env-kwargs", nargs="+", action="extend", default=None, metavar="KEY=VALUE",
                   help="arguments of every env's constructor, as in `smose train`")
    p.add_argument("--out", required=True, help="sweep directory, e.g. sweeps/NAME")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: training processes on this machine; ray: Ray tasks (pip install 'smose[ray]')")
    p.add_argument("--workers", type=Count(1, MAX_WORKERS), default=None,
                   help="runs at a time (local default: one per core; ray default: as many as the cluster takes)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local instance)")
    p.add_argument("--export", default=None, metavar="DIR",
                   help="copy each finished run's small files to DIR/<run name>/ and take runs already in DIR from "
                        "there; runs that stop short leave config and metrics in DIR/partial/ (DIR is meant to be "
                        "committed, e.g. benchmarks/results/runs)")
    p.add_argument("--distill", type=Count(1, MAX_TREE_DEPTH), default=None, metavar="DEPTH",
                   help="also distil every SMOSE run into trees of this depth (`smose distill`, both kinds); "
                        "finished runs without them are distilled first; `smose table` then reports their fidelity")
    p.add_argument("--dagger", type=Count(0, MAX_DAGGER_ROUNDS), default=None, metavar="ROUNDS",
                   help="with --distill: DAgger rounds of `smose distill` (default 0)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("bench", help="benchmarks: `smose bench throughput --help` (needs pip install 'smose[bench]')")
    p.add_argument("benchmark", choices=("throughput",))
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of the benchmark")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("table", help="aggregate a sweep (or any directory of runs) into Markdown/CSV tables and "
                                     "learning-curve plots")
    p.add_argument("directory", help="a sweep directory or a directory of run directories")
    p.add_argument("--out", default=None, help="output directory (default: DIRECTORY/table)")
    p.add_argument("--steps", type=Count(1, MAX_STEPS), default=None,
                   help="only the runs with this budget, e.g. 1000000 for the paper's")
    p.set_defaults(func=cmd_table)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SmoseError as exc:
        print(f"smose: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("smose: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`smose info RUN | head`): nothing left to say to it
        # Python flushes stdout once more at exit; pointing it at /dev/null keeps that from failing again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program stopped by the closed pipe


if __name__ == "__main__":
    sys.exit(main())
