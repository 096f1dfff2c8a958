"""Sweeps: a grid of tasks × algorithms × seeds (× M × λ) trained as ordinary run directories, locally or on Ray.

``smose sweep --envs ... --algos ... --seeds 0-4 --steps N --out sweeps/NAME`` writes

    sweeps/NAME/sweep.json            the grid and the command that reproduces it
    sweeps/NAME/runs/<run name>/      one normal run directory per grid point (what `smose train` writes)
    sweeps/NAME/logs/<run name>.log   each run's stdout/stderr

Every run is a separate ``python -m smose train ... --threads 1 --quiet`` process: the sweep adds no training code
of its own, so a sweep run and a hand-started run with the same options are the same computation. The local backend
keeps ``--workers`` of them going (one per core by default); the Ray backend submits each as a Ray task needing one
CPU, which runs the same command on whichever node Ray picks (the ``--out`` directory must then be on a filesystem
all nodes share, at the same path).

With ``--distill DEPTH [--dagger ROUNDS]`` every SMOSE run also gets its router distilled into trees of that depth
(``smose distill``, after training in the same job; finished runs without such trees get a job of their own, first):
``trees/`` with the tree files, their rules and ``fidelity.json`` goes along with the export.

Re-running the same command skips finished runs (model.json and eval.json present, ``trained_steps == steps``, same
configuration) and resumes unfinished ones with ``smose train --resume`` when they have a checkpoint, or restarts
them. With ``--export DIR`` each finished run's small files are copied to ``DIR/<run name>/`` (``<run name>__1M``
and the like when a run with another budget or settings already has the name) and runs whose configuration is
already in DIR are taken from there instead of being trained: DIR is what gets committed, so a fresh checkout
re-running the sweep command continues where the committed results stop. Runs that stop short of their budget
(interrupted or failed) leave their config.json and metrics.csv in ``DIR/partial/``: how far they got.

A sweep holds a lock on its directory and on its ``--export`` directory, and every trainer on its run directory (see
smose.runlock): a second sweep on the same directory or exporting to the same directory refuses to start, and a run
another process is training is never deleted or resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gymnasium as gym

from smose import runlock
from smose.tasks import suites
from smose.training.checkpoint import checkpoint_path
from smose.training.config import TrainConfig, read_run_config
from smose.interpret.distill import FIDELITY_FILE, KIND_GROUPS, TREES_DIR, distill_settings, model_digest, stale_trees
from smose.tasks.envs import check_env, format_env_kwargs
from smose.interpret.oblique import DEFAULT_ITERATIONS
from smose.errors import SmoseError
from smose.algo.policy import ALGOS
from smose.serialization import LINEAR_EVAL_FILE, read_json, write_json
from smose.training.run_dir import clear_run_dir

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "smose-sweep"
SWEEP_FORMAT_VERSION = 1
RUNS_DIR = "runs"
LOGS_DIR = "logs"
# What a finished run contributes to the committed results: no replay buffers, checkpoints or TensorBoard files.
EXPORT_FILES = ("config.json", "metrics.csv", "eval.json", "model.json", "model.safetensors")
OPTIONAL_EXPORT_FILES = (LINEAR_EVAL_FILE,)  # copied with the others when a run has them
# Where unfinished runs are recorded in the export directory, and what of them.
PARTIAL_DIR = "partial"
PARTIAL_FILES = ("config.json", "metrics.csv")
# Algorithms whose router can be distilled into trees (--distill).
DISTILLABLE = ("smose",)
# Algorithms whose network depends on M (SAC-M and SAC-S are sized from it) and on λ.
USES_EXPERTS = ("smose", "sac-m", "sac-s")
USES_LB = ("smose",)
# TrainConfig fields a sweep may fix for all its runs (besides the grid axes).
SETTINGS = ("learning_starts", "eval_every", "eval_episodes", "batch_size")
# Fields that do not change what a run computes; ignored when deciding whether two runs are the same. The two update
# paths compute the same maths and differ only in rounding, as thread counts do; config.json files written before
# the field existed read as the default, "fused".
NON_RESULT_FIELDS = ("out", "threads", "checkpoint_every", "update")
DEFAULTS = TrainConfig()
MAX_SEEDS = 10_000  # per sweep; a typo such as 0-99999999 should not expand into a grid that never ends


# ---- grid ------------------------------------------------------------------------------------------------------------
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


def result_key(config: TrainConfig) -> str:
    """Two runs with the same key compute the same thing (up to the machine): the fields that affect the result,
    with λ as its effective value and the settings an algorithm ignores left out."""
    data = {k: v for k, v in config.to_dict().items() if k not in NON_RESULT_FIELDS}
    if not data["env_kwargs"]:  # runs from before --env-kwargs existed keep their keys
        del data["env_kwargs"]
    data["lb_weight"] = config.effective_lb_weight
    if config.algo not in USES_EXPERTS:
        data.pop("experts")
    if config.algo not in USES_LB:
        for name in ("lb_weight", "lb_loss", "lb_noise"):
            data.pop(name)
    return json.dumps(data, sort_keys=True)


# ---- sweep.json ------------------------------------------------------------------------------------------------------
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


# ---- the state of a run directory ------------------------------------------------------------------------------------
def finished_steps(run_dir: Path) -> int | None:
    """trained_steps of a run whose model and final evaluation are both written; None otherwise."""
    if not (run_dir / "eval.json").is_file() or not (run_dir / "model.json").is_file():
        return None
    try:
        steps = json.loads((run_dir / "model.json").read_text()).get("trained_steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None


def run_config(run_dir: Path) -> TrainConfig | None:
    try:
        return read_run_config(run_dir / "config.json")
    except SmoseError:
        return None


def is_finished(run_dir: Path, config: TrainConfig) -> bool:
    """The run in ``run_dir`` is complete and was trained with ``config`` (up to the non-result fields)."""
    found = run_config(run_dir)
    return (found is not None and result_key(found) == result_key(config)
            and finished_steps(run_dir) == config.steps == found.steps)


def can_resume(run_dir: Path) -> bool:
    """An unfinished run that holds a checkpoint for `smose train --resume`."""
    return checkpoint_path(run_dir).is_file()


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
                *(["--cma-iterations", str(self.cma_iterations)] if self._oblique() else [])]

    def _oblique(self) -> bool:
        return "oblique" in KIND_GROUPS.get(self.kind, (self.kind,))

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                        if f.name != "cma_iterations" or self._oblique())


def tree_settings(run_dir: Path) -> Distillation | None:
    """How the trees `smose distill` left in ``run_dir`` were made (from trees/fidelity.json); None without them,
    and None for stale trees (distilled from another model than the run's): they count as no trees, so they are
    distilled again and never exported."""
    try:
        settings = Distillation(**distill_settings(read_json(run_dir / TREES_DIR / FIDELITY_FILE,
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


# ---- export / import of the small files ------------------------------------------------------------------------------
def index_finished(directory: Path) -> dict[str, Path]:
    """result_key -> run directory for every finished run directly below ``directory`` (not the hidden ones: a
    copy in progress)."""
    index: dict[str, Path] = {}
    if not directory.is_dir():
        return index
    for run_dir in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config = run_config(run_dir)
        if config is not None and finished_steps(run_dir) == config.steps:
            index.setdefault(result_key(config), run_dir)
    return index


def copy_small_files(source: Path, target: Path, files: tuple[str, ...] = EXPORT_FILES + OPTIONAL_EXPORT_FILES,
                     trees: bool = True) -> None:
    """Copy ``files`` (and the distilled ``trees/``, if any and ``trees``) from one run directory to another, through
    a hidden temporary sibling and a rename, so a half-copied run never looks finished."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in files:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        if trees and tree_settings(source) is not None:
            _copy_trees(source / TREES_DIR, tmp / TREES_DIR)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SmoseError(f"{target}: cannot copy the run from {source} ({exc.strerror or exc})") from None


def _copy_trees(source: Path, target: Path) -> None:
    """The files of a trees/ directory (not subdirectories: there are none to copy)."""
    target.mkdir()
    for path in source.iterdir():
        if path.is_file():
            shutil.copy2(path, target / path.name)


def copy_trees(source_run: Path, target_run: Path) -> bool:
    """Give the finished run ``target_run`` the trees of ``source_run`` (the same configuration), replacing its own,
    if they were distilled from ``target_run``'s model: the same configuration trained twice (here and on another
    machine) need not give the same weights. Returns whether it copied them; through a hidden temporary directory
    and a rename, as copy_small_files."""
    try:
        if stale_trees(source_run, model_digest(target_run)) is not None:
            return False
    except SmoseError:  # an unreadable model: nothing the trees could be checked against
        return False
    tmp, target = target_run / f".{TREES_DIR}.tmp", target_run / TREES_DIR
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _copy_trees(source_run / TREES_DIR, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SmoseError(f"{target}: cannot copy the trees from {source_run} ({exc.strerror or exc})") from None
    return True


def steps_label(steps: int) -> str:
    """1000000 -> "1M", 100000 -> "100k", 1500 -> "1500"."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if steps % size == 0:
            return f"{steps // size}{unit}"
    return str(steps)


class Exporter:
    """Keeps DIR (the committed results) in step with the sweep: exports finished runs, imports known ones, records
    how far unfinished ones got in DIR/partial/."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.index = index_finished(directory) if directory is not None else {}

    def find(self, spec: RunSpec) -> Path | None:
        return self.index.get(result_key(spec.config))

    @staticmethod
    def target(parent: Path, spec: RunSpec) -> Path:
        """Where ``spec``'s files go below ``parent``: a directory named after the run, or holding the same
        configuration already. Run names do not carry the budget or the fixed settings, so when a run of another
        sweep has the name, the budget is added ("Hopper-v4__smose__1M__s0"), then a digest of the configuration."""
        key = result_key(spec.config)
        stem, seed = spec.name.rsplit("__", 1)
        budget = f"{stem}__{steps_label(spec.config.steps)}"
        for name in (spec.name, f"{budget}__{seed}",
                     f"{budget}__{hashlib.sha256(key.encode()).hexdigest()[:8]}__{seed}"):
            candidate = parent / name
            found = run_config(candidate) if candidate.exists() else None
            if not candidate.exists() or (found is not None and result_key(found) == key):
                return candidate
        raise SmoseError(f"{parent / spec.name}: this name and its alternatives hold other runs")

    def export(self, spec: RunSpec, trees: bool = True) -> None:
        """Copy a finished run to DIR, with its trees if ``trees``. When DIR holds the run already, only the trees
        may go there, and only if DIR has none: trees in DIR are never replaced (plan() refuses to make others)."""
        if self.directory is None:
            return
        known = self.find(spec)
        if known is not None:
            if trees and tree_settings(spec.run_dir) is not None and tree_settings(known) is None:
                copy_trees(spec.run_dir, known)  # not if DIR's model differs from the one trained here
            return
        target = self.target(self.directory, spec)
        if not is_finished(target, spec.config):  # else another sweep exported it since the index was made
            copy_small_files(spec.run_dir, target, trees=trees)
        self.index[result_key(spec.config)] = target
        partial = self.directory / PARTIAL_DIR
        if partial.is_dir():
            with contextlib.suppress(SmoseError):  # no record of progress is left for a finished run
                shutil.rmtree(self.target(partial, spec), ignore_errors=True)

    def export_partial(self, spec: RunSpec) -> None:
        """Record an unfinished run's config.json and metrics.csv (how far it got) in DIR/partial/. A run stopped
        before its first logged step has nothing to record (and keeps any record of an earlier attempt)."""
        if self.directory is None or last_step(spec.run_dir / "metrics.csv") == 0:
            return
        copy_small_files(spec.run_dir, self.target(self.directory / PARTIAL_DIR, spec), PARTIAL_FILES, trees=False)

    def exported_trees(self, spec: RunSpec) -> tuple[Path, Distillation] | None:
        """(the run's directory in DIR, how its trees there were made) when DIR has the run with trees."""
        known = self.find(spec)
        settings = tree_settings(known) if known is not None else None
        return (known, settings) if known is not None and settings is not None else None


# ---- running one run -------------------------------------------------------------------------------------------------
def train_command(config: TrainConfig) -> list[str]:
    """``python -m smose train`` with every option that differs from the default, one thread, no progress bar."""
    words = [sys.executable, "-m", "smose", "train"]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if value is None or value == f.default or f.name == "threads" or value == {}:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, dict):
            words += [flag, *format_env_kwargs(value)]
        elif isinstance(value, bool):
            words.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            words += [flag, format_float(value) if isinstance(value, float) else str(value)]
    return words + ["--threads", "1", "--quiet", "--force"]


def resume_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "smose", "train", "--resume", str(run_dir), "--quiet"]


