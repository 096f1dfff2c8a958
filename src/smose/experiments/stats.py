"""Aggregate statistics over seeds and tasks, from ``rliable`` (the field's standard, Agarwal et al. 2021).

Scores are matrices [runs × tasks]. On one task: the interquartile mean (IQM) of the seeds with a percentile
bootstrap CI, and the probability of improvement (the Mann-Whitney U statistic over all pairs of seeds). Across
tasks: scores normalised per task, (return − random policy) / (the poster's SAC-L − random policy), then the IQM with
stratified bootstrap CIs (seeds resampled within each task) and performance profiles (the fraction of runs above
each normalised score τ). Bootstraps draw from NumPy's global RNG, which rliable uses; it is seeded here and put back
afterwards, so tables are reproducible and callers' random streams untouched.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 5000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
PROFILE_TAUS = np.linspace(0.0, 1.5, 61)  # normalised scores τ of the performance profiles


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        with warnings.catch_warnings():  # arch warns about its own deprecations on every call
            warnings.simplefilter("ignore")
            yield
    finally:
        np.random.set_state(state)


def _rliable():
    from rliable import library, metrics  # imported here: rliable brings pandas, scipy and arch

    return library, metrics


def _matrix(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean (rliable's aggregate_iqm: scipy's trim_mean with 25% cut from each end); with fewer than
    4 values nothing is cut and it is the mean."""
    if len(values) == 0:
        return float("nan")
    _, metrics = _rliable()
    return float(metrics.aggregate_iqm(_matrix(values)))


def iqm_ci(scores: np.ndarray | Sequence[float]) -> tuple[float, float]:
    """Percentile bootstrap CI of the IQM; ``scores`` [runs × tasks] (a 1-D sequence is one task), seeds resampled
    within each task."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores.reshape(-1, 1) if scores.ndim == 1 else scores
    if scores.size == 0:
        return float("nan"), float("nan")
    library, metrics = _rliable()
    with _seeded():
        _, intervals = library.get_interval_estimates(
            {"x": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=BOOTSTRAP_RESAMPLES,
            confidence_interval_size=CONFIDENCE)
    low, high = intervals["x"][:, 0]
    return float(low), float(high)


def probability_of_improvement(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """P(X > Y) + ½ P(X = Y) for a run of X and a run of Y on the same task, averaged over tasks (rliable); 0.5 = no
    edge either way. 1-D sequences are the seeds of one task."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = (a.reshape(-1, 1) if a.ndim == 1 else a), (b.reshape(-1, 1) if b.ndim == 1 else b)
    if a.size == 0 or b.size == 0:
        return float("nan")
    _, metrics = _rliable()
    return float(metrics.probability_of_improvement(a, b))


def normalise(returns: np.ndarray, random: float, reference: float) -> np.ndarray:
    """(return − random) / (reference − random): 0 = the random policy, 1 = the reference (the poster's SAC-L)."""
    return (np.asarray(returns, dtype=np.float64) - random) / (reference - random)


def aggregate_iqm(score_dict: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """name -> (IQM, CI low, CI high) of normalised scores [runs × tasks] with stratified bootstrap CIs."""
    library, metrics = _rliable()
    with _seeded():
        points, intervals = library.get_interval_estimates(
            score_dict, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=BOOTSTRAP_RESAMPLES,
            confidence_interval_size=CONFIDENCE)
    return {k: (float(points[k][0]), float(intervals[k][0, 0]), float(intervals[k][1, 0])) for k in score_dict}


def performance_profiles(score_dict: dict[str, np.ndarray], taus: np.ndarray = PROFILE_TAUS
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """name -> fraction of runs whose normalised score exceeds each τ, and its bootstrap CI [2, len(taus)]."""
    library, _ = _rliable()
    with _seeded():
        return library.create_performance_profile(score_dict, taus, reps=2000, confidence_interval_size=CONFIDENCE)


def plot_aggregate(aggregates: dict[str, tuple[float, float, float]], title: str, path: Path) -> Path:
    """Horizontal IQM with its CI per name (rliable's plot_interval_estimates), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    names = list(aggregates)
    points = {n: np.array([aggregates[n][0]]) for n in names}
    intervals = {n: np.array([[aggregates[n][1]], [aggregates[n][2]]]) for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, _ = plot_utils.plot_interval_estimates(points, intervals, metric_names=[title], algorithms=names,
                                                    xlabel="normalised score", subfigure_width=6.0,
                                                    row_height=0.6, xlabel_y_coordinate=-0.3)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_profiles(profiles: dict[str, np.ndarray], cis: dict[str, np.ndarray], title: str, path: Path,
                  taus: np.ndarray = PROFILE_TAUS) -> Path:
    """Performance profiles with their CI bands (rliable's plot_performance_profiles), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax,
                                             xlabel="normalised score τ", ylabel="fraction of runs with score > τ")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
