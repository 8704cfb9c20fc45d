"""Per-operator-type time shares of a timed unit under ``torch.profiler`` (the rules are in the
package doc)."""
import re
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ['PROFILE_CATEGORIES', 'op_category', 'categorize_events', 'profile_ops']

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

