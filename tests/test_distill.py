import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from sklearn.tree import DecisionTreeClassifier

from smose.algo.policy import SMOSEActor, make_actor
from smose.cli import main
from smose.errors import SmoseError
from smose.evaluate import EVAL_SEED_OFFSET, evaluate
from smose.interpret.distill import (
    DAGGER_SEED_OFFSET,
    TreeRouter,
    collect_states,
    distill,
    fidelity_multiclass,
    fidelity_per_expert,
    fit_multiclass,
    fit_per_expert,
    fit_with_dagger,
    load_trees,
    router_features,
    rules_text,
)
from smose.serialization import load_model, save_model, write_json
from smose.tasks.envs import make_env

ENV_ID = "Synthetic-v0"  # not a registered env: generic feature names obs[i]


def banded_actor() -> SMOSEActor:
    """A router with known axis-aligned boundaries on s0: expert 0 iff s0 < -0.5, expert 2 iff s0 > 0.5, else 1.

    Logits z0 = -s0 - 0.75, z1 = 0.5 s0, z2 = 2 s0 - 0.75 cross exactly at s0 = ±0.5. Column 1 adds the same
    0.7·s1 to every logit, so it never changes the choice but gives each tree a distracting feature.
    """
    actor = SMOSEActor(4, 2, [-1, -1], [1, 1], n_experts=3)
    with torch.no_grad():
        actor.router.weight.copy_(torch.tensor([[-1.0, 0.7, 0, 0], [0.5, 0.7, 0, 0], [2.0, 0.7, 0, 0]]))
        actor.router.bias.copy_(torch.tensor([-0.75, 0.0, -0.75]))
    return actor


def random_actor(seed: int, n_obs: int = 6, n_experts: int = 4) -> SMOSEActor:
    torch.manual_seed(seed)
    return SMOSEActor(n_obs, 2, [-1, -1], [1, 1], n_experts=n_experts)


def sample(actor: SMOSEActor, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n, actor.n_obs)).astype(np.float32)
    states[:, 0] = rng.uniform(-1.5, 1.5, size=n)
    labels = actor.route(torch.from_numpy(states)).argmax(dim=-1).numpy()
    return states, labels


def test_trees_recover_a_known_linear_boundary():
    actor = banded_actor()
    states, labels = sample(actor, 4000, seed=0)
    assert set(np.bincount(labels, minlength=3) > 300) == {True}  # every band is populated
    test_states, test_labels = sample(actor, 4000, seed=1)

    trees = fit_per_expert(actor, states, labels, depth=2, env_id=ENV_ID)
    fidelity = fidelity_per_expert(TreeRouter(trees), trees, test_states, test_labels)
    assert fidelity["agreement"] > 0.99
    for tree in fidelity["trees"]:
        assert tree["accuracy"] > 0.99 and tree["precision"] > 0.98 and tree["recall"] > 0.98
    # Experts 0 and 2 need one split on s0 at the true boundary, stated on the raw state variable.
    for m, op, boundary in [(0, ">=", -0.5), (2, "<=", 0.5)]:
        root = trees["trees"][m]["nodes"][0]
        assert root["feature"] == 0 and root["feature_name"] == "obs[0]" and root["state_op"] == op
        assert abs(root["state_threshold"] - boundary) < 0.03
        assert math.isclose(root["threshold"], actor.router.weight[m, 0].item() * root["state_threshold"], rel_tol=1e-9)

    multi = fit_multiclass(actor, states, labels, depth=2, env_id=ENV_ID)
    fidelity = fidelity_multiclass(TreeRouter(multi), multi, test_states, test_labels)
    assert fidelity["agreement"] > 0.99
    splits = sorted(n["threshold"] for n in multi["trees"][0]["nodes"] if not n["leaf"])
    assert [n["feature"] for n in multi["trees"][0]["nodes"] if not n["leaf"]] == [0, 0]
    assert abs(splits[0] + 0.5) < 0.03 and abs(splits[1] - 0.5) < 0.03

    # One split cannot isolate the middle band: the depth-1 multiclass tree must lose one expert entirely.
    shallow = fit_multiclass(actor, states, labels, depth=1, env_id=ENV_ID)
    assert fidelity_multiclass(TreeRouter(shallow), shallow, test_states, test_labels)["agreement"] < 0.8


def longest_path(nodes: list[dict], i: int = 0) -> int:
    node = nodes[i]
    return 0 if node["leaf"] else 1 + max(longest_path(nodes, node["left"]), longest_path(nodes, node["right"]))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_max_depth_is_honoured(depth):
    actor = random_actor(seed=3)  # oblique boundaries: trees grow as deep as they are allowed
    states, labels = sample(actor, 3000, seed=0)
    for fit in (fit_per_expert, fit_multiclass):
        trees = fit(actor, states, labels, depth, ENV_ID)
        assert trees["max_depth"] == depth
        depths = [longest_path(t["nodes"]) for t in trees["trees"]]
        assert max(depths) == depth and [t["depth"] for t in trees["trees"]] == depths
        assert all(t["n_leaves"] <= 2**depth for t in trees["trees"])
        leaves = TreeRouter(trees).leaf_ids(states)
        assert leaves.shape == (len(states), len(trees["trees"]))


