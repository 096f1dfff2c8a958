"""--env-kwargs: parsed once, recorded in config.json and model.json, used by every command that rebuilds the env."""

import json
from pathlib import Path

import numpy as np
import pytest

from smose.api import SMOSE
from smose.cli import main
from smose.errors import SmoseError
from smose.evaluate import evaluate
from smose.experiments.aggregate import other_settings
from smose.experiments.sweep import Grid, check_compatible, result_key, train_command
from smose.serialization import load_model
from smose.tasks.envs import make_env, parse_env_kwargs
from smose.training.config import TrainConfig, read_run_config

TINY = ["--env", "Pendulum-v1", "--steps", "200", "--learning-starts", "100", "--batch-size", "32",
        "--eval-every", "0", "--eval-episodes", "1", "--experts", "2", "--quiet"]
RUNS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "runs"


def test_values_are_json_where_they_parse_and_strings_otherwise():
    assert parse_env_kwargs(["g=2", "x=0.5", "flag=false", "none=null", "xs=[1, 2]", "xml_file=my.xml", "s=\"1\""]) == {
        "g": 2, "x": 0.5, "flag": False, "none": None, "xs": [1, 2], "xml_file": "my.xml", "s": "1"}
    # not JSON, so not numbers: config.json and the exported files hold only JSON
    assert parse_env_kwargs(["a=NaN", "b=-Infinity", "c=[1, NaN]"]) == {"a": "NaN", "b": "-Infinity", "c": "[1, NaN]"}
    for bad in (["g"], ["=1"], ["1g=2"], ["g=1", "g=2"]):
        with pytest.raises(SmoseError, match="--env-kwargs"):
            parse_env_kwargs(bad)


def _next_obs(env_kwargs):
    env = make_env("Pendulum-v1", seed=3, env_kwargs=env_kwargs)
    obs, *_ = env.step(np.zeros(1, dtype=np.float32))
    return obs


def test_env_kwargs_reach_the_env():
    assert np.allclose(_next_obs({"g": 10.0}), _next_obs(None))  # Pendulum's default gravity
    assert not np.allclose(_next_obs({"g": 2.0}), _next_obs(None))
    rewards = []
    for kwargs in ({}, {"healthy_reward": 0.5}):
        env = make_env("Hopper-v5", seed=0, env_kwargs=kwargs)
        rewards.append(env.step(np.zeros(3, dtype=np.float32))[1])
    assert rewards[0] - rewards[1] == pytest.approx(0.5)  # healthy on the first step: 1.0 by default


def test_a_key_the_env_refuses_is_one_line_and_leaves_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--env-kwargs", "gravity=2", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("smose: error: environment 'Pendulum-v1' refused --env-kwargs gravity=2: ")
    assert "gravity" in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()
    assert main(["train", *TINY, "--env-kwargs", "g=abc", "--out", str(run_dir)]) == 2  # fails only when stepping
    err = capsys.readouterr().err
    assert err.startswith("smose: error: environment 'Pendulum-v1' refused --env-kwargs g=abc: ")
    assert len(err.strip().splitlines()) == 1 and not run_dir.exists()
    assert main(["train", *TINY, "--env-kwargs", "g", "--out", str(run_dir)]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err and not run_dir.exists()
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "--envs", "Pendulum-v1", "--steps", "100", "--env-kwargs", "gravity=2",
                 "--out", str(sweep_dir)]) == 2
    assert "refused --env-kwargs gravity=2" in capsys.readouterr().err and not sweep_dir.exists()
    # a second --env-kwargs adds to the first; a key given in both is refused
    import argparse

    from smose.training.config import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(["--env-kwargs", "g=2", "--env-kwargs", "max_episode_steps=50"]))
    assert config.env_kwargs == {"g": 2, "max_episode_steps": 50}
    assert main(["train", *TINY, "--env-kwargs", "g=2", "--env-kwargs", "g=3", "--out", str(run_dir)]) == 2
    assert "--env-kwargs: g is given twice" in capsys.readouterr().err and not run_dir.exists()
    assert main(["sweep", "--envs", "Pendulum-v1", "--steps", "100", "--env-kwargs", "g=2", "--env-kwargs", "g=3",
                 "--out", str(sweep_dir)]) == 2
    assert "--env-kwargs: g is given twice" in capsys.readouterr().err and not sweep_dir.exists()



