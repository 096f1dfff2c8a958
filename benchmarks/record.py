"""What every benchmark record starts with, and how it is written: OUT.json (every number) and OUT.md (the tables)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from smose import __version__
from smose.experiments.bench import cpu_model


def header(script: str, note: str) -> dict:
    """The command as run (``script`` and this process's arguments), the date, the machine, smose's version and the
    note of what else ran."""
    return {"command": f"python benchmarks/{script} " + shlex.join(sys.argv[1:]), "date": dt.date.today().isoformat(),
            "machine": f"{cpu_model()}, {platform.machine()}, {platform.system()}, {os.cpu_count()} CPUs",
            "smose": __version__,
            "note": note}


def time_of_day() -> str:
    """The local time and its offset from UTC (``03:56:28+00:00``), beside header()'s date, for the records whose
    numbers depend on what else the machine was doing at the time."""
    return dt.datetime.now().astimezone().timetz().isoformat(timespec="seconds")


def write(out: Path, record: dict, markdown: str) -> None:
    """OUT.json and OUT.md, and the table on standard output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
