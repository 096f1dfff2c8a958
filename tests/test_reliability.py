"""Checkpoints, exact resume, crash/interrupt recovery, full disks, numerical guard and input validation."""

import csv
import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from smose import serialization
from smose.algo.policy import make_actor
from smose.cli import main
from smose.errors import SmoseError
from smose.serialization import load_model, save_model
from smose.tasks.env_state import capture_env_state, env_state_kind, restore_env_state
from smose.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_JSON
from smose.training.config import TrainConfig
from smose.training.run_dir import prepare_run_dir
from smose.training.trainer import Trainer, resume, train

TINY = dict(env="Pendulum-v1", learning_starts=100, batch_size=32, experts=3, eval_every=150, eval_episodes=1,
            buffer_size=1000)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """MuJoCo appends model-compiler warnings to MUJOCO_LOG.TXT in the working directory: keep them out of the repo."""
    monkeypatch.chdir(tmp_path)


def tiny_config(**overrides) -> TrainConfig:
    return TrainConfig(**(TINY | overrides))


def learner_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = trainer.learner.state_dict()
    out = {f"{m}.{k}": v for m in ("actor", "critic", "critic_target") for k, v in state[m].items()}
    for name in ("actor_opt", "critic_opt", "alpha_opt"):
        out |= {f"{name}.{i}.{k}": v for i, s in state[name]["state"].items() for k, v in s.items()}
    return out | {"log_alpha": state["log_alpha"]}


