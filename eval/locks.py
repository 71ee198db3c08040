"""The lock of a job folder: `fcntl.flock` on FOLDER/lock, held by the process working there.

    lock = try_lock(folder)        # JobLock, or None while another process holds it
    ...                            # work in the folder
    lock.release()
    holder(folder)                 # owner of a held lock ({"pid", "host", "started"}) or None

The kernel drops an flock when its holder dies, however it dies (SIGKILL, OOM, a lost node's
NFS lease expiring), so a lock that can be taken is free. The file names its owner while held
(one JSON line, written after taking it) and is emptied on release: a file that still names
an owner when the lock is taken was left by a process that died holding it, and taking it over
is logged (`JobLock.previous`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

LOCK = "lock"


class LockError(RuntimeError):
    """A job folder that cannot be locked at all (a filesystem without flock)."""


def owner() -> dict[str, Any]:
    """This process as a lock owner."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _read_owner(fd: int) -> dict[str, Any] | None:
    text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"pid": None, "host": None, "started": None, "text": text[:80]}


def describe(who: dict[str, Any] | None) -> str:
    """`pid 123 on host h (since 2026-12-03 17:00:00)`."""
    if not who:
        return "an unknown process"
    return f"pid {who.get('pid')} on host {who.get('host')} (since {who.get('started')})"


def _flock(fd: int, path: Path, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        raise LockError(f"cannot lock {path}: {exc.strerror} (job folders need a filesystem with flock)") from None


@dataclass
class JobLock:
    path: Path                          # FOLDER/lock
    fd: int                             # open while held
    previous: dict[str, Any] | None     # owner named by the file when taken: a dead holder's

    def release(self) -> None:
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def try_lock(folder: str | Path, wait: float = 0.0) -> JobLock | None:
    """Take FOLDER/lock (exclusive), trying for `wait` seconds; None: another process holds it."""
    path = Path(folder) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + wait
    while not _flock(fd, path, fcntl.LOCK_EX):
        if time.monotonic() >= deadline:
            os.close(fd)
            return None
        time.sleep(0.05)
    previous = _read_owner(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(owner()) + "\n").encode(), 0)
    os.fsync(fd)
    return JobLock(path, fd, previous)


def holder(folder: str | Path) -> dict[str, Any] | None:
    """The owner of FOLDER/lock while another process holds it, else None (free, or no lock
    file). Tells by taking a shared lock for a moment."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if _flock(fd, path, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_owner(fd) or {"pid": None, "host": None, "started": None}
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(path: str | Path) -> Iterator[None]:
    """Hold an exclusive flock on the file `path` (created), waiting as long as it takes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
