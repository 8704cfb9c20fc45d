"""The memory format in which the backbones run on CPU, and the switch that restores plain NCHW.

On CPU (oneDNN, fp32; ``benchmarks/speed_targets.py`` measures it on the machine it runs on),
convolutions are fastest on channels_last (NHWC) maps: the NCHW path reorders every map to a
blocked layout and back, and large depthwise kernels (>= 11) fall back to a slow reference loop.
ConvNeXt-style blocks also need NHWC for their LayerNorm/Linear, which would otherwise copy at
every permute. So every backbone whose class sets ``cpu_channels_last = True`` turns its CPU input
into channels_last once, keeps that layout through all its layers, and hands the neck NCHW-
contiguous maps. On CUDA nothing changes (cuDNN prefers NCHW for these models).

``cpu_channels_last`` is a plain attribute, so the straightforward (official) form of the same
weights, as the speed benchmark compares against, is one :func:`set_cpu_channels_last` call away.
"""
from typing import Sequence, Tuple

import torch
from torch import nn


def cpu_channels_last(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """``x`` as channels_last when it lives on the CPU and ``enabled``; else unchanged."""
    if enabled and x.device.type == 'cpu' and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def nchw_outputs(maps: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
    """The maps as NCHW-contiguous tensors, the layout mmdet's necks and heads expect
    (a no-op for maps that already are)."""
    return tuple(m.contiguous() for m in maps)


def set_cpu_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """Set ``cpu_channels_last`` on every submodule that has it (``False``: run NCHW as the
    official code does, e.g. as the baseline of a speed comparison). Returns ``model``."""
    for module in model.modules():
        if hasattr(type(module), 'cpu_channels_last'):
            module.cpu_channels_last = enabled
    return model
