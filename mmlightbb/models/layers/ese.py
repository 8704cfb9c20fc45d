"""Effective Squeeze-Excitation (Lee & Park, CenterMask, arXiv:1911.06667)."""
import torch
from mmcv.cnn import build_activation_layer
from torch import nn

class EffectiveSE(nn.Module):
    """``x * gate(fc(mean_hw(x)))`` with a single full-width 1x1 conv (no channel reduction).

    The child ``fc`` matches the Paddle ``EffectiveSELayer``. The gate is Hardsigmoid in the
    original (torch's ``nn.Hardsigmoid``, built directly: mmengine's registry has no plain one and
    mmcv's ``HSigmoid`` warns on every build); CSPConvNeXt V1 uses GELU
    (``gate_cfg=dict(type='GELU')``, any activation of mmcv's registry).
    """

    def __init__(self, channels: int, gate_cfg: dict = dict(type='Hardsigmoid')):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.gate = (nn.Hardsigmoid() if gate_cfg == dict(type='Hardsigmoid')
                     else build_activation_layer(gate_cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))
