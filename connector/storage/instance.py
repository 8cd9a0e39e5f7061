"""One connector process per SQLite file: an OS lock on ``<database>.lock`` held for the
process's life.

SQLite is the embedded shape: one process runs the intake, the worker, the dispatcher and
the scheduler, and it alone leads. A second ``connector run`` on the same file would lead
too and dispatch the same rows, so it is refused at start. The lock is the operating
system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows): it goes with the
process, however it ends, so a crash never leaves a stale lock behind. PostgreSQL needs no
such lock: its processes coordinate through the database.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO

from sqlalchemy.engine import make_url

from connector.storage.engine import DatabaseUnavailable


class AnotherInstance(Exception):
    """Another process already runs on this SQLite file."""


class InstanceLock:
    """The held lock; ``release`` (or the process's end) lets the next process in."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle: IO[bytes] | None = handle

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            _unlock(handle)
        handle.close()

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(url: str) -> Path | None:
    """Where the lock of the SQLite database at ``url`` lives (None: not a SQLite file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = Path(parsed.database).expanduser().resolve()
    return database.with_name(database.name + ".lock")


def hold_single_instance(url: str) -> InstanceLock | None:
    """Take the SQLite file's lock for this process, or raise ``AnotherInstance`` with a
    one-line reason. None for a database that needs no lock (PostgreSQL, in-memory)."""
    path = lock_path(url)
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 - held open for the process's life
    except OSError as exc:
        raise DatabaseUnavailable(f"database {url} unavailable: cannot open {path}: {exc.strerror}") from None
    try:
        _lock(handle)
    except OSError:
        holder = "another process"
        with contextlib.suppress(OSError):
            handle.seek(0)
            pid = handle.read(32).decode(errors="replace").strip()
            holder = f"pid {pid}" if pid.isdigit() else holder
        handle.close()
        raise AnotherInstance(
            f"another connector ({holder}) already runs on {path.with_suffix('')}: "
            "one process per SQLite file; use PostgreSQL to run several"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return InstanceLock(path, handle)


# Windows locks a byte range, and a locked range cannot be read by others: lock one byte
# past the process id written at the start, so the refused process can still name it.
_LOCKED_BYTE = 4096

if sys.platform == "win32":
    import msvcrt

    def _lock(handle: IO[bytes]) -> None:
        handle.seek(_LOCKED_BYTE)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # raises OSError when held

    def _unlock(handle: IO[bytes]) -> None:
        handle.seek(_LOCKED_BYTE)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises OSError when held

    def _unlock(handle: IO[bytes]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
