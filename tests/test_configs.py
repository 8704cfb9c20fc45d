"""Every shipped config builds, trains one iteration and predicts on CPU at a small input size.

The configs are used as they are, with the overrides a user would pass as --cfg-options (input
size, batch size, workers), on tiny made-up datasets laid out as the configs expect under data/.
"""
import glob
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from helpers import REPO

# the detector configs (configs/imagenet/ are mmpretrain classifiers: tests/test_pretraining.py)
CONFIGS = sorted(f for f in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in f and osp.join('configs', 'imagenet') not in f)
SIZE = 96


def _images(folder, names, rng):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        img = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
        cv2.rectangle(img, (20, 20), (60, 70), (255, 255, 255), -1)
        cv2.imwrite(osp.join(folder, name), img)


def _coco_json(path, names, classes):
    images = [dict(id=i + 1, file_name=n, width=SIZE, height=SIZE) for i, n in enumerate(names)]
    anns = [dict(id=i + 1, image_id=i + 1, category_id=1, bbox=[20, 20, 41, 51], area=41 * 51,
                 iscrowd=0) for i in range(len(names))]
    cats = [dict(id=i + 1, name=c) for i, c in enumerate(classes)]
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)


def _voc_year(root, year, ids, rng):
    _images(osp.join(root, year, 'JPEGImages'), [f'{i}.jpg' for i in ids], rng)
    os.makedirs(osp.join(root, year, 'Annotations'), exist_ok=True)
    os.makedirs(osp.join(root, year, 'ImageSets', 'Main'), exist_ok=True)
    for i in ids:
        with open(osp.join(root, year, 'Annotations', f'{i}.xml'), 'w') as f:
            f.write(f'<annotation><size><width>{SIZE}</width><height>{SIZE}</height></size>'
                    '<object><name>car</name><difficult>0</difficult><bndbox><xmin>20</xmin>'
                    '<ymin>20</ymin><xmax>60</xmax><ymax>70</ymax></bndbox></object></annotation>')
    for split in ('trainval', 'test'):
        with open(osp.join(root, year, 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(ids) + '\n')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('workspace')
    rng = np.random.default_rng(0)
    names = ['a.png', 'b.png']
    _images(str(root / 'data/sonar/images'), names, rng)
    for split in ('train', 'val'):
        _coco_json(str(root / f'data/sonar/annotations/{split}.json'), names,
                   ('shipwreck', 'aircraft', 'victim'))
    coco = ['1.jpg', '2.jpg']
    for split in ('train2017', 'val2017'):
        _images(str(root / 'data/coco' / split), coco, rng)
        _coco_json(str(root / f'data/coco/annotations/instances_{split}.json'), coco,
                   ('person', 'bicycle'))
    for year in ('VOC2007', 'VOC2012'):
        _voc_year(str(root / 'data/VOCdevkit'), year, ['000001', '000002'], rng)
    return root


def no_download(cfg):
    """``--cfg-options model.backbone.init_cfg=None``: the ImageNet weights a shipped config
    names (``mmlightbb://...``) are never downloaded by a test."""
    init_cfg = cfg.model.backbone.get('init_cfg')
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        cfg.model.backbone.init_cfg = None
    return cfg


def shrink(cfg, size=SIZE):
    """What a CPU smoke run passes as --cfg-options: small inputs, batch 2, no workers, no
    pretrained weights."""
    no_download(cfg)

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ('img_scale', 'scale') and isinstance(value, tuple):
                    node[key] = (size, size)
                elif key == 'border' and isinstance(value, tuple):
                    node[key] = (-size // 2, -size // 2)
                elif key == 'batch_augments':
                    node[key] = None
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(cfg._cfg_dict)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # prediction is checked directly
    cfg.param_scheduler = []
    # No checkpoint: a one-iteration smoke run of 38 configs would write ~25 GB (checkpointing has
    # its own tests in test_training_reliability.py).
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] != 'YOLOXModeSwitchHook']
    return cfg


# One iteration builds a config's full-size detector (seconds each, 40 configs): the loop
# (-m "not slow") trains the smallest of each head, make test every config.
SMALLEST = ('yolox_fasternet_t0_tiny.py', 'cascade_rcnn_fasternet.py')


@pytest.mark.parametrize('config', [
    pytest.param(f, marks=[] if osp.basename(f) in SMALLEST else [pytest.mark.slow])
    for f in CONFIGS], ids=lambda f: osp.relpath(f, osp.join(REPO, 'configs')))
def test_config_trains_one_iteration_and_predicts(config, data_dir, monkeypatch, tmp_path):
    import mmlightbb  # noqa: F401
    from mmengine.config import Config

    from mmlightbb.engine import RecoverableRunner, build_runner
    monkeypatch.chdir(data_dir)
    cfg = shrink(Config.fromfile(config))
    cfg.work_dir = str(tmp_path)
    model_cfg = cfg.model
    neck_in = model_cfg.neck.in_channels
    runner = build_runner(cfg)  # as tools/train.py builds it: the runner the config names
    assert type(runner) is RecoverableRunner  # _base_/mmlightbb_runtime.py selects it
    backbone = runner.model.backbone
    if hasattr(backbone, 'out_channels'):  # mmlightbb backbones state their channels
        assert list(backbone.out_channels) == list(neck_in)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert np.isfinite(loss)
    batch = next(iter(runner.build_dataloader(cfg.test_dataloader)))
    runner.model.eval()
    with torch.no_grad():
        results = runner.model.test_step(batch)
    assert len(results) == 2
    assert results[0].pred_instances.bboxes.shape[-1] == 4


def test_flat_config_without_data_fails_with_how_to_get_it(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'),
         osp.join(REPO, 'configs/yolox_cspconvnext.py'), '--work-dir', str(tmp_path / 'w')],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and "'data/sonar/annotations/train.json'" in last
    assert 'tools/make_sonar_dataset.py --out data/sonar/' in last


@pytest.mark.parametrize('config', CONFIGS, ids=lambda p: osp.relpath(p, REPO))
def test_config_works_with_mmdets_own_tools(config):
    """mmdet's tools/train.py imports nothing of ours: every shipped config must import mmlightbb
    itself (backbones, SonarDataset, the NaN hook, atomic checkpoints) and stop on NaN losses."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    assert cfg.custom_imports == dict(imports=['mmlightbb'], allow_failed_imports=False)
    assert [h['type'] for h in cfg.custom_hooks].count('NonFiniteLossHook') == 1
    assert cfg.sync_bn == 'torch'
