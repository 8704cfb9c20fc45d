"""Training infrastructure: safe checkpoint I/O, atomic writes, downloads, resume, hooks, exactly
resumable randomness, reduced precision, config loading, and :mod:`.patches`, the one module that
changes how torch and mmengine behave."""
from .checkpoint import (RUNNER_CHECKPOINT_GLOBALS, CheckpointFormatError, UnsafeCheckpointError,
                         safe_load)
from .config import load_config
from .downloads import PretrainedWeightsError, cache_dir, fetch_weights
from .fileio import AtomicLocalBackend, atomic_write
from .hooks import (AtomicCheckpointHook, NonFiniteLossError, NonFiniteLossHook,
                    raise_if_weights_nonfinite)
from .precision import CPUBF16OptimWrapper, autocast_context, resolve_precision
from .randomness import ExactResumeHook, SeededIndex, derive_seed
from .resume import (CHECKPOINT_POINTER, ResumeCheckpointError, find_resume_checkpoint,
                     is_complete_checkpoint, last_complete_checkpoint)

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'CheckpointFormatError', 'UnsafeCheckpointError',
           'safe_load', 'load_config', 'AtomicLocalBackend', 'atomic_write',
           'AtomicCheckpointHook', 'NonFiniteLossHook', 'NonFiniteLossError', 'CHECKPOINT_POINTER',
           'ResumeCheckpointError', 'find_resume_checkpoint', 'is_complete_checkpoint',
           'last_complete_checkpoint', 'raise_if_weights_nonfinite', 'ExactResumeHook',
           'SeededIndex', 'derive_seed', 'CPUBF16OptimWrapper', 'autocast_context',
           'resolve_precision', 'PretrainedWeightsError', 'cache_dir', 'fetch_weights']
