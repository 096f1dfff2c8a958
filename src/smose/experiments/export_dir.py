"""The export directory (``smose sweep --export DIR``): the committed results, kept in step with the sweep.

Each finished run's small files go to ``DIR/<run name>/`` (no replay buffers, checkpoints or TensorBoard files), with
its trees when they are the ones asked for; runs DIR already holds are imported from it instead of being trained;
runs that stop short of their budget leave their config.json and metrics.csv in ``DIR/partial/``. Copies go through a
hidden temporary directory and a rename, so a half-copied run never looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from smose.errors import SmoseError
from smose.experiments.distillation import Distillation, tree_settings
from smose.experiments.grid import RunSpec
from smose.experiments.run_state import finished_steps, is_finished, last_step, result_key, run_config
from smose.interpret.distill import model_digest, stale_trees
from smose.run import CONFIG_FILE, EVAL_FILE, LINEAR_EVAL_FILE, METRICS_FILE, MODEL_META, MODEL_WEIGHTS, TREES_DIR

# What a finished run contributes to the committed results: no replay buffers, checkpoints or TensorBoard files.
EXPORT_FILES = (CONFIG_FILE, METRICS_FILE, EVAL_FILE, MODEL_META, MODEL_WEIGHTS)
OPTIONAL_EXPORT_FILES = (LINEAR_EVAL_FILE,)  # copied with the others when a run has them
# Where unfinished runs are recorded in the export directory, and what of them.
PARTIAL_DIR = "partial"
PARTIAL_FILES = (CONFIG_FILE, METRICS_FILE)


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
        if self.directory is None or last_step(spec.run_dir) == 0:
            return
        copy_small_files(spec.run_dir, self.target(self.directory / PARTIAL_DIR, spec), PARTIAL_FILES, trees=False)

    def exported_trees(self, spec: RunSpec) -> tuple[Path, Distillation] | None:
        """(the run's directory in DIR, how its trees there were made) when DIR has the run with trees."""
        known = self.find(spec)
        settings = tree_settings(known) if known is not None else None
        return (known, settings) if known is not None and settings is not None else None
