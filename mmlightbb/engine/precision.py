"""Reduced precision for inference and training: which one a device really runs, and the autocast
context that runs it.

* ``fp32``: no autocast.
* ``bf16``: ``torch.autocast(device, dtype=torch.bfloat16)``. On CPU only where the CPU has native
  bf16 arithmetic (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo, and oneDNN's bf16 kernels
  available to torch); elsewhere bf16 is emulated and slower than fp32, so it falls back to fp32
  with a one-line warning (:func:`resolve_precision`). On CUDA where
  ``torch.cuda.is_bf16_supported()``.
* ``fp16``: ``torch.autocast('cuda', dtype=torch.float16)``, CUDA only (CPU half-precision convs
  are slow emulation and not a meaningful latency).

Weights and inputs stay fp32 under autocast; convs, linears and matmuls run in the reduced dtype
and norms/softmax in fp32 (torch's autocast op lists). Every mmlightbb backbone runs under it in
training and deployed form (``tests/test_precision.py``).
"""
import contextlib
import functools
import warnings
from typing import List, Tuple

import torch
from mmdet.registry import LOOPS
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from mmengine.runner import TestLoop
from torch import nn

__all__ = ['PRECISIONS', 'AUTOCAST_DTYPES', 'cpu_bf16_support', 'resolve_precision',
           'autocast_context', 'compute_modules', 'autocast_compute',
           'AutocastTestLoop', 'use_autocast_test_loop', 'replaced_test_step',
           'CPUBF16OptimWrapper']

PRECISIONS = ('fp32', 'bf16', 'fp16')
AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
TORCH_DTYPE_NAMES = {'fp32': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}


