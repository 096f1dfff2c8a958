"""What training reports as it goes: metrics.csv (one row per finished episode and per evaluation), CleanRL-named
TensorBoard scalars, and warnings on stderr."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from smose.run import SUCCESS_COLUMN, TIME_COLUMN, RunDir, read_metrics_with_columns
from smose.serialization import write_error

LOSS_COLUMNS = ("qf_loss", "qf_values", "actor_loss", "lb_loss", "alpha", "alpha_loss")


def warn(message: str) -> None:
    print(f"smose: warning: {message}", file=sys.stderr)


class RunLogger:
    """metrics.csv and the TensorBoard events of a run directory."""

    def __init__(self, run_dir: Path, n_experts: int, resume_step: int | None = None,
                 metrics_bytes: int | None = None):
        """``resume_step``: continue a run from its checkpoint at that step, whose metrics.csv was
        ``metrics_bytes`` long: later rows (written after the checkpoint, before a crash) are cut off, and
        TensorBoard hides events after the step (``purge_step``), so neither has duplicates or gaps."""
        from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import

        run = RunDir(run_dir)
        self.n_experts = n_experts
        self.path, self.tensorboard_path = run.metrics, run.tensorboard
        self.columns = ["step", "event", "episodic_return", "episodic_length", "eval_return_mean", "eval_return_std",
                        SUCCESS_COLUMN, *LOSS_COLUMNS, "sps", TIME_COLUMN] + [f"usage_{m}" for m in range(n_experts)]
        path = self.path
        if metrics_bytes is not None:
            size = path.stat().st_size if path.exists() else 0
            if size < metrics_bytes:
                warn(f"{path} is shorter than at the checkpoint ({size} < {metrics_bytes} bytes): rows are missing")
            else:
                os.truncate(path, metrics_bytes)
        new = not path.exists() or path.stat().st_size == 0
        # Training time continues over resumed sessions; a file written before the time column keeps its columns.
        self.time_offset = 0.0
        if not new:
            columns, rows = read_metrics_with_columns(path)
            self.columns = columns or self.columns
            for row in rows:
                self.time_offset = float(row.get(TIME_COLUMN) or self.time_offset)
        self.clock = time.perf_counter()
        self._file = open(path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns, restval="", extrasaction="ignore")
        if new:
            self._csv.writeheader()
        purge = None if resume_step is None else resume_step + 1
        self.tb = SummaryWriter(str(self.tensorboard_path), purge_step=purge)

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        try:
            yield
        except OSError as exc:  # e.g. a full disk
            raise write_error(path, exc) from None

    def row(self, values: dict) -> None:
        values = values | {TIME_COLUMN: round(self.time_offset + time.perf_counter() - self.clock, 3)}
        with self._writing(self.path):
            self._csv.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items()})
            self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with self._writing(self.tensorboard_path):
            for name, value in values.items():
                self.tb.add_scalar(name, value, step)

    def sync(self) -> int:
        """Put every row and event so far on disk; returns the length of metrics.csv (a checkpoint records it)."""
        with self._writing(self.tensorboard_path):
            self.tb.flush()
        with self._writing(self.path):
            self._file.flush()
            os.fsync(self._file.fileno())
            return os.fstat(self._file.fileno()).st_size

    def close(self) -> None:
        # Closing flushes; on a full disk that fails too, and must not hide the error that stopped training.
        # Rows lost here lie after the last checkpoint, whose metrics position a resumed run truncates to.
        for closer in (self._file.close, self.tb.close):
            try:
                closer()
            except OSError:
                pass
