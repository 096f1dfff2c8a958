"""Sweeps and results tables: grid expansion and names, sweep.json compatibility, the statistics, and a tiny real
sweep (2 configurations × 2 seeds of 200 Pendulum steps) on the local backend and on a local Ray instance."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from smose import runlock
from smose.algo.policy import ALGOS, make_actor
from smose.cli import build_parser, main
from smose.errors import SmoseError
from smose.experiments.sweep import (
    EXPORT_FILES,
    PARTIAL_DIR,
    RUNS_DIR,
    Distillation,
    Exporter,
    Grid,
    Job,
    SweepResult,
    check_reachable,
    execute,
    execute_jobs,
    expand,
    format_seeds,
    index_finished,
    interrupt_live,
    is_finished,
    parse_list,
    parse_seeds,
    plan,
    run_name,
    run_sweep,
    train_command,
    tree_settings,
    write_sweep_file,
)
from smose.experiments.table import (
    PAPER_RESULTS,
    Row,
    aggregate,
    bootstrap_ci,
    iqm,
    load_runs,
    markdown,
    probability_of_improvement,
    usage_balance,
    versus,
    write_tables,
)
from smose.interpret.distill import model_digest
from smose.serialization import save_model
from smose.tasks.envs import make_env
from smose.training.config import TrainConfig, config_from_args, run_config_json
from smose.training.run_dir import prepare_run_dir
from smose.training.trainer import Trainer, train


# ---- units -----------------------------------------------------------------------------------------------------------
def test_seed_and_list_parsing():
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("0-2,9,1") == (0, 1, 2, 9)
    assert format_seeds(parse_seeds("0-2,9,11-12")) == "0-2,9,11-12"
    for bad in ("4-2", "a", "1-", "", "0-99999999999", "0-9999,20000"):
        with pytest.raises(SmoseError, match="--seeds"):
            parse_seeds(bad)  # the huge ones fail at once instead of expanding
    assert parse_list("0.01, 0.1,1", float, "--lb-weight") == (0.01, 0.1, 1.0)
    with pytest.raises(SmoseError, match="--experts"):
        parse_list("3,x", int, "--experts")


def test_run_names():
    assert run_name("Hopper-v5", "smose", 3, experts=16, lb_weight=0.01) == "Hopper-v5__smose__M16__lb0.01__s3"
    assert run_name("Walker2d-v4", "sac-l", 0) == "Walker2d-v4__sac-l__s0"
    assert run_name("ns/Task-v0", "sac-s", 12, experts=8) == "ns~Task-v0__sac-s__M8__s12"
    assert run_name("Swimmer-v5", "smose", 1, lb_weight=1.0) == "Swimmer-v5__smose__lb1__s1"
    # λ values equal to 12 significant digits would share a name: refused instead of one being dropped.
    with pytest.raises(SmoseError, match="two grid points get the run name"):
        expand(Grid(envs=("Hopper-v5",), algos=("smose",), seeds=(0,), steps=10,
                    lb_weights=(0.1, 0.1 + 1e-15)), Path("unused"))


def test_grid_expansion(tmp_path):
    grid = Grid(envs=("Hopper-v5", "Walker2d-v5"), algos=ALGOS, seeds=(0, 1), steps=1000, experts=(3, 8),
                lb_weights=(0.01, 0.1), settings=(("learning_starts", 100),))
    runs = expand(grid, tmp_path)
    # per env and seed: SMOSE 2 M x 2 λ, SAC-M and SAC-S 2 M each (λ does not apply), SAC-L once (neither applies)
    assert len(runs) == 2 * 2 * (4 + 2 + 2 + 1)
    assert len({r.name for r in runs}) == len(runs)
    assert all(r.config.seed == 0 for r in runs[:18]), "seed-major order: every configuration gets seed 0 first"
    for run in runs:
        c = run.config
        assert run.name == run_name(c.env, c.algo, c.seed, c.experts if c.algo != "sac-l" else None,
                                    c.effective_lb_weight if c.algo == "smose" else None)
        assert (c.steps, c.learning_starts, c.threads) == (1000, 100, 1)
        assert run.run_dir == tmp_path / RUNS_DIR / run.name
    # Axes with one value are settings, not part of the names.
    single = expand(Grid(envs=("Hopper-v5",), algos=("smose",), seeds=(0,), steps=10, experts=(16,)), tmp_path)
    assert [r.name for r in single] == ["Hopper-v5__smose__s0"] and single[0].config.experts == 16
    with pytest.raises(SmoseError, match="unknown environment"):
        Grid(envs=("Nope-v0",), algos=("smose",), seeds=(0,), steps=10)
    with pytest.raises(SmoseError, match="unknown algorithm"):
        Grid(envs=("Hopper-v5",), algos=("ppo",), seeds=(0,), steps=10)


def test_train_command_reproduces_the_config(tmp_path):
    """The process a sweep starts trains exactly the configuration the grid asked for."""
    grid = Grid(envs=("Hopper-v5",), algos=("smose",), seeds=(4,), steps=500, experts=(3, 5), lb_weights=(0.0, 1.0),
                settings=(("batch_size", 32), ("eval_every", 0)))
    for run in expand(grid, tmp_path):
        words = train_command(run.config)
        assert words[1:4] == ["-m", "smose", "train"]
        args = build_parser().parse_args(words[3:])
        assert config_from_args(args) == run.config


def test_sweep_file_refuses_an_incompatible_grid(tmp_path):
    base = dict(envs=("Hopper-v5",), algos=("smose",), seeds=(0,), steps=1000, experts=(3, 8))
    write_sweep_file(Grid(**base), tmp_path)
    write_sweep_file(Grid(**base | {"seeds": (0, 1, 2), "algos": ("smose", "sac-s"), "experts": (3, 8, 16)}), tmp_path)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["grid"]["seeds"] == [0, 1, 2] and "--experts 3,8,16" in saved["command"]
    for change, message in [({"steps": 2000}, "--steps 1000 before, 2000 now"),
                            ({"experts": (8,)}, "run names vary"),
                            ({"settings": (("batch_size", 64),)}, "--batch-size 256 before, 64 now")]:
        with pytest.raises(SmoseError, match="different sweep.*" + message.replace("(", r"\(")):
            write_sweep_file(Grid(**base | change), tmp_path)


def fake_run(run_dir: Path, config: TrainConfig, trained_steps: int | None = None, mean: float = 1.0,
             weights_seed: int | None = None) -> Path:
    """A run directory as `smose train` leaves it (finished when ``trained_steps`` is given), without training: the
    model is untrained, its weights drawn from ``weights_seed`` (default the run's seed, so the same configuration
    gets the same model)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(run_config_json(config, {})))
    (run_dir / "metrics.csv").write_text("step,event\n100,eval\n")
    if trained_steps is not None:
        env = make_env(config.env)
        space = env.action_space
        torch.manual_seed(config.seed if weights_seed is None else weights_seed)
        actor = make_actor(config.algo, env.observation_space.shape[0], space.shape[0], space.low, space.high,
                           config.experts)
        env.close()
        save_model(actor, run_dir, config.env, {"trained_steps": trained_steps})
        (run_dir / "eval.json").write_text(json.dumps({"mean": mean, "std": 0.0}))
    return run_dir


