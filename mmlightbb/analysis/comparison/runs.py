"""One run of a comparison: train (or resume), test, and time the trained detector in each
backend; the progress lines with ETAs."""
import copy
import gc
import json
import os.path as osp
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from ...engine import (CHECKPOINT_POINTER, find_resume_checkpoint, last_complete_checkpoint,
                       raise_if_weights_nonfinite)
from ...engine.distributed import setup_cpu_distributed
from ...engine.fileio import atomic_files, atomic_write
from ...engine.precision import use_autocast_test_loop
from ...engine.runner import build_runner
from ..benchmark import SCHEMA_VERSION, benchmark, build_detector
from ..compare import benchmark_file_name, variant_file
from ..export import ExportError, export_with_nms, exported_predictions, prepare_with_nms
from ..quantize import QuantizationSettings, export_int8
from ..uncertainty import DETECTIONS
from .plan import RUN_INFO, TEST_METRICS, epochs_text, read_json
from .testset import detections_hook

# a Cascade R-CNN epoch costs about this many YOLOX-s epochs on 2 CPU cores at 160 px (measured
# with FasterNet-T2: 4.5 vs 1.05 s per batch of 8; the backbone's share is the same in both)
CASCADE_COST = 3.5


def atomic_json(obj, path: str):
    atomic_write(path, json.dumps(obj, indent=2))


def fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


# -------------------------------------------------------------------------------- progress
class Clock:
    def __init__(self, log: Callable[[str], None], tag: str = 'cmp'):
        self.start, self._log, self.tag = time.perf_counter(), log, tag
        self.epoch_seconds: Dict[str, List[float]] = {}  # head -> s/epoch of runs trained here

    def log(self, msg: str):
        self._log(f'[{self.tag} {fmt_time(time.perf_counter() - self.start)}] {msg}')

    def per_epoch(self, head: str, current: Tuple[str, float]) -> float:
        """Seconds per epoch a run of ``head`` may take: the mean of the runs of that head
        trained so far, else the other head's (or the ``current`` (head, s/epoch)) scaled by
        :data:`CASCADE_COST`."""
        if self.epoch_seconds.get(head):
            return statistics.mean(self.epoch_seconds[head])
        known = [(h, statistics.mean(v)) for h, v in self.epoch_seconds.items() if v] or [current]
        h, value = known[0]
        if h == head:
            return value
        return value * (CASCADE_COST if head == 'cascade' else 1 / CASCADE_COST)


def progress_hook(clock: Clock, prefix: str, head: str, later: Sequence[Tuple[str, int]]):
    """A Hook that prints one line per finished epoch with the run's ETA and a rough ETA of all
    runs (``later``: (head, epochs) of the runs still to train, at the mean s/epoch of the runs
    of their head trained so far; backbones differ in cost, hence the "~")."""
    class ComparisonProgressHook(Hook):
        priority = 'LOWEST'

        def before_train(self, runner):
            self.t0, self.e0 = time.perf_counter(), runner.epoch

        def after_train_epoch(self, runner):
            epoch = runner.epoch + 1  # mmengine counts the epoch after this hook
            per_epoch = (time.perf_counter() - self.t0) / max(epoch - self.e0, 1)
            left = (runner.max_epochs - epoch) * per_epoch
            others = sum(epochs * clock.per_epoch(h, (head, per_epoch)) for h, epochs in later)
            clock.log(f'{prefix}: epoch {epoch}/{runner.max_epochs} done '
                      f'({per_epoch:.1f} s/epoch); ETA this run {fmt_time(left)}, all runs '
                      f'~{fmt_time(left + others)}')

        def after_train(self, runner):
            done = runner.epoch - self.e0
            if done > 0:
                clock.epoch_seconds.setdefault(head, []).append(
                    (time.perf_counter() - self.t0) / done)

    return ComparisonProgressHook()


