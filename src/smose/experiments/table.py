"""Results tables from many runs: mean ± std and IQM with a bootstrap CI over seeds, learning curves, paper ratios.

``smose table DIR`` reads every finished run below DIR (a sweep directory, or any directory of run directories such
as ``benchmarks/results/runs``): its ``config.json`` says what was trained, ``eval.json`` gives the final return and
the expert usage, the ``event=eval`` rows of ``metrics.csv`` the learning curve, and ``trees/fidelity.json`` (when
the run was distilled from the model it holds: stale trees are listed as such, without their numbers) the trees'
routing agreement and tree-routed return. Runs are grouped by
(env, algo, M, λ, steps, other settings that differ from the defaults); the seeds of a group are the samples, each
configuration counted once however many copies of it the directory holds. Written to ``DIR/table/`` (or ``--out``):

    table.md        the aggregate table, a task × algorithm view, the comparison with the paper, SMOSE against
                    the baselines, the ablations, the distilled trees, notes on what was left out
    table.csv       one row per group
    paper.csv       the groups run with the paper's settings beside the paper's numbers, as ratios ours/paper
    versus.csv      SMOSE beside each dense baseline of the same task, budget and M (difference, P(improvement))
    trees.csv       one row per distilled run: tree depth, routing agreement, neural and tree-routed returns (empty,
                    with the note "stale", for trees distilled from another model than the run's)
    curves.csv      the learning curves (mean and std over seeds at each evaluation step)
    curves_<env>.png
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from smose.training.config import TrainConfig, read_run_config
from smose.interpret.distill import FIDELITY_FILE, FIDELITY_FORMAT, KINDS, TREES_DIR, stale_trees
from smose.errors import SmoseError
from smose.training.finetune import read_record
from smose.experiments.paper import PAPER_EXPERTS, PAPER_LB_WEIGHT, PAPER_RESULTS, PAPER_STEPS, task_name
from smose.experiments.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, iqm, probability_of_improvement
from smose.experiments.stats import iqm_ci as bootstrap_ci
from smose.experiments.reproduction import (aggregate_section, poster_section, protocols_section, read_eval_times,
                                time_to_poster_section)
from smose.serialization import LINEAR_EVAL_FILE, read_eval, read_json
from smose.experiments.sweep import (DEFAULTS, RUNS_DIR, SWEEP_FILE, USES_EXPERTS, USES_LB, finished_steps, format_float,
                         last_step, result_key)

ALGO_ORDER = ("smose", "sac-s", "sac-m", "sac-l")
BASELINES = ALGO_ORDER[1:]
TAIL_EVALS = 3  # "last 3": the mean of a run's final evaluations, less noisy than the very last one
MIN_SEEDS_FOR_CI = 3  # with two seeds the percentile interval is just [min, max]: not shown
# Config fields the table has columns for; any other result-affecting field that differs from the default is listed
# under "settings" and keeps the runs out of the default groups.
LABELLED_FIELDS = ("env", "algo", "seed", "steps", "experts", "lb_weight", "lb_loss")
TABLE_DIR = "table"


# ---- statistics ------------------------------------------------------------------------------------------------------
def usage_balance(usage: Sequence[float]) -> float:
    """Normalised entropy of expert-usage fractions: 1 = all experts used equally, 0 = one expert does everything.
    Undefined (NaN) for a single expert."""
    u = np.asarray(usage, dtype=np.float64)
    if u.size < 2 or u.sum() <= 0:
        return float("nan")
    p = u / u.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(u.size))


# ---- reading runs ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeRecord:
    """What ``smose distill`` measured for one run (trees/fidelity.json): per tree kind, the held-out routing
    agreement and the return with the trees routing; the neural router's return on the same episodes."""

    depth: int
    dagger: int  # DAgger rounds
    agreement: dict[str, float]  # kind -> fraction of held-out states routed as the router does
    closed_loop: dict[str, float]  # kind -> the same over the steps of the tree-routed evaluation (NaN if unknown)
    neural_return: float
    tree_return: dict[str, float]  # kind -> mean return with the trees routing

    def ratio(self, kind: str) -> float:
        """Tree-routed / neural return; NaN when the neural return is not positive (a ratio would mislead)."""
        return self.tree_return[kind] / self.neural_return if self.neural_return > 0 else float("nan")


@dataclass(frozen=True)
class StaleTrees:
    """A run whose trees/ were distilled from another model than its own (see smose.interpret.distill.stale_trees): its tree
    results are not reported, only why."""

    reason: str


