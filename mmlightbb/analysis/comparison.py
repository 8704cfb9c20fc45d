"""Compare backbones on your own dataset: mAP against FPS, for YOLOX and Cascade R-CNN, in one call.

Over 400 lines: planning, resume/skip, progress and the report of one comparison stay together;
splitting the run loop from the planning is due when it grows further.

:func:`compare_backbones` (``tools/compare_backbones.py`` is its command line):

1. reads the dataset folder (Pascal VOC, COCO or YOLO-txt layout) and writes ``OUT/data/train.json``
   and ``OUT/data/test.json`` (:func:`mmlightbb.datasets.prepare_dataset`: classes, split, what
   was skipped);
2. for every head x backbone (:mod:`.detector_configs`) writes the run's plain mmdet config to
   ``OUT/<run>/<run>.py`` (``python tools/train.py`` runs it as it is), trains on the one schedule
   of that head, tests (VOC mAP50 and COCO mAP on the test split; ``test_metrics.json`` and
   mmengine's ``<timestamp>/<timestamp>.json``) and benchmarks the deployed detector
   (``benchmark.json``: whole ``test_step``, batch 1, at the test scale, on ``device`` with
   ``threads``);
3. writes the table and the plots (:func:`.compare.run_compare`) to ``OUT/report/``.

Nothing is lost when it stops: a run with ``test_metrics.json`` and ``benchmark.json`` is skipped,
an unfinished one resumes from its last complete checkpoint (one is kept per epoch), and a run
made with other settings (data, split, classes, epochs, size, batch, weights) is refused with a
message rather than mixed into the table. One run that fails (e.g. a non-finite loss) is
reported and the others go on; :class:`RunFailures` is raised at the end, after the report.
"""
import copy
import gc
import json
import math
import os
import os.path as osp
import statistics
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..datasets.folder_layouts import DatasetError, format_summary, prepare_dataset
from ..models.pretrained import get_weights
from . import detector_configs as dc
from .compare import run_compare

RUN_INFO = 'run.json'
TEST_METRICS = 'test_metrics.json'
BENCHMARK = 'benchmark.json'
SETTINGS_VERSION = 1
QUICK = dict(size=160, epochs=4, min_iters=120, max_epochs=30)
DEFAULT = dict(epochs=12, min_iters=300, max_epochs=100)
FEW_ITERS = 100  # fewer training iterations per run than this: say that mAP will mean little
# a Cascade R-CNN epoch costs about this many YOLOX-s epochs on 2 CPU cores at 160 px (measured
# with FasterNet-T2: 4.5 vs 1.05 s per batch of 8; the backbone's share is the same in both)
CASCADE_COST = 3.5


class ComparisonError(ValueError):
    """Bad options or a work dir made with other settings (one line with the fix)."""


class RunFailures(RuntimeError):
    """Some runs failed; the report was written with the others."""


def _atomic_json(obj, path: str):
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}:{m:02d}:{s:02d}' if h else f'{m:02d}:{s:02d}'