# ------------------------------------------------------------------------------- one run
def train_run(cfg, run: dict, run_dir: str, precision: str, clock: Clock, prefix: str,
              later: Sequence[Tuple[str, int]] = ()):
    """Train ``cfg`` (or resume it from the last complete checkpoint in ``run_dir``) with the
    progress lines; returns the Runner (its test loop in ``precision``). ``cfg.launcher``
    other than 'none': this is one process of a distributed training."""
    resume_from = find_resume_checkpoint(run_dir) if osp.isdir(run_dir) else None
    # no file name: the Runner's own copy of the config (with this session's resume state) goes to
    # <run_dir>/<timestamp>.py, not over mmdet's base config name or <run>.py
    cfg = Config(copy.deepcopy(cfg.to_dict()))
    cfg.resume = resume_from is not None
    cfg.load_from = resume_from
    # here, not in <run>.py: tools/test.py on that config tests in fp32 unless told otherwise
    use_autocast_test_loop(cfg, precision)
    setup_cpu_distributed(cfg)
    epochs = cfg.train_cfg.max_epochs
    if resume_from:
        clock.log(f'{prefix}: resuming from {osp.relpath(resume_from, osp.dirname(run_dir))}')
    else:
        clock.log(f'{prefix}: training {epochs_text(epochs)} from scratch'
                  + (f" (backbone weights {run['checkpoint']})" if run['checkpoint'] else ''))
    runner = build_runner(cfg)
    runner.register_hook(progress_hook(clock, prefix, run['head'], later))
    try:
        runner.train()
    except Exception as err:  # name the cause when a head failed on NaN weights
        raise_if_weights_nonfinite(runner, err)
        raise
    return runner


def test_runner(cfg, checkpoint: str, precision: str = 'fp32', **overrides):
    """A Runner that tests ``checkpoint`` with ``cfg`` in this one process, in ``precision``
    (``overrides``: other top-level keys, e.g. ``work_dir``)."""
    cfg = Config(copy.deepcopy(cfg.to_dict()))
    cfg.merge_from_dict(dict(launcher='none', resume=False, load_from=checkpoint, **overrides))
    use_autocast_test_loop(cfg, precision)
    return build_runner(cfg)


def test_run(runner, run_dir: str, precision: str, num_classes: int, clock: Clock,
             prefix: str, backend: str = 'pytorch') -> dict:
    """Test with ``runner`` (every test image's detections saved,
    :func:`.testset.detections_hook`); writes and returns ``test_metrics.json`` (a test of the
    exported detector in a runtime ``backend``: ``test_metrics-<backend>-<precision>.json`` and
    its detections)."""
    runner.register_hook(detections_hook(
        osp.join(run_dir, variant_file(DETECTIONS, backend, precision)), num_classes))
    metrics = runner.test()
    metrics = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
    atomic_json(metrics, osp.join(run_dir, variant_file(TEST_METRICS, backend, precision)))
    voc, coco = metrics.get('pascal_voc/mAP'), metrics.get('coco/bbox_mAP')
    pytorch = backend == 'pytorch'
    clock.log(f"{prefix}: test{'' if pytorch else f' in {backend} {precision}:'} VOC mAP50 "
              f"{fmt_map(voc)}, COCO mAP {fmt_map(coco)}" + (f' ({precision})' if pytorch else ''))
    return metrics


def train_test_benchmark(cfg, run: dict, run_dir: str, benches: list, precision: str,
                         clock: Clock, prefix: str, later: Sequence[Tuple[str, int]],
                         num_classes: int):
    """:func:`train_run`, :func:`test_run`, then :func:`time_backends` with ``benches``
    (BenchmarkSettings, PyTorch first) on the trained model, in this process."""
    t0 = time.perf_counter()
    runner = train_run(cfg, run, run_dir, precision, clock, prefix, later)
    trained = runner.epoch
    test_run(runner, run_dir, precision, num_classes, clock, prefix)
    model = getattr(runner.model, 'module', runner.model)
    source = dict(config=osp.join(run_dir, run['name'] + '.py'),
                  checkpoint=osp.join(run_dir, f'epoch_{trained}.pth'))
    time_backends(model, run_dir, benches, source, clock, prefix)
    clock.log(f'{prefix}: {fmt_time(time.perf_counter() - t0)} for this run')
    del runner, model
    gc.collect()


def time_untrained(run: dict, run_dir: str, benches: list, clock: Clock, prefix: str):
    """A timed-only run (0 epochs, :func:`.plan.timed_only`): the detector of its config with its
    initial weights (the backbone's named weights, if the run has them) saved as
    ``epoch_0.pth`` (the side-by-side timing loads it) and timed with ``benches``; nothing is
    trained or tested. Its operators and tensor shapes are those of the trained detector; only
    the number of boxes its post-processing keeps can differ."""
    config = osp.join(run_dir, run['name'] + '.py')
    model = build_detector(config)[0]
    model.init_weights()
    checkpoint = osp.join(run_dir, 'epoch_0.pth')
    with atomic_files(checkpoint) as (tmp, ):
        torch.save(dict(meta=dict(epoch=0, timed_only=True), state_dict=model.state_dict()), tmp)
    atomic_write(osp.join(run_dir, CHECKPOINT_POINTER), checkpoint)
    clock.log(f'{prefix}: {epochs_text(0)}; built with its initial weights')
    time_backends(model, run_dir, benches, dict(config=config, checkpoint=checkpoint), clock,
                  prefix, test=False)


