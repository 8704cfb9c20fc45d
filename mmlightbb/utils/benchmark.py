"""Inference latency of a detector or of its backbone alone, on CPU or CUDA, with what was timed.

    python tools/benchmark.py CONFIG [--checkpoint CKPT] [--backbone-only] [--shape H W] ...

What is timed (the "timed unit"), on one synthetic batch of fixed size that is built once, outside
the clock (no dataloader, no image decoding, no host-to-device copy of a new batch per iteration):

* ``test_step`` (default): ``model.test_step(batch)`` -- the data preprocessor (uint8 -> float,
  normalisation, padding), backbone, neck, head and post-processing (box decoding + NMS). The batch
  is ``dict(inputs=[uint8 CxHxW] * B, data_samples=[DetDataSample] * B)`` of random pixels, so the
  number of boxes reaching NMS is whatever the (possibly untrained) head produces.
* ``backbone_only``: ``model.backbone(x)`` on a float tensor that the model's own data preprocessor
  normalised once, before timing.

Warm-up iterations are run and discarded; each timed iteration is measured with
``time.perf_counter`` (after ``torch.cuda.synchronize()`` on CUDA only), under ``torch.no_grad()``.

MACs are mmengine FlopAnalyzer counts of the backbone's conv and linear layers (1 multiply-add = 1
MAC, as the papers' and the README's tables); FLOPs = 2 x MACs. Achieved GFLOP/s
(backbone-only mode) = 2 x MACs x batch / median latency; it is compared with the best of a few
2048x2048 @ 2048x2048 fp32 matmuls on the same device and thread count ("peak").

``--deploy`` re-parameterises the backbone (every module's ``switch_to_deploy()``) and folds
Conv+BN pairs in the rest of the detector (mmcv ``fuse_conv_bn``); the deployed model is the one
timed. Its outputs are checked against the non-deployed model on the same input: the relative
difference of one output is ``max|ref - dep| / max|ref|``, and the reported value is the max over
the backbone's outputs (``deploy_check.max_rel_diff``; the neck's outputs in ``neck_max_rel_diff``).

JSON schema (``--out``; ``schema_version`` 1; every key always present, ``null`` when not
applicable):

* ``schema_version`` (int), ``timed_unit`` (str, what one timed iteration ran)
* ``settings``: ``config``, ``checkpoint``, ``cfg_options`` (dict or null), ``mode``
  ('test_step' | 'backbone_only'), ``input_hw`` [H, W], ``batch_size``, ``warmup``, ``iters``,
  ``threads`` (torch.get_num_threads() during timing), ``device`` ('cpu' | 'cuda'), ``deploy``
  (bool), ``channels_last`` (bool), ``dtype`` ('float32' | 'float16')
* ``latency_ms``: ``median``, ``mean``, ``p90``, ``min``, ``max``, ``std`` (population, ddof=0),
  ``samples`` (list of every timed iteration) -- per batch
* ``fps``: images per second = 1000 / median_ms * batch_size
* ``params``: ``model``, ``backbone`` (counts of the timed model)
* ``macs``: ``backbone_per_image``, ``backbone_per_batch``, ``counter`` (str)
* ``flops``: ``backbone_per_image``, ``backbone_per_batch`` (= 2 x macs)
* ``achieved_gflops`` (backbone-only mode, else null)
* ``peak``: ``matmul_gflops`` (best fp32 matmul), ``matmul_size``, ``share`` (achieved / peak,
  backbone-only mode, else null)
* ``deploy_check``: null without --deploy, else ``max_rel_diff``, ``neck_max_rel_diff`` (null in
  backbone-only mode or without a neck), ``compared`` (str)
* ``timed_model``: ``deployed`` (bool), ``backbone_batchnorm_layers`` (BatchNorm modules left in
  the timed backbone), ``memory_format`` ('channels_last' | 'contiguous')
* ``versions``: ``python``, ``torch``, ``mmcv``, ``mmdet``, ``mmengine``, ``mmlightbb``
* ``hardware``: ``cpu`` (model name from /proc/cpuinfo), ``gpu`` (name, or null on CPU)

Not implemented: ``--profile`` (per-op profiling); use ``torch.profiler`` around
:func:`time_fn` if needed.
"""
import copy
import json
import math
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .complexity import count_macs, count_params

SCHEMA_VERSION = 1
MACS_COUNTER = ('mmengine FlopAnalyzer, conv + linear layers of the backbone '
                '(1 multiply-add = 1 MAC; FLOPs = 2 x MACs)')


