"""Conv + BatchNorm (+ activation) with exact BN folding for deploy."""
from typing import Optional, Tuple

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from torch import nn


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) such that ``bn(x) == x * scale + shift`` in eval mode."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor],
            bn: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``bn(conv(x))`` as a single conv (output channels on dim 0)."""
    scale, shift = bn_scale_shift(bn)
    folded_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    folded_bias = shift if bias is None else bias * scale + shift
    return folded_weight, folded_bias


class ConvBN(nn.Module):
    """``conv`` -> ``bn`` -> ``act`` with the child names used by the official checkpoints.

    ``switch_to_deploy()`` folds ``bn`` into ``conv`` (exact in eval mode) and drops it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Optional[int] = None, groups: int = 1, bias: bool = False,
                 norm_cfg: dict = dict(type='BN'), act_cfg: Optional[dict] = None):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              groups=groups, bias=bias)
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]
        self.act = build_activation_layer(act_cfg) if act_cfg else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fused_weight_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.bn, nn.Identity):
            return self.conv.weight, self.conv.bias
        return fold_bn(self.conv.weight, self.conv.bias, self.bn)

    @torch.no_grad()
    def switch_to_deploy(self):
        if isinstance(self.bn, nn.Identity):
            return
        weight, bias = self.fused_weight_bias()
        conv = self.conv
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, conv.dilation, conv.groups, bias=True,
                              padding_mode=conv.padding_mode).to(weight.device, weight.dtype)
        self.conv.weight.copy_(weight)
        self.conv.bias.copy_(bias)
        self.bn = nn.Identity()