def read_trees(run_dir: Path) -> TreeRecord | StaleTrees | None:
    """The run's distillation summary; StaleTrees when it describes another model than the run's; None when it has
    none. Raises SmoseError for an unreadable one (or an unreadable model, which the trees cannot be checked with)."""
    path = run_dir / TREES_DIR / FIDELITY_FILE
    if not path.is_file():
        return None
    data = read_json(path, "tree fidelity summary")
    try:
        if data["format"] != FIDELITY_FORMAT:
            raise ValueError
        depth = data["depth"]
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise ValueError
        dagger = data.get("dagger_rounds", 0)
        if not isinstance(dagger, int) or isinstance(dagger, bool):
            raise ValueError
        kinds = [k for k in KINDS if k in data]
        returns = data["returns"]
        record = TreeRecord(depth, dagger, {k: float(data[k]["agreement"]) for k in kinds},
                            {k: float(data[k].get("closed_loop_agreement", math.nan)) for k in kinds},
                            float(returns["neural"]["mean"]), {k: float(returns[k]["mean"]) for k in kinds})
    except (KeyError, TypeError, ValueError):
        raise SmoseError(f"{path}: not a smose distillation summary") from None
    stale = stale_trees(run_dir)
    return record if stale is None else StaleTrees(stale)


@dataclass
class RunRecord:
    path: Path
    config: TrainConfig
    steps: int
    final_return: float
    balance: float
    curve: dict[int, float]  # evaluation step -> mean evaluation return
    trees: TreeRecord | StaleTrees | None = None  # when the run was distilled
    linear_return: float | None = None  # eval-linear.json: the authors' evaluation protocol, when run
    eval_times: dict[int, float] = field(default_factory=dict)  # evaluation step -> seconds of training
    times_estimated: bool = False  # eval_times estimated from the logged steps/s (no time column)
    success_rate: float | None = None  # eval.json's, for envs that report success

    @property
    def tail_return(self) -> float:
        """Mean of the last TAIL_EVALS evaluations during training (NaN without a learning curve)."""
        values = list(self.curve.values())[-TAIL_EVALS:]
        return float(np.mean(values)) if values else float("nan")


