"""The clock: timed iterations, latency statistics, the matmul peak and the machine's name."""
import math
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ['summarize', 'Progress', 'time_fn', 'time_interleaved', 'matmul_peak_gflops', 'cpu_name',
           'versions']


def summarize(samples_ms: Sequence[float], batch_size: int) -> Tuple[Dict[str, float], float]:
    """(latency stats in ms, fps) of timed samples; fps = 1000 / median_ms * batch_size."""
    if len(samples_ms) < 1:
        raise ValueError('no timed samples (iters must be >= 1)')
    ordered = sorted(samples_ms)
    n = len(ordered)
    pos = 0.9 * (n - 1)  # linear interpolation, as numpy.percentile's default
    lo, hi = math.floor(pos), math.ceil(pos)
    p90 = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    median = statistics.median(ordered)
    stats = dict(median=median, mean=statistics.fmean(ordered), p90=p90, min=ordered[0],
                 max=ordered[-1], std=statistics.pstdev(ordered), samples=list(samples_ms))
    if median <= 0:
        raise ValueError(f'median latency {median} ms is not positive; the clock is too coarse')
    return stats, 1000.0 / median * batch_size



class Progress:
    """A minimal progress bar on stderr (stdout stays clean for the table)."""

    def __init__(self, total: int, label: str, enabled: bool = True, width: int = 30):
        self.total, self.label, self.enabled, self.width = total, label, enabled, width
        self.done = 0

    def update(self):
        self.done += 1
        if self.enabled:
            filled = self.width * self.done // max(self.total, 1)
            sys.stderr.write(f'\r{self.label} [{"#" * filled}{"." * (self.width - filled)}] '
                             f'{self.done}/{self.total}')
            if self.done == self.total:
                sys.stderr.write('\n')
            sys.stderr.flush()



def time_fn(fn: Callable[[], object], iters: int, warmup: int, device: str = 'cpu',
            progress: bool = True) -> List[float]:
    """Run ``fn`` ``warmup`` times (discarded), then ``iters`` times; return each latency in ms."""
    cuda = device == 'cuda'
    bar = Progress(warmup + iters, 'benchmark (warm-up + timed)', progress)
    with torch.no_grad():
        for _ in range(warmup):
            fn()
            bar.update()
        samples = []
        for _ in range(iters):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            samples.append((time.perf_counter() - start) * 1000.0)
            bar.update()  # outside the timed region
    return samples


# untimed calls at the start of every turn of time_interleaved last at least this long: a runtime's
# worker threads go on spinning for a while after a call returns (ONNX Runtime's intra-op pool,
# OpenVINO's, OpenMP's) and the caches hold the previous side's weights
SETTLE_MS = 30.0


def time_interleaved(fns: Dict[str, Callable[[], object]], iters: int,
                     warmup: int = 1, settle_ms: float = SETTLE_MS) -> Dict[str, List[float]]:
    """Time several sides alternately, the order reversed every other round (A, B, C, C, B, A,
    A, ...): load from elsewhere on a shared machine then hits every side alike, so their ratios
    hold when absolute times do not. Reversing matters on a busy CPU: a side that always ran
    right after a long one would start with the process's time slice used up.

    Each turn of a side starts with untimed calls of it (at least one, for at least ``settle_ms``)
    and then times one call: without them, a side timed right after another runtime's call runs
    beside that runtime's still-spinning threads and with the other side's weights in the caches,
    which slows small, fast graphs most. ``settle_ms=0`` times every call.

    Each side runs ``warmup`` times (discarded), then ``iters`` timed rounds; returns each side's
    latencies in ms (round i of every side at index i), under ``torch.no_grad()``.
    """
    samples = {name: [] for name in fns}
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for i in range(iters):
            for name, fn in (list(fns.items())[::-1] if i % 2 else fns.items()):
                if settle_ms > 0:
                    turn = time.perf_counter()
                    fn()
                    while (time.perf_counter() - turn) * 1000.0 < settle_ms:
                        fn()
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1000.0)
    return samples


def matmul_peak_gflops(device: str = 'cpu', size: int = 2048, repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of ``size x size @ size x size`` (2 n^3 FLOPs) on the current threads."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    cuda = device == 'cuda'
    torch.mm(a, b)  # warm-up
    best = float('inf')
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9



def versions() -> Dict[str, Optional[str]]:
    out = dict(python=platform.python_version(), torch=torch.__version__)
    for name in ('mmcv', 'mmdet', 'mmengine', 'mmlightbb'):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - a missing package is reported as null
            out[name] = None
    return out


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'

