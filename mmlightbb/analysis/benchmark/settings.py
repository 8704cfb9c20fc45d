"""What one benchmark run measures: :class:`BenchmarkSettings`, validated once when made."""
import dataclasses
from typing import Optional, Tuple

import torch

__all__ = ['BenchmarkSettings']


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings:
    """Every knob of a benchmark run (see the package doc for what each one changes).

    ``shape`` is (H, W) of the synthetic batch (None: the config's test scale, or the real
    images' size with ``real_images``). Making one raises ValueError naming the first bad
    setting, so nothing is built or timed with a bad one; :func:`dataclasses.replace` re-checks.
    """
    shape: Optional[Tuple[int, int]] = None
    batch_size: int = 1
    backbone_only: bool = False
    warmup: int = 5
    iters: int = 20
    threads: Optional[int] = None
    device: str = 'cpu'
    deploy: bool = False
    channels_last: bool = False
    fp16: bool = False
    real_images: bool = False
    profile: bool = False
    profile_iters: int = 3
    peak_size: int = 2048
    progress: bool = True

    def __post_init__(self):
        if self.shape is not None:
            if len(self.shape) != 2 or any(int(s) < 1 for s in self.shape):
                raise ValueError(f'shape must be two positive ints H W, got {self.shape!r}')
            object.__setattr__(self, 'shape', tuple(int(s) for s in self.shape))
        if not _is_count(self.iters, 1):
            raise ValueError(f'iters must be an int >= 1 (timed iterations), got {self.iters!r}')
        if not _is_count(self.warmup, 0):
            raise ValueError(f'warmup must be an int >= 0 (discarded iterations), got '
                             f'{self.warmup!r}')
        if not _is_count(self.batch_size, 1):
            raise ValueError(f'batch size must be an int >= 1, got {self.batch_size!r}')
        if self.threads is not None and not _is_count(self.threads, 1):
            raise ValueError(f'threads must be an int >= 1, got {self.threads!r}')
        if self.device not in ('cpu', 'cuda'):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == 'cuda' and not torch.cuda.is_available():
            raise ValueError('device cuda requested but torch.cuda.is_available() is False '
                             f'(torch {torch.__version__}); use --device cpu')
        if self.fp16 and self.device != 'cuda':
            raise ValueError('--fp16 is CUDA only (CPU half-precision convs are slow emulation '
                             'and not a meaningful latency); use --device cuda or drop --fp16')
        if self.profile and not _is_count(self.profile_iters, 1):
            raise ValueError(f'profile iters must be an int >= 1, got {self.profile_iters!r}')
        if self.real_images and self.shape is not None:
            raise ValueError('--shape and --real-images exclude each other (the test pipeline '
                             'sizes real images); drop one')

    @property
    def dtype(self) -> str:
        return 'float16' if self.fp16 else 'float32'


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
