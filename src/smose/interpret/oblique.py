"""Oblique decision trees fitted with CMA-ES: the form of tree in the authors' pre-release code.

One multiclass tree of depth ≤ 3, complete: every internal node tests a hyperplane over the standardised state,
``w · x + b <= 0`` with ``x = (s - mean) / scale`` (true: left), and every leaf names the expert most of the states
reaching it were routed to by the neural router (majority vote, ties to the lowest index). CMA-ES (the ``cma``
package, population 64 as the authors) minimises the misrouted fraction of the training states, from one of two
starts:

- ``router`` (the default): the best complete tree whose every node is one of the router's own boundaries between two
  experts, ``z_i(s) = z_j(s)`` (:func:`router_boundaries`, :func:`boundary_tree`), refined with a small step size
  (σ0 = 0.03 on hyperplanes of unit weight norm). The router's choice regions are bounded by exactly these
  hyperplanes, so the search starts where the answer's pieces are;
- ``groups``: the better (fewer states misrouted) of the router start's tree and the best tree of expert groups
  (:func:`groups_start`): for each way to place the most used experts at the leaves (:func:`leaf_layouts`), every
  internal node a logistic regression between the experts of its left subtree and those of its right
  (:func:`group_hyperplane`). Where a node must separate several experts from several others, no single boundary
  between two experts does, and this start finds a tree that gives every expert its own leaf. σ0 = 0.03 as the router
  start's;
- ``zeros`` (the authors' ``cma_tree.py``): all weights and biases zero, σ0 = 1.

Measured on 100k-step runs of the six MuJoCo tasks the router start agrees with the router far more often for the same
generations than zeros (benchmarks/results/oblique-start/).

The decision of a node is defined by one fixed sequence of IEEE operations (:func:`node_activations`: the state
standardised in float32, the hyperplane summed in float64 in index order over exact products), so that an export in
another language reproduces it bit for bit; the hyperplane restated on the physical state (:func:`physical_hyperplane`)
is for reading.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from smose.choices import (  # noqa: F401 (used and re-exported)
    CMA_DEFAULT_ITERATIONS,
    CMA_DEFAULT_START,
    CMA_POPULATION,
    CMA_STARTS,
)

# The initial step size of each start: the authors' (cma_tree.py) from zeros; from the boundary tree a small one, which
# refines its hyperplanes (scaled to unit weight norm) where a large one would throw them away.
CMA_SIGMA0 = {"zeros": 1.0, "router": 0.03, "groups": 0.03}
DEFAULT_ITERATIONS = CMA_DEFAULT_ITERATIONS
# The boundary tree search tries every pair boundary at every node up to this many pairs (28: M = 8 experts); with
# more, each node above the last level tries the BOUNDARY_BEAM pairs that split its states best on their own.
BOUNDARY_BEAM = 28
# Deeper complete trees have too many hyperplanes to search and to read.
MAX_DEPTH = 3
# The groups start fits each distinct split's logistic regression on at most this many of its states (evenly spaced
# through them): a few hundred splits take seconds rather than minutes, and CMA-ES refines every hyperplane on all the
# states afterwards.
GROUP_FIT_STATES = 4096
# States per matrix product in CMA-ES's loss (misrouted_many): a generation's products for this many states fit in
# the cache (64 trees × 7 nodes × 2048 states in float32: 3.7 MB), twice as fast as one product for all the states;
# the leaves are counted chunk by chunk too, so a generation's memory does not grow with the states.
LOSS_CHUNK = 2048


def complete_tree(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) child ids of a complete binary tree of ``depth`` in pre-order (children after their parent, as
    the other trees); leaves have -1. Internal nodes are those with left >= 0."""
    left, right = [], []

    def build(level: int) -> int:
        i = len(left)
        left.append(-1)
        right.append(-1)
        if level < depth:
            left[i] = build(level + 1)
            right[i] = build(level + 1)
        return i

    build(0)
    return np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)


def standardisation(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mean, scale) of the states; a constant feature gets scale 1 so it stays finite (and irrelevant)."""
    states = np.asarray(states, dtype=np.float64)
    mean, std = states.mean(axis=0), states.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def standardised(obs: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``x_f = (s_f - mean_f) / scale_f`` in float32: the float32 observation minus the float32 mean, rounded to
    float32, divided by the float32 scale, rounded to float32 (two correctly rounded IEEE operations, which every
    language reproduces)."""
    obs = np.asarray(obs, dtype=np.float32)
    with np.errstate(over="ignore"):  # a huge state over a tiny scale is infinite here and in every export alike
        return (obs - mean.astype(np.float32)) / scale.astype(np.float32)


