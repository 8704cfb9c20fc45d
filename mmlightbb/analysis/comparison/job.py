"""The whole comparison: options checked, the data converted, every run planned, trained, tested
and timed (finished ones kept), then the report."""
import dataclasses
import math
import os
import os.path as osp
import traceback
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ...datasets.folder_layouts import DatasetError, format_summary, prepare_dataset
from ...engine import last_complete_checkpoint
from .. import detector_configs as dc
from ..benchmark import BenchmarkSettings
from ..benchmark.timing import SETTLE_MS
from ..compare import BENCHMARK, run_compare
from ..quantize import QuantizationSettings, link_annotated_images
from .plan import (DEFAULT, FEW_ITERS, QUICK, RUN_INFO, TEST_METRICS, ComparisonError,
                   check_precision_and_backends, default_epochs, default_size, epochs_text,
                   plan_runs, read_json, run_settings, run_state, runtime_timed, saved_settings,
                   seed_dir_name, settings_diff, test_input_shape)
from .runs import (Clock, atomic_json, fmt_map, last_line, time_backends_of_finished_run,
                   time_untrained, train_test_benchmark)
from .launchers import make_launcher
from .settings import ComparisonSettings
from .testset import bootstrap_is_current, write_bootstrap
from .timing import TIMING, entry_key, time_side_by_side


INT8_CALIBRATION = 'int8_calibration'  # OUT/<it>: links to the training images (--int8)


class RunFailures(RuntimeError):
    """Some runs failed; the report was written with the others."""


def _setup(summary: dict, runs: List[dict], epochs_by_head: Dict[str, int], size: int,
           s: ComparisonSettings, threads: int, precision: str, precision_note: str,
           backends: Sequence[str]) -> dict:
    """The comparison's setup (data, split, schedules, seeds, precision, backends), for the
    report."""
    heads = list(dict.fromkeys(r['head'] for r in runs))
    lines = ['## Setup', '']
    lines += [f'* {line}' for line in format_summary(summary)]
    for head in heads:
        sch = dc.SCHEDULES[head]
        extra = ('the last quarter without Mosaic/MixUp, EMA' if head == 'yolox' else
                 'gradient clipping 10, {rcnn_rois} RoIs/image/stage, {rpn_train_proposals}/'
                 '{rpn_test_proposals} RPN proposals (train/test), RoIAlign sampling_ratio '
                 '{sampling_ratio}'.format(**dc.CASCADE_SMALL))
        epochs = epochs_by_head[head]
        if epochs == 0:
            lines.append(f'* {dc.HEAD_NAMES[head]}: {epochs_text(0)}: each detector built with '
                         'its initial weights and timed; its speed is that of the trained one '
                         '(the same operators and shapes; only the boxes kept after NMS can '
                         'differ)')
            continue
        warmup = ('1 warm-up epoch, cosine' if dc.schedule_phases(epochs, head == 'yolox')[0]
                  else 'cosine, no warm-up')
        lines.append(
            f'* {dc.HEAD_NAMES[head]}: {epochs_text(epochs)}, batch {s.batch_size}, AdamW '
            f"lr {sch['lr']:g} (weight decay {sch['weight_decay']:g}), {warmup}; "
            f'{extra}; from scratch unless a checkpoint is named below')
    weights = [f"{r['name']}: {r['checkpoint']}" for r in runs if r['checkpoint']]
    lines.append(f"* images resized to fit {size}x{size}; backbone weights: "
                 f"{'; '.join(weights) if weights else 'none (all from scratch)'}")
    seeds = s.seed_list
    lines.append(f"* training seeds: {', '.join(map(str, seeds))} (every run trained "
                 f"{len(seeds)} time{'s' if len(seeds) > 1 else ''}; --seeds)")
    lines.append(f'* test: VOC mAP50 (area) and COCO mAP on the test split; 95 % intervals: '
                 f'{s.bootstrap} bootstrap resamples of the test images (the same draws for '
                 'every run); FPS: the whole deployed detector (test_step), batch 1, '
                 f'{s.device}, {threads} threads, every run side by side after all training '
                 f'({s.bench_iters} rounds; see Timing)')
    lines.append(f'* precision of the test and of every benchmark: {precision_note}')
    runtimes = [b for b in backends if b != 'pytorch']
    if runtimes:
        lines.append(f"* {', '.join(runtimes)}: the deployed YOLOX detector exported with box "
                     'decoding and NMS (ONNX opset 17), timed in that runtime on the normalised '
                     'input (the preprocessor, in test_step, is not in the graph); its mAP is '
                     'tested in that runtime (mmdet\'s test loop on its detections; the '
                     'difference to PyTorch is in the notes)')
    if s.int8:
        lines.append(f"* int8 rows: each runtime's exported graph quantized to INT8 (OpenVINO: "
                     'NNCF, MIXED preset; ONNX Runtime: quantize_static, QDQ, per-channel '
                     'weights; box decoding and NMS stay float), calibrated on up to '
                     f'{QuantizationSettings.calib_images} training images through the test '
                     'pipeline, timed and tested in that runtime like the other rows')
    return dict(lines=lines, data=summary, epochs=epochs_by_head, size=size,
                batch_size=s.batch_size, device=s.device, threads=threads, precision=precision,
                backends=list(backends), int8=s.int8, seeds=list(seeds),
                bootstrap=s.bootstrap)


