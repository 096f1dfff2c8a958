"""States on the policy's decision boundaries, where a rounding difference would change the expert that acts.

Random states almost never land within a rounding error of a split threshold or of a tie between two router logits,
so checks of exported controllers against the library add these states on purpose:

- ``threshold_states``: for every split of every distilled tree, states that reach the split and put its tested input
  (``Θ_mf · s_f`` for per-expert trees, ``s_f`` for the multiclass tree) on the threshold: float32 observations a few
  float32 steps either side, float64 observations between those steps and on the threshold itself (a controller that
  rounds them to float32 differently from the library, or compares them unrounded, decides differently there);
- ``hyperplane_states``: the same for every test of an oblique tree, whose hyperplane is crossed along its
  strongest features (``decision_states`` picks the function for a tree file);
- ``logit_tie_states``: states where two router logits are equal up to the float32 rounding of the state;
- ``invalid_observations``: NaN, ±inf and out-of-range components, which every format must reject;
  ``limit_observations``: valid ones at the edge of the range.

These return float64 arrays [N, n_obs] (the float32 observations among them are exactly representable);
``to_float32`` rounds them as the library does.
"""

from __future__ import annotations

import numpy as np

from smose.algo.policy import OBS_LIMIT

# Float32 steps taken either side of a threshold, and where float64 observations sit between two of those steps
# (0.5 is the exact midpoint, which float32 rounding sends to the even neighbour).
THRESHOLD_ULPS = 3
BETWEEN_STEPS = (0.25, 0.5, 0.75)
# Oblique tests: float32 steps searched either side of a hyperplane's exact crossing for the library's, and states
# drawn over the tree's standardisation to find ones that reach each test.
HYPERPLANE_SEARCH = 64
HYPERPLANE_CANDIDATES = 4096


def _path_to(nodes: list[dict], target: int) -> list[tuple[dict, bool]]:
    """(ancestor, goes left) from the root down to node ``target``."""
    parent: dict[int, tuple[int, bool]] = {}
    for i, node in enumerate(nodes):
        if not node["leaf"]:
            parent[node["left"]], parent[node["right"]] = (i, True), (i, False)
    path, i = [], target
    while i in parent:
        i, left = parent[i]
        path.append((nodes[i], left))
    return path[::-1]


def _reaching(base: np.ndarray, path: list[tuple[dict, bool]], theta: np.ndarray | None) -> np.ndarray:
    """``base`` with the features tested on ``path`` moved well inside the region that leads down the path."""
    lower: dict[int, float] = {}
    upper: dict[int, float] = {}
    for node, left in path:
        f, t = node["feature"], node["threshold"]
        if left:
            upper[f] = min(upper.get(f, np.inf), t)
        else:
            lower[f] = max(lower.get(f, -np.inf), t)
    state = base.astype(np.float64).copy()
    for f in set(lower) | set(upper):
        weight = 1.0 if theta is None else float(theta[f])
        if weight == 0.0:  # the tested input is always 0; no state changes the branch
            continue
        lo, hi = lower.get(f, -np.inf), upper.get(f, np.inf)
        x = weight * float(np.float32(state[f]))
        if lo < x <= hi:
            continue
        if np.isfinite(lo) and np.isfinite(hi):
            x = (lo + hi) / 2
        elif np.isfinite(hi):
            x = hi - 0.1 * max(abs(hi), 1.0)
        else:
            x = lo + 0.1 * max(abs(lo), 1.0)
        state[f] = x / weight
    return state


def _steps(value: float, dtype: type, count: int) -> list[float]:
    """``value`` in ``dtype`` and the ``count`` neighbours of that dtype on either side."""
    center = dtype(value)
    values = [center]
    for direction in (dtype(np.inf), dtype(-np.inf)):
        x = center
        for _ in range(count):
            x = np.nextafter(x, direction)
            values.append(x)
    return sorted(float(x) for x in values if np.isfinite(x))


