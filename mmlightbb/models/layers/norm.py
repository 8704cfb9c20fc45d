"""Normalization layers that torch and mmcv lack."""
import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW tensor (ConvNeXt's ``channels_first`` LayerNorm).

    Same parameters (``weight``, ``bias``) as ``nn.LayerNorm(C)``, so official keys load as they are.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)
