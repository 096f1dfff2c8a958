"""Exported policies (Python, C, JSON, ONNX) compute the library's deterministic action.

Every format is compared with ``actor.act`` / ``actor.act_with_experts`` (tree routing through ``TreeRouter``) on
10,000 states: 5,000 visited by the ``hopper_run`` policy and 5,000 random ones spread around them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from smose.algo.policy import make_actor
from smose.api import SMOSE
from smose.cli import main
from smose.errors import SmoseError
from smose.evaluate import EVAL_SEED_OFFSET
from smose.export import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, export_policy, python_module
from smose.interpret.boundary import (
    decision_states,
    invalid_observations,
    limit_observations,
    logit_tie_states,
    threshold_states,
    to_float32,
)
from smose.interpret.distill import TreeRouter, collect_states, distill, load_trees, tree_file
from smose.serialization import load_model, save_model
from smose.tasks.envs import make_env
from smose.tasks.features import action_names, observation_names

TOLERANCE = 1e-5
N_ROLLOUT, N_RANDOM = 5_000, 5_000
VARIANTS = [("neural", "per-expert"), ("tree", "per-expert"), ("tree", "multiclass"), ("tree", "oblique")]
TREE_KINDS = ("per-expert", "multiclass", "oblique")
MODES = ("gated", "linear")
CFLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]


@pytest.fixture(scope="module")
def smose_run(hopper_run, tmp_path_factory) -> Path:
    """The hopper_run model copied (so the shared run stays untouched) and distilled into every tree kind."""
    run = tmp_path_factory.mktemp("export") / "hopper"
    run.mkdir()
    for name in ("model.json", "model.safetensors"):
        shutil.copy(hopper_run / name, run / name)
    distill(run, depth=3, episodes=3, kind="all", eval_episodes=1, cma_iterations=30)
    return run


@pytest.fixture(scope="module")
def states(smose_run) -> np.ndarray:
    """[10000, 11] float32: states from deterministic rollouts, then random states around their range."""
    actor, _ = load_model(smose_run)
    env = make_env("Hopper-v5")
    chunks, total, seed = [], 0, 100
    while total < N_ROLLOUT:
        chunk, _ = collect_states(actor, env, 1, seed)
        chunks.append(chunk)
        total, seed = total + len(chunk), seed + 1
    env.close()
    rollout = np.concatenate(chunks)[:N_ROLLOUT]
    rng = np.random.default_rng(0)
    spread = 3.0 * rollout.std(axis=0) + 0.1
    random = rollout.mean(axis=0) + spread * rng.standard_normal((N_RANDOM, rollout.shape[1]))
    return np.concatenate([rollout, random]).astype(np.float32)


def reference(run: Path, obs: np.ndarray, router: str, kind: str, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The library's deterministic action (and expert) for a batch of states."""
    actor, _ = load_model(run)
    obs_t = torch.from_numpy(obs)
    if router == "neural":
        action, expert = actor.act(obs_t, mode)
    else:
        expert = TreeRouter(load_trees(tree_file(run, kind)))(obs_t)
        action = actor.act_with_experts(obs_t, expert, mode)
    return action.numpy(), None if expert is None else expert.numpy()


def assert_matches(got_action, got_expert, want_action, want_expert) -> None:
    got_action = np.asarray(got_action, dtype=np.float64)
    assert got_action.shape == want_action.shape
    assert np.max(np.abs(got_action - want_action)) <= TOLERANCE
    if want_expert is not None:
        np.testing.assert_array_equal(np.asarray(got_expert), want_expert)


def test_states_exercise_several_experts(smose_run, states):
    """Guards the other tests: the states must reach several experts under every router."""
    for router, kind in VARIANTS:
        _, expert = reference(smose_run, states, router, kind, "gated")
        assert len(np.unique(expert)) >= 2, (router, kind)


# ---------------------------------------------------------------------------------------------------------- Python

BLOCKED_RUNNER = textwrap.dedent('''
    import importlib.util, json, sys

    class Block:
        """Refuses torch and numpy, so the exported files must do without them."""
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "numpy"):
                raise ImportError(name + " is blocked")
            return None

    sys.meta_path.insert(0, Block())
    for name in ("numpy", "torch"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(name + " could be imported")
    states = json.load(open(sys.argv[1]))
    out = {}
    for path in sys.argv[2:]:
        spec = importlib.util.spec_from_file_location("exported", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if hasattr(module, "act_and_route"):
            pairs = [module.act_and_route(s) for s in states]
            out[path] = {"action": [a for a, _ in pairs], "expert": [k for _, k in pairs]}
        else:
            out[path] = {"action": [module.act(s) for s in states], "expert": None}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy"))
    json.dump({"results": out, "loaded": loaded}, sys.stdout)
''')


