"""`smose finetune`: SAC continued from a run's checkpoint with the expert chosen by its fixed distilled trees, into an
ordinary run directory that every command reads as the tree-routed controller."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from safetensors import safe_open

import smose.training.finetune as finetune_module
from smose.algo.fast.fused import SACLearner
from smose.algo.learner import make_learner
from smose.algo.policy import SMOSEActor, make_actor
from smose.algo.sac import SAC
from smose.api import SMOSE
from smose.cli import main
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.export import export_policy
from smose.interpret.distill import TreeRouter, distill, fit_multiclass, load_trees, tree_file
from smose.interpret.tree_policy import TreeRoutedActor, trees_digest
from smose.rollout import SELECTION_SEED_OFFSET
from smose.serialization import load_model, save_model
from smose.training.buffer import Batch
from smose.training.checkpoint import CHECKPOINT_DIR, read_checkpoint_json
from smose.training.config import SACHyperParams
from smose.training.finetune import (
    AS_DISTILLED,
    FINE_TUNED,
    check_source,
    choose,
    controller_to_compare,
    holds_trees,
    keep_better,
    prepare,
    read_record,
    source_dir,
    summary,
)
from smose.training.trainer import Trainer

STEPS = 200
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(pendulum_run, tmp_path_factory) -> Path:
    """The pendulum run (1,500 steps, with its final checkpoint) distilled into all three kinds of depth-2 trees."""
    run = tmp_path_factory.mktemp("finetune") / "pendulum"
    shutil.copytree(pendulum_run, run)  # the session fixture is shared: never write into it
    distill(run, depth=2, episodes=2, kind="all", eval_episodes=1, cma_iterations=5)
    return run


@pytest.fixture(scope="module")
def tuned(source) -> Path:
    """`smose finetune` for STEPS steps under the multiclass tree, into the default directory beside the source; the
    fine-tuned controller kept whatever (--select-episodes 0: what the tests of fine-tuning itself look at)."""
    assert main(["finetune", str(source), "--steps", str(STEPS), "--tree-kind", "multiclass", "--select-episodes",
                 "0", "--quiet"]) == 0
    return source.parent / f"{source.name}-finetune-multiclass"


def listing(path: Path) -> dict[str, int]:
    """Every file below ``path`` with its modification time: what "nothing written" compares."""
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


# ------------------------------------------------------------------------------------------------- what is trained


def test_the_fine_tuned_run_records_its_source_and_trees(source, tuned, capsys):
    config = json.loads((tuned / "config.json").read_text())
    record = config["finetune"]
    trees = load_trees(tree_file(source, "multiclass"))
    start = read_checkpoint_json(source)["step"]
    assert record["source_run"] == str(source) and record["source_step"] == start == 1500
    assert record["tree_kind"] == "multiclass" and record["trees_sha256"] == trees_digest(trees)
    assert record["router_sha256"] == trees["router_sha256"]
    assert config["steps"] == start + STEPS and config["lb_loss"] == "none" and config["update"] == "fused"
    assert config["lb_weight_effective"] == 0.0
    # The trees travel with the model, unchanged; model.json names them.
    assert load_trees(tree_file(tuned, "multiclass")) == trees
    assert sorted(p.name for p in (tuned / "trees").iterdir()) == ["multiclass.json", "multiclass.txt"]
    meta = json.loads((tuned / "model.json").read_text())
    assert meta["format_version"] == 2 and meta["trained_steps"] == start + STEPS
    assert meta["architecture"] == {"algo": "smose", "n_obs": 3, "n_act": 1, "n_experts": 4, "router": "trees",
                                         "tree_kind": "multiclass", "trees_sha256": trees_digest(trees)}
    # metrics.csv starts with the tree-routed evaluation before fine-tuning, at the source's step
    with open(tuned / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = rows[0]
    assert first["event"] == "eval" and int(first["step"]) == start
    assert float(first["eval_return_mean"]) == pytest.approx(record["before"]["tree_return"], rel=1e-5)
    assert int(rows[-1]["step"]) == start + STEPS
    assert read_checkpoint_json(tuned)["finished"] is True


def test_the_trees_choose_and_the_router_and_experts_learn(source, tuned):
    actor, _ = load_model(tuned)
    before, _ = load_model(source)
    assert isinstance(actor, TreeRoutedActor) and not isinstance(before, TreeRoutedActor)
    trees = TreeRouter(load_trees(tree_file(source, "multiclass")))
    obs = torch.from_numpy(np.random.default_rng(0).uniform([-1, -1, -8], [1, 1, 8], size=(2000, 3)).astype("f4"))
    expert = trees(obs)
    assert len(np.unique(expert.numpy())) >= 2  # guards the comparison: the tree routes to several experts
    plain = SMOSEActor(3, 1, [-2.0], [2.0], n_experts=4)
    plain.load_state_dict(actor.state_dict())
    for mode in ("gated", "linear"):  # the action `smose eval --router tree` takes with these weights
        action, chosen = actor.act(obs, mode)
        torch.testing.assert_close(chosen, expert, rtol=0, atol=0)
        torch.testing.assert_close(action, plain.act_with_experts(obs, expert, mode), rtol=0, atol=0)
    torch.testing.assert_close(actor(obs).expert, expert, rtol=0, atol=0)  # what SAC samples from
    # fine-tuning changed the experts (mean and log-std heads) and the router, whose softmax gates the action
    assert not torch.equal(actor.expert_weight[:, :1], before.expert_weight[:, :1])
    assert not torch.equal(actor.expert_weight[:, 1:], before.expert_weight[:, 1:])
    assert not torch.equal(actor.router.weight, before.router.weight)


def test_fine_tuning_keeps_the_source_runs_update_unless_told(source, tmp_path):
    """A run trained with --update autograd is fine-tuned with it too; --update fused overrides."""
    run = copy_run(source, tmp_path / "autograd-source")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"update": "autograd"}))
    for update, learner in ((None, SAC), ("fused", SACLearner)):
        trainer = prepare(check_source(run, "multiclass"), 10, tmp_path / f"out-{update}", update=update)
        try:
            assert type(trainer.learner) is learner and trainer.config.update == (update or "autograd")
        finally:
            trainer.close()


@pytest.mark.parametrize("update, learner", [(None, SACLearner), ("autograd", SAC)])
def test_fine_tuning_starts_from_the_source_checkpoint(source, tmp_path, update, learner):
    """Either SAC update continues the checkpoint: the source's (fused) by default, the reference if asked."""
    out = tmp_path / "prepared"
    trainer = prepare(check_source(source, "oblique"), 10, out, update=update)
    try:
        assert not out.exists()  # nothing written before the run starts
        assert trainer.global_step == 1500 and trainer.config.steps == 1510
        assert type(trainer.learner) is learner and trainer.learner.hp.lb_loss == "none"  # no balancing
        assert trainer.config.update == (update or "fused")
        assert isinstance(trainer.actor, TreeRoutedActor) and trainer.actor.tree_kind == "oblique"
        data = read_checkpoint_json(source)
        assert trainer.buffer.size == data["buffer"]["size"]
        assert trainer.learner.n_updates == data["learner"]["n_updates"]
        with safe_open(str(source / CHECKPOINT_DIR / data["tensor_file"]), framework="pt") as saved:
            for name, value in trainer.learner.critic.state_dict().items():
                torch.testing.assert_close(value, saved.get_tensor(f"critic/{name}"), rtol=0, atol=0)
            for name, value in trainer.learner.critic_target.state_dict().items():
                torch.testing.assert_close(value, saved.get_tensor(f"critic_target/{name}"), rtol=0, atol=0)
            torch.testing.assert_close(trainer.learner.log_alpha.detach(), saved.get_tensor("log_alpha"))
            torch.testing.assert_close(trainer.buffer.data[: trainer.buffer.size], saved.get_tensor("buffer").numpy())
    finally:
        trainer.close()


