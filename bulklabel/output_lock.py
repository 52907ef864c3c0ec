"""One writer per output file: ``OutputLock``, an exclusive ``flock`` beside the output."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError


class OutputLock:
    """An exclusive lock on an output file, so that two jobs never write one file.

    The lock is ``flock`` on ``.<name>.lock`` beside the output: the kernel releases it when
    the holder exits, however it exits, so a crash leaves nothing stale. The file says who
    holds it, for the message the second job prints.
    """

    def __init__(self, path: str | os.PathLike):
        import fcntl
        import socket
        import sys
        import time

        target = Path(path).absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target.with_name(f".{target.name}.lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(self._fd)
            raise ConfigError(f"{os.fspath(path)} is being written by another job ({holder}): wait "
                              "for it to finish, or pick another --out") from None
        what = " ".join(["bulklabel", *sys.argv[1:2]])
        note = f"{what}, pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, note.encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1