def run_python_exports(paths: list[Path], obs: np.ndarray, tmp_path: Path) -> dict:
    states_file, runner = tmp_path / "states.json", tmp_path / "runner.py"
    states_file.write_text(json.dumps(obs.astype(np.float64).tolist()))
    runner.write_text(BLOCKED_RUNNER)
    proc = subprocess.run([sys.executable, "-I", "-S", str(runner), str(states_file), *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["loaded"] == []
    return data["results"]


def test_python_export_matches_without_torch_or_numpy(smose_run, states, tmp_path):
    paths = {}
    for router, kind in VARIANTS:
        for mode in MODES:
            paths[(router, kind, mode)] = export_policy(smose_run, "python", tmp_path / f"{router}-{kind}-{mode}.py",
                                                        router=router, mode=mode, tree_kind=kind)
    results = run_python_exports(list(paths.values()), states, tmp_path)
    for (router, kind, mode), path in paths.items():
        got = results[str(path)]
        assert_matches(got["action"], got["expert"], *reference(smose_run, states, router, kind, mode))


def test_python_export_is_readable(smose_run, tmp_path):
    path = export_policy(smose_run, "python", tmp_path / "tree.py", router="tree", mode="linear")
    text = path.read_text()
    doc = text.split('"""')[1]
    assert "Hopper-v5" in doc and "mode \"linear\"" in doc
    assert f"smose export {smose_run} --format python --router tree --tree-kind per-expert --mode linear" in doc
    for i, name in enumerate(observation_names("Hopper-v5", 11)):
        assert f"{i:>3}  {name}" in doc
        assert f"# {i} {name}" in text  # every weight carries its feature name
    for name in action_names("Hopper-v5", 3):
        assert name in doc
    assert "def yes_expert_0(obs):" in text and "if " in text and "ROUTER_BIAS" not in text  # linear: trees only
    assert "import numpy" not in text and "import torch" not in text
    actor, _ = load_model(smose_run)
    assert repr(float(actor.expert_weight[1, 2, 3].detach())) in text  # floats written exactly


# --------------------------------------------------------------------------------------------------------------- C

C_DRIVER = textwrap.dedent('''
    #include <math.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include "policy.h"

    int other_unit_route(const float obs[SMOSE_N_OBS]);

    int main(int argc, char **argv)
    {
        if (argc != 4) return 2;
        FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
        long n = atol(argv[3]);
        if (!in || !out) return 2;
        float obs[SMOSE_N_OBS], record[SMOSE_N_ACT + 1];
        for (long s = 0; s < n; ++s) {
            if (fread(obs, sizeof(float), SMOSE_N_OBS, in) != SMOSE_N_OBS) return 3;
    #ifdef SMOSE_N_EXPERTS
            int expert = smose_act_route(obs, record);
            if (smose_route(obs) != expert || other_unit_route(obs) != expert) return 4;
            float check[SMOSE_N_ACT];
            if (smose_act(obs, check) != (expert < 0 ? -1 : 0)) return 6;
            for (int j = 0; j < SMOSE_N_ACT; ++j)
                if (check[j] != record[j] && !(isnan(check[j]) && isnan(record[j]))) return 5;
            record[SMOSE_N_ACT] = (float)expert;
    #else
            record[SMOSE_N_ACT] = (float)smose_act(obs, record);  /* 0, or -1 for an invalid observation */
    #endif
            fwrite(record, sizeof(float), SMOSE_N_ACT + 1, out);
        }
        fclose(out);
        return 0;
    }
''')
# A second translation unit including the same header: static inline functions must link without clashes.
C_OTHER_UNIT = textwrap.dedent('''
    #include "policy.h"
    int other_unit_route(const float obs[SMOSE_N_OBS])
    {
    #ifdef SMOSE_N_EXPERTS
        return smose_route(obs);
    #else
        (void)obs;
        return -1;
    #endif
    }
''')


def run_c_export(header: Path, obs: np.ndarray, n_act: int, workdir: Path,
                 flags: list[str] = CFLAGS) -> tuple[np.ndarray, np.ndarray]:
    workdir.mkdir()
    shutil.copy(header, workdir / "policy.h")
    (workdir / "driver.c").write_text(C_DRIVER)
    (workdir / "other.c").write_text(C_OTHER_UNIT)
    build = subprocess.run(["gcc", *flags, "driver.c", "other.c", "-o", "driver", "-lm"], cwd=workdir,
                           capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stderr
    to_float32(obs).tofile(workdir / "states.bin")
    run = subprocess.run([str(workdir / "driver"), "states.bin", "actions.bin", str(len(obs))], cwd=workdir,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, f"driver exit {run.returncode}"
    records = np.fromfile(workdir / "actions.bin", dtype=np.float32).reshape(len(obs), n_act + 1)
    return records[:, :n_act], records[:, n_act].astype(np.int64)


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


@needs_gcc
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("router,kind", VARIANTS)
def test_c_export_compiles_and_matches(smose_run, states, tmp_path, router, kind, mode):
    header = export_policy(smose_run, "c", tmp_path / "smose_policy.h", router=router, mode=mode, tree_kind=kind)
    text = header.read_text()
    assert "#ifndef SMOSE_POLICY_H" in text and "malloc" not in text
    assert "static inline int smose_act(const float obs[SMOSE_N_OBS], float action[SMOSE_N_ACT])" in text
    action, expert = run_c_export(header, states, 3, tmp_path / "build")
    assert_matches(action, expert, *reference(smose_run, states, router, kind, mode))


# ------------------------------------------------------------------------------------------------------------ JSON


def json_tree_route(trees: dict, obs: np.ndarray) -> np.ndarray:
    """Tree routing exactly as docs/export.md describes it (written independently of TreeRouter)."""

    def leaf(nodes: list, x: np.ndarray) -> dict:
        node = nodes[0]
        while not node["leaf"]:
            node = nodes[node["left"] if float(x[node["feature"]]) <= node["threshold"] else node["right"]]
        return node

    choices = []
    for s in to_float32(obs):
        if trees["kind"] == "oblique":
            choices.append(int(np.argmax(oblique_path(trees, s)[-1]["probability"])))
        elif trees["kind"] == "per-expert":
            theta = np.asarray(trees["router_weight"], dtype=np.float32)
            yes = [leaf(tree["nodes"], theta[m] * s)["probability"][1] for m, tree in enumerate(trees["trees"])]
            choices.append(int(np.argmax(yes)))
        else:
            choices.append(int(np.argmax(leaf(trees["trees"][0]["nodes"], s)["probability"])))
    return np.asarray(choices)


def oblique_path(trees: dict, s: np.ndarray) -> list[dict]:
    """The nodes a float32 state passes in an oblique tree, by docs/export.md's rule: x = (s - mean) / scale with each
    operation rounded to float32; a test goes left when bias + sum_i weights[i] * x[i] <= 0, summed in float64 from
    the float32 bias in index order."""
    mean = np.asarray(trees["standardisation"]["mean"], dtype=np.float32)
    scale = np.asarray(trees["standardisation"]["scale"], dtype=np.float32)
    x = (s.astype(np.float32) - mean) / scale  # float32 arrays: each operation rounds to float32
    nodes = trees["trees"][0]["nodes"]
    path = [nodes[0]]
    while not path[-1]["leaf"]:
        node = path[-1]
        total = float(np.float32(node["bias"]))
        for w, xi in zip(np.asarray(node["weights"], dtype=np.float32), x):
            total += float(w) * float(xi)
        path.append(nodes[node["left"] if total <= 0 else node["right"]])
    return path


def json_act(doc: dict, obs: np.ndarray, router: str, kind: str, mode: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The deterministic action computed from the JSON file alone, following docs/export.md (float64 arithmetic on
    the observation rounded to float32)."""
    t = {name: np.asarray(entry["data"], dtype=np.float64) for name, entry in doc["tensors"].items()}
    low, high = t["action_low"], t["action_high"]
    scale, center = (high - low) / 2, (high + low) / 2
    x = to_float32(obs).astype(np.float64)
    if not (np.abs(x) <= 2.0**60).all():
        raise ValueError("observations must be finite and within ±2^60")
    if doc["algo"] != "smose":
        h = x
        for i in range(len(doc["hidden"])):
            h = np.maximum(h @ t[f"hidden.{i}.weight"].T + t[f"hidden.{i}.bias"], 0.0)
        return np.tanh(h @ t["mean_head.weight"].T + t["mean_head.bias"]) * scale + center, None
    logits = x @ t["router.weight"].T + t["router.bias"]
    k = logits.argmax(axis=1) if router == "neural" else json_tree_route(doc["trees"][kind], obs)
    rows = np.arange(len(x))
    linear = np.einsum("ban,bn->ba", t["experts.mean.weight"][k], x) + t["experts.mean.bias"][k]
    if mode == "linear":
        return np.clip(linear, low, high), k
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    gate = (p / p.sum(axis=1, keepdims=True))[rows, k]
    return np.tanh(gate[:, None] * linear) * scale + center, k


def test_json_export_holds_everything_and_matches(smose_run, states, tmp_path):
    path = export_policy(smose_run, "json", tmp_path / "policy.json")
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["format_version"]) == (EXPORT_FORMAT, EXPORT_FORMAT_VERSION)
    assert doc["observation_names"] == observation_names("Hopper-v5", 11)
    assert doc["action_names"] == action_names("Hopper-v5", 3)
    assert set(doc["trees"]) == {"per-expert", "multiclass", "oblique"}
    actor, _ = load_model(smose_run)
    n_act = actor.n_act
    exact = {
        "router.weight": actor.router.weight, "router.bias": actor.router.bias,
        "experts.mean.weight": actor.expert_weight[:, :n_act], "experts.mean.bias": actor.expert_bias[:, :n_act],
        "experts.log_std.weight": actor.expert_weight[:, n_act:],
        "experts.log_std.bias": actor.expert_bias[:, n_act:],
        "action_low": actor.action_low, "action_high": actor.action_high,
    }
    assert set(doc["tensors"]) == set(exact)
    for name, tensor in exact.items():
        entry = doc["tensors"][name]
        data = np.asarray(entry["data"], dtype=np.float32)
        assert list(data.shape) == entry["shape"] == list(tensor.shape) and len(entry["axes"]) == data.ndim
        np.testing.assert_array_equal(data, tensor.detach().numpy())  # float32 values round-trip exactly
    for router, kind in VARIANTS:
        for mode in MODES:
            want = reference(smose_run, states, router, kind, mode)
            assert_matches(*json_act(doc, states, router, kind, mode), *want)


# ------------------------------------------------------------------------------------------------------------ ONNX


def run_onnx(path: Path, obs: np.ndarray) -> list[np.ndarray]:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"obs": obs})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("router,kind", VARIANTS)
def test_onnx_export_matches(smose_run, states, tmp_path, router, kind, mode):
    path = export_policy(smose_run, "onnx", tmp_path / "policy.onnx", router=router, mode=mode, tree_kind=kind)
    action, expert = run_onnx(path, states)
    assert_matches(action, expert, *reference(smose_run, states, router, kind, mode))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["env_id"] == "Hopper-v5" and meta["mode"] == mode
    assert meta["observation_names"].split("\n") == observation_names("Hopper-v5", 11)


# ------------------------------------------------------------------------------------- decisions on the boundaries


@pytest.fixture(scope="module")
def boundary(smose_run, states) -> np.ndarray:
    """[N, 11] float64: states on every split threshold and oblique hyperplane of every tree kind (float32 a few steps
    either side, and float64 between those steps) and on ties between every pair of router logits, around a few
    rollout states."""
    actor, _ = load_model(smose_run)
    parts = [decision_states(load_trees(tree_file(smose_run, kind)), states[:3]) for kind in TREE_KINDS]
    parts.append(logit_tie_states(actor.router.weight.detach().numpy(), actor.router.bias.detach().numpy(),
                                  states[::500]))
    return np.concatenate(parts)


def tree_path(nodes: list, x: np.ndarray) -> list[tuple[int, bool]]:
    """(split, went left) for every split a state passes, by the documented rule on float32 inputs."""
    path, i = [], 0
    while not nodes[i]["leaf"]:
        left = float(x[nodes[i]["feature"]]) <= nodes[i]["threshold"]
        path.append((i, left))
        i = nodes[i]["left"] if left else nodes[i]["right"]
    return path


def test_boundary_states_reach_every_split_on_both_sides(smose_run, boundary):
    """Guards the boundary tests: each split is reached by states going left and right within a few float32 steps."""
    obs = boundary.astype(np.float32)
    for kind in ("per-expert", "multiclass"):
        trees = load_trees(tree_file(smose_run, kind))
        for m, tree in enumerate(trees["trees"]):
            theta = np.asarray(trees["router_weight"][m], dtype=np.float32) if kind == "per-expert" else None
            taken = {(i, left) for s in obs for i, left in tree_path(tree["nodes"], s if theta is None else theta * s)}
            splits = [i for i, node in enumerate(tree["nodes"]) if not node["leaf"]]
            assert {(i, left) for i in splits for left in (True, False)} <= taken, (kind, m)
            for i in splits:  # states straddle the threshold closely, not just somewhere on each side
                node = tree["nodes"][i]
                x = obs[:, node["feature"]] * (1.0 if theta is None else theta[node["feature"]])
                gap = np.abs(x.astype(np.float64) - node["threshold"])
                assert gap.min() <= 4 * abs(np.spacing(np.float32(node["threshold"]))), (kind, m, i)


def test_boundary_states_straddle_every_oblique_test(smose_run, boundary):
    """Guards the boundary tests for the oblique tree: at every test that training states reach on both sides, two
    boundary states reaching it that differ in one feature by at most 4 float32 steps go different ways."""
    trees = load_trees(tree_file(smose_run, "oblique"))
    nodes = trees["trees"][0]["nodes"]
    obs = boundary.astype(np.float32)
    paths = [oblique_path(trees, s) for s in obs]
    straddled = set()
    for a in range(len(obs) - 1):
        b = a + 1
        differ = np.flatnonzero(obs[a] != obs[b])
        if len(differ) != 1:
            continue
        f = differ[0]
        steps = abs(int(obs[a, f].view(np.int32)) - int(obs[b, f].view(np.int32)))  # same sign near a crossing
        for node_a, next_a in zip(paths[a], paths[a][1:]):
            for node_b, next_b in zip(paths[b], paths[b][1:]):
                if node_a["id"] == node_b["id"] and next_a["id"] != next_b["id"] and steps <= 4:
                    straddled.add(node_a["id"])
    both = {n["id"] for n in nodes if not n["leaf"] and nodes[n["left"]]["samples"] and nodes[n["right"]]["samples"]}
    assert both and both <= straddled


def boundary_experts(run: Path, obs: np.ndarray, router: str, kind: str) -> np.ndarray:
    return reference(run, obs.astype(np.float32), router, kind, "gated")[1]


def test_boundary_states_change_decisions(smose_run, boundary):
    """Guards the boundary tests: the states do sit where the library's choice flips."""
    for router, kind in VARIANTS:
        experts = boundary_experts(smose_run, boundary, router, kind)
        assert len(np.unique(experts)) >= 2, (router, kind)


@pytest.mark.parametrize("mode", MODES)
def test_every_format_decides_like_the_library_on_boundaries(smose_run, boundary, tmp_path, mode):
    """States on split thresholds and logit ties, given as float64 to Python and JSON (which round to float32 as the
    library does) and as float32 to the library, C and ONNX: the same expert everywhere, the same action."""
    want = {(router, kind): reference(smose_run, boundary.astype(np.float32), router, kind, mode)
            for router, kind in VARIANTS}
    paths = {variant: export_policy(smose_run, "python", tmp_path / f"{variant[0]}-{variant[1]}.py",
                                    router=variant[0], mode=mode, tree_kind=variant[1]) for variant in VARIANTS}
    results = run_python_exports(list(paths.values()), boundary, tmp_path)
    doc = json.loads(export_policy(smose_run, "json", tmp_path / "policy.json").read_text())
    for router, kind in VARIANTS:
        got = results[str(paths[(router, kind)])]
        assert_matches(got["action"], got["expert"], *want[(router, kind)])
        assert_matches(*json_act(doc, boundary, router, kind, mode), *want[(router, kind)])
        onnx_path = export_policy(smose_run, "onnx", tmp_path / f"{router}-{kind}.onnx", router=router, mode=mode,
                                  tree_kind=kind)
        assert_matches(*run_onnx(onnx_path, boundary.astype(np.float32)), *want[(router, kind)])
        if shutil.which("gcc"):
            header = export_policy(smose_run, "c", tmp_path / f"{router}-{kind}.h", router=router, mode=mode,
                                   tree_kind=kind)
            assert_matches(*run_c_export(header, boundary, 3, tmp_path / f"build-{router}-{kind}"),
                           *want[(router, kind)])


def cpu_has_fma() -> bool:
    try:
        return " fma " in f" {Path('/proc/cpuinfo').read_text().replace(chr(10), ' ')} "
    except OSError:
        return False


@needs_gcc
@pytest.mark.skipif(not cpu_has_fma(), reason="the CPU has no fused multiply-add")
def test_c_export_decides_alike_when_the_compiler_fuses_multiply_add(smose_run, boundary, tmp_path):
    """Compiled so that every a*b+c may become one fused multiply-add (GNU mode, -mfma -ffp-contract=fast), the C file
    still chooses the library's expert on every boundary state: the products that decide (router logits, oblique
    hyperplanes) are exact in double, and per-expert products are rounded to float before they are compared."""
    fused = ["-O2", "-std=gnu99", "-mfma", "-ffp-contract=fast", "-Wall", "-Werror"]
    for router, kind in VARIANTS:
        want = reference(smose_run, boundary.astype(np.float32), router, kind, "gated")
        header = export_policy(smose_run, "c", tmp_path / f"{router}-{kind}.h", router=router, tree_kind=kind)
        action, expert = run_c_export(header, boundary, 3, tmp_path / f"fma-{router}-{kind}", fused)
        np.testing.assert_array_equal(expert, want[1])
        assert np.abs(action - want[0]).max() <= TOLERANCE
        assembly = subprocess.run(["gcc", *fused, "-S", "driver.c", "-o", "-"], cwd=tmp_path / f"fma-{router}-{kind}",
                                  capture_output=True, text=True, check=True).stdout
        assert "vfmadd" in assembly  # the compiler did fuse: the check above is not vacuous


@pytest.fixture(scope="module")
def nudged_run(smose_run, tmp_path_factory) -> Path:
    """smose_run with every split threshold moved to the float64 number just below the next float32 number up: a
    float64 observation on such a threshold rounds to float32 across it, so the library sends it right."""
    run = tmp_path_factory.mktemp("nudged") / "hopper"
    shutil.copytree(smose_run, run)
    for kind in ("per-expert", "multiclass"):
        path = tree_file(run, kind)
        doc = json.loads(path.read_text())
        for tree in doc["trees"]:
            for node in tree["nodes"]:
                if not node["leaf"]:
                    above = np.nextafter(np.float32(node["threshold"]), np.float32(np.inf))
                    node["threshold"] = float(np.nextafter(np.float64(above), -np.inf))
        path.write_text(json.dumps(doc))
    return run


@pytest.mark.parametrize("kind", ["per-expert", "multiclass"])
def test_python_export_rounds_float64_observations_like_the_library(nudged_run, states, tmp_path, kind):
    obs = threshold_states(load_trees(tree_file(nudged_run, kind)), states[:3])
    want = reference(nudged_run, obs.astype(np.float32), "tree", kind, "linear")
    py = export_policy(nudged_run, "python", tmp_path / "p.py", router="tree", mode="linear", tree_kind=kind)
    got = run_python_exports([py], obs, tmp_path)[str(py)]
    assert_matches(got["action"], got["expert"], *want)
    doc = json.loads(export_policy(nudged_run, "json", tmp_path / "p.json").read_text())
    assert_matches(*json_act(doc, obs, "tree", kind, "linear"), *want)


def test_export_self_check_catches_a_controller_that_decides_otherwise(smose_run, tmp_path, monkeypatch):
    """A Python file that neither rounds the observation to float32 nor the tested product (as files used to) is
    refused: its experts differ from the library's on the threshold states of the self-check."""
    unrounded = dataclasses.replace(python_module._PY_TREE, test="{weight} * obs[{feature}] <= {threshold}")
    monkeypatch.setattr(python_module, "_PY_TREE", unrounded)
    reading = [line.replace("_f32(float(x))", "float(x)") for line in python_module._PY_OBSERVATION]
    assert reading != python_module._PY_OBSERVATION
    monkeypatch.setattr(python_module, "_PY_OBSERVATION", reading)
    with pytest.raises(SmoseError, match="chooses another expert than the library"):
        export_policy(smose_run, "python", tmp_path / "p.py", router="tree")
    assert not (tmp_path / "p.py").exists()


def test_export_self_check_catches_an_oblique_tree_standardised_without_rounding(smose_run, tmp_path, monkeypatch):
    """A Python file that standardises the observation in float64 (no rounding to float32) decides otherwise on the
    hyperplane states of the self-check, and is refused."""
    monkeypatch.setattr(python_module, "_PY_STANDARDISED", "(obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i]")
    with pytest.raises(SmoseError, match="chooses another expert than the library"):
        export_policy(smose_run, "python", tmp_path / "p.py", router="tree", tree_kind="oblique")
    assert not (tmp_path / "p.py").exists()


def test_library_decides_the_same_for_one_state_as_for_a_batch(smose_run, boundary):
    """The router's float32 matrix product rounds differently for a batch and a single state; the choice does not."""
    actor, _ = load_model(smose_run)
    obs = torch.from_numpy(boundary.astype(np.float32))
    batch = actor.choose(obs)
    single = torch.cat([actor.choose(obs[i:i + 1]) for i in range(len(obs))])
    torch.testing.assert_close(single, batch)


def test_ties_between_router_logits_go_to_the_lowest_index(smose_run, states, tmp_path):
    """The most used expert's router row copied into another row: the two logits are equal on every state, and
    wherever they are the largest every format picks the lower index of the two."""
    actor, meta = load_model(smose_run)
    top = int(np.bincount(actor.choose(torch.from_numpy(states)).numpy()).argmax())
    copy = (top + 1) % actor.n_experts
    with torch.no_grad():
        actor.router.weight[copy] = actor.router.weight[top]
        actor.router.bias[copy] = actor.router.bias[top]
    run = tmp_path / "tied"
    save_model(actor, run, meta["env_id"])
    obs = np.concatenate([states, np.zeros((1, 11), dtype=np.float32)])
    for mode in MODES:
        action, expert = reference(run, obs, "neural", "per-expert", mode)
        assert (expert == min(top, copy)).sum() > 100 and not (expert == max(top, copy)).any()
        py = export_policy(run, "python", tmp_path / f"tied-{mode}.py", mode=mode)
        got = run_python_exports([py], obs, tmp_path)[str(py)]
        assert_matches(got["action"], got["expert"], action, expert)
        assert_matches(*run_onnx(export_policy(run, "onnx", tmp_path / f"tied-{mode}.onnx", mode=mode), obs),
                       action, expert)
        doc = json.loads(export_policy(run, "json", tmp_path / "tied.json", mode=mode).read_text())
        assert_matches(*json_act(doc, obs, "neural", "", mode), action, expert)
        if shutil.which("gcc"):
            header = export_policy(run, "c", tmp_path / f"tied-{mode}.h", mode=mode)
            assert_matches(*run_c_export(header, obs, 3, tmp_path / f"build-tied-{mode}"), action, expert)


# ------------------------------------------------------------------------------------- non-finite observations


def test_library_rejects_invalid_observations(smose_run):
    actor, _ = load_model(smose_run)
    trees = TreeRouter(load_trees(tree_file(smose_run, "per-expert")))
    model = SMOSE.load(smose_run)
    for row in invalid_observations(11):
        obs = torch.from_numpy(to_float32(row)).unsqueeze(0)
        for call in (lambda: actor.act(obs), lambda: actor.choose(obs), lambda: actor.act(obs, "linear"),
                     lambda: actor.act_with_experts(obs, torch.zeros(1, dtype=torch.long)), lambda: trees(obs),
                     lambda: model.predict(row), lambda: model.predict(row, deterministic=False)):
            with pytest.raises(SmoseError, match="finite"):
                call()


REJECTS = textwrap.dedent('''
    import importlib.util, json, math, sys
    spec = importlib.util.spec_from_file_location("exported", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rejected = []
    for row in json.load(open(sys.argv[2])):
        row = [float(x) for x in row]  # JSON has no NaN or inf: they travel as strings
        calls = [module.act] + [getattr(module, name) for name in ("route", "act_and_route") if hasattr(module, name)]
        errors = 0
        for call in calls:
            try:
                call(row)
            except ValueError as exc:
                errors += "finite" in str(exc)
        rejected.append(errors == len(calls))
    json.dump(rejected, sys.stdout)
''')


def python_rejects(path: Path, obs: np.ndarray, tmp_path: Path) -> list[bool]:
    (tmp_path / "rejects.py").write_text(REJECTS)
    (tmp_path / "bad.json").write_text(json.dumps([[repr(float(x)) for x in row] for row in obs]))
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "rejects.py"), str(path), str(tmp_path / "bad.json")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("router,kind", VARIANTS)
def test_every_format_rejects_invalid_observations(smose_run, tmp_path, router, kind):
    """NaN, ±inf, beyond ±2^60: Python raises ValueError, C returns -1 and NaN actions, ONNX gives NaN and -1."""
    bad = invalid_observations(11)
    options = {"router": router, "tree_kind": kind, "mode": "gated"}
    assert all(python_rejects(export_policy(smose_run, "python", tmp_path / "p.py", **options), bad, tmp_path))
    action, expert = run_onnx(export_policy(smose_run, "onnx", tmp_path / "p.onnx", **options), to_float32(bad))
    assert np.isnan(action).all() and (expert == -1).all()
    doc = json.loads(export_policy(smose_run, "json", tmp_path / "p.json").read_text())
    for row in bad:
        with pytest.raises(ValueError):
            json_act(doc, row[None], router, kind, "gated")
    if shutil.which("gcc"):
        action, expert = run_c_export(export_policy(smose_run, "c", tmp_path / "p.h", **options), bad, 3,
                                      tmp_path / "build")
        assert np.isnan(action).all() and (expert == -1).all()


@pytest.mark.parametrize("router,kind", VARIANTS)
def test_every_format_acts_alike_at_the_observation_limit(smose_run, tmp_path, router, kind):
    """±2^60 (and a float64 value that rounds to 2^60) is valid everywhere: no overflow, the same decisions."""
    obs = limit_observations(11)
    want = reference(smose_run, obs.astype(np.float32), router, kind, "gated")
    assert np.isfinite(want[0]).all()
    options = {"router": router, "tree_kind": kind, "mode": "gated"}
    py = export_policy(smose_run, "python", tmp_path / "p.py", **options)
    got = run_python_exports([py], obs, tmp_path)[str(py)]
    assert_matches(got["action"], got["expert"], *want)
    assert_matches(*run_onnx(export_policy(smose_run, "onnx", tmp_path / "p.onnx", **options),
                             obs.astype(np.float32)), *want)
    if shutil.which("gcc"):
        header = export_policy(smose_run, "c", tmp_path / "p.h", **options)
        assert_matches(*run_c_export(header, obs, 3, tmp_path / "build"), *want)


def test_dense_exports_reject_invalid_observations(tmp_path):
    torch.manual_seed(1)
    run = tmp_path / "dense"
    save_model(make_actor("sac-s", 11, 3, -np.ones(3), np.ones(3), n_experts=8), run, "Hopper-v5")
    bad = invalid_observations(11)
    with pytest.raises(SmoseError, match="finite"):
        load_model(run)[0].act(torch.from_numpy(to_float32(bad[:1])))
    assert all(python_rejects(export_policy(run, "python", tmp_path / "p.py"), bad, tmp_path))
    assert np.isnan(run_onnx(export_policy(run, "onnx", tmp_path / "p.onnx"), to_float32(bad))[0]).all()
    if shutil.which("gcc"):
        _, status = run_c_export(export_policy(run, "c", tmp_path / "p.h"), bad, 3, tmp_path / "build")
        assert (status == -1).all()


# ----------------------------------------------------------------------------------------------- dense baselines


@pytest.mark.parametrize("algo", ["sac-l", "sac-s"])
def test_dense_baselines_export_to_every_format(states, tmp_path, algo):
    torch.manual_seed(1)
    run = tmp_path / algo
    save_model(make_actor(algo, 11, 3, -np.ones(3), np.ones(3), n_experts=8), run, "Hopper-v5")
    want, _ = reference(run, states, "neural", "per-expert", "gated")
    assert_matches(run_onnx(export_policy(run, "onnx", tmp_path / "p.onnx"), states)[0], None, want, None)
    doc = json.loads(export_policy(run, "json", tmp_path / "p.json").read_text())
    assert_matches(json_act(doc, states, "neural", "", "gated")[0], None, want, None)
    if shutil.which("gcc"):
        action, _ = run_c_export(export_policy(run, "c", tmp_path / "p.h"), states, 3, tmp_path / "build")
        assert_matches(action, None, want, None)
    subset = 100 if algo == "sac-l" else len(states)  # ~70k multiply-adds per action in pure Python
    py = export_policy(run, "python", tmp_path / "p.py")
    got = run_python_exports([py], states[:subset], tmp_path)[str(py)]
    assert_matches(got["action"], None, want[:subset], None)


# -------------------------------------------------------------------------------------------------- in the real env


def test_python_export_reaches_the_eval_return(smose_run, tmp_path, capsys):
    seed = 3
    assert main(["eval", str(smose_run), "--episodes", "1", "--seed", str(seed)]) == 0
    evaluation = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    path = export_policy(smose_run, "python", tmp_path / "hopper_policy.py")
    spec = importlib.util.spec_from_file_location("hopper_policy", path)
    policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(policy)
    env = make_env("Hopper-v5")
    obs, _ = env.reset(seed=seed + EVAL_SEED_OFFSET)  # the reset seed `smose eval --seed` uses
    total, length, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(np.asarray(policy.act(obs)))
        total, length, done = total + float(reward), length + 1, terminated or truncated
    env.close()
    assert length == evaluation["mean_length"]
    # float64 arithmetic in the file versus float32 in torch: actions differ by ~1e-7, returns by ~1e-8 relative.
    assert total == pytest.approx(evaluation["mean"], rel=1e-6)


# ---------------------------------------------------------------------------------------------------------- errors


def export_error(capsys, *argv: str) -> str:
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smose: error: ") and err.count("\n") == 1
    return err


def test_export_errors_are_one_line(smose_run, tmp_path, capsys):
    assert "unknown export format 'xml'" in export_error(capsys, str(smose_run), "--format", "xml", "--out",
                                                         str(tmp_path / "p"))
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.json", "model.safetensors"):
        shutil.copy(smose_run / name, bare / name)
    assert "no per-expert trees" in export_error(capsys, str(bare), "--format", "python", "--router", "tree",
                                                 "--out", str(tmp_path / "p.py"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot write" in export_error(capsys, str(smose_run), "--format", "c", "--out",
                                          str(blocker / "smose_policy.h"))
    dense = tmp_path / "dense"
    save_model(make_actor("sac-s", 11, 3, -np.ones(3), np.ones(3)), dense, "Hopper-v5")
    assert "--mode linear exists only for SMOSE" in export_error(capsys, str(dense), "--format", "json", "--mode",
                                                                 "linear", "--out", str(tmp_path / "d.json"))
    assert "--router tree needs a SMOSE model" in export_error(capsys, str(dense), "--format", "python", "--router",
                                                               "tree", "--out", str(tmp_path / "d.py"))
    assert "no such run directory" in export_error(capsys, str(tmp_path / "missing"), "--format", "json", "--out",
                                                   str(tmp_path / "x.json"))


def test_export_refuses_weights_that_could_overflow_float32(tmp_path, capsys):
    actor = make_actor("smose", 11, 3, -np.ones(3), np.ones(3), n_experts=4)
    with torch.no_grad():
        actor.router.weight[2, 5] = 1e21  # times 2^60 beyond float32's 3.4e38
    save_model(actor, tmp_path / "huge", "Hopper-v5")
    assert "could overflow" in export_error(capsys, str(tmp_path / "huge"), "--format", "c", "--out",
                                            str(tmp_path / "p.h"))


def test_cli_writes_default_file_name_into_a_directory(smose_run, tmp_path, capsys):
    assert main(["export", str(smose_run), "--format", "c", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'smose_policy.h'}"
    assert (tmp_path / "smose_policy.h").is_file()