def test_tree_router_matches_sklearn_and_breaks_ties_to_the_lowest_expert():
    actor = random_actor(seed=4)
    states, labels = sample(actor, 3000, seed=0)
    trees = fit_per_expert(actor, states, labels, depth=3, env_id=ENV_ID)
    router = TreeRouter(trees)
    test_states, _ = sample(actor, 2000, seed=1)
    features = router_features(actor.router.weight.detach().numpy(), test_states)
    yes = router.yes_probability(test_states)
    for m in range(actor.n_experts):
        model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(
            router_features(actor.router.weight.detach().numpy(), states)[m], labels == m)
        expected = model.predict_proba(features[m])[:, list(model.classes_).index(True)]
        np.testing.assert_allclose(yes[:, m], expected, rtol=0, atol=1e-12)
    best = yes.max(axis=1, keepdims=True)
    first_best = np.array([np.flatnonzero(row == b[0])[0] for row, b in zip(yes, best)])
    np.testing.assert_array_equal(router.predict(test_states), first_best)
    routed = router(torch.from_numpy(test_states))
    assert routed.dtype == torch.long and routed.shape == (len(test_states),)


def test_tree_routed_policy_equals_the_neural_one_where_the_trees_agree():
    actor = random_actor(seed=5)
    states, labels = sample(actor, 3000, seed=0)
    trees = fit_per_expert(actor, states, labels, depth=1, env_id=ENV_ID)  # deliberately imperfect
    obs = torch.from_numpy(sample(actor, 1000, seed=1)[0])
    neural_action, neural_expert = actor.act(obs)
    tree_expert = TreeRouter(trees)(obs)
    tree_action = actor.act_with_experts(obs, tree_expert)
    agree = tree_expert == neural_expert
    assert 0 < int(agree.sum()) < len(obs)  # both cases occur
    torch.testing.assert_close(tree_action[agree], neural_action[agree], rtol=0, atol=0)
    assert not torch.isclose(tree_action[~agree], neural_action[~agree]).all(dim=1).any()


@pytest.mark.parametrize("fit", [fit_per_expert, fit_multiclass])
def test_tree_json_round_trips(tmp_path, fit):
    actor = random_actor(seed=6)
    states, labels = sample(actor, 2000, seed=0)
    trees = fit(actor, states, labels, 3, ENV_ID)
    path = tmp_path / "trees.json"
    write_json(path, trees)
    loaded = load_trees(path, actor, ENV_ID)
    assert loaded == trees
    test_states, _ = sample(actor, 2000, seed=1)
    np.testing.assert_array_equal(TreeRouter(loaded).leaf_ids(test_states), TreeRouter(trees).leaf_ids(test_states))
    np.testing.assert_array_equal(TreeRouter(loaded).predict(test_states), TreeRouter(trees).predict(test_states))
    text = rules_text(loaded)
    assert "if obs[" in text and "else:" in text


def _corruptions():
    def set_node(key, value, tree=0, node=0):
        def apply(d):
            d["trees"][tree]["nodes"][node][key] = value
        return apply

    def put(key, value):
        return lambda d: d.__setitem__(key, value)

    return [
        (put("format", "something-else"), "not a smose tree file"),
        (put("format_version", 2), "version 2 is not supported"),
        (put("kind", "forest"), "unknown tree kind"),
        (set_node("feature", 99), "feature 99, outside"),
        (set_node("threshold", float("nan")), "non-finite"),
        (set_node("threshold", "0.5"), "non-numeric threshold"),
        (set_node("left", 0), "invalid left child"),
        (set_node("probability", [0.5]), "probability must be"),
        (lambda d: d["trees"].pop(), "hold 4 tree(s), found 3"),
        (put("feature_names", ["a"]), "feature_names must be"),
        (lambda d: d["router_weight"][0].__setitem__(0, 123.0), "router_weight differs"),
        (put("router_sha256", "0" * 64), "different model"),
        (put("max_depth", 1), "more than max_depth"),
    ]


@pytest.mark.parametrize("corrupt,message", _corruptions())
def test_loader_refuses_corrupt_or_mismatched_files(tmp_path, corrupt, message):
    actor = random_actor(seed=7)
    states, labels = sample(actor, 1000, seed=0)
    trees = json.loads(json.dumps(fit_per_expert(actor, states, labels, 3, ENV_ID)))
    corrupt(trees)
    path = tmp_path / "per-expert.json"
    write_json(path, trees)
    with pytest.raises(SmoseError, match=re.escape(message)) as info:
        load_trees(path, actor, ENV_ID)
    assert str(path) in str(info.value)


