"""What every benchmark record starts with, and how it is written: OUT.json (every number) and OUT.md (the tables)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import smose
from smose.experiments.bench import cpu_model

BENCHMARKS = Path(__file__).resolve().parent


def git(directory: Path, *words: str) -> str | None:
    """``git -C directory WORDS``'s output, or None where it fails (not a checkout, no git here)."""
    try:
        done = subprocess.run(["git", "-C", str(directory), *words], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):  # no git here
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(directory: Path, *paths: str) -> tuple[str, bool] | None:
    """The short commit of the git checkout holding ``directory`` and whether its tracked files (those under
    ``paths``, git pathspecs relative to ``directory``, when given) differ from it; None where git cannot say."""
    commit = git(directory, "rev-parse", "--short", "HEAD")
    changed = git(directory, "status", "--porcelain", "--untracked-files=no", *(("--", *paths) if paths else ()))
    return None if commit is None or changed is None else (commit, bool(changed))


def code_version(package_dir: Path = Path(smose.__file__).parent, benchmarks_dir: Path = BENCHMARKS) -> str:
    """smose's version and, when the package is imported from a git checkout, the commit it is at ("0.1.0 at
    276e3c8"), which code measured; "+ uncommitted changes" when the package's tracked files, or the benchmarks'
    scripts (``benchmarks_dir``'s Python files) in the same checkout, differ from it. Other files do not count: the
    results and docs written beside a benchmark (benchmarks/results holds no code) are not the code that measured."""
    # a package the checkout does not track (a wheel installed in a venv inside it) is not at its commit
    if git(package_dir, "ls-files", "--error-unmatch", "__init__.py") is None:
        return smose.__version__
    # the benchmarks' pathspec fails where they are not in the package's checkout: the package alone then
    state = git_state(package_dir, ".", f"{benchmarks_dir}/*.py") or git_state(package_dir, ".")
    if state is None:
        return smose.__version__
    commit, changed = state
    return f"{smose.__version__} at {commit}" + (" + uncommitted changes" if changed else "")


def header(script: str, note: str) -> dict:
    """The command as run from the repository (``script`` and this process's arguments), the date and the time of
    day with its offset from UTC (timings depend on what else the machine was doing then), the machine, smose's
    version with the commit it was imported from (code_version) and the note of what else ran."""
    now = dt.datetime.now().astimezone()
    return {"command": f"python benchmarks/{script} " + shlex.join(sys.argv[1:]), "date": now.date().isoformat(),
            "time": now.timetz().isoformat(timespec="seconds"),
            "machine": f"{cpu_model()}, {platform.machine()}, {platform.system()}, {os.cpu_count()} CPUs",
            "smose": code_version(), "note": note}


def write(out: Path, record: dict, markdown: str, echo: bool = True) -> None:
    """OUT.json and OUT.md, and (``echo``) the tables on standard output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    if echo:
        print(markdown)
