"""Detector configs for the backbone comparison: a head (YOLOX-s or Cascade R-CNN) with any
backbone, on a COCO-json dataset, on one short schedule that is the same for every backbone.

Backbones are named ``family[:arch]``: the mmlightbb families (``convnext``, ``cspconvnext``,
``fasternet``, ``replknet``, ``parameternet``) and two mmdet baselines, ``cspdarknet`` (YOLOX's
own backbone; archs ``tiny``/``s``/``m``/``l``/``x`` are YOLOX's depth/width factors) and
``resnet`` (``18``..``152``), and ``mobilenetv2``, mmdet's MobileNetV2, the classic lightweight
backbone (archs are its width factors ``0.5``/``0.75``/``1.0``/``1.4``; strides 8/16/32 are the
outputs of its 3rd, 5th and 7th inverted-residual stages, 32/96/320 channels at 1.0, without the
final 1280-channel conv). ``rtmdet`` (arch ``tiny``) is not a backbone but mmdet 3's own
real-time detector, RTMDet-tiny (CSPNeXt-tiny backbone, CSPNeXt-PAFPN neck, RTMDet head; mmdet's
``rtmdet/rtmdet_tiny_8xb32-300e_coco.py``): the YOLO-style baseline a user would pick instead,
listed among the ``yolox`` runs (run ``rtmdet_tiny``; with ``cascade`` it is left out) and trained
on the YOLOX schedule (its own data preprocessor, augmentations rescaled to ``size``, its stage-2
pipeline for the last quarter of the epochs, EMA; BN instead of SyncBN, from scratch).
``baseline`` means each head's incumbent: CSPDarknet-s (YOLOX-s) for
``yolox``, ResNet-50 for ``cascade``.

:func:`build_config` returns a plain mmengine ``Config`` (mmdet's packaged YOLOX-s / Cascade R-CNN
R50-FPN configs with the backbone, neck channels, data, schedule and hooks replaced) that
``Config.dump`` writes as a self-contained file: ``python tools/train.py THAT_FILE`` reproduces
the run. The neck's ``in_channels`` are measured (a forward pass of the built backbone on a small
input), so any arch fits.

Schedules (:data:`SCHEDULES`), the same for every backbone of a head: AdamW (weight decay 0.05,
none on norms and biases), a 1-epoch warm-up, cosine decay to lr/20, batch ``batch_size``, no
validation during training, a checkpoint every epoch (the last one kept, for resuming). YOLOX: lr
2e-3 and the last quarter of the epochs without Mosaic/MixUp (YOLOX's mode switch), EMA, no
multi-scale batch resizing. Cascade R-CNN, tuned for small data on CPU (a from-scratch R-CNN at
mmdet's settings spends most of its time on thousands of 7x7 RoIs): lr 1e-3 with gradient clipping
(max norm 10; on the synthetic sonar set with FasterNet-T2 it reached VOC mAP50 0.27 after 8 epochs
at 1e-3; after 2 epochs 2e-4, 1e-3 and 3e-3 were all near 0), RoIAlign ``sampling_ratio=2`` (mmcv's
adaptive 0 is ~10x slower on CPU), anchors of scale 4 below 512 px (8 = mmdet's, for objects of 32+
px), 300 RPN proposals in training and testing (mmdet: 2000/1000) and 64 sampled RoIs per image per
stage (mmdet: 512; the two fully connected layers and RoIAlign over these RoIs are ~60% of a
training step on CPU). Images are resized to fit ``size`` x ``size`` (keep ratio; YOLOX pads to the
square). Stochastic depth is off (the configs' rates are for long runs). Backbones start from
scratch unless a checkpoint is given; then ResNet keeps mmdet's recipe for pretrained weights
(``frozen_stages=1``, ``norm_eval=True``), which from scratch would freeze random layers and
unnormalised BN.
"""
import copy
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import get_installed_path

from ..models.backbones import BACKBONES

