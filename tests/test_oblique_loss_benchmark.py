"""benchmarks/oblique_loss.py on a small run: real CMA-ES generations timed both ways, the two losses compared."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_both_losses_are_timed_on_real_generations_and_agree(pendulum_run, tmp_path, monkeypatch):
    from oblique_loss import main

    out = tmp_path / "out" / "loss-speed"
    monkeypatch.setattr(sys, "argv", ["oblique_loss.py", "--runs", str(pendulum_run), "--generations", "3",
                                      "--episodes", "2", "--out", str(out)])
    main()
    [run] = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert run["states"] == 2 * 200 and run["n_obs"] == 3 and run["generations"] == 3  # Pendulum: 200 steps each
    assert run["disagreements"] == 0 and run["each_ms"] > 0 and run["many_ms"] > 0
    assert run["ratio"] == pytest.approx(run["each_ms"] / run["many_ms"])
    assert run["each_peak_mb"] > 0 and run["many_peak_mb"] > 0
    assert "| pendulum | 400 | 3 | " in out.with_suffix(".md").read_text() and "0 of 192 | " in \
        out.with_suffix(".md").read_text()
