"""Reading runs for the results table: every finished run below a directory, each run directory read into a
``RunRecord`` (its configuration, final evaluation, learning curve, training times and distilled trees), with one line
per run directory left out saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from smose.errors import SmoseError
from smose.experiments.grid import RUNS_DIR
from smose.experiments.run_state import finished_steps, last_step, result_key
from smose.interpret.distill import FIDELITY_FORMAT, KINDS, stale_trees
from smose.run import CONFIG_FILE, TIME_COLUMN, RunDir, read_metrics
from smose.serialization import read_eval, read_json
from smose.training.config import TrainConfig, read_run_config
from smose.training.finetune import read_record

TAIL_EVALS = 3  # "last 3": the mean of a run's final evaluations, less noisy than the very last one


def usage_balance(usage: Sequence[float]) -> float:
    """Normalised entropy of expert-usage fractions: 1 = all experts used equally, 0 = one expert does everything.
    Undefined (NaN) for a single expert."""
    u = np.asarray(usage, dtype=np.float64)
    if u.size < 2 or u.sum() <= 0:
        return float("nan")
    p = u / u.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(u.size))


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
    """A run whose trees/ were distilled from another model than its own (see smose.interpret.distill.stale_trees):
    its tree results are not reported, only why."""

    reason: str


def read_trees(run_dir: Path) -> TreeRecord | StaleTrees | None:
    """The run's distillation summary; StaleTrees when it describes another model than the run's; None when it has
    none. Raises SmoseError for an unreadable one (or an unreadable model, which the trees cannot be checked with)."""
    path = RunDir(run_dir).fidelity
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
    for config_path in sorted(root.rglob(CONFIG_FILE), key=lambda p: (len(p.parts), p)):
        run_dir = config_path.parent
        parts = run_dir.relative_to(root).parts
        if any(p.startswith(".") for p in parts) or (exclude is not None and exclude in run_dir.parents):
            continue
        if any(other in run_dir.parents for other in found):  # a checkpoint or similar inside a run directory
            continue
        found.append(run_dir)
    return sorted(found)


def read_curve(metrics: Path) -> dict[int, float]:
    """step -> eval_return_mean from the event=eval rows of a metrics.csv (``metrics`` is the file or its run
    directory; a later row for the same step wins: a resumed run may repeat evaluations made after its last
    checkpoint)."""
    curve: dict[int, float] = {}
    for row in read_metrics(metrics):
        if row.get("event") == "eval" and row.get("eval_return_mean") not in (None, ""):
            try:
                curve[int(row["step"])] = float(row["eval_return_mean"])
            except (TypeError, ValueError):
                continue
    return dict(sorted(curve.items()))


def read_eval_times(metrics: Path) -> tuple[dict[int, float], bool]:
    """Evaluation step -> seconds of training at that evaluation, and whether they are estimates, from a metrics.csv
    (``metrics`` is the file or its run directory).

    Runs logged before metrics.csv had a time column get estimates: the steps between two logged rows divided by the
    steps/s logged with the later one, summed (the random warm-up, logged with 0 steps/s, counts as no time).
    """
    times: dict[int, float] = {}
    estimated = False
    elapsed, previous, rate = 0.0, 0, 0.0
    for row in read_metrics(metrics):
        try:
            step = int(row["step"])
        except (KeyError, TypeError, ValueError):
            continue
        if row.get(TIME_COLUMN) not in (None, ""):
            elapsed = float(row[TIME_COLUMN])
        else:
            estimated = True
            try:
                rate = float(row.get("sps") or rate)
            except ValueError:
                pass
            elapsed += (step - previous) / rate if rate > 0 and step > previous else 0.0
        previous = max(previous, step)
        if row.get("event") == "eval":
            times[step] = elapsed
    return times, estimated


def load_runs(directory: Path, exclude: Path | None = None,
              budget: int | None = None) -> tuple[list[RunRecord], list[str]]:
    """Finished runs below ``directory`` and one line per run directory that was left out, saying why. A
    configuration found twice (a sweep's run and its exported copy, say) counts once: the first path in order.
    ``budget``: only the runs configured for that many steps (the others are neither read further nor listed)."""
    records: list[RunRecord] = []
    skipped: list[str] = []
    seen: dict[str, Path] = {}
    for run_dir in find_run_dirs(directory, exclude):
        paths = RunDir(run_dir)
        try:
            config = read_run_config(paths.config)
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
            progress = f"step {last_step(run_dir):,} of {config.steps:,}"
            curve = read_curve(run_dir)
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
            evaluation = read_eval(paths.eval)
        except SmoseError as exc:
            skipped.append(str(exc))
            continue
        try:
            trees = read_trees(run_dir)
        except SmoseError as exc:
            skipped.append(f"{exc} (the run counts, without its trees)")
            trees = None
        linear = None
        if paths.linear_eval.is_file():
            try:
                linear = float(read_eval(paths.linear_eval)["mean"])
            except SmoseError as exc:
                skipped.append(f"{exc} (the run counts, without its linear evaluation)")
        eval_times, estimated = read_eval_times(run_dir)
        success = evaluation.get("success_rate")
        records.append(RunRecord(run_dir, config, steps, float(evaluation["mean"]),
                                 usage_balance(evaluation.get("expert_usage") or []),
                                 read_curve(run_dir), trees, linear, eval_times, estimated,
                                 float(success) if isinstance(success, (int, float)) else None))
    return records, skipped
