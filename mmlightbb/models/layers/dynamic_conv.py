"""Dynamic (mixture-of-experts) convolution of ParameterNet, with the official key layout.

``DynamicConv`` = ``routing`` (``nn.Linear(C_in, M)`` with bias, on the global average of the
input) + ``cond_conv`` (M expert kernels in timm 0.4.9 ``CondConv2d``'s layout: one 2-D
``weight`` [M, C_out * C_in/groups * k * k]). Keys and shapes therefore match checkpoints
trained with the official ParameterNet code: ``*.routing.{weight,bias}``, ``*.cond_conv.weight``.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .conv_bn import bn_scale_shift

ROUTING_GATES = ('sigmoid', 'softmax')


class ExpertKernels(nn.Module):
    """The ``cond_conv`` of a ``DynamicConv``: M expert kernels in timm's ``CondConv2d`` layout.

    ``weight`` is [M, P]: row m is expert m's [C_out, C_in/groups, k, k] kernel flattened
    row-major, so ``weight[m].view(weight_shape)`` is a conv kernel. Also holds the conv
    hyper-parameters; the conv itself runs in ``DynamicConv.forward``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, num_experts: int = 4):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'DynamicConv: in_channels={in_channels} and '
                             f'out_channels={out_channels} must both be divisible by '
                             f'groups={groups}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.num_experts = num_experts
        self.weight_shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, math.prod(self.weight_shape)))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        # Each expert gets nn.Conv2d's default init with its own fan-in, as timm's CondConv2d does.
        for expert in self.weight:
            nn.init.kaiming_uniform_(expert.view(self.weight_shape), a=math.sqrt(5))

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, dilation={self.dilation}, '
                f'groups={self.groups}, num_experts={self.num_experts}')


class DynamicConv(nn.Module):
    """ParameterNet's dynamic convolution (CondConv-style), as in the official code.

    The routing weights are ``gate(routing(GAP(x)))`` per sample. ``routing='sigmoid'`` is the
    official code (weights are not normalized; they sum to about M/2 at init); ``'softmax'`` is
    the paper's DY-Conv-style normalization, a different model (same keys, since the routing layer
    stays one Linear rather than the paper's two-layer MLP).

    ``bias=True`` adds a STATIC (not routed) per-channel bias after the mixed conv. Training never
    uses it; ``fold_bn`` creates it, because a BN shift cannot be routed: sigmoid gates do not sum
    to one.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1,
                 bias: bool = False, num_experts: int = 4, routing: str = 'sigmoid'):
        super().__init__()
        if routing not in ROUTING_GATES:
            raise ValueError(f'DynamicConv: routing={routing!r} is not supported; use one of '
                             f'{ROUTING_GATES} (sigmoid = official ParameterNet code).')
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(
                f'DynamicConv: num_experts must be a positive int, got {num_experts!r}')
        if padding is None:  # timm's symmetric default for padding=''
            padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        self.gate = routing
        self.routing = nn.Linear(in_channels, num_experts)
        self.cond_conv = ExpertKernels(in_channels, out_channels, kernel_size, stride, padding,
                                       dilation, groups, num_experts)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    @property
    def out_channels(self) -> int:
        return self.cond_conv.out_channels

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """[B, M] expert weights from the global average of ``x``."""
        # functional calls: at batch 1 on a GPU this layer is launch-bound, and the module
        # calls of ``routing``/``cond_conv`` would cost as much as the kernels
        logits = F.linear(x.mean((2, 3)), self.routing.weight, self.routing.bias)
        return logits.sigmoid() if self.gate == 'sigmoid' else logits.softmax(dim=1)

    @property
    def is_pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded, ungrouped conv: a per-sample matmul over the pixels."""
        c = self.cond_conv
        return (c.kernel_size == (1, 1) and c.stride == 1 and c.padding == 0 and c.groups == 1
                and c.dilation == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        experts = self.cond_conv
        kernels = self.routing_weights(x) @ experts.weight  # [B, P]: all kernels in one matmul
        batch = x.shape[0]
        if self.is_pointwise and x.is_contiguous():
            # 44 of the 88 dynamic convs of ParameterNet-600m. One batched matmul [C_out, C_in] @
            # [C_in, H*W] per sample: no kernel reorder (oneDNN re-packs a conv's weight on every
            # call, and here the weight is new every call) and, at batch > 1, faster than the
            # grouped conv below, so the per-image cost does not grow with the batch.
            out = torch.bmm(kernels.view(batch, experts.out_channels, -1), x.flatten(2))
            if self.bias is not None:
                out = out.add_(self.bias.view(1, -1, 1))
            return out.view(batch, experts.out_channels, *x.shape[2:])
        if batch == 1:  # a plain conv with the mixed kernel
            return F.conv2d(x, kernels.view(experts.weight_shape), self.bias, experts.stride,
                            experts.padding, experts.dilation, experts.groups)
        # One grouped conv for the whole batch: sample b only sees its own channels and kernel.
        out = F.conv2d(x.reshape(1, -1, *x.shape[2:]),
                       kernels.view(-1, *experts.weight_shape[1:]),
                       None if self.bias is None else self.bias.repeat(batch), experts.stride,
                       experts.padding, experts.dilation, experts.groups * batch)
        return out.view(batch, experts.out_channels, *out.shape[2:])

    @torch.no_grad()
    def fold_bn(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        """Make ``self`` compute ``bn(self(x))`` (eval mode) exactly.

        The routing only sees the input, so scaling every expert's output-channel slice by the BN
        scale scales the mixed kernel the same way for any routing weights; the BN shift becomes
        the static bias.
        """
        scale, shift = bn_scale_shift(bn)
        experts = self.cond_conv.weight.view(self.cond_conv.num_experts, self.out_channels, -1)
        experts.mul_(scale.view(1, -1, 1).to(experts))
        if self.bias is None:
            self.bias = nn.Parameter(shift.to(experts))
        else:
            self.bias.copy_(self.bias * scale + shift)