def find_run_dirs(directory: Path, exclude: Path | None = None) -> list[Path]:
    """Run directories (holding a config.json) at or below ``directory``; a sweep's are under its runs/."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SmoseError(f"{directory}: no such directory")
    root = directory / RUNS_DIR if (directory / RUNS_DIR).is_dir() else directory
    found: list[Path] = []
    # Shallowest first, so a directory inside a run (a checkpoint) is recognised as such whatever its name.
    for config_path in sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), p)):
        run_dir = config_path.parent
        parts = run_dir.relative_to(root).parts
        if any(p.startswith(".") for p in parts) or (exclude is not None and exclude in run_dir.parents):
            continue
        if any(other in run_dir.parents for other in found):  # a checkpoint or similar inside a run directory
            continue
        found.append(run_dir)
    return sorted(found)


def read_curve(metrics_path: Path) -> dict[int, float]:
    """step -> eval_return_mean from the event=eval rows (a later row for the same step wins: a resumed run may
    repeat evaluations made after its last checkpoint)."""
    curve: dict[int, float] = {}
    if not metrics_path.is_file():
        return curve
    with open(metrics_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("event") == "eval" and row.get("eval_return_mean") not in (None, ""):
                try:
                    curve[int(row["step"])] = float(row["eval_return_mean"])
                except (TypeError, ValueError):
                    continue
    return dict(sorted(curve.items()))


def load_runs(directory: Path, exclude: Path | None = None,
              budget: int | None = None) -> tuple[list[RunRecord], list[str]]:
    """Finished runs below ``directory`` and one line per run directory that was left out, saying why. A
    configuration found twice (a sweep's run and its exported copy, say) counts once: the first path in order.
    ``budget``: only the runs configured for that many steps (the others are neither read further nor listed)."""
    records: list[RunRecord] = []
    skipped: list[str] = []
    seen: dict[str, Path] = {}
    for run_dir in find_run_dirs(directory, exclude):
        try:
            config = read_run_config(run_dir / "config.json")
        except SmoseError as exc:
            skipped.append(f"{run_dir}: {exc}")
            continue
        if budget is not None and config.steps != budget:
            continue
        try:
            fine_tuned = read_record(run_dir) is not None
        except SmoseError as exc:
            skipped.append(str(exc))
            continue
        if fine_tuned:
            skipped.append(f"{run_dir}: fine-tuned under fixed trees (smose finetune), not trained as configured")
            continue
        steps = finished_steps(run_dir)
        if steps is None or steps != config.steps:
            progress = f"step {last_step(run_dir / 'metrics.csv'):,} of {config.steps:,}"
            curve = read_curve(run_dir / "metrics.csv")
            if curve:  # how far it got, for runs recorded as far as they got (partial/)
                step, value = next(reversed(curve.items()))
                progress += f"; last evaluation {value:.2f} at step {step:,}"
            skipped.append(f"{run_dir}: unfinished ({progress})")
            continue
        key = result_key(config)
        if key in seen:
            skipped.append(f"{run_dir}: the same configuration and seed as {seen[key]}, counted once")
            continue
        seen[key] = run_dir
        try:
            evaluation = read_eval(run_dir / "eval.json")
        except SmoseError as exc:
            skipped.append(str(exc))
            continue
        try:
            trees = read_trees(run_dir)
        except SmoseError as exc:
            skipped.append(f"{exc} (the run counts, without its trees)")
            trees = None
        linear = None
        if (run_dir / LINEAR_EVAL_FILE).is_file():
            try:
                linear = float(read_eval(run_dir / LINEAR_EVAL_FILE)["mean"])
            except SmoseError as exc:
                skipped.append(f"{exc} (the run counts, without its linear evaluation)")
        eval_times, estimated = read_eval_times(run_dir / "metrics.csv")
        success = evaluation.get("success_rate")
        records.append(RunRecord(run_dir, config, steps, float(evaluation["mean"]),
                                 usage_balance(evaluation.get("expert_usage") or []),
                                 read_curve(run_dir / "metrics.csv"), trees, linear, eval_times, estimated,
                                 float(success) if isinstance(success, (int, float)) else None))
    return records, skipped


# ---- aggregation -----------------------------------------------------------------------------------------------------
def lb_label(config: TrainConfig) -> str | None:
    """λ as the table shows it: "0.1" for the default CV² loss, "z:0.001", "z-noisy:0.001", "none" or "none-noisy" for
    the other losses."""
    if config.algo not in USES_LB:
        return None
    if config.lb_loss in ("none", "none-noisy"):
        return config.lb_loss
    weight = format_float(config.effective_lb_weight)
    return weight if config.lb_loss == "cv2" else f"{config.lb_loss}:{weight}"


def other_settings(config: TrainConfig) -> str:
    """The fields that change the result and differ from the defaults, besides those the table has columns for:
    "batch_size=64, learning_starts=100" ("" when there are none)."""
    ours = json.loads(result_key(config))
    defaults = json.loads(result_key(dataclasses.replace(DEFAULTS, env=config.env, algo=config.algo)))
    return ", ".join(f"{name}={ours[name]}" for name in sorted(ours)
                     if name not in LABELLED_FIELDS and ours[name] != defaults.get(name))


GroupKey = tuple[str, str, "int | None", "str | None", int, str]


def group_key(record: RunRecord) -> GroupKey:
    c = record.config
    return (c.env, c.algo, c.experts if c.algo in USES_EXPERTS else None, lb_label(c), record.steps,
            other_settings(c))


def _sort_key(key: GroupKey) -> tuple:
    env, algo, experts, lb, steps, settings = key
    algo_rank = ALGO_ORDER.index(algo) if algo in ALGO_ORDER else len(ALGO_ORDER)
    try:
        lb_value = float(lb) if lb is not None else -1.0
    except ValueError:  # "none" or "z:0.001": after the numeric weights
        lb_value = math.inf
    return env, settings, algo_rank, experts or 0, lb_value, lb or "", steps


@dataclass
class Row:
    env: str
    algo: str
    experts: int | None
    lb: str | None
    steps: int
    seeds: list[int]
    returns: list[float]
    balances: list[float] = field(default_factory=list)
    settings: str = ""  # other_settings() of the group's runs
    tail_returns: list[float] = field(default_factory=list)  # RunRecord.tail_return per seed
    trees: list[tuple[int, TreeRecord]] = field(default_factory=list)  # (seed, its distillation) of distilled seeds
    stale_trees: list[tuple[int, Path]] = field(default_factory=list)  # (seed, run directory) of stale distillations
    linear_returns: list[float] = field(default_factory=list)  # the seeds' eval-linear.json means, where they exist
    success_rates: list[float] = field(default_factory=list)  # the seeds' eval.json success rates, where reported

    @property
    def key(self) -> GroupKey:
        return self.env, self.algo, self.experts, self.lb, self.steps, self.settings

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof = 1); NaN for one seed."""
        return self.std_of(self.returns)

    @property
    def iqm(self) -> float:
        return iqm(self.returns)

    @property
    def ci(self) -> tuple[float, float]:
        """The IQM's bootstrap CI; NaN with fewer than MIN_SEEDS_FOR_CI seeds."""
        return self.ci_of(self.returns)

    @staticmethod
    def std_of(values: Sequence[float]) -> float:
        return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

    @staticmethod
    def iqm_of(values: Sequence[float]) -> float:
        return iqm(values)

    @staticmethod
    def ci_of(values: Sequence[float]) -> tuple[float, float]:
        """The IQM's bootstrap CI of ``values``; NaN with fewer than MIN_SEEDS_FOR_CI seeds."""
        if len(values) < MIN_SEEDS_FOR_CI:
            return float("nan"), float("nan")
        return bootstrap_ci(values)

    @property
    def paper_settings(self) -> bool:
        """The group uses the paper's M and λ (where the algorithm has them) and no other non-default setting."""
        return not self.settings and _paper_config(self)

    @property
    def tail_mean(self) -> float:
        return float(np.mean(self.tail_returns)) if self.tail_returns else float("nan")

    @property
    def balance(self) -> float:
        finite = [b for b in self.balances if math.isfinite(b)]
        return float(np.mean(finite)) if finite else float("nan")

    @property
    def paper(self) -> float | None:
        """The paper's number when this group used the paper's settings (M = 8, λ = 0.1 with CV², the defaults)."""
        if not self.paper_settings:
            return None
        return PAPER_RESULTS.get(task_name(self.env), {}).get(self.algo)


def aggregate(records: list[RunRecord]) -> list[Row]:
    groups: dict[GroupKey, Row] = {}
    for record in sorted(records, key=lambda r: r.config.seed):
        key = group_key(record)
        row = groups.setdefault(key, Row(*key[:5], seeds=[], returns=[], settings=key[5]))
        row.seeds.append(record.config.seed)
        row.returns.append(record.final_return)
        row.balances.append(record.balance)
        row.tail_returns.append(record.tail_return)
        if isinstance(record.trees, TreeRecord):
            row.trees.append((record.config.seed, record.trees))
        elif isinstance(record.trees, StaleTrees):
            row.stale_trees.append((record.config.seed, record.path))
        if record.linear_return is not None:
            row.linear_returns.append(record.linear_return)
        if record.success_rate is not None:
            row.success_rates.append(record.success_rate)
    return [groups[k] for k in sorted(groups, key=_sort_key)]


def _success_section(rows: list[Row]) -> list[str]:
    """Success rates of the groups whose env reports success (Meta-World), beside their returns."""
    reported = [row for row in rows if row.success_rates]
    if not reported:
        return []
    lines = ["", "## Success rates", "",
             "Share of the final evaluation's episodes in which the env reports the task solved (`eval.json`), mean "
             "± sample std over seeds, for the envs that report success.", "",
             "| task | algo | M | λ | steps | seeds | success rate | mean return |",
             "|---|---|---|---|---|---|---|---|"]
    for row in reported:
        rates = [100 * rate for rate in row.success_rates]
        lines.append(f"| {_task(row)} | {row.algo} | {row.experts if row.experts is not None else '–'} | "
                     f"{row.lb if row.lb is not None else '–'} | {row.steps:,} | {len(rates)} | "
                     f"{_num(float(np.mean(rates)), 1)}% ± {_num(row.std_of(rates), 1)} | {_num(row.mean)} |")
    return lines


def versus(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(SMOSE, baseline) pairs: each SMOSE group with the default load balancing (CV², λ = 0.1) beside each dense
    baseline of the same task, budget and other settings; SAC-S and SAC-M only when sized for the same M."""
    by_key = {r.key: r for r in rows}
    pairs = []
    for row in rows:
        if row.algo != "smose" or row.lb != format_float(PAPER_LB_WEIGHT):
            continue
        for algo in BASELINES:
            other = by_key.get((row.env, algo, row.experts if algo in USES_EXPERTS else None, None, row.steps,
                                row.settings))
            if other is not None:
                pairs.append((row, other))
    return pairs


def curves(records: list[RunRecord]) -> dict[GroupKey, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per group: (steps, mean, std over seeds, number of seeds) at the evaluation steps all its seeds share."""
    by_group: dict[GroupKey, list[dict[int, float]]] = {}
    for record in records:
        if record.curve:
            by_group.setdefault(group_key(record), []).append(record.curve)
    result = {}
    for key in sorted(by_group, key=_sort_key):
        runs = by_group[key]
        steps = sorted(set.intersection(*(set(c) for c in runs)))
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in runs])
        std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
        result[key] = (np.array(steps), values.mean(axis=0), std, len(runs))
    return result


