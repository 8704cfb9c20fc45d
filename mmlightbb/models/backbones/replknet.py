"""RepLKNet (CVPR 2022), "Scaling Up Your Kernels to 31x31: Revisiting Large Kernel Design in CNNs".

Over 400 lines on purpose: one file per model family (house style) holds RepLKNet's blocks,
its large-kernel re-parameterization, its CSP form and the official-layout handling.

Official code: https://github.com/DingXiaoH/RepLKNet-pytorch (``replknet.py``). Module and parameter
names follow it exactly, so the released ImageNet checkpoints (flat state dicts, training form or
``small_kernel_merged`` deploy form) and the official detection backbones load as they are; the
mmpretrain conversions (``backbone.`` prefix, ``head.fc``) are converted on load.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmdet.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import (ConvBN, CSPStage, DepthwiseLargeKernelConv2d, bn_scale_shift,
                      cpu_channels_last, nchw_outputs)
from .base import NUM_OUTPUTS, BaseBackbone


class ReparamLargeKernelConv(nn.Module):
    """Depthwise KxK conv-BN (``lkb_origin``) plus an optional kxk conv-BN (``small_conv``).

    ``switch_to_deploy()`` folds both BNs and adds the zero-padded kxk kernel to the KxK one, giving
    the official deploy conv ``lkb_reparam`` (bias, padding K//2); ``small_kernel_merged`` builds
    that form directly.

    On CPU the input is made channels_last first (``cpu_channels_last``, also while training):
    stock PyTorch runs a large depthwise kernel on NCHW far slower than oneDNN on channels_last,
    with the same result. ``benchmarks/speed_targets.py`` measures both, and an exact FFT
    convolution per layer shape, which was not reliably faster than the direct conv, so the
    direct conv stays the only path. On CUDA cuDNN prefers NCHW, so the tensor stays as it is.
    """
    cpu_channels_last = True

    def __init__(self, channels: int, kernel_size: int, small_kernel: Optional[int],
                 norm_cfg: dict, small_kernel_merged: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        self.lkb_origin = self.small_conv = self.lkb_reparam = None
        if small_kernel_merged:
            self.lkb_reparam = DepthwiseLargeKernelConv2d(channels, kernel_size, bias=True)
        else:
            self.lkb_origin = ConvBN(channels, channels, kernel_size, groups=channels,
                                     norm_cfg=norm_cfg)
            # same parameters as ConvBN's nn.Conv2d, with a fast CPU weight gradient
            self.lkb_origin.conv = DepthwiseLargeKernelConv2d(channels, kernel_size)
            if small_kernel is not None:
                self.small_conv = ConvBN(channels, channels, small_kernel, groups=channels,
                                         norm_cfg=norm_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = cpu_channels_last(x, self.cpu_channels_last)
        if self.lkb_reparam is not None:
            return self.lkb_reparam(x)
        out = self.lkb_origin(x)
        if self.small_conv is not None:
            out = out + self.small_conv(x)
        return out

    @torch.no_grad()
    def switch_to_deploy(self):
        if self.lkb_reparam is not None:
            return
        weight, bias = self.lkb_origin.fused_weight_bias()
        if self.small_conv is not None:
            small_weight, small_bias = self.small_conv.fused_weight_bias()
            weight = weight + F.pad(small_weight, [(self.kernel_size - self.small_kernel) // 2] * 4)
            bias = bias + small_bias
        channels = weight.shape[0]
        # padding from K, not copied from the old conv: copying breaks with the official iGEMM
        # conv, whose padding attribute is 0
        self.lkb_reparam = DepthwiseLargeKernelConv2d(channels, self.kernel_size,
                                                      bias=True).to(weight)
        self.lkb_reparam.weight.copy_(weight)
        self.lkb_reparam.bias.copy_(bias)
        self.lkb_origin = self.small_conv = None


@torch.no_grad()
def _fold_pre_bn(block: nn.Module, bn_name: str) -> None:
    """Deploy: fold the pre-norm ``bn(x) = a*x + c`` into the 1x1 conv ``block.pw1``.

    Exact because a 1x1 conv has no zero padding: ``W (a*x + c) + b = (W*a) x + (b + W c)``.
    """
    bn = getattr(block, bn_name)
    if not isinstance(bn, _BatchNorm):
        return
    block.pw1.switch_to_deploy()  # its own BN first, which gives the conv a bias
    scale, shift = bn_scale_shift(bn)
    conv = block.pw1.conv
    conv.bias.add_(conv.weight.flatten(1) @ shift)
    conv.weight.mul_(scale.view(1, -1, 1, 1))
    setattr(block, bn_name, nn.Identity())


class RepLKBlock(nn.Module):
    """``x + DropPath(pw2(ReLU(large_kernel(pw1(prelkb_bn(x))))))``, pw1 with ReLU, pw2 without."""

    def __init__(self, channels: int, dw_channels: int, kernel_size: int,
                 small_kernel: Optional[int], drop_path_rate: float, norm_cfg: dict, act_cfg: dict,
                 small_kernel_merged: bool = False):
        super().__init__()
        # registration order as official, so state_dict() lists the keys in the same order
        self.pw1 = ConvBN(channels, dw_channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.pw2 = ConvBN(dw_channels, channels, 1, norm_cfg=norm_cfg)
        self.large_kernel = ReparamLargeKernelConv(dw_channels, kernel_size, small_kernel,
                                                   norm_cfg, small_kernel_merged)
        self.lk_nonlinear = build_activation_layer(act_cfg)
        self.prelkb_bn = build_norm_layer(norm_cfg, channels)[1]
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lk_nonlinear(self.large_kernel(self.pw1(self.prelkb_bn(x))))
        return x + self.drop_path(self.pw2(out))

    def switch_to_deploy(self):
        _fold_pre_bn(self, 'prelkb_bn')


class ConvFFN(nn.Module):
    """``x + DropPath(pw2(GELU(pw1(preffn_bn(x)))))`` with 1x1 conv-BNs (``pw1`` widens)."""

    def __init__(self, channels: int, hidden_channels: int, drop_path_rate: float, norm_cfg: dict):
        super().__init__()
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.preffn_bn = build_norm_layer(norm_cfg, channels)[1]
        self.pw1 = ConvBN(channels, hidden_channels, 1, norm_cfg=norm_cfg)
        self.pw2 = ConvBN(hidden_channels, channels, 1, norm_cfg=norm_cfg)
        self.nonlinear = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.pw2(self.nonlinear(self.pw1(self.preffn_bn(x)))))

    def switch_to_deploy(self):
        _fold_pre_bn(self, 'preffn_bn')


class RepLKNetStage(nn.Module):
    """``blocks`` (RepLKBlock, ConvFFN interleaved) and ``norm``, the output norm.

    A container: the backbone runs the blocks one by one (each may be checkpointed) and applies
    ``norm`` (Identity unless ``norm_output``) to the returned map only.
    """

    def __init__(self, channels: int, kernel_size: int, drop_path_rates: List[float],
                 small_kernel: Optional[int], dw_ratio: float, mlp_ratio: float, norm_cfg: dict,
                 act_cfg: dict, small_kernel_merged: bool, norm_output: bool):
        super().__init__()
        blocks = []
        for rate in drop_path_rates:  # a RepLK block and its ConvFFN share the rate
            blocks.append(RepLKBlock(channels, int(channels * dw_ratio), kernel_size, small_kernel,
                                     rate, norm_cfg, act_cfg, small_kernel_merged))
            blocks.append(ConvFFN(channels, int(channels * mlp_ratio), rate, norm_cfg))
        self.blocks = nn.ModuleList(blocks)
        self.norm = build_norm_layer(norm_cfg, channels)[1] if norm_output else nn.Identity()


def _structural_form(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """'training', 'small_kernel_merged' or 'deploy' from the keys; None without block keys."""
    if any('.large_kernel.lkb_origin.' in k for k in state_dict):
        return 'training'
    if any('.large_kernel.lkb_reparam.' in k for k in state_dict):
        return 'small_kernel_merged' if any('.pw2.bn.' in k for k in state_dict) else 'deploy'
    return None


@MODELS.register_module()
class RepLKNet(BaseBackbone):
    """RepLKNet backbone (31B/31L/XL) returning the stride 4/8/16/32 maps.

    Layout as the official model: ``stem.0..3``, ``stages.i.blocks`` (RepLKBlock at even,
    ConvFFN at odd indices), ``stages.i.norm``, ``transitions.0..2`` and, for classification,
    ``norm`` + ``head``. Weights start from PyTorch's default init, as in the official code.

    Args:
        arch: '31B', '31L', 'XL' or a dict with the keys of ``arch_settings``.
        norm_cfg: every BN of the model (e.g. ``dict(type='SyncBN')`` for multi-GPU training, as
            the official detection configs do); must be a BatchNorm for re-parameterization.
        act_cfg: the ReLUs (stem, transitions, ``pw1`` and ``lk_nonlinear``); ConvFFN keeps GELU.
        drop_path_rate: stochastic depth, linear over the 24 RepLK blocks; each ConvFFN uses the
            rate of the RepLK block before it. Official: 0.3 on ImageNet, 0.4-0.7 for detection.
        small_kernel: size of the parallel depthwise branch merged into the large kernel at
            deploy (an odd int no larger than any large kernel), None for none; 'arch' takes the
            arch's (5 for 31B/31L, None for XL).
        dw_ratio: width of the large-kernel branch relative to the stage; None takes the arch's
            (1 for 31B/31L, 1.5 for XL).
        mlp_ratio: hidden width of the ConvFFNs relative to the stage (the official
            ``ffn_ratio``).
        norm_output: a BN on each returned map (``stages.i.norm``; the official
            ``norm_intermediate_features``); None means the official detection setting: on for
            XL, off for 31B/31L and for classification.
        num_classes: an int also builds the classifier (``norm``, ``head``) for :meth:`classify`.
        small_kernel_merged: build the official deploy form (``lkb_reparam`` instead of
            ``lkb_origin``/``small_conv``, all other BNs kept) to load a checkpoint saved in it.
        deploy: build the form :meth:`switch_to_deploy` gives (also every BN folded) to load a
            checkpoint saved after it.
        with_cp: activation checkpointing of ``stem[1:]`` and every block, as the official
            detection configs (``use_checkpoint=True``).
        csp: ``dict(ratio=0.5)`` builds Cross-Stage-Partial stages (the shared
            :class:`~mmlightbb.models.layers.CSPStage`, laid out as CSPConvNeXt): stage i's
            transition (1x1 ConvBN-ReLU, DW 3x3/s2 ConvBN-ReLU) goes to the inner width
            ``(channels[i-1] + channels[i]) // 2`` (stage 0: ``channels[0]``), ``ratio`` of it runs
            through the RepLK blocks and ConvFFNs, the rest is the shortcut, and a 1x1 ConvBN-ReLU
            fuses the concatenation to ``channels[i]``. Keys: ``stages.i.{down,conv1,conv2,blocks,
            conv3,norm}``, no ``transitions``. None (default) is the official model; the arch
            ``'csp-31B'`` is 31B with ``csp=dict(ratio=0.5)``.

    CPU inference runs the whole network on channels_last maps (``cpu_channels_last``, see
    :mod:`mmlightbb.models.layers.memory_format`); the returned maps are NCHW-contiguous.
    :func:`~mmlightbb.models.layers.set_cpu_channels_last` with ``False`` gives the official
    NCHW execution, large kernels included.
    """
    cpu_channels_last = True
    arch_settings = {
        '31B': dict(large_kernel_sizes=[31, 29, 27, 13], depths=[2, 2, 18, 2],
                    channels=[128, 256, 512, 1024], small_kernel=5, dw_ratio=1.0),
        '31L': dict(large_kernel_sizes=[31, 29, 27, 13], depths=[2, 2, 18, 2],
                    channels=[192, 384, 768, 1536], small_kernel=5, dw_ratio=1.0),
        'XL': dict(large_kernel_sizes=[27, 27, 27, 13], depths=[2, 2, 18, 2],
                   channels=[256, 512, 1024, 2048], small_kernel=None, dw_ratio=1.5),
        # 31B in CSP stages (csp=dict(ratio=0.5)); not a published model, no weights
        'csp-31B': dict(large_kernel_sizes=[31, 29, 27, 13], depths=[2, 2, 18, 2],
                        channels=[128, 256, 512, 1024], small_kernel=5, dw_ratio=1.0),
    }

    def __init__(self,
                 arch='31B',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU'),
                 drop_path_rate: float = 0.3,
                 small_kernel: Union[int, None, str] = 'arch',
                 dw_ratio: Optional[float] = None,
                 mlp_ratio: float = 4,
                 norm_output: Optional[bool] = None,
                 num_classes: Optional[int] = None,
                 small_kernel_merged: bool = False,
                 deploy: bool = False,
                 with_cp: bool = False,
                 csp: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(arch=arch, in_channels=in_channels, out_indices=out_indices,
                         frozen_stages=frozen_stages, norm_eval=norm_eval,
                         num_classes=num_classes, with_cp=with_cp, init_cfg=init_cfg)
        self.csp = self.parse_csp(csp)
        kernels = list(self.arch['large_kernel_sizes'])
        depths = list(self.arch['depths'])
        channels = list(self.arch['channels'])
        small_kernel = self.arch['small_kernel'] if small_kernel == 'arch' else small_kernel
        dw_ratio = self.arch['dw_ratio'] if dw_ratio is None else dw_ratio
        if norm_output is None:
            norm_output = self.arch_name == 'XL' and num_classes is None
        self._check_args(kernels, depths, channels, small_kernel, dw_ratio, mlp_ratio, norm_cfg)
        stage_drop_path_rates = self.drop_path_rates(drop_path_rate, depths)
        self.stage_channels = channels
        self.norm_output = norm_output

        c0 = channels[0]
        self.stem = nn.ModuleList([
            ConvBN(in_channels, c0, 3, 2, norm_cfg=norm_cfg, act_cfg=act_cfg),
            ConvBN(c0, c0, 3, 1, groups=c0, norm_cfg=norm_cfg, act_cfg=act_cfg),
            ConvBN(c0, c0, 1, 1, norm_cfg=norm_cfg, act_cfg=act_cfg),
            ConvBN(c0, c0, 3, 2, groups=c0, norm_cfg=norm_cfg, act_cfg=act_cfg)])
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i, (c, kernel, rates) in enumerate(zip(channels, kernels, stage_drop_path_rates)):
            if self.csp is not None:
                self.stages.append(self._csp_stage(
                    i, channels, kernel, rates, small_kernel, dw_ratio, mlp_ratio, norm_cfg,
                    act_cfg, small_kernel_merged or deploy,
                    norm_output and i in self.out_indices))
                continue
            self.stages.append(RepLKNetStage(
                c, kernel, rates, small_kernel, dw_ratio, mlp_ratio, norm_cfg, act_cfg,
                small_kernel_merged or deploy,
                # only returned maps get a norm: an unused one would idle under DDP
                norm_output=norm_output and i in self.out_indices))
            if i < 3:
                c_next = channels[i + 1]
                self.transitions.append(nn.Sequential(
                    ConvBN(c, c_next, 1, norm_cfg=norm_cfg, act_cfg=act_cfg),
                    ConvBN(c_next, c_next, 3, 2, groups=c_next, norm_cfg=norm_cfg,
                              act_cfg=act_cfg)))
        if num_classes is not None:
            self.norm = build_norm_layer(norm_cfg, channels[3])[1]
            self.head = nn.Linear(channels[3], num_classes)
        if deploy:
            self.switch_to_deploy()

    def _csp_stage(self, i, channels, kernel, rates, small_kernel, dw_ratio, mlp_ratio, norm_cfg,
                   act_cfg, merged, norm_output) -> CSPStage:
        c_in = channels[i - 1] if i > 0 else channels[0]
        mid = (c_in + channels[i]) // 2
        down = None
        if i > 0:  # RepLKNet's transition, to the inner width
            down = nn.Sequential(ConvBN(c_in, mid, 1, norm_cfg=norm_cfg, act_cfg=act_cfg),
                                 ConvBN(mid, mid, 3, 2, groups=mid, norm_cfg=norm_cfg,
                                        act_cfg=act_cfg))

        def blocks(c: int) -> List[nn.Module]:
            return list(RepLKNetStage(c, kernel, rates, small_kernel, dw_ratio, mlp_ratio,
                                      norm_cfg, act_cfg, merged, norm_output=False).blocks)

        stage = CSPStage(mid, channels[i], blocks, down=down, ratio=self.csp['ratio'],
                         conv_bias=False, norm_cfg=norm_cfg, act_cfg=act_cfg)
        stage.norm = build_norm_layer(norm_cfg, channels[i])[1] if norm_output else nn.Identity()
        return stage

    def _check_args(self, kernels, depths, channels, small_kernel, dw_ratio, mlp_ratio,
                    norm_cfg):
        name = self.name_with_arch
        for key, values in (('large_kernel_sizes', kernels), ('depths', depths),
                            ('channels', channels)):
            if len(values) != 4 or any(not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f'{name}: {key} must be 4 positive ints (one per stage), got '
                                 f'{values!r}.')
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f'{name}: large_kernel_sizes must be odd (padding K//2 keeps the '
                             f'size), got {kernels}.')
        if small_kernel is not None and (not isinstance(small_kernel, int) or small_kernel % 2 == 0
                                         or not 1 <= small_kernel <= min(kernels)):
            raise ValueError(
                f'{name}: small_kernel must be None or an odd int in 1..{min(kernels)} (it is '
                f'zero-padded into the smallest large kernel at deploy), got {small_kernel!r}; '
                "the official value is 5 (None for XL), 'arch' takes the arch's.")
        if not isinstance(dw_ratio, (int, float)) or any(int(c * dw_ratio) < 1 for c in channels):
            raise ValueError(f'{name}: dw_ratio must be > 0 (official: 1, 1.5 for XL), got '
                             f'{dw_ratio!r}.')
        if not isinstance(mlp_ratio, (int, float)) or any(int(c * mlp_ratio) < 1 for c in channels):
            raise ValueError(f'{name}: mlp_ratio must be > 0 (official: 4), got {mlp_ratio!r}.')
        if not isinstance(build_norm_layer(norm_cfg, 8)[1], _BatchNorm):
            raise ValueError(f'{name}: norm_cfg={norm_cfg!r} must build a BatchNorm (BN, SyncBN): '
                             'RepLKNet folds every norm into a conv at deploy.')

    def frozen_modules(self, index: int) -> List[nn.Module]:
        if index == 0:
            return [self.stem]
        if self.csp is not None:  # the whole CSP stage (its down-sampling included) but `norm`
            return [m for name, m in self.stages[index - 1].named_children() if name != 'norm']
        # a stage's output norm stays trainable: the neck reads it and no checkpoint has it
        modules = [self.stages[index - 1].blocks]
        if index > 1:
            modules.insert(0, self.transitions[index - 2])
        return modules

    def forward_stages(self, x: torch.Tensor,
                       last_stage: int = NUM_OUTPUTS - 1) -> List[torch.Tensor]:
        self.check_input(x)
        x = self.stem[0](cpu_channels_last(x, self.cpu_channels_last and not self.training))
        for layer in self.stem[1:]:
            x = self.run_block(layer, x)
        maps = []
        for i in range(last_stage + 1):
            if self.csp is not None:
                x = self.stages[i](x, self.run_block)
                maps.append(x)
                continue
            if i > 0:
                x = self.transitions[i - 1](x)
            for block in self.stages[i].blocks:
                x = self.run_block(block, x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        maps = self.forward_stages(x, self.out_indices[-1])
        # CPU maps are channels_last; necks get plain NCHW ones
        return nchw_outputs([self.stages[i].norm(maps[i]) for i in self.out_indices])

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits of the official classification model (needs ``num_classes``)."""
        self.require_classifier()
        x = self.forward_stages(x)[-1]
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.norm(x), 1), 1))

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Official keys load as they are; mmpretrain's ``head.fc.*`` become ``head.*`` and its
        classifier BN ``stages.3.norm.*`` (the only stage norm there) becomes ``norm.*``.

        Without ``num_classes`` the ``norm.*``/``head.*`` keys are reported unexpected, as the
        official code does. Raises ValueError when the checkpoint is in another structural form
        (training / ``small_kernel_merged`` / ``deploy``) than the model.
        """
        stage_norms = {k.split('.')[1] for k in state_dict if re.match(r'stages\.\d+\.norm\.', k)}
        converted = {}
        for key, value in state_dict.items():
            if key.startswith('head.fc.'):
                key = 'head.' + key[len('head.fc.'):]
            elif stage_norms == {'3'} and key.startswith('stages.3.norm.'):
                key = 'norm.' + key[len('stages.3.norm.'):]
            converted[key] = value
        self._check_form(converted)
        return converted

    def _check_form(self, state_dict: Dict[str, torch.Tensor]) -> None:
        how = {'training': 'deploy=False, small_kernel_merged=False (switch_to_deploy() after '
                           'loading gives the deploy form)',
               'small_kernel_merged': 'small_kernel_merged=True',
               'deploy': 'deploy=True'}
        file_form, model_form = _structural_form(state_dict), _structural_form(self.state_dict())
        if file_form is not None and file_form != model_form:
            raise ValueError(
                f'{type(self).__name__}(arch={self.arch_name!r}): the checkpoint is in the '
                f'{file_form} form but the model in the {model_form} form; build it with '
                f'{how[file_form]}.')