# ------------------------------------------------------------------------------- planning
def plan_runs(heads: Sequence[str], backbones: Sequence[str], quick: bool = False,
              pretrained: Optional[Dict[str, str]] = None) -> List[dict]:
    """One dict per run (``name``, ``head``, ``family``, ``arch``, ``checkpoint``), heads outer,
    in the given order, duplicates dropped. Unknown names raise ``detector_configs.ConfigError``;
    a ``pretrained`` key that matches no chosen backbone or a missing checkpoint file raise
    :class:`ComparisonError`."""
    if not heads:
        raise ComparisonError('no head chosen; pass --heads yolox cascade (or one of them)')
    if not backbones:
        raise ComparisonError('no backbone chosen; pass --backbones, e.g. fasternet:t0 baseline')
    runs, seen = [], set()
    for head in heads:
        dc.check_head(head)
        for spec in backbones:
            family, arch = dc.parse_backbone(spec, head, quick)
            name = dc.run_name(head, family, arch)
            if name not in seen:
                seen.add(name)
                runs.append(dict(name=name, head=head, family=family, arch=arch,
                                 checkpoint=None))
    for key, path in (pretrained or {}).items():
        family, _, arch = key.partition(':')
        if family == 'baseline':
            raise ComparisonError(f'--pretrained {key}=...: name the backbone itself (e.g. '
                                  'resnet:50=CKPT or cspdarknet:s=CKPT), not baseline')
        fam, arch = dc.parse_backbone(key) if arch else (dc.parse_backbone(family)[0], None)
        hits = [r for r in runs if r['family'] == fam and (arch is None or r['arch'] == arch)]
        if not hits:
            raise ComparisonError(
                f'--pretrained {key}=...: no chosen backbone is {key} (chosen: '
                f"{sorted({r['family'] + ':' + r['arch'] for r in runs})})")
        if path.startswith('mmlightbb://'):  # named weights, downloaded once (README)
            try:
                get_weights(path)
            except KeyError as err:
                raise ComparisonError(f'--pretrained {key}={path}: {err.args[0]}') from None
        elif '://' not in path:  # other URLs (https://, torchvision://) go to mmengine as given
            if not osp.isfile(path):
                raise ComparisonError(f'--pretrained {key}={path}: checkpoint file not found')
            path = osp.abspath(path)
        for r in hits:
            r['checkpoint'] = path
    return runs


def default_epochs(train_images: int, batch_size: int, quick: bool = False) -> int:
    """12 epochs (``quick``: 4), or more on a small set so that a run gets at least 300
    (``quick``: 120) iterations: from scratch, a YOLOX or Cascade R-CNN run of fewer iterations
    ends with a mAP near 0 on the synthetic sonar set (measured: YOLOX-s with FasterNet-T0,
    40 iterations, mAP50 0.000; Cascade R-CNN with FasterNet-T2, 24 iterations, 0.005, and 96
    iterations, 0.27)."""
    preset = QUICK if quick else DEFAULT
    steps = max(1, math.ceil(train_images / batch_size))
    return int(min(preset['max_epochs'],
                   max(preset['epochs'], math.ceil(preset['min_iters'] / steps))))


def default_size(summary: dict) -> int:
    """The median image's longer side rounded up to a multiple of 32, within 128..640."""
    side = max(summary['image_size']['width'], summary['image_size']['height'])
    return int(min(640, max(128, 32 * math.ceil(side / 32))))


def test_input_shape(head: str, size: int, image_size: dict) -> tuple:
    """(H, W) of the network input at test time for the median image: YOLOX pads to the
    ``size`` square; Cascade R-CNN resizes to fit ``size`` (keeping the ratio) and pads to a
    multiple of 32."""
    if head == 'yolox':
        return size, size
    w, h = image_size['width'], image_size['height']
    scale = size / max(w, h)
    return (int(32 * math.ceil(round(h * scale) / 32)), int(32 * math.ceil(round(w * scale) / 32)))


def run_settings(run: dict, summary: dict, epochs: int, size: int, batch_size: int,
                 seed: int) -> dict:
    """What a run's result depends on; a finished run is reused only when these are equal."""
    ckpt = run['checkpoint']
    weights = None
    if ckpt and osp.isfile(ckpt):
        st = os.stat(ckpt)
        weights = dict(path=ckpt, bytes=st.st_size, mtime=int(st.st_mtime))
    elif ckpt:
        weights = dict(path=ckpt)
    return dict(version=SETTINGS_VERSION, data=summary['fingerprint'],
                classes=summary['classes'], epochs=epochs, size=size, batch_size=batch_size,
                seed=seed, schedule=dc.SCHEDULES[run['head']],
                cascade=dc.CASCADE_SMALL if run['head'] == 'cascade' else None,
                weights=weights)


