"""Running the `smose` command line from a benchmark script, the way a user does: one place for how it is called
and how a failure is reported."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

from smose.errors import SmoseError


def run_smose(*argv: str) -> float:
    """Run ``python -m smose ARGV`` with this interpreter (its output discarded); return its wall-clock seconds.

    Raises SmoseError naming the command and the last line of its error output when it exits non-zero."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "smose", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise SmoseError(f"smose {shlex.join(argv)} failed: {last[0]}")
    return time.perf_counter() - started
