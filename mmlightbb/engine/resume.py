"""Which checkpoint ``--resume`` continues from, never a missing or half-written one.

mmengine's auto-resume trusts ``<work_dir>/last_checkpoint`` blindly. The pointer can dangle when
the checkpoint it names was deleted, the work dir was copied in part, or an older run (without
mmlightbb's atomic writes) was killed while saving; mmengine then fails deep inside
``torch.load``. :func:`find_resume_checkpoint` checks the named file first and otherwise falls
back to the newest complete ``epoch_*.pth``/``iter_*.pth`` in the work dir, with a warning.
"""
import logging
import os
import os.path as osp
import re
import zipfile
from typing import Optional

from mmengine.logging import print_log

__all__ = ['CHECKPOINT_POINTER', 'ResumeCheckpointError', 'is_complete_checkpoint',
           'last_complete_checkpoint', 'find_resume_checkpoint']

CHECKPOINT_POINTER = 'last_checkpoint'  # the name CheckpointHook writes in the work dir
_RESUMABLE_NAME = re.compile(r'^(epoch|iter)_\d+\.pth$')  # best_*.pth lack optimizer state


class ResumeCheckpointError(FileNotFoundError):
    """``--resume`` found a pointer to a checkpoint that is unusable, and no complete one."""


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole torch (zip) checkpoint.

    A zip archive ends with its central directory, which ``torch.save`` writes last, so a file cut
    short anywhere fails this check without being read in full.
    """
    return osp.isfile(path) and zipfile.is_zipfile(path)


def _read_pointer(work_dir: str) -> Optional[str]:
    pointer = osp.join(work_dir, CHECKPOINT_POINTER)
    if not osp.isfile(pointer):
        return None
    with open(pointer, encoding='utf-8') as f:
        return f.read().strip()


def last_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``<work_dir>/last_checkpoint`` names if it is complete, else None."""
    path = _read_pointer(work_dir)
    return path if path and is_complete_checkpoint(path) else None


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` without a path should continue from.

    Returns:
        The file ``<work_dir>/last_checkpoint`` names when it is complete; None when there is no
        pointer (nothing was saved yet: mmengine then starts from scratch, as it always did).
        When the pointer is empty or names a missing or partial file, the newest (by
        modification time) complete ``epoch_*.pth``/``iter_*.pth`` in ``work_dir`` is returned
        and a warning names both: resuming from an older complete state loses at most the
        epochs after it, while stopping would lose the whole run to a stale pointer.

    Raises:
        ResumeCheckpointError: the pointer is unusable and no complete checkpoint exists.
    """
    named = _read_pointer(work_dir)
    if named is None:
        return None
    if named and is_complete_checkpoint(named):
        return named
    candidates = [
        osp.join(work_dir, name) for name in os.listdir(work_dir) if _RESUMABLE_NAME.match(name)]
    complete = [path for path in candidates if is_complete_checkpoint(path)]
    problem = (f'{osp.join(work_dir, CHECKPOINT_POINTER)} names {named!r}, which is '
               f"{'missing' if named and not osp.exists(named) else 'empty or incomplete'}")
    if not complete:
        raise ResumeCheckpointError(
            f'cannot resume: {problem}, and {work_dir} holds no complete epoch_*.pth/iter_*.pth. '
            f'Pass a checkpoint with --resume PATH, or delete {CHECKPOINT_POINTER} to start '
            'from scratch.')
    newest = max(complete, key=lambda path: os.stat(path).st_mtime_ns)
    print_log(f'{problem}; resuming from the newest complete checkpoint {newest} instead.',
              logger='current', level=logging.WARNING)
    return newest
