"""``import mmlightbb`` only adds: everything that existed before it in torch, mmengine, mmcv and
mmdet is the same object afterwards (registries and scheme/backend tables gain new names only), and
a stock mmdet config trains to the same weights with and without ``custom_imports=['mmlightbb']``.
Each behaviour mmlightbb adds is a component a config selects: here, the stock component fails
where the selected one works."""
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from helpers import REPO, TINY_CLASSES, tiny_yolox_config


# Run in a fresh interpreter: snapshot every module-level name, class attribute and dict entry of
# the already-imported torch/mmengine/mmcv/mmdet modules, import mmlightbb, compare.
SNAPSHOT = textwrap.dedent('''
    import importlib, inspect, sys
    import torch, torch.serialization
    import mmcv, mmcv.ops, mmcv.cnn, mmengine, mmengine.runner, mmengine.fileio, mmengine.hooks
    import mmdet, mmdet.models, mmdet.datasets, mmdet.engine, mmdet.evaluation
    import mmdet.visualization, mmdet.utils
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    WATCHED = ('mmengine', 'mmcv', 'mmdet', 'torch.nn.modules.module', 'torch.serialization',
               'torch.hub', 'torch.utils.data')

    def entries(mapping):
        try:
            return {repr(k): id(v) for k, v in list(mapping.items())}
        except Exception:
            return {}

    def identity(value):
        # a table (dict) is judged by its entries, recorded one by one: mmengine's public
        # CheckpointLoader.register_scheme re-sorts its scheme table into a new dict
        return 'a dict' if isinstance(value, dict) else id(value)

    def snapshot():
        seen = {}
        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith(WATCHED):
                continue
            for attr, value in list(vars(module).items()):
                key = f'{name}.{attr}'
                seen[key] = identity(value)
                if isinstance(value, dict):
                    for k, v in entries(value).items():
                        seen[f'{key}[{k}]'] = v
                if inspect.isclass(value) and value.__module__ == name:
                    for cattr, cvalue in list(vars(value).items()):
                        seen[f'{key}.{cattr}'] = identity(cvalue)
                        if isinstance(cvalue, dict):
                            for k, v in entries(cvalue).items():
                                seen[f'{key}.{cattr}[{k}]'] = v
                if type(value).__name__ == 'Registry':
                    for k, v in entries(value._module_dict).items():
                        seen[f'{key}._module_dict[{k}]'] = v
        seen['safe_globals'] = sorted(map(repr, torch.serialization.get_safe_globals()))
        # torch's global module hooks: any entry added here would run in every user's model
        for attr, value in vars(torch.nn.modules.module).items():
            if attr.startswith('_global_') and isinstance(value, dict):
                seen[f'torch.nn.modules.module.{attr} entries'] = sorted(value)
        return seen

    before = snapshot()
    import mmlightbb  # noqa: F401
    after = snapshot()
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    removed = sorted(k for k in before if k not in after)
    print('CHANGED', changed)
    print('REMOVED', removed)
    print('WATCHED', len(before))
''')


def test_import_rebinds_nothing_that_existed():
    proc = subprocess.run([sys.executable, '-c', SNAPSHOT], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(' ', 1) for line in proc.stdout.splitlines()
                 if line.startswith(('CHANGED', 'REMOVED', 'WATCHED')))
    assert int(lines['WATCHED']) > 10000  # the snapshot really covers the stack
    assert lines['CHANGED'] == '[]', f'import mmlightbb rebound: {lines["CHANGED"][:2000]}'
    assert lines['REMOVED'] == '[]', f'import mmlightbb removed: {lines["REMOVED"][:2000]}'


def test_import_adds_its_components_under_new_names():
    import mmlightbb  # noqa: F401
    from mmdet.registry import HOOKS, LOOPS, MODELS, RUNNERS
    from mmengine.fileio.backends import backends
    from mmengine.runner.checkpoint import CheckpointLoader
    for registry, name in ((MODELS, 'FasterNet'), (HOOKS, 'AtomicCheckpointHook'),
                           (HOOKS, 'NonFiniteLossHook'), (LOOPS, 'AutocastTestLoop'),
                           (RUNNERS, 'RecoverableRunner')):
        assert registry.get(name).__module__.startswith('mmlightbb.'), name
    assert backends['atomic_local'].__module__.startswith('mmlightbb.')
    assert 'mmlightbb://' in CheckpointLoader._schemes
    # the stock names are mmengine's and mmdet's own
    assert HOOKS.get('CheckpointHook').__module__.startswith('mmengine.')
    assert backends['local'].__module__.startswith('mmengine.')