def test_export_names_races_and_partial_runs(tmp_path):
    export = tmp_path / "results"
    one = dict(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,))
    short = expand(Grid(**one, steps=1000), tmp_path / "a")[0]
    long = expand(Grid(**one, steps=2000), tmp_path / "b")[0]
    other = expand(Grid(**one, steps=2000, settings=(("batch_size", 64),)), tmp_path / "c")[0]
    assert short.name == long.name == other.name == "Pendulum-v1__smose__s0"  # names carry no budget or settings
    for spec in (short, long, other):
        fake_run(spec.run_dir, spec.config, spec.config.steps)
    stale = Exporter(export)  # made before anything was exported: meets the others' exports as a race
    exporter = Exporter(export)
    for spec in (short, long, other):
        exporter.export(spec)
    names = [exporter.find(spec).name for spec in (short, long, other)]
    assert names[:2] == ["Pendulum-v1__smose__s0", "Pendulum-v1__smose__2k__s0"]
    assert re.fullmatch(r"Pendulum-v1__smose__2k__[0-9a-f]{8}__s0", names[2])
    assert sorted(p.name for p in export.iterdir()) == sorted(names)
    # A new index (a later sweep) finds each configuration under its name; a stale one adopts, never overwrites.
    assert [Exporter(export).find(spec).name for spec in (short, long, other)] == names
    (long.run_dir / "eval.json").write_text(json.dumps({"mean": 99.0, "std": 0.0}))
    stale.export(long)
    assert stale.find(long) == export / names[1]
    assert json.loads((export / names[1] / "eval.json").read_text())["mean"] == 1.0
    # A half-copied export (the hidden temporary of an interrupted copy) is never taken for a run.
    shutil.copytree(export / names[0], export / ".Pendulum-v1__smose__s7.tmp")
    assert sorted(p.name for p in index_finished(export).values()) == sorted(names)
    # An unfinished run leaves its config and metrics in partial/; finishing it removes that record.
    seed1 = expand(Grid(**one | {"seeds": (1,)}, steps=1000), tmp_path / "a")[0]
    fake_run(seed1.run_dir, seed1.config)
    (seed1.run_dir / "metrics.csv").write_text("step,event\n")  # stopped before its first step: nothing to record
    exporter.export_partial(seed1)
    assert not (export / PARTIAL_DIR).exists()
    fake_run(seed1.run_dir, seed1.config)
    exporter.export_partial(seed1)
    record = export / PARTIAL_DIR / seed1.name
    assert sorted(p.name for p in record.iterdir()) == ["config.json", "metrics.csv"]
    assert Exporter(export).find(seed1) is None
    fake_run(seed1.run_dir, seed1.config, 1000)
    exporter.export(seed1)
    assert not record.exists() and (export / seed1.name / "model.safetensors").is_file()


def test_table_counts_each_run_once_and_keeps_settings_apart(tmp_path):
    base = TrainConfig(env="Hopper-v4", steps=1000)
    fake_run(tmp_path / "sweep" / "a", base, 1000, mean=10.0)
    fake_run(tmp_path / "sweep" / "a" / "checkpoint", base, 1000, mean=10.0)  # inside a run: not a run of its own
    fake_run(tmp_path / "export" / "a", base, 1000, mean=10.0)  # the same run, exported: counted once
    fake_run(tmp_path / "sweep" / "b", dataclasses.replace(base, seed=1), 1000, mean=20.0)
    fake_run(tmp_path / "sweep" / "c", dataclasses.replace(base, seed=2, batch_size=64), 1000, mean=99.0)
    fake_run(tmp_path / "sweep" / "d", dataclasses.replace(base, seed=3))  # unfinished
    unfinished_with_evals = fake_run(tmp_path / "sweep" / "e", dataclasses.replace(base, seed=4))
    (unfinished_with_evals / "metrics.csv").write_text(
        "step,event,eval_return_mean\n200,eval,31.5\n400,eval,57.25\n450,episode,\n")
    records, skipped = load_runs(tmp_path)
    assert sorted(r.final_return for r in records) == [10.0, 20.0, 99.0]
    assert skipped == [f"{tmp_path}/sweep/a: the same configuration and seed as {tmp_path}/export/a, counted once",
                       f"{tmp_path}/sweep/d: unfinished (step 100 of 1,000)",
                       f"{tmp_path}/sweep/e: unfinished (step 450 of 1,000; last evaluation 57.25 at step 400)"]
    rows = aggregate(records)
    assert [(r.seeds, r.settings) for r in rows] == [([0, 1], ""), ([2], "batch_size=64")]
    assert rows[0].paper == PAPER_RESULTS["Hopper"]["smose"] and rows[1].paper is None  # batch 64: not the paper's
    assert math.isnan(rows[0].ci[0])  # two seeds: no interval
    assert "| Hopper-v4 (batch_size=64) | smose | 8 | 0.1 | 1,000 | 1 | 99.00 ± – | 99.00 | – |" in markdown(
        rows, skipped, tmp_path)