HEADS = ('yolox', 'cascade')
HEAD_NAMES = {'yolox': 'YOLOX-s', 'cascade': 'Cascade R-CNN'}
BASE_CONFIGS = {'yolox': 'mmdet::yolox/yolox_s_8xb8-300e_coco.py',
                'cascade': 'mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'}
MMLIGHTBB_FAMILIES = {  # family -> (class name, default arch, extra settings)
    'convnext': ('ConvNeXt', 'tiny', {}),
    'cspconvnext': ('CSPConvNeXt', 'tiny', {}),
    'fasternet': ('FasterNet', 't2', {}),
    'replknet': ('RepLKNet', '31B', {}),
    'parameternet': ('ParameterNet', '600m', dict(with_final_conv=False)),
}
CSPDARKNET_ARCHS = {'tiny': (0.33, 0.375), 's': (0.33, 0.5), 'm': (0.67, 0.75), 'l': (1.0, 1.0),
                    'x': (1.33, 1.25)}  # YOLOX's (deepen_factor, widen_factor)
RESNET_ARCHS = ('18', '34', '50', '101', '152')
MOBILENETV2_ARCHS = ('0.5', '0.75', '1.0', '1.4')  # widen_factor
BASELINE_FAMILIES = {'cspdarknet': ('CSPDarknet', 's'), 'resnet': ('ResNet', '50'),
                     'mobilenetv2': ('MobileNetV2', '1.0'), 'rtmdet': ('CSPNeXt', 'tiny')}
# whole detectors of mmdet, compared as rows of a head: family -> (head, {arch: config})
WHOLE_DETECTORS = {'rtmdet': ('yolox', {'tiny': 'rtmdet/rtmdet_tiny_8xb32-300e_coco.py'})}
FAMILIES = tuple(MMLIGHTBB_FAMILIES) + tuple(BASELINE_FAMILIES)
BASELINES = {'yolox': 'cspdarknet:s', 'cascade': 'resnet:50'}
QUICK_BASELINES = {'yolox': 'cspdarknet:tiny', 'cascade': 'resnet:18'}
DEFAULT_BACKBONES = tuple(MMLIGHTBB_FAMILIES) + ('baseline', )
QUICK_BACKBONES = ('fasternet:t0', 'cspconvnext:e-mini', 'parameternet:ghostnet', 'baseline',
                   'rtmdet:tiny')
IMAGENET_PREPROCESS = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True)

SCHEDULES = {
    'yolox': dict(lr=2e-3, weight_decay=0.05, clip_grad=None),
    'cascade': dict(lr=1e-3, weight_decay=0.05, clip_grad=dict(max_norm=10, norm_type=2)),
}
CASCADE_SMALL = dict(rpn_train_proposals=300, rpn_test_proposals=300, rcnn_rois=64,
                     sampling_ratio=2)


class ConfigError(ValueError):
    """A head, backbone or arch name that does not exist (one line, with the valid names)."""


# ------------------------------------------------------------------------------ names
def archs_of(family: str) -> List[str]:
    if family in MMLIGHTBB_FAMILIES:
        return sorted(BACKBONES[MMLIGHTBB_FAMILIES[family][0]].arch_settings)
    if family == 'cspdarknet':
        return list(CSPDARKNET_ARCHS)
    if family == 'resnet':
        return list(RESNET_ARCHS)
    if family == 'mobilenetv2':
        return list(MOBILENETV2_ARCHS)
    if family in WHOLE_DETECTORS:
        return list(WHOLE_DETECTORS[family][1])
    raise ConfigError(f'unknown backbone {family!r}; valid backbones are {list(FAMILIES)} '
                      "and 'baseline' (each head's own: cspdarknet:s for yolox, resnet:50 for "
                      'cascade)')


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ConfigError(f'unknown head {head!r}; valid heads are {list(HEADS)}')
    return head


