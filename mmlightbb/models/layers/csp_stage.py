"""A Cross-Stage-Partial (CSP) stage around any family's blocks (Wang et al., CSPNet, CVPRW 2020;
the layout of CSPConvNeXt / E-ConvNeXt, violetweir, arXiv 2508.20955).

    x -> down -> conv1 (1x1 ConvBN-act, the shortcut part) ----------------------+
              -> conv2 (1x1 ConvBN-act, the block part) -> blocks (the family's) -+-> concat
         -> attn (optional, e.g. ESE) -> conv3 (1x1 ConvBN-act to out_channels)

Only the block part (``ratio`` of the stage's inner width, half in CSPConvNeXt) runs through the
family's blocks, so a stage costs about ``ratio`` times the blocks' MACs plus three 1x1 convs. The
module names (``down``, ``conv1``, ``conv2``, ``blocks``, ``attn``, ``conv3``) are CSPConvNeXt's,
i.e. the official Paddle ones, so its converted checkpoints keep loading.
"""
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from .conv_bn import ConvBN

BlockBuilder = Callable[[int], Union[nn.Module, Sequence[nn.Module]]]


def check_csp_ratio(ratio, owner: str = 'CSP stage') -> None:
    if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ValueError(f'{owner}: csp ratio must be in (0, 1) (the share of the stage width that '
                         f'runs through the blocks; 0.5 in CSPConvNeXt), got {ratio!r}')


def csp_split(mid_channels: int, ratio: float) -> int:
    """Channels of the block part of a ``mid_channels``-wide CSP stage split at ``ratio``."""
    check_csp_ratio(ratio)
    part = mid_channels * ratio
    if part != int(part) or not 0 < int(part) < mid_channels:
        raise ValueError(f'CSP stage: ratio {ratio} of the inner width {mid_channels} is '
                         f'{part:g} channels; choose a ratio (or widths) that gives a whole number '
                         f'of channels in 1..{mid_channels - 1}')
    return int(part)


class CSPStage(nn.Module):
    """One CSP stage: ``down`` -> split -> ``blocks`` on one part -> concat -> ``attn`` ->
    ``conv3``.

    Args:
        mid_channels: the stage's inner width, i.e. what ``down`` outputs (CSPConvNeXt:
            ``(in_channels + out_channels) // 2``).
        out_channels: the stage's output width (``conv3``).
        block_builder: ``block_builder(c)`` returns the family's block(s) for ``c`` channels
            (a module or a list of modules; each must keep ``c`` channels and the spatial size).
        down: the down-sampling / transition that maps the stage input to ``mid_channels``
            (the family's own; None: the input already has ``mid_channels``).
        ratio: share of ``mid_channels`` that runs through the blocks (``conv2``); the rest is
            the shortcut (``conv1``). 0.5 as in CSPConvNeXt.
        attn_builder: ``attn_builder(mid_channels)`` returns a module applied to the concatenated
            map (CSPConvNeXt: an ESE); None for none.
        conv_bias: the 1x1 convs keep a bias before their BN (True in the Paddle models; their
            checkpoints carry it).
        norm_cfg / act_cfg: of the three 1x1 ConvBN layers.

    ``forward(x, run_block)`` runs each block through ``run_block(block, x)`` when given (the
    backbones pass their activation-checkpointing runner).
    """

    def __init__(self, mid_channels: int, out_channels: int, block_builder: BlockBuilder,
                 down: Optional[nn.Module] = None, ratio: float = 0.5,
                 attn_builder: Optional[Callable[[int], nn.Module]] = None,
                 conv_bias: bool = True, norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU')):
        super().__init__()
        block_channels = csp_split(mid_channels, ratio)
        self.mid_channels = mid_channels
        self.block_channels = block_channels
        self.out_channels = out_channels
        # construction order = registration order = the RNG order of the original CSPConvNeXt
        self.down = down if down is not None else nn.Identity()
        self.conv1 = ConvBN(mid_channels, mid_channels - block_channels, 1, bias=conv_bias,
                            norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.conv2 = ConvBN(mid_channels, block_channels, 1, bias=conv_bias, norm_cfg=norm_cfg,
                            act_cfg=act_cfg)
        blocks = block_builder(block_channels)
        if isinstance(blocks, nn.Sequential):
            self.blocks = blocks
        elif isinstance(blocks, nn.Module):
            self.blocks = nn.Sequential(blocks)
        else:
            self.blocks = nn.Sequential(*blocks)
        self.attn = attn_builder(mid_channels) if attn_builder is not None else nn.Identity()
        self.conv3 = ConvBN(mid_channels, out_channels, 1, bias=conv_bias, norm_cfg=norm_cfg,
                            act_cfg=act_cfg)

    def forward(self, x: torch.Tensor, run_block: Optional[Callable] = None) -> torch.Tensor:
        x = self.down(x)
        y = self.conv2(x)
        for block in self.blocks:
            y = run_block(block, y) if run_block is not None else block(y)
        return self.conv3(self.attn(torch.cat([self.conv1(x), y], dim=1)))


def parse_csp_cfg(csp, owner: str) -> Optional[dict]:
    """Normalise a backbone's ``csp`` argument: None/False (plain stages) or a dict with ``ratio``
    (default 0.5); ``True`` means ``dict(ratio=0.5)``."""
    if csp is None or csp is False:
        return None
    if csp is True:
        csp = {}
    if not isinstance(csp, dict):
        raise ValueError(f'{owner}: csp must be None or a dict such as dict(ratio=0.5), got '
                         f'{csp!r}')
    unknown = sorted(set(csp) - {'ratio'})
    if unknown:
        raise ValueError(f'{owner}: csp has unknown keys {unknown}; the only key is ratio (the '
                         'share of each stage width that runs through the blocks, default 0.5)')
    cfg = dict(dict(ratio=0.5), **csp)
    check_csp_ratio(cfg['ratio'], owner)
    return cfg
