"""The ``python`` format: one module using only the standard library (``math``, ``struct``).

It computes in float64 with the float32 weights written exactly (``repr``), rounds each observation to float32 and
checks it as the library does, and decides the expert exactly as the library does; ``act(obs) -> list[float]``,
``route(obs)`` and ``act_and_route(obs)``. The text is run against the library's policy before it is written
(smose.export.self_check).
"""

from __future__ import annotations

import numpy as np

from smose.algo.policy import Actor
from smose.export.exported_policy import ExportedPolicy, oblique_arrays, oblique_tests
from smose.export.self_check import check_python_source
from smose.export.source_text import TreeSyntax, clean_name, description, oblique_tree_lines, tree_lines, wrap_values
from smose.observations import OBS_LIMIT_LOG2


def python_bytes(actor: Actor, p: ExportedPolicy) -> bytes:
    """The module's text, checked against ``actor``."""
    source = python_source(p)
    check_python_source(source, actor, p)
    return source.encode()


def _py(value: float) -> str:
    """Exact float64 text of a float32 (or float64) value."""
    return repr(float(value))


def _py_vector(name: str, values: np.ndarray, labels: list[str], comment: str) -> list[str]:
    lines = [f"{name} = [  # {comment}"]
    lines += [f"    {_py(v)},  # {label}" for v, label in zip(values, labels)]
    return lines + ["]"]


_PY_TREE = TreeSyntax(
    # the library's test: the float32 product of weight and (float32) observation, compared with the threshold
    weight=_py, threshold=_py, test="_f32({weight} * obs[{feature}]) <= {threshold}",
    class_test="obs[{feature}] <= {threshold}", leaf="return {value}  # {note}", if_open="if {test}:  # {note}",
    else_line="else:", close=None, unused_obs=None,
)


def python_source(p: ExportedPolicy) -> str:
    """The stdlib-only Python module of a policy."""
    title = (f"SMOSE controller for {p.env}: one of {p.n_experts} linear experts acts at each step."
             if p.is_smose else f"Dense SAC controller ({p.algo}) for {p.env}.")
    doc = [title, "", *description(p, "python"), "",
           "Only the Python standard library is used. act(obs) takes any sequence of the numbers above and returns",
           "a list of floats. The observation is rounded to float32 (as the library does) and must be finite and",
           f"within +-2^{OBS_LIMIT_LOG2}, else ValueError; arithmetic is float64 on the float32 weights written "
           "exactly below."]
    if p.is_smose:
        doc += ["The expert that acts is exactly the library's choice (router logits in float64; tree tests round",
                "their product to float32 as the library does). act_and_route(obs) also returns that expert."]
    # Paths in the command may hold backslashes or quotes: escape them so the docstring reads back verbatim.
    text = "\n".join(doc).rstrip().replace("\\", "\\\\").replace('"""', '\\"""')
    lines = ['"""' + text + '\n"""', "", "import math", "import struct", "",
             f"ENV_ID = {p.env_id!r}", f"ENV_KWARGS = {p.env_kwargs!r}",
             f"MODE = {p.mode!r}", f"N_OBS = {p.n_obs}", f"N_ACT = {p.n_act}"]
    if p.is_smose:
        lines.append(f"N_EXPERTS = {p.n_experts}")
    lines += ["OBSERVATION_NAMES = " + repr(p.obs_names), "ACTION_NAMES = " + repr(p.act_names),
              f"OBS_LIMIT = 2.0 ** {OBS_LIMIT_LOG2}  # observations must be finite and within +-OBS_LIMIT", ""]
    act_labels = [f"{j} {clean_name(name)}" for j, name in enumerate(p.act_names)]
    obs_labels = [f"{i} {clean_name(name)}" for i, name in enumerate(p.obs_names)]
    if p.mode == "gated":
        lines += _py_vector("ACTION_SCALE", p.action_scale, act_labels, "(high - low) / 2")
        lines += _py_vector("ACTION_CENTER", p.action_center, act_labels, "(high + low) / 2")
    else:
        lines += _py_vector("ACTION_LOW", p.action_low, act_labels, "lower action bounds")
        lines += _py_vector("ACTION_HIGH", p.action_high, act_labels, "upper action bounds")
    lines.append("")
    lines += _PY_OBSERVATION
    if p.is_smose:
        lines += _python_smose(p, obs_labels)
    else:
        lines += _python_dense(p, obs_labels)
    return "\n".join(lines).rstrip() + "\n"


# How the Python file reads an observation: rounded to float32 and checked, exactly as the library does.
_PY_OBSERVATION = [
    "_FLOAT32 = struct.Struct('f')", "", "",
    "def _f32(x):",
    '    """x rounded to the nearest float32 (ties to even), as numpy and torch round float64 to float32."""',
    "    try:",
    "        return _FLOAT32.unpack(_FLOAT32.pack(x))[0]",
    "    except OverflowError:  # beyond the largest float32: rounds to infinity",
    "        return math.copysign(math.inf, x)", "", "",
    "def _check(obs):",
    '    """obs as a list of float32 values; ValueError unless N_OBS finite numbers within +-OBS_LIMIT."""',
    "    obs = [_f32(float(x)) for x in obs]",
    "    if len(obs) != N_OBS:",
    '        raise ValueError(f"expected {N_OBS} observation values, got {len(obs)}")',
    "    for i, x in enumerate(obs):",
    "        if not abs(x) <= OBS_LIMIT:  # also False for NaN",
    '            raise ValueError(f"observation component {i} is {x!r}: observations must be finite numbers within "',
    f'                             "+-2^{OBS_LIMIT_LOG2} (NaN or inf usually means a broken sensor or simulation)")',
    "    return obs", "", "",
]


