"""The table's sections about the paper's budget: evaluation times, both protocols, the poster's rows, rliable
aggregates across tasks and the time each run took to reach the poster's SMOSE number."""

import csv
from pathlib import Path

import numpy as np
import pytest

from smose.experiments.paper import POSTER, RANDOM_POLICY, TASKS
from smose.experiments.reproduction import (
    aggregate_section,
    normalised_scores,
    poster_section,
    protocols_section,
    read_eval_times,
    time_to_poster_section,
)
from smose.experiments.stats import normalise
from smose.experiments.table import Row, RunRecord
from smose.training.config import TrainConfig


def write_metrics(path: Path, rows: list[dict]) -> Path:
    columns = sorted({k for row in rows for k in row}, key=["step", "event", "eval_return_mean", "sps", "time"].index)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_eval_times_measured_and_estimated(tmp_path):
    measured = write_metrics(tmp_path / "a.csv", [
        {"step": 100, "event": "episode", "sps": 0, "time": 1.5},
        {"step": 200, "event": "eval", "eval_return_mean": 3.0, "time": 12.25},
    ])
    assert read_eval_times(measured) == ({200: 12.25}, False)
    # Without a time column: warm-up rows (0 steps/s) take no time, then Δstep / steps/s of the later row.
    estimated = write_metrics(tmp_path / "b.csv", [
        {"step": 1000, "event": "episode", "sps": 0},
        {"step": 2000, "event": "episode", "sps": 100},  # 10 s
        {"step": 2500, "event": "eval", "eval_return_mean": 1.0},  # + 500 / 100 = 5 s
        {"step": 3000, "event": "episode", "sps": 50},  # + 500 / 50 = 10 s
        {"step": 3000, "event": "eval", "eval_return_mean": 2.0},
    ])
    times, is_estimate = read_eval_times(estimated)
    assert is_estimate and times == {2500: pytest.approx(15.0), 3000: pytest.approx(25.0)}


def record(tmp_path: Path, env: str, algo: str, seed: int, curve: dict[int, float], times: dict[int, float],
           steps: int = 1_000_000) -> RunRecord:
    config = TrainConfig(env=env, algo=algo, seed=seed, steps=steps)
    return RunRecord(tmp_path / f"{env}__{algo}__s{seed}", config, steps, list(curve.values())[-1], float("nan"),
                     curve, None, None, times, False)


def test_time_to_poster_reports_the_first_evaluation_at_or_above_it(tmp_path):
    target = POSTER["smose"]["Hopper"]
    reached = record(tmp_path, "Hopper-v4", "smose", 0, {10_000: 100.0, 20_000: target + 1, 30_000: target - 50},
                     {10_000: 60.0, 20_000: 7200.0, 30_000: 9000.0})
    missed = record(tmp_path, "Hopper-v4", "smose", 1, {10_000: 100.0, 20_000: target - 1}, {})
    short = record(tmp_path, "Hopper-v4", "smose", 2, {10_000: target + 5}, {}, steps=100_000)  # another budget
    text = "\n".join(time_to_poster_section([reached, missed, short]))
    assert "| Hopper-v4__smose__s0 | smose | 2816.08 | 20,000 | 2.00 h |" in text
    assert "| Hopper-v4__smose__s1 | smose | 2816.08 | not reached | – |" in text
    assert "__s2" not in text
    assert time_to_poster_section([short]) == []


def test_protocols_and_poster_sections():
    poster = POSTER["smose"]["Walker2d"]
    row = Row("Walker2d-v4", "smose", 8, "0.1", 1_000_000, [0, 1], [poster, poster / 2],
              linear_returns=[poster / 2, poster / 4])
    text = "\n".join(protocols_section([row]))
    # gated mean 0.75 of the poster, linear mean 0.375
    assert f"| Walker2d-v4 | 8 | 0.1 | 1,000,000 | 2 | {0.75 * poster:.2f} ±" in text
    assert "| 0.750 |" in text and "| 0.375 |" in text
    assert protocols_section([Row("Walker2d-v4", "smose", 8, "0.1", 1000, [0], [1.0])]) == []  # no linear evals
    poster_text = "\n".join(poster_section([row]))
    assert "| CGP (interpretable) | 1090 | 1150 | 1130 | 6375 | -68.5 | 280 |" in poster_text
    assert "| Metric-40 (interpretable) | 775 | 2005 | 2210.5 | 2210.5 | n/a | n/a |" in poster_text
    assert "| **SMOSE** | 4224.29 | 2816.08 | 3245.43 | 7310.17 | -5.49 | 45.4 |" in poster_text
    assert "9634.89 ± 1423.73" in poster_text
    assert poster_section([Row("Pendulum-v1", "smose", 8, "0.1", 1000, [0], [1.0])]) == []


def test_aggregate_across_tasks_normalises_and_uses_rliable(tmp_path):
    rows = []
    for task in TASKS:
        sac_l = POSTER["sac-l"][task]
        rows.append(Row(f"{task}-v4", "sac-l", None, None, 1_000_000, [0, 1, 2], [sac_l] * 3))  # normalised 1.0
        random = RANDOM_POLICY[task]
        rows.append(Row(f"{task}-v4", "smose", 8, "0.1", 1_000_000, [0, 1, 2, 3],
                        [random + f * (sac_l - random) for f in (0.4, 0.5, 0.5, 0.6)]))
    rows.append(Row("Hopper-v4", "smose", 3, "0.1", 1_000_000, [0], [1.0]))  # not the paper's settings: left out
    scores = normalised_scores(rows)
    assert set(scores) == {("sac-l", 1_000_000), ("smose", 1_000_000)}
    np.testing.assert_allclose(scores["sac-l", 1_000_000], np.ones((3, 6)))
    np.testing.assert_allclose(np.sort(scores["smose", 1_000_000][:, 1]), [0.4, 0.5, 0.5, 0.6])
    lines, figures = aggregate_section(rows, tmp_path)
    text = "\n".join(lines)
    # IQM of {0.4, 0.5, 0.5, 0.6} on every task: 0.5; every SMOSE run is below every SAC-L run: P = 0
    assert "| smose | 1,000,000 | 6 | 4 | 0.500 [" in text
    assert "| sac-l | 1,000,000 | 6 | 3 | 1.000 [1.000, 1.000] | 0.00 |" in text
    assert [p.name for p in figures] == ["aggregate_iqm_1000k.png", "performance_profiles_1000k.png"]
    assert all(p.stat().st_size > 1000 for p in figures)


def test_normalise_by_hand():
    np.testing.assert_allclose(normalise([10.0, 110.0], random=10.0, reference=210.0), [0.0, 0.5])
