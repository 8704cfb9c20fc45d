"""The README's main job (``make demo``): every backbone with YOLOX trained, tested and timed, and
with Cascade R-CNN timed, on the synthetic side-scan sonar set, on one CPU.

:func:`run_demo` makes the synthetic set (96 train / 48 test images, 160x160) if it is absent and
runs :func:`mmlightbb.analysis.comparison.compare_backbones` on it: for YOLOX-s and Cascade R-CNN,
each mmlightbb backbone at its default arch and the head's incumbent (CSPDarknet-s, ResNet-50);
the YOLOX runs trained from scratch, tested (VOC mAP50, COCO mAP); every detector benchmarked
(whole ``test_step``, deployed, batch 1, 160x160) side by side. The report (table, mAP-vs-FPS
and MACs-vs-latency plots) goes to ``<work_dir>/report``.

YOLOX trains 8 epochs (96 iterations). The Cascade R-CNN rows are timed only
(:data:`DEMO_CASCADE_EPOCHS` 0): each detector is built with its initial weights and timed side by
side with the others, not trained or tested. On 2 CPU cores a Cascade R-CNN iteration costs
3-4x a YOLOX one (its RoI head: RoIAlign and two fully connected layers over 3 x 64 RoIs per
image); with the 1 epoch the demo had, its rows reached mAP 0.000-0.001 (speed-only rows
anyway) and took 9.5 of the demo's 28.7 minutes. With 8 epochs (``tools/demo.py
--cascade-epochs 8``, about 30 minutes more) Cascade R-CNN + FasterNet-T2 reached VOC mAP50 0.27
here, as much as YOLOX with it.

:func:`short_schedule_config` rescales a shipped sonar YOLOX config to the same short YOLOX
schedule (tests/test_learning.py uses it).
"""
import os.path as osp
from typing import Optional

from ..datasets import make_sonar_dataset
from ..engine import load_config
from ..models.backbones import BACKBONES
from .comparison import ComparisonSettings, check_precision_and_backends, compare_backbones
from .detector_configs import (DEFAULT_BACKBONES, HEADS, apply_short_schedule,
                               rescale_yolox_train_pipeline)

DEMO_EPOCHS = 8
DEMO_CASCADE_EPOCHS = 0  # timed only: see the module doc
DEMO_SIZE = 160


def short_schedule_config(config: str, data_root: str, work_dir: str, epochs: int, size: int,
                          batch_size: int = 8, lr: float = 2e-3,
                          cfg_options: Optional[dict] = None):
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
    if 'model.backbone.init_cfg' not in (cfg_options or {}):
        cfg.model.backbone.init_cfg = None  # from scratch, as the demo states: never downloads
    data_root = osp.join(data_root, '')
    cfg.merge_from_dict({
        'model.data_preprocessor.batch_augments': None,
        'train_dataloader.dataset.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': batch_size,
        'default_hooks.checkpoint.interval': epochs,
        'default_hooks.checkpoint.save_best': None,
        'default_hooks.logger.interval': 5,
        # mmdet names its visualizer 'visualizer' and mmengine hands back an existing instance of
        # that name, so without a per-run name every later run of one process (the demo) would log
        # its losses and config into the first run's vis_data.
        'visualizer.name': f'visualizer:{osp.abspath(work_dir)}',
    })
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    for loader in ('train_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    rescale_yolox_train_pipeline(cfg.train_dataloader.dataset.pipeline, size)
    for t in cfg.test_dataloader.dataset.pipeline:
        if t.type == 'Resize':
            t.scale = (size, size)
    cfg.test_evaluator = [dict(type='VOCMetric', metric='mAP', eval_mode='area', iou_thrs=0.5)]
    # AdamW, 1 warm-up epoch, cosine, the last quarter without Mosaic/MixUp: the schedule of the
    # YOLOX runs of tools/compare_backbones.py (and so of make demo)
    apply_short_schedule(cfg, epochs, lr, weight_decay=0.05, yolox_mode_switch=True)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    return cfg


def demo_settings(**overrides) -> ComparisonSettings:
    """The demo's :class:`ComparisonSettings` (every head, the default backbones, YOLOX
    :data:`DEMO_EPOCHS` epochs, Cascade R-CNN :data:`DEMO_CASCADE_EPOCHS`, :data:`DEMO_SIZE` px,
    batch 8, CPU, 2 threads) with ``overrides`` of its fields (e.g. ``seeds=3``), checked once."""
    fields = dict(heads=HEADS, backbones=DEFAULT_BACKBONES, epochs=DEMO_EPOCHS,
                  epochs_by_head={'cascade': DEMO_CASCADE_EPOCHS}, size=DEMO_SIZE, batch_size=8,
                  device='cpu', threads=2)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ComparisonSettings(**fields)


def run_demo(settings: Optional[ComparisonSettings] = None, work_dir: str = 'work_dirs/demo',
             data_root: str = 'data/sonar_synth', num_train: int = 96, num_val: int = 48,
             log=print) -> dict:
    """The synthetic sonar set (made if absent: ``num_train`` / ``num_val`` images at the
    settings' size) -> :func:`compare_backbones` on it with ``settings`` (default
    :func:`demo_settings`); returns its result dict."""
    s = settings or demo_settings()
    check_precision_and_backends(s.precision, s.backends, s.device)  # before the data is made
    data = make_sonar_dataset(data_root, num_train=num_train, num_val=num_val, size=s.size, seed=0)
    log(f"[demo] data: {data['out']} ({'already there' if data['skipped'] else 'generated'}; "
        f'{num_train} train / {num_val} test images, {s.size}x{s.size})')
    return compare_backbones(data_root, work_dir, s, log=log, tag='demo')