def time_backends(model, run_dir: str, benches: list, source: dict, clock: Clock, prefix: str,
                  test: bool = True):
    """Benchmark ``model`` with each of ``benches``. PyTorch's result is ``benchmark.json`` (with
    test_metrics.json it marks the run finished) and its errors fail the run; a runtime that is
    missing or cannot run the export leaves its reason as the entry's ``note`` instead. With
    ``test`` each runtime's export is also tested (:func:`test_in_runtime`)."""
    for bench in benches:
        what = f'{bench.backend} {bench.precision}'
        clock.log(f'{prefix}: benchmarking {what} ({_unit(bench)}, deployed, batch 1, '
                  f'{bench.shape[0]}x{bench.shape[1]}, {bench.threads} threads, {bench.device})')
        try:
            result = benchmark(model, bench, source=source)
        except Exception as err:
            if bench.backend == 'pytorch':
                raise
            msg = last_line(err)
            note = msg if isinstance(err, ExportError) else f'{type(err).__name__}: {msg}'
            result = dict(schema_version=SCHEMA_VERSION, note=note,
                          settings=dict(backend=bench.backend, precision=bench.precision))
            clock.log(f'{prefix}: {what} not timed: {note}')
        else:
            clock.log(f"{prefix}: {what}: {result['latency_ms']['median']:.1f} ms, "
                      f"{result['fps']:.1f} FPS")
            if bench.backend != 'pytorch' and test:
                try:
                    test_in_runtime(run_dir, source, bench.backend, bench.precision,
                                    bench.shape, bench.threads, clock, prefix,
                                    bench.quantization)
                except Exception as err:  # the row keeps its speed and says why it has no mAP
                    result['test_note'] = f'not tested in {what}: {last_line(err)}'
                    clock.log(f"{prefix}: {result['test_note']}")
        atomic_json(result, osp.join(run_dir, benchmark_file_name(bench.backend,
                                                                  bench.precision)))


def test_in_runtime(run_dir: str, source: dict, backend: str, precision: str,
                    shape: Sequence[int], threads: int, clock: Clock, prefix: str,
                    quantization: Optional[QuantizationSettings] = None) -> dict:
    """The run's test, with mmdet's test loop and metrics, on the detections of its checkpoint
    exported at ``shape`` (decoding and NMS in the graph) and run in ``backend`` at ``precision``
    (:func:`test_run`), for the runtime row's own mAP and interval; at 'int8' the graph is
    quantized as ``quantization`` says (:func:`~..quantize.export_int8`)."""
    info = read_json(osp.join(run_dir, RUN_INFO))
    cfg = Config.fromfile(source['config'])
    cfg.test_dataloader.batch_size = 1  # the exported graph's batch
    runner = test_runner(cfg, source['checkpoint'],
                         work_dir=osp.join(run_dir, f'test-{backend}-{precision}'))
    model = build_detector(source['config'], source['checkpoint'])[0]
    fmt = 'onnx' if backend == 'onnxruntime' else 'openvino'
    with tempfile.TemporaryDirectory(prefix='mmlightbb-runtime-test-') as folder:
        path = osp.join(folder, 'detector.onnx' if fmt == 'onnx' else 'detector.xml')
        if precision == 'int8':
            export_int8(prepare_with_nms(model, tuple(shape)), model, cfg, tuple(shape), path,
                        fmt, quantization)
        else:
            export_with_nms(model, tuple(shape), path, fmt)
        with exported_predictions(runner.model, path, fmt, threads, precision):
            return test_run(runner, run_dir, precision, len(info['settings']['classes']),
                            clock, prefix, backend)


def time_backends_of_finished_run(run: dict, run_dir: str, benches: list, clock: Clock,
                                  prefix: str):
    """:func:`time_backends` for a finished run, on the detector of its config and last
    checkpoint (nothing is trained or tested again)."""
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint is None:
        raise RuntimeError(f'no complete checkpoint left in {run_dir} to time '
                           f"{', '.join(b.backend for b in benches)} with; delete the folder to "
                           'train the run again')
    config = osp.join(run_dir, run['name'] + '.py')
    model = build_detector(config, checkpoint)[0]
    time_backends(model, run_dir, benches, dict(config=config, checkpoint=checkpoint), clock,
                  prefix, test=not run['timed_only'])


def _unit(bench) -> str:
    return 'test_step' if bench.backend == 'pytorch' else 'exported detector with NMS'


def last_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1] if text else type(err).__name__


def fmt_map(v) -> str:
    return 'missing' if v is None or (isinstance(v, float) and v < 0) else f'{v:.3f}'
