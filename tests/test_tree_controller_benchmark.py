"""benchmarks/tree_controller.py: how tree-routed returns compare with the neural router's, and how the per-task rows
and the issue's targets are counted (on made-up records), and the whole measurement on a small run: what it runs, what
it reads back, and that running it again redoes nothing."""

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from smose.errors import SmoseError  # noqa: E402
from tree_controller import kept_runs, markdown, merged, ratio_or_gap  # noqa: E402


def test_ratio_of_rewards_and_of_costs():
    assert ratio_or_gap(90.0, 100.0) == {"ratio": 0.9, "difference": -10.0, "at_or_above": False, "costs": False}
    # costs (negative returns): neural / tree, so 1 is equal and above 1 better, as for rewards
    worse = ratio_or_gap(-5.0, -4.0)
    assert worse["ratio"] == pytest.approx(0.8) and worse["difference"] == -1.0 and not worse["at_or_above"]
    better = ratio_or_gap(-4.0, -5.0)
    assert better["ratio"] == pytest.approx(1.25) and better["at_or_above"] and better["costs"]
    # no ratio across the sign, or from a zero neural return; at or above still says which is better
    assert ratio_or_gap(1.0, -5.0)["ratio"] is None and ratio_or_gap(1.0, -5.0)["at_or_above"]
    assert ratio_or_gap(-1.0, 0.0)["ratio"] is None and not ratio_or_gap(-1.0, 0.0)["at_or_above"]


def kind(agreement: float, neural: float, before: float, after: float) -> dict:
    return {"agreement": agreement, "closed_loop_agreement": agreement, "fit_seconds": 1.0, "neural_return": neural,
            "before": before, "after": after, "before_vs_neural": ratio_or_gap(before, neural),
            "after_vs_neural": ratio_or_gap(after, neural), "best_during": after, "curve": {},
            "finetune_run": "x", "finetune_seconds": 60.0}


def run(env: str, seed: int, kinds: dict) -> dict:
    return {"run": f"runs/{env}__smose__s{seed}", "env_id": env, "seed": seed, "source_step": 100_000,
            "distill_neural_return": 0.0, "kinds": kinds}


def record(runs: list) -> dict:
    return {"command": "c", "date": "d", "machine": "m", "smose": "v", "note": "", "depth": 3, "dagger": 4,
            "finetune_steps": 50_000, "runs": runs}