def metrics_rows(run_dir: Path) -> list[dict]:
    """metrics.csv without the SPS and time columns (wall-clock speed and time are the things a resumed run may not
    reproduce)."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k not in ("sps", "time")} for row in csv.DictReader(fh)]


def checkpoint_json(run_dir: Path) -> dict:
    return json.loads((run_dir / CHECKPOINT_DIR / CHECKPOINT_JSON).read_text())


def checkpoint_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / CHECKPOINT_DIR / checkpoint_json(run_dir)["tensor_file"]))


def assert_same_run(a: Path, b: Path) -> None:
    """Two finished runs hold bit-identical training states and identical metrics."""
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"tensors differ: {different}"
    ja, jb = checkpoint_json(a), checkpoint_json(b)
    # Differ by design: the tensor file's random name, the byte length of the SPS column, the run directory, and
    # the hash over all of these.
    for volatile in ("tensor_file", "metrics_bytes", "config", "content_sha256"):
        ja.pop(volatile), jb.pop(volatile)
    assert ja == jb
    assert metrics_rows(a) == metrics_rows(b)


# ---- determinism -----------------------------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_parameters():
    states = []
    for _ in range(2):
        trainer = Trainer(tiny_config(learning_starts=50))
        initial = {k: v.clone() for k, v in learner_tensors(trainer).items()}
        trainer.run(200)
        assert trainer.learner.n_updates == 150
        states.append((learner_tensors(trainer), trainer.buffer.data.copy()))
        trainer.close()
    (a, buf_a), (b, buf_b) = states
    assert a.keys() == b.keys() and len(a) > len(initial)  # Adam moments exist now
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(buf_a, buf_b)
    for trained in ("actor.router.weight", "actor.expert_weight", "critic.weights.0", "critic_target.weights.2"):
        assert not torch.equal(initial[trained], a[trained])  # the equality above is not that of untouched weights


@pytest.mark.parametrize("env_id,crash_at", [("Pendulum-v1", 230), ("Hopper-v5", 190)])
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, env_id, crash_at):
    config = tiny_config(env=env_id, steps=300, checkpoint_every=150)
    train(config, tmp_path / "straight", progress=False)

    # A run that dies at `crash_at`: the last checkpoint (step 150) is mid-episode, and metrics.csv and TensorBoard
    # already hold rows and events past it, which the resumed run must replace, not duplicate.
    crashed = Trainer(config, prepare_run_dir(tmp_path / "crashed", force=False))
    crashed.write_config()
    crashed.run(crash_at)
    crashed.close()
    assert checkpoint_json(tmp_path / "crashed")["step"] == 150
    assert checkpoint_json(tmp_path / "crashed")["episode"]["length"] > 0
    resume(tmp_path / "crashed", progress=False)
    assert_same_run(tmp_path / "straight", tmp_path / "crashed")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tb_steps(run: Path, tag: str) -> list[int]:
        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        return [e.step for e in acc.Scalars(tag)]

    for tag in ("charts/episodic_return", "losses/qf_loss", "eval/episodic_return"):
        assert tb_steps(tmp_path / "crashed", tag) == tb_steps(tmp_path / "straight", tag)


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Ant-v5", "Humanoid-v5", "Pendulum-v1", "MountainCarContinuous-v0"])
def test_env_state_restores_bit_identical_continuation(env_id):
    first, second = gym.make(env_id), gym.make(env_id)
    first.reset(seed=1)
    second.reset(seed=2)
    first.action_space.seed(0)
    actions = [first.action_space.sample() for _ in range(40)]
    for action in actions[:20]:
        first.step(action)
    kind = env_state_kind(first)
    assert kind in ("mujoco", "classic-control")
    restore_env_state(second, kind, capture_env_state(first, kind))
    second.unwrapped.np_random.bit_generator.state = first.unwrapped.np_random.bit_generator.state
    for action in actions[20:]:
        a, b = first.step(action), second.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]


# ---- crashes and interrupts of the real command ----------------------------------------------------------------------
def smose_train(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smose", "train", *args, "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, after_step: int = 0) -> tuple[int, float]:
    """Block until a checkpoint later than ``after_step`` is committed; returns (its step, the time it was seen)."""
    deadline = time.monotonic() + 120
    path = run_dir / CHECKPOINT_DIR / CHECKPOINT_JSON
    while time.monotonic() < deadline:
        if path.is_file() and (step := json.loads(path.read_text())["step"]) > after_step:
            return step, time.monotonic()
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no checkpoint written")


def test_sigint_then_sigkill_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    settings = dict(env="Pendulum-v1", steps=600, learning_starts=100, batch_size=32, experts=3, eval_every=300,
                    eval_episodes=1, buffer_size=2000, checkpoint_every=100)
    args = [a for k, v in settings.items() for a in ("--" + k.replace("_", "-"), str(v))]
    run_dir = tmp_path / "run"

    # Ctrl-C: the run stops after the current step, writes a checkpoint and says how to resume.
    proc = smose_train(*args, "--out", str(run_dir))
    wait_for_checkpoint(run_dir, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"smose train --resume {run_dir}" in err and "Traceback" not in err
    stopped_at = checkpoint_json(run_dir)["step"]
    assert f"at step {stopped_at} of 600" in err
    actor, meta = load_model(run_dir)
    assert meta["trained_steps"] == stopped_at

    # SIGKILL at a random moment after a checkpoint, early enough (by the measured speed) to hit a running step.
    proc = smose_train("--resume", str(run_dir))
    first_step, first_time = wait_for_checkpoint(run_dir, proc, after_step=stopped_at)
    second_step, second_time = wait_for_checkpoint(run_dir, proc, after_step=first_step)
    seconds_left = (600 - second_step) * (second_time - first_time) / (second_step - first_step)
    delay = random.uniform(0.0, 0.6 * seconds_left)
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=60)
    killed_at = checkpoint_json(run_dir)["step"]
    assert killed_at < 600, f"the run finished before the kill (delay {delay:.2f} s)"

    proc = smose_train("--resume", str(run_dir))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["run_dir"] == str(run_dir)
    _, meta = load_model(run_dir)
    assert meta["trained_steps"] == 600 and checkpoint_json(run_dir)["finished"] is True
    rows = metrics_rows(run_dir)
    keys = [(int(r["step"]), r["event"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate metrics rows"
    for event in ("episode", "eval"):
        steps = [s for s, e in keys if e == event]
        assert steps == sorted(set(steps)) and steps[-1] == 600
    assert [s for s, e in keys if e == "episode"] == [200, 400, 600]  # Pendulum: 200-step episodes

    train(TrainConfig(**settings), tmp_path / "straight", progress=False)
    assert_same_run(tmp_path / "straight", run_dir)


# ---- full disk -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failing_file", [".model.safetensors.tmp", ".step-", f".{CHECKPOINT_JSON}.tmp", "metrics.csv"])
def test_disk_full_stops_training_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failing_file):
    run_dir = prepare_run_dir(tmp_path / "run", force=False)
    crashed = Trainer(tiny_config(steps=200, checkpoint_every=50, learning_starts=50, eval_every=100), run_dir)
    crashed.write_config()
    crashed.run(120)
    crashed.close()
    before = checkpoint_json(run_dir)
    assert before["step"] == 100

    real_write = serialization._write_all
    real_open = open

    def write_until_full(fh, data):
        if Path(fh.name).name.startswith(failing_file):
            real_write(fh, bytes(memoryview(data)[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fh, data)

    class FullFile(io.TextIOWrapper):
        def flush(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_full(path, mode="r", *args, **kwargs):  # metrics.csv is appended row by row through open()
        if Path(path).name == failing_file:
            return FullFile(real_open(path, mode.replace("a", "ab"), *args[1:]), newline="")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(serialization, "_write_all", write_until_full)
    monkeypatch.setattr("builtins.open", open_full)
    with pytest.raises(SmoseError) as info:
        resume(run_dir, progress=False)  # the next checkpoint is due at step 150
    monkeypatch.undo()
    message = str(info.value)
    assert "No space left on device" in message and "previous checkpoint (step 100) is intact" in message
    assert "\n" not in message and f"smose train --resume {run_dir}" in message

    assert checkpoint_json(run_dir) == before
    assert sorted(p.name for p in (run_dir / CHECKPOINT_DIR).iterdir()) == [CHECKPOINT_JSON, before["tensor_file"]]
    assert not list(run_dir.glob(".*.tmp"))
    resume(run_dir, progress=False)  # with space again, the run completes
    assert checkpoint_json(run_dir)["step"] == 200


def test_checkpoint_writes_the_buffer_without_copying_it(tmp_path):
    trainer = Trainer(tiny_config(buffer_size=200_000), prepare_run_dir(tmp_path / "run", force=False))
    trainer.write_config()
    trainer.buffer.data[:] = np.random.default_rng(0).normal(size=trainer.buffer.data.shape)
    trainer.buffer.size = trainer.global_step = trainer.buffer.capacity
    tracemalloc.start()
    trainer.checkpoint()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < trainer.buffer.nbytes / 10, f"peak {peak} bytes while writing a {trainer.buffer.nbytes}-byte buffer"
    trainer.close()
    resumed = Trainer.resume(tmp_path / "run", steps=trainer.global_step + 10)
    np.testing.assert_array_equal(resumed.buffer.data, trainer.buffer.data)
    resumed.close()


# ---- numerical guard -------------------------------------------------------------------------------------------------
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = prepare_run_dir(tmp_path / "run", force=False)
    trainer = Trainer(tiny_config(steps=400, checkpoint_every=100), run_dir)
    trainer.write_config()
    trainer.run(200)
    good = checkpoint_json(run_dir)
    with torch.no_grad():
        trainer.learner.critic.weights[1][0, 3, 7] = float("nan")
    with pytest.raises(SmoseError) as info:
        trainer.checkpoint()  # a diverged state is never saved
    assert "non-finite parameter critic.weights.1 at step 200" in str(info.value)
    with pytest.raises(SmoseError) as info:
        trainer.run(400)
    message = str(info.value)
    assert "non-finite loss qf_loss at step 300" in message and "last good checkpoint (step 200)" in message
    assert trainer.global_step == 300 and checkpoint_json(run_dir) == good
    trainer.close()
    actor, meta = load_model(run_dir)
    assert meta["trained_steps"] == 200 and all(torch.isfinite(p).all() for p in actor.parameters())


# ---- safe loading ----------------------------------------------------------------------------------------------------
def saved_model(directory: Path, env_id: str) -> Path:
    env = gym.make(env_id)
    space = env.action_space
    save_model(make_actor("smose", env.observation_space.shape[0], space.shape[0], space.low, space.high, 2),
               directory, env_id)
    return directory


@pytest.mark.parametrize("trained_on,evaluated_on,problem", [
    ("Hopper-v5", "Walker2d-v5", "does not fit Walker2d-v5 (17 observations, 6 actions)"),
    ("HalfCheetah-v5", "Walker2d-v5", "a different task"),
    ("Pendulum-v1", "MountainCarContinuous-v0", "does not fit"),
])
def test_eval_refuses_a_model_trained_for_another_env(tmp_path, capsys, trained_on, evaluated_on, problem):
    run_dir = saved_model(tmp_path / "run", trained_on)
    assert main(["eval", str(run_dir), "--env", evaluated_on, "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and str(run_dir / "model.json") in err and len(err.splitlines()) == 1


def test_eval_accepts_another_version_of_the_same_task(tmp_path, capsys):
    run_dir = saved_model(tmp_path / "run", "Hopper-v5")
    assert main(["eval", str(run_dir), "--env", "Hopper-v4", "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["env_id"] == "Hopper-v4"


def rewrite_json(path: Path, **changes) -> None:
    """Change fields like a deliberate tamperer would: recomputing the content hash of sealed files."""
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(serialization.seal(data) if "content_sha256" in data else data))


@pytest.mark.parametrize("file,changes,problem", [
    ("model.json", {"format_version": 99}, "model description format version 99 is not supported"),
    ("model.json", {"architecture": {"algo": "smose", "n_obs": 3, "n_act": 1, "n_experts": 10 ** 9}},
     "architecture.n_experts must be an integer in [1, 100000]"),
    ("model.json", {"architecture": {"algo": "smose", "n_obs": 3, "n_act": 1, "n_experts": 5}},
     "tensor 'expert_weight' has shape (3, 2, 3) F32, expected (5, 2, 3) F32"),
    ("config.json", {"experts": 4}, "the checkpoint was written with experts=3 but the run's config.json says 4"),
    ("config.json", {"steps": "many"}, "--steps must be an int"),
    ("config.json", {"format_version": 2}, "run configuration format version 2 is not supported"),
    ("checkpoint/checkpoint.json", {"tensor_file": "../model.safetensors"}, "is not a checkpoint file name"),
    ("checkpoint/checkpoint.json", {"buffer": {"pos": 5, "size": 999}}, "buffer.size must be in [0, 400]"),
    ("checkpoint/checkpoint.json", {"format": "something"}, "not a smose checkpoint"),
    ("eval.json", {"mean": "high"}, "mean must be a number"),
])
def test_tampered_files_are_refused_with_a_one_line_error(finished_run, tmp_path, capsys, file, changes, problem):
    import shutil

    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    rewrite_json(run_dir / file, **changes)
    command = ["info", str(run_dir)] if file in ("model.json", "eval.json") else \
        ["train", "--resume", str(run_dir), "--steps", "500"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and len(err.splitlines()) == 1 and str(run_dir) in err


@pytest.mark.parametrize("file", ["model.json", "checkpoint/checkpoint.json"])
def test_edited_sealed_json_is_detected(finished_run, tmp_path, file):
    import shutil

    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    path = run_dir / file
    path.write_text(path.read_text().replace('"step": 400', '"step": 300').replace('"n_obs": 3', '"n_obs": 2'))
    with pytest.raises(SmoseError, match="corrupted or was edited"):
        load_model(run_dir) if file == "model.json" else Trainer.resume(run_dir, steps=500)


def test_flipped_bit_in_the_weights_is_detected(finished_run, tmp_path):
    import shutil

    run_dir = Path(shutil.copytree(finished_run, tmp_path / "run"))
    weights = run_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # a low mantissa bit: the weight stays a perfectly valid float
    weights.write_bytes(bytes(data))
    with pytest.raises(SmoseError, match="SHA-256 of the data does not match"):
        load_model(run_dir)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny Pendulum run with a checkpoint (400 steps, buffer of 1,000 rows)."""
    return train(tiny_config(steps=400, checkpoint_every=200), tmp_path_factory.mktemp("runs") / "tiny",
                 progress=False)