@pytest.mark.parametrize("update, learner_class", [("fused", SACLearner), ("autograd", SAC)])
def test_an_update_trains_the_chosen_expert_and_the_gate_only(update, learner_class):
    """Fixed trees that always choose expert 2: SAC steps change expert 2's heads and the router (through the gate
    g = softmax(z)_2 that scales expert 2's output), and no other expert, on either update path."""
    torch.manual_seed(0)
    base = make_actor("smose", 3, 1, [-2.0], [2.0], n_experts=4)
    states = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    trees = fit_multiclass(base, states, np.full(64, 2), depth=2, env_id="Synthetic-v0")
    actor = TreeRoutedActor.from_smose(base, trees)
    learner = make_learner(actor, SACHyperParams(lb_loss="none", lb_weight=0.0, policy_frequency=1), update)
    assert type(learner) is learner_class
    before = {name: value.detach().clone() for name, value in actor.named_parameters()}
    obs = torch.from_numpy(states)
    batch = Batch(obs=obs, actions=torch.rand(64, 1) * 4 - 2, rewards=torch.randn(64), next_obs=obs.flip(0),
                  dones=torch.zeros(64))
    for _ in range(3):
        stats = learner.update(batch)
    assert float(stats["lb_loss"]) == 0.0
    assert (actor(obs).expert == 2).all()
    changed = (actor.expert_weight - before["expert_weight"]).abs().sum(dim=(1, 2)) > 0
    assert changed.tolist() == [False, False, True, False]
    assert not torch.equal(actor.router.weight, before["router.weight"])


# ----------------------------------------------------------------------------------------------------- resuming


