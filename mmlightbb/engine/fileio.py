"""Atomic local file writes: the one helper every writer of the package uses.

mmengine 0.10.7's ``LocalBackend.put``/``put_text`` open the destination with ``'wb'``/``'w'``,
which truncates it first: a process killed while saving (out of memory, a cluster pre-emption,
Ctrl-C twice) leaves a checkpoint cut short that ``--resume`` then fails to load, or, when the
same name is rewritten, destroys the good copy. :func:`atomic_files` writes to a temporary file in
the same directory, fsyncs it, and ``os.replace`` puts it in place in one step (atomic on POSIX and
Windows for one file system), so a reader sees either the old file or the complete new one.
:func:`atomic_write` (bytes or text) and :class:`AtomicLocalBackend` (every checkpoint mmengine
saves) are built on it; so are the json files of the dataset converters and the comparison, the
ONNX / OpenVINO exports and the weight downloads.
"""
import contextlib
import os
import os.path as osp
import secrets
from pathlib import Path
from typing import Iterator, List, Union

from mmengine.fileio import LocalBackend

__all__ = ['atomic_files', 'atomic_write', 'AtomicLocalBackend']

PathLike = Union[str, Path]


@contextlib.contextmanager
def atomic_files(*paths: PathLike, keep_extension: bool = False) -> Iterator[List[str]]:
    """Write the files ``paths`` so that none is ever seen half-written.

    Yields one temporary file per target, created empty beside it (``.<name>.<random>.tmp``: the
    same file system, so the rename is atomic) for the block to write by any means (``open``,
    ``json.dump``, ``torch.onnx.export``, a download). ``keep_extension`` names them
    ``.<stem>.<random>.tmp<ext>`` with one random part for all, for writers that check the
    extension or derive one file's name from another's (OpenVINO's ``save_model`` writes
    ``x.bin`` beside ``x.xml``). When the block returns, each file is fsync'ed and renamed onto its
    target, in the order given (a file that names another goes last: OpenVINO's .xml after its
    .bin), then the folders are fsync'ed so the renames survive a power cut. When it raises, the
    temporary files are removed and every target keeps its old content. A crash (SIGKILL) leaves
    at most the hidden temporary files.
    """
    targets = [osp.abspath(os.fspath(p)) for p in paths]
    temps = _create_temp_files(targets, keep_extension)
    try:
        yield list(temps)
        for tmp in temps:
            with open(tmp, 'r+b') as f:  # the data is on disk before a name points to it
                os.fsync(f.fileno())
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
    except BaseException:
        _remove(temps)
        raise
    for folder in dict.fromkeys(osp.dirname(t) for t in targets):
        _fsync_directory(folder)


def atomic_write(filepath: PathLike, data: Union[bytes, str], encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``filepath`` through :func:`atomic_files`."""
    if isinstance(data, str):
        data = data.encode(encoding)
    with atomic_files(filepath) as (tmp, ):
        with open(tmp, 'wb') as f:
            f.write(data)


def _create_temp_files(targets: List[str], keep_extension: bool) -> List[str]:
    """New empty files beside ``targets`` (their folders made if needed), one random part for all.

    Not ``tempfile.mkstemp``: its files are private (0600), and the targets (checkpoints, json,
    exports) get the permissions the umask gives any new file, as mmengine's writes do."""
    while True:
        token, temps = secrets.token_hex(4), []
        try:
            for target in targets:
                folder, name = osp.split(target)
                os.makedirs(folder, exist_ok=True)
                stem, ext = osp.splitext(name) if keep_extension else (name, '')
                tmp = osp.join(folder, f'.{stem}.{token}.tmp{ext}')
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                temps.append(tmp)
            return temps
        except FileExistsError:  # another writer drew the same random part: draw again
            _remove(temps)
        except BaseException:
            _remove(temps)
            raise


def _remove(paths: List[str]) -> None:
    for path in paths:
        if osp.exists(path):
            os.remove(path)


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
