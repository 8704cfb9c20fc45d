"""What several test files share: the repository's paths and tools, tiny datasets and configs
written on the fly, small backbones and the checks every backbone family runs. Fixtures are in
conftest.py."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmlightbb.analysis.benchmark import max_rel_diff
from mmlightbb.models.backbones import BACKBONES
from mmlightbb.models.backbones.parameternet import PARAMETERNET_600M_CFGS
from mmlightbb.models.layers import randomize_bn_stats, set_cpu_channels_last

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ----------------------------------------------------------------------------------- tools
def run_tool(*args, timeout=600, **kwargs):
    """``python *args`` (a script under the repository and its arguments) in the repository with
    this interpreter; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def load_tool(path: str):
    """tools/``path`` as a module, to call its ``main(argv)`` in this process."""
    name = 'tool_' + osp.splitext(path)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, 'tools', path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------- tiny datasets, configs
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


# VOC, COCO and YOLO-txt folders of gray shapes on noise (class k is a filled rectangle, disc or
# triangle), as a user's data arrives
SHAPES = ('rect', 'disc', 'triangle')


def make_samples(num: int, classes=('rect', ), size: int = 96, seed: int = 0):
    """``num`` (gray image, [(class name, x1, y1, x2, y2)]) pairs; every image has 1-2 boxes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        img = rng.normal(60, 12, (size, size)).clip(0, 255).astype(np.uint8)
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(0, len(classes)))
            w, h = (int(v) for v in rng.integers(size // 5, size // 3, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            shape = SHAPES[k % len(SHAPES)]
            if shape == 'rect':
                cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), 220, -1)
            elif shape == 'disc':
                cv2.ellipse(img, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 220, -1)
            else:
                pts = np.array([[x, y + h - 1], [x + w - 1, y + h - 1], [x + w // 2, y]], np.int32)
                cv2.fillPoly(img, [pts], 220)
            boxes.append((classes[k], x, y, x + w, y + h))
        out.append((img, boxes))
    return out


def write_voc(root, samples, ext='.png', splits=None):
    """Annotations/*.xml + JPEGImages/*<ext>; ``splits`` {name: [index]} -> ImageSets/Main."""
    os.makedirs(osp.join(root, 'Annotations'), exist_ok=True)
    os.makedirs(osp.join(root, 'JPEGImages'), exist_ok=True)
    for i, (img, boxes) in enumerate(samples):
        stem = f'img_{i:03d}'
        cv2.imwrite(osp.join(root, 'JPEGImages', stem + ext), img)
        objs = ''.join(
            f'<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1}</xmin>'
            f'<ymin>{y1 + 1}</ymin><xmax>{x2 + 1}</xmax><ymax>{y2 + 1}</ymax></bndbox></object>'
            for c, x1, y1, x2, y2 in boxes)
        with open(osp.join(root, 'Annotations', stem + '.xml'), 'w') as f:
            f.write(f'<annotation><filename>{stem}{ext}</filename><size><width>{img.shape[1]}'
                    f'</width><height>{img.shape[0]}</height><depth>1</depth></size>{objs}'
                    '</annotation>')
    if splits:
        os.makedirs(osp.join(root, 'ImageSets', 'Main'), exist_ok=True)
        for name, ids in splits.items():
            with open(osp.join(root, 'ImageSets', 'Main', f'{name}.txt'), 'w') as f:
                f.write(''.join(f'img_{i:03d}\n' for i in ids))
    return root


def write_coco(root, samples, classes, parts=None, ext='.png'):
    """annotations/<part>.json + images/; ``parts`` {json name: [index]} (default one all.json)."""
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    parts = parts or {'all': list(range(len(samples)))}
    for part, ids in parts.items():
        images, anns = [], []
        for i in ids:
            img, boxes = samples[i]
            name = f'{i:04d}{ext}'
            cv2.imwrite(osp.join(root, 'images', name), img)
            images.append(dict(id=i + 10, file_name=name, width=img.shape[1],
                               height=img.shape[0]))
            for c, x1, y1, x2, y2 in boxes:
                anns.append(dict(id=len(anns) + 1, image_id=i + 10,
                                 category_id=list(classes).index(c) + 7,
                                 bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                                 iscrowd=0))
        cats = [dict(id=k + 7, name=c) for k, c in enumerate(classes)]
        with open(osp.join(root, 'annotations', f'{part}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return root


def write_yolo(root, samples, classes, ext='.jpg', sub_splits=None, names_file='classes.txt'):
    """images/ + labels/ (or images/<split>/ + labels/<split>/ with ``sub_splits`` {split:
    [index]}); class names in ``names_file`` (classes.txt, obj.names or data.yaml)."""
    parts = sub_splits or {'': list(range(len(samples)))}
    for part, ids in parts.items():
        os.makedirs(osp.join(root, 'images', part), exist_ok=True)
        os.makedirs(osp.join(root, 'labels', part), exist_ok=True)
        for i in ids:
            img, boxes = samples[i]
            H, W = img.shape[:2]
            cv2.imwrite(osp.join(root, 'images', part, f'{i:04d}{ext}'), img)
            with open(osp.join(root, 'labels', part, f'{i:04d}.txt'), 'w') as f:
                for c, x1, y1, x2, y2 in boxes:
                    f.write(f'{list(classes).index(c)} {(x1 + x2) / 2 / W:.6f} '
                            f'{(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}\n')
    if names_file == 'data.yaml':
        with open(osp.join(root, 'data.yaml'), 'w') as f:
            f.write('path: .\ntrain: images/train\nval: images/val\n'
                    f'nc: {len(classes)}\nnames: [{", ".join(repr(c) for c in classes)}]\n')
    elif names_file:
        with open(osp.join(root, names_file), 'w') as f:
            f.write('\n'.join(classes) + '\n')
    return root


def main_table(md: str) -> list:
    """The header and rows of compare.md's first table (the one per run and benchmark)."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith('| name | head |'))
    table = []
    for ln in lines[start:]:
        if not ln.startswith('|'):
            break
        if '---' not in ln:
            table.append(ln)
    return table


# -------------------------------------------------------------------------------- backbones
# Small custom archs per family (every stage present, a few narrow blocks): the checks that put
# numbers through a backbone run on these; on the published archs only with -m slow.
CUSTOM_ARCHS = {
    'ConvNeXt': {'custom': dict(depths=[1, 1, 2, 1], channels=[16, 32, 64, 128])},
    'CSPConvNeXt': {
        'custom-e': dict(version='e', stem='vb', depths=[1, 1, 2, 1], stem_channels=16,
                         channels=[32, 64, 128, 256]),
        'custom-v1': dict(version='v1', stem='patchify', depths=[1, 1, 2, 1], stem_channels=16,
                          channels=[16, 32, 64, 128])},
    'FasterNet': {'custom': dict(channels=(16, 32, 64, 128), depths=(1, 1, 2, 1),
                                 act_cfg=dict(type='GELU'), drop_path_rate=0.)},
    # every large kernel larger than its map at 64 x 64, as in the real archs
    'RepLKNet': {'custom': dict(large_kernel_sizes=[13, 11, 9, 7], depths=[1, 1, 2, 1],
                                channels=[8, 16, 24, 32], small_kernel=5, dw_ratio=1.0)},
    # one row of blocks per stride (2, 4, 8, 16, 32) of the 600m rows, 4-expert dynamic convs
    'ParameterNet': {'custom': dict(cfgs=[PARAMETERNET_600M_CFGS[i] for i in (0, 1, 3, 5, 7)],
                                    width=0.5, act_cfg=dict(type='HSwish'), num_experts=4)},
}


def build(name, arch=None, device='cpu', **kwargs):
    """``name``'s backbone (default: its first custom arch). On 'meta' it holds no memory."""
    customs = CUSTOM_ARCHS[name]
    arch = customs.get(arch or next(iter(customs)), arch)
    with torch.device(device):
        return BACKBONES[name](arch=arch, **kwargs)


def loss_of(outs):
    """A loss with non-zero gradients through train-mode BNs (a plain sum has none)."""
    return sum(o.square().mean() for o in outs)


T0 = dict(channels=(40, 80, 160, 320), depths=(1, 2, 8, 2), act_cfg=dict(type='GELU'),
          drop_path_rate=0.0)
# benchmark settings that keep a test short: a small matmul peak, no progress lines
FAST = dict(peak_size=256, progress=False)


class TinyDet(nn.Module):
    """Just what the benchmark's backbone-only path needs: ``backbone`` and
    ``data_preprocessor``."""

    def __init__(self, arch=T0, **kwargs):
        super().__init__()
        from mmdet.models.data_preprocessors import DetDataPreprocessor
        from mmdet.registry import MODELS
        self.data_preprocessor = DetDataPreprocessor(
            mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
        self.backbone = MODELS.build(dict(type='FasterNet', arch=arch, **kwargs))


def assert_deploy_equal(model: nn.Module, shape=(2, 3, 64, 64), tol=1e-5, seed=0) -> None:
    """Outputs before and after ``switch_to_deploy()`` agree within ``tol`` (relative), per map."""
    torch.manual_seed(seed)
    randomize_bn_stats(model, seed)
    model.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        assert a.shape == b.shape
        diff = max_rel_diff(b, a)
        assert diff <= tol, f'deploy changed the output: max relative difference {diff:.2e} > {tol}'


def assert_frozen(model, frozen_stages: int) -> None:
    """Frozen parts have no trainable params and their norms stay in eval mode after train()."""
    model.train()
    for index in range(frozen_stages + 1):
        for module in model.frozen_modules(index):
            assert not module.training
            for m in module.modules():
                if isinstance(m, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                    assert not m.training
            assert all(not p.requires_grad for p in module.parameters())
    for index in range(frozen_stages + 1, 5):
        for module in model.frozen_modules(index):
            assert all(p.requires_grad for p in module.parameters())


def assert_cpu_channels_last_equals_nchw(model: nn.Module, first_layer: nn.Module) -> None:
    """CPU inference feeds ``first_layer`` channels_last maps, returns NCHW-contiguous maps and
    equals the official NCHW execution (``set_cpu_channels_last(model, False)``) to 1e-5."""
    seen = []
    first_layer.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model(x)
        reference = set_cpu_channels_last(model, False)(x)
    assert seen == [True, False]
    for out, ref in zip(outs, reference):
        assert out.is_contiguous() and max_rel_diff(ref, out) <= 1e-5
