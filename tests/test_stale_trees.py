"""Trees of an earlier model: a run distilled, then trained further with `smose train --resume`. Its trees and
fidelity.json describe the earlier model; every reader of trees/ must notice (table, explain, export, sweep)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

from smose.cli import main
from smose.experiments.sweep import Distillation, Exporter, Grid, SweepResult, expand, plan, run_sweep, tree_settings
from smose.experiments.table import write_tables
from smose.interpret.distill import FIDELITY_FILE, TREES_DIR, distill, model_digest, router_digest, stale_trees
from smose.interpret.report import fmt
from smose.serialization import load_model
from smose.training.trainer import resume, train

# A sweep's run, so the sweep can meet it too; trained to 300 steps, then resumed to the grid's 400.
GRID = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,), steps=400, experts=(2,),
            settings=(("batch_size", 32), ("eval_episodes", 1), ("eval_every", 100), ("learning_starts", 100)))
DISTILL = Distillation(1, episodes=1, eval_episodes=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """(current, stale): a run trained to 300 steps and distilled; a copy of it trained on to 400 steps."""
    root = tmp_path_factory.mktemp("resumed")
    spec = expand(GRID, root / "sweep")[0]
    train(dataclasses.replace(spec.config, steps=300), spec.run_dir, progress=False)
    distill(spec.run_dir, depth=DISTILL.depth, episodes=DISTILL.episodes, eval_episodes=DISTILL.eval_episodes)
    current = root / "current"
    shutil.copytree(spec.run_dir, current)
    resume(spec.run_dir, steps=400, progress=False)
    return current, spec.run_dir


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def fidelity(run: Path) -> dict:
    return json.loads((run / TREES_DIR / FIDELITY_FILE).read_text())


def test_fidelity_records_the_model_and_more_training_makes_the_trees_stale(runs):
    current, stale = runs
    actor, _ = load_model(current)
    assert fidelity(current)["router_sha256"] == router_digest(actor) == model_digest(current)
    assert stale_trees(current) is None
    assert model_digest(stale) != model_digest(current)  # the router changed with the 100 more steps
    assert f"{stale / TREES_DIR}: stale trees: distilled from another model" in stale_trees(stale)
    assert stale_trees(current, model_digest(stale)) is not None  # judged against another run's model


def test_distillations_older_than_the_digest_field_are_judged_by_their_tree_files(runs, tmp_path):
    """fidelity.json without router_sha256 (written before it existed): the tree files written with it decide."""
    for name, run in zip(("current", "stale"), runs):
        old = copy_run(run, tmp_path / name)
        data = fidelity(old)
        del data["router_sha256"]
        (old / TREES_DIR / FIDELITY_FILE).write_text(json.dumps(data))
        assert (stale_trees(old) is None) == (name == "current")
        for kind in ("per-expert", "multiclass"):
            (old / TREES_DIR / f"{kind}.json").unlink()
        assert "nothing readable records which model" in stale_trees(old)  # cannot tell: never taken as current


def test_committed_distillations_are_current():
    """The committed runs' trees (most distilled before fidelity.json recorded the digest) still count."""
    committed = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "runs"
    runs = sorted(p.parent.parent for p in committed.glob(f"*/{TREES_DIR}/{FIDELITY_FILE}"))
    if not runs:
        pytest.skip("no committed distillations here")
    assert [(run.name, stale_trees(run)) for run in runs if stale_trees(run) is not None] == []


def test_table_leaves_stale_trees_out_and_says_so(runs, tmp_path):
    current, stale = runs
    directory = tmp_path / "runs"
    copy_run(current, directory / "a")  # 300 steps: its own trees
    copy_run(stale, directory / "b")  # 400 steps: the trees of the 300-step model
    paths = write_tables(directory, tmp_path / "table")
    text = paths["markdown"].read_text().split("## Distilled trees")[1]
    assert "| 300 | 1 | 0 | 1 |" in text  # the 300-step group's row: depth 1, DAgger 0, 1 seed
    assert "| 400 |" not in text  # no numbers of the earlier model for the 400-step run
    assert "**Stale trees, left out** (1 run)" in text and f"seed 0: stale (`{directory / 'b'}`)" in text
    with open(paths["trees"], newline="") as fh:
        rows = {row["steps"]: row for row in csv.DictReader(fh)}
    assert float(rows["300"]["return_neural"]) == pytest.approx(fidelity(current)["returns"]["neural"]["mean"],
                                                                rel=1e-5)
    assert all(rows["400"][column] == "" for column in ("depth", "agreement_per-expert", "return_neural",
                                                        "return_per-expert", "ratio_multiclass"))
    assert (rows["300"]["note"], rows["400"]["note"]) == ("", "stale")


def test_explain_distils_stale_trees_again_with_their_settings(runs, tmp_path, capsys):
    run = copy_run(runs[1], tmp_path / "run")
    assert main(["explain", str(run), "--episodes", "1"]) == 0
    assert f"stale trees in {run / TREES_DIR}" in capsys.readouterr().err
    assert stale_trees(run) is None
    assert tree_settings(run) == DISTILL  # made again as they were made
    report = (run / "report" / "report.md").read_text()
    returns = report.split("Tree-routed vs neural router")[-1]
    assert f"| neural | {fmt(fidelity(run)['returns']['neural']['mean'])} |" in returns  # the new model's
    assert "The distilled trees are stale" not in report


def test_explain_without_distilling_says_so_at_the_top(runs, tmp_path):
    run = copy_run(runs[1], tmp_path / "run")
    before = (run / TREES_DIR / FIDELITY_FILE).read_bytes()
    assert main(["explain", str(run), "--episodes", "1", "--no-distill"]) == 0
    assert (run / TREES_DIR / FIDELITY_FILE).read_bytes() == before
    report = (run / "report" / "report.md").read_text()
    summary, rest = report.split("## Router weights", 1)
    assert summary.index("The distilled trees are stale and not shown") < summary.index("Each decision reads")
    assert "trees pick the router's expert" not in summary  # no agreement of the earlier model
    returns = rest.split("Tree-routed vs neural router")[-1]
    assert "| neural |" not in returns and "The distilled trees are stale" in returns  # nor its returns


def test_export_with_the_neural_router_ignores_stale_trees(runs, tmp_path, capsys):
    current, stale = runs
    assert main(["export", str(stale), "--format", "json", "--out", str(tmp_path / "stale.json")]) == 0
    assert json.loads((tmp_path / "stale.json").read_text())["trees"] == {}  # not the earlier model's trees
    assert main(["export", str(current), "--format", "json", "--out", str(tmp_path / "current.json")]) == 0
    assert sorted(json.loads((tmp_path / "current.json").read_text())["trees"]) == ["multiclass", "per-expert"]
    capsys.readouterr()
    assert main(["export", str(stale), "--format", "python", "--router", "tree", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smose: error:") and "different model" in err and "\n" not in err


def test_sweep_distils_stale_trees_again(runs, tmp_path):
    spec = expand(GRID, tmp_path / "sweep")[0]
    copy_run(runs[1], spec.run_dir)
    assert tree_settings(spec.run_dir) is None  # stale trees count as none
    jobs = plan([spec], Exporter(None), SweepResult(tmp_path / "sweep", [spec]), DISTILL)
    assert [(job.spec.name, job.trains) for job in jobs] == [(spec.name, False)]
    result = run_sweep(GRID, tmp_path / "sweep", workers=1, stream=io.StringIO(), distill=DISTILL)
    assert result.distilled == [spec.name] and not result.failed, result.summary()
    assert stale_trees(spec.run_dir) is None and tree_settings(spec.run_dir) == DISTILL
