"""mmlightbb backbones in mmpretrain: ImageNet pre-training with mmpretrain's data, augmentation,
schedules and metrics (``configs/imagenet/*.py``).

Importing this module (the ImageNet configs list it in ``custom_imports``) needs an importable
mmpretrain (``pip install mmpretrain==1.2.0`` and a torchvision built for the installed torch).
It registers in mmpretrain's ``MODELS``:

* ``BackboneClassifier``: an ``ImageClassifier`` whose logits are the backbone's own published
  classification form (``backbone.classify()``: ConvNeXt's GAP + LayerNorm + linear, FasterNet's
  GAP + 1x1 conv + linear, GhostNet's head, ...), so the ImageNet model is the paper's model and
  the checkpoint's ``backbone.*`` keys are exactly the official layout: it initialises a detector
  backbone with ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` (the ``backbone.`` prefix
  is stripped by ``load_pretrained``) with no conversion step. Its ``backbone`` is always
  mmlightbb's class of that name (mmpretrain has a ``ConvNeXt`` and a ``RepLKNet`` of its own);
  the loss and metrics come from a parameter-free ``ClsHead``.
* the backbone classes whose names mmpretrain does not use already (``FasterNet``,
  ``CSPConvNeXt``, ``ParameterNet``), for users' own mmpretrain configs; mmlightbb's ``ConvNeXt``
  and ``RepLKNet`` are ``mmdet.ConvNeXt`` / ``mmdet.RepLKNet`` there.
"""
from typing import Optional

try:
    from mmpretrain.models import ImageClassifier
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
except Exception as err:  # ImportError, or a torchvision that does not fit torch (RuntimeError)
    raise ImportError(
        'mmlightbb.models.mmpretrain_compat needs mmpretrain (pip install mmpretrain==1.2.0) with '
        f'a torchvision built for the installed torch; importing it failed: '
        f'{type(err).__name__}: {err}') from err

from .backbones import BACKBONES

__all__ = ['BackboneClassifier', 'build_backbone']


def build_backbone(cfg):
    """An mmlightbb backbone from ``dict(type=<class name>, **kwargs)``; a module passes."""
    if not isinstance(cfg, dict):
        return cfg
    kwargs = dict(cfg)
    name = kwargs.pop('type', None)
    name = name.split('.')[-1] if isinstance(name, str) else name
    if name not in BACKBONES:
        raise ValueError(f'BackboneClassifier: backbone type {cfg.get("type")!r} is not an '
                         f'mmlightbb backbone; valid types are {sorted(BACKBONES)}')
    return BACKBONES[name](**kwargs)


@MMPRETRAIN_MODELS.register_module()
class BackboneClassifier(ImageClassifier):
    """``ImageClassifier`` with the backbone's own classification head (``classify()``).

    Args:
        backbone (dict | nn.Module): an mmlightbb backbone built with ``num_classes`` (e.g.
            ``dict(type='FasterNet', arch='t2', num_classes=1000, norm_output=False)``).
        head (dict): a head without parameters that turns logits into the loss and predictions,
            e.g. ``dict(type='ClsHead', loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
            mode='original'))``.
        Other arguments as :class:`mmpretrain.models.ImageClassifier` (``train_cfg`` carries
        Mixup/CutMix as ``augments``; no ``neck``).
    """

    def __init__(self, backbone, head: dict = dict(type='ClsHead'),
                 train_cfg: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg=None, pretrained=None):
        backbone = build_backbone(backbone)
        if getattr(backbone, 'num_classes', None) is None or not hasattr(backbone, 'classify'):
            raise ValueError(f'BackboneClassifier: build the backbone with num_classes (e.g. '
                             f'1000) so that it has its classification head; got '
                             f'{type(backbone).__name__} without one')
        super().__init__(backbone=backbone, neck=None, head=head, pretrained=pretrained,
                         train_cfg=train_cfg, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if any(True for _ in self.head.parameters()):
            raise ValueError('BackboneClassifier: the head must have no parameters (the '
                             "backbone's classify() is the classifier); use type='ClsHead'")

    def extract_feat(self, inputs, stage: str = 'neck'):
        """``stage='backbone'``: the backbone's feature maps; otherwise a 1-tuple of logits (the
        input ``ClsHead`` expects)."""
        if stage == 'backbone':
            return self.backbone(inputs)
        return (self.backbone.classify(inputs), )


for _name, _cls in BACKBONES.items():
    if _name not in MMPRETRAIN_MODELS.module_dict:
        MMPRETRAIN_MODELS.register_module(name=_name, module=_cls)
