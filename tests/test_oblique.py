"""Oblique trees fitted with CMA-ES (`smose distill --kind oblique`): fitting, file format, routing, CLI."""

import io
import itertools
import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
from sklearn.tree import DecisionTreeClassifier

from smose.algo.policy import SMOSEActor
from smose.cli import main
from smose.errors import SmoseError
from smose.experiments.table import Row, TreeRecord, _trees_table
from smose.interpret import oblique
from smose.interpret.distill import (
    TreeRouter,
    distill,
    distill_settings,
    fit_oblique,
    load_trees,
    rules_text,
    stale_trees,
)
from smose.serialization import write_json

ENV_ID = "Synthetic-v0"  # not a registered env: generic feature names obs[i]


def actor_for(n_obs: int, n_experts: int, seed: int = 0) -> SMOSEActor:
    torch.manual_seed(seed)
    return SMOSEActor(n_obs, 2, [-1, -1], [1, 1], n_experts=n_experts)


def diagonal_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Expert 1 iff s0 + s1 > 0 (s0 in other units: scale 10), a third feature is noise."""
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n, 3)).astype(np.float32) * np.float32([10.0, 1.0, 1.0]) + np.float32([0, 0, 5])
    labels = (states[:, 0] / 10 + states[:, 1] > 0).astype(np.int64)
    return states, labels


def test_cma_es_finds_an_oblique_boundary_no_axis_aligned_split_can():
    states, labels = diagonal_data(600, seed=0)
    test_states, test_labels = diagonal_data(2000, seed=1)
    cart = DecisionTreeClassifier(max_depth=1, random_state=0).fit(states, labels)
    assert np.mean(cart.predict(test_states) == test_labels) < 0.85  # one axis-aligned split cannot do it

    actor = actor_for(3, 2)
    # the labels are not this (random) actor's router's choices: the search from zeros, as the authors
    trees = fit_oblique(actor, states, labels, depth=1, env_id=ENV_ID, iterations=40, seed=0, start="zeros")
    assert np.mean(TreeRouter(trees).predict(test_states) == test_labels) > 0.97
    root = trees["trees"][0]["nodes"][0]
    weights, threshold = np.asarray(root["state_weights"]), root["state_threshold"]
    # The hyperplane found is s0/10 + s1 = 0 (up to scale and sign), with little weight on the noise.
    direction = weights / np.abs(weights[1])
    assert direction[0] == pytest.approx(np.sign(direction[1]) * 0.1, abs=0.02)
    assert abs(direction[2]) < 0.1 and abs(threshold / weights[1]) < 0.1
    leaves = [n for n in trees["trees"][0]["nodes"] if n["leaf"]]
    assert sorted(int(np.argmax(n["probability"])) for n in leaves) == [0, 1]  # majority vote names both experts


def fitted_tree(depth: int = 2, iterations: int = 8) -> tuple[SMOSEActor, dict, np.ndarray]:
    actor = actor_for(5, 4, seed=3)
    rng = np.random.default_rng(0)
    states = (rng.normal(size=(1500, 5)) * [1, 2, 0.1, 5, 1] + [0, 1, 0, -3, 2]).astype(np.float32)
    labels = actor.route(torch.from_numpy(states)).argmax(dim=-1).numpy()
    return actor, fit_oblique(actor, states, labels, depth, ENV_ID, iterations), states


def test_oblique_json_round_trips_and_reads_as_rules(tmp_path):
    actor, trees, states = fitted_tree()
    path = tmp_path / "oblique.json"
    write_json(path, trees)
    loaded = load_trees(path, actor, ENV_ID)
    assert loaded == trees
    assert loaded["input"] == "standardised-state" and loaded["trees"][0]["depth"] == 2
    np.testing.assert_array_equal(TreeRouter(loaded).leaf_ids(states), TreeRouter(trees).leaf_ids(states))
    text = rules_text(loaded)
    inner = [n for n in loaded["trees"][0]["nodes"] if not n["leaf"]]
    assert text.count("if ") == len(inner) == 3 and text.count("# weight per standard deviation:") == 3
    assert "obs[" in text and "expert " in text and "<=" in text
    # A node's strongest term (by weight per standard deviation) is the first named in its test.
    root = inner[0]
    strongest = int(np.argmax(np.abs(root["weights"])))
    first_test = next(line for line in text.splitlines() if line.startswith("if "))
    assert first_test.split("·", 1)[1].startswith(f"obs[{strongest}]")


def test_leaf_counts_are_those_of_the_library_walk():
    actor, trees, states = fitted_tree()
    labels = actor.route(torch.from_numpy(states)).argmax(dim=-1).numpy()
    leaves = TreeRouter(trees).leaf_ids(states)[:, 0]
    for node in trees["trees"][0]["nodes"]:
        if node["leaf"]:
            assert node["counts"] == np.bincount(labels[leaves == node["id"]], minlength=4).tolist()


def test_physical_units_rule_decides_as_the_standardised_one():
    actor, trees, _ = fitted_tree()
    rng = np.random.default_rng(7)
    probe = (rng.normal(size=(20000, 5)) * [3, 6, 0.3, 15, 3]).astype(np.float32)  # wider than the training data
    router = TreeRouter(trees)
    library = router.go_left(probe)[0]
    mean = np.asarray(trees["standardisation"]["mean"])
    scale = np.asarray(trees["standardisation"]["scale"])
    checked = 0
    for node in trees["trees"][0]["nodes"]:
        if node["leaf"]:
            continue
        physical = probe.astype(np.float64) @ np.asarray(node["state_weights"])
        standardised = ((probe - mean) / scale) @ np.asarray(node["weights"], dtype=np.float64) + node["bias"]
        clear = np.abs(standardised) > 1e-4  # a float32 decision this close to the plane may round either way
        assert clear.mean() > 0.999
        np.testing.assert_array_equal((physical <= node["state_threshold"])[clear], library[clear, node["id"]])
        checked += 1
    assert checked == 3


def test_node_activations_standardise_in_float32_and_sum_exact_products_in_float64_in_index_order():
    rng = np.random.default_rng(1)
    obs, mean = rng.normal(size=(50, 7)).astype(np.float32), rng.normal(size=7).astype(np.float32)
    scale = rng.uniform(0.1, 3, size=7).astype(np.float32)
    weight, bias = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    got = oblique.node_activations(obs, mean, scale, weight, bias)
    assert got.dtype == np.float64
    for b in range(50):
        for n in range(3):
            total = float(bias[n])
            for f in range(7):
                x = np.float32(np.float32(obs[b, f] - mean[f]) / scale[f])
                total = total + float(weight[n, f]) * float(x)  # Python floats: IEEE double, one op at a time
            assert got[b, n] == total
    # Summed in another order the last bits differ somewhere: the order is part of the definition.
    reversed_order = oblique.node_activations(obs[:, ::-1], mean[::-1], scale[::-1], weight[:, ::-1], bias)
    assert (reversed_order != got).any()


def _corrupt(trees: dict, change) -> dict:
    copy = json.loads(json.dumps(trees))
    change(copy)
    return copy


@pytest.mark.parametrize("change,message", [
    (lambda t: t["trees"][0]["nodes"][0]["weights"].pop(), "needs 5 finite weights and"),
    (lambda t: t["trees"][0]["nodes"][0].update(bias="x"), "finite bias"),
    (lambda t: t["trees"][0]["nodes"][0].pop("state_threshold"), "finite state_threshold"),
    (lambda t: t["standardisation"]["scale"].__setitem__(0, 0.0), "finite positive scales"),
    (lambda t: t.pop("standardisation"), "standardisation must hold"),
])
def test_loader_refuses_corrupt_oblique_files(tmp_path, change, message):
    actor, trees, _ = fitted_tree(depth=1, iterations=2)
    path = tmp_path / "oblique.json"
    write_json(path, _corrupt(trees, change))
    with pytest.raises(SmoseError, match=message):
        load_trees(path, actor, ENV_ID)


def test_cli_oblique_distill_eval_explain_and_export(pendulum_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(pendulum_run, run_dir)  # the session fixture is shared: never write into it
    args = ["--kind", "oblique", "--depth", "2", "--episodes", "2", "--eval-episodes", "1", "--dagger", "1",
            "--cma-iterations", "3", "--seed", "1"]
    assert main(["distill", str(run_dir), *args]) == 0
    out = capsys.readouterr().out
    assert "oblique tree:" in out and "routing agreement" in out
    trees_dir = run_dir / "trees"
    fidelity = json.loads((trees_dir / "fidelity.json").read_text())
    assert fidelity["cma_iterations"] == 3 and fidelity["dagger_rounds"] == 1 and fidelity["cma_start"] == "router"
    assert fidelity["oblique"]["dagger_states"] == [400]  # one round of two 200-step episodes
    trees = load_trees(trees_dir / "oblique.json")
    assert trees["feature_names"] == ["cos θ", "sin θ", "θ velocity"] and trees["cma"]["population"] == 64
    assert trees["cma"]["start"] == "router"
    assert stale_trees(run_dir) is None
    rules = (trees_dir / "oblique.txt").read_text()
    assert "oblique tree" in rules and "θ" in rules and "weight per standard deviation" in rules

    eval_args = ["--router", "tree", "--tree-kind", "oblique", "--episodes", "1", "--seed", "1"]
    assert main(["eval", str(run_dir), *eval_args]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tree_kind"] == "oblique"
    assert result["returns"] == fidelity["returns"]["oblique"]["returns"]  # the same episodes as distill's
    assert result["router_agreement"] == fidelity["oblique"]["closed_loop_agreement"]

    assert main(["explain", str(run_dir), "--episodes", "1", "--no-distill"]) == 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "Oblique tree" in report and rules.splitlines()[2] in report

    report_html = (run_dir / "report" / "index.html").read_text()
    names = trees["feature_names"]
    inner = [n for n in trees["trees"][0]["nodes"] if not n["leaf"]]
    # the table of terms names each test's strongest state variable with its weight per unit and its threshold
    strongest = names[int(np.argmax(np.abs(inner[0]["weights"])))]
    assert "<= threshold" in report and strongest in report
    assert f"{inner[0]['state_threshold']:.4g}" in report_html

    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "python", "--router", "tree", "--tree-kind", "oblique",
                 "--out", str(tmp_path / "policy.py")]) == 0
    assert "route(obs)" in (tmp_path / "policy.py").read_text()


def test_cli_distills_from_the_groups_start_and_records_it(pendulum_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(pendulum_run, run_dir)
    assert main(["distill", str(run_dir), "--kind", "oblique", "--depth", "2", "--episodes", "2",
                 "--eval-episodes", "1", "--cma-iterations", "3", "--cma-start", "groups", "--quiet"]) == 0
    fidelity = json.loads((run_dir / "trees" / "fidelity.json").read_text())
    trees = load_trees(run_dir / "trees" / "oblique.json")
    assert fidelity["cma_start"] == "groups" and distill_settings(fidelity)["cma_start"] == "groups"
    assert trees["cma"]["start"] == "groups" and trees["cma"]["sigma0"] == oblique.CMA_SIGMA0["groups"]
    assert stale_trees(run_dir) is None
    assert main(["eval", str(run_dir), "--router", "tree", "--tree-kind", "oblique", "--episodes", "1"]) == 0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_the_fits_progress_bar_shows_on_a_terminal_unless_quiet(pendulum_run, tmp_path, monkeypatch, quiet):
    run_dir = tmp_path / "run"
    shutil.copytree(pendulum_run, run_dir)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["--kind", "oblique", "--depth", "1", "--episodes", "1", "--eval-episodes", "1", "--cma-iterations", "2"]
    assert main(["distill", str(run_dir), *args, *(["--quiet"] if quiet else [])]) == 0
    assert ("oblique tree (200 states)" in terminal.getvalue()) is not quiet


def test_oblique_bad_input_is_refused(pendulum_run, capsys):
    assert main(["distill", str(pendulum_run), "--kind", "oblique", "--depth", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smose: error: oblique trees have depth <= 3") and err.count("\n") == 1
    assert main(["distill", str(pendulum_run), "--kind", "all", "--depth", "5"]) == 2
    assert "oblique trees have depth <= 3" in capsys.readouterr().err
    assert not (pendulum_run / "trees").exists()
    with pytest.raises(SmoseError, match="unknown tree kind 'forest'"):
        distill(pendulum_run, kind="forest")
    with pytest.raises(SmoseError, match="cma_iterations must be an integer >= 1"):
        distill(pendulum_run, kind="oblique", cma_iterations=0)
    with pytest.raises(SmoseError, match="unknown CMA-ES start 'ones'; expected one of router, groups, zeros"):
        distill(pendulum_run, kind="oblique", cma_start="ones")
    for argv in (["distill", str(pendulum_run), "--kind", "forest"],
                 ["distill", str(pendulum_run), "--cma-iterations", "0"],
                 ["distill", str(pendulum_run), "--cma-start", "ones"],
                 ["eval", str(pendulum_run), "--router", "tree", "--tree-kind", "forest"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert main(["eval", str(pendulum_run), "--router", "tree", "--tree-kind", "oblique"]) == 2
    assert "no oblique trees distilled yet" in capsys.readouterr().err


def test_settings_of_an_oblique_distillation_remake_it():
    base = {"depth": 3, "dagger_rounds": 2, "episodes": 5, "eval_episodes": 4, "seed": 1, "mode": "gated"}
    assert distill_settings(base | {"oblique": {}, "cma_iterations": 7, "cma_start": "router"}) == {
        "depth": 3, "dagger": 2, "kind": "oblique", "episodes": 5, "eval_episodes": 4, "seed": 1, "mode": "gated",
        "cma_iterations": 7, "cma_start": "router"}
    # trees made before the start was recorded all started from zeros
    assert distill_settings(base | {"oblique": {}, "cma_iterations": 7})["cma_start"] == "zeros"
    every = base | {"per-expert": {}, "multiclass": {}, "oblique": {}, "cma_iterations": 7}
    assert distill_settings(every)["kind"] == "all"
    assert distill_settings(base | {"per-expert": {}, "multiclass": {}})["kind"] == "both"
    assert "cma_iterations" not in distill_settings(base | {"multiclass": {}})


def router_data(n_obs: int, n_experts: int, n: int, seed: int) -> tuple[SMOSEActor, np.ndarray, np.ndarray]:
    """States in several units and the choices of a random linear router over them."""
    actor = actor_for(n_obs, n_experts, seed=seed)
    rng = np.random.default_rng(seed)
    states = (rng.normal(size=(n, n_obs)) * rng.uniform(0.1, 5, n_obs) + rng.normal(size=n_obs)).astype(np.float32)
    return actor, states, actor.choose(torch.from_numpy(states)).numpy()


def test_router_boundaries_are_where_two_logits_are_equal():
    actor, states, _ = router_data(4, 5, 500, seed=1)
    mean, scale = oblique.standardisation(states)
    weight, bias = oblique.router_boundaries(actor.router.weight.detach().numpy(), actor.router.bias.detach().numpy(),
                                             mean, scale)
    assert weight.shape == (10, 4) and np.allclose(np.linalg.norm(weight, axis=1), 1.0)
    logits = actor.decision_logits(torch.from_numpy(states)).numpy()
    x = (states.astype(np.float64) - mean) / scale
    side = x @ weight.T + bias
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    for p, (i, j) in enumerate(pairs):
        difference = logits[:, j] - logits[:, i]
        # z_j - z_i up to a positive factor (the norm): <= 0, left, where the router prefers i (ties: i, the lower)
        np.testing.assert_allclose(side[:, p] * np.linalg.norm(difference) / np.linalg.norm(side[:, p]), difference,
                                   rtol=1e-6, atol=1e-9)
    # two experts with the same row of Θ: no direction, and the bias alone sends every state to the preferred one
    theta = np.array([[1.0, 2.0], [1.0, 2.0]])
    weight, bias = oblique.router_boundaries(theta, np.array([0.5, -0.5]), np.zeros(2), np.ones(2))
    assert np.all(weight == 0) and bias[0] < 0  # z_0 > z_1 everywhere: every state left, to expert 0


def labelled_right(go_left: np.ndarray, labels: np.ndarray, n_classes: int, plan: tuple[int, ...], depth: int) -> int:
    """States a complete tree labels right with majority-vote leaves, its splits given in pre-order (the library's
    own walk of a complete tree)."""
    from smose.interpret.tree_router import descend

    left, right = oblique.complete_tree(depth)
    internal = np.flatnonzero(left >= 0)
    goes = np.zeros((len(labels), len(left)), dtype=bool)
    goes[:, internal] = go_left[:, list(plan)]
    return int(oblique.leaf_classes(descend(goes, left, right), labels, len(left), n_classes).max(axis=1).sum())


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_a_generations_loss_at_once_is_each_trees_loss(depth):
    """misrouted_many (the fit's fast path: one product for all trees, a table of leaves, one count per chunk) gives
    misrouted's numbers for every tree of a generation, over states in several chunks of products."""
    rng = np.random.default_rng(depth)
    n_states, n_obs, n_classes = 2 * oblique.LOSS_CHUNK + 123, 5, 4
    x = np.concatenate([rng.normal(size=(n_states, n_obs)), np.ones((n_states, 1))], axis=1).astype(np.float32)
    labels = 2 * (x[:, 0] > 0) + (x[:, 1] > 0)  # which trees route them right depends on their hyperplanes
    labels = np.where(rng.random(n_states) < 0.1, rng.integers(0, n_classes, n_states), labels)
    left, right = oblique.complete_tree(depth)
    params = rng.normal(size=(16, 2**depth - 1, n_obs + 1))
    params[0] = 0.0  # every node sends every state left: one leaf holds them all
    params[1] = 0.0
    params[1, 0, 0] = 1.0  # the root splits on the first feature's sign, every other node sends left
    many = oblique.misrouted_many(x, labels, params, left, right, n_classes)
    assert many.tolist() == [oblique.misrouted(x, labels, p, left, right, n_classes) for p in params]
    assert many[0] == 1 - np.bincount(labels).max() / n_states
    negative = x[:, 0] <= 0
    assert many[1] == 1 - (np.bincount(labels[negative]).max() + np.bincount(labels[~negative]).max()) / n_states
    assert len(set(many.tolist())) > 8  # the trees differ, and so do their losses
    with pytest.raises(ValueError, match="internal nodes"):
        oblique.misrouted_many(x, labels, params[:, :1], *oblique.complete_tree(depth + 1), n_classes)


def test_a_generations_loss_takes_the_same_memory_for_many_states():
    """misrouted_many counts chunk by chunk: a generation over 16 chunks of states allocates about what one over 2
    does (a whole-array count would take 8 times as much: 64 trees × the states in int64, several times)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    left, right = oblique.complete_tree(3)
    params = rng.normal(size=(64, 7, 11))

    def peak(n_states: int) -> int:
        x = np.concatenate([rng.normal(size=(n_states, 10)), np.ones((n_states, 1))], axis=1).astype(np.float32)
        labels = rng.integers(0, 8, n_states)
        if tracemalloc.is_tracing():
            pytest.skip("tracemalloc is already on (e.g. PYTHONTRACEMALLOC): the peak would include other memory")
        tracemalloc.start()
        try:
            oblique.misrouted_many(x, labels, params, left, right, 8)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    few, many = peak(2 * oblique.LOSS_CHUNK), peak(16 * oblique.LOSS_CHUNK)
    assert many < 1.5 * few, (few, many)
    assert many < 64 * 16 * oblique.LOSS_CHUNK * 8  # less than one int64 value per tree and state


@pytest.mark.parametrize("depth,n_splits,seed", [(2, 6, 0), (2, 6, 1), (2, 5, 2), (3, 3, 3), (3, 3, 4)])
def test_boundary_tree_search_finds_the_best_tree_over_its_splits(depth, n_splits, seed):
    rng = np.random.default_rng(seed)
    go_left = rng.random((300, n_splits)) < rng.uniform(0.2, 0.8, n_splits)
    labels = rng.integers(0, 4, 300)
    plan, correct = oblique.boundary_tree(go_left, labels, 4, depth=depth)
    # every assignment of splits to the internal nodes tried: the best, and the first best in that order (ties: lower)
    scores = {p: labelled_right(go_left, labels, 4, p, depth)
              for p in itertools.product(range(n_splits), repeat=2**depth - 1)}
    assert correct == max(scores.values()) == labelled_right(go_left, labels, 4, tuple(plan), depth)
    assert tuple(plan) == min(p for p, score in scores.items() if score == correct)
    # a beam narrower than the splits searches fewer trees: never better, and its plan labels as many as it says
    narrow_plan, narrow = oblique.boundary_tree(go_left, labels, 4, depth=depth, beam=2)
    assert narrow <= correct and narrow == labelled_right(go_left, labels, 4, tuple(narrow_plan), depth)


def test_boundary_tree_needs_a_split():
    with pytest.raises(ValueError, match="at least one split"):
        oblique.boundary_tree(np.zeros((5, 0), dtype=bool), np.zeros(5, dtype=np.int64), 1, depth=2)


def test_the_router_start_routes_better_than_zeros_and_refining_never_loses():
    actor, states, labels = router_data(6, 8, 3000, seed=2)
    from_router = fit_oblique(actor, states, labels, depth=3, env_id=ENV_ID, iterations=15, seed=0)
    from_zeros = fit_oblique(actor, states, labels, depth=3, env_id=ENV_ID, iterations=15, seed=0, start="zeros")
    assert from_router["cma"]["start"] == "router" and from_router["cma"]["sigma0"] == oblique.CMA_SIGMA0["router"]
    assert from_zeros["cma"]["generations"] == 15 and from_zeros["cma"]["sigma0"] == 1.0
    assert from_router["cma"]["train_misrouted"] <= from_router["cma"]["start_misrouted"]
    agreement = {name: float(np.mean(TreeRouter(trees).predict(states) == labels))
                 for name, trees in (("router", from_router), ("zeros", from_zeros))}
    assert agreement["router"] == pytest.approx(1 - from_router["cma"]["train_misrouted"], abs=1e-3)
    assert agreement["router"] > agreement["zeros"] + 0.05


def test_one_expert_has_no_boundaries_and_starts_from_zeros():
    actor, states, labels = router_data(3, 1, 200, seed=5)
    trees = fit_oblique(actor, states, labels, depth=2, env_id=ENV_ID, iterations=5, seed=0)
    assert trees["cma"]["start"] == "zeros" and trees["cma"]["train_misrouted"] == 0.0
    assert (TreeRouter(trees).predict(states) == 0).all()


def test_two_experts_are_split_exactly_by_their_one_boundary():
    actor, states, labels = router_data(3, 2, 800, seed=4)
    trees = fit_oblique(actor, states, labels, depth=1, env_id=ENV_ID, iterations=50, seed=0)
    assert trees["cma"]["start_misrouted"] == 0.0 and trees["cma"]["generations"] == 0  # nothing left to search
    assert np.array_equal(TreeRouter(trees).predict(states), labels)


def test_table_has_oblique_columns_only_where_distilled():
    row = Row("Hopper-v4", "smose", 8, "0.1", 1000, [0], [100.0])
    cart = TreeRecord(3, 0, {"per-expert": 0.9, "multiclass": 0.8}, {"per-expert": 0.5, "multiclass": 0.4}, 100.0,
                      {"per-expert": 90.0, "multiclass": 80.0})
    lines = _trees_table([(row, (3, 0), [cart])])
    assert "oblique:" not in lines[3] and lines[-1].count("|") == lines[3].count("|") == 13
    every = TreeRecord(3, 0, cart.agreement | {"oblique": 0.7}, cart.closed_loop | {"oblique": 0.6}, 100.0,
                       cart.tree_return | {"oblique": 70.0})
    lines = _trees_table([(row, (3, 0), [every])])
    assert "oblique: agreement / closed loop" in lines[3] and lines[-1].count("|") == lines[3].count("|") == 15
    assert lines[-1].endswith("| 90.0% / 50.0% | 80.0% / 40.0% | 70.0% / 60.0% | 100.00 | 90.00 (0.90, 0.90) | "
                              "80.00 (0.80, 0.80) | 70.00 (0.70, 0.70) |")


def ordered_layouts(experts: tuple[int, ...], depth: int):
    """Every placement of the experts at the leaves, mirror images included: the plain recursion leaf_layouts prunes."""
    if len(experts) == 1:
        yield experts[0]
    elif depth > 0 and len(experts) <= 2**depth:
        for size in range(1, len(experts)):
            for chosen in itertools.combinations(experts, size):
                rest = tuple(e for e in experts if e not in chosen)
                for a in ordered_layouts(chosen, depth - 1):
                    for b in ordered_layouts(rest, depth - 1):
                        yield a, b


def canonical(layout):
    """A layout with the children of every node in a fixed order: mirror images become equal."""
    if isinstance(layout, int):
        return layout
    return tuple(sorted((canonical(layout[0]), canonical(layout[1])), key=repr))


@pytest.mark.parametrize("n_experts,depth", [(1, 3), (2, 1), (3, 2), (4, 2), (5, 3), (7, 3), (8, 3)])
def test_leaf_layouts_are_every_placement_once_up_to_mirror_images(n_experts, depth):
    experts = tuple(range(10, 10 + n_experts))
    layouts = list(oblique.leaf_layouts(experts, depth))
    assert all(sorted(oblique.layout_experts(layout)) == list(experts) for layout in layouts)
    assert len({canonical(layout) for layout in layouts}) == len(layouts)  # no layout twice
    every = {canonical(layout) for layout in ordered_layouts(experts, depth)}
    assert {canonical(layout) for layout in layouts} == every
    if n_experts == 2**depth:  # a full tree: n! placements, 2 mirror images at each of the n - 1 internal nodes
        assert len(layouts) == math.factorial(n_experts) // 2 ** (n_experts - 1)
    assert list(oblique.leaf_layouts(tuple(range(2**depth + 1)), depth)) == []  # more experts than leaves


def test_group_hyperplane_separates_two_groups_and_sends_a_lone_side_its_way():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(600, 3)).astype(np.float32)
    labels = np.where(states[:, 0] - 2 * states[:, 2] > 0.3, rng.integers(2, 4, 600), rng.integers(0, 2, 600))
    labels[:50] = 4  # a fifth expert the split does not concern
    x = oblique.loss_inputs(states, *oblique.standardisation(states))
    plane = oblique.group_hyperplane(x, labels, (0, 1), (2, 3))
    assert np.linalg.norm(plane[:-1]) == pytest.approx(1.0)
    goes_left = x.astype(np.float64) @ plane <= 0
    concerned = labels < 4
    assert np.mean(goes_left[concerned] == (labels[concerned] < 2)) > 0.97
    only_right = oblique.group_hyperplane(x, labels, (5,), (2, 3))  # no state routed to expert 5
    assert (x.astype(np.float64) @ only_right > 0).all()
    only_left = oblique.group_hyperplane(x, labels, (0, 1), (6,))
    assert (x.astype(np.float64) @ only_left <= 0).all()


def quadrant_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four experts, one per quadrant of (s0, s1): the root must split experts {0, 1} from {2, 3}, which no boundary
    between two experts of a random router does."""
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n, 4)).astype(np.float32) * np.float32([1.0, 3.0, 1.0, 1.0])
    labels = 2 * (states[:, 0] > 0) + (states[:, 1] > 0)
    return states, labels.astype(np.int64)


