"""What a run's test leaves beside its metrics: every test image's detections
(``detections.npz``, saved by a hook during ``runner.test()``) and the bootstrap of its mAP over
the test images (``bootstrap.json``), made from them without testing again; the same for a
test measured in a runtime (``detections-<backend>-<precision>.npz``, ...)."""
import json
import os.path as osp
from typing import Optional, Sequence

from mmengine.hooks import Hook

from ...engine.fileio import atomic_write
from ..compare import variant_file
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


def write_bootstrap(run_dir: str, resamples: int, ann_file: str, classes: Sequence[str],
                    backend: str = 'pytorch', precision: str = 'fp32') -> Optional[dict]:
    """The bootstrap of the run's detections to ``bootstrap.json`` (those measured in a runtime:
    ``bootstrap-<backend>-<precision>.json``); None without detections."""
    dets_path = osp.join(run_dir, variant_file(DETECTIONS, backend, precision))
    if not osp.isfile(dets_path):
        return None
    boot = bootstrap_maps(load_detections(dets_path), resamples, ann_file=ann_file,
                          classes=classes)
    atomic_write(osp.join(run_dir, variant_file(BOOTSTRAP, backend, precision)),
                 json.dumps(boot))
    return boot


def bootstrap_is_current(run_dir: str, resamples: int, backend: str = 'pytorch',
                         precision: str = 'fp32') -> bool:
    """Whether the bootstrap was drawn ``resamples`` times from the detections there now."""
    path = osp.join(run_dir, variant_file(BOOTSTRAP, backend, precision))
    dets = osp.join(run_dir, variant_file(DETECTIONS, backend, precision))
    boot = read_json(path)
    return bool(boot) and boot.get('resamples') == resamples and osp.isfile(dets) and \
        osp.getmtime(path) >= osp.getmtime(dets)
