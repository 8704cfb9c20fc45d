"""Training really learns: YOLOX + FasterNet-T0 on a small synthetic side-scan sonar set (CPU).

Untrained, the detector's VOC mAP50 is ~0 (random boxes; measured below, not assumed). After a few
minutes of training on 96 images it must reach MIN_MAP50 on 48 unseen images: the synthetic targets
(bright highlight + shadow, distinct shapes) are learnable, so anything below that threshold means
the backbone, neck wiring, normalisation or schedule is broken.
"""
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIN_MAP50 = 0.30
EPOCHS = 24
SIZE = 256


def learning_config(data_root, work_dir, epochs):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs/yolox_fasternet.py'))
    cfg.merge_from_dict({
        'model.backbone.arch': 't0',
        'model.neck.in_channels': [80, 160, 320],
        'model.data_preprocessor.batch_augments': None,
        'train_dataloader.dataset.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': 8,
        'optim_wrapper.optimizer.lr': 2e-3,
        'train_cfg.max_epochs': epochs,
        'train_cfg.val_interval': epochs,
        'default_hooks.checkpoint.interval': epochs,
        'default_hooks.logger.interval': 50,
    })
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    # the sonar images are 256x256: train and test at that scale
    for t in cfg.train_dataloader.dataset.pipeline:
        if 'img_scale' in t:
            t.img_scale = (SIZE, SIZE)
        if t.type == 'RandomAffine':
            t.border = (-SIZE // 2, -SIZE // 2)
        if t.type == 'Resize':
            t.scale = (SIZE, SIZE)
    for t in cfg.val_dataloader.dataset.pipeline:
        if t.type == 'Resize':
            t.scale = (SIZE, SIZE)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = [dict(type='VOCMetric', metric='mAP', eval_mode='area', iou_thrs=0.5)]
    cfg.test_evaluator = cfg.val_evaluator
    # schedule scaled to the short run: 1 warm-up epoch, cosine, last quarter without Mosaic/MixUp
    last = epochs // 4
    cfg.param_scheduler = [
        dict(type='mmdet.QuadraticWarmupLR', by_epoch=True, begin=0, end=1,
             convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', eta_min=1e-4, begin=1, T_max=epochs - last, end=epochs - last,
             by_epoch=True, convert_to_iter_based=True),
        dict(type='ConstantLR', by_epoch=True, factor=1, begin=epochs - last, end=epochs),
    ]
    for hook in cfg.custom_hooks:
        if hook.type == 'YOLOXModeSwitchHook':
            hook.num_last_epochs = last
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.fixture(scope='module')
def sonar_root(tmp_path_factory):
    from mmlightbb.datasets import make_sonar_dataset
    root = str(tmp_path_factory.mktemp('sonar'))
    make_sonar_dataset(root, num_train=96, num_val=48, size=SIZE, seed=0)
    return root + '/'


def test_training_raises_map50_well_above_untrained(sonar_root, tmp_path):
    import mmlightbb  # noqa: F401
    from mmengine.runner import Runner
    untrained = Runner.from_cfg(learning_config(sonar_root, str(tmp_path / 'untrained'), 1))
    before = untrained.test()['pascal_voc/mAP']
    runner = Runner.from_cfg(learning_config(sonar_root, str(tmp_path / 'trained'), EPOCHS))
    runner.train()
    after = runner.test()['pascal_voc/mAP']
    assert before < 0.05, f'untrained mAP50 {before:.3f} should be ~0'
    assert after >= MIN_MAP50, f'mAP50 after {EPOCHS} epochs: {after:.3f} < {MIN_MAP50}'
