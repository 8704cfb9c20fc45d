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


@torch.no_grad()
def randomize_bn_stats(model: nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine parameters (fresh BNs are the identity in
    eval mode, so folding them, or comparing two execution paths through them, proves nothing)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            if m.affine:
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor],
            bn: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``bn(conv(x))`` as a single conv (output channels on dim 0)."""
    scale, shift = bn_scale_shift(bn)
    folded_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    folded_bias = shift if bias is None else bias * scale + shift
    return folded_weight, folded_bias


@torch.no_grad()
def fuse_conv_norm(conv: nn.Conv2d, norm: nn.Module) -> Tuple[nn.Conv2d, nn.Module]:
    """``(conv, norm)`` with an eval-mode BatchNorm folded into a new biased conv and replaced by
    ``nn.Identity``; any other norm (or an already folded pair) is returned unchanged."""
    if not (isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.track_running_stats):
        return conv, norm
    weight, bias = fold_bn(conv.weight, conv.bias, norm)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(weight)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    return fused, nn.Identity()


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

    def switch_to_deploy(self):
        self.conv, self.bn = fuse_conv_norm(self.conv, self.bn)