def parse_backbone(spec: str, head: Optional[str] = None, quick: bool = False
                   ) -> Tuple[str, str]:
    """``'fasternet:t0'`` -> ('fasternet', 't0'); a family alone takes its default arch;
    ``'baseline'`` is the head's incumbent. Unknown names raise :class:`ConfigError`."""
    spec = spec.strip()
    if spec == 'baseline':
        if head is None:
            raise ConfigError("'baseline' needs a head")
        spec = (QUICK_BASELINES if quick else BASELINES)[head]
    family, _, arch = spec.partition(':')
    family = family.lower()
    valid = archs_of(family)
    if not arch:
        arch = (MMLIGHTBB_FAMILIES.get(family) or BASELINE_FAMILIES[family])[1]
    # arch names are matched case-insensitively ('31b' -> '31B')
    match = [a for a in valid if a.lower() == arch.lower()]
    if not match:
        raise ConfigError(f'unknown arch {arch!r} for backbone {family!r}; valid archs are '
                          f'{valid} (e.g. {family}:{valid[0]})')
    return family, match[0]


def run_name(head: str, family: str, arch: str) -> str:
    """``<head>_<family>_<arch>``; a whole detector is ``<family>_<arch>`` (its head is its own)."""
    return f'{family}_{arch}' if family in WHOLE_DETECTORS else f'{head}_{family}_{arch}'


# --------------------------------------------------------------------------- backbones
def backbone_config(family: str, arch: str, head: str,
                    checkpoint: Optional[str] = None) -> dict:
    """The backbone's config dict for ``head`` (YOLOX: strides 8/16/32, Cascade: 4..32)."""
    init_cfg = dict(type='Pretrained', checkpoint=checkpoint) if checkpoint else None
    yolox = head == 'yolox'
    if family in MMLIGHTBB_FAMILIES:
        cls, _, extra = MMLIGHTBB_FAMILIES[family]
        return dict(type=cls, arch=arch, out_indices=(1, 2, 3) if yolox else (0, 1, 2, 3),
                    drop_path_rate=0.0, init_cfg=init_cfg, **extra)
    if family == 'cspdarknet':
        deepen, widen = CSPDARKNET_ARCHS[arch]
        cfg = dict(type='CSPDarknet', deepen_factor=deepen, widen_factor=widen,
                   out_indices=(2, 3, 4) if yolox else (1, 2, 3, 4), use_depthwise=False,
                   spp_kernal_sizes=(5, 9, 13),
                   norm_cfg=dict(type='BN', momentum=0.03, eps=0.001),
                   act_cfg=dict(type='Swish'))
        if init_cfg:
            cfg['init_cfg'] = init_cfg
        return cfg
    if family == 'resnet':
        return dict(type='ResNet', depth=int(arch), num_stages=4,
                    out_indices=(1, 2, 3) if yolox else (0, 1, 2, 3),
                    frozen_stages=1 if checkpoint else -1,
                    norm_cfg=dict(type='BN', requires_grad=True), norm_eval=bool(checkpoint),
                    style='pytorch', init_cfg=init_cfg)
    if family == 'mobilenetv2':
        return dict(type='MobileNetV2', widen_factor=float(arch),
                    out_indices=(2, 4, 6) if yolox else (1, 2, 4, 6), init_cfg=init_cfg)
    raise ConfigError(f'unknown backbone {family!r}')


_CHANNELS_CACHE: Dict[str, List[int]] = {}


def backbone_out_channels(backbone_cfg: dict) -> List[int]:
    """Channels of the maps the backbone returns, measured with a 64x64 forward pass (no
    weights are loaded)."""
    key = repr(sorted((k, v) for k, v in backbone_cfg.items() if k != 'init_cfg'))
    if key not in _CHANNELS_CACHE:
        init_default_scope('mmdet')
        cfg = dict(copy.deepcopy(backbone_cfg), init_cfg=None)
        model = MODELS.build(cfg)
        model.eval()  # not chained: mmdet's CSPDarknet.train() returns None
        with torch.no_grad():
            outs = model(torch.zeros(1, 3, 64, 64))
        _CHANNELS_CACHE[key] = [int(o.shape[1]) for o in outs]
        del model
    return list(_CHANNELS_CACHE[key])


