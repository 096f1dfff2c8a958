"""The ``c`` format: one header-only C99 file, float32, no allocation, only ``fabsf``/``expf``/``tanhf`` from libm.

``smose_act(obs, action)``, and for SMOSE ``smose_route(obs)`` and ``smose_act_route(obs, action)``. The router's
logits and the oblique tree's hyperplanes are summed in double, so the expert is exactly the library's choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from smose.export.exported_policy import ExportedPolicy, oblique_arrays, oblique_tests
from smose.export.formats import FORMATS
from smose.export.source_text import TreeSyntax, clean_name, description, oblique_tree_lines, tree_lines, wrap_values
from smose.observations import OBS_LIMIT_LOG2

if TYPE_CHECKING:
    from smose.algo.policy import Actor

HEADER_NAME = FORMATS["c"].default_file_name  # the name the header's comment tells users to include


def c_bytes(actor: Actor, p: ExportedPolicy) -> bytes:
    """The header's text; the actor is not used (only the Python file and the ONNX graph are run before they are
    written)."""
    return c_source(p).encode()


def _c(value: float) -> str:
    """Shortest text that reads back as the same float32, with the f suffix."""
    text = str(np.float32(value))
    if not any(ch in text for ch in ".en"):
        text += ".0"
    return text + "f"


def _c_double(value: float) -> str:
    text = repr(float(value))
    return text if any(ch in text for ch in ".en") else text + ".0"


_C_TREE = TreeSyntax(
    # the library's test: the float32 input (times the float32 weight) compared in double with the threshold; the
    # (float) cast rounds the product to float even where a compiler keeps extra precision (FLT_EVAL_METHOD != 0)
    weight=_c, threshold=_c_double,
    test="(double)(float)({weight} * obs[{feature}]) <= {threshold}",
    class_test="(double)obs[{feature}] <= {threshold}",
    leaf="return {value}; /* {note} */", if_open="if ({test}) {{ /* {note} */", else_line="} else {", close="}",
    unused_obs="(void)obs;",  # a tree without a test (one class only in training) does not read obs
)


def _c_array(name: str, dims: list[str], values: np.ndarray, labels: list[list[str]], comment: str) -> list[str]:
    """A static const float array, one value per line with its label, nested braces per leading dimension."""
    lines = [f"/* {comment} */", f"static const float {name}{''.join(f'[{d}]' for d in dims)} = {{"]

    def emit(array: np.ndarray, depth: int) -> None:
        pad = "    " * (depth + 1)
        if array.ndim == 1:
            lines.extend(f"{pad}{_c(v)}, /* {label} */" for v, label in zip(array, labels[depth]))
            return
        for idx, sub in enumerate(array):
            lines.append(f"{pad}{{ /* {labels[depth][idx]} */")
            emit(sub, depth + 1)
            lines.append(f"{pad}}},")

    emit(values, 0)
    return lines + ["};"]


def c_source(p: ExportedPolicy) -> str:
    """The header-only C99 file of a policy."""
    title = (f"{HEADER_NAME}: SMOSE controller for {p.env}, {p.n_experts} linear experts, one acts per step."
             if p.is_smose else f"{HEADER_NAME}: dense SAC controller ({p.algo}) for {p.env}.")
    usage = [f"Usage: #include \"{HEADER_NAME}\" in one or more C99 files and link with -lm.",
             "    float action[SMOSE_N_ACT];",
             "    int status = smose_act(obs, action);         obs: SMOSE_N_OBS floats in the order below"]
    if p.is_smose:
        usage.append("    int expert = smose_route(obs);               the expert that acts on obs")
        usage.append("    int expert = smose_act_route(obs, action);   both at once")
    usage += ["Each returns SMOSE_INVALID_OBSERVATION (-1), and writes NaN actions, unless every obs[i] is finite and",
              f"within +-SMOSE_OBS_LIMIT (2^{OBS_LIMIT_LOG2}); smose_act returns 0 otherwise. A double observation "
              "converted to",
              "float by C rounds as the library does.",
              "No allocation, no globals that change, only expf/tanhf/fabsf from libm; arithmetic is float32"]
    usage.append("(the router's logits are summed in double so the expert is exactly the library's choice); do not"
                 if p.is_smose else "(do not")
    usage.append("compile with -ffast-math, which drops the NaN checks.")
    doc = [title, "", *usage, "", *description(p, "c")]
    lines = ["/*"] + [(" * " + line.replace("*/", "* /")).rstrip() for line in doc] + [" */",
             "#ifndef SMOSE_POLICY_H", "#define SMOSE_POLICY_H", "", "#include <math.h>", "",
             f"#define SMOSE_N_OBS {p.n_obs}", f"#define SMOSE_N_ACT {p.n_act}"]
    if p.is_smose:
        lines.append(f"#define SMOSE_N_EXPERTS {p.n_experts}")
    lines.append("")
    obs_labels = [f"{i} {clean_name(name)}" for i, name in enumerate(p.obs_names)]
    act_labels = [f"{j} {clean_name(name)}" for j, name in enumerate(p.act_names)]
    if p.mode == "gated":
        lines += _c_array("SMOSE_ACTION_SCALE", ["SMOSE_N_ACT"], p.action_scale, [act_labels], "(high - low) / 2")
        lines += _c_array("SMOSE_ACTION_CENTER", ["SMOSE_N_ACT"], p.action_center, [act_labels], "(high + low) / 2")
    else:
        lines += _c_array("SMOSE_ACTION_LOW", ["SMOSE_N_ACT"], p.action_low, [act_labels], "lower action bounds")
        lines += _c_array("SMOSE_ACTION_HIGH", ["SMOSE_N_ACT"], p.action_high, [act_labels], "upper action bounds")
    lines.append("")
    lines += _C_OBSERVATION
    lines += _c_smose(p, obs_labels, act_labels) if p.is_smose else _c_dense(p, obs_labels)
    lines += ["", "#endif /* SMOSE_POLICY_H */"]
    return "\n".join(lines) + "\n"


# The library's rule for observations (smose.algo.policy.check_observations), shared by SMOSE and dense headers.
_C_OBSERVATION = [
    f"#define SMOSE_OBS_LIMIT 0x1p{OBS_LIMIT_LOG2}f /* 2^{OBS_LIMIT_LOG2}: observations must be finite and within "
    "+-SMOSE_OBS_LIMIT */",
    "#define SMOSE_INVALID_OBSERVATION (-1)", "",
    "/* 1 if every obs[i] is finite and within +-SMOSE_OBS_LIMIT, else 0 (NaN fails the comparison). */",
    "static inline int smose_valid_observation(const float obs[SMOSE_N_OBS])",
    "{",
    "    for (int i = 0; i < SMOSE_N_OBS; ++i)",
    "        if (!(fabsf(obs[i]) <= SMOSE_OBS_LIMIT))",
    "            return 0;",
    "    return 1;",
    "}", "",
    "static inline int smose_reject_(float action[SMOSE_N_ACT])",
    "{",
    "    for (int j = 0; j < SMOSE_N_ACT; ++j)",
    "        action[j] = NAN;",
    "    return SMOSE_INVALID_OBSERVATION;",
    "}", "",
]


def _c_smose(p: ExportedPolicy, obs_labels: list[str], act_labels: list[str]) -> list[str]:
    experts = [f"expert {m}" for m in range(p.n_experts)]
    lines: list[str] = []
    if p.needs_router_weights:
        lines += _c_array("SMOSE_ROUTER_WEIGHT", ["SMOSE_N_EXPERTS", "SMOSE_N_OBS"], p.array("router.weight"),
                          [experts, obs_labels],
                          "router: logit[m] = sum_i ROUTER_WEIGHT[m][i] * obs[i] + ROUTER_BIAS[m]")
        lines += _c_array("SMOSE_ROUTER_BIAS", ["SMOSE_N_EXPERTS"], p.array("router.bias"), [experts], "router bias")
    lines += _c_array("SMOSE_MEAN_WEIGHT", ["SMOSE_N_EXPERTS", "SMOSE_N_ACT", "SMOSE_N_OBS"],
                      p.array("experts.mean.weight"), [experts, [f"action {a}" for a in act_labels], obs_labels],
                      "experts: mean[k][j] = sum_i MEAN_WEIGHT[k][j][i] * obs[i] + MEAN_BIAS[k][j]")
    lines += _c_array("SMOSE_MEAN_BIAS", ["SMOSE_N_EXPERTS", "SMOSE_N_ACT"], p.array("experts.mean.bias"),
                      [experts, act_labels], "expert mean biases")
    lines.append("")
    if p.needs_router_weights:
        lines += ["/* Router logits in double, summed in index order: every product of two floats is exact in double,",
                  " * so the choice does not depend on rounding (or on contraction into fused multiply-adds). */",
                  ("static inline void smose_router_logits(const float obs[SMOSE_N_OBS], "
                   "double logits[SMOSE_N_EXPERTS])"),
                  "{",
                  "    for (int m = 0; m < SMOSE_N_EXPERTS; ++m) {",
                  "        double z = 0.0;",
                  "        for (int i = 0; i < SMOSE_N_OBS; ++i)",
                  "            z += (double)SMOSE_ROUTER_WEIGHT[m][i] * (double)obs[i];",
                  "        logits[m] = z + (double)SMOSE_ROUTER_BIAS[m];",
                  "    }",
                  "}", "",
                  "/* Index of the largest logit; ties go to the lowest index. */",
                  "static inline int smose_argmax_(const double logits[SMOSE_N_EXPERTS])",
                  "{",
                  "    int best = 0;",
                  "    for (int m = 1; m < SMOSE_N_EXPERTS; ++m)",
                  "        if (logits[m] > logits[best])",
                  "            best = m;",
                  "    return best;",
                  "}", ""]
    trees = p.routing_trees
    if trees is None:
        lines += ["/* The expert that acts on a valid obs: the largest router logit, ties to the lowest index. */",
                  "static inline int smose_choose_(const float obs[SMOSE_N_OBS])",
                  "{",
                  "    double logits[SMOSE_N_EXPERTS];",
                  "    smose_router_logits(obs, logits);",
                  "    return smose_argmax_(logits);",
                  "}"]
    elif trees["kind"] == "per-expert":
        for tree in trees["trees"]:
            m = tree["expert"]
            lines += [f"/* How sure the distilled tree is that the router picks expert {m}. */",
                      f"static inline double smose_yes_expert_{m}(const float obs[SMOSE_N_OBS])", "{"]
            lines += tree_lines(p, tree, m, _C_TREE) + ["}", ""]
        lines += [("/* The expert that acts on a valid obs: the most confident YES of the per-expert trees, ties to the"
                  " lowest index. */"),
                  "static inline int smose_choose_(const float obs[SMOSE_N_OBS])",
                  "{",
                  "    double yes[SMOSE_N_EXPERTS];"]
        lines += [f"    yes[{m}] = smose_yes_expert_{m}(obs);" for m in range(p.n_experts)]
        lines += ["    int best = 0;",
                  "    for (int m = 1; m < SMOSE_N_EXPERTS; ++m)",
                  "        if (yes[m] > yes[best])",
                  "            best = m;",
                  "    return best;",
                  "}"]
    elif trees["kind"] == "oblique":
        lines += _c_oblique(p, obs_labels)
    else:
        lines += ["/* The expert that acts on a valid obs, by one distilled decision tree on the raw observation. */",
                  "static inline int smose_choose_(const float obs[SMOSE_N_OBS])", "{"]
        lines += tree_lines(p, trees["trees"][0], None, _C_TREE) + ["}"]
    lines += ["",
              "/* The expert that acts on obs, or SMOSE_INVALID_OBSERVATION. */",
              "static inline int smose_route(const float obs[SMOSE_N_OBS])",
              "{",
              "    return smose_valid_observation(obs) ? smose_choose_(obs) : SMOSE_INVALID_OBSERVATION;",
              "}", "",
              ("/* Writes the deterministic action for obs and returns the expert that acted (or writes NaN and returns"
               " SMOSE_INVALID_OBSERVATION). */"),
              "static inline int smose_act_route(const float obs[SMOSE_N_OBS], float action[SMOSE_N_ACT])",
              "{",
              "    if (!smose_valid_observation(obs))",
              "        return smose_reject_(action);"]
    if p.mode == "gated":
        choice = "smose_choose_(obs)" if trees is not None else "smose_argmax_(logits)"
        lines += ["    double logits[SMOSE_N_EXPERTS];",
                  "    smose_router_logits(obs, logits);",
                  f"    const int k = {choice};"]
        lines += ["    double top = logits[0];",
                  "    for (int m = 1; m < SMOSE_N_EXPERTS; ++m)",
                  "        if (logits[m] > top)",
                  "            top = logits[m];",
                  "    float total = 0.0f;",
                  "    for (int m = 0; m < SMOSE_N_EXPERTS; ++m)",
                  "        total += expf((float)(logits[m] - top));",
                  "    const float gate = expf((float)(logits[k] - top)) / total;",
                  "    for (int j = 0; j < SMOSE_N_ACT; ++j) {",
                  "        float mean = 0.0f;",
                  "        for (int i = 0; i < SMOSE_N_OBS; ++i)",
                  "            mean += SMOSE_MEAN_WEIGHT[k][j][i] * obs[i];",
                  "        mean = gate * (mean + SMOSE_MEAN_BIAS[k][j]);",
                  "        action[j] = tanhf(mean) * SMOSE_ACTION_SCALE[j] + SMOSE_ACTION_CENTER[j];",
                  "    }"]
    else:
        lines += ["    const int k = smose_choose_(obs);",
                  "    for (int j = 0; j < SMOSE_N_ACT; ++j) {",
                  "        float value = 0.0f;",
                  "        for (int i = 0; i < SMOSE_N_OBS; ++i)",
                  "            value += SMOSE_MEAN_WEIGHT[k][j][i] * obs[i];",
                  "        value += SMOSE_MEAN_BIAS[k][j];",
                  "        if (value > SMOSE_ACTION_HIGH[j])",
                  "            value = SMOSE_ACTION_HIGH[j];",
                  "        if (value < SMOSE_ACTION_LOW[j])",
                  "            value = SMOSE_ACTION_LOW[j];",
                  "        action[j] = value;",
                  "    }"]
    lines += ["    return k;",
              "}", "",
              "/* Writes the deterministic action for obs and returns 0 (or writes NaN and returns",
              " * SMOSE_INVALID_OBSERVATION). */",
              "static inline int smose_act(const float obs[SMOSE_N_OBS], float action[SMOSE_N_ACT])",
              "{",
              "    return smose_act_route(obs, action) < 0 ? SMOSE_INVALID_OBSERVATION : 0;",
              "}"]
    return lines


def _c_dense(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    lines: list[str] = []
    sizes = [p.n_obs, *p.hidden]
    for i, width in enumerate(p.hidden):
        lines.append(f"#define SMOSE_HIDDEN_{i} {width}")
    lines.append("")
    for i in range(len(p.hidden)):
        fan_in = "SMOSE_N_OBS" if i == 0 else f"SMOSE_HIDDEN_{i - 1}"
        lines.append(f"/* hidden layer {i}: h{i}[u] = relu(sum_i HIDDEN_{i}_WEIGHT[u][i] * "
                     f"{'obs' if i == 0 else f'h{i - 1}'}[i] + HIDDEN_{i}_BIAS[u]), {sizes[i + 1]} x {sizes[i]}")
        if i == 0:
            lines += [f" * column {label}" for label in obs_labels]
        lines += [" */", f"static const float SMOSE_HIDDEN_{i}_WEIGHT[SMOSE_HIDDEN_{i}][{fan_in}] = {{"]
        for u, row in enumerate(p.array(f"hidden.{i}.weight")):
            lines.append(f"    {{ /* unit {u} */")
            lines += wrap_values([_c(v) for v in row], "        ")
            lines.append("    },")
        lines += ["};", f"static const float SMOSE_HIDDEN_{i}_BIAS[SMOSE_HIDDEN_{i}] = {{"]
        lines += wrap_values([_c(v) for v in p.array(f"hidden.{i}.bias")], "    ")
        lines.append("};")
    last = f"SMOSE_HIDDEN_{len(p.hidden) - 1}"
    lines += ["/* mean head: action j = tanh(sum_u MEAN_WEIGHT[j][u] * h[u] + MEAN_BIAS[j]) * scale + center */",
              f"static const float SMOSE_MEAN_WEIGHT[SMOSE_N_ACT][{last}] = {{"]
    for j, row in enumerate(p.array("mean_head.weight")):
        lines.append(f"    {{ /* action {j}: {clean_name(p.act_names[j])} */")
        lines += wrap_values([_c(v) for v in row], "        ")
        lines.append("    },")
    lines += ["};", "static const float SMOSE_MEAN_BIAS[SMOSE_N_ACT] = {"]
    lines += wrap_values([_c(v) for v in p.array("mean_head.bias")], "    ")
    lines += ["};", "",
              "/* Writes the deterministic action for obs and returns 0 (or writes NaN and returns",
              " * SMOSE_INVALID_OBSERVATION). */",
              "static inline int smose_act(const float obs[SMOSE_N_OBS], float action[SMOSE_N_ACT])",
              "{",
              "    if (!smose_valid_observation(obs))",
              "        return smose_reject_(action);"]
    previous, fan_in = "obs", "SMOSE_N_OBS"
    for i in range(len(p.hidden)):
        lines += [f"    float h{i}[SMOSE_HIDDEN_{i}];",
                  f"    for (int u = 0; u < SMOSE_HIDDEN_{i}; ++u) {{",
                  "        float z = 0.0f;",
                  f"        for (int i = 0; i < {fan_in}; ++i)",
                  f"            z += SMOSE_HIDDEN_{i}_WEIGHT[u][i] * {previous}[i];",
                  f"        z += SMOSE_HIDDEN_{i}_BIAS[u];",
                  f"        h{i}[u] = z > 0.0f ? z : 0.0f;",
                  "    }"]
        previous, fan_in = f"h{i}", f"SMOSE_HIDDEN_{i}"
    lines += ["    for (int j = 0; j < SMOSE_N_ACT; ++j) {",
              "        float z = 0.0f;",
              f"        for (int i = 0; i < {fan_in}; ++i)",
              f"            z += SMOSE_MEAN_WEIGHT[j][i] * {previous}[i];",
              "        z += SMOSE_MEAN_BIAS[j];",
              "        action[j] = tanhf(z) * SMOSE_ACTION_SCALE[j] + SMOSE_ACTION_CENTER[j];",
              "    }",
              "    return 0;",
              "}"]
    return lines


def _c_oblique(p: ExportedPolicy, obs_labels: list[str]) -> list[str]:
    trees = p.routing_trees
    assert trees is not None
    mean, scale, weight, bias = oblique_arrays(trees)
    tests, _ = oblique_tests(trees)
    if not tests:  # one leaf: every state goes to its expert
        return (["/* The expert that acts on a valid obs: the oblique tree is a single leaf. */",
                 "static inline int smose_choose_(const float obs[SMOSE_N_OBS])", "{", "    (void)obs;"]
                + oblique_tree_lines(p, trees, _C_TREE, "") + ["}"])
    names = [f"test {t} (node {node['id']})" for t, node in enumerate(tests)]
    lines = _c_array("SMOSE_OBLIQUE_MEAN", ["SMOSE_N_OBS"], mean, [obs_labels],
                     "the oblique tree's tests read x[i] = (obs[i] - OBLIQUE_MEAN[i]) / OBLIQUE_SCALE[i]")
    lines += _c_array("SMOSE_OBLIQUE_SCALE", ["SMOSE_N_OBS"], scale, [obs_labels],
                      "standard deviations of the states the tree was fitted on")
    lines += [f"#define SMOSE_N_TESTS {len(tests)}"]
    lines += _c_array("SMOSE_HYPERPLANE_WEIGHT", ["SMOSE_N_TESTS", "SMOSE_N_OBS"], weight, [names, obs_labels],
                      "test t goes the 'if' way when HYPERPLANE_BIAS[t] + sum_i HYPERPLANE_WEIGHT[t][i] * x[i] <= 0")
    lines += _c_array("SMOSE_HYPERPLANE_BIAS", ["SMOSE_N_TESTS"], bias, [names], "hyperplane biases")
    lines += ["",
              "/* Test t of the oblique tree in double, summed in index order as the library does: each product of two",
              " * floats is exact in double, so contraction into fused multiply-adds cannot change the result. */",
              "static inline double smose_hyperplane_(int t, const float x[SMOSE_N_OBS])",
              "{",
              "    double total = (double)SMOSE_HYPERPLANE_BIAS[t];",
              "    for (int i = 0; i < SMOSE_N_OBS; ++i)",
              "        total += (double)SMOSE_HYPERPLANE_WEIGHT[t][i] * (double)x[i];",
              "    return total;",
              "}", "",
              "/* The expert that acts on a valid obs, by one oblique tree (hyperplanes on the standardised",
              " * observation). */",
              "static inline int smose_choose_(const float obs[SMOSE_N_OBS])",
              "{",
              "    float x[SMOSE_N_OBS];",
              "    for (int i = 0; i < SMOSE_N_OBS; ++i) /* each operation rounded to float, as the library does */",
              "        x[i] = (float)((float)(obs[i] - SMOSE_OBLIQUE_MEAN[i]) / SMOSE_OBLIQUE_SCALE[i]);"]
    return lines + oblique_tree_lines(p, trees, _C_TREE, "smose_hyperplane_({row}, x) <= 0.0") + ["}"]
