"""benchmarks/oblique_start.py on a small run: every contender fitted on the same states, each CMA-ES start recorded
as such, nothing written into the run, and the table it writes."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


@pytest.mark.slow
def test_every_start_is_fitted_on_the_same_states_and_tabled(pendulum_run, tmp_path, monkeypatch):
    from oblique_start import CONTENDERS, main

    before = sorted(path.relative_to(pendulum_run) for path in pendulum_run.rglob("*"))
    out = tmp_path / "out" / "oblique-start"
    monkeypatch.setattr(sys, "argv", ["oblique_start.py", "--runs", str(pendulum_run), "--depth", "2",
                                      "--episodes", "2", "--eval-episodes", "1", "--cma-iterations", "3",
                                      "--dagger", "1", "--out", str(out)])
    main()
    assert sorted(path.relative_to(pendulum_run) for path in pendulum_run.rglob("*")) == before  # nothing written
    record = json.loads(out.with_suffix(".json").read_text())
    [run] = record["runs"]
    assert list(run["contenders"]) == [name for name, _, _ in CONTENDERS]
    starts = {name: c["cma"]["start"] for name, c in run["contenders"].items() if "cma" in c}
    assert starts == {"oblique from router": "router", "oblique from groups": "groups", "oblique from zeros": "zeros"}
    for c in run["contenders"].values():
        assert 0 <= c["agreement"] <= 1 and 0 <= c["closed_loop_agreement"] <= 1
        if "cma" in c:  # the best candidate is kept, the start included
            assert c["cma"]["train_misrouted"] <= c["cma"]["start_misrouted"]
    table = out.with_suffix(".md").read_text()
    assert table.count("| pendulum | ") == len(CONTENDERS) and "1 DAgger round," in table
    assert "| oblique from zeros | " in table.split("## Means over the runs")[1]
    # --contenders: only those named are fitted and tabled
    monkeypatch.setattr(sys, "argv", ["oblique_start.py", "--runs", str(pendulum_run), "--depth", "2",
                                      "--episodes", "2", "--eval-episodes", "1", "--cma-iterations", "3",
                                      "--contenders", "oblique from router", "--out", str(out)])
    main()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["contenders"] == ["oblique from router"]
    assert list(record["runs"][0]["contenders"]) == ["oblique from router"]
    table = out.with_suffix(".md").read_text()
    assert table.count("| pendulum | ") == 1 and "| oblique from router | " in table.split("## Means")[1]