def test_loader_refuses_unreadable_files_and_other_models(tmp_path):
    actor = random_actor(seed=8)
    states, labels = sample(actor, 1000, seed=0)
    path = tmp_path / "multiclass.json"
    write_json(path, fit_multiclass(actor, states, labels, 2, ENV_ID))
    with pytest.raises(SmoseError, match="different model"):
        load_trees(path, random_actor(seed=9))
    with pytest.raises(SmoseError, match="6 observations and 4 experts, the model has 6 and 3"):
        load_trees(path, random_actor(seed=8, n_experts=3))
    with pytest.raises(SmoseError, match="distilled on Synthetic-v0"):
        load_trees(path, actor, "Hopper-v5")
    path.write_text(path.read_text()[:100])
    with pytest.raises(SmoseError, match="not valid JSON"):
        load_trees(path)
    with pytest.raises(SmoseError, match="missing tree file"):
        load_trees(tmp_path / "absent.json")


def test_cli_distill_then_eval_with_tree_router(hopper_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(hopper_run, run_dir)  # the session fixture is shared: never write into it
    neural_eval = (run_dir / "eval.json").read_text()
    assert main(["eval", str(run_dir), "--router", "tree"]) == 2
    assert "no per-expert trees distilled yet" in capsys.readouterr().err

    distill_args = ["--depth", "2", "--episodes", "3", "--eval-episodes", "2", "--seed", "1"]
    assert main(["distill", str(run_dir), *distill_args]) == 0
    out = capsys.readouterr().out
    assert "per-expert trees: routing agreement" in out and "multiclass tree:" in out and "ratio" in out
    trees_dir = run_dir / "trees"
    for name in ("per-expert.json", "per-expert.txt", "multiclass.json", "multiclass.txt", "fidelity.json"):
        assert (trees_dir / name).is_file(), name
    fidelity = json.loads((trees_dir / "fidelity.json").read_text())
    assert fidelity["depth"] == 2 and fidelity["episodes"] == 3 and fidelity["train_states"] > 0
    assert 0 <= fidelity["per-expert"]["agreement"] <= 1 and len(fidelity["per-expert"]["trees"]) == 4
    returns = fidelity["returns"]
    assert returns["neural"]["episodes"] == 2
    assert returns["ratio"]["per-expert"] == pytest.approx(returns["per-expert"]["mean"] / returns["neural"]["mean"])
    per_expert = load_trees(trees_dir / "per-expert.json")
    assert per_expert["feature_names"][1] == "torso angle" and all(t["depth"] <= 2 for t in per_expert["trees"])
    rules = (trees_dir / "per-expert.txt").read_text()
    assert all(f"expert {m}  (YES = the router picks expert {m}" in rules for m in range(4))
    for tree in per_expert["trees"]:
        for node in tree["nodes"]:
            if not node["leaf"]:
                assert f"if {node['feature_name']} {node['state_op']} " in rules

    for kind in ("per-expert", "multiclass"):
        eval_args = ["--router", "tree", "--tree-kind", kind, "--episodes", "2", "--seed", "1"]
        assert main(["eval", str(run_dir), *eval_args]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["router"] == "tree" and result["tree_kind"] == kind
        # Same seeds as distill's return comparison, so the tree-routed return is reproduced exactly.
        assert result["returns"] == returns[kind]["returns"]
        assert result["router_agreement"] == fidelity[kind]["closed_loop_agreement"]
        assert json.loads((trees_dir / f"eval-{kind}.json").read_text())["mean"] == result["mean"]
    assert (run_dir / "eval.json").read_text() == neural_eval  # the neural evaluation is left alone

    assert main(["distill", str(run_dir), "--kind", "multiclass", "--episodes", "1", "--eval-episodes", "1"]) == 0
    assert not (trees_dir / "per-expert.json").exists()  # stale trees of the other kind are removed
    assert main(["eval", str(run_dir), "--router", "tree"]) == 2
    assert "run `smose distill" in capsys.readouterr().err


def test_distill_refuses_bad_input_and_dense_baselines(hopper_run, tmp_path, capsys):
    for args in (["--depth", "0"], ["--episodes", "0"], ["--kind", "forest"]):
        with pytest.raises(SystemExit) as info:
            main(["distill", str(hopper_run), *args])
        assert info.value.code == 2
    with pytest.raises(SmoseError, match="depth must be an integer >= 1"):
        distill(hopper_run, depth=0)
    with pytest.raises(SmoseError, match="episodes must be an integer >= 1"):
        distill(hopper_run, episodes=0)

    dense_dir = tmp_path / "dense"
    save_model(make_actor("sac-s", 11, 3, [-1] * 3, [1] * 3), dense_dir, "Hopper-v5")
    capsys.readouterr()
    assert main(["distill", str(dense_dir)]) == 2
    assert "dense sac-s baseline" in capsys.readouterr().err
    assert main(["eval", str(dense_dir), "--router", "tree"]) == 2
    assert "dense sac-s baseline" in capsys.readouterr().err
    assert main(["distill", str(tmp_path / "absent")]) == 2
    assert "no such run directory" in capsys.readouterr().err


class ConstantRouter:
    """Routes every state to one expert."""

    def __init__(self, expert: int):
        self.expert = expert

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0],), self.expert, dtype=torch.long)


