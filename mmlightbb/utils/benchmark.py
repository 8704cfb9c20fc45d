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

Real images (``--real-images``): instead of the synthetic batch, (warmup + iters) x batch images of
the config's test set (``test_dataloader.dataset`` built from mmdet's ``DATASETS`` with its test
pipeline) are loaded, decoded, resized and packed *before* the clock starts; every iteration then
runs the same timed unit on a different batch of them (still no dataloader, decoding or resizing in
the timed region; the inputs are already on the device). The NMS then sees the boxes a real image
produces, and sizes that vary per image (keep-ratio resizing + ``pad_size_divisor``) vary per
batch; ``input_hw`` is the most frequent preprocessed (padded) batch size, MACs are counted there.

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

``--profile`` (ShuffleNet-V2-style breakdown by operator type): after the timed iterations and the
peak measurement -- never inside them, so the latency numbers are those of an unprofiled model --
the same timed unit runs ``profile_iters`` more times under ``torch.profiler`` (CPU activity, plus
CUDA on CUDA; ``record_shapes`` for the conv rule). The time of an event is its *self* time (CPU;
on CUDA the self device time of the kernels it launched), summed over every recorded event: the
dispatcher ops (``aten::``, ``torchvision::``) and the scopes of custom autograd Functions such as
mmcv's ``NMSop`` or ``RoIAlignFunction``, whose self time is their compiled kernel. Python code
between ops is in no event, so it is in neither the categories nor the shares
(``op_ms_per_iter`` vs ``wall_ms_per_iter`` shows how much that is). Each event is charged to the
category of its *outermost* recognised ancestor (itself included), so e.g. the ``aten::copy_``
inside a conv counts as conv and the aten ops inside mmcv's ``NMSop`` as NMS:

* NMS: an event whose name has "nms" at the start of a word (``NMSop``, ``torchvision::nms``).
  Python frames are not traced (torch 2.13's Python tracer, ``with_stack=True``, intermittently
  yields undecodable event names), so the box offsetting and indexing that ``batched_nms`` does
  in Python around the kernel count as their op types (element-wise, memory/reshape, other)
* conv / depthwise conv: ``aten::conv*``/``*convolution*``; depthwise when every filter sees one
  input channel (weight shape[1] == 1, i.e. ``groups == in_channels``) and in_channels > 1;
  other grouped and transposed convs count as conv
* matmul/linear: linear, (b)mm, addmm, matmul, einsum, scaled-dot-product attention
* norm: batch/layer/group/instance/RMS norm; activation: ReLU family, GELU, SiLU, sigmoid,
  hard-swish, tanh, softmax, ...; element-wise: arithmetic, comparisons, clamp, where, fill
* memory/reshape: copies and casts, cat/stack, permute/transpose/view/reshape, contiguous,
  slicing, split, index/gather, pad, repeat, allocation (empty/zeros), nearest upsampling
* other: everything else (pooling, reductions, sort/topk, bilinear resizing, RoIAlign, ...)

JSON schema (``--out``; ``schema_version`` 1; every key always present, ``null`` when not
applicable):

* ``schema_version`` (int), ``timed_unit`` (str, what one timed iteration ran)
* ``settings``: ``config``, ``checkpoint``, ``cfg_options`` (dict or null), ``mode``
  ('test_step' | 'backbone_only'), ``input_hw`` [H, W], ``batch_size``, ``warmup``, ``iters``,
  ``threads`` (torch.get_num_threads() during timing), ``device`` ('cpu' | 'cuda'), ``deploy``
  (bool), ``channels_last`` (bool), ``dtype`` ('float32' | 'float16'), ``real_images`` (bool),
  ``profile`` (bool)
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
  the timed backbone), ``memory_format`` ('channels_last' | 'contiguous': what --channels-last
  did to the weights and input), ``backbone_layout`` ('channels_last' | 'contiguous' | 'mixed' |
  'unknown': the layout the backbone's conv layers really received in an untimed call, which
  mmlightbb backbones choose by themselves on CPU), ``conv_inputs_channels_last`` ([channels_last,
  counted] conv inputs; 1x1 maps and channel slices are not counted)
