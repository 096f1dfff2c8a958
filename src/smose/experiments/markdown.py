"""The text of the results table's table.md: the aggregate table and its sections (by task, against the paper,
SMOSE against the baselines, ablations, distilled trees, success rates, what was left out). The sections about the
paper's own budget come from reproduction.py and are placed after the comparison with the paper.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from smose.experiments.aggregate import ALGO_ORDER, MIN_SEEDS_FOR_CI, Row, paper_config, tree_groups, versus
from smose.experiments.paper import PAPER_EXPERTS, PAPER_LB_WEIGHT, PAPER_STEPS
from smose.experiments.records import TAIL_EVALS, TreeRecord
from smose.experiments.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, probability_of_improvement
from smose.interpret.distill import KINDS
from smose.run import EVAL_FILE


def num(value: float | None, digits: int = 2) -> str:
    """A number as the tables print it: ``digits`` decimals, "–" for none or a non-finite one."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.2f}"


def _task(row: Row) -> str:
    """The task cell: the env, with the group's non-default settings when it has any."""
    return row.env + (f" ({row.settings})" if row.settings else "")


def markdown(rows: list[Row], skipped: list[str], source: Path, provenance: Sequence[str] = (),
             reproduction: Sequence[str] = ()) -> str:
    """The Markdown report; ``provenance``: lines saying how it was made (commands, date); ``reproduction``: the
    sections about the paper's budget (smose.experiments.reproduction), after the comparison with the paper."""
    lines = [f"# Results: {source}", "", *(part for line in provenance for part in (line, "")),
             f"Final deterministic evaluation of each run (`{EVAL_FILE}`), aggregated over seeds: mean ± sample std, "
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
                     f"{num(row.mean)} ± {num(row.std)} | {num(row.iqm)}"
                     f"{f' [{num(low)}, {num(high)}]' if math.isfinite(low) else ''} | "
                     f"{num(row.balance, 3) if row.algo == 'smose' else '–'} | {num(row.tail_mean)} |")
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
            lines.append(f"| {row.env} | {row.algo} | {row.steps:,} | {len(row.seeds)} | {num(row.mean)} | "
                         f"{num(row.paper)} | {num(row.mean / row.paper, 3)} |")  # type: ignore[operator]
    else:
        lines.append("No group matches a task and setting of the paper.")
    lines += [*reproduction, *_versus_section(rows), *_ablation_section(rows), *_trees_section(rows)]
    if skipped:
        lines += ["", f"Left out, in whole or in part ({len(skipped)}):", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"


def _by_task_section(rows: list[Row]) -> list[str]:
    """The main comparison at a glance: one line per task, one column per algorithm, for each budget (and set of
    other settings) at which more than one algorithm ran with the paper's M and λ."""
    budgets: dict[tuple[int, str], dict[str, dict[str, Row]]] = {}
    for row in rows:
        if paper_config(row):
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
            cells = [f"{num(r.mean)} ± {num(r.std)} ({len(r.seeds)})" if (r := by_algo.get(a)) else "–"
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
                     f"{len(ours.seeds)} / {len(theirs.seeds)} | {num(ours.mean)} | {num(theirs.mean)} | "
                     f"{_signed(ours.mean - theirs.mean)} | "
                     f"{num(probability_of_improvement(ours.returns, theirs.returns))} | "
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
                     f"{num(row.mean)} ± {num(row.std)} | {num(row.iqm)} | {num(row.balance, 3)} | "
                     f"{num(row.tail_mean)} |")
    return lines


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
                cells.append(f"{num(mean)} ({num(mean / neural_mean)}, {num(min(ratios))})")
            else:
                cells.append(num(mean))
        lines.append(f"| {_task(row)} | {row.experts} | {row.lb} | {row.steps:,} | {depth} | {dagger} | {len(trees)} | "
                     + " | ".join(cells[:len(kinds)] + [num(neural)] + cells[len(kinds):]) + " |")
    return lines


def _pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.1f}%"


def _success_section(rows: list[Row]) -> list[str]:
    """Success rates of the groups whose env reports success (Meta-World), beside their returns."""
    reported = [row for row in rows if row.success_rates]
    if not reported:
        return []
    lines = ["", "## Success rates", "",
             f"Share of the final evaluation's episodes in which the env reports the task solved (`{EVAL_FILE}`), mean "
             "± sample std over seeds, for the envs that report success.", "",
             "| task | algo | M | λ | steps | seeds | success rate | mean return |",
             "|---|---|---|---|---|---|---|---|"]
    for row in reported:
        rates = [100 * rate for rate in row.success_rates]
        lines.append(f"| {_task(row)} | {row.algo} | {row.experts if row.experts is not None else '–'} | "
                     f"{row.lb if row.lb is not None else '–'} | {row.steps:,} | {len(rates)} | "
                     f"{num(float(np.mean(rates)), 1)}% ± {num(row.std_of(rates), 1)} | {num(row.mean)} |")
    return lines
