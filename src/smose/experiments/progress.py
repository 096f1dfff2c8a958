"""What a sweep shows while it runs: runs done, running and failed, and the aggregate steps/s of the running ones."""

from __future__ import annotations

import sys
import time
from collections import deque

from smose.experiments.grid import RunSpec
from smose.experiments.run_state import last_step


class Progress:
    """Runs done/running/failed and the aggregate steps/s of the running ones, read from their metrics.csv.

    A tqdm bar on a terminal; otherwise one plain line per finished run and a status line every minute.
    """

    RATE_WINDOW = 60.0  # seconds over which steps/s is measured

    def __init__(self, specs: list[RunSpec], stream=None):
        self.specs = {s.name: s for s in specs}
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = self.failed = 0
        self.running: set[str] = set()
        self.baseline: dict[str, int] = {}  # metrics.csv step when a run started (resumed runs do not count twice)
        self.counted = 0  # steps of runs that ended, counted from their baseline
        self.samples: deque[tuple[float, int]] = deque()
        self.last_line = 0.0
        self.bar = None
        if self.tty and specs:
            from tqdm import tqdm

            self.bar = tqdm(total=len(specs), unit="run", file=self.stream, dynamic_ncols=True, desc="sweep")

    def started(self, name: str) -> None:
        self.running.add(name)
        self.baseline[name] = last_step(self.specs[name].run_dir)

    def finished(self, name: str, ok: bool, message: str) -> None:
        self.running.discard(name)
        steps = self.specs[name].config.steps if ok else last_step(self.specs[name].run_dir)
        self.counted += max(0, steps - self.baseline.get(name, 0))
        self.done += ok
        self.failed += not ok
        line = f"{'finished' if ok else 'FAILED'} {name}{': ' + message if message else ''}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
            self.update()
            self.bar.update(1)
        else:
            self._print(line)
            self.update(force=True)

    def steps_per_second(self) -> float:
        now = time.monotonic()
        total = self.counted + sum(max(0, last_step(self.specs[n].run_dir) - self.baseline[n])
                                   for n in self.running)
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.RATE_WINDOW:
            self.samples.popleft()
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def status(self) -> str:
        return (f"{self.done}/{len(self.specs)} done, {len(self.running)} running, {self.failed} failed, "
                f"{self.steps_per_second():.0f} steps/s")

    def update(self, force: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.status().split(" done, ", 1)[1])
        elif force or time.monotonic() - self.last_line >= 60:
            self._print(self.status())

    def _print(self, line: str) -> None:
        self.last_line = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