def error_line(log_path: Path, returncode: int) -> str:
    """The line that says why a run failed: smose's one-line error, else the last line of the log (a traceback's)."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith("smose: error:"):
            return line
    if returncode < 0:
        return f"killed by signal {-returncode}"
    output = [line for line in lines if not line.startswith("$ ")]  # not the commands execute() echoes
    return output[-1] if output else f"exit status {returncode}"


# How the sweep asks a trainer to checkpoint and stop. Not SIGINT: Ray's workers block SIGINT, and a blocked signal
# stays blocked in the processes they start, so the trainer would never see it.
STOP_SIGNAL = signal.SIGTERM
_live: dict[int, subprocess.Popen] = {}  # processes started by execute() in this process, for interrupting them
_live_lock = threading.Lock()


def execute(commands: list[list[str]], log_path: str, cwd: str) -> Outcome:
    """Run a job's processes one after the other (training, then distilling), their output in ``log_path``, up to
    the first that fails; returns (exit status, error line or "", how many commands went through: the index of the
    one that failed).

    This is the whole job of a worker, on either backend. On a Ray node that cannot see the sweep directory it
    fails with a message saying so instead of training into a directory nobody will read. The commands' Python is
    this worker's own (``sys.executable``): on another node of a cluster the driver's may not exist.
    """
    log = Path(log_path)
    if not log.parent.is_dir() or not Path(cwd).is_dir():
        return -1, (f"{log.parent} is not visible on {socket.gethostname()}: the ray backend needs --out on a "
                    "filesystem shared by all nodes, at the same path"), 0
    with open(log, "w"):
        pass
    for done, command in enumerate(commands):
        returncode = _run_logged([sys.executable, *command[1:]], log, cwd)
        if returncode != 0:
            return returncode, error_line(log, returncode), done
    return 0, "", len(commands)


def _run_logged(command: list[str], log: Path, cwd: str) -> int:
    """One process of a job, its output appended to ``log``; its exit status."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as fh:
        fh.write("$ " + shlex.join(command) + "\n")
        fh.flush()
        # A session of its own: a Ctrl-C in the terminal reaches only the sweep, which forwards exactly one stop
        # signal (the trainer checkpoints and stops on the first; a second would abort it without a checkpoint).
        process = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                   start_new_session=True)
        with _live_lock:
            _live[process.pid] = process
        try:
            while True:  # short waits: Ray delivers a task's cancellation only while Python code runs
                try:
                    returncode = process.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:  # a cancelled Ray task: let the trainer stop cleanly (it checkpoints on SIGTERM)
            process.send_signal(STOP_SIGNAL)
            process.wait()
            raise
        finally:
            with _live_lock:
                _live.pop(process.pid, None)
    return returncode


