"""Locks between processes: ``fcntl.flock`` on a lock file, which the OS releases when the holder dies
(a killed run never leaves a lock stuck).  The holder may write who it is into the file."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from causaleval.runs.store import umask_mode


class FileLock:
    """An exclusive lock on ``path``; the file is removed when the lock is released."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, blocking: bool = True, info: dict | None = None) -> bool:
        """Take the lock (waiting for it when ``blocking``); False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, umask_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            try:     # a releasing holder may have removed the file between our open and flock
                st, now = os.fstat(fd), os.stat(self.path)
                if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        if info is not None:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        self.fd = fd
        return True

    def holder(self) -> dict:
        """What the holder wrote into the lock file ({} when nothing readable)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()      # while still held, so no one locks a file that is going away
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