# ------------------------------------------------------------------------------- validation
def validate_settings(iters, warmup, batch_size=1, threads=None, shape=None, device='cpu',
                      fp16=False):
    """Raise ValueError naming the bad setting (before anything is built or timed)."""
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f'iters must be an int >= 1 (timed iterations), got {iters!r}')
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f'warmup must be an int >= 0 (discarded iterations), got {warmup!r}')
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f'batch size must be an int >= 1, got {batch_size!r}')
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f'threads must be an int >= 1, got {threads!r}')
    if shape is not None and (len(shape) != 2 or any(int(s) < 1 for s in shape)):
        raise ValueError(f'shape must be two positive ints H W, got {shape!r}')
    if device not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda requested but torch.cuda.is_available() is False '
                         f'(torch {torch.__version__}); use --device cpu')
    if fp16 and device != 'cuda':
        raise ValueError('--fp16 is CUDA only (CPU half-precision convs are slow emulation and '
                         'not a meaningful latency); use --device cuda or drop --fp16')


# ----------------------------------------------------------------------------------- stats
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


class _Progress:
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
    validate_settings(iters, warmup)
    cuda = device == 'cuda'
    bar = _Progress(warmup + iters, 'benchmark (warm-up + timed)', progress)
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


# --------------------------------------------------------------------------- model building
def find_test_scale(cfg) -> Optional[Tuple[int, int]]:
    """(H, W) of the first ``Resize`` in the test pipeline (mmdet's scale is (w, h)), or None."""
    def walk(node):
        if isinstance(node, dict):
            if str(node.get('type', '')).split('.')[-1] == 'Resize' and 'scale' in node:
                scale = node['scale']
                if isinstance(scale, int):
                    return scale, scale
                if isinstance(scale, (tuple, list)) and len(scale) == 2:
                    return int(scale[1]), int(scale[0])
            for key in ('dataset', 'datasets', 'pipeline'):
                if key in node:
                    found = walk(node[key])
                    if found:
                        return found
        elif isinstance(node, (list, tuple)):
            for item in node:
                found = walk(item)
                if found:
                    return found
        return None

    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key, None)
        if loader:
            found = walk(loader.get('dataset', {}))
            if found:
                return found
    return walk(cfg.get('test_pipeline', None))


def build_detector(config: str, checkpoint: Optional[str] = None,
                   cfg_options: Optional[dict] = None):
    """(model in eval mode on CPU, cfg): ``MODELS.build(cfg.model)`` + optional checkpoint."""
    import mmlightbb  # noqa: F401  (registers the backbones)
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from .config import load_config
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    return model, cfg


def deploy_model(model: nn.Module) -> nn.Module:
    """In place: backbone ``switch_to_deploy()`` and mmcv ``fuse_conv_bn`` on the other parts."""
    from mmcv.cnn import fuse_conv_bn
    backbone = getattr(model, 'backbone', None)
    if backbone is not None:
        if hasattr(backbone, 'switch_to_deploy'):
            backbone.switch_to_deploy()
        else:
            for module in list(backbone.modules()):
                if hasattr(module, 'switch_to_deploy'):
                    module.switch_to_deploy()
        for name, child in model.named_children():
            if name not in ('backbone', 'data_preprocessor'):
                fuse_conv_bn(child)
    else:  # a bare backbone
        if hasattr(model, 'switch_to_deploy'):
            model.switch_to_deploy()
    return model.eval()


def _flat(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    return []


def max_rel_diff(ref, out) -> float:
    """Max over outputs of ``max|ref - out| / max|ref|``."""
    refs, outs = _flat(ref), _flat(out)
    if len(refs) != len(outs) or not refs:
        raise ValueError(f'outputs differ in structure: {len(refs)} vs {len(outs)} tensors')
    worst = 0.0
    for a, b in zip(refs, outs):
        a, b = a.detach().float(), b.detach().float()
        worst = max(worst, ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item())
    return worst


def make_batch(batch_size: int, shape: Sequence[int], in_channels: int = 3, seed: int = 0,
               device: str = 'cpu') -> dict:
    """A ``test_step`` batch: random uint8 CxHxW images and DetDataSamples of that size."""
    from mmdet.structures import DetDataSample
    h, w = int(shape[0]), int(shape[1])
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (in_channels, h, w), generator=gen,
                                    dtype=torch.uint8).to(device))
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                 pad_shape=(h, w), batch_input_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _in_channels(model) -> int:
    backbone = getattr(model, 'backbone', model)
    return int(getattr(backbone, 'in_channels', 3) or 3)


def _count_bn(module: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in module.modules())


def _versions() -> Dict[str, Optional[str]]:
    out = dict(python=platform.python_version(), torch=torch.__version__)
    for name in ('mmcv', 'mmdet', 'mmengine', 'mmlightbb'):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # pragma: no cover - a missing package is reported as null
            out[name] = None
    return out


def _cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.lower().startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown'


