"""One run per job at a time: an exclusive lock file beside the store.

`flock` is released by the kernel when the process dies, so a crashed run (even kill -9) never
leaves a lock that blocks the next night's run; the file's content only says who held it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from connector.errors import LockedError


class JobLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> "JobLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"another run of this job is in progress (lock {self.path}, held by pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
