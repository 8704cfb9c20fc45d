"""ParameterNet (Han et al., CVPR 2024, arXiv 2306.14525) and its static twin GhostNet v1.

Over 400 lines on purpose: one file per model family (house style) holds the Ghost blocks, the
dynamic-conv wiring, the CSP form and the official/timm layout handling.

Re-implementation of huawei-noah/Efficient-AI-Backbones ``parameternet_pytorch/cv/parameternet.py``
(a timm GhostNet whose convs are dynamic mixture-of-experts convs) and
``ghostnet_pytorch/ghostnet.py`` with the official module names, so state dicts of both load as
they are.
"""
import math
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmdet.registry import MODELS
from torch import nn

from ..layers.conv_bn import ConvBN, ConvBNSequential, conv_bn_layers, fuse_conv_norm
from ..layers.csp_stage import CSPStage
from ..layers.dynamic_conv import ROUTING_GATES, DynamicConv
from .base import NUM_OUTPUTS, BaseBackbone

# Per row of blocks: [dw kernel, expansion channels, output channels, SE ratio, stride] for each
# block, before the width multiplier. A row is one ``blocks.i``; ``blocks.9`` (1x1 conv-BN-act to
# the last expansion width) is appended after the rows.
PARAMETERNET_600M_CFGS = [
    [[3, 16, 16, 0, 1]],
    [[3, 48, 24, 0, 2]],
    [[3, 72, 24, 0, 1]],
    [[5, 72, 40, 0.25, 2]],
    [[3, 120, 40, 0.25, 1]] * 2,
    [[3, 240, 80, 0, 2]],
    [[3, 200, 80, 0, 1]] * 3 + [[3, 480, 112, 0.25, 1]] + [[3, 672, 112, 0.25, 1]] * 2,
    [[5, 672, 160, 0.25, 2]],
    [[3, 960, 160, 0.25, 1]] * 5,
]
GHOSTNET_CFGS = [
    [[3, 16, 16, 0, 1]],
    [[3, 48, 24, 0, 2]],
    [[3, 72, 24, 0, 1]],
    [[5, 72, 40, 0.25, 2]],
    [[5, 120, 40, 0.25, 1]],
    [[3, 240, 80, 0, 2]],
    [[3, 200, 80, 0, 1], [3, 184, 80, 0, 1], [3, 184, 80, 0, 1], [3, 480, 112, 0.25, 1],
     [3, 672, 112, 0.25, 1]],
    [[5, 672, 160, 0.25, 2]],
    [[5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1], [5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1]],
]
HEAD_CHANNELS = 1280
HEAD_DROPOUT = 0.2


