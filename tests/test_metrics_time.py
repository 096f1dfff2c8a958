"""metrics.csv's time column: wall-clock seconds of training, continued over resumed sessions, and files written
before the column existed keep their own columns when a run resumes."""

import csv

from smose.run import TIME_COLUMN
from smose.training.logger import RunLogger


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_time_column_grows_and_continues_after_a_resume(tmp_path):
    logger = RunLogger(tmp_path, n_experts=2)
    logger.row({"step": 10, "event": "episode", "episodic_return": 1.0})
    logger.row({"step": 20, "event": "eval", "eval_return_mean": 2.0})
    size = logger.sync()
    logger.close()
    first = read_rows(tmp_path / "metrics.csv")
    assert [float(r[TIME_COLUMN]) for r in first] == sorted(float(r[TIME_COLUMN]) for r in first)

    # a resumed session: the clock starts again from the last logged time, not from zero
    resumed = RunLogger(tmp_path, n_experts=2, resume_step=20, metrics_bytes=size)
    assert resumed.time_offset == float(first[-1][TIME_COLUMN])
    resumed.time_offset += 1000.0  # as if the first session had lasted 1000 s more
    resumed.row({"step": 30, "event": "episode", "episodic_return": 3.0})
    resumed.close()
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == ["10", "20", "30"]
    assert float(rows[2][TIME_COLUMN]) >= 1000.0


def test_a_file_without_the_time_column_keeps_its_columns_on_resume(tmp_path):
    old_columns = ["step", "event", "episodic_return", "sps", "usage_0", "usage_1"]
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(old_columns)
        writer.writerow(["10", "episode", "1.5", "100", "0.5", "0.5"])
    logger = RunLogger(tmp_path, n_experts=2, resume_step=10, metrics_bytes=path.stat().st_size)
    logger.row({"step": 20, "event": "episode", "episodic_return": 2.5, "sps": 90.0, "usage_0": 1.0,
                "usage_1": 0.0})
    logger.close()
    with open(path, newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == old_columns and all(len(line) == len(old_columns) for line in lines)
    assert lines[2] == ["20", "episode", "2.5", "90", "1", "0"]
