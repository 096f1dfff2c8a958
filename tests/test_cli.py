import csv
import json
import subprocess
import sys

import pytest

from smose.cli import main

TINY = ["--env", "Pendulum-v1", "--steps", "300", "--learning-starts", "100", "--batch-size", "32",
        "--eval-every", "150", "--eval-episodes", "1", "--experts", "3", "--quiet"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smose", *args], capture_output=True, text=True, timeout=300)


def test_train_eval_info_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run_dir)]) == 0
    for name in ("config.json", "model.safetensors", "model.json", "metrics.csv", "eval.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"] == "Pendulum-v1" and config["seed"] == 0 and config["experts"] == 3
    assert set(config["versions"]) >= {"smose", "torch", "gymnasium", "mujoco"}
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["architecture"] == {"algo": "smose", "n_obs": 3, "n_act": 1, "n_experts": 3}
    assert meta["parameter_counts"]["train"] == 3 * 4 * 3

    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    episodes = [r for r in rows if r["event"] == "episode"]
    evals = [r for r in rows if r["event"] == "eval"]
    assert [int(r["step"]) for r in episodes] == [200]  # Pendulum episodes are 200 steps long
    assert [int(r["step"]) for r in evals] == [150, 300]
    assert {"qf_loss", "actor_loss", "alpha", "lb_loss", "sps", "usage_0", "usage_2"} <= set(rows[0])
    assert float(episodes[0]["qf_loss"]) > 0
    usage = [float(episodes[0][f"usage_{m}"]) for m in range(3)]
    assert abs(sum(usage) - 1) < 1e-4

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "2", "--mode", "linear", "--seed", "5"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(line)
    assert set(result) >= {"mean", "std", "min", "max", "episodes", "mode", "expert_usage"}
    assert result["episodes"] == 2 and result["mode"] == "linear" and result["min"] <= result["mean"] <= result["max"]
    # a linear evaluation goes beside the run's reference evaluation, which stays gated
    assert json.loads((run_dir / "eval-linear.json").read_text())["mode"] == "linear"
    assert json.loads((run_dir / "eval.json").read_text())["mode"] == "gated"

    assert main(["info", str(run_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameter_counts"] == {"train": 36, "deploy": 24, "active": 16}
    assert info["trained_steps"] == 300 and info["last_eval"]["step"] == "300"
    assert main(["info", str(run_dir)]) == 0
    assert "parameters train 36 / deploy 24 / active 16" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--env", "CartPole-v1"], "Discrete action space"),
        (["train", "--env", "Hopper-v9"], "unknown environment 'Hopper-v9'; did you mean"),
        (["train", "--steps", "0"], "--steps must be positive"),
        (["train", "--experts", "-2"], "--experts must be positive"),
        (["eval", "/nonexistent/run"], "no such run directory"),
        (["info", "/nonexistent/run"], "no such run directory"),
    ],
)
def test_bad_input_gives_one_line_error(args, message):
    proc = run_cli(*args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_non_empty_run_directory_is_not_overwritten(tmp_path):
    keep = tmp_path / "precious.txt"
    keep.write_text("data")
    proc = run_cli("train", *TINY, "--out", str(tmp_path))
    assert proc.returncode != 0 and "not empty" in proc.stderr and "--force" in proc.stderr
    assert keep.read_text() == "data"


def test_eval_refuses_a_model_on_an_env_of_another_shape(tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", *TINY, "--steps", "50", "--learning-starts", "50", "--eval-every", "0", "--out", str(run_dir)]
    assert main(args) == 0
    proc = run_cli("eval", str(run_dir), "--env", "MountainCarContinuous-v0")
    assert proc.returncode != 0 and "does not fit" in proc.stderr and "Traceback" not in proc.stderr


def test_eval_protocols_over_several_runs(tmp_path, capsys):
    """`--protocol both` evaluates every run both ways: gated into eval.json, the authors' linear over 100 episodes
    into eval-linear.json; the linear numbers are those of `--mode linear --episodes 100`."""
    runs = []
    for seed in (0, 1):
        run_dir = tmp_path / f"run{seed}"
        args = ["train", *TINY, "--steps", "150", "--eval-every", "0", "--seed", str(seed), "--out", str(run_dir)]
        assert main(args) == 0
        runs.append(run_dir)
    capsys.readouterr()
    assert main(["eval", *map(str, runs), "--protocol", "both"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(r["run_dir"], r["mode"], r["episodes"]) for r in lines] == [
        (str(run), mode, episodes) for run in runs for mode, episodes in (("gated", 10), ("linear", 100))]
    for run in runs:
        assert json.loads((run / "eval.json").read_text())["episodes"] == 10
        assert json.loads((run / "eval-linear.json").read_text())["episodes"] == 100
    authors = json.loads((runs[1] / "eval-linear.json").read_text())
    assert main(["eval", str(runs[1]), "--mode", "linear", "--episodes", "100"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == authors["returns"]


@pytest.mark.parametrize("extra,message", [
    (["--protocol", "authors", "--episodes", "5"], "give either --protocol or --mode/--episodes"),
    (["--protocol", "both", "--mode", "gated"], "give either --protocol or --mode/--episodes"),
    (["--protocol", "authors", "--router", "tree"], "evaluates the neural router"),
])
def test_eval_protocol_conflicts_are_one_line_errors(tmp_path, extra, message):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "50", "--learning-starts", "50", "--eval-every", "0",
                 "--out", str(run_dir)]) == 0
    before = sorted(p.name for p in run_dir.iterdir())
    proc = run_cli("eval", str(run_dir), *extra)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing written


def test_force_starts_an_existing_run_directory_afresh(tmp_path):
    """A run trained, distilled, then trained over with --force: nothing of the first run is left to mix in."""
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run_dir)]) == 0
    assert main(["distill", str(run_dir), "--depth", "1", "--episodes", "1", "--eval-episodes", "1"]) == 0
    (run_dir / "report").mkdir()  # as `smose explain` leaves it
    assert main(["train", *TINY, "--steps", "200", "--seed", "1", "--force", "--out", str(run_dir)]) == 0
    with open(run_dir / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows if r["event"] == "eval"] == [150, 200]  # not 150, 300 first
    assert not (run_dir / "trees").exists() and not (run_dir / "report").exists()
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert not [p.name for p in (run_dir / "checkpoint").iterdir() if "000000300" in p.name]
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 1
    assert json.loads((run_dir / "eval.json").read_text())["step"] == 200


def test_force_never_clears_a_directory_that_is_not_a_run_directory(tmp_path, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "config.json").write_text("{\"mine\": true}")  # a name a run directory holds too
    (folder / "thesis.tex").write_text("data")
    assert main(["train", *TINY, "--force", "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"smose: error: {folder}: does not look like a run directory (it holds thesis.tex); --force only "
                   "starts run directories afresh: choose another --out or move those files away")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "thesis.tex"]  # untouched, nothing added
    assert (folder / "config.json").read_text() == "{\"mine\": true}"


def test_eval_on_another_env_keeps_the_reference_evaluation(tmp_path, capsys):
    """An evaluation on another version of the task goes to a file of its own; eval.json stays the training task's,
    and the run directory can still be started afresh with --force."""
    run_dir = tmp_path / "run"
    hopper = ["--env", "Hopper-v5", "--steps", "60", "--learning-starts", "50", "--batch-size", "32",
              "--eval-every", "0", "--eval-episodes", "1", "--experts", "2", "--quiet", "--out", str(run_dir)]
    assert main(["train", *hopper]) == 0
    reference = json.loads((run_dir / "eval.json").read_text())
    assert main(["eval", str(run_dir), "--env", "Hopper-v4", "--episodes", "1"]) == 0
    assert main(["eval", str(run_dir), "--env", "Hopper-v4", "--episodes", "1", "--mode", "linear"]) == 0
    assert json.loads((run_dir / "eval-Hopper-v4.json").read_text())["env_id"] == "Hopper-v4"
    assert json.loads((run_dir / "eval-linear-Hopper-v4.json").read_text())["mode"] == "linear"
    assert json.loads((run_dir / "eval.json").read_text()) == reference
    assert main(["train", *hopper, "--force"]) == 0
    assert not (run_dir / "eval-Hopper-v4.json").exists()


def test_a_reader_that_goes_away_ends_the_command_quietly(pendulum_run):
    """`smose info RUN | head -1`: when stdout's reader has closed the pipe, the command ends with the status of a
    program stopped by SIGPIPE (141) and says nothing on stderr, no traceback."""
    process = subprocess.Popen([sys.executable, "-m", "smose", "info", str(pendulum_run)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # long before it writes: starting Python and importing smose takes a second or more
    _, err = process.communicate(timeout=300)
    assert process.returncode == 141 and err == b""