# ------------------------------------------------------------------------------ benchmark
def benchmark(model: nn.Module, shape: Sequence[int], batch_size: int = 1, backbone_only=False,
              warmup: int = 5, iters: int = 20, threads: Optional[int] = None,
              device: str = 'cpu', deploy: bool = False, channels_last: bool = False,
              fp16: bool = False, peak_size: int = 2048, progress: bool = True,
              config: Optional[str] = None, checkpoint: Optional[str] = None,
              cfg_options: Optional[dict] = None, return_model: bool = False):
    """Benchmark a built detector (eval mode, CPU, fp32); returns the result dict (see module doc).

    ``model`` is not modified: a deep copy is (deployed,) moved and timed. With ``return_model``
    returns ``(results, timed_model)``. ``threads`` applies during the call only.
    """
    shape = tuple(int(s) for s in shape)
    validate_settings(iters, warmup, batch_size, threads, shape, device, fp16)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _benchmark(model, shape, batch_size, backbone_only, warmup, iters, device, deploy,
                          channels_last, fp16, peak_size, progress, config, checkpoint,
                          cfg_options, return_model)
    finally:
        torch.set_num_threads(threads_before)  # the caller's setting is left as it was


def _benchmark(model, shape, batch_size, backbone_only, warmup, iters, device, deploy,
               channels_last, fp16, peak_size, progress, config, checkpoint, cfg_options,
               return_model):
    threads_used = torch.get_num_threads()
    model = model.eval()
    if getattr(model, 'backbone', None) is None:
        raise ValueError(f'{type(model).__name__} has no .backbone; pass a detector')
    mode = 'backbone_only' if backbone_only else 'test_step'

    # the backbone input, normalised by the model's own preprocessor (CPU, fp32)
    batch = make_batch(batch_size, shape, _in_channels(model))
    with torch.no_grad():
        x = model.data_preprocessor(copy.copy(batch), False)['inputs'].float()

    # --deploy: deploy a copy, check it against the original on the same input (CPU, fp32)
    timed = copy.deepcopy(model)
    deploy_check = None
    if deploy:
        timed = deploy_model(timed)
        with torch.no_grad():
            diff = max_rel_diff(model.backbone(x), timed.backbone(x))
            neck_diff = None
            if not backbone_only and getattr(model, 'neck', None) is not None:
                neck_diff = max_rel_diff(model.extract_feat(x), timed.extract_feat(x))
        deploy_check = dict(
            max_rel_diff=diff, neck_max_rel_diff=neck_diff,
            compared=('backbone outputs' + ('' if neck_diff is None else ' (and neck outputs)') +
                      f' of the deployed vs the original model on one {batch_size}x'
                      f'{x.shape[1]}x{shape[0]}x{shape[1]} preprocessed input, fp32 CPU'))

    # complexity of the timed model (CPU, fp32, before any memory-format / dtype change)
    macs = count_macs(timed.backbone, (1, x.shape[1], shape[0], shape[1]), conv_linear_only=True)
    params = dict(model=count_params(timed), backbone=count_params(timed.backbone))

    # device, memory format, dtype
    dtype = 'float16' if fp16 else 'float32'
    timed = timed.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        timed = timed.to(memory_format=torch.channels_last)
    if backbone_only:
        xin = x.to(device).contiguous(memory_format=memory_format)
        if fp16:
            timed = timed.half()
            xin = xin.half()
        backbone = timed.backbone
        fn = lambda: backbone(xin)  # noqa: E731
        unit = (f'model.backbone(x) on a {batch_size}x{x.shape[1]}x{shape[0]}x{shape[1]} '
                f'{dtype} tensor already normalised and on {device}')
    else:
        if channels_last:  # the preprocessor stacks NCHW-contiguous; hand the backbone NHWC
            timed.backbone.register_forward_pre_hook(
                lambda mod, args: tuple(a.contiguous(memory_format=torch.channels_last)
                                        if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                                        for a in args))
        dev_batch = make_batch(batch_size, shape, _in_channels(model), device=device)

        def fn():
            if fp16:
                with torch.autocast('cuda', dtype=torch.float16):
                    return timed.test_step(dict(dev_batch))
            return timed.test_step(dict(dev_batch))
        unit = (f'model.test_step(batch) = data_preprocessor + backbone + neck + head + '
                f'post-processing/NMS on {batch_size} uint8 {shape[0]}x{shape[1]} image(s) '
                f'already on {device}' + (' (fp16 autocast)' if fp16 else ''))

    samples = time_fn(fn, iters, warmup, device, progress)
    latency, fps = summarize(samples, batch_size)
    median_s = latency['median'] / 1000.0

    peak = matmul_peak_gflops(device, peak_size)
    achieved = 2.0 * macs * batch_size / median_s / 1e9 if backbone_only else None
    results = dict(
        schema_version=SCHEMA_VERSION,
        timed_unit=unit,
        settings=dict(config=config, checkpoint=checkpoint, cfg_options=cfg_options, mode=mode,
                      input_hw=list(shape), batch_size=batch_size, warmup=warmup, iters=iters,
                      threads=threads_used, device=device, deploy=bool(deploy),
                      channels_last=bool(channels_last), dtype=dtype),
        latency_ms=latency,
        fps=fps,
        params=params,
        macs=dict(backbone_per_image=macs, backbone_per_batch=macs * batch_size,
                  counter=MACS_COUNTER),
        flops=dict(backbone_per_image=2 * macs, backbone_per_batch=2 * macs * batch_size),
        achieved_gflops=achieved,
        peak=dict(matmul_gflops=peak, matmul_size=peak_size,
                  share=None if achieved is None else achieved / peak),
        deploy_check=deploy_check,
        timed_model=dict(deployed=bool(deploy), backbone_batchnorm_layers=_count_bn(timed.backbone),
                         memory_format='channels_last' if channels_last else 'contiguous'),
        versions=_versions(),
        hardware=dict(cpu=_cpu_name(),
                      gpu=torch.cuda.get_device_name() if device == 'cuda' else None),
    )
    return (results, timed) if return_model else results


