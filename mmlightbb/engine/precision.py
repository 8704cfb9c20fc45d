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
from typing import Tuple

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from mmengine.structures import BaseDataElement

__all__ = ['PRECISIONS', 'AUTOCAST_DTYPES', 'cpu_bf16_support', 'resolve_precision',
           'autocast_context', 'resolve_test_precision', 'set_test_autocast', 'replaced_test_step',
           'fp32_predictions', 'CPUBF16OptimWrapper']

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


def resolve_test_precision(precision: str, device: str = 'cpu') -> Tuple[str, str]:
    """:func:`resolve_precision` for mmengine's ``TestLoop``, whose autocast is bf16 on CPU and
    fp16 on CUDA: bf16 on CUDA raises ValueError (as fp16 on CPU does)."""
    if precision == 'bf16' and device == 'cuda':
        raise ValueError("bf16 testing is the CPU path (mmengine's TestLoop autocasts CUDA to "
                         'fp16); use --precision fp16 on CUDA')
    return resolve_precision(precision, device, warn=False)


def set_test_autocast(cfg, precision: str):
    """Turn on mmengine's TestLoop autocast (``test_cfg.fp16``) in ``cfg`` for a precision from
    :func:`resolve_test_precision`; fp32 leaves ``cfg`` as it is. ValueError for another loop."""
    if precision == 'fp32':
        return
    loop = cfg.get('test_cfg') or dict(type='TestLoop')
    if str(loop.get('type', 'TestLoop')).split('.')[-1] != 'TestLoop':
        raise ValueError(f"--precision {precision} needs test_cfg type 'TestLoop', got "
                         f"{loop.get('type')!r}")
    loop['fp16'] = True
    cfg.test_cfg = loop


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


def fp32_predictions(model):
    """Within the block (a context manager) ``model.test_step`` hands the evaluator fp32
    predictions: under autocast the boxes and scores come out bf16/fp16, which the metrics'
    ``.numpy()`` cannot take ("Got unsupported ScalarType BFloat16"). Only this model instance is
    changed, and only inside the block (a deep copy made inside would still call this instance's
    test_step)."""
    test_step = model.test_step

    def to_fp32(element):
        for key, value in list(element.items()):
            if isinstance(value, BaseDataElement):
                to_fp32(value)
            elif (isinstance(value, torch.Tensor) and value.is_floating_point()
                  and value.dtype != torch.float32):
                element.set_field(value.float(), key,
                                  field_type='metainfo' if key in element.metainfo_keys()
                                  else 'data')

    def wrapped(data):
        outputs = test_step(data)
        for sample in outputs:
            if isinstance(sample, BaseDataElement):
                to_fp32(sample)
        return outputs
    return replaced_test_step(model, wrapped)


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