def target(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_targets_count_one_best_kind_and_the_worst_run_of_every_task():
    # per-expert reaches 95% agreement on tasks A and B, multiclass on C: no single kind on three tasks
    runs = [run("A", 0, {"per-expert": kind(0.96, 100, 90, 101), "multiclass": kind(0.5, 100, 50, 99),
                         "oblique": kind(0.5, 100, 50, 60)}),
            run("B", 0, {"per-expert": kind(0.97, 100, 90, 100), "multiclass": kind(0.5, 100, 50, 99),
                         "oblique": kind(0.5, 100, 50, 60)}),
            # a cost task: the tree's worse return counts towards the worst run (-4 / -5 = 0.8)
            run("C", 0, {"per-expert": kind(0.5, -4, -6, -5), "multiclass": kind(0.99, -4, -5, -3.9),
                         "oblique": kind(0.5, -4, -6, -5)})]
    text = markdown(record(runs))
    assert "best kind (per-expert): 2 of 3 tasks" in text
    assert "By kind: per-expert 2; multiclass 1; oblique 0." in text
    assert target(text, "- per-expert,") == ("- per-expert, after fine-tuning: mean tree-routed return at or above the "
                                              "neural router's on 2 of 3 tasks (target: 5 of 6); lowest single-run "
                                              "ratio 0.80 (target: never below 0.95).")
    assert "on 1 of 3 tasks" in target(text, "- multiclass,") and "ratio 0.99" in target(text, "- multiclass,")
    assert "| C | 1 | multiclass | 99.0% | 99.0% | -4.0 | 0.80 (-1.00) | 1.03 (+0.10) | 1.03 | 1 of 1 |" in text


def test_task_rows_average_over_seeds_before_comparing():
    runs = [run("A", 0, {k: kind(0.9, 100, 80, 110) for k in ("per-expert", "multiclass", "oblique")}),
            run("A", 1, {k: kind(0.8, 200, 160, 180) for k in ("per-expert", "multiclass", "oblique")})]
    text = markdown(record(runs))
    # means: neural 150, before 120 (0.80), after 145 (0.97); worst single run 180 / 200 = 0.90; one of two above
    assert "| A | 2 | oblique | 85.0% | 85.0% | 150.0 | 0.80 | 0.97 | 0.90 | 1 of 2 |" in text


def test_a_record_of_one_kind_reports_and_counts_that_kind_only():
    # --kind oblique: the runs hold oblique trees only, and every table and target speaks of them alone
    runs = [run("A", 0, {"oblique": kind(0.97, 100, 99, 105)}), run("B", 0, {"oblique": kind(0.9, 100, 90, 94)})]
    text = markdown(record(runs) | {"kind": "oblique"})
    assert "(`smose distill --kind oblique`)" in text
    assert "best kind (oblique): 1 of 2 tasks (target: 4 of 6): A. By kind: oblique 1." in text
    assert "on 1 of 2 tasks" in target(text, "- oblique,") and "ratio 0.94" in target(text, "- oblique,")
    assert "per-expert" not in text and "multiclass" not in text
    # a record that does not name its kind measured all three
    assert "(`smose distill --kind all`)" in markdown(record([run("A", 0, all_kinds(110))]))


def test_runs_that_failed_are_listed_not_counted():
    runs = [run("A", 0, {k: kind(0.9, 100, 80, 110) for k in ("per-expert", "multiclass", "oblique")}),
            {"run": "runs/B", "error": "runs/B: no checkpoint to resume from"}]
    text = markdown(record(runs))
    assert "on 1 of 1 tasks" in target(text, "- oblique,")
    assert text.rstrip().endswith("## Runs not measured\n\n- runs/B: no checkpoint to resume from")


def test_the_control_compares_with_the_neural_router_trained_as_long():
    runs = []
    for seed, (continued, after) in enumerate([(120.0, 110.0), (140.0, 150.0)]):
        kinds = {k: kind(0.9, 100, 80, after) for k in ("per-expert", "multiclass", "oblique")}
        for k in kinds.values():
            k["after_vs_continued"] = ratio_or_gap(after, continued)
        runs.append(run("A", seed, kinds) | {"continued": {"steps": 50_000, "return": continued, "run": "c",
                                                           "episodes": 10, "seed": seed, "seconds": 1.0}})
    text = markdown(record(runs))
    # per run: 110 / 120 and 150 / 140; per task: the means, 130 / 130
    assert "| 0.92 | " in target(text, "| A__smose__s0 | 100,000 | 100.0 | oblique")
    assert "| 1.07 | " in target(text, "| A__smose__s1 | 100,000 | 100.0 | oblique")
    assert "| A | 2 | 130.0 | 1.00 | 1.00 | 1.00 |" in text


def test_longer_fine_tuning_is_compared_with_a_control_trained_as_long():
    runs = []
    for seed, (continued, longer_continued, longer_after) in enumerate([(120.0, 200.0, 180.0), (140.0, 100.0, 120.0)]):
        kinds = {k: kind(0.9, 100, 80, 110) for k in ("per-expert", "multiclass", "oblique")}
        for k in kinds.values():
            k["after_vs_continued"] = ratio_or_gap(110, continued)
            k["longer"] = {"steps": 100_000, "after": longer_after, "after_vs_neural": ratio_or_gap(longer_after, 100),
                           "after_vs_continued": ratio_or_gap(longer_after, longer_continued), "curve": {},
                           "finetune_run": "x", "finetune_seconds": 120.0}
        runs.append(run("A", seed, kinds) | {"continued": {
            "steps": 50_000, "return": continued, "run": "c", "episodes": 10, "seed": seed, "seconds": 1.0,
            "longer": {"steps": 100_000, "return": longer_continued, "run": "c2", "episodes": 10, "seed": seed,
                       "seconds": 2.0}}})
    text = markdown(record(runs))
    # per run: 180 / 100 against the neural router, 180 / 200 against the control trained on 100k steps
    assert "| 1.80 / 0.90 (2.0 min) | " in target(text, "| A__smose__s0 | 100,000 | 100.0 | per-expert")
    # per task: the mean longer control (150) against the mean longer fine-tuning (150)
    assert "| A, 100,000 steps | 2 | 150.0 | 1.00 | 1.00 | 1.00 |" in text
    assert "| A | 2 | 130.0 | 0.85 | 0.85 | 0.85 |" in text


SETTINGS = {"kind": "all", "depth": 3, "dagger": 4, "episodes": 20, "eval_episodes": 10, "cma_iterations": 200,
            "cma_start": "zeros", "finetune_steps": 50_000, "select_episodes": 0, "control": False, "longer": None}


def all_kinds(after: float) -> dict:
    return {k: kind(0.9, 100, 80, after) for k in ("per-expert", "multiclass", "oblique")}


def swept(env: str, after: float, where: str = "sweeps") -> dict:
    """A measured run of sweep "tc", its directory under ``where``."""
    return run(env, 0, all_kinds(after)) | {"run": f"{where}/tc/runs/{env}__smose__s0"}


def test_kept_runs_carry_their_batch_over_unless_measured_again():
    # an earlier record of A and B (without the settings it did not record yet), and a failed run C
    first = record([swept("A", 110), swept("B", 120), {"run": "sweeps/tc/runs/C", "error": "no"}])
    first |= {"command": "first command", "date": "2026-12-01", "note": "beside a sweep"}
    kept, batches = kept_runs(first, Path("first.json"), SETTINGS)
    assert [r["run"] for r in kept] == ["sweeps/tc/runs/A__smose__s0", "sweeps/tc/runs/B__smose__s0"]  # C failed
    # B measured again, the same sweep's run in another place: it replaces the earlier B
    runs, batches = merged(kept, batches, [swept("B", 130, where="/elsewhere")])
    assert [r["run"] for r in runs] == ["sweeps/tc/runs/A__smose__s0", "/elsewhere/tc/runs/B__smose__s0"]
    assert batches == [{"command": "first command", "date": "2026-12-01", "machine": "m", "smose": "v",
                        "note": "beside a sweep", "runs": ["sweeps/tc/runs/A__smose__s0"]}]
    # another sweep's run of the same name is another run
    assert len(merged(kept, batches, [swept("B", 130) | {"run": "sweeps/other/runs/B__smose__s0"}])[0]) == 3
    # that record kept in turn: each run stays with the batch that measured it
    second = record(runs) | SETTINGS | {"command": "second", "date": "2026-12-02", "earlier": batches}
    kept, batches = kept_runs(second, Path("second.json"), SETTINGS)
    runs, batches = merged(kept, batches, [swept("D", 90)])
    assert [r["run"] for r in runs] == ["sweeps/tc/runs/A__smose__s0", "/elsewhere/tc/runs/B__smose__s0",
                                        "sweeps/tc/runs/D__smose__s0"]
    assert [(b["command"], b["runs"]) for b in batches] == [("first command", ["sweeps/tc/runs/A__smose__s0"]),
                                                            ("second", ["/elsewhere/tc/runs/B__smose__s0"])]
    text = markdown(record(runs) | {"earlier": batches})
    assert ("Kept from an earlier record (2026-12-01; m; smose v): A__smose__s0, measured by `first command`. "
            "beside a sweep") in text.splitlines()


def test_a_run_that_fails_to_be_measured_again_keeps_its_earlier_numbers():
    kept, batches = kept_runs(record([swept("A", 110)]), Path("e.json"), SETTINGS)
    runs, batches = merged(kept, batches, [{"run": "sweeps/tc/runs/A__smose__s0", "error": "no checkpoint"}])
    assert runs == kept and batches[0]["runs"] == ["sweeps/tc/runs/A__smose__s0"]


def test_a_record_made_with_other_settings_is_not_kept(tmp_path, monkeypatch):
    from tree_controller import main

    earlier = record([run("A", 0, all_kinds(110))]) | {"dagger": 2}
    with pytest.raises(SmoseError, match=r"^e.json: measured with dagger = 2, not 4; its runs cannot be kept"):
        kept_runs(earlier, Path("e.json"), SETTINGS)
    # what a record does not name is what the benchmark did before it named it: CMA-ES from zeros, 20 episodes
    with pytest.raises(SmoseError, match="measured with cma_start = zeros, not router"):
        kept_runs(record([]), Path("e.json"), SETTINGS | {"cma_start": "router"})
    with pytest.raises(SmoseError, match="measured with kind = all, not oblique"):
        kept_runs(record([]), Path("e.json"), SETTINGS | {"kind": "oblique"})
    with pytest.raises(SmoseError, match="measured with episodes = 20, not 10"):
        kept_runs(record([]), Path("e.json"), SETTINGS | {"episodes": 10})
    # --control and --longer are read off the runs when the record does not name them
    controlled = run("A", 0, all_kinds(110)) | {"continued": {"steps": 50_000, "return": 100.0}}
    with pytest.raises(SmoseError, match="measured with control = True, not False"):
        kept_runs(record([controlled]), Path("e.json"), SETTINGS)
    with pytest.raises(SmoseError, match="not a record of this benchmark"):
        kept_runs({"runs": {}}, Path("e.json"), SETTINGS)
    with pytest.raises(SmoseError, match="not a record of this benchmark .no 'depth'"):
        kept_runs({"runs": []}, Path("e.json"), SETTINGS)
    # from the command line: one line, and nothing measured or written
    (tmp_path / "e.json").write_text(json.dumps(earlier))
    out, work = tmp_path / "out" / "tc", tmp_path / "work"
    monkeypatch.setattr(sys, "argv", ["tree_controller.py", "--runs", str(tmp_path / "missing"), "--keep",
                                      str(tmp_path / "e.json"), "--work", str(work), "--out", str(out)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert str(exited.value).startswith("tree_controller: ") and "\n" not in str(exited.value)
    assert "dagger = 2, not 4" in str(exited.value)
    assert not out.parent.exists() and not work.exists()


@pytest.mark.slow
def test_the_benchmark_measures_a_run_and_redoes_nothing_when_run_again(pendulum_run, tmp_path, monkeypatch):
    """The whole benchmark on a small run: distil, fine-tune under every kind, the control, and both continued to
    --longer steps; a second invocation finds everything done and changes no run."""
    from smose.training.checkpoint import read_checkpoint_json
    from tree_controller import main

    run_dir = tmp_path / "sweep" / "runs" / "pendulum"
    shutil.copytree(pendulum_run, run_dir)  # the session fixture is shared: never write into it
    work, out = tmp_path / "work", tmp_path / "out" / "tc"
    argv = ["tree_controller.py", "--runs", str(run_dir), "--depth", "2", "--dagger", "1", "--cma-iterations", "3",
            "--episodes", "2", "--eval-episodes", "1",
            "--finetune-steps", "100", "--longer", "200", "--control", "--work", str(work), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what main() sets for its subprocesses, undone after the test
    main()
    record = json.loads(out.with_suffix(".json").read_text())
    [measured] = record["runs"]
    source_step = measured["source_step"]
    assert source_step == read_checkpoint_json(run_dir)["step"]
    control = measured["continued"]
    assert read_checkpoint_json(Path(control["run"]))["step"] == source_step + 100
    assert read_checkpoint_json(Path(control["longer"]["run"]))["step"] == source_step + 200
    assert list(measured["kinds"]) == ["per-expert", "multiclass", "oblique"]
    for measured_kind in measured["kinds"].values():
        assert read_checkpoint_json(Path(measured_kind["finetune_run"]))["step"] == source_step + 100
        longer = measured_kind["longer"]
        assert read_checkpoint_json(Path(longer["finetune_run"]))["step"] == source_step + 200
        assert longer["after_vs_continued"] == ratio_or_gap(longer["after"], control["longer"]["return"])
        assert measured_kind["after_vs_continued"] == ratio_or_gap(measured_kind["after"], control["return"])
    stamps = {path: path.stat().st_mtime_ns for path in work.rglob("*") if path.is_file()}
    main()
    assert {path: path.stat().st_mtime_ns for path in work.rglob("*") if path.is_file()} == stamps
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == record["runs"]


@pytest.mark.slow
def test_the_benchmark_measures_one_kind_made_as_the_library_makes_it(pendulum_run, tmp_path, monkeypatch):
    """--kind oblique with smose distill's own oblique settings: the run is distilled into oblique trees only, and
    only they are fine-tuned under."""
    from smose.experiments.distillation import tree_settings
    from tree_controller import main

    run_dir = tmp_path / "sweep" / "runs" / "pendulum"
    shutil.copytree(pendulum_run, run_dir)
    work, out = tmp_path / "work", tmp_path / "out" / "tc"
    monkeypatch.setattr(sys, "argv", [
        "tree_controller.py", "--runs", str(run_dir), "--kind", "oblique", "--depth", "2", "--dagger", "0",
        "--cma-start", "router", "--cma-iterations", "3", "--episodes", "2", "--eval-episodes", "1",
        "--finetune-steps", "100", "--work", str(work), "--out", str(out)])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    main()
    record = json.loads(out.with_suffix(".json").read_text())
    assert (record["kind"], record["cma_start"], record["dagger"]) == ("oblique", "router", 0)
    [measured] = record["runs"]
    assert list(measured["kinds"]) == ["oblique"]
    settings = tree_settings(run_dir)
    assert (settings.kind, settings.cma_start, settings.dagger) == ("oblique", "router", 0)
    assert sorted(path.name for path in work.iterdir()) == ["sweep-pendulum-finetune-oblique-100"]


@pytest.mark.slow
def test_more_episodes_evaluates_every_controller_again_without_writing(pendulum_run, tmp_path, monkeypatch):
    """benchmarks/tree_controller_episodes.py on a record of the benchmark: on the episodes the record's own
    evaluations used (the runs' eval episodes and seed) it finds the record's returns again, the trees as distilled
    included; it writes nothing into the run directories; a run whose directory is gone is listed, not counted."""
    from tree_controller import main
    from tree_controller_episodes import main as episodes_main

    sweep = tmp_path / "sweep" / "runs"
    for name in ("pendulum", "gone"):
        shutil.copytree(pendulum_run, sweep / name)
    work, out = tmp_path / "work", tmp_path / "out" / "tc"
    monkeypatch.setattr(sys, "argv", [
        "tree_controller.py", "--runs", str(sweep / "pendulum"), str(sweep / "gone"), "--kind", "both",
        "--depth", "2", "--dagger", "0", "--episodes", "3", "--eval-episodes", "1", "--finetune-steps", "100",
        "--control", "--work", str(work), "--out", str(out)])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    main()
    recorded = json.loads(out.with_suffix(".json").read_text())
    shutil.rmtree(sweep / "gone")
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    again = tmp_path / "again" / "tc-2"
    monkeypatch.setattr(sys, "argv", ["tree_controller_episodes.py", "--record", str(out.with_suffix(".json")),
                                      "--episodes", "2", "--seed", "0", "--out", str(again)])
    episodes_main()
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()
            and again.parent not in path.parents} == stamps
    record = json.loads(again.with_suffix(".json").read_text())
    # the record's settings as they were (distill's 3 episodes), beside the episodes evaluated on here
    assert (record["compared_on"], record["episodes"], record["kind"]) == ({"episodes": 2, "seed": 0}, 3, "both")
    measured, gone = record["runs"]
    assert "error" in gone and "gone" in gone["error"] and "error" not in measured
    [source] = [run for run in recorded["runs"] if run["run"] == measured["run"]]
    assert measured["continued"]["return"] == pytest.approx(source["continued"]["return"], rel=1e-6)
    assert list(measured["kinds"]) == ["per-expert", "multiclass"]
    for kind, mine in measured["kinds"].items():
        theirs = source["kinds"][kind]
        for key in ("neural_return", "before", "after"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6), (kind, key)
        assert mine["recorded_after_vs_neural"] == theirs["after_vs_neural"]
        assert mine["after_vs_continued"] == ratio_or_gap(mine["after"], measured["continued"]["return"])
    text = again.with_suffix(".md").read_text()
    assert "on 2 episodes" in text and "## Runs not measured" in text and "## Targets" in text
    # --select-episodes: after is the controller `smose finetune --select-episodes 3` keeps, by the library's own
    # comparison at the end of a fine-tuning run (made here on a copy asking for it)
    from smose.training.finetune import AS_DISTILLED, controller_to_compare, keep_better

    kept = tmp_path / "again" / "kept"
    monkeypatch.setattr(sys, "argv", ["tree_controller_episodes.py", "--record", str(out.with_suffix(".json")),
                                      "--episodes", "2", "--seed", "0", "--select-episodes", "3", "--out", str(kept)])
    episodes_main()
    selected = json.loads(kept.with_suffix(".json").read_text())
    assert selected["compared_on"] == {"episodes": 2, "seed": 0, "select_episodes": 3}
    for kind, mine in selected["runs"][0]["kinds"].items():
        copy = tmp_path / "copies" / kind
        shutil.copytree(mine["finetune_run"], copy, ignore=shutil.ignore_patterns("checkpoint"))
        config = json.loads((copy / "config.json").read_text())
        config["finetune"]["select_episodes"] = 3
        (copy / "config.json").write_text(json.dumps(config))
        assert keep_better(copy, controller_to_compare(copy)) == mine["selection"]
        unselected = measured["kinds"][kind]
        assert mine["fine_tuned_after"] == unselected["after"]
        assert mine["after"] == (unselected["before"] if mine["selection"]["kept"] == AS_DISTILLED
                                 else unselected["after"])
    assert "*After* is the controller `smose finetune --select-episodes 3` keeps" in kept.with_suffix(".md").read_text()
    # --envs: only the record's runs of those tasks; none there is one line and a non-zero exit
    other = tmp_path / "again" / "other"
    monkeypatch.setattr(sys, "argv", ["tree_controller_episodes.py", "--record", str(out.with_suffix(".json")),
                                      "--episodes", "1", "--envs", "Hopper-v4", "--out", str(other)])
    with pytest.raises(SystemExit) as exited:
        episodes_main()
    assert str(exited.value).startswith("tree_controller_episodes: ") and "Hopper-v4" in str(exited.value)
    assert not other.with_suffix(".json").exists()
    monkeypatch.setattr(sys, "argv", ["tree_controller_episodes.py", "--record", str(out.with_suffix(".json")),
                                      "--episodes", "1", "--envs", "Pendulum-v1", "--out", str(other)])
    episodes_main()
    assert [run.get("env_id") for run in json.loads(other.with_suffix(".json").read_text())["runs"]] == [
        "Pendulum-v1", None]  # the run whose directory is gone: listed with its error