TRAIN_SCRIPT = textwrap.dedent('''
    import sys, torch
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(sys.argv[1])
    cfg.work_dir = sys.argv[2]
    runner = Runner.from_cfg(cfg)
    runner.train()
    torch.save(runner.model.state_dict(), sys.argv[3])
''')


def stock_yolox_tiny_config(data: dict, with_plugin: bool) -> str:
    """mmdet's YOLOX-tiny on the tiny set with real random augmentation, seed 0; nothing of ours
    unless ``with_plugin`` (then only the import)."""
    imports = ("custom_imports = dict(imports=['mmlightbb'], allow_failed_imports=False)"
               if with_plugin else '')
    return f"""
_base_ = 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'
{imports}
metainfo = dict(classes={TINY_CLASSES!r})
model = dict(data_preprocessor=dict(batch_augments=None),
             bbox_head=dict(num_classes={len(TINY_CLASSES)}))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomAffine', scaling_ratio_range=(0.5, 1.5), border=(0, 0)),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='Pad', size=(96, 96), pad_val=dict(img=(114, 114, 114))),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CocoDataset', data_root={data['data_root']!r},
                 ann_file={data['ann_file']!r}, data_prefix=dict(img={data['img_prefix']!r}),
                 metainfo=metainfo, filter_cfg=dict(filter_empty_gt=False),
                 pipeline=train_pipeline))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=1000)
val_dataloader = val_evaluator = val_cfg = None
test_dataloader = test_evaluator = test_cfg = None
param_scheduler = []
custom_hooks = []
default_hooks = dict(checkpoint=dict(interval=1000, by_epoch=False), logger=dict(interval=1))
randomness = dict(seed=0)
"""