def make_divisible(value: float, divisor: int = 4) -> int:
    """timm 0.4.x / GhostNet rounding: nearest multiple of ``divisor``, at most 10% below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def build_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
               padding: int = 0, groups: int = 1, bias: bool = False, num_experts: int = 1,
               routing: str = 'sigmoid') -> nn.Module:
    """A conv (bias-free in every official layer): ``DynamicConv`` with ``num_experts`` experts,
    or a plain conv for 1."""
    if num_experts == 1:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                         bias=bias)
    return DynamicConv(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                       bias=bias, num_experts=num_experts, routing=routing)


class SqueezeExcite(nn.Module):
    """GhostNet SE: GAP -> ``conv_reduce`` -> act -> ``conv_expand`` -> hard-sigmoid gate."""

    def __init__(self, channels: int, se_ratio: float, act_cfg: dict):
        super().__init__()
        reduced = make_divisible(channels * se_ratio, 4)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act1 = build_activation_layer(act_cfg)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * F.hardsigmoid(scale)  # relu6(x + 3) / 6, the official hard_sigmoid


class GhostModule(nn.Module):
    """Half the outputs from a 1x1 ``primary_conv``, the other half from a cheap depthwise 3x3 on
    them (``cheap_operation``); concatenated and cut to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, conv_layer: Callable, norm_cfg: dict,
                 act_cfg: Optional[dict]):
        super().__init__()
        self.out_channels = out_channels
        init_channels = math.ceil(out_channels / 2)
        self.primary_conv = ConvBNSequential(*conv_bn_layers(
            in_channels, init_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg,
            conv_layer=conv_layer))
        self.cheap_operation = ConvBNSequential(*conv_bn_layers(
            init_channels, init_channels, 3, groups=init_channels, norm_cfg=norm_cfg,
            act_cfg=act_cfg, conv_layer=conv_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)[:, :self.out_channels]


class GhostBottleneck(nn.Module):
    """``ghost1`` (expand, act) -> [``conv_dw``/``bn_dw`` if stride 2] -> [``se``] -> ``ghost2``
    (project, no act), plus ``shortcut`` (identity, or dw k x k + BN + 1x1 + BN). No act after
    the sum."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int,
                 stride: int, se_ratio: float, conv_layer: Callable, norm_cfg: dict,
                 act_cfg: dict, drop_path_rate: float = 0.):
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, conv_layer, norm_cfg, act_cfg)
        if stride > 1:  # static in ParameterNet too
            self.conv_dw = nn.Conv2d(mid_channels, mid_channels, kernel_size, stride,
                                     (kernel_size - 1) // 2, groups=mid_channels, bias=False)
            self.bn_dw = build_norm_layer(norm_cfg, mid_channels)[1]
        else:
            self.conv_dw = self.bn_dw = None
        # The official SE swaps GELU for ReLU and otherwise uses the block's activation.
        se_act_cfg = dict(type='ReLU') if act_cfg['type'] == 'GELU' else act_cfg
        self.se = SqueezeExcite(mid_channels, se_ratio, se_act_cfg) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_channels, out_channels, conv_layer, norm_cfg, None)
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Sequential()
        else:  # dw k x k + BN, then 1x1 + BN: keys shortcut.0..3
            self.shortcut = ConvBNSequential(
                *conv_bn_layers(in_channels, in_channels, kernel_size, stride, groups=in_channels,
                                norm_cfg=norm_cfg, conv_layer=conv_layer),
                *conv_bn_layers(in_channels, out_channels, 1, norm_cfg=norm_cfg,
                                conv_layer=conv_layer))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost1(x)
        if self.conv_dw is not None:
            y = self.bn_dw(self.conv_dw(y))
        if self.se is not None:
            y = self.se(y)
        y = self.ghost2(y)
        return self.shortcut(x) + self.drop_path(y)

    def switch_to_deploy(self):
        if self.conv_dw is not None:
            self.conv_dw, self.bn_dw = fuse_conv_norm(self.conv_dw, self.bn_dw)


@MODELS.register_module()
class ParameterNet(BaseBackbone):
    """ParameterNet / GhostNet v1 backbone with the official key names.

    Archs:

    - ``'600m'``: ``parameternet_600m`` of the official code: GhostNet layout with the
      600M rows, width 1.9, Hardswish, ``num_experts=4`` dynamic convs in the stem, every
      GhostModule (``primary_conv.0`` and ``cheap_operation.0``), the non-identity shortcuts
      (``shortcut.0``, ``shortcut.2``) and ``blocks.9.0.conv``; static ``conv_dw``, SE and
      ``conv_head``. 34.5 M params and 0.59 G MACs at 224 with the ImageNet head.
    - ``'ghostnet'``: GhostNet v1 1.0x (ReLU, width 1.0, all static); official
      ``state_dict_73.98.pth`` and timm ``ghostnet_100`` weights load as they are.

    ``num_experts`` overrides the arch's expert count; ``num_experts=1`` or ``dynamic=False``
    builds the static twin (plain ``nn.Conv2d`` with GhostNet's keys), which has the same MACs
    minus the expert aggregation, so the extra parameters are measurable in isolation.
    ``routing='softmax'`` normalizes the expert weights as in the paper; the official code (and
    the default) uses sigmoid, so softmax is a different model. Routing pools the WHOLE input
    map, so mmdet's zero padding to a multiple of 32 slightly changes the routing. Each of the 88
    dynamic convs adds 4 small ops (pool, routing, gate, kernel mix), so at batch 1 on a GPU the
    model is launch-bound and slower than the twin. On CPU its 44 dynamic 1x1 convs run as
    batched matmuls (:class:`DynamicConv`) and large batches run image by image
    (:meth:`_runs_image_by_image`); ``benchmarks/speed_targets.py`` measures both against the twin.

    Outputs (strides 4/8/16/32) are the LAST block at each resolution: ``blocks.2``,
    ``blocks.4``, ``blocks.6`` and ``blocks.9`` (the final 1x1 conv), i.e. 44/76/212/1824 channels
    for ``'600m'`` and 24/40/112/960 for ``'ghostnet'``. ``with_final_conv=False`` taps
    ``blocks.8`` (304 / 160 channels) instead and does not build ``blocks.9``. (timm's
    ``feature_info`` marks the FIRST block at each resolution instead.) The stem has stride 2, so
    ``frozen_stages=0`` freezes the stem and ``blocks.0``; stage k is the blocks at stride
    2**(k+1), including the stride-2 block that leads into it.

    No ParameterNet weights were ever released: without ``init_cfg`` the model starts from the
    official (PyTorch default, per-expert) init, and GhostNet's authors warn that detection
    without ImageNet pre-training may not converge. ``convert_state_dict`` accepts checkpoints
    trained with the official code (flat or timm-wrapped, thop counters dropped).

    Args:
        arch (str | dict): ``'600m'``, ``'ghostnet'`` or a dict with keys ``cfgs``, ``width``,
            ``act_cfg``, ``num_experts``.
        num_experts (int, optional): experts per dynamic conv; default: the arch's.
        dynamic (bool): False builds the static twin.
        routing (str): ``'sigmoid'`` (official code) or ``'softmax'`` (paper).
        with_final_conv (bool): stride-32 output from ``blocks.9`` (True) or ``blocks.8``.
        drop_path_rate (float): stochastic depth, linearly increased over the rows of blocks
            (one rate per ``blocks.i``, as in the official code).
        num_classes (int, optional): also build the ImageNet head (``conv_head``, ``classifier``)
            for :meth:`classify`.
        csp (dict, optional): ``dict(ratio=0.5)`` replaces the rows of each stride 4..32 by one
            Cross-Stage-Partial stage (the shared :class:`~mmlightbb.models.layers.CSPStage`, laid
            out as CSPConvNeXt): the stage's stride-2 bottleneck goes to the inner width
            ``make_divisible((c_in + c_out) / 2, 4)``, its other bottlenecks run (with ``ratio``
            of their expansion width) on ``ratio`` of it, and a static 1x1 ConvBN-act fuses the
            concatenation to the stage's output width. The stem rows and ``blocks.9`` stay;
            ``blocks.1..4`` become the four CSP stages (``blocks.5`` is the final conv). Needs
            every stride-2 bottleneck to start a row (true of both archs). None: the official
            model.
    """

    # smallest input (H x W) run image by image on CPU, see _runs_image_by_image
    IMAGE_BY_IMAGE_MIN_PIXELS = 320 * 320
    arch_settings = {
        '600m': dict(cfgs=PARAMETERNET_600M_CFGS, width=1.9, act_cfg=dict(type='HSwish'),
                     num_experts=4),
        'ghostnet': dict(cfgs=GHOSTNET_CFGS, width=1.0, act_cfg=dict(type='ReLU', inplace=True),
                         num_experts=1),
    }

    def __init__(self, arch='600m', in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, norm_cfg: dict = dict(type='BN'),
                 act_cfg: Optional[dict] = None, num_experts: Optional[int] = None,
                 dynamic: bool = True, routing: str = 'sigmoid', with_final_conv: bool = True,
                 drop_path_rate: float = 0., num_classes: Optional[int] = None,
                 with_cp: bool = False, csp: Optional[dict] = None, init_cfg=None):
        super().__init__(arch=arch, in_channels=in_channels, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval,
                         num_classes=num_classes, with_cp=with_cp, init_cfg=init_cfg)
        name = type(self).__name__
        if num_experts is not None and (not isinstance(num_experts, int) or num_experts < 1):
            raise ValueError(f'{name}: num_experts must be a positive int (1 = static), got '
                             f'{num_experts!r}')
        if not dynamic and num_experts not in (None, 1):
            raise ValueError(f'{name}: dynamic=False contradicts num_experts={num_experts}; drop '
                             'one of them (dynamic=False means plain convs).')
        if routing not in ROUTING_GATES:
            raise ValueError(f'{name}: routing={routing!r} is not supported; use one of '
                             f'{ROUTING_GATES} (sigmoid = official code, softmax = paper).')
        if num_classes is not None and not with_final_conv:
            raise ValueError(f'{name}: the classification head (num_classes={num_classes}) needs '
                             'blocks.9; set with_final_conv=True.')
        cfgs, width = self.arch['cfgs'], self.arch['width']
        # one rate per row of blocks, as the official code
        row_drop_path_rates = [rate for (rate, ) in self.drop_path_rates(drop_path_rate,
                                                                         [1] * len(cfgs))]
        self.csp = self.parse_csp(csp)

        act_cfg = act_cfg or self.arch['act_cfg']
        self.num_experts = 1 if not dynamic else (num_experts or self.arch['num_experts'])
        self.routing = routing
        conv_layer = partial(build_conv, num_experts=self.num_experts, routing=routing)
        row_strides = self._row_strides(cfgs)

        stem_channels = make_divisible(16 * width, 4)
        self.conv_stem = conv_layer(in_channels, stem_channels, 3, 2, 1)
        self.bn1 = build_norm_layer(norm_cfg, stem_channels)[1]
        self.act1 = build_activation_layer(act_cfg)

        channels = stem_channels
        rows, row_channels = [], []
        if self.csp is not None:
            rows, row_channels, row_strides = self._csp_rows(
                cfgs, row_strides, row_drop_path_rates, width, stem_channels, conv_layer, norm_cfg,
                act_cfg)
            channels = row_channels[-1]
        for row, rate in zip(cfgs if self.csp is None else [], row_drop_path_rates):
            blocks = []
            for kernel_size, expansion, out, se_ratio, stride in row:
                out_channels = make_divisible(out * width, 4)
                blocks.append(GhostBottleneck(
                    channels, make_divisible(expansion * width, 4), out_channels, kernel_size,
                    stride, se_ratio, conv_layer, norm_cfg, act_cfg, rate))
                channels = out_channels
            rows.append(nn.Sequential(*blocks))
            row_channels.append(channels)
        final_channels = make_divisible(cfgs[-1][-1][1] * width, 4)
        if with_final_conv:
            # timm's ConvBnAct: keys blocks.9.0.conv, blocks.9.0.bn1
            rows.append(nn.Sequential(
                ConvBN(channels, final_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg,
                       conv_layer=conv_layer, names=('conv', 'bn1'))))
            row_channels.append(final_channels)
            row_strides.append(32)
        self.blocks = nn.Sequential(*rows)

        # output k: the last row at stride 4 * 2**k; frozen_modules(k + 1): every row at it
        self.stage_rows = [[i for i, s in enumerate(row_strides) if s == 4 * 2**k]
                           for k in range(NUM_OUTPUTS)]
        self.stem_rows = [i for i, s in enumerate(row_strides) if s == 2]
        self.tap_rows = [rows_k[-1] for rows_k in self.stage_rows]
        self.stage_channels = [row_channels[i] for i in self.tap_rows]

        if num_classes is not None:
            self.conv_head = nn.Conv2d(final_channels, HEAD_CHANNELS, 1, bias=True)
            self.act2 = build_activation_layer(act_cfg)
            self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def _csp_rows(self, cfgs, row_strides, rates, width, stem_channels, conv_layer, norm_cfg,
                  act_cfg):
        """(rows, their channels, their strides) of the CSP form: the stem rows as they are, then
        one CSPStage per stride 4, 8, 16, 32."""
        ratio = self.csp['ratio']
        for row in cfgs:
            if any(block[4] == 2 for block in row[1:]):
                raise ValueError(f'{type(self).__name__}: csp needs every stride-2 block to start '
                                 f'a row of cfgs; got the row {row}')

        def bottleneck(cin, spec, cout, stride, rate, scale=1.0):
            kernel, expansion, _, se_ratio, _ = spec
            return GhostBottleneck(cin, make_divisible(expansion * width * scale, 4), cout,
                                   kernel, stride, se_ratio, conv_layer, norm_cfg, act_cfg, rate)

        rows, row_channels, strides, channels = [], [], [], stem_channels
        for row, stride, rate in zip(cfgs, row_strides, rates):
            if stride != 2:
                continue
            blocks = []
            for spec in row:
                out_channels = make_divisible(spec[2] * width, 4)
                blocks.append(bottleneck(channels, spec, out_channels, spec[4], rate))
                channels = out_channels
            rows.append(nn.Sequential(*blocks))
            row_channels.append(channels)
            strides.append(2)
        for k in range(NUM_OUTPUTS):
            specs = [(spec, rate) for row, stride, rate in zip(cfgs, row_strides, rates)
                     if stride == 4 * 2**k for spec in row]
            (first, first_rate), rest = specs[0], specs[1:]
            out_channels = make_divisible(specs[-1][0][2] * width, 4)
            mid = make_divisible((channels + out_channels) / 2, 4)
            down = bottleneck(channels, first, mid, 2, first_rate)

            def blocks(c, rest=rest):
                return [bottleneck(c, spec, c, 1, rate, ratio) for spec, rate in rest]

            rows.append(CSPStage(mid, out_channels, blocks, down=down, ratio=ratio,
                                 conv_bias=False, norm_cfg=norm_cfg, act_cfg=act_cfg))
            row_channels.append(out_channels)
            strides.append(4 * 2**k)
            channels = out_channels
        return rows, row_channels, strides

    def _row_strides(self, cfgs) -> List[int]:
        """Output stride of every row of blocks; checks that the rows reach strides 4 to 32."""
        strides, stride = [], 2  # the stem has stride 2
        for row in cfgs:
            for block in row:
                if len(block) != 5 or block[4] not in (1, 2):
                    raise ValueError(f'{type(self).__name__}: bad block cfg {block}; expected '
                                     '[kernel, expansion, out_channels, se_ratio, stride 1|2]')
                stride *= block[4]
            strides.append(stride)
        if [s for s in (4, 8, 16, 32) if s not in strides] or stride != 32:
            raise ValueError(f'{type(self).__name__}: the rows of cfgs reach strides {strides}; '
                             'they must pass through 4, 8, 16 and end at 32.')
        return strides

    def frozen_modules(self, index: int) -> List[nn.Module]:
        if index == 0:
            return [self.conv_stem, self.bn1, self.act1] + [self.blocks[i] for i in self.stem_rows]
        return [self.blocks[i] for i in self.stage_rows[index - 1]]

    def _run_row(self, row: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if isinstance(row, CSPStage):
            return row(x, self.run_block)
        for block in row:
            x = self.run_block(block, x)
        return x

    def forward(self, x: torch.Tensor):
        if self._runs_image_by_image(x):
            outs = [self.forward(image) for image in x.split(1)]
            return tuple(torch.cat(maps) for maps in zip(*outs))
        maps = self.forward_stages(x, self.out_indices[-1])
        return tuple(maps[i] for i in self.out_indices)

    def forward_stages(self, x: torch.Tensor,
                       last_stage: int = NUM_OUTPUTS - 1) -> List[torch.Tensor]:
        """The maps of the rows ``tap_rows`` (the last one at each stride 4, 8, 16, 32)."""
        self.check_input(x)
        x = self.act1(self.bn1(self.conv_stem(x)))
        maps = []
        for i, row in enumerate(self.blocks[:self.tap_rows[last_stage] + 1]):
            x = self._run_row(row, x)
            if i in self.tap_rows:
                maps.append(x)
        return maps

    def _runs_image_by_image(self, x: torch.Tensor) -> bool:
        """CPU inference of a batch of large images runs them one at a time (exact: every
        image has its own routing and kernels, so a batch shares no GEMM anyway).

        Batched, the per-image cost grows with the batch: the depthwise convs, Hardswish, concat
        and SE products are memory-bound, and one large image's maps stay in cache where a
        batch's do not. Small images stay batched, where the per-call overhead of the 88 dynamic
        convs would dominate. ``benchmarks/speed_targets.py`` measures both on the machine at hand.
        """
        return (x.device.type == 'cpu' and not self.training and x.shape[0] > 1
                and x.shape[2] * x.shape[3] >= self.IMAGE_BY_IMAGE_MIN_PIXELS)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (official head: GAP, ``conv_head`` + act, dropout 0.2, linear)."""
        self.require_classifier()
        x = self.forward_stages(x)[-1]  # blocks.9: the head needs with_final_conv
        x = self.act2(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1)
        return self.classifier(F.dropout(x, HEAD_DROPOUT, self.training))

    def switch_to_deploy(self):
        """Fold every BN into the conv before it: into each expert's output-channel slice (and
        a static bias) after a ``DynamicConv``, into the weights of a plain conv otherwise."""
        self.conv_stem, self.bn1 = fuse_conv_norm(self.conv_stem, self.bn1)
        return super().switch_to_deploy()

    def init_weights(self):
        if self._pretrained_cfg() is None:
            # The official init is PyTorch's default (per expert for the dynamic convs); re-apply
            # it so that init_weights() always starts from it.
            for module in self.modules():
                if module is not self and hasattr(module, 'reset_parameters'):
                    module.reset_parameters()
        super().init_weights()

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Drop the ``total_ops``/``total_params`` buffers that thop's profiler leaves in
        checkpoints of the official code; all other keys already match."""
        return {k: v for k, v in state_dict.items()
                if not k.endswith(('total_ops', 'total_params'))}
