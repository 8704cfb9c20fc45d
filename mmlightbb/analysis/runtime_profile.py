"""Where an OpenVINO model's time goes, from the CPU plugin's own performance counters.

``torch.profiler`` sees a runtime call as one opaque op; OpenVINO compiled with ``PERF_COUNT``
reports, after each inference, every executed node of its optimised graph with its layer type
(``Convolution``, ``Subgraph`` for fused element-wise chains, ``Reorder`` for layout and
precision conversions, ``FakeQuantize`` where an int8 graph quantizes activations, ...), the
kernel it ran (``exec_type``, e.g. ``brgconv_avx512_amx_I8``, ``jit_avx512_FP32``,
``ref_any_FP32``) and its ``real_time``. :func:`profile_openvino` sums them over a few
inferences, per layer type and per kernel precision (the last part of ``exec_type``), so that an
INT8 graph shows how much of its time runs in int8 kernels and what the float and reorder parts
cost (what bounds an INT8/bf16 ratio).
"""
import time
from typing import Dict, Optional

import numpy as np

from .export import compile_openvino

__all__ = ['profile_openvino', 'kernel_precision']

_PRECISIONS = ('I8', 'U8', 'BF16', 'FP16', 'F16', 'FP32', 'F32', 'I32', 'I64', 'BOOL')


def kernel_precision(exec_type: str) -> str:
    """The precision a CPU-plugin kernel ran in, from its ``exec_type`` (``jit_avx512_amx_I8``
    -> 'I8', ``ref_any_FP32`` -> 'FP32'); 'other' when it names none."""
    last = exec_type.rsplit('_', 1)[-1].upper()
    if last in _PRECISIONS:
        return {'F32': 'FP32', 'F16': 'FP16'}.get(last, last)
    return 'other'


def _shares(times_us: Dict[str, float], iters: int) -> Dict[str, dict]:
    total = sum(times_us.values())
    return {k: dict(ms_per_iter=v / 1000.0 / iters, share=v / total if total > 0 else 0.0)
            for k, v in sorted(times_us.items(), key=lambda kv: -kv[1])}


def profile_openvino(path: str, x: np.ndarray, threads: Optional[int] = None,
                     precision: str = 'fp32', iters: int = 3, top: int = 10) -> dict:
    """Run the OpenVINO model ``path`` (compiled as :func:`~.export.load_runtime` runs it, plus
    ``PERF_COUNT``) ``iters`` times on ``x`` after one warm-up; returns ``iters``,
    ``wall_ms_per_iter`` (counters on), ``op_ms_per_iter`` (the nodes' summed real time),
    ``by_type`` and ``by_precision`` ({name: ms_per_iter, share}, largest first) and the ``top``
    slowest nodes (name, layer type, kernel, ms per iteration)."""
    compiled = compile_openvino(path, threads, precision, PERF_COUNT=True)
    request = compiled.create_infer_request()
    request.infer({0: x})  # warm-up: first-inference costs are not the model's
    counters = []
    start = time.perf_counter()
    for _ in range(iters):
        request.infer({0: x})
        counters.append(request.profiling_info)  # those of the last inference
    wall_ms = (time.perf_counter() - start) * 1000.0 / iters
    by_type: Dict[str, float] = {}
    by_precision: Dict[str, float] = {}
    by_node: Dict[tuple, float] = {}
    for info in (info for run in counters for info in run):
        if str(info.status).endswith('NOT_RUN'):
            continue
        us = info.real_time.total_seconds() * 1e6
        by_type[info.node_type] = by_type.get(info.node_type, 0.0) + us
        prec = kernel_precision(info.exec_type)
        by_precision[prec] = by_precision.get(prec, 0.0) + us
        key = (info.node_name, info.node_type, info.exec_type)
        by_node[key] = by_node.get(key, 0.0) + us
    slowest = sorted(by_node.items(), key=lambda kv: -kv[1])[:top]
    return dict(iters=iters, time='OpenVINO real_time per executed node',
                wall_ms_per_iter=wall_ms, op_ms_per_iter=sum(by_type.values()) / 1000.0 / iters,
                by_type=_shares(by_type, iters), by_precision=_shares(by_precision, iters),
                top_nodes=[dict(node=n, type=t, kernel=k, ms_per_iter=us / 1000.0 / iters)
                           for (n, t, k), us in slowest])