def test_locks_keep_a_second_writer_out(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert not runlock.is_held(run_dir)
    with runlock.hold(run_dir, "trainer"):
        assert runlock.is_held(run_dir) and runlock.holder(run_dir).startswith(f"pid {os.getpid()} on ")
        with pytest.raises(SmoseError, match="another trainer is working here"):
            with runlock.hold(run_dir, "trainer"):
                pass
    assert not runlock.is_held(run_dir)  # released with the block, however it ended
    # A trainer started on a run another process is training stops before writing anything.
    config = TrainConfig(env="Pendulum-v1", steps=50, learning_starts=10, out=str(run_dir))
    with runlock.hold(run_dir, "trainer"):
        with pytest.raises(SmoseError, match="another trainer"):
            train(config, run_dir, force=True, progress=False)
    assert not (run_dir / "config.json").exists()
    # A sweep neither deletes nor restarts a run being trained, nor a model whose config it cannot read.
    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0, 1), steps=50, settings=(("learning_starts", 10),))
    busy, unreadable, other = expand(dataclasses.replace(grid, seeds=(0, 1, 2)), tmp_path / "sweep")
    fake_run(busy.run_dir, busy.config)
    fake_run(unreadable.run_dir, unreadable.config, 50)
    (unreadable.run_dir / "config.json").write_text("{not json")
    fake_run(other.run_dir, dataclasses.replace(other.config, batch_size=64), 50)  # finished, another configuration
    result = SweepResult(tmp_path / "sweep", [busy, unreadable, other])
    with runlock.hold(busy.run_dir, "trainer"):
        assert plan([busy, unreadable, other], Exporter(None), result) == []
    assert "is being trained by pid" in result.failed[busy.name]
    assert "cannot be read" in result.failed[unreadable.name]
    assert "finished run with another configuration" in result.failed[other.name]
    for spec, name in ((busy, "metrics.csv"), (unreadable, "model.json"), (other, "eval.json")):
        assert (spec.run_dir / name).is_file()
    # Two sweeps on one directory: the second refuses to start.
    with runlock.hold(tmp_path / "sweep", "sweep"):
        with pytest.raises(SmoseError, match="another sweep is working here"):
            run_sweep(grid, tmp_path / "sweep")


def test_iqm_and_bootstrap_by_hand():
    # n = 8: floor(8/4) = 2 values cut from each end -> mean(3, 4, 5, 6)
    assert iqm([100, 1, 7, 2, 3, 6, 5, 4]) == 4.5
    assert iqm([1, 2, 30]) == 11.0  # fewer than 4 values: nothing cut
    assert iqm([1, 2, 3, 10]) == 2.5  # n = 4: one cut from each end
    # Two seeds {0, 10}: the resampled IQM (= mean) is 0, 5 or 10 with probabilities 1/4, 1/2, 1/4, so the 95%
    # percentile interval spans [0, 10]; one seed or equal values give a zero-width interval.
    assert bootstrap_ci([0.0, 10.0]) == (0.0, 10.0)
    assert bootstrap_ci([3.0]) == (3.0, 3.0)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    # Fixed seed: reproducible; the interval holds the statistic for a spread sample.
    values = [1.0, 5.0, 2.0, 8.0, 3.0]
    low, high = bootstrap_ci(values)
    assert bootstrap_ci(values) == (low, high) and low <= iqm(values) <= high and low < high
    assert usage_balance([0.25] * 4) == pytest.approx(1.0)
    assert usage_balance([1.0, 0.0, 0.0]) == 0.0
    assert usage_balance([0.5, 0.5, 0.0, 0.0]) == pytest.approx(0.5)
    assert math.isnan(usage_balance([1.0]))
    assert PAPER_RESULTS["Hopper"]["smose"] == 2816.08 and PAPER_RESULTS["Reacher"]["sac-l"] == -3.75


def test_paper_comparison_only_for_the_papers_settings(tmp_path):
    half = PAPER_RESULTS["Hopper"]["smose"] / 2
    rows = [Row("Hopper-v4", "smose", 8, "0.1", 1000, [0, 1], [half - 1, half + 1]),
            Row("Hopper-v4", "smose", 3, "0.1", 1000, [0], [half]),  # another M: not the paper's setting
            Row("Hopper-v4", "smose", 8, "1", 1000, [0], [half]),  # another λ
            Row("Reacher-v5", "sac-l", None, None, 1000, [0, 1, 2], [-7.0, -7.5, -8.0]),
            Row("Pendulum-v1", "sac-l", None, None, 1000, [0], [-150.0])]  # not in the paper
    assert [row.paper for row in rows] == [PAPER_RESULTS["Hopper"]["smose"], None, None, -3.75, None]
    text = markdown(rows, [], tmp_path)
    assert f"| Hopper-v4 | smose | 1,000 | 2 | {half:.2f} | 2816.08 | 0.500 |" in text
    assert "| Reacher-v5 | sac-l | 1,000 | 3 | -7.50 | -3.75 | 2.000 |" in text
    main_table = text.split("\n## ")[0]  # up to the first section after the main table
    assert "| Hopper-v4 | smose | 8 | 0.1 | 1,000 | 2 |" in main_table and main_table.count("| Hopper-v4 |") == 3


