"""The ConvNeXt block (Liu et al., "A ConvNet for the 2020s") of ConvNeXt and CSPConvNeXt V1."""
import torch
from mmcv.cnn import build_activation_layer
from mmcv.cnn.bricks import DropPath
from torch import nn


class ConvNeXtBlock(nn.Module):
    """DW 7x7 -> LayerNorm (channels last) -> Linear 4x -> GELU -> Linear -> layer scale, DropPath.

    Child names (``dwconv``, ``norm``, ``pwconv1``, ``act``, ``pwconv2``, ``gamma``) are those of
    facebookresearch/ConvNeXt and of the Paddle CSPConvNeXt, so their checkpoints load as they are.

    Args:
        channels (int): Input and output channels.
        mlp_ratio (int): Hidden width of the pointwise MLP, in multiples of ``channels``.
        kernel_size (int): Depthwise kernel size.
        layer_scale_init_value (float): Initial value of ``gamma``; 0 builds no layer scale.
        drop_path_rate (float): Stochastic depth rate of the residual branch.
        act_cfg (dict): Activation between the two pointwise layers.
    """

    def __init__(self, channels: int, mlp_ratio: int = 4, kernel_size: int = 7,
                 layer_scale_init_value: float = 1e-6, drop_path_rate: float = 0.,
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        # Linear layers on channels-last maps, as the official code: same math as 1x1 convs and
        # the checkpoints store them as [out, in] matrices.
        self.pwconv1 = nn.Linear(channels, mlp_ratio * channels)
        self.act = build_activation_layer(act_cfg)
        self.pwconv2 = nn.Linear(mlp_ratio * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels, ), float(layer_scale_init_value))) \
            if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # NCHW -> NHWC
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))