def _diff(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = []
    for k in keys[:3]:
        a, b = old.get(k), new.get(k)
        shown.append(f'{k} {a} -> {b}' if not isinstance(a, (dict, list)) else k)
    return ', '.join(shown)


def run_state(run_dir: str) -> str:
    """'done' (test metrics and benchmark saved), 'started' (a checkpoint or files) or 'new'."""
    if osp.isfile(osp.join(run_dir, TEST_METRICS)) and osp.isfile(osp.join(run_dir, BENCHMARK)):
        return 'done'
    if osp.isdir(run_dir) and any(f.endswith('.pth') for f in os.listdir(run_dir)):
        return 'started'
    return 'new'


# -------------------------------------------------------------------------------- progress
class _Clock:
    def __init__(self, log: Callable[[str], None], tag: str = 'cmp'):
        self.start, self._log, self.tag = time.perf_counter(), log, tag
        self.epoch_seconds: Dict[str, List[float]] = {}  # head -> s/epoch of runs trained here

    def log(self, msg: str):
        self._log(f'[{self.tag} {_fmt_time(time.perf_counter() - self.start)}] {msg}')

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


def _progress_hook(clock: _Clock, prefix: str, head: str, later: Sequence[Tuple[str, int]]):
    """A Hook that prints one line per finished epoch with the run's ETA and a rough ETA of all
    runs (``later``: (head, epochs) of the runs still to train, at the mean s/epoch of the runs
    of their head trained so far; backbones differ in cost, hence the "~")."""
    from mmengine.hooks import Hook

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
                      f'({per_epoch:.1f} s/epoch); ETA this run {_fmt_time(left)}, all runs '
                      f'~{_fmt_time(left + others)}')

        def after_train(self, runner):
            done = runner.epoch - self.e0
            if done > 0:
                clock.epoch_seconds.setdefault(head, []).append(
                    (time.perf_counter() - self.t0) / done)

    return ComparisonProgressHook()


# ------------------------------------------------------------------------------- one run
def _fuse_plain_backbone(model):
    """A copy of ``model`` whose backbone's Conv+BN pairs are folded when the backbone has no
    ``switch_to_deploy`` of its own (mmdet's ResNet, CSPDarknet), so that the baselines are timed
    deployed like the mmlightbb backbones (the benchmark's deploy folds the other parts)."""
    backbone = getattr(model, 'backbone', None)
    if backbone is None or hasattr(backbone, 'switch_to_deploy'):
        return model
    from mmcv.cnn import fuse_conv_bn
    model = copy.deepcopy(model)
    fuse_conv_bn(model.backbone)
    return model


def _train_test_benchmark(cfg, run: dict, run_dir: str, shape: tuple, device: str, threads: int,
                          bench_iters: int, bench_warmup: int, clock: _Clock, prefix: str,
                          later: Sequence[Tuple[str, int]]):
    from mmengine.runner import Runner

    from ..engine import find_resume_checkpoint
    from .benchmark import benchmark, dump_json
    from mmengine.config import Config
    resume_from = find_resume_checkpoint(run_dir) if osp.isdir(run_dir) else None
    # no file name: the Runner's own copy of the config (with this session's resume state) goes to
    # <run_dir>/<timestamp>.py, not over mmdet's base config name or <run>.py
    cfg = Config(copy.deepcopy(cfg.to_dict()))
    cfg.resume = resume_from is not None
    cfg.load_from = resume_from
    epochs = cfg.train_cfg.max_epochs
    if resume_from:
        clock.log(f'{prefix}: resuming from {osp.relpath(resume_from, osp.dirname(run_dir))}')
    else:
        clock.log(f'{prefix}: training {epochs} epochs from scratch'
                  + (f" (backbone weights {run['checkpoint']})" if run['checkpoint'] else ''))
    t0 = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(_progress_hook(clock, prefix, run['head'], later))
    try:
        runner.train()
    except Exception as err:  # name the cause when a head failed on NaN weights
        from ..engine import raise_if_weights_nonfinite
        raise_if_weights_nonfinite(runner, err)
        raise
    trained = runner.epoch
    metrics = runner.test()
    metrics = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
    _atomic_json(metrics, osp.join(run_dir, TEST_METRICS))
    voc, coco = metrics.get('pascal_voc/mAP'), metrics.get('coco/bbox_mAP')
    clock.log(f'{prefix}: test VOC mAP50 {_num(voc)}, COCO mAP {_num(coco)}; benchmarking '
              f'(test_step, deployed, batch 1, {shape[0]}x{shape[1]}, {threads} threads, '
              f'{device})')
    model = _fuse_plain_backbone(getattr(runner.model, 'module', runner.model))
    result = benchmark(model, shape=tuple(shape), deploy=True, warmup=bench_warmup,
                       iters=bench_iters, threads=threads, device=device, progress=False,
                       source=dict(config=osp.join(run_dir, run['name'] + '.py'),
                                   checkpoint=osp.join(run_dir, f'epoch_{trained}.pth')))
    tmp = osp.join(run_dir, f'.{BENCHMARK}.tmp')
    dump_json(result, tmp)
    os.replace(tmp, osp.join(run_dir, BENCHMARK))
    clock.log(f"{prefix}: {result['latency_ms']['median']:.1f} ms, {result['fps']:.1f} FPS "
              f'({_fmt_time(time.perf_counter() - t0)} for this run)')
    del runner, model
    gc.collect()


