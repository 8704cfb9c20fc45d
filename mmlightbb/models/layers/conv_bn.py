"""Conv + BatchNorm (+ activation) layers for every backbone, and the one helper that folds a BN
into the conv before it (deploy).

* :func:`fuse_conv_norm` is the only BN-folding helper: a plain conv becomes a new biased
  ``nn.Conv2d``; a conv with its own ``fold_bn(bn)`` (:class:`~.dynamic_conv.DynamicConv`: every
  expert plus a static bias) folds in place.
* :func:`conv_bn_layers` builds ``[conv, norm(, act)]``; :class:`ConvBN` holds them as named
  children (``conv``, ``bn``, ``act``), :class:`ConvBNSequential` as indexed ones. Both fold with
  :func:`fuse_conv_norm` in ``switch_to_deploy()``.

Child names. ``conv``/``bn``/``act`` are the names of the official RepLKNet and Paddle CSPConvNeXt
checkpoints. Official checkpoints that name them otherwise keep their keys (the documented
exceptions to one name per concept) through ``ConvBN(names=...)``: FasterNet
``patch_embed.proj``/``.norm`` and ``stages.*.reduction``/``.norm``, GhostNet/ParameterNet
``blocks.9.0.conv``/``.bn1``; or, where their keys index the layers (GhostNet ``primary_conv.0/1``,
``shortcut.0..3``; FasterNet ``mlp.0..3``), through :class:`ConvBNSequential`. Activations have no
parameters, so no key depends on their names: a ConvBN's is always ``act`` (the official RepLKNet
calls it ``nonlinear``, GhostNet ``act1``).
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def bn_scale_shift(bn: _BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
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
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            if m.affine:
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor],
            bn: _BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weights and bias of ``bn(conv(x))`` as a single conv (output channels on dim 0)."""
    scale, shift = bn_scale_shift(bn)
    folded_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    folded_bias = shift if bias is None else bias * scale + shift
    return folded_weight, folded_bias


def is_foldable(norm: nn.Module) -> bool:
    """A BatchNorm with running statistics: eval mode makes it an affine map a conv can absorb."""
    return isinstance(norm, _BatchNorm) and norm.track_running_stats


@torch.no_grad()
def fuse_conv_norm(conv: nn.Module, norm: nn.Module) -> Tuple[nn.Module, nn.Module]:
    """``(conv, norm)`` with an eval-mode BatchNorm folded into the conv and replaced by
    ``nn.Identity``; any other norm (or an already folded pair) is returned unchanged.

    A conv with a ``fold_bn(bn)`` method (``DynamicConv``) folds in place; an ``nn.Conv2d`` is
    replaced by a new biased one.
    """
    if not is_foldable(norm):
        return conv, norm
    if hasattr(conv, 'fold_bn'):
        conv.fold_bn(norm)
        return conv, nn.Identity()
    weight, bias = fold_bn(conv.weight, conv.bias, norm)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(weight)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    return fused, nn.Identity()


def conv_bn_layers(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                   padding: Optional[int] = None, groups: int = 1, bias: bool = False,
                   norm_cfg: dict = dict(type='BN'), act_cfg: Optional[dict] = None,
                   conv_layer=nn.Conv2d) -> List[nn.Module]:
    """``[conv, norm]``, plus the activation when ``act_cfg`` is given.

    ``padding`` defaults to ``kernel_size // 2`` ('same' for odd kernels at stride 1).
    ``conv_layer(in, out, k, stride, padding, groups=, bias=)`` builds the conv (``nn.Conv2d``, or
    e.g. ParameterNet's factory of dynamic convs).
    """
    padding = kernel_size // 2 if padding is None else padding
    layers = [conv_layer(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                         bias=bias),
              build_norm_layer(norm_cfg, out_channels)[1]]
    if act_cfg:
        layers.append(build_activation_layer(act_cfg))
    return layers


class ConvBN(nn.Module):
    """``conv`` -> ``bn`` -> ``act`` (``nn.Identity`` without ``act_cfg``) as named children.

    Args: those of :func:`conv_bn_layers`, and ``names``: the child names, ``(conv, norm)`` or
    ``(conv, norm, act)``; default ``('conv', 'bn', 'act')``. Change them only to keep an official
    checkpoint's keys (see the module doc).

    ``switch_to_deploy()`` folds the norm into the conv (exact in eval mode) and drops it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: Optional[int] = None, groups: int = 1, bias: bool = False,
                 norm_cfg: dict = dict(type='BN'), act_cfg: Optional[dict] = None,
                 conv_layer=nn.Conv2d, names: Sequence[str] = ('conv', 'bn', 'act')):
        super().__init__()
        if len(names) not in (2, 3):
            raise ValueError(f'ConvBN: names must be (conv, norm[, act]), got {names!r}')
        self.names = tuple(names) if len(names) == 3 else (*names, 'act')
        layers = conv_bn_layers(in_channels, out_channels, kernel_size, stride, padding, groups,
                                bias, norm_cfg, act_cfg, conv_layer)
        if len(layers) == 2:
            layers.append(nn.Identity())
        for name, layer in zip(self.names, layers):
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self.names
        return self._modules[act](self._modules[norm](self._modules[conv](x)))

    def fused_weight_bias(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the conv with the norm folded in (the module is left as it is)."""
        conv, norm = self._modules[self.names[0]], self._modules[self.names[1]]
        if isinstance(norm, nn.Identity):  # already folded
            return conv.weight, conv.bias
        return fold_bn(conv.weight, conv.bias, norm)

    def switch_to_deploy(self):
        conv, norm = self.names[:2]
        fused, identity = fuse_conv_norm(self._modules[conv], self._modules[norm])
        setattr(self, conv, fused)
        setattr(self, norm, identity)


class ConvBNSequential(nn.Sequential):
    """An ``nn.Sequential`` of conv / norm / activation layers (e.g. ``*conv_bn_layers(...)``, or
    two such groups back to back), for official layouts whose keys index them.

    ``switch_to_deploy()`` folds every BN into the conv just before it and leaves ``nn.Identity``
    at its index, so the other layers keep their indices (and keys).
    """

    def switch_to_deploy(self):
        for i in range(1, len(self)):
            conv = self[i - 1]
            if isinstance(conv, nn.Conv2d) or hasattr(conv, 'fold_bn'):
                self[i - 1], self[i] = fuse_conv_norm(conv, self[i])