def test_interrupt_reaches_the_training_processes(tmp_path):
    """Ctrl-C on the sweep asks each running trainer (in its own session) to checkpoint and stop, exactly once."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (print('stopping'), sys.exit(7)))\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    log = tmp_path / "run.log"
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(execute, [[sys.executable, "-c", child]], str(log), str(tmp_path))
        deadline = time.monotonic() + 30
        while "\nready\n" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        interrupt_live()
        assert future.result(timeout=30) == (7, "stopping", 0)
    assert time.monotonic() - started < 10


def test_a_job_runs_its_commands_in_turn_up_to_the_first_failure(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("an older job's output\n")
    say = [sys.executable, "-c", "print('one')"]
    fail = [sys.executable, "-c", "import sys; print('smose: error: bad depth'); sys.exit(2)"]
    assert execute([say, fail, say], str(log), str(tmp_path)) == (2, "smose: error: bad depth", 1)
    lines = log.read_text().splitlines()
    assert [line for line in lines if not line.startswith("$ ")] == ["one", "smose: error: bad depth"]
    assert len([line for line in lines if line.startswith("$ ")]) == 2  # the third command never ran
    assert execute([say, say], str(log), str(tmp_path)) == (0, "", 2)


def fake_trees(run_dir: Path, depth: int, agreement: float = 0.9, neural: float = 100.0, trees: float = 80.0,
               dagger: int = 0, seed: int = 0, model: Path | None = None) -> None:
    """A trees/fidelity.json as `smose distill` writes it (only the fields the sweep and the table read), distilled
    from the model in ``model`` (default: the run's own)."""
    digest = model_digest(model or run_dir)
    (run_dir / "trees").mkdir(parents=True, exist_ok=True)
    (run_dir / "trees" / "per-expert.txt").write_text("expert 0: if ... \n")
    kinds = {k: {"agreement": agreement, "closed_loop_agreement": agreement / 2} for k in ("per-expert", "multiclass")}
    (run_dir / "trees" / "fidelity.json").write_text(json.dumps(
        {"format": "smose-fidelity", "router_sha256": digest, "depth": depth, "dagger_rounds": dagger,
         "episodes": 20, "eval_episodes": 10, "seed": seed, "mode": "gated", **kinds,
         "returns": {"neural": {"mean": neural}, "per-expert": {"mean": trees}, "multiclass": {"mean": trees / 2},
                     "ratio": {"per-expert": trees / neural, "multiclass": trees / neural / 2}}}))


def test_distill_jobs_come_first_and_trees_travel_with_the_export(tmp_path):
    grid = Grid(envs=("Pendulum-v1",), algos=("smose", "sac-s"), seeds=(0, 1, 2, 3), steps=1000)
    specs = {s.name: s for s in expand(grid, tmp_path / "sweep")}
    export = tmp_path / "results"
    done = [specs[f"Pendulum-v1__{a}__s{i}"] for a in ("smose", "sac-s") for i in (0, 1)]
    for spec in done:
        fake_run(spec.run_dir, spec.config, 1000)
    fake_trees(specs["Pendulum-v1__smose__s1"].run_dir, depth=2)  # trees made otherwise: distilled again
    exported = fake_run(export / "Pendulum-v1__smose__s2", specs["Pendulum-v1__smose__s2"].config, 1000)
    fake_trees(exported, depth=3)  # in the export with the trees asked for: imported with them, no job
    conflict = fake_run(export / "Pendulum-v1__smose__s3", specs["Pendulum-v1__smose__s3"].config, 1000)
    fake_trees(conflict, depth=3, seed=7)  # committed trees made another way: never made over
    result = SweepResult(tmp_path / "sweep", list(specs.values()))
    jobs = plan(list(specs.values()), Exporter(export), result, distill=Distillation(3))
    assert sorted(result.skipped) == sorted(s.name for s in done)
    assert result.imported == ["Pendulum-v1__smose__s2", "Pendulum-v1__smose__s3"]
    assert tree_settings(specs["Pendulum-v1__smose__s2"].run_dir) == Distillation(3)
    assert result.failed == {"Pendulum-v1__smose__s3": (
        f"{conflict}/trees holds trees made with depth=3 dagger=0 kind=both episodes=20 eval_episodes=10 seed=7 "
        "mode=gated, not depth=3 dagger=0 kind=both episodes=20 eval_episodes=10 seed=0 mode=gated; remove it to "
        "replace them")}
    assert tree_settings(conflict).seed == 7
    # Distil-only jobs for the finished SMOSE runs (not the dense baselines), then training with distilling after.
    assert [(j.spec.name, j.trains) for j in jobs] == [("Pendulum-v1__smose__s0", False),
                                                       ("Pendulum-v1__smose__s1", False),
                                                       ("Pendulum-v1__sac-s__s2", True),
                                                       ("Pendulum-v1__sac-s__s3", True)]
    assert jobs[0].commands == [Distillation(3).command(specs["Pendulum-v1__smose__s0"].run_dir)]
    assert [c[3] for c in jobs[2].commands] == ["train"]  # nothing to distil in a dense baseline
    # The trees made in the sweep directory that are not the ones asked for stay out of the export.
    assert tree_settings(export / "Pendulum-v1__smose__s1") is None
    shutil.rmtree(specs["Pendulum-v1__smose__s0"].run_dir)
    fresh = plan([specs["Pendulum-v1__smose__s0"]], Exporter(None), SweepResult(tmp_path / "sweep", []),
                 distill=Distillation(3, dagger=2))
    assert [c[3] for c in fresh[0].commands] == ["train", "distill"] and fresh[0].trains
    assert fresh[0].commands[1][5:9] == ["--depth", "3", "--dagger", "2"]
    # Trees of the right depth made without the DAgger rounds asked for are made again (no export to protect).
    again = plan([specs["Pendulum-v1__smose__s2"]], Exporter(None), SweepResult(tmp_path / "sweep", []),
                 distill=Distillation(3, dagger=2))
    assert [(j.spec.name, j.trains) for j in again] == [("Pendulum-v1__smose__s2", False)]
    with pytest.raises(SmoseError, match="--dagger must be an integer >= 0"):
        Distillation(3, dagger=-1)
    # Exporting sends the trees along: to a run the export holds without trees, never over trees it has.
    spec = specs["Pendulum-v1__smose__s1"]
    Exporter(export).export(spec, trees=False)
    assert tree_settings(export / spec.name) is None
    Exporter(export).export(spec)
    assert tree_settings(export / spec.name).depth == 2
    assert sorted(p.name for p in (export / spec.name / "trees").iterdir()) == ["fidelity.json", "per-expert.txt"]
    fake_trees(spec.run_dir, depth=3)
    Exporter(export).export(spec)
    assert tree_settings(export / spec.name).depth == 2
    shutil.rmtree(export / spec.name / "trees")
    Exporter(export).export(spec)
    assert tree_settings(export / spec.name).depth == 3
    assert not list(export.glob(f"{spec.name}/.*"))  # no temporary left behind


def test_a_run_keeps_its_training_when_distilling_fails(tmp_path):
    """execute_jobs with stand-in commands: training went through, then distilling failed or wrote nothing."""
    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0, 1, 2), steps=1000)
    specs = expand(grid, tmp_path / "sweep")
    (tmp_path / "sweep" / "logs").mkdir(parents=True)
    for spec in specs:
        fake_run(spec.run_dir, spec.config, 1000)
    ok = [sys.executable, "-c", "pass"]
    fail = [sys.executable, "-c", "import sys; print('smose: error: cannot distil'); sys.exit(2)"]
    silent_fail = [sys.executable, "-c", "import sys; sys.exit(3)"]
    fake_trees(tmp_path / "made", 3, model=specs[2].run_dir)  # what the stand-in for `smose distill` leaves in the run
    writes_trees = [sys.executable, "-c", f"import shutil; shutil.copytree({str(tmp_path / 'made' / 'trees')!r}, "
                                          f"{str(specs[2].run_dir / 'trees')!r})"]
    jobs = [Job(specs[0], [ok, fail], tmp_path / "sweep" / "logs" / "a.log"),
            Job(specs[1], [ok, silent_fail], tmp_path / "sweep" / "logs" / "b.log"),
            Job(specs[2], [writes_trees], tmp_path / "sweep" / "logs" / "c.log", trains=False)]
    export = tmp_path / "results"
    result = SweepResult(tmp_path / "sweep", specs)
    execute_jobs(jobs, Exporter(export), result, "local", 1, None, io.StringIO(), Distillation(3))
    assert result.trained == [specs[0].name, specs[1].name] and result.distilled == [specs[2].name]
    assert result.failed == {specs[0].name: "trained, but distilling failed: smose: error: cannot distil",
                             specs[1].name: "trained, but distilling failed: exit status 3"}  # not the echoed command
    # The trained runs are exported all the same (without trees); the distilled one with its trees.
    assert sorted(p.name for p in export.iterdir()) == sorted(s.name for s in specs)
    assert tree_settings(export / specs[0].name) is None and tree_settings(export / specs[2].name).depth == 3
    # A distil job that exits normally without leaving trees is a failure too.
    shutil.rmtree(specs[2].run_dir / "trees")
    result = SweepResult(tmp_path / "sweep", specs)
    execute_jobs([Job(specs[2], [ok], tmp_path / "sweep" / "logs" / "d.log", trains=False)], Exporter(export),
                 result, "local", 1, None, io.StringIO(), Distillation(3, dagger=1))
    assert result.failed == {specs[2].name: "finished, but distilling failed: smose distill exited normally but "
                                            "wrote no trees"}


