"""Build-time check that a detector's neck expects the channels its backbone returns.

A neck whose ``in_channels`` differ from the backbone's ``out_channels`` only fails at the first
forward, deep inside a convolution ("expected input[2, 320, 20, 20] to have 512 channels"), and
the usual cause is a config edit (another ``arch`` or ``out_indices``) that did not update
``model.neck.in_channels``. :func:`check_backbone_neck_channels` compares the two lists and names
both and the fix.

It runs on the built model: in ``RecoverableRunner.build_model`` (mmdet's own ``tools/train.py``
with a config that names that runner, and mmlightbb's tools) and where mmlightbb's analysis tools
build a detector. Backbones without an ``out_channels`` list (mmdet's own) and necks without an
``in_channels`` list are skipped.
"""
from typing import List, Optional

from mmdet.models.necks import ChannelMapper
from torch import nn

__all__ = ['ChannelMismatchError', 'check_backbone_neck_channels']

class ChannelMismatchError(ValueError):
    """A neck's ``in_channels`` differ from the channels its backbone returns."""


def _channel_list(value) -> Optional[List[int]]:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def neck_in_channels(neck: nn.Module) -> Optional[List[int]]:
    """The channels a neck expects per input map, or None when it does not say.

    ``ChannelMapper`` keeps no ``in_channels`` attribute, so its convs are read.
    """
    if isinstance(neck, ChannelMapper):
        return [m.conv.in_channels for m in neck.convs]
    return _channel_list(getattr(neck, 'in_channels', None))


def _suggest_out_indices(backbone: nn.Module, wanted: List[int]) -> str:
    """The out_indices fix: exact indices when the backbone has stages of the wanted channels."""
    stages = _channel_list(getattr(backbone, 'stage_channels', None)) or []
    if all(stages.count(c) == 1 for c in wanted):
        indices = tuple(stages.index(c) for c in wanted)
        if list(indices) == sorted(indices):
            return f', or set model.backbone.out_indices={indices}'
    return ', or change model.backbone.out_indices'


def _check(backbone: nn.Module, neck: nn.Module, owner: str) -> None:
    out_channels = _channel_list(getattr(backbone, 'out_channels', None))
    if out_channels is None:
        return
    if isinstance(neck, nn.Sequential) and len(neck) > 0:  # a list of necks: the first is fed
        neck = neck[0]
    in_channels = neck_in_channels(neck)
    if in_channels is None or out_channels == in_channels:
        return
    arch = getattr(backbone, 'arch_name', None)
    described = type(backbone).__name__ + (f"(arch={arch!r}, out_indices="
                                           f"{getattr(backbone, 'out_indices', None)})"
                                           if arch is not None else '')
    compact = '[' + ','.join(map(str, out_channels)) + ']'
    raise ChannelMismatchError(
        f'{owner}: the backbone {described} returns feature maps with channels {out_channels}, '
        f'but the neck {type(neck).__name__} expects in_channels {in_channels}. Set '
        f'model.neck.in_channels={out_channels} in the config (or --cfg-options '
        f'model.neck.in_channels="{compact}")' + _suggest_out_indices(backbone, in_channels) +
        '. Every mmlightbb backbone lists its channels in `out_channels`.')


def check_backbone_neck_channels(model: nn.Module) -> None:
    """Raise :class:`ChannelMismatchError` naming both lists when ``model.neck`` cannot take
    ``model.backbone``'s maps; do nothing when either is absent or does not state its channels.

    """
    backbone = getattr(model, 'backbone', None)
    neck = getattr(model, 'neck', None)
    if isinstance(backbone, nn.Module) and isinstance(neck, nn.Module):
        _check(backbone, neck, type(model).__name__)