# ------------------------------------------------------------------------------ config
def load_base_config(head: str, rel: Optional[str] = None):
    """mmdet's packaged config of ``head`` (or the one at ``rel`` under mmdet's configs), an
    mmengine Config read from mmdet's install."""
    rel = rel or BASE_CONFIGS[check_head(head)].split('::', 1)[1]
    return Config.fromfile(osp.join(get_installed_path('mmdet'), '.mim', 'configs', rel))


def _dataset(data: dict, split: str, pipeline: list, test_mode: bool) -> dict:
    cfg = dict(type='SonarDataset', data_root=osp.join(data['root'], ''),
               metainfo=dict(classes=tuple(data['classes'])),
               ann_file=data[split]['file'], data_prefix=dict(img=''), pipeline=pipeline)
    if test_mode:
        cfg['test_mode'] = True
    else:
        cfg['filter_cfg'] = dict(filter_empty_gt=False, min_size=1)
    return cfg


def _test_evaluator(data: dict) -> list:
    return [dict(type='VOCMetric', metric='mAP', eval_mode='area', iou_thrs=0.5),
            dict(type='CocoMetric', ann_file=data['test']['file'], metric='bbox')]


def schedule_phases(epochs: int, yolox_mode_switch: bool = False) -> Tuple[int, int, int]:
    """(warm-up epochs, the epoch the cosine ends at, the last epochs without Mosaic/MixUp) of
    :func:`apply_short_schedule`: 1 warm-up epoch when at least 2 epochs of cosine follow it."""
    last = epochs // 4 if yolox_mode_switch else 0
    cosine_end = epochs - last
    return (1 if cosine_end >= 2 else 0), cosine_end, last


def apply_short_schedule(cfg, epochs: int, lr: float, weight_decay: float = 0.05,
                         clip_grad: Optional[dict] = None, yolox_mode_switch: bool = False):
    """The comparison's schedule on ``cfg`` (in place): AdamW (no decay on norms and biases),
    1 warm-up epoch (if there are >= 2 epochs of cosine), cosine to lr/20; with
    ``yolox_mode_switch`` the last quarter of the epochs runs without Mosaic/MixUp at a constant
    LR (YOLOX's ``YOLOXModeSwitchHook``)."""
    cfg.optim_wrapper = dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=lr, weight_decay=weight_decay),
        paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
    if clip_grad:
        cfg.optim_wrapper['clip_grad'] = dict(clip_grad)
    warmup, cosine_end, last = schedule_phases(epochs, yolox_mode_switch)
    cfg.param_scheduler = [
        dict(type='CosineAnnealingLR', eta_min=lr / 20, begin=warmup, T_max=cosine_end - warmup,
             end=cosine_end, by_epoch=True, convert_to_iter_based=True)]
    if warmup:
        cfg.param_scheduler.insert(0, dict(type='mmdet.QuadraticWarmupLR', by_epoch=True, begin=0,
                                           end=1, convert_to_iter_based=True))
    if last:
        cfg.param_scheduler.append(dict(type='ConstantLR', by_epoch=True, factor=1,
                                        begin=cosine_end, end=epochs))
    for hook in cfg.get('custom_hooks', []):
        if hook.get('type') == 'YOLOXModeSwitchHook':
            hook['num_last_epochs'] = last
        if hook.get('type') == 'PipelineSwitchHook':  # RTMDet's stage 2: the same last epochs
            hook['switch_epoch'] = cosine_end if last else epochs
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=epochs)
    return cfg


