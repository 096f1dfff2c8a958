"""The ``smose`` command line: train, eval, info."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from smose import __version__
from smose.config import add_config_arguments, config_from_args
from smose.errors import SmoseError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from smose.train import train

    config = config_from_args(args)
    run_dir = train(config, Path(config.out) if config.out else None, force=args.force, progress=not args.quiet)
    result = json.loads((run_dir / "eval.json").read_text())
    print(json.dumps({"run_dir": str(run_dir), "final_eval_mean": result["mean"], "final_eval_std": result["std"]}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from smose.envs import make_env
    from smose.evaluate import evaluate
    from smose.serialization import check_env_compatible, load_model, write_json

    run_dir = Path(args.run_dir)
    actor, meta = load_model(run_dir)
    if args.mode == "linear" and meta["architecture"]["algo"] != "smose":
        raise SmoseError(f"--mode linear exists only for SMOSE models; {run_dir} holds {meta['architecture']['algo']}")
    env = make_env(args.env or meta["env_id"])
    check_env_compatible(meta, env, run_dir / "model.json")
    result = evaluate(actor, env, args.episodes, args.seed, args.mode)
    env.close()
    result |= {"env_id": env.spec.id, "algo": meta["architecture"]["algo"], "router": "neural"}
    write_json(run_dir / "eval.json", result | {"source": "eval"})
    print(json.dumps(result))
    return 0


def _last_metrics(path: Path) -> dict[str, str]:
    """The last episode row and the last evaluation row of metrics.csv."""
    last: dict[str, str] = {}
    if not path.is_file():
        return last
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            prefix = "last_eval" if row.get("event") == "eval" else "last_episode"
            last[prefix] = {k: v for k, v in row.items() if v not in ("", None)}  # type: ignore[assignment]
    return last


def cmd_info(args: argparse.Namespace) -> int:
    from smose.serialization import load_model

    run_dir = Path(args.run_dir)
    actor, meta = load_model(run_dir)
    info = {
        "run_dir": str(run_dir),
        "env_id": meta["env_id"],
        "architecture": meta["architecture"],
        "parameter_counts": actor.parameter_counts(),
        "trained_steps": meta.get("trained_steps"),
        **_last_metrics(run_dir / "metrics.csv"),
    }
    eval_path = run_dir / "eval.json"
    if eval_path.is_file():
        from smose.serialization import read_json

        evaluation = read_json(eval_path, "evaluation")
        info["eval"] = {k: evaluation.get(k) for k in ("mean", "std", "episodes", "mode", "expert_usage") if k in evaluation}
    if args.json:
        print(json.dumps(info))
        return 0
    arch, counts = meta["architecture"], info["parameter_counts"]
    print(f"run        {run_dir}")
    print(f"env        {meta['env_id']}  ({arch['n_obs']} observations, {arch['n_act']} actions)")
    shape = f"{arch['n_experts']} linear experts, linear top-1 router" if arch["algo"] == "smose" else f"MLP hidden {arch['hidden']}"
    print(f"algorithm  {arch['algo']}: {shape}")
    print(f"parameters train {counts['train']:,} / deploy {counts['deploy']:,} / active {counts['active']:,}")
    print(f"trained    {info['trained_steps']} steps")
    for key in ("last_episode", "last_eval"):
        if key in info:
            print(f"{key.replace('_', ' '):<10} " + ", ".join(f"{k}={v}" for k, v in info[key].items()))
    if "eval" in info:
        print("eval       " + json.dumps(info["eval"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smose", description="Sparse Mixture of Shallow Experts: interpretable SAC controllers.")
    parser.add_argument("--version", action="version", version=f"smose {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a SMOSE (or dense SAC) agent into a run directory")
    add_config_arguments(p)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained policy deterministically; writes eval.json")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=_positive_int, default=10)
    p.add_argument("--mode", choices=("gated", "linear"), default="gated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", default=None, help="evaluate on another env id of the same shape (default: the training env)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("info", help="architecture, parameter counts and last metrics of a run")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)
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


if __name__ == "__main__":
    sys.exit(main())