def _cpu_flags() -> set:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def cpu_bf16_support() -> Tuple[bool, str]:
    """(native, reason): whether this CPU runs bf16 natively, and what was found."""
    flags = _cpu_flags()
    native = sorted(flags & {'avx512_bf16', 'amx_bf16'})
    try:
        onednn = bool(torch.backends.mkldnn.is_available()
                      and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    if native and onednn:
        return True, f"CPU has {' and '.join(native)}, oneDNN bf16 kernels available"
    if not flags:
        return False, 'no /proc/cpuinfo flags to find avx512_bf16/amx_bf16 in'
    if not native:
        return False, 'the CPU has neither avx512_bf16 nor amx_bf16 (bf16 would be emulated)'
    return False, "torch's oneDNN has no bf16 kernels on this build"


def resolve_precision(precision: str, device: str = 'cpu', warn: bool = True) -> Tuple[str, str]:
    """(precision that will run, note). ``bf16`` without native support falls back to ``fp32``
    (one-line warning unless ``warn=False``); ``fp16`` on CPU and unknown names raise ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == 'fp32':
        return 'fp32', 'fp32'
    if precision == 'fp16':
        if device != 'cuda':
            raise ValueError('fp16 is CUDA only (CPU half-precision convs are slow emulation and '
                             'not a meaningful latency); on CPU use bf16 (CPUs with avx512_bf16/'
                             'amx_bf16) or fp32')
        return 'fp16', 'fp16 autocast (CUDA)'
    if device == 'cuda':
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        reason = 'CUDA bf16' if ok else 'this GPU has no bf16 support'
    else:
        ok, reason = cpu_bf16_support()
    if ok:
        return 'bf16', f'bf16 autocast ({reason})'
    note = f'bf16 requested but not native here ({reason}); running fp32'
    if warn:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    return 'fp32', note


def autocast_context(precision: str, device: str = 'cpu'):
    """``torch.autocast`` for a resolved ``precision`` (``fp32``: a null context)."""
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=AUTOCAST_DTYPES[precision])


def compute_modules(model: nn.Module) -> List[nn.Module]:
    """The parts of a detector that compute on images and feature maps: backbone, neck, the dense
    heads' forward and an RoI head's bbox/mask heads; the model itself when it has no backbone.
    What is left (pre-processing, box decoding, NMS, RoIAlign) is post-processing."""
    if not isinstance(getattr(model, 'backbone', None), nn.Module):
        return [model]
    modules = [getattr(model, name) for name in ('backbone', 'neck', 'bbox_head', 'rpn_head')
               if isinstance(getattr(model, name, None), nn.Module)]
    roi_head = getattr(model, 'roi_head', None)
    for name in ('bbox_head', 'mask_head'):
        head = getattr(roi_head, name, None)
        if isinstance(head, nn.ModuleList):  # Cascade R-CNN: one head per stage
            modules.extend(head)
        elif isinstance(head, nn.Module):
            modules.append(head)
    return modules


def _to_fp32(value):
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        converted = [_to_fp32(v) for v in value]
        return type(value)(converted) if type(value) in (list, tuple) else converted
    if isinstance(value, dict):
        return {k: _to_fp32(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def autocast_compute(model: nn.Module, precision: str, device: str = 'cpu'):
    """Within the block the :func:`compute_modules` of ``model`` run under autocast in
    ``precision`` and hand fp32 outputs on; post-processing runs in fp32.

    mmcv's CPU kernels of NMS and RoIAlign take fp32 only, and the metrics take fp32 boxes, so a
    whole ``test_step`` under autocast fails on CPU; here only the modules that compute are cast.
    ``fp32``: nothing changes. The hooks are removed when the block ends.
    """
    if precision == 'fp32':
        yield model
        return
    dtype = AUTOCAST_DTYPES[precision]
    active = []

    def enter(module, args):
        context = torch.autocast(device, dtype=dtype)
        context.__enter__()
        active.append(context)

    def leave(module, args, output):
        active.pop().__exit__(None, None, None)
        return _to_fp32(output)

    handles = []
    for module in compute_modules(model):
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        while active:  # a forward that raised left its autocast open
            active.pop().__exit__(None, None, None)


@LOOPS.register_module()
class AutocastTestLoop(TestLoop):
    """mmengine's ``TestLoop`` that runs the detector's backbone, neck and heads under autocast in
    ``precision`` (``'bf16'``: CPUs with avx512_bf16/amx_bf16 and CUDA; ``'fp16'``: CUDA) and the
    post-processing in fp32 (:func:`autocast_compute`). Select it with
    ``test_cfg=dict(type='AutocastTestLoop', precision='bf16')`` (``tools/test.py --precision``
    does)."""

    def __init__(self, runner, dataloader, evaluator, precision: str = 'bf16'):
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"AutocastTestLoop: precision must be one of "
                             f"{', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
        super().__init__(runner, dataloader, evaluator)
        self.precision = precision

    def run(self) -> dict:
        model = self.runner.model
        model = model.module if is_model_wrapper(model) else model
        device = next(model.parameters()).device.type
        with autocast_compute(model, self.precision, device):
            return super().run()


def use_autocast_test_loop(cfg, precision: str) -> None:
    """Test ``cfg`` in ``precision`` (as :func:`resolve_precision` resolved it) with
    :class:`AutocastTestLoop`; fp32 leaves ``cfg`` as it is. ValueError for another loop."""
    if precision == 'fp32':
        return
    loop = cfg.get('test_cfg') or dict(type='TestLoop')
    if str(loop.get('type', 'TestLoop')).split('.')[-1] not in ('TestLoop', 'AutocastTestLoop'):
        raise ValueError(f"--precision {precision} needs test_cfg type 'TestLoop', got "
                         f"{loop.get('type')!r}")
    cfg.test_cfg = dict(type='AutocastTestLoop', precision=precision)


@contextlib.contextmanager
def replaced_test_step(model, test_step):
    """Within the block ``model.test_step`` is ``test_step``; afterwards the model is as it was
    (its class's test_step, or the instance attribute set before). Only this instance changes."""
    own = vars(model).get('test_step')
    model.test_step = test_step
    try:
        yield model
    finally:
        if own is None:
            del model.test_step  # the class's test_step again
        else:
            model.test_step = own


@OPTIM_WRAPPERS.register_module()
class CPUBF16OptimWrapper(OptimWrapper):
    """The optimizer wrapper that trains in bf16 on CPU (``tools/train.py --amp`` without CUDA).

    mmengine 0.10.7's ``AmpOptimWrapper`` asserts a GPU/NPU/MLU, so it cannot train on CPU. This
    is the stock ``OptimWrapper`` whose forward (``optim_context``: data preprocessor + loss) runs
    under ``torch.autocast('cpu', dtype=torch.bfloat16)``. bf16 has fp32's exponent range, so no
    loss scaling is needed; weights, gradients and optimizer state stay fp32.
    """

    @contextlib.contextmanager
    def optim_context(self, model):
        with super().optim_context(model):
            with torch.autocast('cpu', dtype=torch.bfloat16):
                yield
