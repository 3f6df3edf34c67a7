"""One writer per output directory: an advisory lock the operating system drops with its process.

``unet-keras predict`` locks its ``--out`` directory and ``unet-keras train`` its ``NAME.partial``
run directory, so a second process refuses at once (``OutputBusyError``, exit code 5) instead of
interleaving files with the first. The lock is ``fcntl.flock`` on a hidden file in the directory
(``msvcrt.locking`` on Windows): the kernel releases it when the holder exits, even by SIGKILL,
so there is never a stale lock to delete by hand.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class OutputBusyError(OSError):
    """Another process holds the directory; ``strerror`` says which and what to do."""


@contextlib.contextmanager
def exclusive_dir(directory: str | Path, lock_name: str, holder: str,
                  wait: bool = False) -> Iterator[Path]:
    """Create ``directory`` if needed and hold its lock ``lock_name`` for the block.

    Args:
        lock_name: the hidden lock file's name (one per kind of writer).
        holder: what holds it, for the message a second process prints ("`unet-keras predict`").
        wait: block until the holder lets go instead of raising ``OutputBusyError``.
    Raises:
        OutputBusyError: another process holds the lock (only when ``wait`` is false).
        OSError: the directory cannot be created or written (the message names it).
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / lock_name, "a+")
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise OSError(err.errno, f"cannot write to output directory {directory}: {reason}") from err
    try:
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            else:
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            raise OutputBusyError(
                errno.EBUSY, f"{directory}: another {holder} (pid {pid}) is writing to this "
                "directory; wait for it to finish or choose another output") from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield directory
    finally:
        handle.close()  # releases the lock
