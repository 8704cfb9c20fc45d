"""Depthwise large-kernel convolution whose CPU training step is fast.

On CPU, PyTorch computes the forward of a 31x31 depthwise conv quickly (oneDNN on channels_last) but
its weight gradient slowly, in either memory format: many times the forward's cost, enough to
dominate RepLKNet's CPU training step. The same gradient is a correlation of the padded input with
the output gradient, channel by channel and summed over the batch, i.e. one grouped conv with N*C
groups whose "kernel" is the output gradient; that form runs an order of magnitude faster and is
exact up to float summation order.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class _DepthwiseConvFastWeightGrad(torch.autograd.Function):
    """Stride-1 depthwise conv; backward: input grad by PyTorch, weight grad as a grouped conv."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                padding: Tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        ph, pw = ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_out, 1, ctx.padding, 1, c)
        if ctx.needs_input_grad[1]:
            padded = F.pad(x, (pw, pw, ph, ph)).reshape(1, n * c, h + 2 * ph, w + 2 * pw)
            kernels = grad_out.reshape(n * c, 1, *grad_out.shape[2:])
            grad_w = F.conv2d(padded, kernels, groups=n * c)
            grad_w = grad_w.reshape(n, c, *weight.shape[2:]).sum(0).unsqueeze(1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class DepthwiseLargeKernelConv2d(nn.Conv2d):
    """``nn.Conv2d`` for a stride-1, 'same'-padded depthwise conv (same parameters and keys).

    While training on CPU it runs :class:`_DepthwiseConvFastWeightGrad` (see the module doc);
    elsewhere (inference, CUDA) it is exactly ``nn.Conv2d``.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = False):
        super().__init__(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels,
                         bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == 'cpu' and torch.is_grad_enabled() and (
                x.requires_grad or self.weight.requires_grad):
            return _DepthwiseConvFastWeightGrad.apply(x, self.weight, self.bias, self.padding)
        return super().forward(x)
