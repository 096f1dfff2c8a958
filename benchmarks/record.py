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
    """The command as run from the repository (``script`` and this process's arguments), the date and the time of
    day with its offset from UTC (timings depend on what else the machine was doing then), the machine, smose's
    version and the note of what else ran."""
    now = dt.datetime.now().astimezone()
    return {"command": f"python benchmarks/{script} " + shlex.join(sys.argv[1:]), "date": now.date().isoformat(),
            "time": now.timetz().isoformat(timespec="seconds"),
            "machine": f"{cpu_model()}, {platform.machine()}, {platform.system()}, {os.cpu_count()} CPUs",
            "smose": __version__, "note": note}


def write(out: Path, record: dict, markdown: str, echo: bool = True) -> None:
    """OUT.json and OUT.md, and (``echo``) the tables on standard output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    if echo:
        print(markdown)
