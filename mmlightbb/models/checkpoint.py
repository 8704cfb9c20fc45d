"""Safe checkpoint loading for torch >= 2.6 (``weights_only=True``) and mmengine 0.10.7.

Here, at the bottom of the package, because the backbones' ``load_pretrained``, the engine's
``RecoverableRunner`` and the analysis tools all load through it (re-exported by
:mod:`mmlightbb.engine`).

torch refuses to unpickle anything but tensors and plain containers unless the global is on an
allow-list. A checkpoint written by mmengine's Runner also holds a few numpy objects and
mmengine's ``HistoryBuffer`` (the message hub's log history). We allow exactly those, for the
duration of one load (:func:`runner_checkpoint_loading`: ``RecoverableRunner``, the tools and
:func:`safe_load` load through it; torch's process-wide allow-list is never changed), keep
``weights_only=True`` for every file, and turn torch's refusal into a message that names the
offending global and says how to proceed when the file is trusted.
"""
import contextlib
import os
import pickle
import re
import zipfile

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'safe_load', 'check_checkpoint_file',
           'runner_checkpoint_loading', 'UnsafeCheckpointError', 'CheckpointFormatError']


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


HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')  # set by _set_default_statistics


def _history_buffer_statistic(obj, name):
    """Stand-in for ``builtins.getattr`` while unpickling: HistoryBuffer pickles its statistics
    methods as ``getattr(HistoryBuffer, 'mean')``; any other lookup is refused."""
    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS + tuple(
            HistoryBuffer._statistics_methods):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'GLOBAL builtins.getattr used as getattr({obj!r}, {name!r}); only HistoryBuffer '
        'statistics methods may be looked up')


# What mmengine 0.10.7's Runner puts into a checkpoint besides tensors: numpy arrays, scalars and
# dtypes inside the message hub, the HistoryBuffer objects that hold the log history, and
# getattr(HistoryBuffer, <statistic>) (served by the restricted stand-in above, never the builtin).
RUNNER_CHECKPOINT_GLOBALS = _numpy_globals() + [
    HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr')]


def check_checkpoint_file(filename) -> str:
    """``filename`` as a path when it is a local file that can be a checkpoint.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointFormatError: the file is neither torch's zip format nor a pickle.
    """
    filename = os.path.expanduser(os.fspath(filename))
    if not os.path.isfile(filename):
        raise FileNotFoundError(
            f'checkpoint file not found: {filename!r}. Check the path (relative paths are resolved '
            f'from {os.getcwd()!r}).')
    if not zipfile.is_zipfile(filename):
        with open(filename, 'rb') as f:
            head = f.read(2)
        if not head.startswith(b'\x80'):  # neither torch's zip format nor a legacy pickle
            raise CheckpointFormatError(_format_message(filename, 'not a zip archive or pickle'))
    return filename


@contextlib.contextmanager
def runner_checkpoint_loading(filename):
    """The block loads ``filename`` with ``weights_only=True`` and the globals a Runner checkpoint
    holds allowed (:data:`RUNNER_CHECKPOINT_GLOBALS`, for this block only), and fails in one line.

    Local files are checked first (:func:`check_checkpoint_file`); other schemes (``http://``,
    ``mmlightbb://``) are left to their loaders.

    Raises:
        UnsafeCheckpointError: unpickling would need a global outside the allow-list; nothing of
            the file's code is executed.
        CheckpointFormatError: the file is truncated or is not a PyTorch checkpoint.
    """
    filename = os.fspath(filename)
    if '://' not in filename:
        filename = check_checkpoint_file(filename)
    try:
        with torch.serialization.safe_globals(RUNNER_CHECKPOINT_GLOBALS):
            yield
    except pickle.UnpicklingError as err:
        text = str(err)
        cause = err.__cause__ or err.__context__
        if 'Weights only load failed' not in text or isinstance(cause, (EOFError, ValueError)):
            raise CheckpointFormatError(_format_message(filename, err)) from None
        match = re.search(r'Unsupported global: GLOBAL ([\w.]+)', text)
        if match:
            reason = (f'unpickling it needs the Python global `{match.group(1)}`, which is not '
                      'allowed with weights_only=True (a file can run arbitrary code this way)')
        else:
            detail = re.search(r'WeightsUnpickler error:\s*(.+)', text)
            reason = detail.group(1).strip() if detail else text.splitlines()[0]
        raise UnsafeCheckpointError(
            f'refused to load {filename!r}: {reason}. Nothing from the file was executed. If you '
            'trust the file and know where it came from, convert it once with '
            '`torch.load(path, weights_only=False)` and save only its state_dict with '
            '`torch.save(state_dict, new_path)`, then use new_path.') from None
    except (EOFError, zipfile.BadZipFile) as err:
        raise CheckpointFormatError(_format_message(filename, err)) from None


def safe_load(filename, map_location='cpu'):
    """``torch.load(filename, weights_only=True)`` with a Runner checkpoint's globals allowed and
    clear errors for bad files (see :func:`runner_checkpoint_loading`).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointFormatError: the file is truncated or is not a PyTorch checkpoint.
        UnsafeCheckpointError: unpickling would need a global outside the allow-list.
    """
    filename = check_checkpoint_file(filename)
    with runner_checkpoint_loading(filename):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except (RuntimeError, ValueError) as err:  # torch's messages for a corrupt archive
            raise CheckpointFormatError(_format_message(filename, err)) from None


def _format_message(filename, err):
    size = os.path.getsize(filename)
    detail = err if isinstance(err, str) else f'{type(err).__name__}: {str(err)[:200]}'
    return (f'{filename!r} ({size} bytes) is not a readable PyTorch checkpoint: it is truncated, '
            f'corrupt or another kind of file ({detail.strip()}). Download or copy it again.')
