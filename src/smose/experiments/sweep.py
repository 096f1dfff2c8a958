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

This module ties the parts together: ``run_sweep`` expands the grid (grid.py), ``plan`` decides for every run what it
needs from the state of its directory (run_state.py), the export directory (export_dir.py) and the trees asked for
(distillation.py), and ``execute_jobs`` runs the resulting jobs (jobs.py) on a backend (backends.py), showing
progress (progress.py) and exporting each run as it finishes.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from smose import runlock
from smose.errors import SmoseError

# Re-exported, so that every part of a sweep can be imported from here whichever module defines it.
from smose.experiments.backends import (
    check_reachable,  # noqa: F401
    import_ray,
    run_local,
    run_ray,
    terminate_as_interrupt,
)
from smose.experiments.distillation import (
    DISTILLABLE,
    Distillation,
    tree_settings,
    trees_summary,
    trees_to_export,
    trees_wanted,
)
from smose.experiments.export_dir import (  # noqa: F401
    EXPORT_FILES,
    PARTIAL_DIR,
    Exporter,
    copy_small_files,
    copy_trees,
    index_finished,
)
from smose.experiments.grid import (  # noqa: F401
    RUNS_DIR,
    Grid,
    RunSpec,
    check_compatible,
    expand,
    format_seeds,
    parse_list,
    parse_seeds,
    run_name,
    write_sweep_file,
)
from smose.experiments.jobs import Job, Outcome, execute, interrupt_live, resume_command, train_command  # noqa: F401
from smose.experiments.progress import Progress
from smose.experiments.run_state import can_resume, finished_steps, is_finished, result_key, run_config
from smose.run import CONFIG_FILE, RunDir
from smose.serialization import read_json
from smose.tasks.envs import check_env
from smose.training.run_dir import clear_run_dir

LOGS_DIR = "logs"  # in the sweep directory, beside runs/: each job's output


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
    for env in grid.envs:  # an env that cannot be built or run, or refuses an argument: once, before any file is made
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
            result.failed[spec.name] = (f"{RunDir(exported[0]).trees} holds trees made with {exported[1].describe()}, "
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
        if found is None and any(path.exists() for path in (RunDir(run_dir).model_meta, RunDir(run_dir).eval)):
            result.failed[spec.name] = (f"{run_dir} holds a model whose {CONFIG_FILE} cannot be read; "
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
            parts = [f"eval {read_json(RunDir(spec.run_dir).eval, 'evaluation').get('mean', float('nan')):.2f}"
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