# ----------------------------------------------------------------------------- the whole job
def compare_backbones(data: str, out_dir: str, settings: Optional[ComparisonSettings] = None,
                      *, log: Callable[[str], None] = print, tag: str = 'cmp',
                      **overrides) -> dict:
    """Train, test and benchmark every head x backbone (x seed) on the dataset folder ``data``;
    time the runs side by side; write the report to ``out_dir/report``. Returns
    ``dict(report=dir, paths=..., result=compare result, runs=[...], data=dataset summary)``.

    ``settings`` (or keyword ``overrides`` of its fields, e.g. ``heads=['yolox'], seeds=2``) is a
    :class:`.settings.ComparisonSettings`: epochs, size, seeds, precision, backends, ... (see
    there and the package doc).
    """
    if settings is None:
        settings = ComparisonSettings(**overrides)
    elif overrides:
        settings = dataclasses.replace(settings, **overrides)
    precision_plan = check_precision_and_backends(settings.precision, settings.backends,
                                                  settings.device)
    threads_before = torch.get_num_threads()
    threads = settings.threads or threads_before
    torch.set_num_threads(threads)
    try:
        return _compare(data, out_dir, settings, threads, precision_plan, log, tag)
    finally:
        torch.set_num_threads(threads_before)  # the caller's setting is left as it was