def run_benchmark(config: str, checkpoint: Optional[str] = None,
                  cfg_options: Optional[dict] = None, shape: Optional[Sequence[int]] = None,
                  **kwargs) -> dict:
    """Build the detector from ``config`` and :func:`benchmark` it (shape: config's test scale)."""
    validate_settings(kwargs.get('iters', 20), kwargs.get('warmup', 5),
                      kwargs.get('batch_size', 1), kwargs.get('threads'), shape,
                      kwargs.get('device', 'cpu'), kwargs.get('fp16', False))
    model, cfg = build_detector(config, checkpoint, cfg_options)
    if shape is None:
        shape = find_test_scale(cfg)
        if shape is None:
            raise ValueError(f'{config}: no Resize scale in the test pipeline; pass --shape H W')
    return benchmark(model, shape, config=config, checkpoint=checkpoint, cfg_options=cfg_options,
                     **kwargs)


# ---------------------------------------------------------------------------------- report
def format_table(res: dict) -> str:
    """The table; every number line ends with input size, batch, threads, device, deploy,
    channels_last and dtype."""
    s = res['settings']
    ctx = (f"| {s['input_hw'][0]}x{s['input_hw'][1]} b{s['batch_size']} "
           f"threads={s['threads']} {s['device']} "
           f"deploy={'on' if s['deploy'] else 'off'} "
           f"channels_last={'on' if s['channels_last'] else 'off'} {s['dtype']}")
    lat = res['latency_ms']
    rows = [(f'latency {k}', f"{lat[k]:.3f} ms") for k in ('median', 'mean', 'p90', 'min',
                                                             'max', 'std')]
    rows.append(('FPS (images/s)', f"{res['fps']:.2f}"))
    rows.append(('params (model)', f"{res['params']['model'] / 1e6:.3f} M"))
    rows.append(('params (backbone)', f"{res['params']['backbone'] / 1e6:.3f} M"))
    rows.append(('backbone MACs/image', f"{res['macs']['backbone_per_image'] / 1e9:.4f} G"))
    rows.append(('backbone FLOPs/image', f"{res['flops']['backbone_per_image'] / 1e9:.4f} G"))
    if res['achieved_gflops'] is not None:
        rows.append(('achieved GFLOP/s', f"{res['achieved_gflops']:.2f}"))
    rows.append(('fp32 matmul peak GFLOP/s', f"{res['peak']['matmul_gflops']:.2f}"))
    if res['peak']['share'] is not None:
        rows.append(('share of peak', f"{100 * res['peak']['share']:.2f} %"))
    if res['deploy_check'] is not None:
        rows.append(('deploy max rel diff', f"{res['deploy_check']['max_rel_diff']:.3e}"))
        if res['deploy_check']['neck_max_rel_diff'] is not None:
            rows.append(('deploy max rel diff (neck)',
                         f"{res['deploy_check']['neck_max_rel_diff']:.3e}"))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"timed unit ({s['mode']}): {res['timed_unit']}",
             f"warm-up {s['warmup']} (discarded), timed {s['iters']}; "
             f"torch threads {s['threads']}; MACs: {res['macs']['counter']}"]
    lines += [f'{name:<{width}}  {value:>{vwidth}}  {ctx}' for name, value in rows]
    return '\n'.join(lines)


def dump_json(res: dict, path: str):
    with open(path, 'w') as f:
        json.dump(res, f, indent=2)
