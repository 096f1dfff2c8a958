"""A sweep's unit of work: a job is the commands of one run (`smose train`, then `smose distill` where trees are
asked for, or `smose distill` alone for a finished run), and ``execute`` runs them as processes, one after the other,
their output in the run's log. ``execute`` is the whole job of a worker on either backend (backends.py).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from smose.experiments.grid import RunSpec, format_float
from smose.tasks.envs import format_env_kwargs
from smose.training.config import TrainConfig


@dataclass
class Job:
    spec: RunSpec
    commands: list[list[str]]  # run one after the other by execute()
    log_path: Path
    trains: bool = True  # False: only distils a finished run

    @property
    def first_distill(self) -> int:
        """Index in ``commands`` of the first `smose distill`: after the training command of a job that trains."""
        return 1 if self.trains else 0


Outcome = tuple[int, str, int]  # exit status, error line or "", how many of the job's commands went through


def train_command(config: TrainConfig) -> list[str]:
    """``python -m smose train`` with every option that differs from the default, one thread, no progress bar."""
    words = [sys.executable, "-m", "smose", "train"]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if value is None or value == f.default or f.name == "threads" or value == {}:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, dict):
            words += [flag, *format_env_kwargs(value)]
        elif isinstance(value, bool):
            words.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            words += [flag, format_float(value) if isinstance(value, float) else str(value)]
    return words + ["--threads", "1", "--quiet", "--force"]


def resume_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "smose", "train", "--resume", str(run_dir), "--quiet"]


def error_line(log_path: Path, returncode: int) -> str:
    """The line that says why a run failed: smose's one-line error, else the last line of the log (a traceback's)."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith("smose: error:"):
            return line
    if returncode < 0:
        return f"killed by signal {-returncode}"
    output = [line for line in lines if not line.startswith("$ ")]  # not the commands execute() echoes
    return output[-1] if output else f"exit status {returncode}"


# How the sweep asks a trainer to checkpoint and stop. Not SIGINT: Ray's workers block SIGINT, and a blocked signal
# stays blocked in the processes they start, so the trainer would never see it.
STOP_SIGNAL = signal.SIGTERM
_live: dict[int, subprocess.Popen] = {}  # processes started by execute() in this process, for interrupting them
_live_lock = threading.Lock()


def execute(commands: list[list[str]], log_path: str, cwd: str) -> Outcome:
    """Run a job's processes one after the other (training, then distilling), their output in ``log_path``, up to
    the first that fails; returns (exit status, error line or "", how many commands went through: the index of the
    one that failed).

    This is the whole job of a worker, on either backend. On a Ray node that cannot see the sweep directory it
    fails with a message saying so instead of training into a directory nobody will read. The commands' Python is
    this worker's own (``sys.executable``): on another node of a cluster the driver's may not exist.
    """
    log = Path(log_path)
    if not log.parent.is_dir() or not Path(cwd).is_dir():
        return -1, (f"{log.parent} is not visible on {socket.gethostname()}: the ray backend needs --out on a "
                    "filesystem shared by all nodes, at the same path"), 0
    with open(log, "w"):
        pass
    for done, command in enumerate(commands):
        returncode = _run_logged([sys.executable, *command[1:]], log, cwd)
        if returncode != 0:
            return returncode, error_line(log, returncode), done
    return 0, "", len(commands)


def _run_logged(command: list[str], log: Path, cwd: str) -> int:
    """One process of a job, its output appended to ``log``; its exit status."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as fh:
        fh.write("$ " + shlex.join(command) + "\n")
        fh.flush()
        # A session of its own: a Ctrl-C in the terminal reaches only the sweep, which forwards exactly one stop
        # signal (the trainer checkpoints and stops on the first; a second would abort it without a checkpoint).
        process = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                   start_new_session=True)
        with _live_lock:
            _live[process.pid] = process
        try:
            while True:  # short waits: Ray delivers a task's cancellation only while Python code runs
                try:
                    returncode = process.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:  # a cancelled Ray task: let the trainer stop cleanly (it checkpoints on SIGTERM)
            process.send_signal(STOP_SIGNAL)
            process.wait()
            raise
        finally:
            with _live_lock:
                _live.pop(process.pid, None)
    return returncode


def interrupt_live() -> None:
    """Forward an interrupt to the training processes this process started and wait for them to stop."""
    with _live_lock:
        processes = list(_live.values())
    for process in processes:
        if process.poll() is None:
            process.send_signal(STOP_SIGNAL)
    for process in processes:
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
