"""A committed run (benchmarks/results/runs) still loads, evaluates, explains and exports with today's code: the run
directory format is kept, trees distilled before the model digest was recorded in fidelity.json still count as
current, and an evaluation reproduces the committed training-time return's order of magnitude."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from smose import SMOSE
from smose.cli import main
from smose.interpret.distill import stale_trees

COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "runs" / "Hopper-v4__smose__s0"


@pytest.fixture
def committed_run(tmp_path) -> Path:
    if not COMMITTED.is_dir():
        pytest.skip("the committed results are not in this checkout")
    run_dir = tmp_path / COMMITTED.name
    shutil.copytree(COMMITTED, run_dir)  # never write into the committed directory
    return run_dir


def test_a_committed_run_loads_evaluates_explains_and_exports(committed_run, tmp_path, capsys):
    assert stale_trees(committed_run) is None
    model = SMOSE.load(committed_run)
    obs = np.zeros(model.actor.n_obs, dtype=np.float32)
    action, _ = model.predict(obs)
    assert action.shape == (model.actor.n_act,)

    capsys.readouterr()
    assert main(["eval", str(committed_run), "--episodes", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 2 and result["env_id"] == "Hopper-v4" and result["mean"] > 100
    assert main(["eval", str(committed_run), "--episodes", "1", "--router", "tree"]) == 0
    assert main(["explain", str(committed_run), "--episodes", "1", "--no-distill"]) == 0
    report = (committed_run / "report" / "report.md").read_text()
    assert "stale" not in report.lower() and "per-expert" in report
    for fmt, name in (("python", "p.py"), ("c", "p.h"), ("json", "p.json")):
        for router in ("neural", "tree"):
            out = tmp_path / f"{router}-{name}"
            assert main(["export", str(committed_run), "--format", fmt, "--router", router, "--out", str(out)]) == 0
            assert out.stat().st_size > 1000