def _yolox(cfg, data: dict, size: int, family: str, backbone: dict, channels: List[int]):
    cfg.model.backbone = backbone
    cfg.model.neck.in_channels = channels
    cfg.model.bbox_head.num_classes = len(data['classes'])
    cfg.model.data_preprocessor.batch_augments = None  # images are `size` already
    if family != 'cspdarknet':  # mmdet's YOLOX feeds raw BGR; the others get ImageNet stats
        cfg.model.data_preprocessor.update(IMAGENET_PREPROCESS)
    train = cfg.train_dataloader.dataset
    train.dataset = _dataset(data, 'train', [
        dict(type='LoadSonarImageFromFile', ignore_empty=True),
        dict(type='LoadAnnotations', with_bbox=True)], test_mode=False)
    rescale_yolox_train_pipeline(train.pipeline, size)
    test_pipeline = [dict(type='LoadSonarImageFromFile'),
                     dict(type='Resize', scale=(size, size), keep_ratio=True),
                     dict(type='Pad', pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
                     dict(type='LoadAnnotations', with_bbox=True),
                     dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                           'img_shape', 'scale_factor'))]
    cfg.test_dataloader.dataset = _dataset(data, 'test', test_pipeline, test_mode=True)


def _cascade(cfg, data: dict, size: int, backbone: dict, channels: List[int]):
    small = CASCADE_SMALL
    model = cfg.model
    model.backbone = backbone
    model.neck.in_channels = channels
    model.rpn_head.anchor_generator.scales = [8 if size >= 512 else 4]
    model.roi_head.bbox_roi_extractor.roi_layer.sampling_ratio = small['sampling_ratio']
    for head in model.roi_head.bbox_head:
        head.num_classes = len(data['classes'])
    model.train_cfg.rpn_proposal.update(nms_pre=small['rpn_train_proposals'],
                                        max_per_img=small['rpn_train_proposals'])
    for stage in model.train_cfg.rcnn:
        stage.sampler.num = small['rcnn_rois']
    model.test_cfg.rpn.update(nms_pre=small['rpn_test_proposals'],
                              max_per_img=small['rpn_test_proposals'])
    train_pipeline = [dict(type='LoadSonarImageFromFile', ignore_empty=True),
                      dict(type='LoadAnnotations', with_bbox=True),
                      dict(type='Resize', scale=(size, size), keep_ratio=True),
                      dict(type='RandomFlip', prob=0.5),
                      dict(type='PackDetInputs')]
    test_pipeline = [dict(type='LoadSonarImageFromFile'),
                     dict(type='Resize', scale=(size, size), keep_ratio=True),
                     dict(type='LoadAnnotations', with_bbox=True),
                     dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                           'img_shape', 'scale_factor'))]
    cfg.train_dataloader.dataset = _dataset(data, 'train', train_pipeline, test_mode=False)
    cfg.test_dataloader.dataset = _dataset(data, 'test', test_pipeline, test_mode=True)


def _rtmdet(cfg, data: dict, size: int, checkpoint: Optional[str]):
    """RTMDet at ``size`` on ``data``: BN (one process), from scratch unless ``checkpoint``
    (backbone weights), its augmentations rescaled, the sonar loader."""
    model = cfg.model
    model.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint) if checkpoint \
        else None
    for part in (model.backbone, model.neck, model.bbox_head):
        part.norm_cfg = dict(type='BN')
    model.bbox_head.num_classes = len(data['classes'])

    def rescale(pipeline):
        for t in pipeline:
            if t.type == 'LoadImageFromFile':
                t.clear()
                t.type = 'LoadSonarImageFromFile'
            for key in ('img_scale', 'crop_size', 'size'):
                if key in t:
                    t[key] = (size, size)
            if t.type == 'RandomResize':
                t.scale = (2 * size, 2 * size) if t.scale[0] > 640 else (size, size)
            if t.type == 'Resize':
                t.scale = (size, size)
        return pipeline

    train = rescale(cfg.train_dataloader.dataset.pipeline)
    train[0]['ignore_empty'] = True
    cfg.train_dataloader.dataset = _dataset(data, 'train', train, test_mode=False)
    cfg.test_dataloader.dataset = _dataset(
        data, 'test', rescale(cfg.test_dataloader.dataset.pipeline), test_mode=True)
    for hook in cfg.custom_hooks:
        if hook.type == 'PipelineSwitchHook':
            rescale(hook.switch_pipeline)[0]['ignore_empty'] = True
    cfg.train_dataloader.pop('batch_sampler', None)