def _compare(data: str, out_dir: str, s: ComparisonSettings, threads: int, precision_plan: dict,
             log, tag) -> dict:
    backbones = list(s.backbones or (dc.QUICK_BACKBONES if s.quick else dc.DEFAULT_BACKBONES))
    runs = plan_runs(s.heads, backbones, s.quick, s.pretrained)
    clock = Clock(log, tag)
    precision, precision_note = precision_plan['precision'], precision_plan['note']
    backends = precision_plan['backends']
    if precision != precision_plan['requested']:  # bf16 without native support: fp32
        clock.log(f'warning: {precision_note}')

    out_dir = osp.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    summary = prepare_dataset(data, osp.join(out_dir, 'data'), classes=s.classes,
                              val_ratio=s.val_ratio, split_seed=s.split_seed,
                              min_test_images=s.batch_size)
    for line in format_summary(summary):
        clock.log(line)
    steps = math.ceil(summary['train']['images'] / s.batch_size)
    epochs, epochs_note = s.epochs, '--epochs'
    if not epochs:
        epochs = default_epochs(summary['train']['images'], s.batch_size, s.quick)
        preset = QUICK if s.quick else DEFAULT
        epochs_note = (f"{'--quick: ' if s.quick else ''}{preset['epochs']} epochs, or enough "
                       f"for {preset['min_iters']} iterations")
    given = s.epochs_by_head or {}
    epochs_by_head = {h: epochs if given.get(h) is None else given[h] for h in dc.HEADS}
    for head in dict.fromkeys(r['head'] for r in runs):
        iters = epochs_by_head[head] * steps
        if iters == 0:
            clock.log(f'note: the {dc.HEAD_NAMES[head]} runs are timed only: each detector is '
                      'built with its initial weights and timed, not trained or tested')
        elif iters < FEW_ITERS:
            flag = '--cascade-epochs' if head == 'cascade' and epochs_by_head[head] != epochs \
                else '--epochs'
            clock.log(f'note: {iters} training iterations per {dc.HEAD_NAMES[head]} run ({steps} '
                      'per epoch): from scratch that is too few for a meaningful mAP (the speeds '
                      f'are fine); raise {flag} for more')
    size = s.size
    if size is None:
        size = default_size(summary)
        if s.quick:
            size = min(size, QUICK['size'])
        size_note = 'from the images' + (' (--quick: at most 160)' if s.quick else '')
    else:
        size_note = '--size'
    heads_epochs = ', '.join(f'{dc.HEAD_NAMES[h]} {epochs_text(epochs_by_head[h])}'
                             for h in dict.fromkeys(r['head'] for r in runs))
    heads_epochs += f' ({epochs_note}; {steps} iterations per epoch)'
    seeds = s.seed_list
    clock.log(f'{len(runs)} runs: {", ".join(r["name"] for r in runs)}; {heads_epochs}, '
              f'{size}x{size} ({size_note}), batch {s.batch_size}, {s.device}, {threads} '
              f'threads, test and benchmarks in {precision}, timed in {", ".join(backends)}'
              + (f" (and {', '.join(s.runtimes)} int8)" if s.int8 else '')
              + (f"; seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else ''))

    quantization = None
    if s.int8:  # the training split only: calibration never sees the test images
        quantization = QuantizationSettings(link_annotated_images(
            summary['train']['file'], summary['root'], osp.join(out_dir, INT8_CALIBRATION)))
        clock.log(f"int8: each runtime's graph quantized on up to {quantization.calib_images} "
                  f'of the {summary["train"]["images"]} training images '
                  f'({osp.join(out_dir, INT8_CALIBRATION)})')

    # every run's settings are checked before anything is trained; the first seed of every run
    # trains first, so that a stopped comparison is a whole one with fewer seeds
    jobs = []
    for seed in seeds:
        for run in runs:
            job = dict(run, seed=seed, first=seed == seeds[0],
                       timed_only=epochs_by_head[run['head']] == 0,
                       dir=osp.join(out_dir, seed_dir_name(run['name'], seed)))
            job['settings'] = settings = run_settings(
                job, summary, epochs_by_head[run['head']], size, s.batch_size, seed, precision)
            old = read_json(osp.join(job['dir'], RUN_INFO))
            job['state'] = state = run_state(job['dir'])
            if old is not None and saved_settings(old) != settings and state != 'new':
                raise ComparisonError(
                    f"{job['dir']} was made with other settings "
                    f'({settings_diff(saved_settings(old), settings)}); use another --out, or '
                    'delete that folder to train it again')
            shape = test_input_shape(run['head'], size, summary['image_size'])
            # the first seed is timed in every backend; the others' PyTorch benchmark records
            # what was timed and marks them finished
            bench = BenchmarkSettings(shape=shape, deploy=True, warmup=s.bench_warmup,
                                      iters=s.bench_iters, threads=threads, device=s.device,
                                      precision=precision, progress=False)
            job['benches'] = [dataclasses.replace(bench, backend=backend)
                              for backend in (backends if job['first'] else ['pytorch'])]
            if job['first'] and quantization is not None:
                job['benches'] += [dataclasses.replace(bench, backend=backend, precision='int8',
                                                       quantization=quantization)
                                   for backend in s.runtimes]
            jobs.append(job)

    num_workers = 0 if s.device == 'cpu' else min(4, os.cpu_count() or 1)
    failures, trained_here, added, elsewhere = [], [], [], []
    for i, job in enumerate(jobs, 1):
        run_dir, settings = job['dir'], job['settings']
        job['prefix'] = prefix = f"[{i}/{len(jobs)}] {job['name']}" + (
            f" seed {job['seed']}" if len(seeds) > 1 else '')
        info_path = osp.join(run_dir, RUN_INFO)
        untimed = []
        if job['state'] == 'done':
            m = read_json(osp.join(run_dir, TEST_METRICS)) or {}
            b = read_json(osp.join(run_dir, BENCHMARK)) or {}
            # finished work is kept; only the backends not timed yet are added to it
            untimed = [bench for bench in job['benches'][1:]
                       if not runtime_timed(run_dir, bench.backend, bench.precision)]
            what = ('timed only' if job['timed_only'] else
                    f"VOC mAP50 {fmt_map(m.get('pascal_voc/mAP'))}")
            clock.log(f'{prefix}: already done, skipped ({what}, '
                      f"{b.get('fps', float('nan')):.1f} FPS)"
                      + (f"; timing it in {', '.join(_side(bench) for bench in untimed)}"
                         if untimed else ''))
            if not untimed:
                continue
        elif job['state'] == 'tested':  # trained and tested elsewhere, timed here
            untimed = job['benches']
        os.makedirs(run_dir, exist_ok=True)
        if osp.isfile(osp.join(run_dir, 'error.log')):
            os.remove(osp.join(run_dir, 'error.log'))  # of an earlier failed attempt
        try:
            if untimed:
                time_backends_of_finished_run(job, run_dir, untimed, clock, prefix)
                added += [f"{job['name']} {_side(bench)}" for bench in untimed
                          if job['state'] == 'done']
                continue
            cfg = dc.build_config(job['head'], job['family'], job['arch'], summary, run_dir,
                                  epochs_by_head[job['head']], size, s.batch_size,
                                  job['checkpoint'], num_workers, job['seed'])
            config_path = osp.join(run_dir, job['name'] + '.py')
            cfg.dump(config_path)
            atomic_json(dict(name=job['name'], head=job['head'],
                             head_name=dc.HEAD_NAMES[job['head']], family=job['family'],
                             arch=job['arch'], backbone=f"{job['family']}:{job['arch']}",
                             seed=job['seed'], checkpoint=job['checkpoint'], config=config_path,
                             dataset=summary['root'], settings=settings), info_path)
            if job['timed_only']:  # nothing to train: timed here, wherever the others train
                time_untrained(job, run_dir, job['benches'], clock, prefix)
                trained_here.append(job)
                continue
            if not s.in_process:  # trained by the launcher below, all together
                elsewhere.append(job)
                continue
            later = [(j['head'], epochs_by_head[j['head']]) for j in jobs[i:]
                     if j['state'] != 'done']
            train_test_benchmark(cfg, job, run_dir, job['benches'], precision, clock, prefix,
                                 later, len(summary['classes']))
            trained_here.append(job)
        except (KeyboardInterrupt, SystemExit, ComparisonError, DatasetError, dc.ConfigError):
            raise
        except Exception as err:  # one broken run must not cost the others
            _fail(job, err, failures, clock)

    if elsewhere:
        launcher = make_launcher(s)
        clock.log(f'training {len(elsewhere)} runs {_where(s)}')
        failures += launcher.train(elsewhere, clock.log)
        waiting = [j for j in elsewhere if j.get('slurm_state')]
        if waiting:
            clock.log(f"{len(waiting)} runs submitted to Slurm "
                      f"({', '.join(j['name'] + ' ' + j['slurm_state'] for j in waiting)}); run "
                      'the same command again to follow them and, once every run has finished, '
                      'time them and write the report')
            return dict(report=None, runs=jobs, data=summary, size=size, failures=failures,
                        submitted=[j['name'] for j in waiting])
        for job in elsewhere:  # every run timed here, after all training (see timing below)
            if job.get('failed'):
                continue
            if run_state(job['dir']) != 'tested':  # the worker ended without an error line
                _fail(job, RuntimeError(f"no {TEST_METRICS} after training; see "
                                        f"{job['dir']}"), failures, clock)
                continue
            try:
                time_backends_of_finished_run(job, job['dir'], job['benches'], clock,
                                              job['prefix'])
                trained_here.append(job)
            except Exception as err:
                _fail(job, err, failures, clock)

    _bootstrap(jobs, s.bootstrap, summary, clock)
    changed = any(j['first'] for j in trained_here) or bool(added)  # a new seed: same timing
    timing = _time_side_by_side(jobs, s, threads, out_dir, changed, clock)
    report = osp.join(out_dir, 'report')
    result, paths = run_compare([j['dir'] for j in jobs], report, [j['name'] for j in jobs],
                                timing=timing, head_names=dc.HEAD_NAMES)
    setup = _setup(summary, runs, epochs_by_head, size, s, threads, precision, precision_note,
                   backends)
    result['setup'] = setup
    with open(paths['compare.md'], 'a') as f:
        f.write('\n' + '\n'.join(setup['lines']) + '\n')
    atomic_json(result, paths['compare.json'])
    with open(paths['compare.md']) as f:
        log(f.read().rstrip())
    timed_only = sum(j['timed_only'] for j in trained_here)
    trained = len(trained_here) - timed_only
    clock.log(f"done: {paths['compare.md']}, map_vs_fps.png, macs_vs_latency.png "
              f'({trained} trained now, ' + (f'{timed_only} timed only, ' if timed_only else '')
              + f'{len(jobs) - len(trained_here) - len(failures)} reused, {len(failures)} failed'
              + (f"; backends added to finished runs: {', '.join(added)}" if added else '')
              + ')')
    out = dict(report=report, paths=paths, result=result, runs=jobs, data=summary, size=size,
               failures=failures, timing=timing)
    if failures:
        raise RunFailures(f'{len(failures)} of {len(jobs)} runs failed ({"; ".join(failures)}); '
                          f'the report in {report} has the others. Run the command again to retry '
                          'them (finished runs are kept)')
    return out


def _side(bench) -> str:
    return bench.backend if bench.backend == 'pytorch' else f'{bench.backend} {bench.precision}'


def _fail(job: dict, err: BaseException, failures: List[str], clock: Clock):
    """Record a run that failed here: its traceback in ``error.log``, one line in the log."""
    msg = last_line(err)
    with open(osp.join(job['dir'], 'error.log'), 'w') as f:
        f.write(''.join(traceback.format_exception(err)))
    failures.append(f"{job['name']}: {msg}")
    job['failed'] = True
    clock.log(f"{job['prefix']}: FAILED: {msg} (traceback in {job['dir']}/error.log); going on")


def _where(s: ComparisonSettings) -> str:
    per_run = (f', {s.gpus_per_run} {"GPUs" if s.device == "cuda" else "processes"} each'
               if s.gpus_per_run > 1 else '')
    if s.launcher == 'slurm':
        return (f"as Slurm jobs (partition {s.partition or 'default'}{per_run}); timing and "
                'report here')
    return f'on this machine, {s.parallel} at a time{per_run}'


def _bootstrap(jobs: List[dict], resamples: int, summary: dict, clock: Clock):
    """Every finished run's bootstrap.json (and that of each runtime it was tested in) drawn
    ``resamples`` times from its saved detections (nothing is tested again); a run finished
    before detections were saved is named once."""
    old = []
    for job in jobs:
        if job.get('failed') or job['timed_only'] or run_state(job['dir']) != 'done':
            continue
        for bench in job['benches']:  # PyTorch's test, then those measured in a runtime
            pytorch = bench.backend == 'pytorch'
            variant = ('pytorch', 'fp32') if pytorch else (bench.backend, bench.precision)
            if bootstrap_is_current(job['dir'], resamples, *variant):
                continue
            try:
                if write_bootstrap(job['dir'], resamples, summary['test']['file'],
                                   summary['classes'], *variant) is None and pytorch:
                    old.append(osp.basename(job['dir']))
            except Exception as err:  # the report goes on without this run's intervals
                clock.log(f"{osp.basename(job['dir'])}: bootstrap FAILED: {last_line(err)}")
    if old:
        clock.log(f"note: no per-image detections in {', '.join(old)} (tested before they were "
                  'saved), so no mAP interval; delete their test_metrics.json to test them again '
                  'from their last checkpoint')


def _time_side_by_side(jobs: List[dict], s: ComparisonSettings, threads: int, out_dir: str,
                       changed: bool, clock: Clock) -> Optional[dict]:
    """The side-by-side timing of every finished run's first seed (:mod:`.timing`): read from
    ``OUT/timing.json`` when it holds exactly these runs and backends and nothing was trained or
    timed now (and not ``--retime``), else measured again for all of them together."""
    path = osp.join(out_dir, TIMING)
    timed = []
    for job in jobs:
        if job['first'] and not job.get('failed') and run_state(job['dir']) == 'done':
            checkpoint = last_complete_checkpoint(job['dir'])
            if checkpoint is not None:
                timed.append(dict(name=job['name'], benches=job['benches'], checkpoint=checkpoint,
                                  config=osp.join(job['dir'], job['name'] + '.py')))
    if not timed:
        return None
    wanted = {entry_key(r['name'], b.backend, b.precision) for r in timed for b in r['benches']}
    old = read_json(path)
    # a timing.json without settle_ms timed each call right after another runtime's: measured again
    if old and not s.retime and not changed and set(old.get('entries', {})) == wanted and \
            old.get('rounds') == s.bench_iters and old.get('threads') == threads and \
            old.get('settle_ms') == SETTLE_MS:
        clock.log(f"timing: {TIMING} of {old['started']} holds every run; --retime to time "
                  'them again')
        return old
    try:
        timing = time_side_by_side(timed, s.bench_iters, s.bench_warmup, threads, s.device,
                                   clock.log)
    except Exception as err:  # the per-run benchmarks still give each run's FPS
        clock.log(f'timing side by side FAILED: {last_line(err)}; the report uses each run\'s '
                  'own benchmark')
        return None
    atomic_json(timing, path)
    for key, entry in timing['entries'].items():
        clock.log(f"timing: {key}: {entry['fps']['median']:.1f} FPS (IQR "
                  f"{entry['fps']['iqr'][0]:.1f}-{entry['fps']['iqr'][1]:.1f})" if 'fps' in entry
                  else f"timing: {key}: not timed: {entry['note']}")
    return timing