def node_activations(obs: np.ndarray, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray,
                     bias: np.ndarray) -> np.ndarray:
    """[B, n_nodes] ``b + Σ_f w_f·x_f`` (the library's decision: a state goes left where this is <= 0).

    ``x`` is :func:`standardised` (float32); ``w`` and ``b`` are float32. The sum is taken in float64 from ``b``,
    adding ``w_f·x_f`` for f = 0, 1, ... in index order. Each product of two float32 numbers is exact in float64, so
    the only roundings are the additions, in a fixed order: an export that computes in float64 in the same order gets
    the same bits, whether or not its compiler fuses the multiply and the add.
    """
    x = standardised(obs, mean, scale).astype(np.float64)
    weight = np.asarray(weight, dtype=np.float32).astype(np.float64)
    total = np.broadcast_to(np.asarray(bias, dtype=np.float32).astype(np.float64), (x.shape[0], weight.shape[0]))
    total = total.copy()
    with np.errstate(invalid="ignore"):  # 0·inf is NaN (goes right) here and in every export alike
        for f in range(x.shape[1]):
            total += x[:, f, None] * weight[None, :, f]
    return total


def physical_hyperplane(weight: np.ndarray, bias: float, mean: np.ndarray,
                        scale: np.ndarray) -> tuple[np.ndarray, float]:
    """The node's test ``w · (s - mean) / scale + b <= 0`` restated on the state itself: (weights, threshold) with
    ``Σ_f weights_f·s_f <= threshold`` (float64)."""
    w = np.asarray(weight, dtype=np.float64) / np.asarray(scale, dtype=np.float64)
    return w, float(np.dot(w, np.asarray(mean, dtype=np.float64)) - float(bias))


def leaf_classes(leaves: np.ndarray, labels: np.ndarray, n_nodes: int, n_classes: int) -> np.ndarray:
    """[n_nodes, n_classes] counts of each label among the states reaching each node id in ``leaves``."""
    return np.bincount(leaves * n_classes + labels, minlength=n_nodes * n_classes).reshape(n_nodes, n_classes)


