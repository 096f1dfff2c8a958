"""What a sweep trains: the grid of tasks × algorithms × seeds (× M × λ), the run each grid point becomes and its
name, and sweep.json, the grid's record in the sweep directory.

The grid expands seed-major into one ``RunSpec`` per run: its name (``<env>__<algo>[__M<m>][__lb<λ>]__s<seed>``) and
the TrainConfig that `smose train` gets for it. sweep.json keeps the grid and the command that reproduces it, and
refuses a later grid that would give the runs already there another meaning.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import gymnasium as gym

from smose.algo.policy import ALGOS
from smose.errors import SmoseError
from smose.experiments.run_state import USES_EXPERTS, USES_LB, result_key
from smose.serialization import read_json, write_json
from smose.tasks import suites
from smose.tasks.envs import format_env_kwargs
from smose.training.config import TrainConfig

if TYPE_CHECKING:
    from smose.experiments.distillation import Distillation

# The sweep directory: sweep.json beside runs/ (one run directory per grid point).
SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "smose-sweep"
SWEEP_FORMAT_VERSION = 1
RUNS_DIR = "runs"
# TrainConfig fields a sweep may fix for all its runs (besides the grid axes).
SETTINGS = ("learning_starts", "eval_every", "eval_episodes", "batch_size")
DEFAULTS = TrainConfig()
MAX_SEEDS = 10_000  # per sweep; a typo such as 0-99999999 should not expand into a grid that never ends


def parse_seeds(text: str) -> tuple[int, ...]:
    """"0-4" -> (0, 1, 2, 3, 4); "0,2,7" and "0-2,9" work too. Order is kept, duplicates dropped."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-"))
                if high < low:
                    raise ValueError
                if high - low >= MAX_SEEDS:
                    raise SmoseError(f"--seeds {part}: more than {MAX_SEEDS} seeds")
                seeds.extend(range(low, high + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise SmoseError(f"--seeds: cannot read {part!r}; expected e.g. 0-4 or 0,1,2") from None
    if any(s < 0 for s in seeds):
        raise SmoseError("--seeds must be >= 0")
    if len(seeds) > MAX_SEEDS:
        raise SmoseError(f"--seeds: more than {MAX_SEEDS} seeds")
    return tuple(dict.fromkeys(seeds))


def format_seeds(seeds: Iterable[int]) -> str:
    """The shortest text parse_seeds reads back: consecutive seeds become ranges."""
    parts, values = [], list(seeds)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(parts)


def parse_list(text: str, kind: Callable[[str], Any], option: str) -> tuple:
    try:
        values = tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise SmoseError(f"{option}: cannot read {text!r}; expected a comma-separated list") from None
    if not values:
        raise SmoseError(f"{option}: empty list")
    return tuple(dict.fromkeys(values))


def format_float(value: float) -> str:
    """0.1 -> "0.1", 1.0 -> "1", 0.0 -> "0": short, exact enough to tell grid values apart, float() reads it back."""
    return format(float(value), ".12g")


@dataclass(frozen=True)
class Grid:
    """What a sweep trains. ``experts``/``lb_weights`` hold the M and λ values (one value: a fixed setting)."""

    envs: tuple[str, ...]
    algos: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    experts: tuple[int, ...] = (DEFAULTS.experts,)
    lb_weights: tuple[float, ...] = (DEFAULTS.effective_lb_weight,)
    settings: tuple[tuple[str, int], ...] = ()  # (field, value) pairs of SETTINGS given on the command line
    env_kwargs: tuple[tuple[str, Any], ...] = ()  # --env-kwargs of every run, sorted by key

    def __post_init__(self) -> None:
        for name in ("envs", "algos", "seeds", "experts", "lb_weights"):
            if not getattr(self, name):
                raise SmoseError(f"the sweep grid needs at least one value for {name}")
        for env in self.envs:
            suites.register(env)  # a suite's ids exist once its package is imported
            if env not in gym.registry:
                raise SmoseError(f"unknown environment {env!r} in --envs")
            if "__" in env:
                raise SmoseError(f"environment id {env!r} contains '__', which separates the parts of run names")
        for algo in self.algos:
            if algo not in ALGOS:
                raise SmoseError(f"unknown algorithm {algo!r} in --algos; expected some of {','.join(ALGOS)}")
        unknown = [name for name, _ in self.settings if name not in SETTINGS]
        if unknown:
            raise SmoseError(f"not a sweep setting: {', '.join(unknown)}")

    @property
    def name_axes(self) -> tuple[str, ...]:
        """The axes named in run names besides env, algo and seed: M and λ when the grid varies them."""
        return tuple(axis for axis, values in (("experts", self.experts), ("lb_weight", self.lb_weights))
                     if len(values) > 1)

    def effective_settings(self) -> dict[str, int]:
        return {name: dict(self.settings).get(name, getattr(DEFAULTS, name)) for name in SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        data = {"envs": list(self.envs), "algos": list(self.algos), "seeds": list(self.seeds), "steps": self.steps,
                "experts": list(self.experts), "lb_weights": list(self.lb_weights), "settings": dict(self.settings)}
        return data | ({"env_kwargs": dict(self.env_kwargs)} if self.env_kwargs else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        return cls(envs=tuple(data["envs"]), algos=tuple(data["algos"]), seeds=tuple(data["seeds"]),
                   steps=int(data["steps"]), experts=tuple(data["experts"]),
                   lb_weights=tuple(float(x) for x in data["lb_weights"]),
                   settings=tuple(sorted(data.get("settings", {}).items())),
                   env_kwargs=tuple(sorted(data.get("env_kwargs", {}).items())))

    def command(self, out: Path, export: Path | None = None, distill: Distillation | None = None) -> str:
        """The `smose sweep` command line that expands to this grid (exports to ``export``, distils as ``distill``)."""
        words = ["smose", "sweep", "--envs", ",".join(self.envs), "--algos", ",".join(self.algos),
                 "--seeds", format_seeds(self.seeds), "--steps", str(self.steps)]
        if self.experts != (DEFAULTS.experts,):
            words += ["--experts", ",".join(map(str, self.experts))]
        if self.lb_weights != (DEFAULTS.effective_lb_weight,):
            words += ["--lb-weight", ",".join(map(format_float, self.lb_weights))]
        for name, value in self.settings:
            words += ["--" + name.replace("_", "-"), str(value)]
        if self.env_kwargs:
            words += ["--env-kwargs", *format_env_kwargs(dict(self.env_kwargs))]
        words += ["--out", str(out)]
        if export is not None:
            words += ["--export", str(export)]
        return shlex.join(words + (distill.options() if distill is not None else []))


def run_name(env: str, algo: str, seed: int, experts: int | None = None, lb_weight: float | None = None) -> str:
    """``<env>__<algo>[__M<m>][__lb<λ>]__s<seed>``; a '/' of a namespaced env id becomes '~' (``env`` may be a
    suites.env_label, which names the task of an id that takes one as an argument)."""
    parts = [env.replace("/", "~"), algo]
    if experts is not None:
        parts.append(f"M{experts}")
    if lb_weight is not None:
        parts.append(f"lb{format_float(lb_weight)}")
    return "__".join(parts + [f"s{seed}"])


@dataclass
class RunSpec:
    name: str
    config: TrainConfig  # config.out is the run directory

    @property
    def run_dir(self) -> Path:
        return Path(str(self.config.out))


def expand(grid: Grid, out: Path) -> list[RunSpec]:
    """All runs of the grid, seed-major (every configuration gets seed 0 before any gets seed 1, so a sweep cut
    short still covers the whole grid). M is applied only where it changes the network (not SAC-L) and λ only to
    SMOSE; the other algorithms get the defaults, so they are not repeated per M or λ."""
    names = grid.name_axes
    runs: dict[str, RunSpec] = {}
    for seed in grid.seeds:
        for env in grid.envs:
            for algo in grid.algos:
                for experts in grid.experts if algo in USES_EXPERTS else (DEFAULTS.experts,):
                    for lb in grid.lb_weights if algo in USES_LB else (DEFAULTS.effective_lb_weight,):
                        name = run_name(suites.env_label(env, dict(grid.env_kwargs)), algo, seed,
                                        experts if "experts" in names and algo in USES_EXPERTS else None,
                                        lb if "lb_weight" in names and algo in USES_LB else None)
                        lb_weight = None if lb == DEFAULTS.effective_lb_weight else lb
                        config = TrainConfig(env=env, algo=algo, seed=seed, steps=grid.steps, experts=experts,
                                             lb_weight=lb_weight, threads=1, out=str(out / RUNS_DIR / name),
                                             env_kwargs=dict(grid.env_kwargs),
                                             **dict(grid.settings))
                        if name in runs and result_key(runs[name].config) != result_key(config):
                            raise SmoseError(f"two grid points get the run name {name!r}: give values that differ "
                                             "in their first 12 significant digits")
                        runs.setdefault(name, RunSpec(name, config))
    return list(runs.values())


def check_compatible(old: Grid, new: Grid, path: Path) -> None:
    """A sweep directory may grow (more envs, algos and seeds; more M or λ values where the grid already varies
    them) but its runs must keep their meaning and names: same steps and settings, same named axes, same fixed M/λ."""
    problems = []
    if old.steps != new.steps:
        problems.append(f"--steps {old.steps} before, {new.steps} now")
    if old.effective_settings() != new.effective_settings():
        before, now = old.effective_settings(), new.effective_settings()
        problems += [f"--{k.replace('_', '-')} {before[k]} before, {now[k]} now"
                     for k in SETTINGS if before[k] != now[k]]
    if old.env_kwargs != new.env_kwargs:
        problems.append(f"--env-kwargs {' '.join(format_env_kwargs(dict(old.env_kwargs))) or '(none)'} before, "
                        f"{' '.join(format_env_kwargs(dict(new.env_kwargs))) or '(none)'} now")
    if old.name_axes != new.name_axes:
        problems.append(f"run names vary {list(old.name_axes) or 'no'} axes before, {list(new.name_axes) or 'no'} now")
    for axis, label in (("experts", "--experts"), ("lb_weights", "--lb-weight")):
        before, now = getattr(old, axis), getattr(new, axis)
        if len(before) == 1 and len(now) == 1 and before != now:
            problems.append(f"{label} {before[0]} before, {now[0]} now")
    if problems:
        raise SmoseError(f"{path}: this directory holds a different sweep ({'; '.join(problems)}); "
                         "use another --out")


def write_sweep_file(grid: Grid, out: Path, export: Path | None = None,
                     distill: Distillation | None = None) -> None:
    """Create or update sweep.json, refusing a grid that does not fit the runs already there."""
    path = out / SWEEP_FILE
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    created = now
    if path.exists():
        data = read_json(path, "sweep description")
        if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT or "grid" not in data:
            raise SmoseError(f"{path}: not a smose sweep description")
        if data.get("format_version") != SWEEP_FORMAT_VERSION:
            raise SmoseError(f"{path}: sweep format version {data.get('format_version')!r} is not supported")
        try:
            old = Grid.from_dict(data["grid"])
        except (KeyError, TypeError, ValueError):
            raise SmoseError(f"{path}: invalid sweep grid") from None
        check_compatible(old, grid, path)
        created = data.get("created", now)
    write_json(path, {"format": SWEEP_FORMAT, "format_version": SWEEP_FORMAT_VERSION,
                      "command": grid.command(out, export, distill),
                      "grid": grid.to_dict(), "name_axes": list(grid.name_axes), "created": created, "updated": now})
