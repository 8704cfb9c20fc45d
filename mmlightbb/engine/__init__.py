"""Training infrastructure as components a config selects: safe checkpoint I/O, atomic writes,
downloads, resume, hooks, exactly resumable randomness, reduced precision, config loading and
``RecoverableRunner``, which brings them together."""
from ..models.checkpoint import (RUNNER_CHECKPOINT_GLOBALS, CheckpointFormatError,
                                 UnsafeCheckpointError, runner_checkpoint_loading, safe_load)
from .config import load_config
from .downloads import PretrainedWeightsError, cache_dir, fetch_weights
from .fileio import AtomicLocalBackend, atomic_write
from .hooks import (ATOMIC_BACKEND, AtomicCheckpointHook, NonFiniteLossError, NonFiniteLossHook,
                    raise_if_weights_nonfinite)
from .precision import (AutocastTestLoop, CPUBF16OptimWrapper, autocast_compute, autocast_context,
                        resolve_precision)
from .randomness import ExactResumeHook, SeededIndex, derive_seed
from .resume import (CHECKPOINT_POINTER, ResumeCheckpointError, find_resume_checkpoint,
                     is_complete_checkpoint, last_complete_checkpoint)
from .runner import RecoverableRunner, build_runner

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'CheckpointFormatError', 'UnsafeCheckpointError',
           'runner_checkpoint_loading', 'safe_load', 'load_config', 'AtomicLocalBackend',
           'atomic_write', 'ATOMIC_BACKEND', 'AtomicCheckpointHook', 'NonFiniteLossHook',
           'NonFiniteLossError', 'CHECKPOINT_POINTER', 'ResumeCheckpointError',
           'find_resume_checkpoint', 'is_complete_checkpoint', 'last_complete_checkpoint',
           'raise_if_weights_nonfinite', 'ExactResumeHook', 'SeededIndex', 'derive_seed',
           'AutocastTestLoop', 'CPUBF16OptimWrapper', 'autocast_compute', 'autocast_context',
           'resolve_precision', 'PretrainedWeightsError', 'cache_dir', 'fetch_weights',
           'RecoverableRunner', 'build_runner']
