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

The parts: records.py reads the runs, aggregate.py groups them and computes the statistics, markdown.py and
reproduction.py write the text of table.md; this module writes the files and the figures.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from smose.errors import SmoseError

# Re-exported, so that every part of the table can be imported from here whichever module defines it.
from smose.experiments.aggregate import GroupKey, Row, aggregate, curves, other_settings, versus  # noqa: F401
from smose.experiments.grid import SWEEP_FILE
from smose.experiments.markdown import (
    _trees_table,  # noqa: F401
    markdown,
)
from smose.experiments.paper import (
    PAPER_RESULTS,  # noqa: F401
    task_name,
)
from smose.experiments.records import RunRecord, TreeRecord, load_runs, usage_balance  # noqa: F401
from smose.experiments.reproduction import aggregate_section, poster_section, protocols_section, time_to_poster_section
from smose.experiments.stats import (
    iqm,  # noqa: F401
    probability_of_improvement,
)
from smose.experiments.stats import iqm_ci as bootstrap_ci  # noqa: F401
from smose.interpret.distill import KINDS
from smose.serialization import read_json

TABLE_DIR = "table"


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


def _group_label(key: GroupKey) -> str:
    env, algo, experts, lb, steps, settings = key
    label = algo + (f" M={experts}" if experts is not None else "") + (f" λ={lb}" if lb is not None else "")
    return f"{label} ({steps:,} steps{', ' + settings if settings else ''})"


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
