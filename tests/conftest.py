"""Shared fixtures: tiny detection datasets made on the fly (no downloads) and tiny configs."""
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest

TINY_CLASSES = ('box', 'disc')


def write_shapes_coco(root: str, num_images: int = 8, size: int = 128, seed: int = 0) -> dict:
    """Write a COCO-format set of noisy gray images with bright boxes and discs; return paths."""
    rng = np.random.default_rng(seed)
    img_dir = osp.join(root, 'images')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for img_id in range(1, num_images + 1):
        img = rng.normal(60, 15, (size, size)).clip(0, 255).astype(np.uint8)
        for _ in range(rng.integers(1, 3)):
            cls = int(rng.integers(0, 2))
            w, h = (int(v) for v in rng.integers(size // 6, size // 3, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            if cls == 0:
                cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), 220, -1)
            else:
                cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 220, -1)
            annotations.append(dict(id=len(annotations) + 1, image_id=img_id, category_id=cls + 1,
                                    bbox=[x, y, w, h], area=w * h, iscrowd=0))
        name = f'{img_id:04d}.png'
        cv2.imwrite(osp.join(img_dir, name), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        images.append(dict(id=img_id, file_name=name, width=size, height=size))
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(TINY_CLASSES)]
    ann_file = osp.join(root, 'annotations', 'all.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return dict(data_root=root + '/', ann_file='annotations/all.json', img_prefix='images/')


@pytest.fixture(autouse=True, scope='session')
def only_the_chosen_interpreter(tmp_path_factory):
    """Every subprocess the suite starts must run the interpreter the suite runs on
    (``sys.executable``; shell scripts: ``$PYTHON``), never ``python``/``python3`` from PATH, which
    may be another installation without the stack (``make test PYTHON=venv/bin/python`` with the
    venv not activated). Those names on PATH are replaced by a stub that fails with that message."""
    stub_dir = tmp_path_factory.mktemp('interpreter_stub')
    for name in ('python', 'python3'):
        stub = stub_dir / name
        stub.write_text(f'#!/bin/sh\necho "test suite: a subprocess ran {name} from PATH instead '
                        'of sys.executable or PYTHON" >&2\nexit 97\n')
        stub.chmod(0o755)
    saved = {key: os.environ.get(key) for key in ('PATH', 'PYTHON')}
    os.environ['PATH'] = f"{stub_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ['PYTHON'] = sys.executable
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True, scope='session')
def no_downloads():
    """Tests never download: a config that would fetch official weights fails with one line
    instead of reaching the network (tests that serve weights on 127.0.0.1 lift this)."""
    saved = os.environ.get('MMLIGHTBB_OFFLINE')
    os.environ['MMLIGHTBB_OFFLINE'] = '1'
    yield
    if saved is None:
        os.environ.pop('MMLIGHTBB_OFFLINE', None)
    else:
        os.environ['MMLIGHTBB_OFFLINE'] = saved


@pytest.fixture(autouse=True)
def fresh_visualizers():
    """Each test starts as a new process would. mmdet's configs name their visualizer
    'visualizer' and mmengine returns an existing instance of that name, so a Runner would
    otherwise log into the work dir of an earlier test (removed by then: pytest.ini)."""
    from mmengine.visualization import Visualizer
    yield
    pending = [Visualizer]
    while pending:
        cls = pending.pop()
        cls._instance_dict.clear()
        pending.extend(cls.__subclasses__())


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    return write_shapes_coco(str(tmp_path_factory.mktemp('tiny_coco')))


def tiny_yolox_config(data: dict, backbone: dict, neck_in_channels, size: int = 128,
                      max_epochs: int = 2, batch_size: int = 2) -> str:
    """Text of a stock mmdet YOLOX-tiny config with an mmlightbb backbone on a tiny dataset."""
    return f"""
_base_ = 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'
custom_imports = dict(imports=['mmlightbb'], allow_failed_imports=False)
data_root = {data['data_root']!r}
metainfo = dict(classes={TINY_CLASSES!r})
model = dict(
    data_preprocessor=dict(batch_augments=None),
    backbone=dict(_delete_=True, **{backbone!r}),
    neck=dict(in_channels={list(neck_in_channels)!r}),
    bbox_head=dict(num_classes={len(TINY_CLASSES)}))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='Pad', size=({size}, {size}), pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='Pad', size=({size}, {size}), pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(type='CocoDataset', data_root=data_root, ann_file={data['ann_file']!r},
               data_prefix=dict(img={data['img_prefix']!r}), metainfo=metainfo)
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **dataset, filter_cfg=dict(filter_empty_gt=False),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **dataset, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + {data['ann_file']!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={max_epochs}, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=5), logger=dict(interval=1))
optim_wrapper = dict(optimizer=dict(lr=0.001))
# no Mosaic/MixUp in this tiny pipeline, so no YOLOXModeSwitchHook (it needs MultiImageMixDataset)
custom_hooks = [
    dict(type='SyncNormHook', priority=48),
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001, update_buffers=True,
         priority=49),
]
randomness = dict(seed=0)
"""