def test_tree_driven_rollouts_are_labelled_by_the_router(hopper_run):
    actor, meta = load_model(hopper_run)
    env = make_env(meta["env_id"])
    router = ConstantRouter(1)
    states, labels = collect_states(actor, env, 2, seed=3, router=router)
    # The states are those reached when the router's choice is replaced (replayed by hand), the labels the router's.
    replay = []
    for episode in range(2):
        obs, _ = env.reset(seed=3 + episode)
        done = False
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)
            replay.append(obs_t[0].numpy())
            obs, _, terminated, truncated, _ = env.step(actor.act_with_experts(obs_t, router(obs_t))[0].numpy())
            done = terminated or truncated
    np.testing.assert_array_equal(states, np.stack(replay))
    np.testing.assert_array_equal(labels, actor.route(torch.from_numpy(states)).argmax(dim=-1).numpy())
    # Closed-loop agreement: the share of driven steps on which the replacement chose what the router would have.
    result = evaluate(actor, env, 2, seed=0, router=router)
    _, chosen = collect_states(actor, env, 2, seed=EVAL_SEED_OFFSET, router=router)  # evaluate's reset seeds
    assert result["router_agreement"] == pytest.approx(np.mean(chosen == 1))
    own = evaluate(actor, env, 2, seed=0, router=lambda obs: actor.route(obs).argmax(dim=-1))
    assert own["router_agreement"] == 1.0 and "router_agreement" not in evaluate(actor, env, 1, seed=0)
    env.close()


def test_dagger_rounds_add_the_states_the_trees_reach(hopper_run):
    actor, meta = load_model(hopper_run)
    env = make_env(meta["env_id"])
    states, labels = collect_states(actor, env, 2, seed=0)
    trees, all_states, all_labels, added = fit_with_dagger(actor, env, "per-expert", states, labels, 2,
                                                           meta["env_id"], rounds=2, episodes=2, seed=0)
    assert len(added) == 2 and len(all_labels) == len(labels) + sum(added)
    np.testing.assert_array_equal(all_states[:len(labels)], states)
    # Round r rolled out the trees of round r - 1 from its own reset seeds; the final trees are fitted on it all.
    first = fit_per_expert(actor, states, labels, 2, meta["env_id"])
    round_one = collect_states(actor, env, 2, seed=DAGGER_SEED_OFFSET, router=TreeRouter(first))
    np.testing.assert_array_equal(all_states[len(labels):len(labels) + added[0]], round_one[0])
    np.testing.assert_array_equal(all_labels[len(labels):len(labels) + added[0]], round_one[1])
    assert trees == fit_per_expert(actor, all_states, all_labels, 2, meta["env_id"])
    env.close()


def test_distill_with_dagger_records_its_rounds(hopper_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(hopper_run, run_dir)
    args = ["--depth", "2", "--episodes", "2", "--eval-episodes", "2", "--dagger", "2"]
    assert main(["distill", str(run_dir), *args]) == 0
    out = capsys.readouterr().out
    assert "and 2 DAgger rounds of as many" in out and "closed loop" in out
    fidelity = json.loads((run_dir / "trees" / "fidelity.json").read_text())
    assert fidelity["dagger_rounds"] == 2
    for kind in ("per-expert", "multiclass"):
        assert len(fidelity[kind]["dagger_states"]) == 2 and min(fidelity[kind]["dagger_states"]) > 0
        assert fidelity[kind]["closed_loop_agreement"] == fidelity["returns"][kind]["router_agreement"]
        assert 0.0 <= fidelity[kind]["closed_loop_agreement"] <= 1.0
        assert fidelity[kind]["fit_seconds"] > 0  # the fit with its DAgger rollouts, timed
    with pytest.raises(SystemExit) as info:
        main(["distill", str(run_dir), "--dagger", "-1"])
    assert info.value.code == 2
    with pytest.raises(SmoseError, match="dagger must be an integer >= 0"):
        distill(run_dir, dagger=-1)