* ``versions``: ``python``, ``torch``, ``mmcv``, ``mmdet``, ``mmengine``, ``mmlightbb``
* ``hardware``: ``cpu`` (model name from /proc/cpuinfo), ``gpu`` (name, or null on CPU)
* ``real_images``: null without --real-images, else ``dataset`` (type), ``test_set_size``,
  ``images_used`` (= (warmup + iters) x batch_size), ``batch_input_hw`` ({"HxW": batches})
* ``profile``: null without --profile, else ``iters`` (profiled iterations), ``time`` ('self CPU
  time' | 'self CUDA time'), ``wall_ms_per_iter`` (with the profiler on), ``op_ms_per_iter`` (sum
  of the categories), ``categories`` ({category: {``ms_per_iter``, ``share``}} in the order above,
  shares of ``op_ms_per_iter`` summing to 1), ``top_ops`` (the 10 largest as ``op``, ``category``,
  ``ms_per_iter``; ``op`` is the outermost recognised op the time was charged to)

Keys were only ever added to schema 1 (``settings.real_images``, ``settings.profile``,
``real_images``, ``profile``, ``timed_model.backbone_layout``,
``timed_model.conv_inputs_channels_last``); a reader of older files should treat them as absent = off.
"""
import collections
import contextlib
import copy
import itertools
import json
import math
import platform
import re
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
                      fp16=False, profile_iters=None):
    """Raise ValueError naming the bad setting (before anything is built or timed);
    ``profile_iters`` is checked when given (i.e. when profiling)."""
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
    if profile_iters is not None and (isinstance(profile_iters, bool)
                                      or not isinstance(profile_iters, int) or profile_iters < 1):
        raise ValueError(f'profile iters must be an int >= 1, got {profile_iters!r}')


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


# --------------------------------------------------------------------------------- profile
PROFILE_CATEGORIES = ('conv', 'depthwise conv', 'matmul/linear', 'norm', 'activation',
                      'element-wise', 'memory/reshape', 'NMS', 'other')
_MATMUL_OPS = frozenset((
    'linear', 'matmul', 'mm', 'bmm', 'addmm', 'addmv', 'addbmm', 'baddbmm', 'mv', 'dot', 'einsum',
    'mkldnn_linear', '_addmm_activation', 'scaled_dot_product_attention',
    '_scaled_dot_product_flash_attention', '_scaled_dot_product_efficient_attention',
    '_scaled_dot_product_flash_attention_for_cpu', '_scaled_dot_product_cudnn_attention'))
_NORM_SUFFIXES = ('batch_norm', 'layer_norm', 'group_norm', 'instance_norm', 'rms_norm')
_ACTIVATION_OPS = frozenset((
    'relu', 'relu6', 'hardtanh', 'gelu', 'silu', 'mish', 'sigmoid', 'hardsigmoid', 'hardswish',
    'leaky_relu', 'elu', 'selu', 'celu', 'prelu', '_prelu_kernel', 'rrelu', 'tanh', 'softplus',
    'softmax', '_softmax', 'log_softmax', '_log_softmax', 'glu', 'threshold'))
_ELEMENTWISE_OPS = frozenset((
    'add', 'sub', 'rsub', 'mul', 'div', 'true_divide', 'floor_divide', 'remainder', 'pow', 'exp',
    'exp2', 'log', 'log2', 'log1p', 'sqrt', 'rsqrt', 'abs', 'neg', 'reciprocal', 'sign', 'square',
    'clamp', 'clamp_min', 'clamp_max', 'clip', 'where', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le',
    'gt', 'ge', 'logical_and', 'logical_or', 'logical_not', 'bitwise_and', 'bitwise_or',
    'bitwise_not', 'fill', 'zero', 'masked_fill', 'lerp', 'addcmul', 'addcdiv', 'floor', 'ceil',
    'round', 'trunc', 'sin', 'cos', 'erf', 'isnan', 'isinf', 'nan_to_num'))
_MEMORY_OPS = frozenset((
    'copy', '_to_copy', 'to', 'clone', 'contiguous', 'cat', '_cat', 'concat', 'concatenate',
    'stack', 'hstack', 'vstack', 'permute', 'transpose', 't', 'view', 'reshape', '_reshape_alias',
    '_unsafe_view', 'flatten', 'unflatten', 'squeeze', 'unsqueeze', 'expand', 'expand_as',
    'as_strided', 'slice', 'select', 'narrow', 'split', 'split_with_sizes', 'chunk', 'unbind',
    'index_select', 'gather', 'index', 'take', 'repeat', 'tile', 'roll', 'flip', 'pad',
    'constant_pad_nd', 'reflection_pad1d', 'reflection_pad2d', 'reflection_pad3d',
    'replication_pad1d', 'replication_pad2d', 'replication_pad3d', '_pad_circular',
    'pixel_shuffle', 'pixel_unshuffle', 'channel_shuffle', 'native_channel_shuffle', 'empty',
    'empty_like', 'empty_strided', 'new_empty', 'new_empty_strided', 'zeros', 'zeros_like',
    'ones', 'ones_like', 'full', 'full_like', 'new_zeros', 'new_ones', 'new_full', 'resize',
    'upsample_nearest1d', 'upsample_nearest2d', 'upsample_nearest3d', '_upsample_nearest_exact2d',
    'detach', 'alias', 'lift_fresh'))
_NMS = re.compile(r'(?<![a-z])nms')  # nms, batched_nms, NMSop; not warnmsg


def op_category(name: str, input_shapes: Sequence = ()) -> Optional[str]:
    """The category of one profiler event by its own name (None: not recognised, so the
    category comes from an enclosing event or is 'other'); see the module doc for the rules."""
    if _NMS.search(name.lower()):
        return 'NMS'
    if not name.startswith('aten::'):
        return None
    op = name[len('aten::'):]
    op = op[:-1] if op.endswith('_') and not op.endswith('__') else op  # in-place variants
    if 'conv' in op and 'convert' not in op:
        shapes = list(input_shapes)
        if ('transpose' not in op and len(shapes) > 1 and len(shapes[0]) > 2
                and len(shapes[1]) > 2 and shapes[1][1] == 1 and shapes[0][1] > 1):
            return 'depthwise conv'
        return 'conv'
    if op in _MATMUL_OPS:
        return 'matmul/linear'
    if op.endswith(_NORM_SUFFIXES) or op.startswith(('_batch_norm', '_native_batch_norm')):
        return 'norm'
    if op in _ACTIVATION_OPS:
        return 'activation'
    if op in _ELEMENTWISE_OPS:
        return 'element-wise'
    if op in _MEMORY_OPS:
        return 'memory/reshape'
    return None


def categorize_events(events, cuda: bool = False) -> Tuple[Dict[str, float], Dict[tuple, float]]:
    """(self time in us per category, per (charged-to op, category)) of profiler events; each
    event is charged to the category of its outermost recognised ancestor (itself included)."""
    resolved: Dict[int, Optional[Tuple[str, str]]] = {}

    def charge(evt):
        path = []
        while evt is not None and id(evt) not in resolved:
            path.append(evt)
            evt = evt.cpu_parent
        inherited = resolved[id(evt)] if evt is not None else None
        for node in reversed(path):
            if inherited is None:
                cat = op_category(node.name, node.input_shapes or ())
                inherited = None if cat is None else (cat, node.name)
            resolved[id(node)] = inherited
        return inherited

    per_cat = {cat: 0.0 for cat in PROFILE_CATEGORIES}
    per_op: Dict[tuple, float] = {}
    for evt in events:
        t = evt.self_device_time_total if cuda else evt.self_cpu_time_total
        cat, op = charge(evt) or ('other', evt.name)
        per_cat[cat] += t
        per_op[(op, cat)] = per_op.get((op, cat), 0.0) + t
    return per_cat, per_op


def profile_ops(fn: Callable[[], object], iters: int = 3, device: str = 'cpu',
                top: int = 10) -> dict:
    """Run ``fn`` ``iters`` times under ``torch.profiler``; time per operator category (the
    ``profile`` entry of the results, see the module doc). Call it after timing, never around it:
    the profiler slows every op down."""
    from torch.profiler import ProfilerActivity, profile
    validate_settings(1, 0, profile_iters=iters)
    cuda = device == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad(), profile(activities=activities, record_shapes=True) as prof:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        if cuda:
            torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - start) * 1000.0 / iters
    per_cat, per_op = categorize_events(prof.events(), cuda)
    total_us = sum(per_cat.values())
    categories = {cat: dict(ms_per_iter=us / 1000.0 / iters,
                            share=us / total_us if total_us > 0 else 0.0)
                  for cat, us in per_cat.items()}
    largest = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return dict(iters=iters, time='self CUDA time' if cuda else 'self CPU time',
                wall_ms_per_iter=wall_ms, op_ms_per_iter=total_us / 1000.0 / iters,
                categories=categories,
                top_ops=[dict(op=op, category=cat, ms_per_iter=us / 1000.0 / iters)
                         for (op, cat), us in largest])


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


def load_test_batches(cfg, num_batches: int, batch_size: int, config: str = 'the config'
                      ) -> Tuple[List[dict], dict]:
    """(``num_batches`` test_step batches of real images, info): the first num_batches x
    batch_size samples of ``cfg.test_dataloader.dataset`` through its test pipeline, in order,
    collated as the test dataloader does (``pseudo_collate``). All decoding and resizing happens
    here, before any timing.

    Raises ValueError (naming both numbers and the fix) when the test set is smaller.
    """
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    loader = cfg.get('test_dataloader', None)
    if not loader or 'dataset' not in loader:
        raise ValueError(f'--real-images: {config} has no test_dataloader.dataset')
    with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints; stdout is the table's
        dataset = DATASETS.build(copy.deepcopy(loader['dataset']))
    needed, available = num_batches * batch_size, len(dataset)
    if needed > available:
        raise ValueError(
            f'--real-images needs (warmup + iters) x batch = {needed} test images but the test '
            f'set of {config} has {available}; lower --iters/--warmup/--batch-size or drop '
            '--real-images')
    bar = _Progress(needed, 'loading test images (not timed)')
    samples = []
    for idx in range(needed):
        samples.append(dataset[idx])
        bar.update()
    batches = [pseudo_collate(samples[i:i + batch_size]) for i in range(0, needed, batch_size)]
    info = dict(dataset=type(dataset).__name__, test_set_size=available, images_used=needed)
    return batches, info


def _in_channels(model) -> int:
    backbone = getattr(model, 'backbone', model)
    return int(getattr(backbone, 'in_channels', 3) or 3)


def _count_bn(module: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in module.modules())


def conv_input_layouts(backbone: nn.Module, x: torch.Tensor) -> Tuple[int, int]:
    """(channels_last, counted): the layout of every conv layer's input in one untimed
    ``backbone(x)``. This is what the timed backbone really computes on, whoever chose it
    (``--channels-last``, or a backbone that turns its CPU input channels_last by itself). Inputs
    that are both layouts (1x1 maps) or neither (channel slices) are not counted."""
    layouts: List[bool] = []

    def record(module, args):
        t = args[0] if args else None
        if isinstance(t, torch.Tensor) and t.dim() == 4:
            nhwc, nchw = t.is_contiguous(memory_format=torch.channels_last), t.is_contiguous()
            if nhwc != nchw:
                layouts.append(nhwc)

    handles = [m.register_forward_pre_hook(record) for m in backbone.modules()
               if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for handle in handles:
            handle.remove()
    return sum(layouts), len(layouts)


def backbone_layout(channels_last: int, counted: int) -> str:
    """'channels_last' | 'contiguous' | 'mixed' | 'unknown' (no conv input counted)."""
    if counted == 0:
        return 'unknown'
    return {channels_last: 'mixed', counted: 'channels_last', 0: 'contiguous'}[channels_last]


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
def benchmark(model: nn.Module, shape: Optional[Sequence[int]], batch_size: int = 1,
              backbone_only=False, warmup: int = 5, iters: int = 20,
              threads: Optional[int] = None, device: str = 'cpu', deploy: bool = False,
              channels_last: bool = False, fp16: bool = False, peak_size: int = 2048,
              progress: bool = True, config: Optional[str] = None,
              checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
              return_model: bool = False, batches: Optional[List[dict]] = None,
              real_images: Optional[dict] = None, profile: bool = False,
              profile_iters: int = 3):
    """Benchmark a built detector (eval mode, CPU, fp32); returns the result dict (see module doc).

    ``model`` is not modified: a deep copy is (deployed,) moved and timed. With ``return_model``
    returns ``(results, timed_model)``. ``threads`` applies during the call only. ``batches``
    (test_step batches on CPU, e.g. from :func:`load_test_batches`, described by
    ``real_images``) replace the synthetic batch: iteration i runs on ``batches[i % len]``, and
    ``shape`` is then unused. ``profile`` adds the op-type breakdown of ``profile_iters`` more
    iterations run after the timed ones.
    """
    if batches is None:
        shape = tuple(int(s) for s in shape)
    elif not batches:
        raise ValueError('batches is empty; pass at least one batch or none for a synthetic one')
    validate_settings(iters, warmup, batch_size, threads, shape if batches is None else None,
                      device, fp16, profile_iters if profile else None)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _benchmark(model, shape, batch_size, backbone_only, warmup, iters, device, deploy,
                          channels_last, fp16, peak_size, progress, config, checkpoint,
                          cfg_options, return_model, batches, real_images,
                          profile_iters if profile else None)
    finally:
        torch.set_num_threads(threads_before)  # the caller's setting is left as it was


def _benchmark(model, shape, batch_size, backbone_only, warmup, iters, device, deploy,
               channels_last, fp16, peak_size, progress, config, checkpoint, cfg_options,
               return_model, batches, real_images, profile_iters):
    threads_used = torch.get_num_threads()
    model = model.eval()
    if getattr(model, 'backbone', None) is None:
        raise ValueError(f'{type(model).__name__} has no .backbone; pass a detector')
    mode = 'backbone_only' if backbone_only else 'test_step'
    real = batches is not None
    if not real:
        batches = [make_batch(batch_size, shape, _in_channels(model))]

    # the backbone inputs, normalised by the model's own preprocessor (CPU, fp32); with real
    # images the most frequent padded size stands for the input size (MACs, deploy check)
    with torch.no_grad():
        xs = [model.data_preprocessor(copy.copy(b), False)['inputs'].float() for b in batches]
    sizes = collections.Counter(tuple(x.shape[-2:]) for x in xs)
    shape = sizes.most_common(1)[0][0]
    x = next(x for x in xs if tuple(x.shape[-2:]) == shape)
    if real:
        real_images = dict(real_images or {},
                           batch_input_hw={f'{h}x{w}': n for (h, w), n in sizes.items()})

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
                      f' of the deployed vs the original model on one {x.shape[0]}x'
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
    images = (f'{batch_size} real test image(s) per iteration (a different batch each time, '
              'decoded and resized before timing)' if real else
              f'{batch_size} uint8 {shape[0]}x{shape[1]} image(s)')
    if backbone_only:
        xins = [t.to(device).contiguous(memory_format=memory_format) for t in xs]
        if fp16:
            timed = timed.half()
            xins = [t.half() for t in xins]
        backbone, feed = timed.backbone, itertools.cycle(xins)
        fn = lambda: backbone(next(feed))  # noqa: E731
        unit = (f'model.backbone(x) on a {batch_size}x{x.shape[1]}x{shape[0]}x{shape[1]} '
                f'{dtype} tensor already normalised and on {device}'
                + (f' (the preprocessed {images})' if real else ''))
    else:
        if channels_last:  # the preprocessor stacks NCHW-contiguous; hand the backbone NHWC
            timed.backbone.register_forward_pre_hook(
                lambda mod, args: tuple(a.contiguous(memory_format=torch.channels_last)
                                        if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                                        for a in args))
        feed = itertools.cycle([dict(b, inputs=[t.to(device) for t in b['inputs']])
                                for b in batches])

        def fn():
            if fp16:
                with torch.autocast('cuda', dtype=torch.float16):
                    return timed.test_step(dict(next(feed)))
            return timed.test_step(dict(next(feed)))
        unit = (f'model.test_step(batch) = data_preprocessor + backbone + neck + head + '
                f'post-processing/NMS on {images} already on {device}'
                + (' (fp16 autocast)' if fp16 else ''))

    probe = xins[0] if backbone_only else x.to(device)  # as the preprocessor hands it over
    with (torch.autocast('cuda', dtype=torch.float16) if fp16 and not backbone_only
          else contextlib.nullcontext()):
        layouts = conv_input_layouts(timed.backbone, probe)
    samples = time_fn(fn, iters, warmup, device, progress)
    latency, fps = summarize(samples, batch_size)
    median_s = latency['median'] / 1000.0

    peak = matmul_peak_gflops(device, peak_size)
    profile = None if profile_iters is None else profile_ops(fn, profile_iters, device)
    achieved = 2.0 * macs * batch_size / median_s / 1e9 if backbone_only else None
    results = dict(
        schema_version=SCHEMA_VERSION,
        timed_unit=unit,
        settings=dict(config=config, checkpoint=checkpoint, cfg_options=cfg_options, mode=mode,
                      input_hw=list(shape), batch_size=batch_size, warmup=warmup, iters=iters,
                      threads=threads_used, device=device, deploy=bool(deploy),
                      channels_last=bool(channels_last), dtype=dtype, real_images=real,
                      profile=profile is not None),
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
                         memory_format='channels_last' if channels_last else 'contiguous',
                         backbone_layout=backbone_layout(*layouts),
                         conv_inputs_channels_last=list(layouts)),
        versions=_versions(),
        hardware=dict(cpu=_cpu_name(),
                      gpu=torch.cuda.get_device_name() if device == 'cuda' else None),
        real_images=real_images if real else None,
        profile=profile,
    )
    return (results, timed) if return_model else results


def run_benchmark(config: str, checkpoint: Optional[str] = None,
                  cfg_options: Optional[dict] = None, shape: Optional[Sequence[int]] = None,
                  real_images: bool = False, **kwargs) -> dict:
    """Build the detector from ``config`` and :func:`benchmark` it, at ``shape`` (default: the
    config's test scale) or, with ``real_images``, on images of the config's test set."""
    iters, warmup = kwargs.get('iters', 20), kwargs.get('warmup', 5)
    batch_size = kwargs.get('batch_size', 1)
    validate_settings(iters, warmup, batch_size, kwargs.get('threads'), shape,
                      kwargs.get('device', 'cpu'), kwargs.get('fp16', False),
                      kwargs.get('profile_iters', 3) if kwargs.get('profile') else None)
    if real_images and shape is not None:
        raise ValueError('--shape and --real-images exclude each other (the test pipeline sizes '
                         'real images); drop one')
    model, cfg = build_detector(config, checkpoint, cfg_options)
    batches = info = None
    if real_images:
        batches, info = load_test_batches(cfg, warmup + iters, batch_size, config)
    elif shape is None:
        shape = find_test_scale(cfg)
        if shape is None:
            raise ValueError(f'{config}: no Resize scale in the test pipeline; pass --shape H W')
    return benchmark(model, shape, config=config, checkpoint=checkpoint, cfg_options=cfg_options,
                     batches=batches, real_images=info, **kwargs)


# ---------------------------------------------------------------------------------- report
def format_table(res: dict) -> str:
    """The table; every number line ends with input size ("real HxW" with real images), batch,
    threads, device, deploy, channels_last and dtype; with a profile, one line per category.
    ``channels_last`` is ``on`` (--channels-last), ``auto`` (the backbone ran channels_last by
    itself), ``mixed`` (some of its convs did) or ``off``."""
    s = res['settings']
    layout = res['timed_model'].get('backbone_layout')
    channels_last = ('on' if s['channels_last'] else
                     {'channels_last': 'auto', 'mixed': 'mixed'}.get(layout, 'off'))
    ctx = (f"| {'real ' if s['real_images'] else ''}{s['input_hw'][0]}x{s['input_hw'][1]} "
           f"b{s['batch_size']} "
           f"threads={s['threads']} {s['device']} "
           f"deploy={'on' if s['deploy'] else 'off'} "
           f"channels_last={channels_last} {s['dtype']}")
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
    prof = res['profile']
    if prof is not None:
        for cat, entry in prof['categories'].items():
            rows.append((f'profile {cat}', f"{entry['ms_per_iter']:.3f} ms "
                         f"{100 * entry['share']:5.1f} %"))
        rows.append(('profile ops / wall', f"{prof['op_ms_per_iter']:.3f} / "
                     f"{prof['wall_ms_per_iter']:.3f} ms"))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"timed unit ({s['mode']}): {res['timed_unit']}",
             f"warm-up {s['warmup']} (discarded), timed {s['iters']}; "
             f"torch threads {s['threads']}; MACs: {res['macs']['counter']}"]
    if prof is not None:
        lines.append(f"profile: {prof['time']} per operator type over {prof['iters']} extra "
                     'iterations after the timed ones (not in the latency numbers); ms per '
                     'iteration and share of the profiled op time')
    lines += [f'{name:<{width}}  {value:>{vwidth}}  {ctx}' for name, value in rows]
    return '\n'.join(lines)


def dump_json(res: dict, path: str):
    with open(path, 'w') as f:
        json.dump(res, f, indent=2)