def test_the_groups_start_finds_the_tree_the_router_boundaries_miss():
    actor = actor_for(4, 4, seed=3)
    states, labels = quadrant_data(2000, seed=1)
    fits = {start: fit_oblique(actor, states, labels, depth=2, env_id=ENV_ID, iterations=1, seed=0, start=start)
            for start in ("router", "groups")}
    assert fits["groups"]["cma"]["start"] == "groups" and fits["groups"]["cma"]["sigma0"] == 0.03
    assert fits["groups"]["cma"]["start_misrouted"] < 0.01 < 0.2 < fits["router"]["cma"]["start_misrouted"]
    assert np.mean(TreeRouter(fits["groups"]).predict(states) == labels) > 0.99
    # the start itself: every expert gets a leaf, split by the quadrants' axes
    x = oblique.loss_inputs(states, *oblique.standardisation(states))
    left, right = oblique.complete_tree(2)
    assert oblique.misrouted(x, labels, oblique.groups_start(x, labels, 4, 2), left, right, 4) < 0.01


def test_the_groups_start_is_never_worse_than_the_router_start():
    actor, states, labels = router_data(6, 8, 3000, seed=2)
    fits = {start: fit_oblique(actor, states, labels, depth=3, env_id=ENV_ID, iterations=1, seed=0, start=start)
            for start in ("router", "groups")}
    assert fits["groups"]["cma"]["start_misrouted"] <= fits["router"]["cma"]["start_misrouted"]


def test_one_expert_starts_from_zeros_whatever_the_start_asked():
    actor, states, labels = router_data(3, 1, 200, seed=5)
    trees = fit_oblique(actor, states, labels, depth=2, env_id=ENV_ID, iterations=5, seed=0, start="groups")
    assert trees["cma"]["start"] == "zeros" and trees["cma"]["train_misrouted"] == 0.0
