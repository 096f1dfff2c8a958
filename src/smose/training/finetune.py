"""``smose finetune``: train the deployable controller itself, the experts routed by fixed distilled trees.

A run's distilled trees stand in for its router's argmax; the experts were trained under the router, so the
tree-routed controller loses some return. Fine-tuning continues SAC from the run's last checkpoint (networks,
optimisers, temperature, replay buffer, random streams and env state) with the choice of expert taken from the trees
(:class:`smose.interpret.tree_policy.TreeRoutedActor`), into a new run directory. What it trains is what
``smose eval --router tree`` evaluates and ``smose export`` writes; the trees never change. At the end it keeps the
better of the controller as fine-tuned and as distilled, compared on episodes of their own (:func:`choose`): SAC under
fixed trees can lose return, and a user deploys the run's model. Why each setting is what it is: docs/finetune.md.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from smose import runlock
from smose.algo.policy import Actor, SMOSEActor
from smose.choices import DEFAULT_SELECT_EPISODES, DEFAULT_TREE_KIND, KINDS
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.interpret.distill import load_trees, router_digest, stale_trees, tree_file, validate_trees
from smose.interpret.tree_policy import TreeRoutedActor, trees_digest
from smose.limits import MAX_EPISODES, MAX_STEPS
from smose.rollout import SELECTION_SEED_OFFSET
from smose.run import CHECKPOINT_DIR, CHECKPOINT_JSON, CONFIG_FILE, RunDir
from smose.serialization import load_model, read_json, save_model, write_eval, write_json
from smose.tasks.envs import env_record, make_env
from smose.training.checkpoint import checkpoint_path, load_checkpoint, read_checkpoint_json
from smose.training.config import TrainConfig, read_run_config
from smose.training.logger import RunLogger
from smose.training.run_dir import check_run_dir, clear_run_dir, create_run_dir
from smose.training.trainer import Trainer, resume, run_locked

# config.json's record of a fine-tuning run: source run and step, tree kind, the trees' SHA-256, returns before.
FINETUNE_KEY = "finetune"
# The record's path of the source run relative to the fine-tuning run's own directory (``source_run`` is the path as
# given, relative to wherever the command ran): it finds the source from any working directory, and after the two
# directories are moved together.
SOURCE_RELATIVE_KEY = "source_run_relative"
# What a fine-tuning run sets differently from its source run, besides steps and out. The load-balancing loss and the
# router noise act on which expert the router's argmax picks, which no longer acts (lb_loss "none" turns both off).
FINETUNE_SETTINGS: dict[str, Any] = {"lb_loss": "none", "lb_weight": None}
# Settings a fine-tuning run may take other than its source's checkpoint: the SAC update's implementation (either
# continues the other's state, smose.algo.learner).
MAY_DIFFER = (*FINETUNE_SETTINGS, "update")
# The record's number of episodes on which the controller as fine-tuned and as distilled are compared at the end
# (0: keep the fine-tuned one whatever), and the outcome of that comparison.
SELECT_EPISODES_KEY = "select_episodes"
SELECTION_KEY = "selection"
FINE_TUNED, AS_DISTILLED = "fine-tuned", "as distilled"


def default_out(run_dir: Path, tree_kind: str) -> Path:
    """RUN-finetune-<kind>, beside RUN."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name}-finetune-{tree_kind}"


def read_record(run_dir: Path) -> dict | None:
    """The ``finetune`` record of a run's config.json, checked; None for a run that is not a fine-tuning run."""
    path = RunDir(run_dir).config
    data = read_json(path, "run configuration")
    record = data.get(FINETUNE_KEY) if isinstance(data, dict) else None
    if record is None:
        return None
    if not (isinstance(record, dict) and record.get("tree_kind") in KINDS
            and isinstance(record.get("trees_sha256"), str) and isinstance(record.get("source_step"), int)
            and isinstance(record.get("source_run"), str)
            and isinstance(record.get(SOURCE_RELATIVE_KEY, ""), str)
            and _is_count(record.get(SELECT_EPISODES_KEY, 0), 0, MAX_EPISODES)
            and _valid_selection(record.get(SELECTION_KEY))):
        raise SmoseError(f"{path}: invalid {FINETUNE_KEY} record (needs source_run, source_step, tree_kind and "
                         f"trees_sha256; {SELECT_EPISODES_KEY} and {SELECTION_KEY}, where present, as smose finetune "
                         "writes them)")
    return record