def _num(v) -> str:
    return 'missing' if v is None or (isinstance(v, float) and v < 0) else f'{v:.3f}'


def _setup(summary: dict, runs: List[dict], epochs_by_head: Dict[str, int], size: int,
           batch_size: int, device: str, threads: int, bench_iters: int) -> dict:
    """The comparison's setup (data, split, schedules), for the report."""
    heads = list(dict.fromkeys(r['head'] for r in runs))
    lines = ['## Setup', '']
    lines += [f'* {line}' for line in format_summary(summary)]
    for head in heads:
        sch = dc.SCHEDULES[head]
        extra = ('the last quarter without Mosaic/MixUp, EMA' if head == 'yolox' else
                 'gradient clipping 10, {rcnn_rois} RoIs/image/stage, {rpn_train_proposals}/'
                 '{rpn_test_proposals} RPN proposals (train/test), RoIAlign sampling_ratio '
                 '{sampling_ratio}'.format(**dc.CASCADE_SMALL))
        lines.append(
            f'* {dc.HEAD_NAMES[head]}: {epochs_by_head[head]} epochs, batch {batch_size}, AdamW '
            f"lr {sch['lr']:g} (weight decay {sch['weight_decay']:g}), 1 warm-up epoch, cosine; "
            f'{extra}; from scratch unless a checkpoint is named below')
    weights = [f"{r['name']}: {r['checkpoint']}" for r in runs if r['checkpoint']]
    lines.append(f"* images resized to fit {size}x{size}; backbone weights: "
                 f"{'; '.join(weights) if weights else 'none (all from scratch)'}")
    lines.append(f'* test: VOC mAP50 (area) and COCO mAP on the test split; FPS: the whole '
                 f'deployed detector (test_step), batch 1, {bench_iters} timed iterations, '
                 f'{device}, {threads} threads')
    return dict(lines=lines, data=summary, epochs=epochs_by_head, size=size,
                batch_size=batch_size, device=device, threads=threads)