def _around(value: float) -> list[float]:
    """Float32 numbers ``THRESHOLD_ULPS`` steps either side of ``value``, float64 numbers between those steps, and
    ``value`` itself with its float64 neighbours (a float64 observation exactly on the threshold)."""
    grid = _steps(value, np.float32, THRESHOLD_ULPS)
    between = [a + (b - a) * q for a, b in zip(grid[:-1], grid[1:]) for q in BETWEEN_STEPS]
    return grid + between + _steps(value, np.float64, THRESHOLD_ULPS)


def threshold_states(trees: dict, base: np.ndarray) -> np.ndarray:
    """For every split of every tree in ``trees`` (a tree file's dict) and every base state: states on the threshold.

    Each base state is first moved (only in the features the path tests) so that it reaches the split; then the
    split's feature is set to each value of ``_around(threshold / Θ_mf)`` (per-expert) or ``_around(threshold)``.
    """
    base = np.atleast_2d(np.asarray(base, dtype=np.float64))
    theta = np.asarray(trees["router_weight"], dtype=np.float32) if trees["kind"] == "per-expert" else None
    states = []
    for m, tree in enumerate(trees["trees"]):
        row = None if theta is None else theta[m]
        nodes = tree["nodes"]
        for i, node in enumerate(nodes):
            if node["leaf"]:
                continue
            f, weight = node["feature"], 1.0 if row is None else float(row[node["feature"]])
            if weight == 0.0:
                continue
            path = _path_to(nodes, i)
            for s in base:
                reaching = _reaching(s, path, row)
                for value in _around(node["threshold"] / weight):
                    state = reaching.copy()
                    state[f] = value
                    states.append(state)
    return np.array(states, dtype=np.float64).reshape(-1, base.shape[1])


def decision_states(trees: dict, base: np.ndarray) -> np.ndarray:
    """States where rounding decides a tree file's choice: ``hyperplane_states`` for an oblique tree,
    ``threshold_states`` for the CART kinds."""
    return (hyperplane_states if trees["kind"] == "oblique" else threshold_states)(trees, base)


def _crossing(node: dict, mean: np.ndarray, scale: np.ndarray, state: np.ndarray, feature: int) -> float | None:
    """The float32 value of ``state[feature]`` at which the library's test of the oblique ``node`` changes side (the
    last value on the side of smaller values), searched within HYPERPLANE_SEARCH float32 steps of where the
    hyperplane crosses in exact arithmetic; None when it does not change there."""
    from smose.interpret.oblique import node_activations, standardised

    weight = np.asarray(node["weights"], dtype=np.float32)[None, :]
    bias = np.asarray([node["bias"]], dtype=np.float32)
    w = weight[0].astype(np.float64)
    x = standardised(state[None, :], mean, scale)[0].astype(np.float64)
    rest = float(bias[0]) + float(np.dot(np.delete(w, feature), np.delete(x, feature)))
    exact = float(mean[feature]) - rest / w[feature] * float(scale[feature])
    if not abs(exact) < OBS_LIMIT / 2:
        return None
    values = np.asarray(_steps(exact, np.float32, HYPERPLANE_SEARCH))
    probes = np.repeat(state[None, :], len(values), axis=0)
    probes[:, feature] = values
    goes_left = node_activations(probes, mean, scale, weight, bias)[:, 0] <= 0
    change = np.flatnonzero(goes_left[1:] != goes_left[:-1])
    return float(values[change[0]]) if len(change) else None


