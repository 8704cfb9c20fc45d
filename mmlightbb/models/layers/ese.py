"""Effective Squeeze-Excitation (Lee & Park, CenterMask, arXiv:1911.06667)."""
import torch
from mmcv.cnn import build_activation_layer
from mmengine.registry import MODELS as MMENGINE_MODELS
from torch import nn

# torch's Hardsigmoid (clip(x / 6 + 0.5, 0, 1), as Paddle's) under its own name: mmcv's HSigmoid
# computes the same but warns about a v1.4.4 default change every time one is built.
MMENGINE_MODELS.register_module('Hardsigmoid', module=nn.Hardsigmoid, force=True)


class EffectiveSE(nn.Module):
    """``x * gate(fc(mean_hw(x)))`` with a single full-width 1x1 conv (no channel reduction).

    The child ``fc`` matches the Paddle ``EffectiveSELayer``. The gate is Hardsigmoid in the
    original; CSPConvNeXt V1 uses GELU (``gate_cfg=dict(type='GELU')``).
    """

    def __init__(self, channels: int, gate_cfg: dict = dict(type='Hardsigmoid')):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.gate = build_activation_layer(gate_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))