def router_boundaries(router_weight: np.ndarray, router_bias: np.ndarray, mean: np.ndarray,
                      scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The router's boundary between experts i and j (for every pair i < j) as a hyperplane over the standardised
    state: (weights [P, n_obs], biases [P]) with ``w · x + b <= 0`` exactly where ``z_i(s) >= z_j(s)`` (the router
    prefers i, or ties, which its argmax gives to the lower index i), for the router's logits ``z = Θ s + c`` and
    ``x = (s - mean) / scale``; each scaled to ``||w|| = 1`` (a pair whose rows of Θ are equal keeps w = 0).
    float64."""
    theta = np.asarray(router_weight, dtype=np.float64)
    c = np.asarray(router_bias, dtype=np.float64)
    mean, scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    pairs = [(i, j) for i in range(len(theta)) for j in range(i + 1, len(theta))]
    difference = np.asarray([theta[j] - theta[i] for i, j in pairs]).reshape(len(pairs), theta.shape[1])
    # z_j - z_i = d · s + (c_j - c_i), and s = x ⊙ scale + mean
    weight = difference * scale
    bias = difference @ mean + np.asarray([c[j] - c[i] for i, j in pairs]).reshape(len(pairs))
    norm = np.linalg.norm(weight, axis=1)
    norm = np.where(norm > 0, norm, 1.0)
    return weight / norm[:, None], bias / norm


def boundary_tree(go_left: np.ndarray, labels: np.ndarray, n_classes: int, depth: int,
                  beam: int = BOUNDARY_BEAM) -> tuple[list[int], int]:
    """The complete tree of ``depth`` over candidate splits that routes the most states to their label with
    majority-vote leaves: (the candidate of each internal node in pre-order, the number of states it labels right).

    ``go_left`` [N, P] says for each state which way each of P candidate splits sends it. The search is exhaustive
    (best subtree of each side for every split of a node) while P <= ``beam``; otherwise each node above the last
    level tries only the ``beam`` splits that label the most of its states right as a tree of depth 1. Ties go to the
    lower candidate index.
    """
    go_left = np.asarray(go_left, dtype=bool)
    if go_left.ndim != 2 or go_left.shape[1] == 0:
        raise ValueError(f"boundary_tree needs [states, splits] with at least one split, got shape {go_left.shape}")
    # counts as float64 matrix products: exact (integers far below 2**53) and fast
    go_left_float = go_left.astype(np.float64)
    one_hot = np.eye(n_classes, dtype=np.float64)[np.asarray(labels, dtype=np.int64)]

    def one_level(rows: np.ndarray) -> np.ndarray:  # [P] states each split labels right as a tree of depth 1
        left_counts = go_left_float[rows].T @ one_hot[rows]  # [P, n_classes]
        right_counts = one_hot[rows].sum(axis=0) - left_counts
        return left_counts.max(axis=1) + right_counts.max(axis=1)

    def best(rows: np.ndarray, levels: int) -> tuple[int, list[int]]:
        if len(rows) == 0:  # no state to route: any splits do
            return 0, [0] * (2**levels - 1)
        scores = one_level(rows)
        if levels == 1:
            split = int(np.argmax(scores))
            return int(round(scores[split])), [split]
        order = np.argsort(-scores, kind="stable")[:beam] if len(scores) > beam else range(len(scores))
        most, plan = -1, []
        for split in order:
            goes = go_left[rows, split]
            correct_left, plan_left = best(rows[goes], levels - 1)
            correct_right, plan_right = best(rows[~goes], levels - 1)
            correct = correct_left + correct_right
            if correct > most or (correct == most and split < plan[0]):
                most, plan = correct, [int(split), *plan_left, *plan_right]
        return most, plan

    correct, plan = best(np.arange(len(one_hot)), depth)
    return plan, correct


def loss_inputs(states: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """[N, n_obs + 1] float32: the standardised states with a column of ones, what CMA-ES's loss multiplies each
    node's weights and bias by."""
    return np.concatenate([standardised(states, mean, scale), np.ones((len(states), 1), dtype=np.float32)], axis=1)


def boundary_start(x: np.ndarray, labels: np.ndarray, n_classes: int, depth: int,
                   router: tuple[np.ndarray, np.ndarray], mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The router start (module docstring): [n_internal, n_obs + 1] float64 weights then bias of each internal node
    of the best complete tree of ``depth`` over the router's pair boundaries, for the states ``x``
    (:func:`loss_inputs`) and their ``labels``."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    boundary_weight, boundary_bias = router_boundaries(*router, mean, scale)
    go_left = (x[:, :-1].astype(np.float64) @ boundary_weight.T + boundary_bias) <= 0
    with threadpool_limits(limits=1, user_api="blas"):  # many small products: threads cost more than they give
        plan, _ = boundary_tree(go_left, labels, n_classes, depth)
    return np.concatenate([boundary_weight[plan], boundary_bias[plan, None]], axis=1)


def leaf_layouts(experts: tuple[int, ...], depth: int) -> Iterator[int | tuple]:
    """Every way to place ``experts`` (distinct, at most 2**depth) at the leaves of the complete tree of ``depth``, up
    to mirror images: nested pairs (left, right) down to single experts; an expert alone in a subtree takes all its
    leaves. Eight experts at depth 3 have 8! / 2**7 = 315 layouts."""
    if len(experts) == 1:
        yield experts[0]
        return
    if depth == 0 or len(experts) > 2**depth:
        return
    first, rest = experts[0], experts[1:]
    half = 2 ** (depth - 1)
    for size in range(min(len(rest), half - 1) + 1):  # the first expert goes left: each mirror pair once
        for chosen in itertools.combinations(rest, size):
            left = (first, *chosen)
            right = tuple(e for e in rest if e not in chosen)
            if right and len(right) <= half:
                for left_layout in leaf_layouts(left, depth - 1):
                    for right_layout in leaf_layouts(right, depth - 1):
                        yield left_layout, right_layout


def layout_experts(layout: int | tuple) -> tuple[int, ...]:
    """The experts at the leaves of a layout (:func:`leaf_layouts`), left to right."""
    return (layout,) if isinstance(layout, int) else layout_experts(layout[0]) + layout_experts(layout[1])


def send_all(n_inputs: int, right: bool) -> np.ndarray:
    """[n_inputs] weights 0 then bias: the hyperplane (``w · x + b <= 0``: left) that sends every state right (bias
    1) or left (bias -1)."""
    return np.concatenate([np.zeros(n_inputs - 1), [1.0 if right else -1.0]])


def group_hyperplane(x: np.ndarray, labels: np.ndarray, left: tuple[int, ...], right: tuple[int, ...]) -> np.ndarray:
    """[n_obs + 1] float64 weights then bias, ``||w|| = 1``, of the hyperplane that sends the states routed to the
    ``left`` experts left (``w · x + b <= 0``) and those routed to the ``right`` experts right: an L2-regularised
    logistic regression (scikit-learn's, C = 10) on those states (``x`` as :func:`loss_inputs`), at most
    GROUP_FIT_STATES of them evenly spaced."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    rows = np.flatnonzero(np.isin(labels, left + right))
    rows = rows[np.linspace(0, len(rows) - 1, min(len(rows), GROUP_FIT_STATES)).astype(np.int64)]
    goes_right = np.isin(labels[rows], right)
    if goes_right.all() or not goes_right.any():  # one side has no state: send everything to the side that has
        return send_all(x.shape[1], right=bool(goes_right.all()))
    with warnings.catch_warnings():  # a start, refined by CMA-ES after: an unconverged regression is no error
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=10.0, max_iter=500).fit(x[rows, :-1].astype(np.float64), goes_right)
    weight, bias = model.coef_[0], float(model.intercept_[0])  # > 0: right
    norm = np.linalg.norm(weight)
    return np.concatenate([weight, [bias]]) / (norm if norm > 0 else 1.0)


def layout_tree(layout: int | tuple, depth: int, split: Callable[[tuple, tuple], np.ndarray],
                n_inputs: int) -> np.ndarray:
    """[2**depth - 1, n_inputs] the internal nodes (pre-order, as :func:`complete_tree`) of the complete tree that
    places a layout's experts at its leaves: ``split(left experts, right experts)`` at each node that divides experts;
    a node above a single expert sends everything left (weights 0, bias -1)."""
    nodes = []

    def place(node: int | tuple, levels: int) -> None:
        if levels == 0:
            return
        if isinstance(node, int):
            nodes.append(send_all(n_inputs, right=False))
            place(node, levels - 1)
            place(node, levels - 1)
        else:
            nodes.append(split(layout_experts(node[0]), layout_experts(node[1])))
            place(node[0], levels - 1)
            place(node[1], levels - 1)

    place(layout, depth)
    return np.stack(nodes)


def groups_start(x: np.ndarray, labels: np.ndarray, n_classes: int, depth: int) -> np.ndarray:
    """The best tree of expert groups (module docstring): [n_internal, n_obs + 1] float64 weights then bias of each
    internal node, for the states ``x`` (:func:`loss_inputs`) and their ``labels``.

    The experts placed are the 2**depth most used (ties to the lower index), and, as a leaf given to a rare expert may
    serve a common one better, the same without the least used of them; each distinct split is fitted once."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    left, right = complete_tree(depth)
    usage = np.bincount(labels, minlength=n_classes)
    used = [int(e) for e in np.argsort(-usage, kind="stable") if usage[e] > 0][:2**depth]
    placed = {tuple(sorted(used[:k])) for k in (len(used), len(used) - 1) if k >= 1}
    layouts = [layout for experts in sorted(placed) for layout in leaf_layouts(experts, depth)]
    splits: dict[tuple, np.ndarray] = {}

    def split(left_experts: tuple, right_experts: tuple) -> np.ndarray:
        key = (left_experts, right_experts)
        if key not in splits:
            splits[key] = group_hyperplane(x, labels, left_experts, right_experts)
        return splits[key]

    with threadpool_limits(limits=1, user_api="blas"):
        trees = np.stack([layout_tree(layout, depth, split, x.shape[1]) for layout in layouts])
        losses = np.concatenate([misrouted_many(x, labels, trees[i:i + CMA_POPULATION], left, right, n_classes)
                                 for i in range(0, len(trees), CMA_POPULATION)])
    return trees[int(np.argmin(losses))]  # ties to the first layout


def decisions(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """[N, n_internal] which way each internal node sends each state (true: left) in CMA-ES's loss: ``x`` the
    standardised states with a column of ones (float32), ``params`` [n_internal, n_obs + 1] each node's weights then
    bias, as a float32 matrix product."""
    return x @ np.asarray(params, dtype=np.float64).T.astype(np.float32) <= 0


def misrouted(x: np.ndarray, labels: np.ndarray, params: np.ndarray, left: np.ndarray, right: np.ndarray,
              n_classes: int) -> float:
    """The fraction of states (``x`` as :func:`decisions`) whose leaf's majority label is not their own, for the
    complete tree (``left``, ``right``: :func:`complete_tree`) with internal nodes ``params``: CMA-ES's loss."""
    from smose.interpret.tree_router import descend

    internal = np.flatnonzero(left >= 0)
    go_left = np.zeros((len(x), len(left)), dtype=bool)
    go_left[:, internal] = decisions(x, params)
    counts = leaf_classes(descend(go_left, left, right), labels, len(left), n_classes)
    return 1.0 - counts.max(axis=1).sum() / len(labels)


def misrouted_many(x: np.ndarray, labels: np.ndarray, params: np.ndarray, left: np.ndarray, right: np.ndarray,
                   n_classes: int) -> np.ndarray:
    """:func:`misrouted` of each tree in ``params`` [C, n_internal, n_obs + 1] (a CMA-ES generation) at once: one
    float32 matrix product for every node of every tree (its roundings may differ from the product per tree's: a
    decision whose activation is within float32 rounding of 0 may differ, where CMA-ES's candidates almost never
    fall), each state's leaf read from a table of every combination of the internal nodes' decisions (one byte: at
    most 8 internal nodes) instead of a walk per tree, and one count for all the trees per chunk of states (the
    memory of a generation does not grow with the states). [C] float64."""
    from smose.interpret.tree_router import descend

    params = np.asarray(params, dtype=np.float64)
    n_trees, n_internal = params.shape[:2]
    internal = np.flatnonzero(left >= 0)
    if n_internal != len(internal) or n_internal > 8:
        raise ValueError(f"misrouted_many needs the {len(internal)} internal nodes of the tree (at most 8), "
                         f"got {n_internal}")
    combinations = np.arange(2**n_internal)
    go_left = np.zeros((len(combinations), len(left)), dtype=bool)
    go_left[:, internal] = (combinations[:, None] >> np.arange(n_internal)) & 1
    leaf_of = descend(go_left, left, right)  # [2**n_internal] the leaf each combination of decisions reaches
    flat = params.reshape(n_trees * n_internal, -1).astype(np.float32)
    tree_offset = len(left) * np.arange(n_trees)[:, None]  # each tree's node ids are its own
    counts = np.zeros((n_trees * len(left), n_classes), dtype=np.int64)
    for start in range(0, len(x), LOSS_CHUNK):  # a chunk's products and counts stay in cache, whatever the states
        goes = (flat @ x[start:start + LOSS_CHUNK].T <= 0).reshape(n_trees, n_internal, -1)
        codes = np.zeros(goes[:, 0].shape, dtype=np.uint8)  # bit i: internal node i sends the state left
        for i in range(n_internal):
            codes |= goes[:, i].view(np.uint8) << np.uint8(i)
        leaves = leaf_of[codes] + tree_offset
        counts += leaf_classes(leaves.ravel(), np.tile(labels[start:start + LOSS_CHUNK], n_trees),
                               n_trees * len(left), n_classes)
    correct = counts.max(axis=1).reshape(n_trees, len(left)).sum(axis=1)
    return 1.0 - correct / len(labels)


def fit(states: np.ndarray, labels: np.ndarray, n_classes: int, depth: int, iterations: int = DEFAULT_ITERATIONS,
        seed: int = 0, router: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True,
        start: str = CMA_DEFAULT_START) -> dict:
    """Fit a complete oblique tree of ``depth`` to the labels with CMA-ES; returns the standardisation, the node
    structure and each internal node's (weight, bias) in float32 (rows of non-internal nodes are zero), with how the
    fit went.

    ``start`` (module docstring): "router" or "groups" (both need ``router``, the linear router's (Θ, c) whose choices
    the labels are) or "zeros"; without a router, or with a router of one expert (no boundaries, and every tree routes
    to it), the start is zeros, as the authors'. The loss is the misrouted fraction with majority-vote leaves
    (:func:`misrouted`), evaluated with float32 matrix products (fast; away from activations within rounding of 0 the
    same decisions as node_activations) for a whole generation at once (:func:`misrouted_many`). The best candidate
    ever seen, the start included, is kept.
    ``progress``: a bar of the generations on a terminal (False: none).
    """
    import cma  # only needed to fit, not to use the trees
    from threadpoolctl import threadpool_limits  # installed with scikit-learn
    from tqdm import tqdm

    states = np.asarray(states, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n_obs = states.shape[1]
    left, right = complete_tree(depth)
    internal = np.flatnonzero(left >= 0)
    mean, scale = standardisation(states)
    x = loss_inputs(states, mean, scale)

    def unpack(vector: np.ndarray) -> np.ndarray:  # [n_internal, n_obs + 1]: weights then bias
        return np.asarray(vector, dtype=np.float64).reshape(len(internal), n_obs + 1)

    dimension = len(internal) * (n_obs + 1)
    if start not in CMA_SIGMA0:
        raise ValueError(f"unknown CMA-ES start {start!r}; expected one of {', '.join(CMA_STARTS)}")
    if router is None or len(router[0]) < 2:  # one expert has no boundaries (and every tree routes to it)
        start = "zeros"
    x0 = np.zeros(dimension)
    if start != "zeros":
        x0 = boundary_start(x, labels, n_classes, depth, router, mean, scale).ravel()
    start_loss = misrouted(x, labels, unpack(x0), left, right, n_classes)
    if start == "groups":
        groups = groups_start(x, labels, n_classes, depth).ravel()
        groups_loss = misrouted(x, labels, unpack(groups), left, right, n_classes)
        if groups_loss < start_loss:
            x0, start_loss = groups, groups_loss
    es = cma.CMAEvolutionStrategy(x0, CMA_SIGMA0[start], {
        "popsize": CMA_POPULATION, "seed": int(seed) % (2**31 - 2) + 1,  # cma reads seed 0 as "from the clock"
        "maxiter": iterations, "verbose": -9, "tolfun": 0, "tolflatfitness": iterations, "tolx": 0,
        "tolfunhist": 0, "tolstagnation": iterations + 1,
    })
    best, best_loss = x0, start_loss
    # a fit takes minutes on large runs: a bar on a terminal (tqdm leaves it off elsewhere), gone when done
    bar = tqdm(total=iterations, disable=None if progress else True, leave=False, unit="gen",
               desc=f"oblique tree ({len(labels):,} states)", dynamic_ncols=True)
    with bar, threadpool_limits(limits=1, user_api="blas"):  # small products: threads cost more than they give
        while best_loss > 0.0 and not es.stop():
            candidates = es.ask()
            losses = misrouted_many(x, labels, np.stack([unpack(c) for c in candidates]), left, right, n_classes)
            es.tell(candidates, losses.tolist())
            i = int(np.argmin(losses))
            if losses[i] < best_loss:
                best, best_loss = np.asarray(candidates[i]), losses[i]
                bar.set_postfix_str(f"misrouted {100 * best_loss:.2f}%", refresh=False)
            bar.update()
    params = unpack(best).astype(np.float32)
    weight = np.zeros((len(left), n_obs), dtype=np.float32)
    bias = np.zeros(len(left), dtype=np.float32)
    weight[internal], bias[internal] = params[:, :n_obs], params[:, n_obs]
    return {"mean": mean, "scale": scale, "left": left, "right": right, "weight": weight, "bias": bias,
            "start": start, "sigma0": CMA_SIGMA0[start], "start_misrouted": float(start_loss),
            "generations": int(es.countiter), "train_misrouted": float(best_loss)}


def describe_hyperplane(weights: np.ndarray, threshold: float, std_weights: np.ndarray, names: list[str],
                        strongest: int = 3) -> tuple[str, str]:
    """(test, comment) for a rule file: the test ``a·name + b·name + … <= t`` on the physical state with the
    ``strongest`` terms (by weight per standard deviation of the feature, which is what makes terms comparable),
    and a comment saying in words how much of the node's weight they carry."""
    magnitude = np.abs(np.asarray(std_weights, dtype=np.float64))
    total = magnitude.sum()
    order = [int(f) for f in np.argsort(-magnitude, kind="stable")[:strongest] if magnitude[f] > 0]
    test = ""
    for f in order:
        coefficient = float(weights[f])
        sign = "-" if coefficient < 0 else "+"
        test += (f"{sign} " if test else ("-" if coefficient < 0 else "")) + f"{abs(coefficient):.3g}·{names[f]} "
    test = test.strip() or "0"
    rest = int(np.count_nonzero(magnitude)) - len(order)
    if rest:
        test += f" + … ({rest} weaker term{'s' if rest != 1 else ''})"
    if total == 0:
        return f"{test} <= {threshold:.4g}", "no feature has weight: every state goes this way"
    shares = ", ".join(f"{names[f]} {100 * magnitude[f] / total:.0f}%" for f in order)
    return f"{test} <= {threshold:.4g}", f"weight per standard deviation: {shares}"