def test_a_failure_is_worded_by_its_cause(tmp_path):
    """A complete run whose job failed all the same: "distilling failed" only when distilling is what failed."""
    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0, 1, 2), steps=1000)
    specs = expand(grid, tmp_path / "sweep")
    logs = tmp_path / "sweep" / "logs"
    logs.mkdir(parents=True)
    for spec in specs:
        fake_run(spec.run_dir, spec.config, 1000)
    ok = [sys.executable, "-c", "pass"]
    fail = [sys.executable, "-c", "import sys; print('smose: error: disk full'); sys.exit(2)"]
    # No --distill: the training process failed after writing the run's results.
    result = SweepResult(tmp_path / "sweep", specs)
    execute_jobs([Job(specs[0], [fail], logs / "a.log")], Exporter(None), result, "local", 1, None, io.StringIO())
    assert result.failed == {specs[0].name: "trained, but the training process failed: smose: error: disk full"}
    # With --distill: the training process failed (distilling never ran); distilling failed.
    result = SweepResult(tmp_path / "sweep", specs)
    execute_jobs([Job(specs[1], [fail, ok], logs / "b.log"), Job(specs[2], [ok, fail], logs / "c.log")],
                 Exporter(None), result, "local", 1, None, io.StringIO(), Distillation(3))
    assert result.failed == {specs[1].name: "trained, but the training process failed: smose: error: disk full",
                             specs[2].name: "trained, but distilling failed: smose: error: disk full"}


def test_a_second_sweep_cannot_export_to_the_same_directory(tmp_path, capsys):
    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,), steps=1000)
    export = tmp_path / "results"
    spec = expand(grid, tmp_path / "second")[0]
    fake_run(export / spec.name, spec.config, 1000)  # the run is in the export: the sweep only takes it from there
    with runlock.hold(export, "sweep"):  # another sweep exporting there
        with pytest.raises(SmoseError, match=f"{export}: another sweep is working here"):
            run_sweep(grid, tmp_path / "second", export=export, stream=io.StringIO())
        assert not spec.run_dir.exists()
        assert main(["sweep", "--envs", "Pendulum-v1", "--steps", "1000", "--out", str(tmp_path / "third"),
                     "--export", str(export)]) == 2
        assert "another sweep is working here" in capsys.readouterr().err
    result = run_sweep(grid, tmp_path / "second", export=export, stream=io.StringIO())
    assert result.imported == [spec.name] and not result.failed


def test_a_sweep_never_clears_a_run_directory_holding_other_files(tmp_path):
    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0, 1), steps=1000)
    partial, foreign = expand(grid, tmp_path / "sweep")
    for spec in (partial, foreign):  # unfinished runs of another configuration: started afresh
        fake_run(spec.run_dir, dataclasses.replace(spec.config, batch_size=64))
    (foreign.run_dir / "notes.txt").write_text("mine")
    result = SweepResult(tmp_path / "sweep", [partial, foreign])
    jobs = plan([partial, foreign], Exporter(None), result)
    assert [job.spec.name for job in jobs] == [partial.name] and not list(partial.run_dir.iterdir())
    assert result.failed == {foreign.name: f"{foreign.run_dir}: does not look like a run directory (it holds "
                                           "notes.txt); --force only starts run directories afresh: choose another "
                                           "--out or move those files away"}
    assert sorted(p.name for p in foreign.run_dir.iterdir()) == ["config.json", "metrics.csv", "notes.txt"]


def test_trees_are_copied_only_to_the_model_they_were_distilled_from(tmp_path):
    """The same configuration trained here and for the export (another machine) can differ: the exported trees
    do not describe the model trained here, nor its trees the exported model."""
    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,), steps=1000)
    spec = expand(grid, tmp_path / "sweep")[0]
    export = tmp_path / "results"
    fake_run(spec.run_dir, spec.config, 1000, weights_seed=1)  # trained here
    exported = fake_run(export / spec.name, spec.config, 1000, weights_seed=2)  # trained elsewhere
    fake_trees(exported, depth=3)
    result = SweepResult(tmp_path / "sweep", [spec])
    jobs = plan([spec], Exporter(export), result, distill=Distillation(3))
    assert [(job.spec.name, job.trains) for job in jobs] == [(spec.name, False)]  # distilled here instead
    assert not (spec.run_dir / "trees").exists() and not result.failed
    # The other way: trees made here do not go to an exported run of another model that has none.
    shutil.rmtree(exported / "trees")
    fake_trees(spec.run_dir, depth=3)
    Exporter(export).export(spec)
    assert not (exported / "trees").exists()
    # The same model (as a run taken from the export has): the trees go along.
    shutil.copy2(exported / "model.safetensors", spec.run_dir / "model.safetensors")
    shutil.copy2(exported / "model.json", spec.run_dir / "model.json")
    fake_trees(spec.run_dir, depth=3)
    Exporter(export).export(spec)
    assert tree_settings(exported) == Distillation(3)