def interrupt_live() -> None:
    """Forward an interrupt to the training processes this process started and wait for them to stop."""
    with _live_lock:
        processes = list(_live.values())
    for process in processes:
        if process.poll() is None:
            process.send_signal(STOP_SIGNAL)
    for process in processes:
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (a job scheduler or `kill` stopping the sweep) like Ctrl-C: the running trainers are asked to
    stop, which makes them write a checkpoint that the next run of the sweep resumes from."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- progress --------------------------------------------------------------------------------------------------------
def last_step(metrics_path: Path) -> int:
    """The step of the last row of a metrics.csv (0 if there is none yet); reads only the file's tail."""
    try:
        with open(metrics_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return 0
    for line in reversed(tail.splitlines()):
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return 0


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
        self.baseline[name] = last_step(self.specs[name].run_dir / "metrics.csv")

    def finished(self, name: str, ok: bool, message: str) -> None:
        self.running.discard(name)
        steps = self.specs[name].config.steps if ok else last_step(self.specs[name].run_dir / "metrics.csv")
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
        total = self.counted + sum(max(0, last_step(self.specs[n].run_dir / "metrics.csv") - self.baseline[n])
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


# ---- backends --------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    spec: RunSpec
    commands: list[list[str]]  # run one after the other by execute()
    log_path: Path
    trains: bool = True  # False: only distils a finished run

    @property
    def first_distill(self) -> int:
        """Index in ``commands`` of the first `smose distill`: after the training command of a job that trains."""
        return 1 if self.trains else 0


Outcome = tuple[int, str, int]  # exit status, error line or "", how many of the job's commands went through


def run_local(jobs: list[Job], workers: int, progress: Progress, on_done: Callable[[Job, Outcome], None]) -> None:
    """At most ``workers`` training processes at a time, each waited for by a thread of this process."""
    cwd = os.getcwd()
    queue = deque(jobs)
    futures: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        try:
            while queue or futures:
                while queue and len(futures) < workers:
                    job = queue.popleft()
                    progress.started(job.spec.name)
                    futures[pool.submit(execute, job.commands, str(job.log_path), cwd)] = job
                finished, _ = wait(futures, timeout=2.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    on_done(futures.pop(future), future.result())
                progress.update()
        except KeyboardInterrupt:
            interrupt_live()
            raise


def import_ray():
    try:
        import ray
    except ImportError:
        raise SmoseError("--backend ray needs Ray: pip install 'smose[ray]'") from None
    return ray


def check_reachable(address: str) -> None:
    """Fail in seconds on a Ray address nobody listens on (``ray.init`` keeps retrying for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise SmoseError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise SmoseError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})") from None


def run_ray(jobs: list[Job], workers: int | None, address: str | None, progress: Progress,
            on_done: Callable[[Job, Outcome], None]) -> None:
    """Each job is a Ray task needing one CPU. Uses the Ray instance already initialised in this process, else
    connects to ``address`` (or starts a local instance) and shuts it down at the end."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here and address is not None:
        check_reachable(address)
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise SmoseError(f"cannot connect to Ray at {address or 'a local instance'}: {exc}") from None
    task = ray.remote(num_cpus=1, max_retries=0)(execute)
    cwd = os.getcwd()
    queue = deque(jobs)
    pending: dict[Any, Job] = {}
    limit = workers or len(jobs)
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                job = queue.popleft()
                pending[task.remote(job.commands, str(job.log_path), cwd)] = job
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
            for ref in ready:
                job = pending.pop(ref)
                if job.spec.name not in progress.running:
                    progress.started(job.spec.name)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    outcome = (-1, f"ray task failed: {str(exc).strip().splitlines()[-1]}", 0)
                on_done(job, outcome)
            for job in pending.values():  # a task is running once its process has opened its log
                if job.spec.name not in progress.running and job.log_path.exists():
                    progress.started(job.spec.name)
            progress.update()
    except KeyboardInterrupt:
        for ref in pending:  # running tasks get a KeyboardInterrupt, which execute() forwards to the trainer
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=120)  # let them checkpoint before shutdown
        raise
    finally:
        if started_here:
            ray.shutdown()


# ---- the sweep -------------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    out: Path
    runs: list[RunSpec]
    skipped: list[str] = field(default_factory=list)  # finished before this call
    imported: list[str] = field(default_factory=list)  # copied from the export directory
    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    distilled: list[str] = field(default_factory=list)  # runs given trees by this call (--distill)
    failed: dict[str, str] = field(default_factory=dict)  # name -> error line
    seconds: float = 0.0

    def summary(self) -> str:
        distilled = f", {len(self.distilled)} distilled" if self.distilled else ""
        lines = [f"sweep {self.out}: {len(self.runs)} runs: {len(self.skipped)} already finished, "
                 f"{len(self.imported)} taken from the export directory, {len(self.trained)} trained "
                 f"({len(self.resumed)} of them resumed){distilled}, {len(self.failed)} failed, "
                 f"in {self.seconds:.0f} s"]
        if self.failed:
            lines.append("failed runs (logs in " + str(self.out / LOGS_DIR) + "):")
            lines += [f"  {name}: {message}" for name, message in self.failed.items()]
        return "\n".join(lines)


def run_sweep(grid: Grid, out: Path, backend: str = "local", workers: int | None = None,
              address: str | None = None, export: Path | None = None, stream=None,
              distill: Distillation | None = None) -> SweepResult:
    """Train every unfinished run of ``grid`` into ``out`` (and distil the SMOSE ones as ``distill`` says); one
    failing run never stops the others."""
    if backend not in ("local", "ray"):
        raise SmoseError(f"unknown --backend {backend!r}; expected local or ray")
    if workers is not None and workers < 1:
        raise SmoseError(f"--workers must be positive, got {workers}")
    if address is not None and backend != "ray":
        raise SmoseError("--address is for --backend ray")
    if backend == "ray":
        import_ray()  # before anything is written
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SmoseError(f"{out}: exists and is not a directory")
    if grid.env_kwargs:  # an argument some env refuses is reported before anything is written
        for env in grid.envs:
            check_env(env, dict(grid.env_kwargs))
    started = time.monotonic()
    specs = expand(grid, out)
    for directory, what in ((out, "sweep"), (export, "export")):  # refused before anything is created
        if directory is not None and Path(directory).exists() and not Path(directory).is_dir():
            raise SmoseError(f"{directory}: cannot create the {what} directory (a file of that name exists)")
    try:
        (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
        (out / LOGS_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise SmoseError(f"{out}: cannot create the sweep directory ({exc.strerror})") from None
    with contextlib.ExitStack() as locks:
        locks.enter_context(runlock.hold(out, "sweep"))
        if export is not None:  # two sweeps exporting to one directory would copy over each other's runs
            export = Path(export)
            try:
                export.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SmoseError(f"{export}: cannot create the export directory ({exc.strerror})") from None
            if export.resolve() != out.resolve():  # a second lock on the same file would fail in this very process
                locks.enter_context(runlock.hold(export, "sweep"))
        write_sweep_file(grid, out, export, distill)
        exporter = Exporter(Path(export) if export is not None else None)
        result = SweepResult(out, specs)
        jobs = plan(specs, exporter, result, distill)
        execute_jobs(jobs, exporter, result, backend, workers, address, stream, distill)
    result.seconds = time.monotonic() - started
    return result


def plan(specs: list[RunSpec], exporter: Exporter, result: SweepResult,
         distill: Distillation | None = None) -> list[Job]:
    """Decide for every run: skip (finished), import (in the export directory), resume, or train from scratch, and
    whether it needs distilling. Records the first two and refusals in ``result``; returns the jobs to run, the
    distil-only ones (seconds each) before the training ones (minutes to hours)."""
    distill_jobs: list[Job] = []
    jobs: list[Job] = []

    def add_distill_job(spec: RunSpec) -> None:
        """A finished run without the trees asked for gets them from the export directory if it has them, else a
        job. Trees the export directory holds are committed results: other trees are not made over them."""
        if distill is None or spec.config.algo not in DISTILLABLE:
            return
        exported = exporter.exported_trees(spec)
        if exported is not None and exported[1] != distill:
            result.failed[spec.name] = (f"{exported[0] / TREES_DIR} holds trees made with {exported[1].describe()}, "
                                        f"not {distill.describe()}; remove it to replace them")
            return
        if not trees_wanted(spec, distill):
            return
        if exported is not None:
            try:
                if copy_trees(exported[0], spec.run_dir):
                    return
            except SmoseError as exc:
                result.failed[spec.name] = str(exc)
                return
            # The exported trees describe the exported model, not the one trained here: distil this one.
        log_path = result.out / LOGS_DIR / f"{spec.name}.distill.log"
        log_path.unlink(missing_ok=True)
        distill_jobs.append(Job(spec, [distill.command(spec.run_dir)], log_path, trains=False))

    for spec in specs:
        run_dir = spec.run_dir
        if runlock.is_held(run_dir):
            result.failed[spec.name] = f"{run_dir} is being trained by {runlock.holder(run_dir)}; left alone"
            continue
        found = run_config(run_dir)
        if is_finished(run_dir, spec.config):
            result.skipped.append(spec.name)
            try:
                exporter.export(spec, trees_to_export(spec, distill))
            except SmoseError as exc:
                result.failed[spec.name] = f"finished, but not exported: {exc}"
                continue
            add_distill_job(spec)
            continue
        if found is not None and finished_steps(run_dir) == found.steps:
            result.failed[spec.name] = (f"{run_dir} holds a finished run with another configuration; "
                                        "move it away or use another --out")
            continue
        if found is None and any((run_dir / name).exists() for name in ("model.json", "eval.json")):
            result.failed[spec.name] = (f"{run_dir} holds a model whose config.json cannot be read; "
                                        "move it away or use another --out")
            continue
        source = exporter.find(spec)
        if source is not None:
            try:
                copy_small_files(source, run_dir)
                result.imported.append(spec.name)
            except SmoseError as exc:
                result.failed[spec.name] = str(exc)
                continue
            add_distill_job(spec)
            continue
        log_path = result.out / LOGS_DIR / f"{spec.name}.log"
        log_path.unlink(missing_ok=True)
        then = [distill.command(run_dir)] if distill is not None and spec.config.algo in DISTILLABLE else []
        if found is not None and result_key(found) == result_key(spec.config) and can_resume(run_dir):
            jobs.append(Job(spec, [resume_command(run_dir), *then], log_path))
            result.resumed.append(spec.name)
        else:
            try:  # a partial run or another configuration's: its metrics.csv would be appended to
                clear_run_dir(run_dir)
            except SmoseError as exc:
                result.failed[spec.name] = str(exc)
                continue
            jobs.append(Job(spec, [train_command(spec.config), *then], log_path))
    return distill_jobs + jobs


def trees_summary(run_dir: Path) -> str:
    """"trees depth 3: agreement 94.4% (closed loop 90.2%), return ratio 0.85" from a run's trees/fidelity.json
    (its per-expert trees)."""
    try:
        data = read_json(run_dir / TREES_DIR / FIDELITY_FILE, "fidelity summary")
        trees = data["per-expert"]
        ratio = data["returns"]["ratio"]["per-expert"]
        return (f"trees depth {data['depth']}: agreement {100 * trees['agreement']:.1f}% (closed loop "
                f"{100 * trees['closed_loop_agreement']:.1f}%), return ratio "
                + ("n/a" if ratio is None else f"{ratio:.2f}"))
    except (SmoseError, KeyError, TypeError, ValueError):
        return "trees written"


def execute_jobs(jobs: list[Job], exporter: Exporter, result: SweepResult, backend: str, workers: int | None,
                 address: str | None, stream, distill: Distillation | None = None) -> None:
    """Run the jobs on the backend, exporting each finished run (with its trees); on the way out (done, failed or
    interrupted) the runs that stopped short are recorded as partial."""
    progress = Progress([job.spec for job in jobs], stream)

    def on_done(job: Job, outcome: Outcome) -> None:
        returncode, message, went_through = outcome
        spec = job.spec
        finished = is_finished(spec.run_dir, spec.config)
        if returncode == 0 and not finished:
            message = "the process exited normally but the run directory is not complete"
        wants_trees = distill is not None and spec.config.algo in DISTILLABLE
        has_trees = wants_trees and tree_settings(spec.run_dir) == distill
        if returncode == 0 and finished and wants_trees and not has_trees:
            returncode, message, went_through = 1, "smose distill exited normally but wrote no trees", job.first_distill
        ok = returncode == 0 and finished
        if finished and returncode != 0:  # the run is complete all the same: keep it, and say what failed after
            failed = "distilling" if went_through >= job.first_distill else "the training process"
            message = f"{'trained' if job.trains else 'finished'}, but {failed} failed: {message}"
        if finished:
            try:
                exporter.export(spec, trees_to_export(spec, distill))
            except SmoseError as exc:
                ok, message = False, f"{'trained' if job.trains else 'finished'}, but not exported: {exc}"
            if job.trains:
                result.trained.append(spec.name)
            if has_trees:
                result.distilled.append(spec.name)
        elif spec.name in result.resumed:
            result.resumed.remove(spec.name)
        if ok:
            parts = [f"eval {read_json(spec.run_dir / 'eval.json', 'evaluation').get('mean', float('nan')):.2f}"
                     ] if job.trains else []
            message = "; ".join(parts + ([trees_summary(spec.run_dir)] if has_trees else []))
        else:
            result.failed[spec.name] = message
        progress.finished(spec.name, ok, message)

    try:
        with terminate_as_interrupt():
            if jobs and backend == "local":
                run_local(jobs, workers or os.cpu_count() or 1, progress, on_done)
            elif jobs:
                run_ray(jobs, workers, address, progress, on_done)
    except KeyboardInterrupt:
        progress.close()
        print("smose: sweep interrupted; the running trainers were asked to stop and write a checkpoint. "
              "Run the same command again to resume them.", file=progress.stream)
        raise
    finally:
        progress.close()
        for job in jobs:
            if not is_finished(job.spec.run_dir, job.spec.config):
                with contextlib.suppress(SmoseError):  # a record of progress must not hide the real outcome
                    exporter.export_partial(job.spec)
