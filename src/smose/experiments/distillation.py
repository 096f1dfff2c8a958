"""The trees a sweep asks for (``--distill DEPTH [--dagger ROUNDS]``): how `smose distill` is to make them, how the
trees a run holds were made, and which runs need (or may export) trees.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smose.choices import kinds_of
from smose.errors import SmoseError
from smose.interpret.distill import distill_settings, stale_trees
from smose.interpret.oblique import CMA_DEFAULT_START, DEFAULT_ITERATIONS
from smose.run import RunDir
from smose.serialization import read_json

if TYPE_CHECKING:
    from smose.experiments.grid import RunSpec

# Algorithms whose router can be distilled into trees (--distill).
DISTILLABLE = ("smose",)


@dataclass(frozen=True)
class Distillation:
    """How trees were (or are to be) made by `smose distill`. A sweep sets depth and DAgger rounds (--distill,
    --dagger) and keeps the rest at these values; trees made any other way (by hand, by `smose explain`) differ."""

    depth: int
    dagger: int = 0
    kind: str = "both"
    episodes: int = 20
    eval_episodes: int = 10
    seed: int = 0
    mode: str = "gated"
    cma_iterations: int = DEFAULT_ITERATIONS  # only used by oblique trees, which sweeps do not make
    cma_start: str = CMA_DEFAULT_START  # likewise

    def __post_init__(self) -> None:
        for name, value, low in (("--distill", self.depth, 1), ("--dagger", self.dagger, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise SmoseError(f"{name} must be an integer >= {low}, got {value!r}")

    def options(self) -> list[str]:
        """The options of `smose sweep` that ask for this."""
        return ["--distill", str(self.depth)] + (["--dagger", str(self.dagger)] if self.dagger else [])

    def command(self, run_dir: Path) -> list[str]:
        """The `smose distill` command, every setting spelled out (independent of that command's defaults)."""
        return [sys.executable, "-m", "smose", "distill", str(run_dir), "--depth", str(self.depth),
                "--dagger", str(self.dagger), "--kind", self.kind, "--episodes", str(self.episodes),
                "--eval-episodes", str(self.eval_episodes), "--seed", str(self.seed), "--mode", self.mode,
                *(["--cma-iterations", str(self.cma_iterations), "--cma-start", self.cma_start]
                  if self._oblique() else [])]

    def _oblique(self) -> bool:
        return "oblique" in kinds_of(self.kind)

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                        if not f.name.startswith("cma_") or self._oblique())


def tree_settings(run_dir: Path) -> Distillation | None:
    """How the trees `smose distill` left in ``run_dir`` were made (from trees/fidelity.json); None without them,
    and None for stale trees (distilled from another model than the run's): they count as no trees, so they are
    distilled again and never exported."""
    try:
        settings = Distillation(**distill_settings(read_json(RunDir(run_dir).fidelity,
                                                             "tree fidelity summary")))
        return settings if stale_trees(run_dir) is None else None
    except (SmoseError, TypeError, KeyError, AttributeError):
        return None


def trees_wanted(spec: RunSpec, distill: Distillation | None) -> bool:
    """The sweep asks for trees and this run has none made that way yet."""
    return distill is not None and spec.config.algo in DISTILLABLE and tree_settings(spec.run_dir) != distill


def trees_to_export(spec: RunSpec, distill: Distillation | None) -> bool:
    """Whether a run's trees go to the export directory with it: any trees when the sweep does not distil, else
    only the ones it asks for (others would be taken for them)."""
    return distill is None or tree_settings(spec.run_dir) == distill


def trees_summary(run_dir: Path) -> str:
    """"trees depth 3: agreement 94.4% (closed loop 90.2%), return ratio 0.85" from a run's trees/fidelity.json
    (its per-expert trees)."""
    try:
        data = read_json(RunDir(run_dir).fidelity, "fidelity summary")
        trees = data["per-expert"]
        ratio = data["returns"]["ratio"]["per-expert"]
        return (f"trees depth {data['depth']}: agreement {100 * trees['agreement']:.1f}% (closed loop "
                f"{100 * trees['closed_loop_agreement']:.1f}%), return ratio "
                + ("n/a" if ratio is None else f"{ratio:.2f}"))
    except (SmoseError, KeyError, TypeError, ValueError):
        return "trees written"
