"""CSPConvNeXt: ConvNeXt blocks inside cross-stage-partial (CSP) stages.

Two published generations by the same author (PaddlePaddle only, no released weights):

* ``'tiny'``: the 2022 CSPConvNeXt (violetweir/convnext, ConvNext_PaddleDetection@ad5af20): ConvNeXt
  patchify stem + LayerNorm, standard ConvNeXt blocks (LayerNorm, layer scale, DropPath) on one half
  of each stage, a 3x3/s2 conv + LayerNorm + GELU down-sampling and a GELU-gated ESE.
* ``'e-mini'``, ``'e-tiny'``, ``'e-small'``: E-ConvNeXt (arXiv 2508.20955, violetweir/E-ConvNeXt):
  BatchNorm everywhere, a 2x2/s2 ConvBN down-sampling, blocks DW7x7 -> BN -> 1x1 (4x) -> GELU -> 1x1
  -> BN -> ESE (Hardsigmoid) + residual, no layer scale.

Every stage is the shared :class:`mmlightbb.models.layers.CSPStage`: ``down`` -> split into
``conv1`` (shortcut half) and ``conv2`` -> ``blocks`` -> concat [shortcut, blocks] -> ``attn``
(ESE) -> ``conv3``. Module names are the Paddle ones so converted
``.pdparams`` map 1:1 (see :meth:`CSPConvNeXt.convert_state_dict`).
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmdet.registry import MODELS
from torch import nn

from ..layers.conv_bn import ConvBN, fuse_conv_norm
from ..layers.convnext_block import ConvNeXtBlock
from ..layers.csp_stage import CSPStage
from ..layers.ese import EffectiveSE
from ..layers.memory_format import cpu_channels_last, nchw_outputs
from ..layers.norm import LayerNorm2d
from .base import NUM_OUTPUTS, BaseBackbone
from .convnext import convnext_init

STEM_STRIDES = {'patchify': 4, 'va': 4, 'vb': 2}
# The ESE gate differs between the generations: V1 built it with GELU (ignoring its 'hardsigmoid'
# argument), E-ConvNeXt uses Hardsigmoid (clip(x / 6 + 0.5, 0, 1)).
ESE_GATES = {'v1': dict(type='GELU'), 'e': dict(type='Hardsigmoid')}


class EConvNeXtBlock(nn.Module):
    """E-ConvNeXt block: DW 7x7 -> BN -> 1x1 (4x) -> GELU -> 1x1 -> BN -> ESE, plus the input.

    The official block builds a DropPath and a ``gamma`` but uses neither; here
    ``drop_path_rate`` (default 0, i.e. the official behaviour) drops the residual branch, and
    there is no ``gamma``. ``switch_to_deploy`` folds ``norm`` into ``dwconv`` and ``norm2`` into
    ``pwconv2`` (both convs keep their bias, so the deploy keys are a subset of the training ones).
    """

    def __init__(self, channels: int, mlp_ratio: int = 4, kernel_size: int = 7,
                 drop_path_rate: float = 0., norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                                groups=channels)
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.pwconv1 = nn.Conv2d(channels, mlp_ratio * channels, 1)
        self.act = build_activation_layer(act_cfg)
        self.pwconv2 = nn.Conv2d(mlp_ratio * channels, channels, 1)
        self.norm2 = build_norm_layer(norm_cfg, channels)[1]
        self.ese = EffectiveSE(channels, ESE_GATES['e'])
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.pwconv1(self.norm(self.dwconv(x))))
        return x + self.drop_path(self.ese(self.norm2(self.pwconv2(y))))

    def switch_to_deploy(self):
        self.dwconv, self.norm = fuse_conv_norm(self.dwconv, self.norm)
        self.pwconv2, self.norm2 = fuse_conv_norm(self.pwconv2, self.norm2)


def csp_convnext_stage(version: str, in_channels: int, out_channels: int, stride: int,
                       drop_path_rates: Sequence[float], layer_scale_init_value: float,
                       norm_cfg: dict, act_cfg: dict) -> CSPStage:
    """One CSPConvNeXt stage (the shared :class:`~mmlightbb.models.layers.CSPStage`) with a block
    per entry of ``drop_path_rates``; ``version`` 'v1' or 'e' picks the down-sampling, the block
    type and the ESE gate."""
    mid = (in_channels + out_channels) // 2
    if stride == 1:
        down = None  # the stem already outputs `mid` channels
    elif version == 'v1':
        down = nn.Sequential(nn.Conv2d(in_channels, mid, 3, stride=2, padding=1),
                             LayerNorm2d(mid, eps=1e-6),
                             build_activation_layer(act_cfg))
    else:
        down = nn.Sequential(ConvBN(in_channels, mid, 2, stride=2, padding=0, bias=True,
                                    norm_cfg=norm_cfg, act_cfg=act_cfg))

    def blocks(channels: int) -> List[nn.Module]:
        if version == 'v1':
            return [ConvNeXtBlock(channels, layer_scale_init_value=layer_scale_init_value,
                                  drop_path_rate=rate, act_cfg=act_cfg)
                    for rate in drop_path_rates]
        return [EConvNeXtBlock(channels, drop_path_rate=rate, norm_cfg=norm_cfg,
                               act_cfg=act_cfg) for rate in drop_path_rates]

    # Paddle convs carry a bias by default (bias_attr=None), BN or not: keep it for the keys.
    return CSPStage(mid, out_channels, blocks, down=down, ratio=0.5,
                    attn_builder=lambda c: EffectiveSE(c, ESE_GATES[version]), conv_bias=True,
                    norm_cfg=norm_cfg, act_cfg=act_cfg)


@MODELS.register_module()
class CSPConvNeXt(BaseBackbone):
    """CSPConvNeXt V1 (``arch='tiny'``) and E-ConvNeXt (``'e-mini'``, ``'e-tiny'``, ``'e-small'``).

    Args:
        arch (str | dict): an arch name, or a dict with ``version`` ('v1' | 'e'), ``stem``
            ('patchify': 4x4/s4 conv + LN; 'va': one 4x4/s4 ConvBN; 'vb': three ConvBN, stride 2),
            ``depths`` (4), ``stem_channels`` (the stem's width) and ``channels`` (the 4 stage
            widths; the official code's ``dims`` is ``[stem_channels, *channels]``). Stage
            strides follow from the stem so that the outputs are at strides 4/8/16/32.
        norm_cfg (dict): Norm of the ConvBN layers, E-ConvNeXt blocks and output norms.
        act_cfg (dict): Activation everywhere but in the ESE gates (GELU, as the original).
        drop_path_rate (float): Stochastic depth over all blocks (linear). The official
            E-ConvNeXt never applies it; here it drops the blocks' residual branch (0 = official).
        layer_scale_init_value (float, optional): V1 only (default 1e-6); E-ConvNeXt has none.
        norm_output (bool, optional): A norm (``norm_cfg``) on each returned map, ``norms.{k}``
            for the k-th entry of ``out_indices`` as the official detection backbone. Default
            (None): on for E-ConvNeXt detection, off for V1 and for the classification form.
        num_classes (int, optional): Also build the classifier (``norm`` on the pooled vector: LN
            in V1, BN1d in E; ``head.fc_cls``) used by :meth:`classify`.

    CPU inference runs on channels_last maps (``cpu_channels_last``), as :class:`ConvNeXt`;
    the returned maps are NCHW-contiguous.
    """
    cpu_channels_last = True

    arch_settings = {
        'tiny': dict(version='v1', stem='patchify', depths=[3, 3, 9, 3], stem_channels=96,
                     channels=[96, 192, 384, 768]),
        'e-mini': dict(version='e', stem='va', depths=[3, 3, 9, 3], stem_channels=48,
                       channels=[96, 192, 384, 768]),
        'e-tiny': dict(version='e', stem='vb', depths=[3, 3, 9, 3], stem_channels=64,
                       channels=[128, 256, 512, 1024]),
        'e-small': dict(version='e', stem='vb', depths=[3, 3, 27, 3], stem_channels=64,
                        channels=[128, 256, 512, 1024]),
    }

    def __init__(self, arch='e-tiny', in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'), drop_path_rate: float = 0.,
                 layer_scale_init_value: Optional[float] = None,
                 norm_output: Optional[bool] = None, num_classes: Optional[int] = None,
                 with_cp: bool = False, init_cfg=None):
        super().__init__(arch=arch, in_channels=in_channels, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval,
                         num_classes=num_classes, with_cp=with_cp, init_cfg=init_cfg)
        version, stem, depths = self.arch['version'], self.arch['stem'], self.arch['depths']
        dims = [self.arch['stem_channels'], *self.arch['channels']]  # the official `dims`
        self._check_arch(version, stem, depths, dims)
        stage_drop_path_rates = self.drop_path_rates(drop_path_rate, depths)
        if version == 'e' and layer_scale_init_value is not None:
            raise ValueError('CSPConvNeXt: E-ConvNeXt blocks have no layer scale; leave '
                             'layer_scale_init_value=None (it applies to the V1 arch only).')
        if layer_scale_init_value is None:
            layer_scale_init_value = 1e-6
        if layer_scale_init_value < 0:
            raise ValueError(f'CSPConvNeXt: layer_scale_init_value must be >= 0, got '
                             f'{layer_scale_init_value}')
        self.version = version
        self.stage_channels = list(dims[1:])

        self.Down_Conv = self._build_stem(stem, dims, norm_cfg, act_cfg)
        strides = [1, 2, 2, 2] if STEM_STRIDES[stem] == 4 else [2, 2, 2, 2]
        self.stages = nn.ModuleList([
            csp_convnext_stage(version, dims[i], dims[i + 1], strides[i],
                               stage_drop_path_rates[i], layer_scale_init_value, norm_cfg,
                               act_cfg) for i in range(4)])

        self.norm_output = (version == 'e' and num_classes is None) if norm_output is None \
            else norm_output
        if self.norm_output:
            self.norms = nn.ModuleList([build_norm_layer(norm_cfg, dims[i + 1])[1]
                                        for i in self.out_indices])
        if num_classes is not None:
            self.norm = nn.LayerNorm(dims[-1], eps=1e-6) if version == 'v1' \
                else nn.BatchNorm1d(dims[-1])
            self.head = nn.Sequential(OrderedDict(fc_cls=nn.Linear(dims[-1], num_classes)))

    @staticmethod
    def _check_arch(version, stem, depths, dims):
        if version not in ESE_GATES or stem not in STEM_STRIDES:
            raise ValueError(f"CSPConvNeXt: arch version must be 'v1' or 'e' and stem one of "
                             f'{sorted(STEM_STRIDES)}, got version={version!r}, stem={stem!r}')
        if len(depths) != 4 or len(dims) != 5:
            raise ValueError(f'CSPConvNeXt: arch needs 4 depths and 4 channels (one per stage), '
                             f'got depths={depths}, channels={dims[1:]}')
        mids = [(dims[i] + dims[i + 1]) // 2 for i in range(4)]
        if any(mid % 2 for mid in mids):
            raise ValueError(f'CSPConvNeXt: every inner stage width (input + output) // 2 = {mids} '
                             f'(stem_channels={dims[0]}, channels={dims[1:]}) must be even, since '
                             'each CSP stage splits it into two halves.')
        if stem == 'patchify' and dims[0] != mids[0]:
            raise ValueError(f"CSPConvNeXt: the 'patchify' stem feeds stage 0 (stride 1) "
                             f'directly, so channels[0] must equal stem_channels; got '
                             f'stem_channels={dims[0]}, channels={dims[1:]} (V1: 96 and 96).')

    def _build_stem(self, stem: str, dims: Sequence[int], norm_cfg: dict,
                    act_cfg: dict) -> nn.Sequential:
        def conv_bn(cin, cout, kernel, stride, padding):
            return ConvBN(cin, cout, kernel, stride, padding, bias=True, norm_cfg=norm_cfg,
                          act_cfg=act_cfg)

        if stem == 'patchify':  # ConvNeXt's stem: keys Down_Conv.0 (conv), Down_Conv.1 (LN)
            return nn.Sequential(nn.Conv2d(self.in_channels, dims[0], 4, stride=4),
                                 LayerNorm2d(dims[0], eps=1e-6))
        if stem == 'va':  # straight to stage 0's width, which has no down-sampling
            return nn.Sequential(OrderedDict(
                conv1=conv_bn(self.in_channels, (dims[0] + dims[1]) // 2, 4, 4, 0)))
        half = dims[0] // 2
        return nn.Sequential(OrderedDict(conv1=conv_bn(self.in_channels, half, 2, 2, 0),
                                         conv2=conv_bn(half, half, 3, 1, 1),
                                         conv3=conv_bn(half, dims[0], 3, 1, 1)))

    # ------------------------------------------------------------------------------ forward
    def forward_stages(self, x: torch.Tensor,
                       last_stage: int = NUM_OUTPUTS - 1) -> List[torch.Tensor]:
        self.check_input(x)
        x = self.Down_Conv(cpu_channels_last(x, self.cpu_channels_last and not self.training))
        maps = []
        for stage in self.stages[:last_stage + 1]:
            x = stage(x, self.run_block)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor):
        maps = self.forward_stages(x, self.out_indices[-1])
        maps = [maps[i] for i in self.out_indices]
        if self.norm_output:
            maps = [norm(m) for norm, m in zip(self.norms, maps)]
        return nchw_outputs(maps)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: global average pool -> ``norm`` -> ``head.fc_cls``."""
        self.require_classifier()
        return self.head(self.norm(self.forward_stages(x)[-1].mean((-2, -1))))

    # ----------------------------------------------------------------------- freeze / init
    def frozen_modules(self, index: int) -> List[nn.Module]:
        return [self.Down_Conv] if index == 0 else [self.stages[index - 1]]  # stage incl. down

    def init_weights(self):
        if self._pretrained_cfg() is None:
            self.apply(convnext_init)  # the official _init_weights: same as ConvNeXt's
        super().init_weights()

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map a Paddle state dict (tensors converted from ``.pdparams``) to this model's keys.

        * ``backbone.`` of V1's classification wrapper is stripped (its ``head.`` is kept);
        * BatchNorm ``_mean`` / ``_variance`` -> ``running_mean`` / ``running_var``;
        * Paddle stores Linear weights as [in, out]: those of this model's ``nn.Linear`` layers
          (V1 ``pwconv1/2``, ``head.fc_cls``) are transposed when the file is a Paddle one (it
          has ``_mean`` keys, as every CSPConvNeXt has BN);
        * parameters the official forward never uses are dropped: E-ConvNeXt blocks' ``gamma``,
          and the output ``norms`` when loading into the classification form without them.
        """
        is_paddle = any(k.endswith(('._mean', '._variance')) for k in state_dict)
        linear_weights = {f'{name}.weight' for name, m in self.named_modules()
                          if isinstance(m, nn.Linear)}
        drop_norms = self.num_classes is not None and not self.norm_output
        converted = {}
        for key, value in state_dict.items():
            key = re.sub(r'^backbone\.', '', key)
            key = re.sub(r'\._mean$', '.running_mean', key)
            key = re.sub(r'\._variance$', '.running_var', key)
            if self.version == 'e' and re.fullmatch(r'stages\.\d+\.blocks\.\d+\.gamma', key):
                continue
            if drop_norms and key.startswith('norms.'):
                continue
            if is_paddle and key in linear_weights and value.dim() == 2:
                value = value.t()
            converted[key] = value
        return converted
