"""Atomic local file writes for mmengine's file I/O (checkpoints, the ``last_checkpoint`` pointer).

mmengine 0.10.7's ``LocalBackend.put``/``put_text`` open the destination with ``'wb'``/``'w'``,
which truncates it first: a process killed while saving (out of memory, a cluster pre-emption,
Ctrl-C twice) leaves a checkpoint cut short that ``--resume`` then fails to load, or, when the
same name is rewritten, destroys the good copy. Here the bytes go to a temporary file in the same
directory, are fsync'ed, and ``os.replace`` puts them in place in one step (atomic on POSIX and
Windows for one file system), so a reader sees either the old file or the complete new one.
"""
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend

__all__ = ['atomic_write', 'AtomicLocalBackend']


def atomic_write(filepath: Union[str, Path], data: Union[bytes, str],
                 encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``filepath`` so that the file is never seen half-written.

    A crash before the final ``os.replace`` leaves at most a hidden ``.<name>.*.tmp`` file next to
    the target; the target itself keeps its previous content.
    """
    filepath = os.fspath(filepath)
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode(encoding)
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix='.tmp',
                                    dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points to it
        os.replace(tmp_path, filepath)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put``/``put_text`` write through :func:`atomic_write`.

    ``Runner.save_checkpoint`` serializes a checkpoint to memory and hands the bytes to ``put``, so
    this covers every checkpoint mmengine writes to a local path.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj, encoding=encoding)
