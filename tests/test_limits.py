"""Every count a command takes has an upper bound, and a refused command leaves nothing behind."""

import argparse
import dataclasses
import fcntl
import json
import subprocess
import sys

import pytest

from smose import runlock
from smose.cli import build_parser, main
from smose.errors import SmoseError
from smose.limits import Count
from smose.training.config import UPPER_BOUNDS, TrainConfig

HUGE = str(10 ** 21)
TINY = ["--env", "Pendulum-v1", "--steps", "300", "--learning-starts", "100", "--batch-size", "32",
        "--eval-every", "150", "--eval-episodes", "1", "--experts", "3", "--quiet"]
BENCH_COUNTS = ("--repeats", "--learning-starts", "--warm", "--measure", "--memory-capacity")


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default run directories and MuJoCo's log file land here, not in the repository


def subparsers() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def integer_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command that takes an integer."""
    found = []
    for command, parser in subparsers().items():
        for action in parser._actions:
            if action.option_strings and (action.type is int or isinstance(action.type, Count)):
                found.append((command, action.option_strings[0]))
    return found


def test_every_integer_option_has_an_upper_bound():
    options = integer_options()
    assert {("eval", "--episodes"), ("distill", "--dagger"), ("sweep", "--workers"), ("train", "--steps")} <= set(
        options)
    config_fields = {f.name for f in dataclasses.fields(TrainConfig) if f.type == "int"}
    for command, option in options:
        action = next(a for a in subparsers()[command]._actions if option in a.option_strings)
        if command == "train":  # typed int on the parser, bounded by TrainConfig
            name = option[2:].replace("-", "_")
            assert name in config_fields and (name in UPPER_BOUNDS or name == "buffer_size"), option
        else:
            assert isinstance(action.type, Count) and action.type.high < 10 ** 21, (command, option)
    # --buffer-size is held to the memory it needs (see the test below), everything else to UPPER_BOUNDS.
    assert config_fields - set(UPPER_BOUNDS) == {"buffer_size"}


@pytest.mark.parametrize("command,option", [o for o in integer_options() if o != ("train", "--buffer-size")]
                         + [("sweep", "--experts"), ("sweep", "--seeds")])  # lists of counts, bounded alike
def test_a_huge_count_is_refused_with_one_line(command, option, capsys, tmp_path):
    args = [command] + (["run"] if command not in ("train", "sweep") else [])
    if command == "sweep":
        args += ["--envs", "Pendulum-v1", "--out", "sweep"] + (["--steps", "100"] if option != "--steps" else [])
    try:
        code = main(args + [option, HUGE])
    except SystemExit as exc:  # refused by the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("smose: error: ") and len(err.strip().splitlines()) == 1, err
    assert HUGE in err and ("must be at most" in err or "expected an integer from" in err), err
    assert not any(tmp_path.iterdir())  # nothing left behind


@pytest.mark.parametrize("option", BENCH_COUNTS)
def test_huge_benchmark_counts_are_refused(option, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "throughput", option, HUGE])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("smose: error: argument " + option) and HUGE in err


def test_eval_with_a_huge_episode_count_stops_at_once_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "smose", "eval", "no-such-run", "--episodes", HUGE],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == (f"smose: error: argument --episodes: expected an integer from 1 to 10,000, got {HUGE} "
                           "(see `smose eval --help`)\n")


def test_a_refused_buffer_size_leaves_nothing_and_the_sane_command_then_works(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "pendulum"
    assert main(["train", *TINY, "--buffer-size", "1000000000000", "--out", str(run_dir)]) == 2
    assert "cannot allocate a replay buffer of 1000000000000 transitions" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # neither the run directory, nor its parent, nor a .lock
    assert main(["train", *TINY, "--buffer-size", "1000", "--out", str(run_dir)]) == 0  # no --force needed
    assert json.loads((run_dir / "config.json").read_text())["buffer_size"] == 1000


def test_a_refused_resume_leaves_no_lock_file(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig(env="Pendulum-v1").to_dict()))
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_failed_holder_removes_only_a_lock_file_it_created(tmp_path):
    lock = tmp_path / runlock.LOCK_FILE
    with pytest.raises(SmoseError, match="refused"):
        with runlock.hold(tmp_path, "trainer"):
            assert lock.is_file()
            raise SmoseError("refused")
    assert not lock.exists()
    with runlock.hold(tmp_path, "trainer"):  # a block that ends normally keeps it, as before
        pass
    assert lock.is_file()
    with pytest.raises(SmoseError, match="refused"):
        with runlock.hold(tmp_path, "trainer"):
            raise SmoseError("refused")
    assert lock.is_file()  # it was there before this holder came


def test_the_lock_is_taken_on_the_file_that_is_there_after_a_removal(tmp_path, monkeypatch):
    """A failed holder may remove the lock file between another process's open and its flock: that process must then
    lock the file that the next comer will find, not the removed one."""
    real_flock = fcntl.flock
    calls = []

    def flock_after_removal(fh, operation):
        if not calls:  # the first flock comes right after another holder removed the file
            (tmp_path / runlock.LOCK_FILE).unlink()
        calls.append(operation)
        return real_flock(fh, operation)

    monkeypatch.setattr(runlock.fcntl, "flock", flock_after_removal)
    with runlock.hold(tmp_path, "trainer"):
        monkeypatch.setattr(runlock.fcntl, "flock", real_flock)
        assert runlock.is_held(tmp_path)
        with pytest.raises(SmoseError, match="another trainer is working here"):
            with runlock.hold(tmp_path, "trainer"):
                pass
