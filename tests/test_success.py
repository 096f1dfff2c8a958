"""Success rates of envs that report ``info["success"]``: metrics.csv, TensorBoard, eval.json, the progress bar, the
report and checkpoints; envs that report none leave the column empty, and metrics.csv files from before it still read.
Also the suites' plumbing that needs no suite installed: run names, a missing suite's one-line error."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
from toy_envs import registered_env

from smose.cli import main
from smose.evaluate import episode_success, step_success, success_fields
from smose.interpret.report import read_curve
from smose.tasks import suites
from smose.training.config import TrainConfig
from smose.training.run_dir import default_run_dir
from smose.training.trainer import Trainer

ENV_ID = "SmoseSuccessLine-v0"


class SuccessLine(gym.Env):
    """A point on a line pushed towards +1; ``info["success"]`` (a float, as Meta-World gives it) says it is there."""

    def __init__(self, max_steps: int = 15):
        self.observation_space = gym.spaces.Box(-2, 2, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.max_steps = max_steps

    def _obs(self) -> np.ndarray:
        return np.array([self.x, 1.0 - self.x], dtype=np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-0.5, 0.5)), 0
        return self._obs(), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.3 * float(action[0]), -2, 2))
        self.t += 1
        return self._obs(), -abs(1.0 - self.x), False, self.t >= self.max_steps, {"success": float(self.x > 0.9)}


@pytest.fixture(scope="module", autouse=True)
def registered():
    with registered_env(ENV_ID, SuccessLine):
        yield


def test_an_episode_succeeds_when_any_step_reports_success():
    assert step_success({}) is None and step_success({"success": 0.0}) is False
    assert step_success({"is_success": np.array(True)}) is True
    succeeded = None
    for info in ({}, {"success": 0.0}, {"success": 1.0}, {"success": 0.0}):
        succeeded = episode_success(succeeded, info)
    assert succeeded is True
    assert episode_success(None, {"other": 1}) is None
    assert success_fields([None, None]) == {}
    assert success_fields([True, False, None, True]) == {"success_rate": 0.5, "successes": [True, False, False, True]}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_success_rates_go_to_metrics_eval_json_tensorboard_progress_bar_and_report(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--env", ENV_ID, "--steps", "150", "--learning-starts", "60", "--batch-size", "16",
                 "--experts", "2", "--eval-every", "75", "--eval-episodes", "4", "--checkpoint-every", "100",
                 "--quiet", "--out", str(run_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert summary["final_eval_success_rate"] == evaluation["success_rate"]
    assert len(evaluation["successes"]) == 4
    assert evaluation["success_rate"] == np.mean(evaluation["successes"])

    rows = _rows(run_dir / "metrics.csv")
    episodes = [row for row in rows if row["event"] == "episode"]
    evals = [row for row in rows if row["event"] == "eval"]
    assert len(episodes) == 10 and len(evals) == 2
    assert {row["success_rate"] for row in episodes} <= {"0", "1"}
    assert float(evals[-1]["success_rate"]) == evaluation["success_rate"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"charts/success", "eval/success_rate"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("eval/success_rate")][-1] == pytest.approx(evaluation["success_rate"])

    metrics = read_curve(run_dir / "metrics.csv")
    assert len(metrics.episode_success) == 10 and len(metrics.eval_success) == 2
    assert main(["explain", str(run_dir), "--episodes", "2", "--no-distill"]) == 0
    report = (run_dir / "report" / "report.md").read_text()
    assert "| success rate |" in report and "success rate" in report.split("## Router")[0]
    assert "below, the success rate" in report

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["successes"]) == 3 and result["success_rate"] == np.mean(result["successes"])


def test_the_progress_bar_shows_training_and_evaluation_success():
    trainer = Trainer(TrainConfig(env=ENV_ID, steps=40, learning_starts=40, eval_every=20, eval_episodes=2))
    try:
        trainer.run(40)
        post = trainer._postfix(0.0)
        assert post["succ%"] == f"{100 * np.mean(trainer.recent_successes):.0f}"
        assert post["eval_succ%"] == f"{100 * trainer.last_eval['success_rate']:.0f}"
        assert len(trainer.recent_successes) == 2  # two 15-step episodes ended within 40 steps
    finally:
        trainer.close()


class PendulumSuccess(gym.Wrapper):
    """InvertedPendulum-v5 (a MuJoCo env, whose state a checkpoint restores) reporting success while upright."""

    def __init__(self):
        from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

        super().__init__(InvertedPendulumEnv())

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, info | {"success": float(abs(obs[1]) < 0.01)}


@pytest.mark.parametrize("env_id", [ENV_ID, "SmosePendulumSuccess-v0"])
def test_a_resumed_run_keeps_the_success_of_its_unfinished_episode_where_it_keeps_the_episode(tmp_path, env_id):
    from smose.tasks.env_state import env_state_kind

    gym.register(id="SmosePendulumSuccess-v0", entry_point=PendulumSuccess, max_episode_steps=1000)
    try:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        config = TrainConfig(env=env_id, steps=20, learning_starts=20, eval_every=0, eval_episodes=1,
                             checkpoint_every=0, out=str(run_dir))
        trainer = Trainer(config, run_dir)
        trainer.write_config()
        trainer.run(20)
        trainer.episode_success = True  # as if the unfinished episode had already succeeded
        trainer.recent_successes.extend([True, False, True])  # the progress bar's last episodes
        recent = list(trainer.recent_successes)
        trainer.checkpoint()
        trainer.close()
        resumed = Trainer.resume(run_dir, steps=30)
        try:
            assert list(resumed.recent_successes) == recent  # the progress bar's succ% goes on where it was
            kept = env_state_kind(resumed.env) != "none"  # otherwise the resumed run starts a new episode
            assert kept == (env_id != ENV_ID)
            assert resumed.episode_success is (True if kept else None)
        finally:
            resumed.close()
    finally:
        del gym.registry["SmosePendulumSuccess-v0"]


def test_envs_without_success_leave_the_column_empty_and_old_metrics_files_still_read(pendulum_run, tmp_path):
    rows = _rows(pendulum_run / "metrics.csv")
    assert "success_rate" in rows[0] and all(row["success_rate"] == "" for row in rows)
    assert "success_rate" not in json.loads((pendulum_run / "eval.json").read_text())
    old = tmp_path / "metrics.csv"  # written before the column existed
    old.write_text("step,event,episodic_return,episodic_length,eval_return_mean,eval_return_std\n"
                   "200,episode,-1200.5,200,,\n200,eval,,,-900.25,30.5\n")
    metrics = read_curve(old)
    assert metrics.episodes == [(200, -1200.5)] and metrics.evals == [(200, -900.25, 30.5)]
    assert metrics.episode_success == [] and metrics.eval_success == []


def test_run_names_carry_the_task_of_an_id_that_takes_it_as_an_argument(tmp_path):
    assert suites.env_label("Meta-World/MT1", {"env_name": "push-v3", "seed": 1}) == "Meta-World~MT1-push-v3"
    assert suites.env_label("dm_control/walker-walk-v0", {}) == "dm_control~walker-walk-v0"
    assert suites.env_label("Hopper-v5", {"env_name": "x"}) == "Hopper-v5"
    assert str(default_run_dir(TrainConfig(env="Hopper-v5"))) == "runs/Hopper-v5__smose__0"
    from smose.experiments.sweep import Grid, expand

    grid = Grid(envs=("Pendulum-v1",), algos=("smose",), seeds=(0,), steps=100, env_kwargs=(("g", 9.0),))
    assert [run.name for run in expand(grid, tmp_path)] == ["Pendulum-v1__smose__s0"]


def test_a_suite_that_is_not_installed_is_named_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(suites.SUITE_PACKAGES, "SmoseNoSuch", "smose_no_such_suite_package")
    assert main(["train", "--env", "SmoseNoSuch/task-v0", "--steps", "10", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smose: error: environment 'SmoseNoSuch/task-v0' needs the SmoseNoSuch suite")
    assert "pip install 'smose[suites]'" in err and len(err.splitlines()) == 1


def test_the_table_reports_success_rates_beside_returns(tmp_path):
    from smose.experiments.table import write_tables
    from smose.training.trainer import train

    for seed in (0, 1):
        train(TrainConfig(env=ENV_ID, steps=45, learning_starts=30, batch_size=8, experts=2, eval_every=0,
                          eval_episodes=4, seed=seed), tmp_path / "runs" / f"s{seed}", progress=False)
    rates = [json.loads((tmp_path / "runs" / f"s{seed}" / "eval.json").read_text())["success_rate"] for seed in (0, 1)]
    paths = write_tables(tmp_path / "runs")
    text = paths["markdown"].read_text()
    assert "## Success rates" in text
    line = next(line for line in text.splitlines() if line.startswith(f"| {ENV_ID} (") and "%" in line)
    assert f"{100 * np.mean(rates):.1f}%" in line
    with open(paths["csv"], newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["n_success"] == "2" and float(row["success_rate_mean"]) == pytest.approx(np.mean(rates))


def test_an_eval_json_with_a_malformed_success_rate_is_refused_in_one_line(tmp_path):
    from smose.errors import SmoseError
    from smose.serialization import read_eval

    path = tmp_path / "eval.json"
    good = {"mean": 1.0, "std": 0.0, "success_rate": 0.5, "successes": [True, False]}
    path.write_text(json.dumps(good))
    assert read_eval(path)["success_rate"] == 0.5
    for bad in ({"success_rate": "50%"}, {"success_rate": 1.5}, {"success_rate": True}, {"successes": [1, 0]},
                {"successes": "yes"}):
        path.write_text(json.dumps(good | bad))
        with pytest.raises(SmoseError, match=r"eval.json: invalid evaluation \(success"):
            read_eval(path)
