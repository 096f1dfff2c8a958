"""The run directory's lifecycle before training writes into it: its default name, and checking, clearing and
creating it, refusing any directory that holds what a run directory does not (``--force`` clears run directories
only). The names of the files inside are smose.run's."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from smose.errors import SmoseError
from smose.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVAL_FILE,
    LINEAR_EVAL_FILE,
    LOCK_FILE,
    METRICS_FILE,
    MODEL_META,
    MODEL_WEIGHTS,
    REPORT_DIR,
    TENSORBOARD_DIR,
    TREES_DIR,
)
from smose.tasks.suites import env_label
from smose.training.config import TrainConfig

WRITE_PROBE = ".write-test"
# `smose eval --env OTHER` writes eval-OTHER.json / eval-linear-OTHER.json (serialization.eval_file)
OTHER_EVAL_FILE = re.compile(r"\.?eval-[A-Za-z0-9_.:-]+\.json(\.tmp)?")


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{env_label(config.env, config.env_kwargs)}__{config.algo}__{config.seed}"


def run_dir_entries() -> frozenset[str]:
    """Every name smose writes directly into a run directory: what training writes, the trees of `smose distill`,
    the report of `smose explain`, the lock, and the hidden temporaries of their atomic writes."""
    names = {CONFIG_FILE, METRICS_FILE, EVAL_FILE, LINEAR_EVAL_FILE, TENSORBOARD_DIR, CHECKPOINT_DIR, MODEL_WEIGHTS,
             MODEL_META, TREES_DIR, REPORT_DIR}
    return frozenset(names | {f".{name}.tmp" for name in names} | {LOCK_FILE, WRITE_PROBE})


def refuse_foreign(path: Path) -> None:
    """A directory holding anything a run directory does not is not one: never cleared, whatever --force says."""
    known = run_dir_entries()
    foreign = sorted(entry.name for entry in Path(path).iterdir()
                     if entry.name not in known and not OTHER_EVAL_FILE.fullmatch(entry.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise SmoseError(f"{path}: does not look like a run directory (it holds {shown}); --force only starts run "
                         "directories afresh: choose another --out or move those files away")


def clear_run_dir(path: Path) -> None:
    """Delete what an earlier run left in the run directory ``path`` (metrics.csv would be appended to; trees,
    checkpoint, TensorBoard events and evaluations would stay beside the new run's), keeping the directory and its
    lock file, so a new run starts clean. Refuses (SmoseError, nothing deleted) a directory that holds anything a run
    directory does not. A missing directory is left missing."""
    path = Path(path)
    # The lock file is the caller's (or nobody's): removing it would let a second trainer lock a new file.
    entries = [entry for entry in path.iterdir() if entry.name != LOCK_FILE] if path.is_dir() else []
    if not entries:  # the usual case, a new directory: nothing to check or delete
        return
    refuse_foreign(path)
    try:
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as exc:
        raise SmoseError(f"{path}: cannot clear the run directory ({exc.strerror or exc})") from None


def check_run_dir(path: Path, force: bool) -> Path:
    """Refuse to mix a new run into a non-empty directory unless ``force``, and even then refuse a directory that is
    not a run directory (clear_run_dir empties it once the run's lock is held); creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SmoseError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise SmoseError(f"{path}: run directory is not empty; choose another --out or pass --force to start it "
                             "afresh")
        refuse_foreign(path)
    return path


def create_run_dir(path: Path) -> Path:
    """Create the run directory (and its parents) and check that it is writable."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / WRITE_PROBE
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SmoseError(f"{path}: cannot write the run directory ({exc.strerror})") from None
    return path


def prepare_run_dir(path: Path, force: bool) -> Path:
    """Create the run directory; refuse to mix a new run into a non-empty one unless ``force``."""
    return create_run_dir(check_run_dir(path, force))