@pytest.mark.parametrize("env_args", [
    ["Hopper-v5", "--env-kwargs", "xml_file=/nonexistent/hopper.xml"],  # the env raises OSError
    ["Hopper-v5", "--env-kwargs", "frame_skip=0"],  # ZeroDivisionError while building
    ["Hopper-v3"],  # registered, but needs mujoco-py: ImportError
])
def test_an_env_that_cannot_be_built_is_one_line_whatever_it_raises(tmp_path, capsys, env_args):
    run_dir = tmp_path / "run"
    assert main(["train", "--env", *env_args, "--steps", "200", "--quiet", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smose: error: environment '{env_args[0]}' ") and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()

def test_train_records_env_kwargs_and_eval_distill_and_resume_use_them(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "150", "--checkpoint-every", "100", "--env-kwargs", "g=2.0",
                 "--out", str(run_dir)]) == 0
    assert json.loads((run_dir / "config.json").read_text())["env_kwargs"] == {"g": 2.0}
    actor, meta = load_model(run_dir)
    assert meta["env_kwargs"] == {"g": 2.0}

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "1", "--seed", "4"]) == 0
    mean = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mean"]
    assert mean == pytest.approx(evaluate(actor, make_env("Pendulum-v1", env_kwargs={"g": 2.0}), 1, 4)["mean"])
    assert mean != pytest.approx(evaluate(actor, make_env("Pendulum-v1"), 1, 4)["mean"])

    assert main(["distill", str(run_dir), "--depth", "1", "--episodes", "1", "--eval-episodes", "1",
                 "--kind", "multiclass"]) == 0
    fidelity = json.loads((run_dir / "trees" / "fidelity.json").read_text())
    assert fidelity["returns"]["neural"]["mean"] == pytest.approx(
        evaluate(actor, make_env("Pendulum-v1", env_kwargs={"g": 2.0}), 1, 0)["mean"])

    from smose.interpret.report import explain

    report = explain(run_dir, episodes=1, distill_missing=False).with_name("report.md").read_text()
    assert "Pendulum-v1 (3 observations, 1 actions), g=2.0" in report

    capsys.readouterr()
    assert main(["info", str(run_dir)]) == 0
    assert "env kwargs g=2.0" in capsys.readouterr().out

    # every exported file says which env it controls, arguments included
    exports = {fmt: tmp_path / f"policy.{suffix}" for fmt, suffix in
               (("json", "json"), ("python", "py"), ("c", "h"), ("onnx", "onnx"))}
    for fmt, path in exports.items():
        assert main(["export", str(run_dir), "--format", fmt, "--out", str(path)]) == 0
    assert json.loads(exports["json"].read_text())["env_kwargs"] == {"g": 2.0}
    module = {}
    exec(compile(exports["python"].read_text(), "policy.py", "exec"), module)
    assert module["ENV_ID"] == "Pendulum-v1" and module["ENV_KWARGS"] == {"g": 2.0}
    assert "controller for Pendulum-v1 with g=2.0" in module["__doc__"]
    assert "controller for Pendulum-v1 with g=2.0," in exports["c"].read_text()
    import onnx

    onnx_meta = {entry.key: entry.value for entry in onnx.load(str(exports["onnx"])).metadata_props}
    assert json.loads(onnx_meta["env_kwargs"]) == {"g": 2.0}

    assert main(["train", "--resume", str(run_dir), "--steps", "200", "--quiet"]) == 0
    assert load_model(run_dir)[1]["env_kwargs"] == {"g": 2.0}
    assert read_run_config(run_dir / "config.json").env_kwargs == {"g": 2.0}


def test_api_saves_and_loads_env_kwargs(tmp_path):
    model = SMOSE("Pendulum-v1", n_experts=2, learning_starts=50, batch_size=16, eval_every=0,
                  env_kwargs={"g": 2.0})
    model.learn(60)
    model.save(tmp_path / "m")
    loaded = SMOSE.load(tmp_path / "m")
    assert loaded.config.env_kwargs == {"g": 2.0} and loaded.meta["env_kwargs"] == {"g": 2.0}
    expected = evaluate(loaded.actor, make_env("Pendulum-v1", env_kwargs={"g": 2.0}), 1, 0)["mean"]
    assert loaded.evaluate(episodes=1)["mean"] == pytest.approx(expected)


def test_committed_runs_keep_their_result_keys():
    path = next(RUNS.glob("*/config.json"))
    assert "env_kwargs" not in json.loads(path.read_text())  # written before the option existed
    config = read_run_config(path)
    assert config.env_kwargs == {}
    assert "env_kwargs" not in result_key(config)  # the key such runs were indexed and exported under
    other = TrainConfig.from_dict(config.to_dict() | {"env_kwargs": {"g": 2.0}})
    assert result_key(other) != result_key(config)