@pytest.mark.slow
def test_stock_config_trains_to_the_same_weights_with_and_without_the_plugin(tiny_coco, tmp_path):
    script = tmp_path / 'train.py'
    script.write_text(TRAIN_SCRIPT)
    weights = {}
    for with_plugin in (False, True):
        name = 'plugin' if with_plugin else 'stock'
        cfg = tmp_path / f'{name}.py'
        cfg.write_text(stock_yolox_tiny_config(tiny_coco, with_plugin))
        weights[name] = tmp_path / f'{name}.pth'
        proc = subprocess.run(
            [sys.executable, str(script), str(cfg), str(tmp_path / f'work_{name}'),
             str(weights[name])], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if not with_plugin:
            assert 'mmlightbb' not in proc.stdout + proc.stderr
    stock, plugin = (torch.load(weights[k]) for k in ('stock', 'plugin'))
    assert stock.keys() == plugin.keys()
    for key in stock:
        assert torch.equal(stock[key], plugin[key]), key
    assert max(v.item() for k, v in stock.items() if k.endswith('num_batches_tracked')) == 4


# ------------------------------------------------- stock component fails, selected one works
def test_stock_loader_refuses_a_runner_checkpoint_that_safe_loading_reads(tmp_path):
    """A Runner checkpoint's message hub holds numpy scalars: stock mmengine on torch >= 2.6
    cannot load it (so cannot resume); RecoverableRunner's loading allows exactly those globals,
    for that load only."""
    from mmengine.runner.checkpoint import CheckpointLoader

    import mmlightbb  # noqa: F401
    from mmlightbb.engine import runner_checkpoint_loading
    path = tmp_path / 'runner.pth'
    torch.save({'meta': {'seed': np.int64(3)}, 'state_dict': {'w': torch.ones(1)}}, path)
    with pytest.raises(Exception, match='weights_only|Unsupported global'):
        CheckpointLoader.load_checkpoint(str(path))
    with runner_checkpoint_loading(path):
        assert CheckpointLoader.load_checkpoint(str(path))['meta']['seed'] == 3
    with pytest.raises(Exception, match='weights_only|Unsupported global'):  # not process-wide
        CheckpointLoader.load_checkpoint(str(path))


def test_stock_checkpoint_hook_writes_in_place_the_atomic_one_through_a_temp_file(tmp_path):
    from mmengine.fileio import LocalBackend
    from mmengine.hooks import CheckpointHook

    from mmlightbb.engine import AtomicCheckpointHook, AtomicLocalBackend

    def backend(hook):
        hook.out_dir = str(tmp_path)
        from mmengine.fileio import get_file_backend
        return get_file_backend(hook.out_dir, backend_args=hook.backend_args)

    assert type(backend(CheckpointHook(interval=1))) is LocalBackend
    assert type(backend(AtomicCheckpointHook(interval=1))) is AtomicLocalBackend
    # a remote out_dir or explicit backend_args are the user's choice
    assert AtomicCheckpointHook(interval=1, out_dir='s3://bucket/run').backend_args is None
    assert AtomicCheckpointHook(interval=1, backend_args=dict(backend='local')).backend_args == \
        dict(backend='local')


def test_recoverable_runner_selects_the_components_for_a_stock_config(tiny_coco, tmp_path):
    """A user's config that inherits configs/_base_/mmlightbb_runtime.py (runner_type) gets the
    atomic checkpoint hook, the NaN stop and exact resumption without naming them."""
    from mmengine.config import Config
    from mmengine.registry import RUNNERS

    from mmlightbb.engine import (AtomicCheckpointHook, ExactResumeHook, NonFiniteLossHook,
                                  RecoverableRunner)
    cfg_file = tmp_path / 'user.py'
    cfg_file.write_text(stock_yolox_tiny_config(tiny_coco, with_plugin=False).replace(
        "_base_ = 'mmdet::yolox/yolox_tiny_8xb8-300e_coco.py'",
        f"_base_ = ['mmdet::yolox/yolox_tiny_8xb8-300e_coco.py', "
        f"{osp.join(REPO, 'configs/_base_/mmlightbb_runtime.py')!r}]"))
    cfg = Config.fromfile(str(cfg_file))
    cfg.work_dir = str(tmp_path / 'work')
    runner = RUNNERS.build(cfg)
    assert type(runner) is RecoverableRunner
    kinds = [type(hook) for hook in runner.hooks]
    assert AtomicCheckpointHook in kinds and NonFiniteLossHook in kinds
    checkpoint = next(h for h in runner.hooks if isinstance(h, AtomicCheckpointHook))
    assert checkpoint.interval == 1000 and not checkpoint.by_epoch  # the config's options kept
    runner.train()
    assert any(isinstance(hook, ExactResumeHook) for hook in runner.hooks)


def test_neck_check_runs_in_the_recoverable_runner_not_in_stock_builds(tiny_coco, tmp_path):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmlightbb.engine import build_runner
    from mmlightbb.models.neck_check import ChannelMismatchError
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(tiny_yolox_config(
        tiny_coco, dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3)), [96, 192, 384]))
    cfg = Config.fromfile(str(cfg_file))
    cfg.work_dir = str(tmp_path / 'work')
    init_default_scope('mmdet')
    MODELS.build(cfg.model)  # stock mmdet builds it; it would fail at the first forward
    with pytest.raises(ChannelMismatchError) as e:
        build_runner(cfg)
    assert 'channels [80, 160, 320]' in str(e.value) and 'in_channels [96, 192, 384]' in str(e.value)


def test_stock_autocast_test_fails_in_nms_the_autocast_test_loop_runs(tmp_path):
    """mmcv's CPU NMS takes fp32 only: a whole YOLOX test_step under bf16 autocast fails;
    AutocastTestLoop's autocast covers backbone, neck and head, NMS runs in fp32."""
    from mmcv.ops import batched_nms

    from mmlightbb.engine import autocast_compute
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    with pytest.raises(RuntimeError, match='expected scalar type Float'):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            batched_nms(boxes.bfloat16(), scores.bfloat16(), torch.zeros(3),
                        dict(type='nms', iou_threshold=0.5))

    class Detector(torch.nn.Module):  # the shape of an mmdet single-stage detector
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 4, 3)
            self.bbox_head = torch.nn.Conv2d(4, 5, 1)

        def forward(self, x):
            out = self.bbox_head(self.backbone(x))
            assert out.dtype == torch.float32  # post-processing sees fp32
            return batched_nms(boxes, out.flatten()[:3].sigmoid(), torch.zeros(3),
                               dict(type='nms', iou_threshold=0.5))[1]

    def autocast_dtype(module, args, output):  # runs before autocast_compute's own hook
        enabled = torch.is_autocast_enabled('cpu')
        seen.append(torch.get_autocast_dtype('cpu') if enabled else None)

    model = Detector()
    seen = []
    model.backbone.register_forward_hook(autocast_dtype)
    with autocast_compute(model, 'bf16', 'cpu'):
        model(torch.randn(1, 3, 8, 8))
    assert seen == [torch.bfloat16]
    model(torch.randn(1, 3, 8, 8))  # hooks removed: plain fp32 again
    assert seen[-1] is None and not torch.is_autocast_enabled('cpu')
