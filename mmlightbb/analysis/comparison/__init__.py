"""Compare backbones on your own dataset: mAP against FPS, for YOLOX and Cascade R-CNN, in one call.

Modules: :mod:`.settings` (:class:`ComparisonSettings`, every option validated once),
:mod:`.plan` (the runs, their settings, precision and backends, how far each got), :mod:`.runs`
(one run: train, test, time; progress), :mod:`.testset` (each test image's detections and the
bootstrap of the mAP over them), :mod:`.timing` (every run timed side by side after all training)
and :mod:`.job` (the whole comparison).

:func:`compare_backbones` (``tools/compare_backbones.py`` is its command line):

1. reads the dataset folder (Pascal VOC, COCO or YOLO-txt layout) and writes ``OUT/data/train.json``
   and ``OUT/data/test.json`` (:func:`mmlightbb.datasets.prepare_dataset`: classes, split, what
   was skipped);
2. for every head x backbone (:mod:`..detector_configs`) writes the run's plain mmdet config to
   ``OUT/<run>/<run>.py`` (``python tools/train.py`` runs it as it is), trains on the one schedule
   of that head, tests (VOC mAP50 and COCO mAP on the test split; ``test_metrics.json`` and
   mmengine's ``<timestamp>/<timestamp>.json``) and benchmarks the deployed detector
   (``benchmark.json``: whole ``test_step``, batch 1, at the test scale, on ``device`` with
   ``threads``), both in ``precision``; then once more per extra backend in ``backends``
   (``benchmark-<backend>-<precision>.json``: the exported YOLOX detector with box decoding and
   NMS in onnxruntime / OpenVINO; where the runtime is missing or the detector does not export,
   e.g. Cascade R-CNN's RoI stages, the file holds that reason as a ``note``);
3. with ``seeds`` N > 1 repeats 2. with seeds ``seed`` .. ``seed + N - 1`` (seed 0 in
   ``OUT/<run>/``, seed S in ``OUT/<run>_seedS/``; the first seed of every run trains first);
4. draws ``bootstrap`` resamples of the test images from every run's ``detections.npz`` (saved
   during its test) for the 95 % intervals of VOC mAP50 and COCO mAP (``bootstrap.json``;
   :mod:`..uncertainty`);
5. times every finished run's first seed in every backend side by side in one process, after all
   training (``OUT/timing.json``, :mod:`.timing`; kept while the runs and backends are the same
   and nothing was trained or timed, re-measured with ``retime``);
6. writes the table, the verdict and the plots (:func:`..compare.run_compare`) to
   ``OUT/report/``.

Nothing is lost when it stops: a run with ``test_metrics.json`` and ``benchmark.json`` is not
trained again (only the backends it was not timed with yet are benchmarked, from its checkpoint;
an entry holding a note is tried again), an unfinished one resumes from its last complete
checkpoint (one is kept per epoch), and a run made with other settings (data, split, classes,
epochs, size, batch, weights, test precision) is refused with a message rather than mixed into
the table. One run that fails (e.g. a non-finite loss) is reported and the others go on;
:class:`RunFailures` is raised at the end, after the report.
"""
from .job import RunFailures, compare_backbones
from .plan import (RUN_INFO, SETTINGS_VERSION, TEST_METRICS, ComparisonError,
                   check_precision_and_backends, default_epochs, default_size, plan_runs,
                   run_settings, run_state, runtime_timed, saved_settings, seed_dir_name,
                   test_input_shape)
from .settings import ComparisonSettings
from .timing import TIMING, time_side_by_side

__all__ = ['compare_backbones', 'ComparisonSettings', 'ComparisonError', 'RunFailures',
           'plan_runs', 'check_precision_and_backends', 'default_epochs', 'default_size',
           'test_input_shape', 'run_settings', 'saved_settings', 'run_state', 'runtime_timed',
           'seed_dir_name', 'time_side_by_side', 'RUN_INFO', 'TEST_METRICS', 'TIMING',
           'SETTINGS_VERSION']