def _is_count(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _valid_selection(selection: object) -> bool:
    """The ``selection`` of a record as :func:`choose` writes it (or none)."""
    return selection is None or (
        isinstance(selection, dict) and selection.get("kept") in (FINE_TUNED, AS_DISTILLED)
        and _is_count(selection.get("episodes"), 1, MAX_EPISODES) and isinstance(selection.get("seed"), int)
        and all(isinstance(selection.get(key), (int, float)) and not isinstance(selection.get(key), bool)
                for key in ("fine_tuned_return", "as_distilled_return")))


def source_dir(run_dir: Path, record: dict) -> Path:
    """The source run's directory of the fine-tuning run ``run_dir`` (its record: :func:`read_record`), as a path from
    the current directory. Of the path from ``run_dir`` (``source_run_relative``: from any working directory, and
    after the two were moved together) and the path as it was given to ``smose finetune`` (``source_run``), the first
    that holds the trees it was fine-tuned under (a copy of ``run_dir`` alone may sit beside another run of the
    source's name); else the first that is a directory; else ``source_run`` (all that records written before
    ``source_run_relative`` hold)."""
    candidates = [Path(record["source_run"])]
    if SOURCE_RELATIVE_KEY in record:
        relative = Path(run_dir) / record[SOURCE_RELATIVE_KEY]  # ".." resolved by the file system (symbolic links)
        tidy = Path(os.path.normpath(relative))
        candidates.insert(0, tidy if tidy.resolve() == relative.resolve() else relative.resolve())

    return next((c for c in candidates if holds_trees(c, record["tree_kind"], record["trees_sha256"])), None) or \
        next((c for c in candidates if c.is_dir()), candidates[-1])


def holds_trees(run_dir: Path, kind: str, sha256: str) -> bool:
    """Whether ``run_dir``'s ``kind`` tree file holds the trees of SHA-256 ``sha256`` (as recorded by a fine-tuning
    run); False when there is no tree file there, or no JSON (read_json's SmoseError)."""
    try:
        return trees_digest(read_json(tree_file(run_dir, kind), "tree file")) == sha256
    except SmoseError:
        return False


def fixed_trees(run_dir: Path) -> tuple[dict, dict | None]:
    """(config.json keys to keep, the fixed trees) of a fine-tuning run; ({}, None) for any other run."""
    record = read_record(run_dir)
    if record is None:
        return {}, None
    path = tree_file(run_dir, record["tree_kind"])
    trees = validate_trees(read_json(path, "tree file"), path)
    if trees_digest(trees) != record["trees_sha256"]:
        raise SmoseError(f"{path}: not the trees {run_dir} was fine-tuned under (their SHA-256 differs from the one in "
                         f"{CONFIG_FILE}): the file was changed or replaced")
    # a run that trains on holds the fine-tuned model until it is compared again at its end
    return {FINETUNE_KEY: {k: v for k, v in record.items() if k != SELECTION_KEY}}, trees


@dataclasses.dataclass
class Source:
    """A run checked for fine-tuning: its model, configuration, checkpoint and the trees to route with."""

    run_dir: Path
    actor: SMOSEActor
    config: TrainConfig
    checkpoint: dict
    trees: dict


def check_source(run_dir: Path | str, tree_kind: str) -> Source:
    """Everything that could refuse fine-tuning ``run_dir`` under its ``tree_kind`` trees, checked without writing."""
    run_dir = Path(run_dir)
    if tree_kind not in KINDS:
        raise SmoseError(f"unknown tree kind {tree_kind!r}; expected one of {', '.join(KINDS)}")
    actor, meta = load_model(run_dir)
    if not isinstance(actor, SMOSEActor):
        raise SmoseError(f"{run_dir} holds a dense {meta['architecture']['algo']} baseline: fine-tuning replaces a "
                         "SMOSE router's choice of expert with distilled trees, and a dense actor has neither")
    if isinstance(actor, TreeRoutedActor):
        raise SmoseError(f"{run_dir} is already fine-tuned under its {actor.tree_kind} trees; continue it with "
                         f"`smose finetune --resume {run_dir} --steps N`")
    path = tree_file(run_dir, tree_kind)
    if not path.is_file():
        present = [k for k in KINDS if tree_file(run_dir, k).is_file()]
        has = f" (it has {', '.join(present)} trees)" if present else " (it has no distilled trees)"
        raise SmoseError(f"{run_dir}: no {tree_kind} trees to fine-tune under{has}; distil them first: "
                         f"`smose distill {run_dir} --kind {tree_kind}` (with --dagger 4, say)")
    stale = stale_trees(run_dir, router_digest(actor))
    if stale is not None:
        raise SmoseError(stale)
    trees = load_trees(path, actor, meta["env_id"])
    if not checkpoint_path(run_dir).is_file():
        raise SmoseError(f"{run_dir}: no checkpoint ({CHECKPOINT_DIR}/{CHECKPOINT_JSON}): fine-tuning continues "
                         "SAC from the run's last checkpoint (networks, optimisers, replay buffer); a copy of a run's "
                         "small files has none, so fine-tune the run directory that trained it")
    checkpoint = read_checkpoint_json(run_dir)
    config = read_run_config(RunDir(run_dir).config)
    if checkpoint["step"] < config.learning_starts:
        raise SmoseError(f"{run_dir}: its checkpoint is at step {checkpoint['step']}, before learning starts "
                         f"({config.learning_starts}): there is no trained controller to fine-tune")
    if runlock.is_held(run_dir):
        raise SmoseError(f"{run_dir}: a trainer is working there ({runlock.holder(run_dir)}); fine-tune it once it "
                         "has stopped")
    return Source(run_dir, actor, config, checkpoint, trees)


def _check_out(source: Source, out: Path, force: bool) -> Path:
    inside = out.resolve()
    if inside == source.run_dir.resolve() or source.run_dir.resolve() in inside.parents:
        raise SmoseError(f"--out {out} would write into {source.run_dir}, the run being fine-tuned; choose another "
                         "directory")
    return check_run_dir(out, force)


def prepare(source: Source, steps: int, out: Path, checkpoint_every: int | None = None,
            update: str | None = None, select_episodes: int = DEFAULT_SELECT_EPISODES) -> Trainer:
    """A trainer for ``out`` holding ``source``'s checkpoint, its expert chosen by the source's trees; writes nothing.
    ``update``: the SAC update's implementation (``smose train --update``; default: the source run's);
    ``select_episodes``: as :func:`finetune`'s."""
    start = source.checkpoint["step"]
    if start + steps > MAX_STEPS:
        raise SmoseError(f"{source.run_dir} is at step {start:,}: {steps:,} more steps would pass the limit of "
                         f"{MAX_STEPS:,}")
    changes = {"steps": start + steps, "out": str(out), **FINETUNE_SETTINGS}
    if checkpoint_every is not None:
        changes["checkpoint_every"] = checkpoint_every
    if update is not None:
        changes["update"] = update
    config = dataclasses.replace(source.config, **changes)  # validated by __post_init__
    record = {"source_run": str(source.run_dir),
              SOURCE_RELATIVE_KEY: os.path.relpath(source.run_dir.resolve(), Path(out).resolve()),
              "source_step": start, "tree_kind": source.trees["kind"],
              "trees_sha256": trees_digest(source.trees), "router_sha256": source.trees["router_sha256"],
              SELECT_EPISODES_KEY: select_episodes}
    trainer = Trainer(config, out, routing_trees=source.trees, record={FINETUNE_KEY: record})
    try:
        with load_checkpoint(source.run_dir, source.checkpoint, trainer.state_dict(),
                             may_differ=MAY_DIFFER) as state:
            trainer.load_state_dict(state)
        if router_digest(trainer.actor) != source.trees["router_sha256"]:
            raise SmoseError(f"{RunDir(source.run_dir).checkpoint}: the checkpoint (step {start:,}) holds another "
                             "model than the one its trees were distilled from (model.safetensors); distil the model "
                             "of the checkpoint first")
    except BaseException:
        trainer.close()
        raise
    # A new run directory: nothing of the source's logs to continue, no checkpoint of its own yet.
    trainer.checkpoint_step = trainer.resume_metrics_bytes = trainer.last_eval = None
    return trainer


def finetune(run_dir: Path | str, steps: int, tree_kind: str = DEFAULT_TREE_KIND, out: Path | str | None = None,
             force: bool = False, checkpoint_every: int | None = None, progress: bool = True,
             update: str | None = None, select_episodes: int = DEFAULT_SELECT_EPISODES) -> Path:
    """Fine-tune the SMOSE run in ``run_dir`` for ``steps`` steps under its ``tree_kind`` trees into ``out`` (default
    RUN-finetune-<kind> beside it); returns ``out``, an ordinary run directory. ``update``: as ``smose train
    --update`` (default: the source run's). ``select_episodes``: at the end, keep the controller as distilled instead
    when it does better on that many episodes of their own (:func:`keep_better`; 0: keep the fine-tuned one).
    Anything refused (SmoseError) is refused before ``out`` is created."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise SmoseError(f"--steps must be an integer from 1 to {MAX_STEPS:,}, got {steps!r}")
    if not isinstance(select_episodes, int) or isinstance(select_episodes, bool) \
            or not 0 <= select_episodes <= MAX_EPISODES:
        raise SmoseError(f"--select-episodes must be an integer from 0 to {MAX_EPISODES:,}, got {select_episodes!r}")
    source = check_source(run_dir, tree_kind)
    out = _check_out(source, Path(out) if out is not None else default_out(source.run_dir, tree_kind), force)
    trainer = prepare(source, steps, out, checkpoint_every, update, select_episodes)
    try:
        create_run_dir(out)
    except BaseException:
        trainer.close()
        raise

    def fresh_trainer() -> Trainer:
        clear_run_dir(out)  # under the lock, as `smose train --force`
        return _evaluate_before(trainer, source)

    run_locked(out, fresh_trainer, progress)
    keep_better(out, TreeRoutedActor.from_smose(source.actor, source.trees))
    return out


def _evaluate_before(trainer: Trainer, source: Source) -> Trainer:
    """The source's neural router and the tree-routed controller before fine-tuning, on the episodes of every later
    evaluation (the run's eval_episodes and seed): the first row of metrics.csv and the record's ``before``."""
    config, step = trainer.config, trainer.global_step
    assert trainer.run_dir is not None
    trainer.logger = RunLogger(trainer.run_dir, trainer.n_experts)
    trees = trainer._evaluate(step)
    neural = evaluate(source.actor, trainer.eval_env, config.eval_episodes, config.seed)
    trainer.record[FINETUNE_KEY]["before"] = {"episodes": config.eval_episodes, "seed": config.seed,
                                              "mode": trees["mode"], "neural_return": neural["mean"],
                                              "tree_return": trees["mean"]}
    return trainer


def resume_finetune(run_dir: Path | str, steps: int | None = None, checkpoint_every: int | None = None,
                    progress: bool = True) -> Path:
    """Continue the fine-tuning run in ``run_dir`` from its last checkpoint; ``steps`` counts fine-tuning steps (from
    the source's checkpoint), so it may extend the run. The same as ``smose train --resume`` with absolute steps."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SmoseError(f"{run_dir}: no such run directory")
    record = read_record(run_dir)
    if record is None:
        raise SmoseError(f"{run_dir} is not a fine-tuning run ({CONFIG_FILE} has no {FINETUNE_KEY} record); continue "
                         f"it with `smose train --resume {run_dir}`")
    checkpoint = read_checkpoint_json(run_dir)
    start, done = record["source_step"], checkpoint["step"] - record["source_step"]
    if steps is not None and steps < done:
        raise SmoseError(f"{run_dir}: --steps {steps} is below the {done:,} fine-tuning steps already taken")
    # config.json's steps beyond the checkpoint's: a --resume with more steps stopped before its first checkpoint,
    # which resume() continues to that target
    target = read_run_config(RunDir(run_dir).config).steps
    if (steps is None or steps == done) and checkpoint.get("finished") is True and target == checkpoint["step"]:
        if selection_pending(run_dir, record):  # fine-tuning finished, the comparison at its end did not (stopped)
            keep_better(run_dir, distilled_controller(run_dir, record))
            return run_dir
        raise SmoseError(f"{run_dir}: fine-tuning already finished after {done:,} steps; pass --steps N (> {done}) to "
                         "fine-tune it further")
    return resume(run_dir, None if steps is None else start + steps, checkpoint_every, progress=progress)


def comparison_pending(record: dict) -> bool:
    """Whether a fine-tuning run's record asks for the comparison at the end and holds none: it has not finished, or
    was stopped during the comparison (`smose finetune --resume RUN` then makes it)."""
    return bool(record.get(SELECT_EPISODES_KEY)) and record.get(SELECTION_KEY) is None


def replacement_pending(run_dir: Path, record: dict) -> bool:
    """Whether the comparison at the end kept the controller as distilled and the run's model is not yet that
    controller (stopped between the record's write and the model's; `smose finetune --resume RUN` writes it): the one
    as distilled is saved at the source's step, the fine-tuned one at a later step. model.json is the last file
    :func:`keep_better` writes, so a stop anywhere before it is seen here; eval.json is not looked at (`smose eval`
    rewrites it)."""
    if (record.get(SELECTION_KEY) or {}).get("kept") != AS_DISTILLED:
        return False
    try:
        written = read_json(RunDir(run_dir).model_meta, "model metadata").get("trained_steps")
    except (SmoseError, AttributeError):
        return True
    return written != record["source_step"]


def selection_pending(run_dir: Path, record: dict) -> bool:
    """Whether the end of fine-tuning is still to be completed by `smose finetune --resume RUN`: the comparison
    (:func:`comparison_pending`) or what it chose (:func:`replacement_pending`)."""
    return comparison_pending(record) or replacement_pending(run_dir, record)


def kept(run_dir: Path, record: dict) -> str | None:
    """Which controller the fine-tuning run ``run_dir`` (its record: :func:`read_record`) holds: FINE_TUNED or
    AS_DISTILLED; None while the end of fine-tuning is not completed (:func:`selection_pending`)."""
    if selection_pending(run_dir, record):
        return None
    return (record.get(SELECTION_KEY) or {}).get("kept", FINE_TUNED)


def controller_to_compare(run_dir: Path) -> TreeRoutedActor | None:
    """What a resumed run compares its controller with at the end (:func:`keep_better`): for a fine-tuning run whose
    record asks for the comparison, the controller as distilled (its source run's model, the checkpoint it started
    from, routed by its trees); None for any other run. SmoseError, before anything is trained, when the source run
    is not found with those trees."""
    record = read_record(run_dir) if RunDir(run_dir).config.is_file() else None
    if not record or not record.get(SELECT_EPISODES_KEY):
        return None
    return distilled_controller(run_dir, record)


def distilled_controller(run_dir: Path, record: dict) -> TreeRoutedActor:
    """The controller as distilled of the fine-tuning run ``run_dir`` (its record: :func:`read_record`): the source
    run's model routed by the trees ``run_dir`` was fine-tuned under, both checked to be the ones it started from."""
    source = source_dir(run_dir, record)
    if not holds_trees(source, record["tree_kind"], record["trees_sha256"]):
        raise SmoseError(f"{run_dir}: its source run ({source}) is not there with the trees it was fine-tuned under; "
                         "the comparison with the controller as distilled at the end needs it: put it back where "
                         f"it was ({record['source_run']}, or {record.get(SOURCE_RELATIVE_KEY)} from this run)")
    actor, meta = load_model(source)
    if not isinstance(actor, SMOSEActor) or isinstance(actor, TreeRoutedActor) \
            or router_digest(actor) != record.get("router_sha256"):
        raise SmoseError(f"{source}: holds another model than the one {run_dir} was fine-tuned from")
    return TreeRoutedActor.from_smose(actor, load_trees(tree_file(source, record["tree_kind"]), actor, meta["env_id"]))


def choose(fine_tuned: Actor, as_distilled: Actor, env: Any, episodes: int, seed: int) -> dict:
    """Which controller to keep: the mean deterministic return of each over the same ``episodes`` episodes (reset
    seeds seed + SELECTION_SEED_OFFSET + i: neither the evaluation's nor the fitting's), the fine-tuned one kept
    unless the one as distilled does strictly better."""
    returns = [evaluate(actor, env, episodes, seed, offset=SELECTION_SEED_OFFSET)["mean"]
               for actor in (fine_tuned, as_distilled)]
    return {"episodes": episodes, "seed": seed, "fine_tuned_return": returns[0], "as_distilled_return": returns[1],
            "kept": FINE_TUNED if returns[0] >= returns[1] else AS_DISTILLED}


def keep_better(run_dir: Path, as_distilled: TreeRoutedActor) -> dict | None:
    """After fine-tuning ``run_dir`` (finished): compare its controller with ``as_distilled`` (:func:`choose`, on the
    record's ``select_episodes``) and, when that one does better, make it the run's model and evaluation (eval.json
    on the evaluation's episodes, as before fine-tuning); the record keeps the comparison. The checkpoint keeps the
    fine-tuned state, so ``--resume`` fine-tunes on from it and compares again. None when the record asks for no
    comparison (``select_episodes`` 0).

    The record is written first, then eval.json and the model (model.json last), so that a stop between the writes
    leaves a state that says what is missing (:func:`replacement_pending`) rather than a model the record does not
    describe; called again on such a run, it writes them without comparing again (the fine-tuned model may be gone).
    SmoseError when a comparison is to be made and the run's model is not the fine-tuned controller of its
    configuration's steps."""
    run_dir = Path(run_dir)
    with runlock.hold(run_dir, "finetune"):
        record = read_record(run_dir)
        if not record or not record.get(SELECT_EPISODES_KEY):
            return None
        config = read_run_config(RunDir(run_dir).config)
        env = make_env(config.env, env_kwargs=config.env_kwargs)
        try:
            choice = record.get(SELECTION_KEY)
            if choice is None:
                fine_tuned, meta = load_model(run_dir)
                if meta.get("trained_steps") != config.steps:  # e.g. the one as distilled, before a stopped --resume
                    raise SmoseError(f"{run_dir}: its model (step {meta.get('trained_steps')}) is not the fine-tuned "
                                     f"controller of the {config.steps:,} steps its configuration asks for; `smose "
                                     f"finetune --resume {run_dir}` fine-tunes on to them and compares at the end")
                choice = choose(fine_tuned, as_distilled, env, record[SELECT_EPISODES_KEY], config.seed)
                data = read_json(RunDir(run_dir).config, "run configuration")
                data[FINETUNE_KEY][SELECTION_KEY] = choice
                write_json(RunDir(run_dir).config, data)
            if choice["kept"] == AS_DISTILLED:  # eval.json, then the model: model.json last (replacement_pending)
                result = evaluate(as_distilled, env, config.eval_episodes, config.seed)
                write_eval(RunDir(run_dir).eval, result | {"step": record["source_step"], "source": "train"})
                save_model(as_distilled, run_dir, config.env,
                           {"trained_steps": record["source_step"], **env_record(config.env_kwargs, env)})
        finally:
            env.close()
    return choice


def fell(result: dict) -> str | None:
    """What `smose finetune` adds on stderr when ``result`` (its summary) has the tree-routed return lower after
    fine-tuning than before it, on the same evaluation episodes; None otherwise. A controller near its router's
    optimum can lose a little under fine-tuning, and the trees' controller as distilled is then the one to weigh
    against it, on more episodes than the training's evaluation."""
    before, after = result.get("tree_return_before"), result.get("final_eval_mean")
    if before is None or after is None or after >= before:
        return None
    advice = (f"compare {result['run_dir']} with the controller as distilled (smose eval {result['source_run']} "
              f"--router tree --tree-kind {result['tree_kind']}) on more episodes before choosing which to deploy")
    selection = result.get("selection")
    if selection:  # the fine-tuned one was kept: it did better on the comparison's episodes
        return (f"the tree-routed return fell during fine-tuning on the evaluation's episodes ({before:.6g} before, "
                f"{after:.6g} after), though on the {selection['episodes']} episodes of the comparison it did at "
                f"least as well ({selection['as_distilled_return']:.6g} as distilled, "
                f"{selection['fine_tuned_return']:.6g} fine-tuned); {advice}")
    return (f"the tree-routed return fell during fine-tuning ({before:.6g} before, {after:.6g} after, on the same "
            f"episodes); {advice}")


def not_compared(result: dict) -> str | None:
    """What `smose finetune` adds on stderr when the comparison at the end is still to be made (its summary
    ``result``: ``kept`` None); None otherwise."""
    if result.get("kept") is not None:
        return None
    return (f"{result['run_dir']}: the comparison with the controller as distilled at the end was not completed "
            f"(stopped before it finished); `smose finetune --resume {result['run_dir']}` completes it")


def kept_as_distilled(result: dict) -> str | None:
    """What `smose finetune` adds on stderr when the comparison at the end kept the controller as distilled (its
    summary ``result``); None otherwise."""
    selection = result.get("selection")
    if not selection or selection["kept"] != AS_DISTILLED:
        return None
    return (f"fine-tuning did not beat the controller as distilled on the {selection['episodes']} episodes of the "
            f"comparison ({selection['fine_tuned_return']:.6g} fine-tuned, {selection['as_distilled_return']:.6g} as "
            f"distilled): {result['run_dir']} holds the controller as distilled (the source's experts under the same "
            f"trees); its checkpoint keeps the fine-tuned state, and --resume fine-tunes on from there")


def summary(run_dir: Path) -> dict:
    """What `smose finetune` prints: the run, its source, the returns before and after (the same episodes; after: the
    controller kept), which controller was kept and the comparison that chose it (None when none was made)."""
    from smose.serialization import read_eval

    record = read_record(run_dir) or {}
    before = record.get("before", {})
    after = read_eval(RunDir(run_dir).eval)
    neural = before.get("neural_return")

    def ratio(value: float | None) -> float | None:  # defined for positive returns, as smose distill's ratio
        return None if value is None or neural is None or neural <= 0 else value / neural

    source = str(source_dir(run_dir, record)) if record else None
    return {"run_dir": str(run_dir), "source_run": source, "tree_kind": record.get("tree_kind"),
            "fine_tuning_steps": read_checkpoint_json(run_dir)["step"] - record.get("source_step", 0),
            "neural_return": neural, "tree_return_before": before.get("tree_return"),
            "final_eval_mean": after["mean"], "final_eval_std": after["std"],
            "ratio_before": ratio(before.get("tree_return")), "ratio_after": ratio(after["mean"]),
            "kept": kept(run_dir, record),
            "selection": record.get(SELECTION_KEY)}