# ---- output ----------------------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.2f}"


def _group_label(key: GroupKey) -> str:
    env, algo, experts, lb, steps, settings = key
    label = algo + (f" M={experts}" if experts is not None else "") + (f" λ={lb}" if lb is not None else "")
    return f"{label} ({steps:,} steps{', ' + settings if settings else ''})"


def _task(row: Row) -> str:
    """The task cell: the env, with the group's non-default settings when it has any."""
    return row.env + (f" ({row.settings})" if row.settings else "")


def markdown(rows: list[Row], skipped: list[str], source: Path, provenance: Sequence[str] = (),
             reproduction: Sequence[str] = ()) -> str:
    """The Markdown report; ``provenance``: lines saying how it was made (commands, date); ``reproduction``: the
    sections about the paper's budget (smose.experiments.reproduction), after the comparison with the paper."""
    lines = [f"# Results: {source}", "", *(part for line in provenance for part in (line, "")),
             "Final deterministic evaluation of each run (`eval.json`), aggregated over seeds: mean ± sample std, "
             "IQM with a percentile-bootstrap 95% CI "
             f"({BOOTSTRAP_RESAMPLES} resamples of the seeds, RNG seed {BOOTSTRAP_SEED}; shown from "
             f"{MIN_SEEDS_FOR_CI} seeds on; below 4 seeds the IQM cuts nothing and equals the mean). *balance*: "
             "normalised entropy of the expert usage in that evaluation (1 = all experts equally used), mean over "
             f"seeds. *last {TAIL_EVALS}*: the mean over seeds of each run's last {TAIL_EVALS} evaluations during "
             "training (less noisy than the final one alone). Settings other than the defaults follow the task name "
             "in parentheses.", "",
             f"| task | algo | M | λ | steps | seeds | mean ± std | IQM [95% CI] | balance | last {TAIL_EVALS} |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row.ci
        lines.append(f"| {_task(row)} | {row.algo} | {row.experts if row.experts is not None else '–'} | "
                     f"{row.lb if row.lb is not None else '–'} | {row.steps:,} | {len(row.seeds)} | "
                     f"{_num(row.mean)} ± {_num(row.std)} | {_num(row.iqm)}"
                     f"{f' [{_num(low)}, {_num(high)}]' if math.isfinite(low) else ''} | "
                     f"{_num(row.balance, 3) if row.algo == 'smose' else '–'} | {_num(row.tail_mean)} |")
    lines += _success_section(rows)
    lines += _by_task_section(rows)
    compared = [row for row in rows if row.paper is not None]
    lines += ["", "## Against the paper", "",
              f"The paper's numbers (docs/method.md §6) are final returns after {PAPER_STEPS:,} steps on the -v4 "
              f"tasks (M = {PAPER_EXPERTS}, λ = {PAPER_LB_WEIGHT}); only groups with those settings are compared. "
              "Ratio = our mean / paper; for negative returns (Reacher) a ratio above 1 is worse.", ""]
    if compared:
        lines += ["| task | algo | steps | seeds | ours (mean) | paper | ours / paper |",
                  "|---|---|---|---|---|---|---|"]
        for row in compared:
            lines.append(f"| {row.env} | {row.algo} | {row.steps:,} | {len(row.seeds)} | {_num(row.mean)} | "
                         f"{_num(row.paper)} | {_num(row.mean / row.paper, 3)} |")  # type: ignore[operator]
    else:
        lines.append("No group matches a task and setting of the paper.")
    lines += [*reproduction, *_versus_section(rows), *_ablation_section(rows), *_trees_section(rows)]
    if skipped:
        lines += ["", f"Left out, in whole or in part ({len(skipped)}):", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"


def _paper_config(row: Row) -> bool:
    """The group uses the paper's M and λ (where the algorithm has them); other settings may differ."""
    return ((row.algo not in USES_EXPERTS or row.experts == PAPER_EXPERTS)
            and (row.algo not in USES_LB or row.lb == format_float(PAPER_LB_WEIGHT)))


def _by_task_section(rows: list[Row]) -> list[str]:
    """The main comparison at a glance: one line per task, one column per algorithm, for each budget (and set of
    other settings) at which more than one algorithm ran with the paper's M and λ."""
    budgets: dict[tuple[int, str], dict[str, dict[str, Row]]] = {}
    for row in rows:
        if _paper_config(row):
            budgets.setdefault((row.steps, row.settings), {}).setdefault(row.env, {})[row.algo] = row
    lines: list[str] = []
    for (steps, settings), tasks in budgets.items():
        algos = [a for a in ALGO_ORDER if any(a in by_algo for by_algo in tasks.values())]
        if len(algos) < 2:
            continue
        lines += ["", f"## By task: {steps:,} steps{', ' + settings if settings else ''} (M = {PAPER_EXPERTS}, "
                      f"λ = {PAPER_LB_WEIGHT})", "",
                  "Mean ± sample std of the final evaluation over seeds (number of seeds in parentheses).", "",
                  "| task | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
        for env, by_algo in tasks.items():
            cells = [f"{_num(r.mean)} ± {_num(r.std)} ({len(r.seeds)})" if (r := by_algo.get(a)) else "–"
                     for a in algos]
            lines.append(f"| {env} | " + " | ".join(cells) + " |")
    return lines


def _versus_section(rows: list[Row]) -> list[str]:
    pairs = versus(rows)
    if not pairs:
        return []
    lines = ["", "## SMOSE against the baselines", "",
             f"Each SMOSE group with the default load balancing (λ = {PAPER_LB_WEIGHT}) beside the dense baselines of "
             "the same task and budget (SAC-S and SAC-M sized for the same M). *P(SMOSE > baseline)*: the fraction of "
             "(SMOSE seed, baseline seed) pairs in which SMOSE's final return is higher, ties counting half (the "
             f"probability of improvement; 0.5 = no edge either way). *difference, last {TAIL_EVALS}*: the same "
             f"difference for the means of the last {TAIL_EVALS} evaluations.", "",
             "| task | M | steps | baseline | seeds | SMOSE mean | baseline mean | difference | P(SMOSE > baseline) | "
             f"difference, last {TAIL_EVALS} |", "|---|---|---|---|---|---|---|---|---|---|"]
    # -> (task, SMOSE's final mean ≥ the baseline's, the same for the last-evaluations means or None without curves)
    tally: dict[tuple[str, int, int | None, str], list[tuple[str, bool, bool | None]]] = {}
    for ours, theirs in pairs:
        lines.append(f"| {_task(ours)} | {ours.experts} | {ours.steps:,} | {theirs.algo} | "
                     f"{len(ours.seeds)} / {len(theirs.seeds)} | {_num(ours.mean)} | {_num(theirs.mean)} | "
                     f"{_signed(ours.mean - theirs.mean)} | "
                     f"{_num(probability_of_improvement(ours.returns, theirs.returns))} | "
                     f"{_signed(ours.tail_mean - theirs.tail_mean)} |")
        tally.setdefault((theirs.algo, ours.steps, ours.experts, ours.settings), []).append(
            (ours.env, ours.mean >= theirs.mean,
             ours.tail_mean >= theirs.tail_mean if math.isfinite(ours.tail_mean - theirs.tail_mean) else None))
    lines.append("")
    for (algo, steps, experts, settings), tasks in tally.items():
        ahead = [env for env, at_least, _ in tasks if at_least]
        tails = [at_least for _, _, at_least in tasks if at_least is not None]
        lines.append(f"- SMOSE (M = {experts}) mean ≥ {algo} mean on **{len(ahead)} of {len(tasks)}** tasks at "
                     f"{steps:,} steps{' (' + settings + ')' if settings else ''}"
                     + (f": {', '.join(ahead)}" if ahead else "")
                     + (f" (on the means of the last {TAIL_EVALS} evaluations: {sum(tails)} of {len(tails)})"
                        if tails else "") + ".")
    return lines


def _ablation_section(rows: list[Row]) -> list[str]:
    """The SMOSE groups of every task and budget that was run with more than one (M, λ)."""
    smose = [r for r in rows if r.algo == "smose"]
    counts: dict[tuple[str, int, str], int] = {}
    for row in smose:
        counts[row.env, row.steps, row.settings] = counts.get((row.env, row.steps, row.settings), 0) + 1
    varied = [r for r in smose if counts[r.env, r.steps, r.settings] > 1]
    if not varied:
        return []
    lines = ["", "## Ablations", "",
             "SMOSE groups of one task and budget that differ in the number of experts M or the load-balancing "
             "weight λ, with the expert-usage balance beside the return.", "",
             f"| task | steps | M | λ | seeds | mean ± std | IQM | balance | last {TAIL_EVALS} |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in varied:
        lines.append(f"| {_task(row)} | {row.steps:,} | {row.experts} | {row.lb} | {len(row.seeds)} | "
                     f"{_num(row.mean)} ± {_num(row.std)} | {_num(row.iqm)} | {_num(row.balance, 3)} | "
                     f"{_num(row.tail_mean)} |")
    return lines


def tree_groups(rows: list[Row]) -> list[tuple[Row, tuple[int, int], list[TreeRecord]]]:
    """(group, (tree depth, DAgger rounds), its seeds' distillations made so) for every group with distilled seeds."""
    result = []
    for row in rows:
        for how in sorted({(t.depth, t.dagger) for _, t in row.trees}):
            result.append((row, how, [t for _, t in row.trees if (t.depth, t.dagger) == how]))
    return result


def _trees_section(rows: list[Row]) -> list[str]:
    groups = tree_groups(rows)
    stale = [(row, seed, path) for row in rows for seed, path in row.stale_trees]
    if not groups and not stale:
        return []
    lines = ["", "## Distilled trees"]
    if groups:
        lines += _trees_table(groups)
    if stale:
        lines += ["", f"**Stale trees, left out** ({len(stale)} run{'s' if len(stale) != 1 else ''}): distilled from "
                      "another model than the run's own (trained further since, e.g. by `smose train --resume`), so "
                      "their agreement and returns are not this model's; their tree columns in trees.csv are empty. "
                      "`smose distill RUN` (or `smose sweep --distill`) distils them again.", ""]
        lines += [f"- {_task(row)}, M = {row.experts}, λ = {row.lb}, {row.steps:,} steps, seed {seed}: stale "
                  f"(`{path}`)" for row, seed, path in stale]
    return lines


def _trees_table(groups: list[tuple[Row, tuple[int, int], list[TreeRecord]]]) -> list[str]:
    # The kinds some run was distilled into (oblique trees only when asked for): a column pair each.
    kinds = [k for k in KINDS if any(k in t.agreement for _, _, trees in groups for t in trees)]
    lines = ["",
             "Runs whose router was distilled into decision trees (`smose distill`, or `smose sweep --distill`), "
             "per-expert trees (the paper's form), one multiclass tree, and one oblique tree (the authors' CMA-ES "
             "form) where distilled. *Agreement*: the share of held-out states "
             "of the neural policy on which the trees pick the router's expert / *closed loop*: the same share over "
             "the steps the tree-routed policy takes itself. *Return*: with the trees routing instead of the router, "
             "over the same evaluation episodes as the neural router's. Means over the distilled seeds; *ratio* = "
             "tree-routed mean / neural mean (only for a positive neural mean); *worst* = the lowest ratio of a "
             "single seed. *DAgger*: rounds of `smose distill --dagger`.", "",
             "| task | M | λ | steps | depth | DAgger | seeds | "
             + "".join(f"{k}: agreement / closed loop | " for k in kinds) + "neural return | "
             + "".join(f"{k}: return (ratio, worst) | " for k in kinds).rstrip(),
             "|---|---|---|---|---|---|---|" + "---|" * (2 * len(kinds) + 1)]
    for row, (depth, dagger), trees in groups:
        cells: list[str] = []  # agreement per kind, then return per kind
        for kind in kinds:
            have = [t for t in trees if kind in t.agreement]
            cells.append(f"{_pct(np.mean([t.agreement[kind] for t in have]))} / "
                         f"{_pct(np.mean([t.closed_loop[kind] for t in have]))}" if have else "–")
        neural = float(np.mean([t.neural_return for t in trees]))
        for kind in kinds:
            have = [t for t in trees if kind in t.tree_return]
            if not have:
                cells.append("–")
                continue
            mean = float(np.mean([t.tree_return[kind] for t in have]))
            neural_mean = float(np.mean([t.neural_return for t in have]))  # over the same seeds
            ratios = [r for r in (t.ratio(kind) for t in have) if math.isfinite(r)]
            if neural_mean > 0 and ratios:
                cells.append(f"{_num(mean)} ({_num(mean / neural_mean)}, {_num(min(ratios))})")
            else:
                cells.append(_num(mean))
        lines.append(f"| {_task(row)} | {row.experts} | {row.lb} | {row.steps:,} | {depth} | {dagger} | {len(trees)} | "
                     + " | ".join(cells[:len(kinds)] + [_num(neural)] + cells[len(kinds):]) + " |")
    return lines


def _pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _tree_cells(t: TreeRecord) -> list:
    """A distillation's columns of trees.csv."""
    return [t.depth, t.dagger, *(_csv_num(t.agreement.get(k)) for k in KINDS),
            *(_csv_num(t.closed_loop.get(k)) for k in KINDS), _csv_num(t.neural_return),
            *(_csv_num(t.tree_return.get(k)) for k in KINDS),
            *(_csv_num(t.ratio(k)) if k in t.tree_return else "" for k in KINDS)]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _csv_num(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def plot_curves(curve_data: dict, out: Path) -> list[Path]:
    """One PNG per env: mean evaluation return against steps per group, with a ±std band over seeds."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    paths = []
    for env in sorted({key[0] for key in curve_data}):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for key, (steps, mean, std, n) in curve_data.items():
            if key[0] != env:
                continue
            (line,) = ax.plot(steps, mean, label=f"{_group_label(key)}, {n} seed{'s' if n != 1 else ''}")
            if n > 1:
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(f"{env}: deterministic evaluation return (mean ± std over seeds)")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"curves_{env.replace('/', '_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_tables(directory: Path, out: Path | None = None, steps: int | None = None) -> dict[str, Path]:
    """Aggregate the runs below ``directory`` into ``out`` (default DIRECTORY/table); returns the written files.
    ``steps``: only the runs with that budget (the others are not listed as left out)."""
    directory = Path(directory)
    out = Path(out) if out is not None else directory / TABLE_DIR
    records, skipped = load_runs(directory, exclude=out, budget=steps)
    if not records:
        raise SmoseError(f"{directory}: no finished runs found" + (f" with --steps {steps}" if steps else "")
                         + (f" ({len(skipped)} run directories left out, e.g. {skipped[0]})" if skipped else ""))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SmoseError(f"{out}: cannot create the output directory ({exc.strerror})") from None
    rows = aggregate(records)
    provenance = [f"Made on {time.strftime('%Y-%m-%d')} by `smose table {directory}"
                  + (f" --steps {steps}" if steps is not None else "")
                  + (f" --out {out}`" if out != directory / TABLE_DIR else "`") + "."]
    sweep_file = directory / SWEEP_FILE
    if sweep_file.is_file():
        command = read_json(sweep_file, "sweep description").get("command")
        if isinstance(command, str):
            provenance.append(f"Runs made by `{command}` (see sweep.json).")
    paths = {"markdown": out / "table.md", "csv": out / "table.csv", "paper": out / "paper.csv",
             "versus": out / "versus.csv", "trees": out / "trees.csv", "curves_csv": out / "curves.csv"}
    aggregate_lines, figures = aggregate_section(rows, out)
    reproduction = [*protocols_section(rows), *poster_section(rows), *aggregate_lines,
                    *time_to_poster_section(records)]
    paths["markdown"].write_text(markdown(rows, skipped, directory, provenance, reproduction))
    for path in figures:
        paths[path.stem] = path
    _write_csv(paths["csv"], ["env", "algo", "experts", "lb_weight", "steps", "settings", "n_seeds", "seeds", "mean",
                              "std", "iqm", "iqm_ci_low", "iqm_ci_high", "usage_balance", "tail_mean", "returns",
                              "n_linear", "linear_mean", "linear_std", "n_success", "success_rate_mean"],
               [[r.env, r.algo, r.experts if r.experts is not None else "", r.lb or "", r.steps, r.settings,
                 len(r.seeds), " ".join(map(str, r.seeds)), _csv_num(r.mean), _csv_num(r.std), _csv_num(r.iqm),
                 *map(_csv_num, r.ci), _csv_num(r.balance), _csv_num(r.tail_mean),
                 json.dumps([round(x, 4) for x in r.returns]), len(r.linear_returns),
                 _csv_num(float(np.mean(r.linear_returns))) if r.linear_returns else "",
                 _csv_num(r.std_of(r.linear_returns)), len(r.success_rates),
                 _csv_num(float(np.mean(r.success_rates))) if r.success_rates else ""]
                for r in rows])
    _write_csv(paths["paper"], ["env", "task", "algo", "steps", "n_seeds", "mean", "paper", "ratio"],
               [[r.env, task_name(r.env), r.algo, r.steps, len(r.seeds), _csv_num(r.mean), _csv_num(r.paper),
                 _csv_num(r.mean / r.paper)] for r in rows if r.paper is not None])
    _write_csv(paths["versus"], ["env", "experts", "steps", "settings", "baseline", "n_seeds_smose",
                                 "n_seeds_baseline", "smose_mean", "baseline_mean", "difference",
                                 "probability_of_improvement", "difference_tail"],
               [[a.env, a.experts, a.steps, a.settings, b.algo, len(a.seeds), len(b.seeds), _csv_num(a.mean),
                 _csv_num(b.mean), _csv_num(a.mean - b.mean),
                 _csv_num(probability_of_improvement(a.returns, b.returns)), _csv_num(a.tail_mean - b.tail_mean)]
                for a, b in versus(rows)])
    tree_columns = ["depth", "dagger_rounds", *(f"agreement_{k}" for k in KINDS),
                    *(f"closed_loop_agreement_{k}" for k in KINDS), "return_neural", *(f"return_{k}" for k in KINDS),
                    *(f"ratio_{k}" for k in KINDS)]
    _write_csv(paths["trees"], ["env", "algo", "experts", "lb_weight", "steps", "settings", "seed", *tree_columns,
                                "note"],
               [[r.env, r.algo, r.experts, r.lb or "", r.steps, r.settings, seed,
                 *(_tree_cells(t) if t is not None else [""] * len(tree_columns)), "" if t is not None else "stale"]
                for r in rows
                for seed, t in sorted([*r.trees, *((seed, None) for seed, _ in r.stale_trees)],
                                      key=lambda pair: pair[0])])
    curve_data = curves(records)
    curve_rows = []
    for (env, algo, experts, lb, budget, settings), (steps, mean, std, n) in curve_data.items():
        curve_rows += [[env, algo, experts if experts is not None else "", lb or "", budget, settings, int(step),
                        _csv_num(m), _csv_num(sd), n] for step, m, sd in zip(steps, mean, std, strict=True)]
    _write_csv(paths["curves_csv"], ["env", "algo", "experts", "lb_weight", "steps", "settings", "step", "mean", "std",
                                     "n_seeds"], curve_rows)
    for i, path in enumerate(plot_curves(curve_data, out)):
        paths[f"plot_{i}"] = path
    return paths
