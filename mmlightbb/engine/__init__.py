from .hooks import (AtomicCheckpointHook, NonFiniteLossError, NonFiniteLossHook,
                    raise_if_weights_nonfinite)
from .resume import (CHECKPOINT_POINTER, ResumeCheckpointError, find_resume_checkpoint,
                     is_complete_checkpoint, last_complete_checkpoint)

__all__ = ['AtomicCheckpointHook', 'NonFiniteLossHook', 'NonFiniteLossError', 'CHECKPOINT_POINTER',
           'ResumeCheckpointError', 'find_resume_checkpoint', 'is_complete_checkpoint',
           'last_complete_checkpoint', 'raise_if_weights_nonfinite']
