"""The run directory: every file name in it, and the one reader of its metrics.csv.

A run directory is what `smose train` (and `finetune`) writes and every other command reads::

    RUN/config.json           the TrainConfig (training/config.py)
    RUN/metrics.csv           one row per finished episode (event=episode) and per evaluation (event=eval)
    RUN/tensorboard/          the same scalars for TensorBoard, named as in CleanRL
    RUN/model.safetensors     the actor's tensors
    RUN/model.json            its architecture, env, versions and digest (serialization.py)
    RUN/eval.json             the reference evaluation (gated); eval-linear.json the authors' protocol beside it
    RUN/checkpoint/           the whole training state, to resume (training/checkpoint.py)
    RUN/trees/                distilled trees and their fidelity.json (interpret/distill.py)
    RUN/report/               the report of `smose explain` (index.html, report.md)
    RUN/.lock                 held by the process writing the run (runlock.py)

Names are defined here once; modules take them from here (or from ``RunDir``), never as literals. This module needs
the standard library only.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from smose.errors import SmoseError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"
EVAL_FILE = "eval.json"  # the run's reference evaluation: gated, written by training and by `smose eval`
LINEAR_EVAL_FILE = "eval-linear.json"  # `smose eval --mode linear` (the authors' protocol), beside it
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_JSON = "checkpoint.json"  # inside CHECKPOINT_DIR
TREES_DIR = "trees"
FIDELITY_FILE = "fidelity.json"  # inside TREES_DIR
REPORT_DIR = "report"
REPORT_HTML = "index.html"  # inside REPORT_DIR
REPORT_MARKDOWN = "report.md"  # inside REPORT_DIR
LOCK_FILE = ".lock"

# metrics.csv columns with a meaning beyond their name
TIME_COLUMN = "time"  # wall-clock seconds of training at the row, summed over resumed sessions
# On episode rows 1 or 0, whether the episode succeeded; on evaluation rows the share of episodes that did. Empty for
# envs that report no success, absent from files written before the column existed.
SUCCESS_COLUMN = "success_rate"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory (nothing is read or created by making one)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def model_weights(self) -> Path:
        return self.path / MODEL_WEIGHTS

    @property
    def model_meta(self) -> Path:
        return self.path / MODEL_META

    @property
    def eval(self) -> Path:
        return self.path / EVAL_FILE

    @property
    def linear_eval(self) -> Path:
        return self.path / LINEAR_EVAL_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def trees(self) -> Path:
        return self.path / TREES_DIR

    @property
    def fidelity(self) -> Path:
        return self.path / TREES_DIR / FIDELITY_FILE

    @property
    def report(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE


def read_metrics(path: Path, last: int | None = None) -> list[dict[str, str]]:
    """The rows of a metrics.csv (``path`` is the file or its run directory), oldest first, as strings; empty when
    there is no file. Blank cells are kept as ""; a row cut short by an interrupted write keeps None for what is
    missing. An unreadable file is one line of SmoseError.

    ``last``: only the final ``last`` rows, read from the end of the file: cheap enough to poll a file that a trainer
    is appending to, however long it has grown.
    """
    if last is None:
        return read_metrics_with_columns(path)[1]
    path = _metrics_file(path)
    if not path.is_file():
        return []
    try:
        with path.open("rb") as fh:
            text = (fh.readline() + _final_lines(fh, last)).decode("utf-8")
        return [row for row in csv.DictReader(io.StringIO(text, newline=""))][-last:] if last > 0 else []
    except (csv.Error, ValueError, OSError) as exc:  # ValueError covers undecodable bytes
        raise SmoseError(f"{path}: unreadable metrics ({str(exc).splitlines()[0][:200]})") from None


def read_metrics_with_columns(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns of a metrics.csv (its header: a file written before a column existed lacks it) and its rows, as
    ``read_metrics`` reads them; ([], []) when there is no file."""
    path = _metrics_file(path)
    if not path.is_file():
        return [], []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = [row for row in reader]
            return list(reader.fieldnames or []), rows
    except (csv.Error, ValueError, OSError) as exc:  # ValueError covers undecodable bytes
        raise SmoseError(f"{path}: unreadable metrics ({str(exc).splitlines()[0][:200]})") from None


def _metrics_file(path: Path) -> Path:
    path = Path(path)
    return path / METRICS_FILE if path.is_dir() else path


def _final_lines(fh: BinaryIO, count: int) -> bytes:
    """The end of the binary file ``fh`` after its current position (just past the header), at least its last
    ``count`` lines: read backwards in growing blocks, a line cut by the block's start dropped, so the result holds
    whole lines only (but for the very last, which a writer may be in the middle of)."""
    start = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    block = 4096
    while True:
        offset = max(start, end - block)
        fh.seek(offset)
        data = fh.read(end - offset)
        if offset > start:
            data = data.split(b"\n", 1)[1] if b"\n" in data else b""
        if offset == start or data.rstrip(b"\n").count(b"\n") >= count:
            return data
        block *= 2