def build_config(head: str, family: str, arch: str, data: dict, work_dir: str, epochs: int,
                 size: int, batch_size: int = 8, checkpoint: Optional[str] = None,
                 num_workers: int = 0, seed: int = 0):
    """The full mmdet config of one comparison run (see the module doc).

    ``data``: a :func:`mmlightbb.datasets.prepare_dataset` summary (``root``, ``classes``,
    ``train.file``, ``test.file``). ``checkpoint``: backbone weights (``init_cfg`` Pretrained).
    """
    check_head(head)
    if family in WHOLE_DETECTORS:
        cfg = load_base_config(head, WHOLE_DETECTORS[family][1][arch])
        _rtmdet(cfg, data, size, checkpoint)
    else:
        cfg = load_base_config(head)
        backbone = backbone_config(family, arch, head, checkpoint)
        channels = backbone_out_channels(backbone)
        if head == 'yolox':
            _yolox(cfg, data, size, family, backbone, channels)
        else:
            _cascade(cfg, data, size, backbone, channels)
    schedule = SCHEDULES[head]
    apply_short_schedule(cfg, epochs, schedule['lr'], schedule['weight_decay'],
                         schedule['clip_grad'], yolox_mode_switch=head == 'yolox')
    if family in WHOLE_DETECTORS:  # RTMDet's head shares its convs between levels, as mmdet's
        cfg.optim_wrapper.paramwise_cfg['bypass_duplicate'] = True
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=batch_size, num_workers=num_workers,
                           persistent_workers=num_workers > 0)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_evaluator = _test_evaluator(data)
    cfg.test_cfg = dict(type='TestLoop')
    hooks = cfg.default_hooks
    hooks.checkpoint = dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1,
                            save_last=True, save_best=None)
    hooks.logger = dict(type='LoggerHook', interval=5)
    custom = [h for h in cfg.get('custom_hooks', []) if h.get('type') != 'NonFiniteLossHook']
    cfg.custom_hooks = custom + [dict(type='NonFiniteLossHook')]
    cfg.work_dir = osp.abspath(work_dir)
    # mmdet names its visualizer 'visualizer' and mmengine hands back an existing instance of
    # that name, so without a per-run name every later run of one process would log its
    # losses into the first run's vis_data.
    cfg.visualizer.name = f'visualizer:{cfg.work_dir}'
    cfg.randomness = dict(seed=seed)
    cfg.custom_imports = dict(imports=['mmlightbb'], allow_failed_imports=False)
    cfg.runner_type = 'RecoverableRunner'  # safe loading, exact resumption (mmlightbb.engine)
    cfg.default_scope = 'mmdet'
    cfg.resume = False
    cfg.load_from = None
    for key in ('data_root', 'dataset_type', 'img_scale', 'max_epochs', 'num_last_epochs',
                'train_dataset', 'train_pipeline', 'test_pipeline', 'interval',
                'base_lr', 'backend_args'):
        cfg.pop(key, None)  # base-config variables that no longer describe the run
    return cfg


def rescale_yolox_train_pipeline(pipeline: List[dict], size: int) -> None:
    """In place: YOLOX's Mosaic/MixUp/RandomAffine/Resize steps at ``size`` x ``size``."""
    for t in pipeline:
        if 'img_scale' in t:
            t.img_scale = (size, size)
        if t.type == 'RandomAffine':
            t.border = (-size // 2, -size // 2)
        if t.type == 'Resize':
            t.scale = (size, size)
