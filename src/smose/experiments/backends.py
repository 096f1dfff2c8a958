"""Where a sweep's jobs run: local processes (``--workers`` at a time, each waited for by a thread) or Ray tasks of
one CPU each, on whichever node Ray picks; and how an interrupt of the sweep reaches the trainers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator

from smose.errors import SmoseError
from smose.experiments.jobs import Job, Outcome, execute, interrupt_live
from smose.experiments.progress import Progress


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
