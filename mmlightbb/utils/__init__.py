from .checkpoint import (RUNNER_CHECKPOINT_GLOBALS, CheckpointFormatError, UnsafeCheckpointError,
                         register_runner_checkpoint_globals, safe_load)
from .fileio import AtomicLocalBackend, atomic_write, register_atomic_local_backend

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'CheckpointFormatError', 'UnsafeCheckpointError',
           'register_runner_checkpoint_globals', 'safe_load', 'AtomicLocalBackend', 'atomic_write',
           'register_atomic_local_backend']
