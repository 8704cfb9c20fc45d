"""The backbone families of mmlightbb (the contract they share: :mod:`.base`).

One name per concept across the families:

* constructor: ``arch``, ``in_channels``, ``out_indices``, ``frozen_stages``, ``norm_eval``,
  ``norm_cfg``/``act_cfg``, ``drop_path_rate`` (the model's; blocks take their own
  ``drop_path_rate``, stages a ``drop_path_rates`` list), ``layer_scale_init_value``,
  ``mlp_ratio`` (hidden width of a block's MLP), ``norm_output`` (a norm on each returned map),
  ``num_classes`` (also build the classifier for ``classify()``, which raises ``ValueError``
  without it), ``with_cp``, ``init_cfg``;
* ``arch_settings``: ``channels`` (the 4 stage widths), ``depths`` (blocks per stage);
* methods: ``forward_stages(x, last_stage)`` (the stage maps before output norms, on which
  ``forward`` and ``classify`` are built), ``frozen_modules(i)``, ``switch_to_deploy()``;
* conv + BN (+ act) layers are :mod:`..layers.conv_bn`'s, folded for deploy by its
  ``fuse_conv_norm``.

Module names are free only where no checkpoint key depends on them. Official keys keep their
names, even where they name a shared concept differently: ConvNeXt ``gamma`` vs FasterNet
``layer_scale`` (layer scale); output norms ``norm{i}`` (ConvNeXt, FasterNet), ``norms.{k}``
(CSPConvNeXt, Paddle) and ``stages.{i}.norm`` (RepLKNet); ConvBN children ``proj``/``reduction`` +
``norm`` (FasterNet), ``bn1`` (GhostNet ``blocks.9.0``) and index-keyed layouts (GhostNet
``primary_conv.0``, FasterNet ``mlp.0``), see :mod:`..layers.conv_bn`; CSPConvNeXt's Paddle
``Down_Conv`` stem.
"""
from .base import BaseBackbone
from .convnext import ConvNeXt
from .csp_convnext import CSPConvNeXt
from .fasternet import FasterNet
from .parameternet import ParameterNet
from .replknet import RepLKNet

# the backbone families of mmlightbb, for tools that iterate over them
BACKBONES = {cls.__name__: cls
             for cls in (ConvNeXt, CSPConvNeXt, FasterNet, RepLKNet, ParameterNet)}

__all__ = ['BaseBackbone', 'BACKBONES', 'ConvNeXt', 'CSPConvNeXt', 'FasterNet', 'ParameterNet',
           'RepLKNet']
