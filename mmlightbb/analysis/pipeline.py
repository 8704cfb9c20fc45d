"""The README's main job (``make demo``): every backbone trained, tested and timed on one CPU.

On the synthetic side-scan sonar set (made if absent), each YOLOX config of ``DEMO_RUNS`` -- the
five mmlightbb backbones and mmdet's CSPDarknet YOLOX-s -- is trained from scratch on the same short
schedule (:func:`short_schedule_config`), tested (VOC mAP50, what sonar papers report) and
benchmarked (whole ``test_step``, deployed, batch 1, at the training size). :func:`run_compare`
then writes the table and the mAP-vs-FPS and MACs-vs-latency plots. Everything runs in one process,
so mmdet is imported once; each run's work dir is what ``tools/compare.py`` reads too.
"""
import os.path as osp
import time
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.runner import Runner

from ..datasets import make_sonar_dataset
from ..engine import load_config
from ..models.backbones import BACKBONES
from .benchmark import benchmark, dump_json
from .compare import run_compare

# (run name, config path relative to the repository root, where tools/demo.py runs): the shipped
# sonar configs, backbones at their default archs
DEMO_RUNS: Tuple[Tuple[str, str], ...] = (
    ('yolox_convnext', 'configs/yolox_convnext.py'),
    ('yolox_cspconvnext', 'configs/yolox_cspconvnext.py'),
    ('yolox_fasternet', 'configs/yolox_fasternet.py'),
    ('yolox_replknet', 'configs/yolox_replknet.py'),
    ('yolox_parameternet', 'configs/yolox_parameternet.py'),
    ('yolox_s_cspdarknet', 'configs/baselines/yolox_s.py'),
)


def short_schedule_config(config: str, data_root: str, work_dir: str, epochs: int, size: int,
                          batch_size: int = 8, lr: float = 2e-3, cfg_options: Optional[dict] = None):
    """A shipped sonar YOLOX config rescaled to a short CPU run at ``size`` x ``size``.

    The same for every backbone, so runs compare: AdamW at ``lr`` (weight decay 0.05, none on norms
    and biases), 1 warm-up epoch, cosine decay, the last quarter of the epochs without Mosaic/MixUp
    (YOLOX's mode switch), no multi-scale batch resizing (the images are ``size`` already), VOC
    mAP50 (area) on the val split as the test metric, no validation during training, and no
    stochastic depth in mmlightbb backbones: the configs' rates (0.2-0.3) are for long runs, and in
    8 epochs from scratch CSPConvNeXt-tiny reached VOC mAP50 0.000 with its 0.2 against 0.105
    without.
    """
    cfg = load_config(config, cfg_options)
    if cfg.model.backbone.type in BACKBONES:
        cfg.model.backbone.drop_path_rate = 0.0
    data_root = osp.join(data_root, '')
    cfg.merge_from_dict({
        'model.data_preprocessor.batch_augments': None,
        'train_dataloader.dataset.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': batch_size,
        'train_cfg.max_epochs': epochs,
        'train_cfg.val_interval': epochs,
        'default_hooks.checkpoint.interval': epochs,
        'default_hooks.checkpoint.save_best': None,
        'default_hooks.logger.interval': 5,
        # mmdet names its visualizer 'visualizer' and mmengine hands back an existing instance of
        # that name, so without a per-run name every later run of one process (the demo) would log
        # its losses and config into the first run's vis_data.
        'visualizer.name': f'visualizer:{osp.abspath(work_dir)}',
    })
    cfg.optim_wrapper = dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=lr, weight_decay=0.05),
        paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    for t in cfg.train_dataloader.dataset.pipeline:
        if 'img_scale' in t:
            t.img_scale = (size, size)
        if t.type == 'RandomAffine':
            t.border = (-size // 2, -size // 2)
        if t.type == 'Resize':
            t.scale = (size, size)
    for t in cfg.test_dataloader.dataset.pipeline:
        if t.type == 'Resize':
            t.scale = (size, size)
    cfg.test_evaluator = [dict(type='VOCMetric', metric='mAP', eval_mode='area', iou_thrs=0.5)]
    last = epochs // 4  # epochs without Mosaic/MixUp, at a constant LR
    cosine_end = epochs - last
    warmup = 1 if cosine_end >= 2 else 0
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
        if hook.type == 'YOLOXModeSwitchHook':
            hook.num_last_epochs = last
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    return cfg


def _stamp(start: float) -> str:
    minutes, seconds = divmod(int(time.perf_counter() - start), 60)
    return f'[demo {minutes:02d}:{seconds:02d}]'


def run_demo(work_dir: str = 'work_dirs/demo', data_root: str = 'data/sonar_synth',
             runs: Sequence[Tuple[str, str]] = DEMO_RUNS, epochs: int = 8, size: int = 160,
             num_train: int = 96, num_val: int = 48, bench_iters: int = 20, threads: int = 2,
             log=print) -> str:
    """Data (if absent) -> train + test + benchmark every run -> compare; returns the report dir."""
    start = time.perf_counter()
    torch.set_num_threads(threads)
    data = make_sonar_dataset(data_root, num_train=num_train, num_val=num_val, size=size, seed=0)
    log(f"{_stamp(start)} data: {data['out']} "
        f"({'already there' if data['skipped'] else 'generated'}; {num_train} train / {num_val} "
        f'val images, {size}x{size})')
    run_dirs: List[str] = []
    for i, (name, config) in enumerate(runs, 1):
        run_dir = osp.abspath(osp.join(work_dir, name))
        run_dirs.append(run_dir)
        log(f'{_stamp(start)} [{i}/{len(runs)}] {name}: training {epochs} epochs on {config}')
        cfg = short_schedule_config(config, data_root, run_dir, epochs, size)
        runner = Runner.from_cfg(cfg)
        runner.train()
        metrics = runner.test()
        log(f"{_stamp(start)} [{i}/{len(runs)}] {name}: VOC mAP50 "
            f"{metrics['pascal_voc/mAP']:.3f}; benchmarking (test_step, deploy, batch 1, "
            f'{threads} threads)')
        model = getattr(runner.model, 'module', runner.model)
        result = benchmark(model, shape=(size, size), deploy=True, warmup=3, iters=bench_iters,
                           threads=threads, source=dict(
                               config=config, checkpoint=osp.join(run_dir, f'epoch_{epochs}.pth')))
        dump_json(result, osp.join(run_dir, 'benchmark.json'))
        log(f"{_stamp(start)} [{i}/{len(runs)}] {name}: {result['latency_ms']['median']:.1f} ms, "
            f"{result['fps']:.1f} FPS")
        del runner, model
    report = osp.join(work_dir, 'report')
    _, paths = run_compare(run_dirs, report)
    with open(paths['compare.md']) as f:
        log(f.read().rstrip())
    log(f'{_stamp(start)} done: {report}/compare.md, map_vs_fps.png, macs_vs_latency.png')
    return report
