from .checkpoint import (RUNNER_CHECKPOINT_GLOBALS, CheckpointFormatError, UnsafeCheckpointError,
                         register_runner_checkpoint_globals, safe_load)

__all__ = ['RUNNER_CHECKPOINT_GLOBALS', 'CheckpointFormatError', 'UnsafeCheckpointError',
           'register_runner_checkpoint_globals', 'safe_load']
