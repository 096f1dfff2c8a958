"""``smose distill``: distil a SMOSE router into shallow decision trees and measure their fidelity (docs/method.md §5).

States come from deterministic rollouts of the trained policy and are labelled with the clean router's argmax
``k(s)``; trees of each asked kind are fitted to them (smose.interpret.fit), optionally refitted over DAgger rounds
on the states the trees themselves reach, then scored on held-out episodes and by the return of the policy they
route. The trees, their rules and fidelity.json are written to the run's ``trees/`` (smose.interpret.trees reads them
back; smose.interpret.rules writes the rules).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from smose.algo.policy import DeterministicMode, SMOSEActor
from smose.choices import KIND_GROUPS, KINDS, kinds_of
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.interpret import oblique
from smose.interpret.fit import check_cma_start, fit_multiclass, fit_oblique, fit_per_expert
from smose.interpret.rules import rules_text
from smose.interpret.tree_policy import TreeRoutedActor

# Names other modules import from here (the tree files, fitting and rules have modules of their own).
from smose.interpret.tree_router import (
    TreeRouter,
    router_features,  # noqa: F401
)
from smose.interpret.trees import (  # noqa: F401
    load_tree_router,
    load_trees,
    model_digest,
    require_smose,
    router_digest,
    rules_file,
    stale_trees,
    tree_eval_file,
    tree_file,
    validate_trees,
)
from smose.limits import MAX_CMA_ITERATIONS, MAX_DAGGER_ROUNDS, MAX_EPISODES, MAX_TREE_DEPTH
from smose.rollout import (
    DAGGER_SEED_OFFSET,  # noqa: F401
    FIT_SEED_OFFSET,
    HOLDOUT_SEED_OFFSET,
    dagger_seed_offset,
    rollout,
)
from smose.run import FIDELITY_FILE, MODEL_META, TREES_DIR
from smose.serialization import write_json
from smose.tasks.features import observation_names

FIDELITY_FORMAT = "smose-fidelity"


def distill_settings(fidelity: dict) -> dict[str, Any]:
    """The arguments of :func:`distill` that made the trees a fidelity.json describes (KeyError or TypeError when
    it lacks them): to make them again the same way."""
    kinds = tuple(k for k in KINDS if k in fidelity)
    if not kinds:
        raise KeyError("kind")
    group = [name for name, members in KIND_GROUPS.items() if members == kinds]
    settings = {"depth": fidelity["depth"], "dagger": fidelity.get("dagger_rounds", 0),
                "kind": group[0] if group else kinds[0], "episodes": fidelity["episodes"],
                "eval_episodes": fidelity["eval_episodes"], "seed": fidelity["seed"], "mode": fidelity["mode"]}
    if "oblique" in kinds:
        settings["cma_iterations"] = fidelity["cma_iterations"]
        settings["cma_start"] = fidelity.get("cma_start", "zeros")  # the only start before it was recorded
    return settings


# ----------------------------------------------------------------------------------------------------------------------
# Rollouts and DAgger


@torch.no_grad()
def collect_states(
    actor: SMOSEActor, env, episodes: int, seed: int, mode: DeterministicMode = "gated",
    router: TreeRouter | None = None, offset: int = FIT_SEED_OFFSET,
) -> tuple[np.ndarray, np.ndarray]:
    """States visited by ``episodes`` deterministic episodes (reset seeds seed+offset+i) and the router's choice in
    each.

    With ``router`` (trees) it is the trees that pick the expert driving each step, as in a DAgger round: the states
    are those the tree-routed policy reaches, still labelled with the neural router's choice.
    """
    states, labels = [], []
    for step in rollout(actor, env, episodes, seed, offset, mode, router):
        states.append(step.obs[0].numpy())
        label = step.expert if router is None else actor.choose(step.obs)  # the neural router's choice either way
        labels.append(int(label[0]))
    return np.stack(states).astype(np.float32), np.asarray(labels, dtype=np.int64)


def dagger_fits(
    actor: SMOSEActor, env, kind: str, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
    rounds: int, episodes: int, seed: int, mode: DeterministicMode = "gated",
    cma_iterations: int = oblique.DEFAULT_ITERATIONS, cma_start: str = oblique.CMA_DEFAULT_START,
    progress: bool = True,
) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """Trees of ``kind`` fitted on the neural policy's states (round 0), then after each of ``rounds`` DAgger rounds:
    roll out the current trees for ``episodes`` episodes, label the states they reach with the router's choice, add
    them, refit. Yields each round's trees with the data they were fitted on.

    Trees fitted on the neural policy's states alone are right where that policy goes; one mistake that takes the
    system where it never goes can leave them wrong from then on (a high held-out agreement with a poor tree-routed
    return). The rounds teach them the states their own mistakes lead to.
    """
    names = observation_names(env_id, actor.n_obs, env)

    def fit(actor, states, labels, depth, env_id, names):
        if kind == "oblique":
            return fit_oblique(actor, states, labels, depth, env_id, cma_iterations, seed, names, cma_start, progress)
        return (fit_per_expert if kind == "per-expert" else fit_multiclass)(actor, states, labels, depth, env_id,
                                                                               names)

    trees = fit(actor, states, labels, depth, env_id, names)
    yield trees, states, labels
    for r in range(rounds):
        new_states, new_labels = collect_states(actor, env, episodes, seed, mode, router=TreeRouter(trees),
                                                offset=dagger_seed_offset(r, episodes))
        states, labels = np.concatenate([states, new_states]), np.concatenate([labels, new_labels])
        trees = fit(actor, states, labels, depth, env_id, names)
        yield trees, states, labels


def fit_with_dagger(
    actor: SMOSEActor, env, kind: str, states: np.ndarray, labels: np.ndarray, depth: int, env_id: str,
    rounds: int, episodes: int, seed: int, mode: DeterministicMode = "gated",
    cma_iterations: int = oblique.DEFAULT_ITERATIONS, cma_start: str = oblique.CMA_DEFAULT_START,
    progress: bool = True,
) -> tuple[dict, np.ndarray, np.ndarray, list[int]]:
    """The trees after the last of ``rounds`` DAgger rounds (see dagger_fits), the data they were fitted on and the
    number of states each round added."""
    sizes = []
    for trees, states, labels in dagger_fits(actor, env, kind, states, labels, depth, env_id, rounds, episodes, seed,
                                             mode, cma_iterations, cma_start, progress):
        sizes.append(len(labels))
    return trees, states, labels, [int(b - a) for a, b in zip(sizes, sizes[1:])]


# ----------------------------------------------------------------------------------------------------------------------
# Fidelity and the whole pipeline


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return ratio; only meaningful when the neural return is positive (negative-reward tasks compare means)."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def binary_scores(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """Accuracy, precision and recall of boolean predictions; precision/recall are None when undefined."""
    tp = int(np.sum(predicted & actual))
    predicted_yes, positives = int(predicted.sum()), int(actual.sum())
    return {
        "accuracy": float(np.mean(predicted == actual)),
        "precision": tp / predicted_yes if predicted_yes else None,
        "recall": tp / positives if positives else None,
        "positives": positives,
    }


def fidelity_per_expert(router: TreeRouter, trees: dict, states: np.ndarray, labels: np.ndarray) -> dict:
    yes = router.yes_probability(states)
    per_tree = []
    for m, tree in enumerate(trees["trees"]):
        # A single binary tree says YES when its YES probability exceeds 0.5 (sklearn's predict; ties are NO).
        scores = binary_scores(yes[:, m] > 0.5, labels == m)
        per_tree.append({"expert": m, **scores, "depth": tree["depth"], "n_leaves": tree["n_leaves"]})
    return {"agreement": float(np.mean(yes.argmax(axis=1) == labels)), "trees": per_tree}


def fidelity_multiclass(router: TreeRouter, trees: dict, states: np.ndarray, labels: np.ndarray) -> dict:
    predicted = router.predict(states)
    per_class = [{"expert": m, **{k: v for k, v in binary_scores(predicted == m, labels == m).items()
                                  if k != "accuracy"}} for m in range(router.n_experts)]
    tree = trees["trees"][0]
    return {"agreement": float(np.mean(predicted == labels)), "depth": tree["depth"], "n_leaves": tree["n_leaves"],
            "per_class": per_class}


def distill(
    run_dir: Path | str,
    depth: int = 3,
    episodes: int = 20,
    kind: str = "both",
    seed: int = 0,
    eval_episodes: int = 10,
    mode: DeterministicMode = "gated",
    dagger: int = 0,
    cma_iterations: int = oblique.DEFAULT_ITERATIONS,
    cma_start: str = oblique.CMA_DEFAULT_START,
    progress: bool = True,
) -> dict:
    """Fit, save and score trees for the SMOSE run in ``run_dir``; returns (and writes) the fidelity summary.

    ``kind``: one of KINDS, or "both" (the CART kinds) or "all" (see KIND_GROUPS). ``dagger``: rounds of DAgger after
    the first fit (see fit_with_dagger), each rolling out ``episodes`` episodes. ``cma_iterations``: CMA-ES
    generations of each oblique fit; ``cma_start``: where they start ("router", "groups" or "zeros",
    smose.interpret.oblique).
    """
    from smose.serialization import check_env_compatible, load_model
    from smose.tasks.envs import make_run_env

    for name, value in (("depth", depth), ("episodes", episodes), ("eval_episodes", eval_episodes),
                        ("cma_iterations", cma_iterations)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SmoseError(f"{name} must be an integer >= 1, got {value!r}")
    if not isinstance(dagger, int) or isinstance(dagger, bool) or dagger < 0:
        raise SmoseError(f"dagger must be an integer >= 0, got {dagger!r}")
    for name, value, limit in (("depth", depth, MAX_TREE_DEPTH), ("episodes", episodes, MAX_EPISODES),
                               ("eval_episodes", eval_episodes, MAX_EPISODES), ("dagger", dagger, MAX_DAGGER_ROUNDS),
                               ("cma_iterations", cma_iterations, MAX_CMA_ITERATIONS)):
        if value > limit:
            raise SmoseError(f"{name} must be at most {limit:,}, got {value}")
    if kind not in (*KINDS, *KIND_GROUPS):
        raise SmoseError(f"unknown tree kind {kind!r}; expected one of {', '.join((*KINDS, *KIND_GROUPS))}")
    check_cma_start(cma_start)  # before any rollout
    kinds = kinds_of(kind)
    if "oblique" in kinds and depth > oblique.MAX_DEPTH:
        raise SmoseError(f"oblique trees have depth <= {oblique.MAX_DEPTH} (a complete tree of depth {depth} has "
                         f"{2 ** depth - 1} hyperplanes to search and read); got --depth {depth}")
    run_dir = Path(run_dir)
    actor, meta = load_model(run_dir)
    actor = require_smose(actor, meta, run_dir)
    if isinstance(actor, TreeRoutedActor):
        from smose.training.finetune import read_record, source_dir  # it imports this module

        record = read_record(run_dir)
        source = source_dir(run_dir, record) if record is not None else "the run it was fine-tuned from"
        raise SmoseError(f"{run_dir} was fine-tuned under its fixed {actor.tree_kind} trees: they choose its expert "
                         "and its router only gates the action, so there is no routing left to distil; distil the "
                         f"source run instead ({source})")
    env_id = meta["env_id"]
    env = make_run_env(meta)
    check_env_compatible(meta, env, run_dir / MODEL_META)
    try:
        train_states, train_labels = collect_states(actor, env, episodes, seed, mode)
        test_states, test_labels = collect_states(actor, env, episodes, seed, mode, offset=HOLDOUT_SEED_OFFSET)
        fitted, fit_data, added, seconds = {}, {}, {}, {}
        for k in kinds:
            started = time.perf_counter()
            trees, states, labels, added[k] = fit_with_dagger(actor, env, k, train_states, train_labels, depth, env_id,
                                                              dagger, episodes, seed, mode, cma_iterations,
                                                              cma_start, progress)
            fitted[k], fit_data[k], seconds[k] = trees, (states, labels), time.perf_counter() - started
        summary: dict[str, Any] = {
            "format": FIDELITY_FORMAT,
            "format_version": 1,
            "env_id": env_id,
            "router_sha256": router_digest(actor),  # the model these results are about (see stale_trees)
            "depth": depth,
            "episodes": episodes,
            "seed": seed,
            "holdout_seed": seed + HOLDOUT_SEED_OFFSET,
            "eval_episodes": eval_episodes,
            "mode": mode,
            "dagger_rounds": dagger,
            "train_states": int(len(train_labels)),
            "heldout_states": int(len(test_labels)),
            "router_usage_heldout": (np.bincount(test_labels, minlength=actor.n_experts) / len(test_labels)).tolist(),
        }
        if "oblique" in kinds:
            summary["cma_iterations"] = cma_iterations
            summary["cma_start"] = cma_start
        neural = evaluate(actor, env, eval_episodes, seed, mode)
        returns: dict[str, Any] = {"neural": neural, "ratio": {}}
        for k, trees in fitted.items():
            router = TreeRouter(trees)
            score = fidelity_per_expert if k == "per-expert" else fidelity_multiclass
            summary[k] = score(router, trees, test_states, test_labels)
            states, labels = fit_data[k]
            summary[k]["train_agreement"] = float(np.mean(router.predict(states) == labels))
            if dagger:
                summary[k]["dagger_states"] = added[k]
            summary[k]["fit_seconds"] = round(seconds[k], 2)  # fitting with its DAgger rollouts, wall clock
            returns[k] = evaluate(actor, env, eval_episodes, seed, mode, router=router)
            summary[k]["closed_loop_agreement"] = returns[k]["router_agreement"]
            returns["ratio"][k] = _ratio(returns[k]["mean"], neural["mean"])
        summary["returns"] = returns
    finally:
        env.close()
    save_distillation(run_dir, fitted, summary)
    return summary


def save_distillation(run_dir: Path, fitted: dict[str, dict], summary: dict) -> None:
    """Write the tree files, their rules and fidelity.json; drop files of kinds not distilled this time."""
    out = Path(run_dir) / TREES_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmoseError(f"{out}: cannot create the trees directory ({exc.strerror})") from None
    for k in KINDS:
        if k in fitted:
            write_json(tree_file(run_dir, k), fitted[k])
            rules_file(run_dir, k).write_text(rules_text(fitted[k], summary.get(k)))
        else:  # stale trees from an earlier distillation would no longer match fidelity.json
            for stale in (tree_file(run_dir, k), rules_file(run_dir, k), tree_eval_file(run_dir, k)):
                stale.unlink(missing_ok=True)
    for k in fitted:
        tree_eval_file(run_dir, k).unlink(missing_ok=True)
    write_json(out / FIDELITY_FILE, summary)


def print_summary(summary: dict, run_dir: Path) -> None:
    """The human-readable report of ``smose distill``."""

    def pct(value: float | None) -> str:
        return "   n/a" if value is None else f"{100 * value:5.1f}%"

    rounds = summary.get("dagger_rounds", 0)
    dagger = f" and {rounds} DAgger round{'s' if rounds != 1 else ''} of as many" if rounds else ""
    print(f"distilled depth-{summary['depth']} trees for {summary['env_id']} from {summary['episodes']} episodes "
          f"({summary['train_states']} states){dagger}; scored on {summary['episodes']} held-out episodes "
          f"({summary['heldout_states']} states)")
    usage = summary["router_usage_heldout"]
    if "per-expert" in summary:
        fid = summary["per-expert"]
        print(f"per-expert trees: routing agreement {pct(fid['agreement'])} (train {pct(fid['train_agreement'])}, "
              f"closed loop {pct(fid.get('closed_loop_agreement'))})")
        print("  expert  share  accuracy  precision  recall  leaves")
        for t in fid["trees"]:
            print(f"  {t['expert']:>6}  {pct(usage[t['expert']])}  {pct(t['accuracy'])}    {pct(t['precision'])}     "
                  f"{pct(t['recall'])}  {t['n_leaves']:>6}")
    for k in ("multiclass", "oblique"):
        if k in summary:
            fid = summary[k]
            print(f"{k + ' tree:':<17} routing agreement {pct(fid['agreement'])} (train {pct(fid['train_agreement'])}"
                  f", closed loop {pct(fid.get('closed_loop_agreement'))}), {fid['n_leaves']} leaves")
    returns = summary["returns"]
    print(f"return over {summary['eval_episodes']} episodes (mode {summary['mode']}, seed {summary['seed']}):")
    neural = returns["neural"]

    def success(result: dict) -> str:
        return f"   success {pct(result['success_rate'])}" if "success_rate" in result else ""

    print(f"  neural router     {neural['mean']:10.2f} ± {neural['std']:.2f}{success(neural)}")
    for k in KINDS:
        if k in returns:
            ratio = returns["ratio"][k]
            ratio_text = "n/a (neural return <= 0)" if ratio is None else f"{ratio:.3f}"
            label = "per-expert trees" if k == "per-expert" else f"{k} tree"
            print(f"  {label:<17} {returns[k]['mean']:10.2f} ± {returns[k]['std']:.2f}   ratio {ratio_text}"
                  f"{success(returns[k])}")
    written = [f"{k}.json, {k}.txt" for k in KINDS if k in summary] + [FIDELITY_FILE]
    print(f"wrote {Path(run_dir) / TREES_DIR}/ ({', '.join(written)})")