# ---- input validation ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["train", "--seed", "-1"], "--seed must be >= 0"),
    (["train", "--checkpoint-every", "-5"], "--checkpoint-every must be >= 0"),
    (["train", "--lb-weight", "nan"], "--lb-weight must be finite"),
    (["train", "--experts", "100000"], "--experts must be at most 1024"),
    (["train", "--env", "Pendulum-v1", "--buffer-size", "1000000000000", "--out", "{tmp}/big"],
     "cannot allocate a replay buffer of 1000000000000 transitions"),
    (["train", "--out", "{tmp}/file.txt/run"], "cannot write the run directory (Not a directory)"),
    (["train", "--resume", "{tmp}/missing"], "no such run directory"),
    (["train", "--resume", "{tmp}"], "no checkpoint to resume from"),
    (["train", "--resume", "{tmp}", "--batch-size", "64"], "only --steps and --checkpoint-every may be given"),
    (["train", "--resume", "{tmp}", "--force"], "only --steps and --checkpoint-every may be given (got --force)"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("")
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(env="Pendulum-v1").to_dict()))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("args", [["eval", "run", "--episodes", "0"], ["eval", "run", "--seed", "-3"],
                                  ["distill", "run", "--depth", "0"], ["train", "--steps", "ten"]])
def test_malformed_numbers_are_refused_by_the_parser(capsys, args):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_finished_run_resume_needs_more_steps(finished_run, capsys):
    assert main(["train", "--resume", str(finished_run)]) == 2
    assert "already finished at step 400; pass --steps N (> 400)" in capsys.readouterr().err
    assert main(["train", "--resume", str(finished_run), "--steps", "300"]) == 2
    assert "--steps 300 is below the checkpoint's step 400" in capsys.readouterr().err