# ----------------------------------------------------------------------------- the whole job
def compare_backbones(data: str, out_dir: str, heads: Sequence[str] = dc.HEADS,
                      backbones: Optional[Sequence[str]] = None, epochs: Optional[int] = None,
                      size: Optional[int] = None, batch_size: int = 8,
                      device: Optional[str] = None, threads: Optional[int] = None,
                      pretrained: Optional[Dict[str, str]] = None, split_seed: int = 0,
                      val_ratio: float = 0.2, classes: Optional[Sequence[str]] = None,
                      quick: bool = False, epochs_by_head: Optional[Dict[str, int]] = None,
                      bench_iters: int = 20, bench_warmup: int = 3, seed: int = 0,
                      log: Callable[[str], None] = print, tag: str = 'cmp') -> dict:
    """Train, test and benchmark every head x backbone on the dataset folder ``data``; write the
    report to ``out_dir/report``. Returns ``dict(report=dir, paths=..., result=compare result,
    runs=[...], data=dataset summary)``.

    ``epochs`` (default: :func:`default_epochs`) and ``size`` (default: from the images, see
    :func:`default_size`; ``quick``: at most 160) are the same for every run;
    ``epochs_by_head`` overrides the epochs of a head (e.g. a shorter Cascade schedule).
    ``backbones`` defaults to every mmlightbb family at its default arch plus each head's
    baseline (``quick``: the small archs and baselines, :data:`detector_configs.QUICK_BACKBONES`).
    """
    import torch
    for name, value, low in (('--batch-size', batch_size, 1), ('--bench-iters', bench_iters, 1),
                             ('--epochs', epochs, 1), ('--size', size, 32),
                             ('--threads', threads, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise ComparisonError(f'{name} must be an integer >= {low}, got {value!r}')
    if size is not None and size % 32:
        raise ComparisonError(f'--size must be a multiple of 32 (the detectors downsample by '
                              f'32), got {size}; e.g. {32 * max(1, round(size / 32))}')
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device not in ('cpu', 'cuda'):
        raise ComparisonError(f"--device must be 'cpu' or 'cuda', got {device!r}")
    if device == 'cuda' and not torch.cuda.is_available():
        raise ComparisonError(f'--device cuda: this torch ({torch.__version__}) sees no CUDA '
                              'GPU; use --device cpu or install a CUDA build (README, GPU install)')
    if device == 'cpu' and torch.cuda.is_available():
        raise ComparisonError('--device cpu on a machine with a GPU: start the command with '
                              "CUDA_VISIBLE_DEVICES='' (tools/compare_backbones.py does this)")
    threads_before = torch.get_num_threads()
    threads = threads or threads_before
    torch.set_num_threads(threads)
    try:
        return _compare(data, out_dir, heads, backbones, epochs, size, batch_size, device, threads,
                        pretrained, split_seed, val_ratio, classes, quick, epochs_by_head,
                        bench_iters, bench_warmup, seed, log, tag)
    finally:
        torch.set_num_threads(threads_before)  # the caller's setting is left as it was


def _compare(data, out_dir, heads, backbones, epochs, size, batch_size, device, threads,
             pretrained, split_seed, val_ratio, classes, quick, epochs_by_head, bench_iters,
             bench_warmup, seed, log, tag) -> dict:
    backbones = list(backbones or (dc.QUICK_BACKBONES if quick else dc.DEFAULT_BACKBONES))
    runs = plan_runs(heads, backbones, quick, pretrained)
    clock = _Clock(log, tag)

    out_dir = osp.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    summary = prepare_dataset(data, osp.join(out_dir, 'data'), classes=classes,
                              val_ratio=val_ratio, split_seed=split_seed,
                              min_test_images=batch_size)
    for line in format_summary(summary):
        clock.log(line)
    steps = math.ceil(summary['train']['images'] / batch_size)
    epochs_note = '--epochs'
    if not epochs:
        epochs = default_epochs(summary['train']['images'], batch_size, quick)
        preset = QUICK if quick else DEFAULT
        epochs_note = (f"{'--quick: ' if quick else ''}{preset['epochs']} epochs, or enough for "
                       f"{preset['min_iters']} iterations")
    epochs_by_head = {h: (epochs_by_head or {}).get(h) or epochs for h in dc.HEADS}
    few = sorted({epochs_by_head[r['head']] * steps for r in runs
                  if epochs_by_head[r['head']] * steps < FEW_ITERS})
    if few:
        clock.log(f'note: {few[0]} training iterations per run ({steps} per epoch): from scratch '
                  'that is too few for a meaningful mAP (the speeds are fine); raise --epochs '
                  f"{'(--cascade-epochs) ' if 'cascade' in heads else ''}for more")
    if size is None:
        size = default_size(summary)
        if quick:
            size = min(size, QUICK['size'])
        size_note = 'from the images' + (' (--quick: at most 160)' if quick else '')
    else:
        size_note = '--size'
    heads_epochs = ', '.join(f'{dc.HEAD_NAMES[h]} {epochs_by_head[h]} epochs'
                             for h in dict.fromkeys(r['head'] for r in runs))
    heads_epochs += f' ({epochs_note}; {steps} iterations per epoch)'
    clock.log(f'{len(runs)} runs: {", ".join(r["name"] for r in runs)}; {heads_epochs}, '
              f'{size}x{size} ({size_note}), batch {batch_size}, {device}, {threads} threads')

    # every run's settings are checked before anything is trained
    for run in runs:
        run['dir'] = run_dir = osp.join(out_dir, run['name'])
        run['settings'] = settings = run_settings(run, summary, epochs_by_head[run['head']], size,
                                                  batch_size, seed)
        old = _read_json(osp.join(run_dir, RUN_INFO))
        run['state'] = state = run_state(run_dir)
        if old is not None and old.get('settings') != settings and state != 'new':
            raise ComparisonError(
                f"{run_dir} was made with other settings ({_diff(old['settings'], settings)}); "
                'use another --out, or delete that folder to train it again')

    num_workers = 0 if device == 'cpu' else min(4, os.cpu_count() or 1)
    run_dirs, failures, trained_here = [], [], []
    for i, run in enumerate(runs, 1):
        run_dir, settings = run['dir'], run['settings']
        run_dirs.append(run_dir)
        prefix = f"[{i}/{len(runs)}] {run['name']}"
        run_epochs = epochs_by_head[run['head']]
        info_path = osp.join(run_dir, RUN_INFO)
        if run['state'] == 'done':
            m = _read_json(osp.join(run_dir, TEST_METRICS)) or {}
            b = _read_json(osp.join(run_dir, BENCHMARK)) or {}
            clock.log(f"{prefix}: already done, skipped (VOC mAP50 {_num(m.get('pascal_voc/mAP'))}"
                      f", {b.get('fps', float('nan')):.1f} FPS)")
            continue
        os.makedirs(run_dir, exist_ok=True)
        if osp.isfile(osp.join(run_dir, 'error.log')):
            os.remove(osp.join(run_dir, 'error.log'))  # of an earlier failed attempt
        try:
            cfg = dc.build_config(run['head'], run['family'], run['arch'], summary, run_dir,
                                  run_epochs, size, batch_size, run['checkpoint'], num_workers,
                                  seed)
            config_path = osp.join(run_dir, run['name'] + '.py')
            cfg.dump(config_path)
            _atomic_json(dict(name=run['name'], head=run['head'],
                              head_name=dc.HEAD_NAMES[run['head']], family=run['family'],
                              arch=run['arch'], backbone=f"{run['family']}:{run['arch']}",
                              checkpoint=run['checkpoint'], config=config_path,
                              dataset=summary['root'], settings=settings), info_path)
            shape = test_input_shape(run['head'], size, summary['image_size'])
            later = [(r['head'], epochs_by_head[r['head']]) for r in runs[i:]
                     if r['state'] != 'done']
            _train_test_benchmark(cfg, run, run_dir, shape, device, threads, bench_iters,
                                  bench_warmup, clock, prefix, later)
            trained_here.append(run['name'])
        except (KeyboardInterrupt, SystemExit, ComparisonError, DatasetError, dc.ConfigError):
            raise
        except Exception as err:  # one broken run must not cost the others
            msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            with open(osp.join(run_dir, 'error.log'), 'w') as f:
                f.write(traceback.format_exc())
            failures.append(f"{run['name']}: {msg}")
            clock.log(f'{prefix}: FAILED: {msg} (traceback in {run_dir}/error.log); going on')
    report = osp.join(out_dir, 'report')
    names = [r['name'] for r in runs]
    result, paths = run_compare(run_dirs, report, names)
    setup = _setup(summary, runs, epochs_by_head, size, batch_size, device, threads, bench_iters)
    result['setup'] = setup
    with open(paths['compare.md'], 'a') as f:
        f.write('\n' + '\n'.join(setup['lines']) + '\n')
    _atomic_json(result, paths['compare.json'])
    with open(paths['compare.md']) as f:
        log(f.read().rstrip())
    clock.log(f"done: {paths['compare.md']}, map_vs_fps.png, macs_vs_latency.png "
              f'({len(trained_here)} trained now, {len(runs) - len(trained_here) - len(failures)}'
              f' reused, {len(failures)} failed)')
    out = dict(report=report, paths=paths, result=result, runs=runs, data=summary, size=size,
               failures=failures)
    if failures:
        raise RunFailures(f'{len(failures)} of {len(runs)} runs failed ({"; ".join(failures)}); '
                          f'the report in {report} has the others. Run the command again to retry '
                          'them (finished runs are kept)')
    return out
