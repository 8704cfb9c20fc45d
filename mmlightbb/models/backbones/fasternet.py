"""FasterNet (CVPR 2023), "Run, Don't Walk: Chasing Higher FLOPS for Faster Neural Networks".

Official code: https://github.com/JierunChen/FasterNet (``models/fasternet.py``). Module names
follow it exactly, so the released ImageNet ``.pth`` files (flat state dicts) and the official
mmdet-2 detector checkpoints load as they are; timm's re-organised layout is converted on load.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmdet.registry import MODELS
from torch import nn

from ..layers import ConvBN, ConvBNSequential, conv_bn_layers, cpu_channels_last, nchw_outputs
from ..layers.csp_stage import CSPStage
from .base import NUM_OUTPUTS, BaseBackbone

_RELU = dict(type='ReLU', inplace=True)
_GELU = dict(type='GELU')


class PartialConv(nn.Module):
    """PConv: a dense 3x3 conv on the first ``channels // n_div`` channels; the rest pass through.

    Split-and-concat, purely out of place: the caller keeps the input as its residual shortcut.
    """

    def __init__(self, channels: int, n_div: int):
        super().__init__()
        self.conv_channels = channels // n_div
        self.split_sizes = (self.conv_channels, channels - self.conv_channels)
        self.partial_conv3 = nn.Conv2d(self.conv_channels, self.conv_channels, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, self.split_sizes, dim=1)  # views, no copy
        return torch.cat((self.partial_conv3(x1), x2), dim=1)


class MLPBlock(nn.Module):
    """``x + DropPath([layer_scale *] mlp(PConv(x)))`` with ``mlp`` = 1x1, BN, act, 1x1."""

    def __init__(self, channels: int, n_div: int, mlp_ratio: float, drop_path_rate: float,
                 layer_scale_init_value: float, norm_cfg: dict, act_cfg: dict):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        # keys mlp.0 (conv), mlp.1 (BN), mlp.3 (conv); switch_to_deploy folds mlp.1 into mlp.0
        self.mlp = ConvBNSequential(
            *conv_bn_layers(channels, hidden, 1, norm_cfg=norm_cfg, act_cfg=act_cfg),
            nn.Conv2d(hidden, channels, 1, bias=False))
        self.spatial_mixing = PartialConv(channels, n_div)  # after mlp: the official key order
        self.layer_scale = (nn.Parameter(torch.full((channels, ), float(layer_scale_init_value)))
                            if layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._runs_as_matmuls(x):
            return self._forward_matmuls(x)
        y = self.mlp(self.spatial_mixing(x))
        if self.layer_scale is not None:
            y = y * self.layer_scale.view(-1, 1, 1)
        return x + self.drop_path(y)

    def _runs_as_matmuls(self, x: torch.Tensor) -> bool:
        """Deployed (BN folded), inference, NHWC input: :meth:`_forward_matmuls` applies."""
        return (not self.training and self.layer_scale is None
                and isinstance(self.mlp[1], nn.Identity)
                and x.is_contiguous(memory_format=torch.channels_last)
                # an exported graph gets the plain convs (runtimes optimise those themselves;
                # a 1x1 map is channels_last and NCHW at once)
                and not torch.onnx.is_in_onnx_export())

    def _forward_matmuls(self, x: torch.Tensor) -> torch.Tensor:
        """The deployed block on an NHWC map as three GEMMs, without the PConv concat.

        An NHWC map is a [pixels, C] matrix (a view), so the 1x1 convs are matmuls. The first one
        reads the PConv output and the untouched 3/4 of the channels as two operands, ``W[:, :k] @
        conv(x[:, :k]) + W[:, k:] @ x[:, k:]`` (``x[:, k:]`` is a strided view that BLAS reads in
        place), i.e. ``W @ cat(...)`` without writing the concatenated map; the second one adds
        its result onto the shortcut inside the GEMM (``addmm(x, ...)``). That saves the concat,
        the residual pass and a bias pass, each a full read and write of a map. Same MACs; equal
        to the module form up to float summation order. The GEMMs run over the whole map:
        splitting the pixels into cache-sized chunks adds a parallel region per chunk, which
        stalls whenever a thread is descheduled on a loaded machine.
        """
        n, c, h, w = x.shape
        k = self.spatial_mixing.conv_channels
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        mixed = self.spatial_mixing.partial_conv3(x[:, :k])
        mixed = mixed.permute(0, 2, 3, 1).reshape(n * h * w, k)
        expand, project = self.mlp[0], self.mlp[3]
        w1 = expand.weight.view(expand.out_channels, c)
        hidden = torch.addmm(expand.bias, rows[:, k:], w1[:, k:].t())
        # under autocast the out-of-place addmm above runs (and returns) in the autocast dtype,
        # but the in-place addmm_ is not autocast: its operands are cast to ``hidden``'s dtype
        # here (no-ops in fp32), else bf16 meets fp32 weights ("must have the same dtype")
        hidden.addmm_(mixed.to(hidden.dtype), w1[:, :k].t().to(hidden.dtype))
        hidden = self.mlp[2](hidden)
        out = torch.addmm(rows, hidden, project.weight.view(c, -1).t())
        return out.view(n, h, w, c).permute(0, 3, 1, 2)


class BasicStage(nn.Module):

    def __init__(self, channels: int, drop_path_rates: Sequence[float], **block_kwargs):
        super().__init__()
        self.blocks = nn.Sequential(
            *[MLPBlock(channels, drop_path_rate=rate, **block_kwargs) for rate in drop_path_rates])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


@MODELS.register_module()
class FasterNet(BaseBackbone):
    """FasterNet backbone (T0/T1/T2/S/M/L) returning the stride 4/8/16/32 maps.

    Layout as the official detection model (``fork_feat=True``): ``patch_embed`` (4x4/s4 conv
    ``proj`` + ``norm``), a flat ``stages.0..6`` (BasicStages at 0/2/4/6; the official PatchMerging
    at 1/3/5: 2x2/s2 conv ``reduction`` + ``norm``) and a new BatchNorm per output
    (``norm0/2/4/6``). Loading an official ImageNet checkpoint therefore reports exactly those
    output norms missing and the classification head (``avgpool_pre_head.1``, ``head``)
    unexpected. The stem and merging layers are :class:`ConvBN` with the official child names.
    ``frozen_stages`` leaves the output norms trainable: with ImageNet weights they are new layers.

    CPU inference runs on channels_last maps (``cpu_channels_last``, see
    :mod:`mmlightbb.models.layers.memory_format`); after :meth:`switch_to_deploy` each block then
    runs as GEMMs without the PConv concat (:meth:`MLPBlock._forward_matmuls`). The returned maps
    are NCHW-contiguous either way.

    Args:
        arch: 't0', 't1', 't2', 's', 'm', 'l' or a dict with the keys of ``arch_settings``
            (``channels``: the 4 stage widths; the official archs double a base width per
            stage, ``(e, 2e, 4e, 8e)``).
        act_cfg: activation of the MLPs and the head; None takes the arch's (GELU for t0/t1,
            ReLU otherwise, as released).
        drop_path_rate: stochastic depth, linear over all blocks; None takes the arch's official
            value (the detection configs' for s/m/l, the ImageNet configs' for t0/t1/t2).
        n_div: PConv convolves ``channels // n_div`` channels.
        mlp_ratio: hidden width of the MLPs relative to their input.
        layer_scale_init_value: > 0 adds a per-channel ``layer_scale`` (unused in all releases).
        norm_output: add the official detection model's norm after each returned map.
        num_classes: an int also builds the official classification head (``avgpool_pre_head``
            with ``feature_dim`` channels, then ``head``; 0 means no Linear) for :meth:`classify`.
        csp: ``dict(ratio=0.5)`` builds Cross-Stage-Partial stages (the shared
            :class:`~mmlightbb.models.layers.CSPStage`, laid out as CSPConvNeXt): stage i's
            merging layer (2x2/s2 ConvBN; none for stage 0) goes to the inner width
            ``(channels[i-1] + channels[i]) // 2`` (stage 0: ``channels[0]``), ``ratio`` of it runs
            through the stage's MLP blocks, the rest is the shortcut, and a 1x1 ConvBN-act fuses
            the concatenation to ``channels[i]``. Keys: ``stages.i.{down,conv1,conv2,blocks,
            conv3}`` for i = 0..3 (no merging layers between them). None (default) is the
            official model; the arch ``'csp-t2'`` is t2 with ``csp=dict(ratio=0.5)``.
    """
    # drop_path_rate: official detection wrappers for s/m/l; cls yamls for t0/t1/t2 (no det wrapper)
    arch_settings = {
        't0': dict(channels=(40, 80, 160, 320), depths=(1, 2, 8, 2), act_cfg=_GELU,
                   drop_path_rate=0.0),
        't1': dict(channels=(64, 128, 256, 512), depths=(1, 2, 8, 2), act_cfg=_GELU,
                   drop_path_rate=0.02),
        't2': dict(channels=(96, 192, 384, 768), depths=(1, 2, 8, 2), act_cfg=_RELU,
                   drop_path_rate=0.05),
        's': dict(channels=(128, 256, 512, 1024), depths=(1, 2, 13, 2), act_cfg=_RELU,
                  drop_path_rate=0.15),
        'm': dict(channels=(144, 288, 576, 1152), depths=(3, 4, 18, 3), act_cfg=_RELU,
                  drop_path_rate=0.2),
        'l': dict(channels=(192, 384, 768, 1536), depths=(3, 4, 18, 3), act_cfg=_RELU,
                  drop_path_rate=0.3),
        # t2 in CSP stages (csp=dict(ratio=0.5)); not a published model, no weights
        'csp-t2': dict(channels=(96, 192, 384, 768), depths=(1, 2, 8, 2), act_cfg=_RELU,
                       drop_path_rate=0.05),
    }

    cpu_channels_last = True
    min_num_classes = 0  # the official head without its Linear (pooled features)

    def __init__(self,
                 arch='t0',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: Optional[dict] = None,
                 drop_path_rate: Optional[float] = None,
                 n_div: int = 4,
                 mlp_ratio: float = 2.0,
                 layer_scale_init_value: float = 0.0,
                 norm_output: bool = True,
                 num_classes: Optional[int] = None,
                 feature_dim: int = 1280,
                 with_cp: bool = False,
                 csp: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(arch=arch, in_channels=in_channels, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval,
                         num_classes=num_classes, with_cp=with_cp, init_cfg=init_cfg)
        self.csp = self.parse_csp(csp)
        channels, depths = self.arch['channels'], self.arch['depths']
        act_cfg = self.arch['act_cfg'] if act_cfg is None else act_cfg
        drop_path_rate = self.arch['drop_path_rate'] if drop_path_rate is None else drop_path_rate
        self._check_args(channels, depths, n_div, mlp_ratio, layer_scale_init_value, feature_dim)
        stage_drop_path_rates = self.drop_path_rates(drop_path_rate, depths)
        self.stage_channels = list(channels)

        self.patch_embed = ConvBN(in_channels, channels[0], 4, 4, 0, norm_cfg=norm_cfg,
                                  names=('proj', 'norm'))
        block_kwargs = dict(n_div=n_div, mlp_ratio=mlp_ratio,
                            layer_scale_init_value=layer_scale_init_value, norm_cfg=norm_cfg,
                            act_cfg=act_cfg)
        layers = []
        for i, stage_rates in enumerate(stage_drop_path_rates):
            if self.csp is not None:
                layers.append(self._csp_stage(i, channels, stage_rates, block_kwargs))
                continue
            if i > 0:  # the official PatchMerging
                layers.append(ConvBN(channels[i - 1], channels[i], 2, 2, 0, norm_cfg=norm_cfg,
                                     names=('reduction', 'norm')))
            layers.append(BasicStage(channels[i], stage_rates, **block_kwargs))
        self.stages = nn.Sequential(*layers)

        self.norm_output = norm_output
        if norm_output:  # only for the returned maps: an unused norm would idle under DDP
            for i in self.out_indices:
                norm = build_norm_layer(norm_cfg, self.stage_channels[i])[1]
                self.add_module(f'norm{2 * i}', norm)

        if num_classes is not None:
            self.avgpool_pre_head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(self.stage_channels[3], feature_dim, 1, bias=False),
                build_activation_layer(act_cfg))
            self.head = nn.Linear(feature_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _csp_stage(self, i: int, channels, rates, block_kwargs: dict) -> CSPStage:
        c_in = channels[i - 1] if i > 0 else channels[0]
        mid = (c_in + channels[i]) // 2
        # FasterNet's merging layer, to the inner width
        down = (ConvBN(c_in, mid, 2, 2, 0, norm_cfg=block_kwargs['norm_cfg'])
                if i > 0 else None)
        n_div = block_kwargs['n_div']

        def blocks(c: int) -> nn.Sequential:
            if c // n_div < 1:
                raise ValueError(f'{type(self).__name__}(arch={self.arch_name!r}): the CSP block '
                                 f'part of stage {i} has {c} channels, fewer than n_div={n_div}; '
                                 'use wider stages or a larger csp ratio')
            return BasicStage(c, rates, **block_kwargs).blocks

        return CSPStage(mid, channels[i], blocks, down=down, ratio=self.csp['ratio'],
                        conv_bias=False, norm_cfg=block_kwargs['norm_cfg'],
                        act_cfg=block_kwargs['act_cfg'])

    def _check_args(self, channels, depths, n_div, mlp_ratio, layer_scale_init_value,
                    feature_dim):
        name = self.name_with_arch
        for key, values in (('channels', channels), ('depths', depths)):
            if not isinstance(values, (list, tuple)) or len(values) != 4 or any(
                    not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f'{name}: {key} must be 4 positive ints (one per stage), got '
                                 f'{values!r}.')
        if not isinstance(n_div, int) or not 1 <= n_div <= min(channels):
            raise ValueError(f'{name}: n_div={n_div!r} must be an int in 1..{min(channels)} (PConv '
                             'convolves channels // n_div channels; the official value is 4).')
        if not mlp_ratio > 0:
            raise ValueError(f'{name}: mlp_ratio must be > 0 (official: 2), got {mlp_ratio!r}.')
        if layer_scale_init_value < 0:
            raise ValueError(f'{name}: layer_scale_init_value must be >= 0 (0 disables layer '
                             f'scale, as in all releases), got {layer_scale_init_value!r}.')
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f'{name}: feature_dim must be a positive int (official: 1280), '
                             f'got {feature_dim!r}.')

    def frozen_modules(self, index: int) -> List[nn.Module]:
        if index == 0:
            return [self.patch_embed]
        if self.csp is not None:  # the whole CSP stage, its merging layer included
            return [self.stages[index - 1]]
        # stage k is stages[2k-2], led into by the merging layer stages[2k-3]
        return list(self.stages[max(2 * index - 3, 0):2 * index - 1])

    def _run_stage(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, BasicStage):
            for block in layer.blocks:
                x = self.run_block(block, x)
            return x
        if isinstance(layer, CSPStage):
            return layer(x, self.run_block)
        return layer(x)

    def forward_stages(self, x: torch.Tensor,
                       last_stage: int = NUM_OUTPUTS - 1) -> List[torch.Tensor]:
        self.check_input(x)
        x = self.patch_embed(cpu_channels_last(x, self.cpu_channels_last and not self.training))
        maps = []
        # the plain form interleaves merging layers: stage i is stages[2i] (CSP: stages[i])
        step = 1 if self.csp is not None else 2
        for idx, layer in enumerate(self.stages[:step * last_stage + 1]):
            x = self._run_stage(layer, x)
            if idx % step == 0:
                maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        maps = self.forward_stages(x, self.out_indices[-1])
        if self.norm_output:
            return nchw_outputs([getattr(self, f'norm{2 * i}')(maps[i]) for i in self.out_indices])
        return nchw_outputs([maps[i] for i in self.out_indices])

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits of the official classification model (needs ``num_classes``)."""
        self.require_classifier()
        return self.head(torch.flatten(self.avgpool_pre_head(self.forward_stages(x)[-1]), 1))

    def init_weights(self):
        if self._pretrained_cfg() is None:
            # official init: truncated normal(0.02) on conv/linear weights, zero biases
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        super().init_weights()

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Accept the official layout as is, plus the official Lightning ``.ckpt`` (``model.``
        prefix) and timm's layout (merging nested as ``stages.i.downsample``, renamed head)."""
        if not any(k.startswith(('patch_embed.', 'stages.')) for k in state_dict) and \
                any(k.startswith('model.patch_embed.') for k in state_dict):
            # train_test.py's checkpoint; drops e.g. a distillation teacher's keys
            state_dict = {k[6:]: v for k, v in state_dict.items() if k.startswith('model.')}
        if not any(re.match(r'stages\.\d+\.downsample\.', k) for k in state_dict):
            return state_dict
        # timm: stages.i.downsample.* -> stages.(2i-1).*, stages.i.blocks.* -> stages.(2i).blocks.*
        timm_head = {'conv_head.weight': 'avgpool_pre_head.1.weight',
                     'classifier.weight': 'head.weight', 'classifier.bias': 'head.bias'}
        converted = {}
        for key, value in state_dict.items():
            match = re.match(r'stages\.(\d+)\.(downsample\.)?(.*)', key)
            if match:
                i, downsample, rest = match.groups()
                key = f'stages.{2 * int(i) - 1 if downsample else 2 * int(i)}.{rest}'
            converted[timm_head.get(key, key)] = value
        return converted
