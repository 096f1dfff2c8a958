"""One writer per directory: an advisory lock on a file inside it, held while a process writes there.

``smose train`` holds ``<run>/.lock`` while it trains (from scratch or resumed) and ``smose sweep`` holds
``<sweep>/.lock`` while it runs, so a second trainer or sweep started on the same directory stops with a message
instead of writing into it, and a sweep never deletes or resumes a run another process is still training. The lock
is the kernel's (``flock``): it disappears with the process, however that process ends, so there is nothing stale to
clean up after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

from smose.errors import SmoseError
from smose.run import LOCK_FILE  # noqa: F401 (re-exported)


def holder(directory: Path) -> str:
    """Who holds (or last held) the lock, as the lock file records it: "pid 123 on host"."""
    try:
        pid, _, host = (Path(directory) / LOCK_FILE).read_text().strip().partition(" ")
    except OSError:
        return "another process"
    return f"pid {pid} on {host}" if pid.isdigit() and host else "another process"


@contextlib.contextmanager
def hold(directory: Path, what: str = "process") -> Iterator[None]:
    """Hold the lock of ``directory`` (which must exist) for the duration of the block; raise SmoseError at once
    when another process holds it. ``what`` names the other process in that message ("trainer", "sweep").

    A lock file this call created is removed again when the block fails (a refused ``--resume``, say), so that a
    failed command leaves nothing behind in a directory that had no lock file.
    """
    path = Path(directory) / LOCK_FILE
    created = not path.exists()
    try:
        fh = open(path, "a+")
    except OSError as exc:
        raise SmoseError(f"{path}: cannot create the lock file ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SmoseError(f"{directory}: another {what} is working here ({holder(directory)}); wait for it to "
                             "finish or stop it first") from None
        if not _names_open_file(path, fh):  # removed by a failed holder after our open: lock the file there now
            fh.close()
            with hold(directory, what):
                yield
            return
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        fh.flush()
        try:
            yield
        except BaseException:
            if created:
                path.unlink(missing_ok=True)  # still locked: a process that opened it meanwhile finds it removed
            raise
    finally:
        fh.close()  # releases the lock


def _names_open_file(path: Path, fh) -> bool:
    """True when ``path`` still names the file open as ``fh`` (not removed, not replaced by a new one)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(fh.fileno()))
    except FileNotFoundError:
        return False


def is_held(directory: Path) -> bool:
    """True when a process holds the lock of ``directory`` right now."""
    path = Path(directory) / LOCK_FILE
    try:
        fh = open(path, "r")
    except OSError:  # no lock file: nobody ever locked it
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