def _python_smose(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    lines: list[str] = []
    if p.needs_router_weights:
        weight, bias = p.array("router.weight"), p.array("router.bias")
        lines.append("# Router: logit of expert m = sum_i ROUTER_WEIGHT[m][i] * obs[i] + ROUTER_BIAS[m]")
        lines.append("ROUTER_WEIGHT = [")
        for m in range(p.n_experts):
            lines.append(f"    [  # expert {m}")
            lines += [f"        {_py(v)},  # {label}" for v, label in zip(weight[m], obs_labels)]
            lines.append("    ],")
        lines += ["]", "ROUTER_BIAS = [" + ", ".join(_py(v) for v in bias) + "]", ""]
    weight, bias = p.array("experts.mean.weight"), p.array("experts.mean.bias")
    lines.append("# Experts: mean of action j under expert k = sum_i MEAN_WEIGHT[k][j][i] * obs[i] + MEAN_BIAS[k][j]")
    lines.append("MEAN_WEIGHT = [")
    for m in range(p.n_experts):
        lines.append(f"    [  # expert {m}")
        for j in range(p.n_act):
            lines.append(f"        [  # action {j}: {clean_name(p.act_names[j])}")
            lines += [f"            {_py(v)},  # {label}" for v, label in zip(weight[m, j], obs_labels)]
            lines.append("        ],")
        lines.append("    ],")
    lines += ["]", "MEAN_BIAS = ["]
    lines += [f"    [{', '.join(_py(v) for v in bias[m])}],  # expert {m}" for m in range(p.n_experts)]
    lines += ["]", "", "",
              "def _dot(weights, obs):",
              "    total = 0.0",
              "    for w, x in zip(weights, obs):",
              "        total += w * x",
              "    return total", "", "",
              "def _first_max(values):",
              '    """Index of the largest value; ties go to the lowest index."""',
              "    best = 0",
              "    for i in range(1, len(values)):",
              "        if values[i] > values[best]:",
              "            best = i",
              "    return best", "", ""]
    if p.needs_router_weights:
        lines += ["def router_logits(obs):",
                  '    """Logits in float64, summed in index order: each product of float32 numbers is exact."""',
                  "    return [_dot(ROUTER_WEIGHT[m], obs) + ROUTER_BIAS[m] for m in range(N_EXPERTS)]", "", ""]
    trees = p.routing_trees
    if trees is None:
        lines += ["def route(obs):",
                  '    """The expert that acts on obs: the largest router logit."""',
                  "    return _first_max(router_logits(_check(obs)))", "", ""]
    elif trees["kind"] == "per-expert":
        for tree in trees["trees"]:
            m = tree["expert"]
            lines += [f"def yes_expert_{m}(obs):",
                      (f'    """How sure the distilled tree is that the router picks expert {m} (YES share of the '
                      'training states in the leaf)."""')]
            lines += tree_lines(p, tree, m, _PY_TREE) + ["", ""]
        calls = ", ".join(f"yes_expert_{m}(obs)" for m in range(p.n_experts))
        lines += ["def route(obs):",
                  '    """The expert that acts on obs: the most confident YES of the per-expert trees."""',
                  "    obs = _check(obs)",
                  f"    return _first_max([{calls}])", "", ""]
    elif trees["kind"] == "oblique":
        lines += _python_oblique(p, obs_labels)
    else:
        lines += ["def route(obs):",
                  '    """The expert that acts on obs, by one distilled decision tree on the raw observation."""',
                  "    obs = _check(obs)"]
        lines += tree_lines(p, trees["trees"][0], None, _PY_TREE) + ["", ""]
    lines += ["def act_and_route(obs):",
              '    """(action, expert): the deterministic action for one observation and the expert that acted."""',
              "    obs = _check(obs)"]
    if p.router == "neural":
        lines += ["    logits = router_logits(obs)", "    k = _first_max(logits)"]
    else:
        lines.append("    k = route(obs)")
        if p.mode == "gated":
            lines.append("    logits = router_logits(obs)")
    if p.mode == "gated":
        lines += ["    top = max(logits)",
                  "    gate = math.exp(logits[k] - top) / sum(math.exp(z - top) for z in logits)",
                  "    action = []",
                  "    for j in range(N_ACT):",
                  "        mean = gate * (_dot(MEAN_WEIGHT[k][j], obs) + MEAN_BIAS[k][j])",
                  "        action.append(math.tanh(mean) * ACTION_SCALE[j] + ACTION_CENTER[j])"]
    else:
        lines += ["    action = []",
                  "    for j in range(N_ACT):",
                  "        value = _dot(MEAN_WEIGHT[k][j], obs) + MEAN_BIAS[k][j]",
                  "        action.append(max(min(value, ACTION_HIGH[j]), ACTION_LOW[j]))"]
    lines += ["    return action, k", "", "",
              "def act(obs):",
              '    """The deterministic action for one observation, a list of N_ACT floats."""',
              "    return act_and_route(obs)[0]"]
    return lines


def _python_dense(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    lines = [("# Hidden layer l: h_new[u] = relu(sum_i HIDDEN_WEIGHT[l][u][i] * h[i] + HIDDEN_BIAS[l][u]); "
             "layer 0 reads obs:"),
             *[f"#   column {label}" for label in obs_labels],
             "HIDDEN_WEIGHT = ["]
    for i in range(len(p.hidden)):
        weight = p.array(f"hidden.{i}.weight")
        lines.append(f"    [  # layer {i}: {weight.shape[0]} units x {weight.shape[1]} inputs")
        for u, row in enumerate(weight):
            lines.append(f"        [  # unit {u}")
            lines += wrap_values([_py(v) for v in row], "            ")
            lines.append("        ],")
        lines.append("    ],")
    lines += ["]", "HIDDEN_BIAS = ["]
    for i in range(len(p.hidden)):
        lines.append(f"    [  # layer {i}")
        lines += wrap_values([_py(v) for v in p.array(f"hidden.{i}.bias")], "        ")
        lines.append("    ],")
    lines += ["]", "# Mean head: action j before tanh = sum_u MEAN_WEIGHT[j][u] * h[u] + MEAN_BIAS[j]",
              "MEAN_WEIGHT = ["]
    for j, row in enumerate(p.array("mean_head.weight")):
        lines.append(f"    [  # action {j}: {clean_name(p.act_names[j])}")
        lines += wrap_values([_py(v) for v in row], "        ")
        lines.append("    ],")
    lines += ["]", "MEAN_BIAS = [" + ", ".join(_py(v) for v in p.array("mean_head.bias")) + "]", "", "",
              "def _dot(weights, values):",
              "    total = 0.0",
              "    for w, x in zip(weights, values):",
              "        total += w * x",
              "    return total", "", "",
              "def act(obs):",
              '    """The deterministic action for one observation, a list of N_ACT floats."""',
              "    h = _check(obs)",
              "    for weight, bias in zip(HIDDEN_WEIGHT, HIDDEN_BIAS):",
              "        h = [max(_dot(row, h) + b, 0.0) for row, b in zip(weight, bias)]",
              "    return [math.tanh(_dot(MEAN_WEIGHT[j], h) + MEAN_BIAS[j]) * ACTION_SCALE[j] + ACTION_CENTER[j]",
              "            for j in range(N_ACT)]"]
    return lines


# How the Python file standardises component i, as the library does (smose.interpret.oblique.standardised).
_PY_STANDARDISED = "_f32(_f32(obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i])"


def _python_oblique(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    trees = p.routing_trees
    assert trees is not None
    mean, scale, weight, bias = oblique_arrays(trees)
    tests, _ = oblique_tests(trees)
    lines = _py_vector("OBLIQUE_MEAN", mean, obs_labels, "the tree's tests read x[i] = (obs[i] - OBLIQUE_MEAN[i]) / "
                       "OBLIQUE_SCALE[i]")
    lines += _py_vector("OBLIQUE_SCALE", scale, obs_labels, "standard deviations of the states the tree was fitted on")
    lines.append("# Test t goes the 'if' way when HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x[i] <= 0")
    lines.append("HYPERPLANE_WEIGHT = [")
    for t, node in enumerate(tests):
        lines.append(f"    [  # test {t} (node {node['id']})")
        lines += [f"        {_py(v)},  # {label}" for v, label in zip(weight[t], obs_labels)]
        lines.append("    ],")
    lines += ["]", "HYPERPLANE_BIAS = [" + ", ".join(_py(v) for v in bias) + "]", "", "",
              "def _standardised(obs):",
              '    """x[i] = (obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i], the subtraction and the division each',
              '    rounded to float32, as the library computes them."""',
              f"    return [{_PY_STANDARDISED} for i in range(N_OBS)]", "", "",
              "def _hyperplane(t, x):",
              '    """HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x[i] in float64, summed in index order as',
              '    the library does (each product of two float32 numbers is exact)."""',
              "    total = HYPERPLANE_BIAS[t]",
              "    for w, xi in zip(HYPERPLANE_WEIGHT[t], x):",
              "        total += w * xi",
              "    return total", "", "",
              "def route(obs):",
              '    """The expert that acts on obs, by one oblique tree (hyperplanes on the standardised',
              '    observation)."""',
              "    obs = _check(obs)"]
    if tests:
        lines.append("    x = _standardised(obs)")
    lines += oblique_tree_lines(p, trees, _PY_TREE, "_hyperplane({row}, x) <= 0.0") + ["", ""]
    return lines