def test_resume_extends_fine_tuning_exactly(source, tuned, tmp_path, capsys):
    longer = tmp_path / "longer"
    assert main(["finetune", str(source), "--steps", str(STEPS + 100), "--tree-kind", "multiclass", "--out",
                 str(longer), "--select-episodes", "0", "--quiet"]) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(tuned, resumed)
    capsys.readouterr()
    assert main(["finetune", "--resume", str(resumed), "--quiet"]) == 2  # finished: --steps must extend it
    assert f"already finished after {STEPS} steps" in capsys.readouterr().err
    assert main(["finetune", "--resume", str(resumed), "--steps", str(STEPS + 100), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fine_tuning_steps"] == STEPS + 100 and summary["tree_kind"] == "multiclass"
    assert (resumed / "model.safetensors").read_bytes() == (longer / "model.safetensors").read_bytes()
    records = [read_record(run) for run in (resumed, longer)]
    # the copy finds its source by the path it was given, the other from where it is
    assert source_dir(resumed, records[0]) == source_dir(longer, records[1]) == source
    for record in records:
        del record["source_run_relative"]
    assert records[0] == records[1]
    # `smose train --resume` continues it under its trees too
    trainer = Trainer.resume(resumed, steps=1500 + STEPS + 150)
    try:
        assert isinstance(trainer.actor, TreeRoutedActor) and trainer.actor.tree_kind == "multiclass"
        assert trainer.record["finetune"]["trees_sha256"] == trainer.actor.trees_sha256
    finally:
        trainer.close()


def test_a_fall_during_fine_tuning_is_reported(tuned, monkeypatch, capsys):
    """When the tree-routed return is lower after fine-tuning than before it (on the same episodes), `smose finetune`
    says so on stderr, naming the distilled controller to compare with; the JSON line is unchanged."""
    import smose.training.finetune as finetune_module

    real = finetune_module.summary(tuned)
    fallen = real | {"tree_return_before": -5.49, "final_eval_mean": -6.16}
    assert finetune_module.fell(real | {"tree_return_before": -6.16, "final_eval_mean": -5.49}) is None
    assert finetune_module.fell(real | {"tree_return_before": 10.0, "final_eval_mean": 10.0}) is None  # level
    assert finetune_module.fell(real | {"tree_return_before": None}) is None  # nothing to compare with
    # kept after the comparison at the end: the message says the comparison's episodes saw it otherwise
    compared = {"episodes": 30, "seed": 0, "fine_tuned_return": -5.2, "as_distilled_return": -5.3,
                "kept": "fine-tuned"}
    assert finetune_module.fell(fallen | {"selection": compared}).startswith(
        "the tree-routed return fell during fine-tuning on the evaluation's episodes (-5.49 before, -6.16 after), "
        "though on the 30 episodes of the comparison it did at least as well (-5.3 as distilled, -5.2 fine-tuned); "
        "compare ")
    monkeypatch.setattr(finetune_module, "resume_finetune", lambda *args, **kwargs: tuned)
    monkeypatch.setattr(finetune_module, "summary", lambda run_dir: fallen)
    capsys.readouterr()
    assert main(["finetune", "--resume", str(tuned), "--steps", str(STEPS + 1), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == fallen
    assert err == (f"smose: warning: the tree-routed return fell during fine-tuning (-5.49 before, -6.16 after, on "
                   f"the same episodes); compare {tuned} with the controller as distilled (smose eval "
                   f"{real['source_run']} --router tree --tree-kind multiclass) on more episodes before choosing "
                   "which to deploy\n")
    monkeypatch.setattr(finetune_module, "summary", lambda run_dir: real | {"final_eval_mean": 1e9})
    assert main(["finetune", "--resume", str(tuned), "--steps", str(STEPS + 1), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------ the better of fine-tuned and as distilled


def as_distilled_of(source: Path) -> TreeRoutedActor:
    actor, _ = load_model(source)
    return TreeRoutedActor.from_smose(actor, load_trees(tree_file(source, "multiclass")))


def test_the_better_controller_is_kept_by_default(source, tmp_path, capsys):
    """By default `smose finetune` compares the controller as fine-tuned and as distilled on 30 episodes of their own
    at the end; the record holds both returns, the run the better controller, eval.json its evaluation."""
    out = tmp_path / "default"
    capsys.readouterr()
    assert main(["finetune", str(source), "--steps", str(STEPS), "--tree-kind", "multiclass", "--out", str(out),
                 "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    selection = read_record(out)["selection"]
    assert printed["selection"] == selection and printed["kept"] == selection["kept"]
    assert selection["episodes"] == 30 and selection["seed"] == 0
    env = gymnasium.make("Pendulum-v1")
    distilled = evaluate(as_distilled_of(source), env, 30, 0, offset=SELECTION_SEED_OFFSET)["mean"]
    assert selection["as_distilled_return"] == pytest.approx(distilled, rel=1e-6)
    assert selection["kept"] == (FINE_TUNED if selection["fine_tuned_return"] >= distilled else AS_DISTILLED)
    kept, _ = load_model(out)
    # the kept controller is the one compared: its return on the comparison's episodes, and eval.json its own
    assert evaluate(kept, env, 30, 0, offset=SELECTION_SEED_OFFSET)["mean"] == pytest.approx(
        selection["fine_tuned_return" if selection["kept"] == FINE_TUNED else "as_distilled_return"], rel=1e-6)
    assert json.loads((out / "eval.json").read_text())["mean"] == pytest.approx(evaluate(kept, env, 2, 0)["mean"],
                                                                                 rel=1e-6)


def worse_copy(tuned: Path, target: Path, select_episodes: int) -> Path:
    """A copy of ``tuned`` whose fine-tuned controller brakes the pendulum wherever it swings (every expert's mean
    -5 × angular velocity), so it comes to hang at the bottom, the costliest place (about -1,860 a 200-step episode,
    against about -1,670 as distilled); its record asks for a comparison on ``select_episodes`` episodes."""
    shutil.copytree(tuned, target)
    actor, meta = load_model(target)
    with torch.no_grad():
        actor.expert_weight[:, :1].zero_()
        actor.expert_weight[:, 0, 2] = -5.0
        actor.expert_bias[:, :1].zero_()
    save_model(actor, target, "Pendulum-v1", {"trained_steps": meta["trained_steps"]})
    config = json.loads((target / "config.json").read_text())
    config["finetune"]["select_episodes"] = select_episodes
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_a_worse_fine_tuned_controller_gives_way_to_the_one_as_distilled(source, tuned, tmp_path, capsys):
    run = worse_copy(tuned, tmp_path / "worse", 4)
    checkpoint = (run / CHECKPOINT_DIR).glob("*")
    checkpoint_files = {p.name: p.read_bytes() for p in checkpoint}
    choice = keep_better(run, controller_to_compare(run))
    assert choice["kept"] == AS_DISTILLED and choice["episodes"] == 4
    assert choice["as_distilled_return"] > choice["fine_tuned_return"]
    # the run now holds the source's experts under the same trees, and eval.json is the evaluation before fine-tuning
    kept, meta = load_model(run)
    expected = as_distilled_of(source)
    assert isinstance(kept, TreeRoutedActor) and kept.trees_sha256 == expected.trees_sha256
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(kept.state_dict()[name], tensor, rtol=0, atol=0)
    record = read_record(run)
    assert meta["trained_steps"] == record["source_step"] and record["selection"] == choice
    assert json.loads((run / "eval.json").read_text())["mean"] == pytest.approx(record["before"]["tree_return"],
                                                                                 rel=1e-6)
    assert {p.name: p.read_bytes() for p in (run / CHECKPOINT_DIR).glob("*")} == checkpoint_files
    result = summary(run)
    assert result["kept"] == AS_DISTILLED and result["final_eval_mean"] == result["tree_return_before"]
    assert finetune_module.kept_as_distilled(result) == (
        f"fine-tuning did not beat the controller as distilled on the 4 episodes of the comparison "
        f"({choice['fine_tuned_return']:.6g} fine-tuned, {choice['as_distilled_return']:.6g} as distilled): {run} "
        "holds the controller as distilled (the source's experts under the same trees); its checkpoint keeps the "
        "fine-tuned state, and --resume fine-tunes on from there")
    assert finetune_module.fell(result) is None  # the evaluation's return is the one before
    # every command reads it: info names the choice, the report shows both returns of the comparison
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    assert "kept       the controller as distilled (" in capsys.readouterr().out
    assert main(["explain", str(run), "--episodes", "1"]) == 0
    report = (run / "report" / "report.md").read_text()
    assert "fine-tuning under them did not beat the controller as distilled" in report
    assert "this run's controller: as distilled, kept (eval.json)" in report
    # a tie keeps the fine-tuned one; nothing asks for a comparison with select_episodes 0
    env = gymnasium.make("Pendulum-v1")
    assert choose(expected, expected, env, 2, 0)["kept"] == FINE_TUNED
    assert keep_better(tuned, expected) is None and "selection" not in read_record(tuned)


def test_a_comparison_stopped_before_it_finished_is_made_by_resume(source, tuned, tmp_path, capsys):
    """A run whose record asks for the comparison and holds none (stopped during it, after the last fine-tuning
    step): its summary says kept is unknown and stderr says how to finish; `smose finetune --resume RUN` then makes
    the comparison without training, and the tree-controller benchmark counts the run as not finished."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tree_controller import state

    run = worse_copy(tuned, tmp_path / "stopped", 4)
    checkpoint = read_checkpoint_json(run)
    result = summary(run)
    assert result["kept"] is None and result["selection"] is None
    assert finetune_module.not_compared(result) == (
        f"{run}: the comparison with the controller as distilled at the end was not completed (stopped before it "
        f"finished); `smose finetune --resume {run}` completes it")
    assert state(run, source, 1500, "multiclass", STEPS, select_episodes=4) == "resumable"
    capsys.readouterr()
    assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kept"] == AS_DISTILLED and printed["selection"] == read_record(run)["selection"]
    assert read_checkpoint_json(run) == checkpoint  # nothing trained
    assert state(run, source, 1500, "multiclass", STEPS, select_episodes=4) == "finished"
    assert finetune_module.not_compared(summary(run)) is None
    # a record whose comparison is not as smose finetune writes it is refused in one line
    config = json.loads((run / "config.json").read_text())
    for broken in ({"select_episodes": True}, {"select_episodes": 10 ** 9},
                   {"selection": {**config["finetune"]["selection"], "episodes": "4"}}):
        bad = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(run, bad, ignore=shutil.ignore_patterns("checkpoint"))
        (bad / "config.json").write_text(json.dumps(config | {"finetune": config["finetune"] | broken}))
        err = refused(capsys, "info", str(bad))
        assert "invalid finetune record" in err, broken


def test_a_stop_between_the_records_write_and_the_models_is_completed_by_resume(source, tuned, tmp_path, capsys,
                                                                               monkeypatch):
    """The comparison's record is written before eval.json and the model it chose (model.json last): a run stopped
    between those writes (a record that keeps the one as distilled beside the fine-tuned model) reads as not completed
    in the summary, `info` and the report, and `smose finetune --resume RUN` writes what the record chose without
    comparing again, to the same files as an end that was not stopped. `smose eval` rewriting eval.json afterwards
    leaves the run completed."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from tree_controller import state

    whole = worse_copy(tuned, tmp_path / "whole", 4)
    before = {name: (whole / name).read_bytes() for name in ("model.safetensors", "model.json", "eval.json")}
    keep_better(whole, controller_to_compare(whole))
    assert read_record(whole)["selection"]["kept"] == AS_DISTILLED
    expected = {name: (whole / name).read_bytes() for name in before}
    for stale in (("model.safetensors", "model.json", "eval.json"), ("model.safetensors", "model.json")):
        run = tmp_path / f"stopped-{len(stale)}"  # stopped before eval.json, or between it and the model
        shutil.copytree(whole, run)
        for name in stale:
            (run / name).write_bytes(before[name])
        assert finetune_module.replacement_pending(run, read_record(run))
        result = summary(run)
        assert result["kept"] is None and finetune_module.not_compared(result) == (
            f"{run}: the comparison with the controller as distilled at the end was not completed (stopped before it "
            f"finished); `smose finetune --resume {run}` completes it")
        assert state(run, source, 1500, "multiclass", STEPS, select_episodes=4) == "resumable"
        capsys.readouterr()
        assert main(["info", str(run)]) == 0
        assert (f"kept       not yet known: the comparison at the end was not completed; `smose finetune --resume "
                f"{run}` completes it") in capsys.readouterr().out
        assert main(["explain", str(run), "--episodes", "1"]) == 0
        report = (run / "report" / "report.md").read_text()
        assert "was not completed (stopped before it finished)" in report and "as distilled, kept" not in report
        capsys.readouterr()
        with monkeypatch.context() as patched:  # what the record chose is written, not chosen again
            patched.setattr(finetune_module, "choose", lambda *a, **k: pytest.fail("compared again"))
            assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert printed["kept"] == AS_DISTILLED and printed["selection"] == read_record(whole)["selection"]
        assert {name: (run / name).read_bytes() for name in before} == expected
        assert not finetune_module.replacement_pending(run, read_record(run))
        assert state(run, source, 1500, "multiclass", STEPS, select_episodes=4) == "finished"
    assert main(["eval", str(run), "--episodes", "2"]) == 0  # another eval.json: the model is what counts
    assert summary(run)["kept"] == AS_DISTILLED
    # a run that kept the fine-tuned one has nothing pending, whatever its model's step
    assert not finetune_module.replacement_pending(tuned, read_record(tuned) | {"selection": {"kept": FINE_TUNED}})


def test_a_resume_stopped_before_its_first_checkpoint_fine_tunes_on(source, tuned, tmp_path, capsys):
    """A run that kept the controller as distilled, resumed with more steps and stopped before the first new
    checkpoint (config.json asks for more steps than the finished checkpoint holds, no comparison recorded, the model
    as distilled): `smose finetune --resume RUN` fine-tunes on to config.json's steps and compares at the end, rather
    than comparing the model as distilled with itself; keep_better alone refuses such a run in one line."""
    run = worse_copy(tuned, tmp_path / "worse", 4)
    keep_better(run, controller_to_compare(run))
    trainer = Trainer.resume(run, steps=1500 + STEPS + 20)
    try:
        trainer.write_config()  # what a --resume writes before its first step; then stopped
    finally:
        trainer.close()
    record = read_record(run)
    assert "selection" not in record and summary(run)["kept"] is None
    with pytest.raises(SmoseError, match=rf"its model \(step 1500\) is not the fine-tuned controller of the "
                                         rf"{1500 + STEPS + 20:,} steps its configuration asks for"):
        keep_better(run, controller_to_compare(run))
    capsys.readouterr()
    assert main(["finetune", "--resume", str(run), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["fine_tuning_steps"] == STEPS + 20 and printed["kept"] in (FINE_TUNED, AS_DISTILLED)
    assert printed["selection"] == read_record(run)["selection"]
    assert load_model(run)[1]["trained_steps"] == (1500 + STEPS + 20 if printed["kept"] == FINE_TUNED else 1500)


def test_resume_fine_tunes_on_from_the_checkpoint_and_compares_again(source, tuned, tmp_path, capsys):
    run = worse_copy(tuned, tmp_path / "worse", 4)
    keep_better(run, controller_to_compare(run))
    assert read_record(run)["selection"]["kept"] == AS_DISTILLED
    trainer = Trainer.resume(run, steps=1500 + STEPS + 20)  # what trains on: the checkpoint, no stale comparison
    try:
        assert "selection" not in trainer.record["finetune"] and trainer.record["finetune"]["select_episodes"] == 4
    finally:
        trainer.close()
    capsys.readouterr()
    assert main(["finetune", "--resume", str(run), "--steps", str(STEPS + 20), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["fine_tuning_steps"] == STEPS + 20 and printed["selection"] == read_record(run)["selection"]
    # `smose train --resume` (absolute steps) on a fine-tuning run compares again and prints what finetune prints
    again = tmp_path / "again"
    shutil.copytree(run, again)
    assert main(["train", "--resume", str(again), "--steps", str(1500 + STEPS + 40), "--quiet"]) == 0
    captured = capsys.readouterr()
    printed_by_train = json.loads(captured.out)
    assert printed_by_train["fine_tuning_steps"] == STEPS + 40
    assert printed_by_train["kept"] in (FINE_TUNED, AS_DISTILLED)
    assert printed_by_train["selection"] == read_record(again)["selection"]
    assert (printed_by_train["kept"] == AS_DISTILLED) == ("did not beat the controller as distilled" in captured.err)
    # the same as resuming the run without the comparison, then comparing
    plain = tmp_path / "plain"
    shutil.copytree(tuned, plain)
    assert main(["finetune", "--resume", str(plain), "--steps", str(STEPS + 20), "--quiet"]) == 0
    env = gymnasium.make("Pendulum-v1")
    resumed, _ = load_model(plain)
    assert choose(resumed, as_distilled_of(source), env, 4, 0) == printed["selection"]
    # without its source run there is nothing to compare with: refused before anything trains
    orphan = tmp_path / "elsewhere" / "orphan"
    shutil.copytree(run, orphan)
    config = json.loads((orphan / "config.json").read_text())
    config["finetune"] |= {"source_run": str(tmp_path / "gone"), "source_run_relative": "../gone"}
    (orphan / "config.json").write_text(json.dumps(config))
    before = listing(orphan)
    capsys.readouterr()
    err = refused(capsys, "finetune", "--resume", str(orphan), "--steps", str(STEPS + 40), "--quiet")
    assert "is not there with the trees it was fine-tuned under" in err
    assert listing(orphan) == before


# ------------------------------------------------------------------------------------------------- every command


def test_eval_info_distill_and_explain_read_the_fine_tuned_run(source, tuned, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tuned, run)
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "1", "--seed", "3"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["router"] == "tree" and own["tree_kind"] == "multiclass"
    assert json.loads((run / "eval.json").read_text())["returns"] == own["returns"]
    assert main(["eval", str(run), "--router", "tree", "--tree-kind", "multiclass", "--episodes", "1", "--seed",
                 "3"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == own["returns"]
    assert json.loads((run / "trees" / "eval-multiclass.json").read_text())["returns"] == own["returns"]
    for argv, message in ((["eval", str(run), "--router", "neural"], "its router only gates the action"),
                          (["eval", str(run), "--router", "tree", "--tree-kind", "oblique"], "has no oblique trees"),
                          (["distill", str(run)], "no routing left to distil"),
                          (["export", str(run), "--format", "c", "--router", "neural", "--out", str(tmp_path)],
                           "its router only gates the action")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("smose: error: ") and err.count("\n") == 1 and message in err, err
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finetune"]["tree_kind"] == "multiclass"
    assert main(["info", str(run)]) == 0
    assert "routing    fixed multiclass trees" in capsys.readouterr().out

    assert main(["explain", str(run), "--episodes", "1"]) == 0
    report = (run / "report" / "report.md").read_text()
    assert "Fixed multiclass trees choose the expert" in report
    assert "These trees choose the expert at every step" in report
    assert (run / "trees" / "multiclass.txt").read_text().splitlines()[1] in report
    assert "source run, its trees (before fine-tuning)" in report and "fidelity.json" not in \
        [p.name for p in (run / "trees").iterdir()]


def run_python(path: Path, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.spec_from_file_location("exported", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pairs = [module.act_and_route(list(map(float, s))) for s in obs]
    return np.asarray([a for a, _ in pairs]), np.asarray([k for _, k in pairs])


def test_every_export_format_holds_the_trees(source, tuned, tmp_path):
    actor, _ = load_model(tuned)
    obs = np.random.default_rng(1).uniform([-1, -1, -8], [1, 1, 8], size=(500, 3)).astype(np.float32)
    want_action, want_expert = (t.numpy() for t in actor.act(torch.from_numpy(obs)))
    py = export_policy(tuned, "python", tmp_path / "policy.py")
    assert "--router tree --tree-kind multiclass" in py.read_text()
    action, expert = run_python(py, obs)
    np.testing.assert_array_equal(expert, want_expert)
    assert np.abs(action - want_action).max() <= 1e-5
    doc = json.loads(export_policy(tuned, "json", tmp_path / "policy.json").read_text())
    assert (doc["router"], doc["tree_kind"]) == ("tree", "multiclass")
    assert doc["trees"] == {"multiclass": load_trees(tree_file(tuned, "multiclass"))}
    import onnxruntime

    session = onnxruntime.InferenceSession(str(export_policy(tuned, "onnx", tmp_path / "p.onnx")),
                                           providers=["CPUExecutionProvider"])
    action, expert = session.run(None, {"obs": obs})
    np.testing.assert_array_equal(expert, want_expert)
    assert np.abs(action - want_action).max() <= 1e-5
    header = export_policy(tuned, "c", tmp_path / "smose_policy.h")
    if shutil.which("gcc"):
        (tmp_path / "main.c").write_text('#include "smose_policy.h"\nint main(void){float o[3]={0.5f,-0.2f,1.0f};'
                                         'float a[1];return smose_act_route(o, a) < 0;}\n')
        build = subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "main.c", "-o",
                                "main", "-lm"], cwd=tmp_path, capture_output=True, text=True, check=False)
        assert build.returncode == 0, build.stderr
    assert "smose_choose_" in header.read_text()


def test_api_fine_tunes_a_loaded_run_under_the_oblique_tree(source, tmp_path):
    tuned = SMOSE.load(source).finetune(1, tree_kind="oblique", out=tmp_path / "oblique")
    assert isinstance(tuned.actor, TreeRoutedActor) and tuned.actor.tree_kind == "oblique"
    obs = np.random.default_rng(2).uniform([-1, -1, -8], [1, 1, 8], size=(50, 3)).astype(np.float32)
    trees = TreeRouter(load_trees(tree_file(source, "oblique")))
    action, _ = tuned.predict(obs)
    want = tuned.actor.act_with_experts(torch.from_numpy(obs), trees(torch.from_numpy(obs)))
    np.testing.assert_array_equal(action, want.numpy())
    py = export_policy(tmp_path / "oblique", "python", tmp_path / "oblique.py")
    got_action, got_expert = run_python(py, obs)
    np.testing.assert_array_equal(got_expert, trees.predict(obs))
    assert np.abs(got_action - want.numpy()).max() <= 1e-5
    with pytest.raises(SmoseError, match="load one with SMOSE.load"):
        SMOSE("Pendulum-v1", learning_starts=10, batch_size=8, buffer_size=100).finetune(1)


# ---------------------------------------------------------------------------------------------------- bad input


def refused(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2, argv
    err = capsys.readouterr().err
    assert err.startswith("smose: error: ") and err.count("\n") == 1, err
    return err


def copy_run(source: Path, target: Path, skip: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target, ignore=lambda _, names: [n for n in names if n in skip])
    return target


def test_the_source_run_is_found_from_anywhere_and_after_a_move(source, tmp_path, monkeypatch, capsys):
    """config.json names the source run as given and relative to the fine-tuning run: a run fine-tuned with relative
    paths from one directory finds its source from another and after both were moved together; a copy of the
    fine-tuning run alone falls back to the path as given."""
    work = tmp_path / "work"
    copy_run(source, work / "runs" / "pendulum")
    monkeypatch.chdir(work)
    assert main(["finetune", "runs/pendulum", "--steps", "10", "--out", "tuned/pendulum-ft", "--quiet"]) == 0
    record = read_record(Path("tuned/pendulum-ft"))
    assert record["source_run"] == "runs/pendulum" and record["source_run_relative"] == "../../runs/pendulum"
    monkeypatch.chdir(tmp_path)
    assert source_dir(Path("work/tuned/pendulum-ft"), record) == Path("work/runs/pendulum")
    moved = work.rename(tmp_path / "moved")
    assert source_dir(moved / "tuned" / "pendulum-ft", record) == moved / "runs" / "pendulum"
    capsys.readouterr()
    assert main(["info", "moved/tuned/pendulum-ft", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finetune"]["source_dir"] == "moved/runs/pendulum"
    alone = copy_run(moved / "tuned" / "pendulum-ft", tmp_path / "alone")
    assert source_dir(alone, record) == Path("runs/pendulum")
    # a copy of it alone beside another run of the source's name: the run that holds its trees, from here
    decoy = copy_run(moved / "runs" / "pendulum", tmp_path / "copies" / "runs" / "pendulum", skip=("trees",))
    copy = copy_run(moved / "tuned" / "pendulum-ft", tmp_path / "copies" / "tuned" / "pendulum-ft")
    monkeypatch.chdir(moved)
    assert source_dir(copy, record) == Path("runs/pendulum")
    shutil.rmtree(moved / "runs")  # the source gone: the directory the copy's relative path leads to
    assert source_dir(copy, record).resolve() == decoy.resolve()
    # through a symbolic link to the fine-tuning run, its relative path is followed from where the run really is
    link = tmp_path / "latest"
    link.symlink_to(moved / "tuned" / "pendulum-ft")
    shutil.copytree(decoy, moved / "runs" / "pendulum")
    shutil.copytree(moved / "tuned" / "pendulum-ft" / "trees", moved / "runs" / "pendulum" / "trees")  # its trees
    monkeypatch.chdir(tmp_path)
    assert source_dir(link, record).resolve() == (moved / "runs" / "pendulum").resolve()


def test_holds_trees_compares_the_tree_file_with_the_recorded_digest(source, tuned, tmp_path):
    """The source run and the fine-tuning run hold the trees their record names; other kinds, a changed file, a
    missing one and one that is not JSON do not."""
    record = read_record(tuned)
    assert holds_trees(source, "multiclass", record["trees_sha256"])
    assert holds_trees(tuned, "multiclass", record["trees_sha256"])
    assert not holds_trees(source, "per-expert", record["trees_sha256"])
    assert not holds_trees(tmp_path, "multiclass", record["trees_sha256"])  # no tree file
    copy = copy_run(source, tmp_path / "copy")
    path = copy / "trees" / "multiclass.json"
    trees = json.loads(path.read_text())
    trees["max_depth"] = trees["max_depth"] + 1
    path.write_text(json.dumps(trees))
    assert not holds_trees(copy, "multiclass", record["trees_sha256"])
    path.write_text("{ not json")
    assert not holds_trees(copy, "multiclass", record["trees_sha256"])


def test_bad_input_is_refused_in_one_line_and_writes_nothing(source, tuned, tmp_path, capsys):
    dense = tmp_path / "dense"
    save_model(make_actor("sac-s", 3, 1, [-2.0], [2.0], n_experts=4), dense, "Pendulum-v1")
    no_trees = copy_run(source, tmp_path / "no-trees", skip=("trees",))
    no_checkpoint = copy_run(source, tmp_path / "no-checkpoint", skip=(CHECKPOINT_DIR,))
    one_kind = copy_run(source, tmp_path / "one-kind", skip=("oblique.json", "multiclass.json"))
    stale = copy_run(source, tmp_path / "stale")
    fidelity = json.loads((stale / "trees" / "fidelity.json").read_text())
    (stale / "trees" / "fidelity.json").write_text(json.dumps(fidelity | {"router_sha256": "0" * 64}))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep")
    committed = REPO / "benchmarks" / "results" / "runs" / "Ant-v4__smose__s0"
    cases = [
        ((str(dense), "--steps", "10"), "dense sac-s baseline"),
        ((str(no_trees), "--steps", "10"), "no per-expert trees to fine-tune under (it has no distilled trees); "
                                           "distil them first"),
        ((str(one_kind), "--steps", "10", "--tree-kind", "oblique"), "no oblique trees to fine-tune under (it has "
                                                                      "per-expert trees)"),
        ((str(no_checkpoint), "--steps", "10"), "no checkpoint (checkpoint/checkpoint.json)"),
        ((str(committed), "--steps", "10"), "no checkpoint"),
        ((str(stale), "--steps", "10"), "stale trees"),
        ((str(tuned), "--steps", "10"), "already fine-tuned under its multiclass trees"),
        ((str(source), "--steps", "10", "--out", str(busy)), "not empty"),
        ((str(source), "--steps", "10", "--out", str(source)), "would write into"),
        ((str(source), "--steps", "10", "--out", str(source / "inner")), "would write into"),
        ((str(tmp_path / "missing"), "--steps", "10"), "no such run directory"),
        ((str(source), "--steps", "0"), "expected an integer from 1"),
        ((str(source), "--steps", "-5"), "expected an integer from 1"),
        ((str(source),), "--steps N"),
        (("--resume", str(source)), "not a fine-tuning run"),
        (("--resume", str(tuned), "--tree-kind", "oblique"), "only --steps and --checkpoint-every"),
        (("--resume", str(tuned), "--update", "autograd"), "only --steps and --checkpoint-every"),
        (("--resume", str(tuned), "--select-episodes", "3"), "only --steps and --checkpoint-every"),
        ((str(source), "--steps", "10", "--select-episodes", "-1"), "expected an integer from 0"),
        ((str(source), "--steps", "10", "--update", "numpy"), "invalid choice"),
    ]
    watched = [source, tuned, busy, no_trees, no_checkpoint, one_kind, stale, committed]
    before = {path: listing(path) for path in watched}
    siblings = {path: sorted(path.parent.iterdir()) for path in (source, tmp_path, committed)}
    for argv, message in cases:
        try:
            err = refused(capsys, "finetune", *argv)
        except SystemExit as exc:  # argparse refuses bad numbers with its own exit, in one line as well
            assert exc.code == 2
            err = capsys.readouterr().err
            assert err.startswith("smose: error: ") and err.count("\n") == 1
        assert message in err, (argv, err)
    assert {path: listing(path) for path in watched} == before
    assert {path: sorted(path.parent.iterdir()) for path in siblings} == siblings


def test_a_fine_tuned_model_is_refused_without_its_own_trees(tuned, tmp_path, capsys):
    from smose.serialization import seal

    def variant(name: str) -> Path:
        return copy_run(tuned, tmp_path / name)

    edited = variant("edited")
    path = tree_file(edited, "multiclass")
    trees = json.loads(path.read_text())
    leaf = next(node for node in trees["trees"][0]["nodes"] if node["leaf"])
    leaf["probability"] = leaf["probability"][::-1]
    path.write_text(json.dumps(trees))
    missing = variant("missing")
    tree_file(missing, "multiclass").unlink()
    meta = json.loads((tuned / "model.json").read_text())
    meta.pop("content_sha256")
    old_version = variant("old-version")
    (old_version / "model.json").write_text(json.dumps(seal(meta | {"format_version": 1})))
    no_router = variant("no-router")
    arch = {k: v for k, v in meta["architecture"].items() if k != "router"}
    (no_router / "model.json").write_text(json.dumps(seal(meta | {"architecture": arch})))
    for run, message in ((edited, "not the trees this controller routes with"),
                         (missing, "missing: the model routes with these multiclass trees"),
                         (old_version, "architecture.router needs format_version 2"),
                         (no_router, "format_version 2 is a SMOSE model routed by trees")):
        with pytest.raises(SmoseError, match=message):
            load_model(run)
    assert "not the trees this controller routes with" in refused(capsys, "eval", str(edited))
    with pytest.raises(SmoseError, match="not the trees"):
        Trainer.resume(edited, steps=1500 + STEPS + 10)  # nor is it trained further under other trees