def hyperplane_states(trees: dict, base: np.ndarray, features: int = 2) -> np.ndarray:
    """For every test (hyperplane) of an oblique tree file and every base state: states on the hyperplane.

    Each base state that does not reach the test is replaced by one that does, drawn from states spread over the
    tree's standardisation; then each of the ``features`` features with the largest weights in the test is set to
    each value of ``_around`` the float32 value where the library's decision flips (states that leave the test's
    region on the way stay in: they are checked like any other).
    """
    from smose.interpret.tree_router import TreeRouter, descend

    base = np.atleast_2d(np.asarray(base, dtype=np.float64))
    router = TreeRouter(trees)
    nodes = trees["trees"][0]["nodes"]
    left = np.array([-1 if n["leaf"] else n["left"] for n in nodes], dtype=np.int64)
    right = np.array([-1 if n["leaf"] else n["right"] for n in nodes], dtype=np.int64)
    spread = np.random.default_rng(0).standard_normal((HYPERPLANE_CANDIDATES, base.shape[1]))
    pool = np.concatenate([base, router.mean.astype(np.float64) + 1.5 * spread * router.scale.astype(np.float64)])
    pool = pool.astype(np.float32).astype(np.float64)  # what the library sees of them
    reaches = descend(router.go_left(pool)[0], left, right, path=True)
    states = []
    for i, node in enumerate(nodes):
        if node["leaf"]:
            continue
        order = np.argsort(-np.abs(np.asarray(node["weights"], dtype=np.float64)), kind="stable")[:features]
        for s in pool[reaches[:, i]][: len(base)]:
            for f in order:
                if float(np.float32(node["weights"][f])) == 0.0:
                    continue
                crossing = _crossing(node, router.mean, router.scale, s, int(f))
                if crossing is None:
                    continue
                for value in _around(crossing):
                    state = s.copy()
                    state[f] = value
                    states.append(state)
    return np.array(states, dtype=np.float64).reshape(-1, base.shape[1])


def logit_tie_states(weight: np.ndarray, bias: np.ndarray, base: np.ndarray) -> np.ndarray:
    """For every pair of experts (a, b) and base state s: s moved along Θ_a − Θ_b to where z_a = z_b (in exact
    arithmetic), as float64 and rounded to float32."""
    weight, bias = np.asarray(weight, dtype=np.float64), np.asarray(bias, dtype=np.float64)
    base = np.atleast_2d(np.asarray(base, dtype=np.float64))
    states = []
    for a in range(len(weight)):
        for b in range(a + 1, len(weight)):
            d = weight[a] - weight[b]
            norm = float(d @ d)
            if norm == 0.0:
                continue
            for s in base:
                tie = s + ((bias[b] - bias[a]) - float(d @ s)) / norm * d
                states += [tie, tie.astype(np.float32).astype(np.float64)]
    return np.array(states, dtype=np.float64).reshape(-1, weight.shape[1])


def to_float32(states: np.ndarray) -> np.ndarray:
    """``states`` rounded to float32 as the library rounds observations; beyond float32's range they become ±inf
    (without numpy's overflow warning: those are among the invalid observations on purpose)."""
    with np.errstate(over="ignore"):
        return np.asarray(states).astype(np.float32)


def invalid_observations(n_obs: int) -> np.ndarray:
    """One bad component per row (NaN, ±inf, beyond ±OBS_LIMIT in float32 or beyond float32's range) at either end."""
    bad = [np.nan, np.inf, -np.inf, 2.0 * OBS_LIMIT, -2.0 * OBS_LIMIT, 3e38, 1e39]
    rows = []
    for value in bad:
        for index in sorted({0, n_obs - 1}):
            row = np.zeros(n_obs)
            row[index] = value
            rows.append(row)
    return np.array(rows)


def limit_observations(n_obs: int) -> np.ndarray:
    """Valid observations at the edge of the range: ±OBS_LIMIT, and a float64 value just above OBS_LIMIT that rounds
    down to it in float32 (accepted, as the library rounds before it checks)."""
    above = float(np.nextafter(OBS_LIMIT, np.inf))
    rows = [np.full(n_obs, OBS_LIMIT), np.full(n_obs, -OBS_LIMIT), np.full(n_obs, above)]
    alternating = np.where(np.arange(n_obs) % 2 == 0, OBS_LIMIT, -OBS_LIMIT)
    return np.array([*rows, alternating])
