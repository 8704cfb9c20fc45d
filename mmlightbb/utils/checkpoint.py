"""Safe checkpoint loading for torch >= 2.6 (``weights_only=True``) and mmengine 0.10.7.

torch refuses to unpickle anything but tensors and plain containers unless the global is on an
allow-list. A checkpoint written by mmengine's Runner also holds a few numpy objects and
mmengine's ``HistoryBuffer`` (the message hub's log history). We allow exactly those, keep
``weights_only=True`` for every file, and turn torch's refusal into a message that names the
offending global and says how to proceed when the file is trusted.
"""
import os
import pickle
import re
import zipfile

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'register_runner_checkpoint_globals', 'safe_load',
           'UnsafeCheckpointError', 'CheckpointFormatError']


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs a Python global that is not on the allow-list."""


class CheckpointFormatError(RuntimeError):
    """A file that is missing, truncated or not a PyTorch checkpoint at all."""


def _numpy_globals():
    core = getattr(np, '_core', None) or np.core  # numpy 2 renamed core -> _core
    dtype_classes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64)]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype] + dtype_classes


# What mmengine 0.10.7's Runner puts into a checkpoint besides tensors: numpy arrays, scalars and
# dtypes inside the message hub, and the HistoryBuffer objects that hold the log history.
RUNNER_CHECKPOINT_GLOBALS = _numpy_globals() + [HistoryBuffer]


def register_runner_checkpoint_globals():
    """Put the globals of a Runner checkpoint on torch's ``weights_only`` allow-list (idempotent)."""
    torch.serialization.add_safe_globals(RUNNER_CHECKPOINT_GLOBALS)


def safe_load(filename, map_location='cpu'):
    """``torch.load(filename, weights_only=True)`` with clear errors for bad files.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointFormatError: the file is truncated or is not a PyTorch checkpoint.
        UnsafeCheckpointError: unpickling would need a global outside the allow-list; nothing of the
            file's code is executed.
    """
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(
            f'checkpoint file not found: {filename!r}. Check the path (relative paths are resolved '
            f'from {os.getcwd()!r}).')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        match = re.search(r'GLOBAL ([\w.]+)', str(err))
        if match is None and 'Weights only load failed' not in str(err):
            raise CheckpointFormatError(_format_message(filename, err)) from None
        offending = match.group(1) if match else 'an object torch does not allow'
        raise UnsafeCheckpointError(
            f'refused to load {filename!r}: unpickling it needs the Python global `{offending}`, '
            'which is not allowed with weights_only=True (a file can run arbitrary code this way). '
            'Nothing from the file was executed. If you trust the file and know where it came from, '
            'convert it once with `torch.load(path, weights_only=False)` and save only its '
            'state_dict with `torch.save(state_dict, new_path)`, then use new_path.') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointFormatError(_format_message(filename, err)) from None


def _format_message(filename, err):
    size = os.path.getsize(filename)
    return (f'{filename!r} ({size} bytes) is not a readable PyTorch checkpoint: it is truncated, '
            f'corrupt or another kind of file ({type(err).__name__}: {str(err).splitlines()[0]}). '
            'Download or copy it again.')


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename, map_location):
    """mmengine's loader for local files, routed through :func:`safe_load`.

    Registered over mmengine's own (``force=True``) so that ``load_from``, ``--resume``, ``init_cfg``
    and ``tools/test.py`` all read checkpoints with ``weights_only=True`` and clear errors.
    """
    return safe_load(os.path.expanduser(filename), map_location=map_location)