def test_sweep_passes_and_records_env_kwargs(tmp_path):
    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,), steps=100, env_kwargs=(("g", 2.0),))
    assert Grid.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    assert "--env-kwargs g=2.0" in grid.command(tmp_path)
    words = train_command(TrainConfig(env="Pendulum-v1", env_kwargs={"g": 2.0, "name": "a b"}))
    assert words[words.index("--env-kwargs") + 1:][:2] == ["g=2.0", "name=a b"]  # argv words: no shell quoting
    assert parse_env_kwargs(words[words.index("--env-kwargs") + 1:][:2]) == {"g": 2.0, "name": "a b"}
    assert "--env-kwargs" not in train_command(TrainConfig(env="Pendulum-v1"))
    assert "env_kwargs" not in Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,), steps=100).to_dict()
    with pytest.raises(SmoseError, match="--env-kwargs g=2.0 before, g=3.0 now"):
        check_compatible(grid, Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,), steps=100,
                                    env_kwargs=(("g", 3.0),)), tmp_path)


def test_checkpoints_and_configs_written_before_env_kwargs_still_resume(tmp_path):
    from smose.serialization import seal
    from smose.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_JSON

    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--steps", "120", "--checkpoint-every", "100", "--out", str(run_dir)]) == 0
    for path in (run_dir / CHECKPOINT_DIR / CHECKPOINT_JSON, run_dir / "config.json"):
        data = json.loads(path.read_text())
        config = data["config"] if "config" in data else data
        del config["env_kwargs"]
        data.pop("content_sha256", None)
        path.write_text(json.dumps(seal(data) if path.name == CHECKPOINT_JSON else data))
    assert main(["train", "--resume", str(run_dir), "--steps", "150", "--quiet"]) == 0
    assert load_model(run_dir)[1]["trained_steps"] == 150


def test_a_sweep_trains_with_env_kwargs_and_recognises_its_finished_runs(tmp_path, capsys):
    args = ["sweep", "--envs", "Pendulum-v1", "--steps", "60", "--learning-starts", "50", "--batch-size", "8",
            "--eval-every", "0", "--eval-episodes", "1", "--workers", "1", "--env-kwargs", "g=2.0",
            "--out", str(tmp_path / "sweep")]
    assert main(args) == 0
    run_dir = tmp_path / "sweep" / "runs" / "Pendulum-v1__smose__s0"
    assert read_run_config(run_dir / "config.json").env_kwargs == {"g": 2.0}
    assert load_model(run_dir)[1]["env_kwargs"] == {"g": 2.0}
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["grid"]["env_kwargs"] == {"g": 2.0}
    capsys.readouterr()
    assert main(args) == 0  # the finished run is recognised, not trained again
    assert "1 already finished" in capsys.readouterr().out
    assert main(args[:-4] + ["--env-kwargs", "g=3.0", "--out", str(tmp_path / "sweep")]) == 2
    assert "--env-kwargs g=2.0 before, g=3.0 now" in capsys.readouterr().err


def test_the_table_names_env_kwargs_as_the_command_line_gives_them():
    """A table's settings column shows the env's arguments as --env-kwargs words, so each Meta-World task (one env id,
    the task an argument) is its own group with a readable label."""
    reach = TrainConfig(env="Meta-World/MT1", env_kwargs={"env_name": "reach-v3"})
    push = TrainConfig(env="Meta-World/MT1", env_kwargs={"seed": 3, "env_name": "push-v3"})
    assert other_settings(reach) == "--env-kwargs env_name=reach-v3"
    assert other_settings(push) == "--env-kwargs env_name=push-v3 seed=3"
    assert other_settings(TrainConfig(env="Pendulum-v1", env_kwargs={"g": 2.0}, batch_size=64)) == \
        "batch_size=64, --env-kwargs g=2.0"
    # the string "3" and the number 3 are different arguments, and keep different labels (as --env-kwargs reads them)
    text, number = (other_settings(TrainConfig(env="Pendulum-v1", env_kwargs={"x": x})) for x in ("3", 3))
    assert (text, number) == ('--env-kwargs x="3"', "--env-kwargs x=3")
    assert parse_env_kwargs(text.split()[1:]) == {"x": "3"} and parse_env_kwargs(number.split()[1:]) == {"x": 3}