def test_table_reports_the_distilled_trees(tmp_path):
    base = TrainConfig(env="Hopper-v4", steps=1000)
    # Seed 0 has a negative neural return: no ratio of its own, but its returns count in the means.
    for seed, (agreement, neural, trees) in enumerate([(0.7, -50.0, -40.0), (0.9, 100.0, 80.0), (0.8, 300.0, 300.0)]):
        fake_trees(fake_run(tmp_path / f"s{seed}", dataclasses.replace(base, seed=seed), 1000), 3, agreement,
                   neural, trees)
    fake_run(tmp_path / "s3", dataclasses.replace(base, seed=3), 1000)  # not distilled: counts for the return only
    fake_run(tmp_path / "s4", dataclasses.replace(base, seed=4), 1000)
    (tmp_path / "s4" / "trees").mkdir()
    (tmp_path / "s4" / "trees" / "fidelity.json").write_text("{\"format\": \"something else\"}")
    records, skipped = load_runs(tmp_path)
    assert len(records) == 5 and skipped == [f"{tmp_path}/s4/trees/fidelity.json: not a smose distillation summary "
                                             "(the run counts, without its trees)"]
    paths = write_tables(tmp_path, tmp_path / "table")
    text = paths["markdown"].read_text().split("## Distilled trees")[1]
    # agreement (0.7 + 0.9 + 0.8) / 3, closed loop half of it; neural (-50 + 100 + 300) / 3 = 116.67; per-expert
    # trees (-40 + 80 + 300) / 3 = 113.33 -> ratio 0.97, worst seed 0.8 (seed 0 has no ratio); multiclass
    # (-20 + 40 + 150) / 3 = 56.67 -> 0.49, worst 0.4.
    assert ("| Hopper-v4 | 8 | 0.1 | 1,000 | 3 | 0 | 3 | 80.0% / 40.0% | 80.0% / 40.0% | 116.67 | "
            "113.33 (0.97, 0.80) | 56.67 (0.49, 0.40) |") in text
    with open(paths["trees"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = ("seed", "depth", "ratio_per-expert", "return_multiclass", "closed_loop_agreement_multiclass")
    assert [tuple(r[c] for c in columns) for r in rows] == [("0", "3", "", "-20", "0.35"),
                                                            ("1", "3", "0.8", "40", "0.45"),
                                                            ("2", "3", "1", "150", "0.4")]


def test_cli_rejects_bad_sweeps(tmp_path, capsys, monkeypatch):
    assert main(["sweep", "--envs", "Nope-v0", "--steps", "10", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == "smose: error: unknown environment 'Nope-v0' in --envs"
    # registered but unbuildable (needs mujoco-py): refused once, before anything is written, not in every job
    assert main(["sweep", "--envs", "Pendulum-v1,Hopper-v3", "--steps", "10", "--out", str(tmp_path / "v3")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smose: error: environment 'Hopper-v3' ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v3").exists()
    assert main(["sweep", "--envs", "Pendulum-v1", "--steps", "10", "--address", "x:1", "--out", str(tmp_path)]) == 2
    assert "--address is for --backend ray" in capsys.readouterr().err
    assert main(["table", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 2
    assert "no finished runs found" in capsys.readouterr().err
    with pytest.raises(SmoseError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        check_reachable("127.0.0.1:1")  # nothing listens on port 1: an error in seconds, not minutes of retries
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["sweep", "--envs", "Pendulum-v1", "--steps", "10", "--backend", "ray",
                 "--out", str(tmp_path / "r")]) == 2
    assert "pip install 'smose[ray]'" in capsys.readouterr().err and not (tmp_path / "r").exists()
    # an --export that is a file is refused before the sweep directory is made
    (tmp_path / "a-file").write_text("data")
    assert main(["sweep", "--envs", "Pendulum-v1", "--steps", "10", "--out", str(tmp_path / "e"),
                 "--export", str(tmp_path / "a-file")]) == 2
    assert "cannot create the export directory" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and (tmp_path / "a-file").read_text() == "data"


def test_smose_against_the_baselines_and_ablations(tmp_path):
    # Pairs (x, y): 5 > 1, 5 > 4, 2 > 1, 2 < 4 -> 3 of 4; a tie counts half.
    assert probability_of_improvement([5.0, 2.0], [1.0, 4.0]) == 0.75
    assert probability_of_improvement([3.0], [3.0]) == 0.5 and probability_of_improvement([1.0], [2.0]) == 0.0
    smose = Row("Hopper-v4", "smose", 8, "0.1", 1000, [0, 1], [5.0, 2.0], [0.9, 0.7], tail_returns=[4.0, 2.0])
    rows = [smose,
            Row("Hopper-v4", "smose", 3, "0.1", 1000, [0], [9.0], [0.5]),  # ablation: no SAC-S sized for M = 3
            Row("Hopper-v4", "smose", 8, "1", 1000, [0], [8.0], [1.0]),  # ablation: another λ, not compared
            Row("Hopper-v4", "sac-s", 8, None, 1000, [0, 1], [1.0, 4.0], tail_returns=[1.0, 3.0]),
            Row("Hopper-v4", "sac-l", None, None, 1000, [0], [3.5]),
            Row("Hopper-v4", "sac-s", 8, None, 2000, [0], [0.0]),  # another budget
            Row("Reacher-v4", "smose", 8, "0.1", 1000, [0], [-7.0], [0.8], tail_returns=[-5.0]),
            Row("Reacher-v4", "sac-s", 8, None, 1000, [0], [-6.0], tail_returns=[-6.0])]
    # SAC-S is sized for M, so only the M = 8 group meets it; SAC-L meets every SMOSE group with λ = 0.1.
    assert [(a.env, a.experts, b.algo) for a, b in versus(rows)] == [
        ("Hopper-v4", 8, "sac-s"), ("Hopper-v4", 8, "sac-l"), ("Hopper-v4", 3, "sac-l"), ("Reacher-v4", 8, "sac-s")]
    text = markdown(rows, [], tmp_path)
    assert "| Hopper-v4 | 8 | 1,000 | sac-s | 2 / 1 |" not in text
    assert "| Hopper-v4 | 8 | 1,000 | sac-s | 2 / 2 | 3.50 | 2.50 | +1.00 | 0.75 | +1.00 |" in text
    assert "| Hopper-v4 | 8 | 1,000 | sac-l | 2 / 1 | 3.50 | 3.50 | +0.00 | 0.50 |" in text
    assert "| Reacher-v4 | 8 | 1,000 | sac-s | 1 / 1 | -7.00 | -6.00 | -1.00 | 0.00 | +1.00 |" in text
    assert "| Hopper-v4 | 8 | 1,000 | sac-l | 2 / 1 | 3.50 | 3.50 | +0.00 | 0.50 | – |" in text  # no curve: no tail
    # Reacher: behind on the final evaluation, ahead on the last evaluations.
    assert ("mean ≥ sac-s mean on **1 of 2** tasks at 1,000 steps: Hopper-v4 (on the means of the last 3 "
            "evaluations: 2 of 2).") in text
    assert "(M = 8) mean ≥ sac-l mean on **1 of 1** tasks at 1,000 steps: Hopper-v4." in text  # no curves
    assert "(M = 3) mean ≥ sac-l mean on **1 of 1** tasks" in text
    # By task: the paper's M and λ only, one column per algorithm; the 2,000-step budget has one algorithm: no table.
    by_task = text.split("## By task: 1,000 steps (M = 8, λ = 0.1)")[1].split("##")[0]
    assert "| task | smose | sac-s | sac-l |" in by_task
    assert "| Hopper-v4 | 3.50 ± 2.12 (2) | 2.50 ± 2.12 (2) | 3.50 ± – (1) |" in by_task
    assert "| Reacher-v4 | -7.00 ± – (1) | -6.00 ± – (1) | – |" in by_task
    assert "## By task: 2,000" not in text
    # Ablations: only Hopper had more than one SMOSE setting at a budget; balance beside the return.
    ablations = text.split("## Ablations")[1]
    assert "| Hopper-v4 | 1,000 | 3 | 0.1 | 1 | 9.00 ± – | 9.00 | 0.500 |" in ablations
    assert "| Hopper-v4 | 1,000 | 8 | 0.1 | 2 | 3.50 ± 2.12 | 3.50 | 0.800 |" in ablations
    assert "| Hopper-v4 | 1,000 | 8 | 1 | 1 |" in ablations and "Reacher" not in ablations


# ---- a real tiny sweep -----------------------------------------------------------------------------------------------
TINY = dict(envs=("Pendulum-v1",), algos=("smose",), seeds=(0, 1), steps=200, experts=(2, 4),
            settings=(("batch_size", 32), ("eval_episodes", 1), ("eval_every", 100), ("learning_starts", 100)))
TINY_ARGS = ["--envs", "Pendulum-v1", "--algos", "smose", "--experts", "2,4", "--steps", "200", "--batch-size", "32",
             "--eval-episodes", "1", "--eval-every", "100", "--learning-starts", "100"]


def finished_runs(out) -> dict[str, float]:
    """run name -> final evaluation mean, for the finished runs of a sweep directory."""
    runs = {}
    for spec in expand(Grid(**TINY), out):
        if is_finished(spec.run_dir, spec.config):
            runs[spec.name] = json.loads((spec.run_dir / "eval.json").read_text())["mean"]
    return runs


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny sweep on the local backend, one of its runs interrupted beforehand at step 150 (with a checkpoint),
    exporting to a results directory."""
    root = tmp_path_factory.mktemp("sweeps")
    out, export = root / "local", root / "results"
    partial = expand(Grid(**TINY), out)[1]
    trainer = Trainer(partial.config, prepare_run_dir(partial.run_dir, force=False))
    trainer.write_config()
    trainer.run(150)
    trainer.checkpoint()
    trainer.close()
    result = run_sweep(Grid(**TINY), out, backend="local", workers=2, export=export)
    return result, partial.name, export


@pytest.mark.slow
def test_local_sweep_trains_resumes_and_exports(local_sweep):
    result, partial, export = local_sweep
    assert not result.failed, result.summary()
    assert result.resumed == [partial] and sorted(result.trained) == sorted(finished_runs(result.out))
    assert len(finished_runs(result.out)) == 4
    log = (result.out / "logs" / f"{partial}.log").read_text()
    assert "--resume" in log.splitlines()[0]
    # The resumed run kept its first evaluation (step 100) and continued to 200.
    with open(result.out / RUNS_DIR / partial / "metrics.csv", newline="") as fh:
        eval_steps = [int(row["step"]) for row in csv.DictReader(fh) if row["event"] == "eval"]
    assert eval_steps == [100, 200]
    # The export holds exactly the small files of each finished run.
    assert sorted(p.name for p in export.iterdir() if p.name != ".lock") == sorted(finished_runs(result.out))
    for run_dir in (p for p in export.iterdir() if p.is_dir()):
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(EXPORT_FILES)


@pytest.mark.slow
def test_ray_sweep_matches_local(local_sweep, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'smose[ray]')")
    local, _, _ = local_sweep
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(Grid(**TINY), tmp_path / "ray", backend="ray")
    finally:
        ray.shutdown()
    assert not result.failed, result.summary()
    ours, theirs = finished_runs(result.out), finished_runs(local.out)
    assert sorted(ours) == sorted(theirs) and len(ours) == 4
    # Same command, same seeds, one thread: the backends compute the same runs (the resumed one included).
    assert ours == theirs
    assert write_tables(result.out)["csv"].read_text() == write_tables(local.out)["csv"].read_text()


@pytest.mark.slow
def test_table_of_a_sweep_and_of_a_results_directory(local_sweep, tmp_path):
    result, _, export = local_sweep
    paths = write_tables(result.out)
    assert paths["markdown"].parent == result.out / "table"
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["experts"], r["n_seeds"], r["steps"]) for r in rows] == [("2", "2", "200"), ("4", "2", "200")]
    returns = finished_runs(result.out)
    for row in rows:
        values = [returns[f"Pendulum-v1__smose__M{row['experts']}__s{s}"] for s in (0, 1)]
        assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-5)
        assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-5)
        assert 0.0 <= float(row["usage_balance"]) <= 1.0
        # last 3: each run's evaluations during training (here at steps 100 and 200), averaged, then over seeds
        curves = []
        for s in (0, 1):
            with open(result.out / RUNS_DIR / f"Pendulum-v1__smose__M{row['experts']}__s{s}" / "metrics.csv") as fh:
                curves.append([float(r["eval_return_mean"]) for r in csv.DictReader(fh) if r["event"] == "eval"])
        assert [len(c) for c in curves] == [2, 2]
        assert float(row["tail_mean"]) == pytest.approx(np.mean(curves), rel=1e-5)
    text = paths["markdown"].read_text()
    assert f"by `smose table {result.out}`" in text and "Runs made by `smose sweep --envs Pendulum-v1" in text
    # The sweep's non-default settings name the task: such runs are not the paper's setting.
    task = "Pendulum-v1 (batch_size=32, eval_episodes=1, eval_every=100, learning_starts=100)"
    assert f"| {task} | smose | 2 | 0.1 | 200 | 2 |" in text and "No group matches" in text
    assert f"| {task} | 200 | 4 | 0.1 | 2 |" in text.split("## Ablations")[1]  # M varies: an ablation
    assert "## SMOSE against" not in text and paths["versus"].read_text().count("\n") == 1  # no baselines: header
    assert (result.out / "table" / "curves_Pendulum-v1.png").stat().st_size > 5000
    with open(paths["curves_csv"], newline="") as fh:
        assert [(r["experts"], r["step"]) for r in csv.DictReader(fh)] == [("2", "100"), ("2", "200"),
                                                                          ("4", "100"), ("4", "200")]
    # A plain directory of runs (the committed export) gives the same table rows.
    other = write_tables(export, tmp_path / "t")
    assert other["csv"].read_text() == paths["csv"].read_text()
    # --steps keeps the runs of one budget, and says so in how the table was made
    budget = write_tables(export, tmp_path / "b", steps=200)
    assert budget["csv"].read_text() == paths["csv"].read_text()
    assert f"`smose table {export} --steps 200 --out {tmp_path / 'b'}`" in budget["markdown"].read_text()
    with pytest.raises(SmoseError, match="no finished runs found with --steps 1000000"):
        write_tables(export, tmp_path / "none", steps=1_000_000)


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_isolates_failures(local_sweep, tmp_path, capsys):
    result, _, export = local_sweep
    weights = {name: (result.out / RUNS_DIR / name / "model.safetensors").stat().st_mtime_ns
               for name in finished_runs(result.out)}
    # Extend the grid by a seed; one of its two new runs cannot start (a file stands where its directory goes).
    blocked = result.out / RUNS_DIR / "Pendulum-v1__smose__M2__s2"
    blocked.write_text("not a run")
    code = main(["sweep", *TINY_ARGS, "--seeds", "0-2", "--out", str(result.out), "--workers", "2"])
    summary = capsys.readouterr().out
    assert code == 1
    assert "4 already finished" in summary and "1 trained" in summary and "1 failed" in summary
    assert f"Pendulum-v1__smose__M2__s2: smose: error: {blocked}: exists and is not a directory" in summary
    assert is_finished(result.out / RUNS_DIR / "Pendulum-v1__smose__M4__s2", expand(Grid(**TINY | {"seeds": (2,)}),
                                                                                     result.out)[1].config)
    assert {name: (result.out / RUNS_DIR / name / "model.safetensors").stat().st_mtime_ns
            for name in weights} == weights, "finished runs were trained again"
    # A fresh sweep directory (a new checkout) takes the committed runs from the export instead of training them.
    again = run_sweep(Grid(**TINY), tmp_path / "fresh", export=export)
    assert sorted(again.imported) == sorted(weights) and not again.trained and not again.failed
    assert not list((tmp_path / "fresh" / "logs").iterdir())
    assert finished_runs(tmp_path / "fresh") == finished_runs(result.out)


@pytest.mark.slow
def test_sweep_distils_its_smose_runs_and_the_table_reports_them(local_sweep, tmp_path, capsys):
    _, _, export = local_sweep
    results = tmp_path / "results"
    shutil.copytree(export, results)  # the committed runs of a checkout, without trees
    command = ["sweep", *TINY_ARGS, "--seeds", "0-1", "--out", str(tmp_path / "s"), "--export", str(results),
               "--distill", "1", "--workers", "2"]
    assert main(command) == 0
    captured = capsys.readouterr()
    assert "4 taken from the export directory, 0 trained (0 of them resumed), 4 distilled, 0 failed" in captured.out
    assert captured.err.count("trees depth 1: agreement ") == 4 and "(closed loop " in captured.err
    names = sorted(p.name for p in results.iterdir() if p.name != ".lock")
    assert len(names) == 4
    for name in names:
        run, exported = tmp_path / "s" / RUNS_DIR / name, results / name
        assert tree_settings(run).depth == tree_settings(exported).depth == 1
        files = sorted(p.name for p in (run / "trees").iterdir())
        assert sorted(p.name for p in (exported / "trees").iterdir()) == files and "per-expert.json" in files
        assert (exported / "trees" / "fidelity.json").read_bytes() == (run / "trees" / "fidelity.json").read_bytes()
        assert "if " in (exported / "trees" / "per-expert.txt").read_text()  # the rules a person reads
        assert (tmp_path / "s" / "logs" / f"{name}.distill.log").read_text().startswith("$ ")
    assert "--distill 1" in json.loads((tmp_path / "s" / "sweep.json").read_text())["command"]
    # The table reads the trees: one row per distilled run, the section per group.
    paths = write_tables(results, tmp_path / "table")
    with open(paths["trees"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["experts"], r["seed"], r["depth"]) for r in rows) == [("2", "0", "1"), ("2", "1", "1"),
                                                                           ("4", "0", "1"), ("4", "1", "1")]
    for row in rows:
        fidelity = json.loads((results / f"Pendulum-v1__smose__M{row['experts']}__s{row['seed']}" / "trees" /
                               "fidelity.json").read_text())
        assert float(row["agreement_per-expert"]) == pytest.approx(fidelity["per-expert"]["agreement"], rel=1e-5)
        assert float(row["return_neural"]) == pytest.approx(fidelity["returns"]["neural"]["mean"], rel=1e-5)
    assert "## Distilled trees" in paths["markdown"].read_text()
    # Again: everything is there, nothing runs.
    assert main(command) == 0
    summary = capsys.readouterr().out
    assert "4 already finished" in summary and "distilled" not in summary
