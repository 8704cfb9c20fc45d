"""ImageNet pre-training with mmpretrain: configs/imagenet/*.py build the published classification
form of each family, tools/train.py trains one on a tiny ImageNet-layout folder (loss falls,
top-1 printed), and the checkpoint initialises the YOLOX detector's backbone, every key loaded.

mmpretrain imports torchvision at module load. This CPU machine's torch is 2.13.0+cpu and the
package registry's torchvision for it is a CUDA build that cannot load its ops here, so when no
torchvision is installed the training subprocess gets a stand-in package (below) that defines
only the names mmpretrain imports; nothing on the tested path calls torchvision (any call would
raise). With a real torchvision installed the stand-in is not used.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from helpers import REPO

IMAGENET_CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs/imagenet/*.py'))
                          if '_base_' not in osp.basename(p))
FAMILY_OF = {'convnext': 'ConvNeXt', 'cspconvnext': 'CSPConvNeXt', 'fasternet': 'FasterNet',
             'parameternet': 'ParameterNet', 'replknet': 'RepLKNet'}

_UNAVAILABLE = ('def _unavailable(*args, **kwargs):\n'
                "    raise RuntimeError('torchvision stand-in (tests only): not available')\n")
TORCHVISION_STAND_IN = {
    '__init__.py': "__version__ = '0.0.0+stand-in'\nfrom . import ops, transforms  # noqa\n",
    'ops/__init__.py': 'from . import boxes  # noqa\n',
    'ops/boxes.py': _UNAVAILABLE + 'box_area = box_iou = batched_nms = nms = _unavailable\n',
    'transforms/__init__.py': ('from . import functional, transforms  # noqa\n'
                               'from .transforms import InterpolationMode, RandomResizedCrop  # noqa\n'),
    'transforms/functional.py': (_UNAVAILABLE +
                                 'pil_to_tensor = resized_crop = to_tensor = _unavailable\n'),
    'transforms/transforms.py': (
        'import enum\n' + _UNAVAILABLE +
        'class InterpolationMode(enum.Enum):\n'
        "    NEAREST, BILINEAR, BICUBIC = 'nearest', 'bilinear', 'bicubic'\n"
        "    BOX, HAMMING, LANCZOS = 'box', 'hamming', 'lanczos'\n"
        'class RandomResizedCrop:\n'
        '    __init__ = _unavailable\n'),
}


def _mmpretrain_env(tmp_path):
    """Environment for a subprocess that imports mmpretrain (see the module docstring)."""
    env = dict(os.environ, PYTHONPATH=REPO, MMLIGHTBB_OFFLINE='1')
    if importlib.util.find_spec('mmpretrain') is None:
        pytest.skip('mmpretrain is not installed (tools/install.sh installs mmpretrain==1.2.0)')
    if importlib.util.find_spec('torchvision') is None:
        root = tmp_path / 'stand_in'
        for rel, text in TORCHVISION_STAND_IN.items():
            path = root / 'torchvision' / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        env['PYTHONPATH'] = f'{root}{os.pathsep}{REPO}'
    return env


def _imagenet_folder(root, per_class_train=12, per_class_val=4, size=40):
    """Two classes a colour apart, ImageNet layout: train/<class>/*.JPEG, val/<class>/*.JPEG."""
    rng = np.random.default_rng(0)
    colours = {'n00000001': (40, 40, 220), 'n00000002': (220, 60, 40)}  # BGR: red-ish, blue-ish
    for split, count in (('train', per_class_train), ('val', per_class_val)):
        for wnid, colour in colours.items():
            os.makedirs(osp.join(root, split, wnid), exist_ok=True)
            for i in range(count):
                img = np.clip(rng.normal(colour, 35, (size, size, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(osp.join(root, split, wnid, f'{split}_{i}.JPEG'), img)


# The script the subprocess runs: (1) every ImageNet config builds its model and runs its own
# train pipeline and batch augments on an image; (2) tools/train.py on the tiny folder.
DRIVER = r'''
import json, runpy, sys
import numpy as np, torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
import mmlightbb, mmlightbb.models.mmpretrain_compat
init_default_scope('mmpretrain')
from mmpretrain.registry import MODELS, TRANSFORMS
from mmengine.dataset import Compose
configs, tiny, work_dir = json.loads(sys.argv[1])
summary = {}
import time; t0 = time.time()
for path in configs:
    cfg = Config.fromfile(path)
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)  # as the Runner does
    model = MODELS.build(cfg.model)
    pipeline = Compose([TRANSFORMS.build(t) for t in cfg.train_dataloader.dataset.pipeline[1:]])
    img = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    packed = pipeline(dict(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2], gt_label=3))
    data = model.data_preprocessor(dict(inputs=[packed['inputs']] * 2,
                                        data_samples=[packed['data_samples']] * 2), True)
    small = torch.nn.functional.interpolate(data['inputs'], size=(64, 64))  # CPU time
    losses = model(small, data['data_samples'], mode='loss')
    summary[path] = dict(backbone=type(model.backbone).__name__, shape=list(data['inputs'].shape),
                         loss=float(losses['loss']),
                         augments=type(model.data_preprocessor.batch_augments).__name__)
print('SUMMARY ' + json.dumps(summary), flush=True)
print(f'TIMING configs {time.time() - t0:.1f} s', flush=True)
sys.argv = ['tools/train.py', tiny, '--work-dir', work_dir]
runpy.run_path('tools/train.py', run_name='__main__')
'''

TINY_CONFIG = '''
_base_ = [{base!r}]
data_root = {root!r}
data_preprocessor = dict(num_classes=2)
model = dict(backbone=dict(num_classes=2), head=dict(topk=(1, )), train_cfg=None)  # no Mixup/CutMix
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=36, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False, pin_memory=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, num_workers=0, persistent_workers=False, pin_memory=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = []
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={epochs}, save_best=None))
log_processor = dict(window_size=1)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
'''


def _scalars(work_dir):
    (path, ) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope='module')
def pretrained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('pretrain')
    env = _mmpretrain_env(tmp)
    root = str(tmp / 'imagenet')
    _imagenet_folder(root)
    tiny = tmp / 'tiny_cspconvnext.py'
    epochs = 8  # 24 images, batch 8: 3 iterations an epoch
    tiny.write_text(TINY_CONFIG.format(base=osp.join(REPO, 'configs/imagenet/cspconvnext.py'),
                                       root=root + '/', epochs=epochs))
    work_dir = str(tmp / 'work')
    start = time.time()
    proc = subprocess.run(
        [sys.executable, '-c', DRIVER, json.dumps([IMAGENET_CONFIGS, str(tiny), work_dir])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    print(f'pre-training subprocess: {time.time() - start:.1f} s; '
          + next(line for line in proc.stdout.splitlines() if line.startswith('TIMING')))
    summary = json.loads(next(line for line in proc.stdout.splitlines()
                              if line.startswith('SUMMARY '))[len('SUMMARY '):])
    return dict(work_dir=work_dir, epochs=epochs, output=output, summary=summary,
                checkpoint=osp.join(work_dir, f'epoch_{epochs}.pth'))


@pytest.mark.slow
def test_every_imagenet_config_builds_its_published_classifier(pretrained_run):
    summary = pretrained_run['summary']
    assert sorted(summary) == IMAGENET_CONFIGS and len(summary) == 5
    for path, result in summary.items():
        name = osp.splitext(osp.basename(path))[0]
        assert result['backbone'] == FAMILY_OF[name]
        assert result['shape'][:2] == [2, 3] and result['shape'][2:] == [224, 224]  # its crop
        assert np.isfinite(result['loss'])
        assert result['augments'] == 'RandomBatchAugment'  # Mixup / CutMix as published


def test_imagenet_configs_state_the_published_recipe():
    from mmengine.config import Config
    expected = {  # per-GPU batch, lr, weight decay, warm-up epochs, EMA
        'convnext': (128, 4e-3, 0.05, 20, True), 'fasternet': (512, 4e-3, 0.02, 20, False),
        'replknet': (64, 4e-3, 0.05, 10, True), 'cspconvnext': (128, 5e-4, 0.05, 20, False),
        'parameternet': (512, 4e-3, 0.005, 20, False)}
    for path in IMAGENET_CONFIGS:
        name = osp.splitext(osp.basename(path))[0]
        cfg = Config.fromfile(path, import_custom_modules=False)
        batch, lr, wd, warmup, ema = expected[name]
        assert cfg.default_scope == 'mmpretrain' and cfg.model.type == 'BackboneClassifier'
        assert cfg.train_dataloader.batch_size == batch
        assert cfg.optim_wrapper.optimizer.lr == lr
        assert cfg.optim_wrapper.optimizer.weight_decay == wd
        assert cfg.param_scheduler[0].end == warmup == cfg.param_scheduler[1].begin
        assert cfg.train_cfg.max_epochs == 300
        assert any(h['type'] == 'EMAHook' for h in cfg.custom_hooks) == ema
        assert cfg.model.backbone.num_classes == cfg.data_preprocessor.num_classes == 1000


@pytest.mark.slow
def test_tools_train_pretrains_a_classifier_on_an_imagenet_folder(pretrained_run):
    output = pretrained_run['output']
    rows = _scalars(pretrained_run['work_dir'])
    losses = [r['loss'] for r in rows if 'loss' in r]
    assert len(losses) == 3 * pretrained_run['epochs']
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    print(f'loss: first 3 iterations {first:.3f}, last 3 {last:.3f}')
    print([round(x, 3) for x in losses])
    assert last < 0.8 * first, losses
    (top1, ) = [r['accuracy/top1'] for r in rows if 'accuracy/top1' in r]
    print(f'top-1 on the tiny val split: {top1:.1f} %')
    assert 'accuracy/top1' in output and top1 >= 50.0
    assert osp.isfile(pretrained_run['checkpoint'])


@pytest.mark.slow
def test_pretrained_checkpoint_initialises_every_key_of_the_yolox_backbone(pretrained_run):
    import mmlightbb  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmlightbb.engine import safe_load
    checkpoint = pretrained_run['checkpoint']
    state = safe_load(checkpoint)['state_dict']
    cfg = Config.fromfile(osp.join(REPO, 'configs/yolox_cspconvnext.py'))
    assert cfg.model.backbone.type == 'CSPConvNeXt'

    # 1. the backbone's own loader: the key report says every key was found, nothing converted
    backbone_cfg = dict(cfg.model.backbone, init_cfg=None)
    backbone = MODELS.build(backbone_cfg)
    report = backbone.load_pretrained(checkpoint)
    assert report['missing'] == [] and report['matched'] == len(backbone.state_dict())
    assert set(report['unexpected']) == {'norm.weight', 'norm.bias', 'head.fc_cls.weight',
                                         'head.fc_cls.bias'}  # the classifier, not a backbone key

    # 2. the detector config's path: init_cfg Pretrained with prefix='backbone.', init_weights()
    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint,
                                       prefix='backbone.')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(value, state[f'backbone.{key}']), key
