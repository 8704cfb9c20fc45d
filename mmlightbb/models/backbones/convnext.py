"""ConvNeXt (Liu et al., CVPR 2022, "A ConvNet for the 2020s"), the large-kernel baseline.

Layout and keys follow facebookresearch/ConvNeXt: ``downsample_layers.{0..3}`` (0 is the 4x4/s4
patchify stem), ``stages.{i}.{j}`` blocks, per-output ``norm{i}`` (channels-first LayerNorm, as in
the official detection backbone) and, for classification, ``norm`` (LayerNorm on the pooled vector)
+ ``head``. Official checkpoints (``{'model': sd}``) load as they are; mmpretrain checkpoints are
converted by :meth:`ConvNeXt.convert_state_dict`.
"""
import re
from typing import Dict, List, Optional, Sequence

import torch
from mmdet.registry import MODELS
from torch import nn

from ..layers.convnext_block import ConvNeXtBlock
from ..layers.memory_format import cpu_channels_last, nchw_outputs
from ..layers.norm import LayerNorm2d
from .base import NUM_OUTPUTS, BaseBackbone

# mmpretrain block names -> official ones (reverse of convnext_to_mmpretrain.py)
_MMPRETRAIN_RENAMES = (('.depthwise_conv.', '.dwconv.'), ('.pointwise_conv1.', '.pwconv1.'),
                       ('.pointwise_conv2.', '.pwconv2.'))


@MODELS.register_module()
class ConvNeXt(BaseBackbone):
    """ConvNeXt backbone.

    Args:
        arch (str | dict): 'tiny', 'small', 'base' or a dict with ``depths`` and ``channels``
            (4 entries each).
        layer_scale_init_value (float): Initial layer-scale ``gamma``; 0 disables it. Official
            ImageNet training uses 1e-6 (mmdet's ConvNeXt configs pass 1.0 only because the
            value is overwritten by the checkpoint anyway).
        drop_path_rate (float): Stochastic depth, linearly increasing over all blocks.
        norm_output (bool, optional): Channels-first LayerNorm ``norm{i}`` on each returned map, as
            the official detection backbone. Default (None): on without ``num_classes``, off with it
            (the official classifier has none).
        num_classes (int, optional): Also build the classifier (``norm`` on the pooled vector and
            ``head``) used by :meth:`classify`.
        act_cfg (dict): Activation inside the blocks.

    CPU inference runs on channels_last maps (``cpu_channels_last``): the blocks' LayerNorm and
    Linear layers then read the permuted map in place instead of copying it, and oneDNN's
    depthwise 7x7 is faster on NHWC. The returned maps are NCHW-contiguous.
    """
    cpu_channels_last = True

    arch_settings = {
        'tiny': dict(depths=[3, 3, 9, 3], channels=[96, 192, 384, 768]),
        'small': dict(depths=[3, 3, 27, 3], channels=[96, 192, 384, 768]),
        'base': dict(depths=[3, 3, 27, 3], channels=[128, 256, 512, 1024]),
    }

    def __init__(self, arch='tiny', in_channels: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 layer_scale_init_value: float = 1e-6, drop_path_rate: float = 0.,
                 norm_output: Optional[bool] = None, num_classes: Optional[int] = None,
                 act_cfg: dict = dict(type='GELU'), with_cp: bool = False, init_cfg=None):
        super().__init__(arch=arch, in_channels=in_channels, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval,
                         num_classes=num_classes, with_cp=with_cp, init_cfg=init_cfg)
        depths, channels = self.arch['depths'], self.arch['channels']
        if len(depths) != 4 or len(channels) != 4:
            raise ValueError(f'ConvNeXt: arch needs 4 depths and 4 channels (one per stage), got '
                             f'depths={depths}, channels={channels}')
        stage_drop_path_rates = self.drop_path_rates(drop_path_rate, depths)
        if layer_scale_init_value < 0:
            raise ValueError(f'ConvNeXt: layer_scale_init_value must be >= 0 (0 disables layer '
                             f'scale), got {layer_scale_init_value}')
        self.stage_channels = list(channels)

        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=4, stride=4),
            LayerNorm2d(channels[0], eps=1e-6))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(channels[i], eps=1e-6),
                nn.Conv2d(channels[i], channels[i + 1], kernel_size=2, stride=2)))

        self.stages = nn.ModuleList()
        for i, rates in enumerate(stage_drop_path_rates):
            self.stages.append(nn.Sequential(*[
                ConvNeXtBlock(channels[i], layer_scale_init_value=layer_scale_init_value,
                              drop_path_rate=rate, act_cfg=act_cfg)
                for rate in rates]))

        self.norm_output = num_classes is None if norm_output is None else norm_output
        if self.norm_output:
            for i in self.out_indices:
                self.add_module(f'norm{i}', LayerNorm2d(channels[i], eps=1e-6))
        if num_classes is not None:
            self.norm = nn.LayerNorm(channels[-1], eps=1e-6)
            self.head = nn.Linear(channels[-1], num_classes)

    # ------------------------------------------------------------------------------ forward
    def forward_stages(self, x: torch.Tensor,
                       last_stage: int = NUM_OUTPUTS - 1) -> List[torch.Tensor]:
        self.check_input(x)
        x = cpu_channels_last(x, self.cpu_channels_last and not self.training)
        maps = []
        for downsample, stage in zip(self.downsample_layers[:last_stage + 1],
                                     self.stages[:last_stage + 1]):
            x = downsample(x)
            for block in stage:
                x = self.run_block(block, x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor):
        maps = self.forward_stages(x, self.out_indices[-1])
        if self.norm_output:
            return nchw_outputs([getattr(self, f'norm{i}')(maps[i]) for i in self.out_indices])
        return nchw_outputs([maps[i] for i in self.out_indices])

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (global average pool -> ``norm`` -> ``head``), as the official model."""
        self.require_classifier()
        return self.head(self.norm(self.forward_stages(x)[-1].mean((-2, -1))))

    # ----------------------------------------------------------------------- freeze / init
    def frozen_modules(self, index: int) -> List[nn.Module]:
        if index == 0:
            return [self.downsample_layers[0]]
        # stage k owns the LayerNorm + 2x2/s2 conv that leads into it (stage 1: the stem's output)
        downsample = [self.downsample_layers[index - 1]] if index > 1 else []
        return downsample + [self.stages[index - 1]]

    def init_weights(self):
        if self._pretrained_cfg() is None:
            self.apply(convnext_init)
        super().init_weights()

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Read mmpretrain keys (``depthwise_conv``, ``pointwise_conv1/2``, ``norm3``, ``head.fc``)

        mmpretrain's ``norm3`` is the classifier's final LayerNorm: it becomes ``norm`` for the
        classification form and stays ``norm3`` (the stride-32 output norm, as mmpretrain uses it
        in detection) otherwise.
        """
        if not any('.depthwise_conv.' in k or '.pointwise_conv' in k for k in state_dict):
            return state_dict
        classifier = self.num_classes is not None
        converted = {}
        for key, value in state_dict.items():
            for old, new in _MMPRETRAIN_RENAMES:
                key = key.replace(old, new)
            key = re.sub(r'^head\.fc\.', 'head.', key)
            if classifier:
                key = re.sub(r'^norm3\.', 'norm.', key)
            converted[key] = value
        return converted


def convnext_init(module: nn.Module) -> None:
    """trunc_normal(std=0.02) weights and zero bias for every conv and linear layer."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
