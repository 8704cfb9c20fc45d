"""What a run's test leaves beside its metrics: every test image's detections
(``detections.npz``, saved by a hook during ``runner.test()``) and the bootstrap of its mAP over
the test images (``bootstrap.json``), made from them without testing again."""
import json
import os.path as osp
from typing import Optional, Sequence

from mmengine.hooks import Hook

from ...engine.fileio import atomic_write
from ..uncertainty import BOOTSTRAP, DETECTIONS, bootstrap_maps, detections_record, \
    load_detections, save_detections
from .plan import read_json


def detections_hook(path: str, num_classes: int):
    """A Hook that keeps every test image's predictions and ground truth (what the metrics get)
    and writes them to ``path`` when the test ends."""
    class DetectionsHook(Hook):
        priority = 'LOWEST'

        def before_test_epoch(self, runner):
            self.records = []

        def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.records += [detections_record(sample) for sample in outputs or []]

        def after_test_epoch(self, runner, metrics=None):
            save_detections(path, self.records, num_classes)

    return DetectionsHook()


def write_bootstrap(run_dir: str, resamples: int, ann_file: str, classes: Sequence[str]
                    ) -> Optional[dict]:
    """The bootstrap of the run's detections to ``bootstrap.json`` (None without detections)."""
    dets_path = osp.join(run_dir, DETECTIONS)
    if not osp.isfile(dets_path):
        return None
    boot = bootstrap_maps(load_detections(dets_path), resamples, ann_file=ann_file,
                          classes=classes)
    atomic_write(osp.join(run_dir, BOOTSTRAP), json.dumps(boot))
    return boot


def bootstrap_is_current(run_dir: str, resamples: int) -> bool:
    """Whether ``bootstrap.json`` was drawn ``resamples`` times from the detections there now."""
    boot = read_json(osp.join(run_dir, BOOTSTRAP))
    dets = osp.join(run_dir, DETECTIONS)
    return bool(boot) and boot.get('resamples') == resamples and osp.isfile(dets) and \
        osp.getmtime(osp.join(run_dir, BOOTSTRAP)) >= osp.getmtime(dets)
