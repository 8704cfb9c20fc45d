"""What a comparison runs and measures: :class:`ComparisonSettings`, validated once when made."""
import dataclasses
import os
import re
from typing import Dict, Optional, Tuple

import torch

from .. import detector_configs as dc
from ..uncertainty import RESAMPLES
from .plan import ComparisonError

LAUNCHERS = ('local', 'slurm')
CPUS = len(os.sched_getaffinity(0))


@dataclasses.dataclass(frozen=True)
class ComparisonSettings:
    """Every option of :func:`~.job.compare_backbones` (``tools/compare_backbones.py``'s flags).

    ``epochs`` (None: :func:`.plan.default_epochs`) and ``size`` (None: from the images) are the
    same for every run; ``epochs_by_head`` overrides the epochs of a head (0: its runs are timed
    with their initial weights, never trained or tested). ``backbones`` None:
    every mmlightbb family and each head's baseline (``quick``: the small ones). ``seeds``
    trains every run with seeds ``seed`` .. ``seed + seeds - 1``; ``bootstrap`` is the number of
    resamples of the test images behind each mAP interval; ``retime`` times every finished run
    side by side again. ``int8`` adds an INT8 row for every runtime of ``backends``: the
    runtime's graph quantized (:mod:`~..quantize`), calibrated on the training split, timed and
    tested in that runtime beside its ``precision`` row. ``device`` None: CUDA when there is
    one. Where the runs train (:mod:`.launchers`): ``launcher`` 'local' (this machine) or 'slurm' (one Slurm job per run
    on ``partition``, ``time_limit`` HH:MM:SS, extra ``slurm_args`` for sbatch; ``wait`` False
    submits and returns); ``parallel`` K runs at once on disjoint cores or GPUs (local);
    ``gpus_per_run`` N processes per run (torchrun locally, srun on Slurm; on CPU N gloo
    processes). Making one raises
    :class:`~.plan.ComparisonError` with one line naming the flag and the fix.
    """
    heads: Tuple[str, ...] = dc.HEADS
    backbones: Optional[Tuple[str, ...]] = None
    epochs: Optional[int] = None
    epochs_by_head: Optional[Dict[str, int]] = None
    size: Optional[int] = None
    batch_size: int = 8
    device: Optional[str] = None
    threads: Optional[int] = None
    pretrained: Optional[Dict[str, str]] = None
    split_seed: int = 0
    val_ratio: float = 0.2
    classes: Optional[Tuple[str, ...]] = None
    quick: bool = False
    bench_iters: int = 20
    bench_warmup: int = 3
    seed: int = 0
    seeds: int = 1
    precision: str = 'fp32'
    backends: Tuple[str, ...] = ('pytorch', )
    int8: bool = False
    bootstrap: int = RESAMPLES
    retime: bool = False
    launcher: str = 'local'
    parallel: int = 1
    gpus_per_run: int = 1
    partition: Optional[str] = None
    time_limit: Optional[str] = None
    slurm_args: Tuple[str, ...] = ()
    wait: bool = True

    def __post_init__(self):
        for name in ('heads', 'backbones', 'classes', 'backends'):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        for flag, value, low in (('--batch-size', self.batch_size, 1),
                                 ('--bench-iters', self.bench_iters, 1),
                                 ('--epochs', self.epochs, 1), ('--size', self.size, 32),
                                 ('--threads', self.threads, 1), ('--seeds', self.seeds, 1),
                                 ('--seed', self.seed, 0), ('--bootstrap', self.bootstrap, 100),
                                 ('--parallel', self.parallel, 1),
                                 ('--gpus-per-run', self.gpus_per_run, 1)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < low):
                raise ComparisonError(f'{flag} must be an integer >= {low}, got {value!r}')
        for head, value in (self.epochs_by_head or {}).items():
            flag = '--cascade-epochs' if head == 'cascade' else f'epochs_by_head[{head!r}]'
            if head not in dc.HEADS:
                raise ComparisonError(f'epochs_by_head: unknown head {head!r}; use one of '
                                      f'{list(dc.HEADS)}')
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ComparisonError(f'{flag} must be an integer >= 0 (0: timed only, not '
                                      f'trained), got {value!r}')
        if self.size is not None and self.size % 32:
            raise ComparisonError(f'--size must be a multiple of 32 (the detectors downsample by '
                                  f'32), got {self.size}; e.g. '
                                  f'{32 * max(1, round(self.size / 32))}')
        if self.int8 and not self.runtimes:
            raise ComparisonError('--int8 quantizes the runtimes of --backends; add --backends '
                                  'openvino (or onnxruntime)')
        device = self.device or ('cuda' if torch.cuda.is_available() else 'cpu')
        if device not in ('cpu', 'cuda'):
            raise ComparisonError(f"--device must be 'cpu' or 'cuda', got {device!r}")
        if device == 'cuda' and not torch.cuda.is_available():
            raise ComparisonError(f'--device cuda: this torch ({torch.__version__}) sees no CUDA '
                                  'GPU; use --device cpu or install a CUDA build '
                                  '(docs/install.md#gpu)')
        if device == 'cpu' and torch.cuda.is_available():
            raise ComparisonError('--device cpu on a machine with a GPU: start the command with '
                                  "CUDA_VISIBLE_DEVICES='' (tools/compare_backbones.py does this)")
        object.__setattr__(self, 'device', device)
        self._check_launcher()

    def _check_launcher(self):
        object.__setattr__(self, 'slurm_args', tuple(self.slurm_args))
        if self.launcher not in LAUNCHERS:
            raise ComparisonError(f'--launcher must be one of {list(LAUNCHERS)}, got '
                                  f'{self.launcher!r}')
        slurm_only = [flag for flag, value in (('--partition', self.partition),
                                               ('--time', self.time_limit),
                                               ('--slurm-args', self.slurm_args),
                                               ('--no-wait', not self.wait)) if value]
        if self.launcher != 'slurm' and slurm_only:
            raise ComparisonError(f'{slurm_only[0]} is an option of --launcher slurm; add '
                                  '--launcher slurm or drop it')
        if self.launcher == 'slurm' and self.parallel > 1:
            raise ComparisonError('--parallel is for --launcher local (Slurm runs every job it '
                                  'can at once); drop --parallel')
        if self.time_limit is not None and not re.fullmatch(
                r'(\d+-)?\d{1,2}(:\d{2}){0,2}', self.time_limit):
            raise ComparisonError(f'--time {self.time_limit!r}: use Slurm\'s format, e.g. '
                                  '12:00:00 or 1-00:00:00')
        if self.device == 'cuda' and self.launcher == 'local':
            need, have = self.parallel * self.gpus_per_run, torch.cuda.device_count()
            if need > have:
                raise ComparisonError(f'--parallel {self.parallel} x --gpus-per-run '
                                      f'{self.gpus_per_run} needs {need} GPUs, this machine has '
                                      f'{have}; lower one of them')
        elif self.launcher == 'local' and self.parallel * self.gpus_per_run > CPUS:
            raise ComparisonError(f'--parallel {self.parallel} x --gpus-per-run '
                                  f'{self.gpus_per_run} processes need as many cores, this '
                                  f'machine gives {CPUS}; lower one of them')

    @property
    def in_process(self) -> bool:
        """Whether the runs train one after another in this process (the default)."""
        return self.launcher == 'local' and self.parallel == 1 and self.gpus_per_run == 1

    @property
    def runtimes(self) -> Tuple[str, ...]:
        """The export runtimes of ``backends`` (PyTorch aside), each once."""
        return tuple(b for b in dict.fromkeys(self.backends) if b != 'pytorch')

    @property
    def seed_list(self) -> Tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.seeds))
