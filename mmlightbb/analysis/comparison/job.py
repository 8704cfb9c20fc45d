"""The whole comparison: options checked, the data converted, every run planned, trained, tested
and timed (finished ones kept), then the report."""
import math
import os
import os.path as osp
import traceback
from typing import Callable, Dict, List, Optional, Sequence

from ...datasets.folder_layouts import DatasetError, format_summary, prepare_dataset
from .. import detector_configs as dc
from ..benchmark import BenchmarkSettings
from ..compare import BENCHMARK, run_compare
from .plan import (DEFAULT, FEW_ITERS, QUICK, RUN_INFO, TEST_METRICS, ComparisonError,
                   check_precision_and_backends, default_epochs, default_size, epochs_text,
                   plan_runs, read_json, run_settings, run_state, runtime_timed, saved_settings,
                   settings_diff, test_input_shape)
from .runs import (Clock, atomic_json, fmt_map, last_line, time_backends_of_finished_run,
                   train_test_benchmark)


class RunFailures(RuntimeError):
    """Some runs failed; the report was written with the others."""


def _setup(summary: dict, runs: List[dict], epochs_by_head: Dict[str, int], size: int,
           batch_size: int, device: str, threads: int, bench_iters: int, precision: str,
           precision_note: str, backends: Sequence[str]) -> dict:
    """The comparison's setup (data, split, schedules, precision, backends), for the report."""
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
        warmup = ('1 warm-up epoch, cosine' if dc.schedule_phases(epochs, head == 'yolox')[0]
                  else 'cosine, no warm-up')
        lines.append(
            f'* {dc.HEAD_NAMES[head]}: {epochs_text(epochs)}, batch {batch_size}, AdamW '
            f"lr {sch['lr']:g} (weight decay {sch['weight_decay']:g}), {warmup}; "
            f'{extra}; from scratch unless a checkpoint is named below')
    weights = [f"{r['name']}: {r['checkpoint']}" for r in runs if r['checkpoint']]
    lines.append(f"* images resized to fit {size}x{size}; backbone weights: "
                 f"{'; '.join(weights) if weights else 'none (all from scratch)'}")
    lines.append(f'* test: VOC mAP50 (area) and COCO mAP on the test split; FPS: the whole '
                 f'deployed detector (test_step), batch 1, {bench_iters} timed iterations, '
                 f'{device}, {threads} threads')
    lines.append(f'* precision of the test and of every benchmark: {precision_note}')
    runtimes = [b for b in backends if b != 'pytorch']
    if runtimes:
        lines.append(f"* {', '.join(runtimes)}: the deployed YOLOX detector exported with box "
                     'decoding and NMS (ONNX opset 17), timed in that runtime on the normalised '
                     'input (the preprocessor, in test_step, is not in the graph); its mAP is the '
                     "one tested in PyTorch (export_check in the run's benchmark file gives the "
                     'outputs\' difference)')
    return dict(lines=lines, data=summary, epochs=epochs_by_head, size=size,
                batch_size=batch_size, device=device, threads=threads, precision=precision,
                backends=list(backends))


# ----------------------------------------------------------------------------- the whole job
def compare_backbones(data: str, out_dir: str, heads: Sequence[str] = dc.HEADS,
                      backbones: Optional[Sequence[str]] = None, epochs: Optional[int] = None,
                      size: Optional[int] = None, batch_size: int = 8,
                      device: Optional[str] = None, threads: Optional[int] = None,
                      pretrained: Optional[Dict[str, str]] = None, split_seed: int = 0,
                      val_ratio: float = 0.2, classes: Optional[Sequence[str]] = None,
                      quick: bool = False, epochs_by_head: Optional[Dict[str, int]] = None,
                      bench_iters: int = 20, bench_warmup: int = 3, seed: int = 0,
                      precision: str = 'fp32', backends: Sequence[str] = ('pytorch', ),
                      log: Callable[[str], None] = print, tag: str = 'cmp') -> dict:
    """Train, test and benchmark every head x backbone on the dataset folder ``data``; write the
    report to ``out_dir/report``. Returns ``dict(report=dir, paths=..., result=compare result,
    runs=[...], data=dataset summary)``.

    ``epochs`` (default: :func:`.plan.default_epochs`) and ``size`` (default: from the images, see
    :func:`.plan.default_size`; ``quick``: at most 160) are the same for every run;
    ``epochs_by_head`` overrides the epochs of a head (e.g. a shorter Cascade schedule).
    ``backbones`` defaults to every mmlightbb family at its default arch plus each head's
    baseline (``quick``: the small archs and baselines, :data:`detector_configs.QUICK_BACKBONES`).
    ``precision`` ('fp32', 'bf16', 'fp16') is that of every test and benchmark; ``backends`` the
    runtimes the trained detector is timed in besides PyTorch (always timed), each into its own
    benchmark file (see the module doc).
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
    precision_plan = check_precision_and_backends(precision, backends, device)
    threads_before = torch.get_num_threads()
    threads = threads or threads_before
    torch.set_num_threads(threads)
    try:
        return _compare(data, out_dir, heads, backbones, epochs, size, batch_size, device, threads,
                        pretrained, split_seed, val_ratio, classes, quick, epochs_by_head,
                        bench_iters, bench_warmup, seed, precision_plan, log, tag)
    finally:
        torch.set_num_threads(threads_before)  # the caller's setting is left as it was


def _compare(data, out_dir, heads, backbones, epochs, size, batch_size, device, threads,
             pretrained, split_seed, val_ratio, classes, quick, epochs_by_head, bench_iters,
             bench_warmup, seed, precision_plan, log, tag) -> dict:
    backbones = list(backbones or (dc.QUICK_BACKBONES if quick else dc.DEFAULT_BACKBONES))
    runs = plan_runs(heads, backbones, quick, pretrained)
    clock = Clock(log, tag)
    precision, precision_note = precision_plan['precision'], precision_plan['note']
    backends = precision_plan['backends']
    if precision != precision_plan['requested']:  # bf16 without native support: fp32
        clock.log(f'warning: {precision_note}')

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
    for head in dict.fromkeys(r['head'] for r in runs):
        iters = epochs_by_head[head] * steps
        if iters < FEW_ITERS:
            flag = '--cascade-epochs' if head == 'cascade' and epochs_by_head[head] != epochs \
                else '--epochs'
            clock.log(f'note: {iters} training iterations per {dc.HEAD_NAMES[head]} run ({steps} '
                      'per epoch): from scratch that is too few for a meaningful mAP (the speeds '
                      f'are fine); raise {flag} for more')
    if size is None:
        size = default_size(summary)
        if quick:
            size = min(size, QUICK['size'])
        size_note = 'from the images' + (' (--quick: at most 160)' if quick else '')
    else:
        size_note = '--size'
    heads_epochs = ', '.join(f'{dc.HEAD_NAMES[h]} {epochs_text(epochs_by_head[h])}'
                             for h in dict.fromkeys(r['head'] for r in runs))
    heads_epochs += f' ({epochs_note}; {steps} iterations per epoch)'
    clock.log(f'{len(runs)} runs: {", ".join(r["name"] for r in runs)}; {heads_epochs}, '
              f'{size}x{size} ({size_note}), batch {batch_size}, {device}, {threads} threads, '
              f'test and benchmarks in {precision}, timed in {", ".join(backends)}')

    # every run's settings are checked before anything is trained
    for run in runs:
        run['dir'] = run_dir = osp.join(out_dir, run['name'])
        run['settings'] = settings = run_settings(run, summary, epochs_by_head[run['head']], size,
                                                  batch_size, seed, precision)
        old = read_json(osp.join(run_dir, RUN_INFO))
        run['state'] = state = run_state(run_dir)
        if old is not None and saved_settings(old) != settings and state != 'new':
            raise ComparisonError(
                f'{run_dir} was made with other settings '
                f'({settings_diff(saved_settings(old), settings)}); use another --out, or delete '
                'that folder to train it again')
        shape = test_input_shape(run['head'], size, summary['image_size'])
        run['benches'] = [
            BenchmarkSettings(shape=shape, deploy=True, warmup=bench_warmup, iters=bench_iters,
                              threads=threads, device=device, precision=precision,
                              backend=backend, progress=False) for backend in backends]

    num_workers = 0 if device == 'cpu' else min(4, os.cpu_count() or 1)
    run_dirs, failures, trained_here, added = [], [], [], []
    for i, run in enumerate(runs, 1):
        run_dir, settings = run['dir'], run['settings']
        run_dirs.append(run_dir)
        prefix = f"[{i}/{len(runs)}] {run['name']}"
        run_epochs = epochs_by_head[run['head']]
        info_path = osp.join(run_dir, RUN_INFO)
        if run['state'] == 'done':
            m = read_json(osp.join(run_dir, TEST_METRICS)) or {}
            b = read_json(osp.join(run_dir, BENCHMARK)) or {}
            # finished work is kept; only the backends not timed yet are added to it
            untimed = [bench for bench in run['benches'][1:]
                       if not runtime_timed(run_dir, bench.backend, bench.precision)]
            clock.log(f'{prefix}: already done, skipped (VOC mAP50 '
                      f"{fmt_map(m.get('pascal_voc/mAP'))}, {b.get('fps', float('nan')):.1f} FPS)"
                      + (
                          f"; timing it in {', '.join(bench.backend for bench in untimed)}"
                          if untimed else ''))
            if not untimed:
                continue
        os.makedirs(run_dir, exist_ok=True)
        if osp.isfile(osp.join(run_dir, 'error.log')):
            os.remove(osp.join(run_dir, 'error.log'))  # of an earlier failed attempt
        try:
            if run['state'] == 'done':
                time_backends_of_finished_run(run, run_dir, untimed, clock, prefix)
                added += [f"{run['name']} {bench.backend}" for bench in untimed]
                continue
            cfg = dc.build_config(run['head'], run['family'], run['arch'], summary, run_dir,
                                  run_epochs, size, batch_size, run['checkpoint'], num_workers,
                                  seed)
            config_path = osp.join(run_dir, run['name'] + '.py')
            cfg.dump(config_path)
            atomic_json(dict(name=run['name'], head=run['head'],
                             head_name=dc.HEAD_NAMES[run['head']], family=run['family'],
                             arch=run['arch'], backbone=f"{run['family']}:{run['arch']}",
                             checkpoint=run['checkpoint'], config=config_path,
                             dataset=summary['root'], settings=settings), info_path)
            later = [(r['head'], epochs_by_head[r['head']]) for r in runs[i:]
                     if r['state'] != 'done']
            train_test_benchmark(cfg, run, run_dir, run['benches'], precision, clock, prefix,
                                 later)
            trained_here.append(run['name'])
        except (KeyboardInterrupt, SystemExit, ComparisonError, DatasetError, dc.ConfigError):
            raise
        except Exception as err:  # one broken run must not cost the others
            msg = last_line(err)
            with open(osp.join(run_dir, 'error.log'), 'w') as f:
                f.write(traceback.format_exc())
            failures.append(f"{run['name']}: {msg}")
            clock.log(f'{prefix}: FAILED: {msg} (traceback in {run_dir}/error.log); going on')
    report = osp.join(out_dir, 'report')
    names = [r['name'] for r in runs]
    result, paths = run_compare(run_dirs, report, names)
    setup = _setup(summary, runs, epochs_by_head, size, batch_size, device, threads, bench_iters,
                   precision, precision_note, backends)
    result['setup'] = setup
    with open(paths['compare.md'], 'a') as f:
        f.write('\n' + '\n'.join(setup['lines']) + '\n')
    atomic_json(result, paths['compare.json'])
    with open(paths['compare.md']) as f:
        log(f.read().rstrip())
    clock.log(f"done: {paths['compare.md']}, map_vs_fps.png, macs_vs_latency.png "
              f'({len(trained_here)} trained now, {len(runs) - len(trained_here) - len(failures)}'
              f' reused, {len(failures)} failed'
              + (f"; backends added to finished runs: {', '.join(added)}" if added else '')
              + ')')
    out = dict(report=report, paths=paths, result=result, runs=runs, data=summary, size=size,
               failures=failures)
    if failures:
        raise RunFailures(f'{len(failures)} of {len(runs)} runs failed ({"; ".join(failures)}); '
                          f'the report in {report} has the others. Run the command again to retry '
                          'them (finished runs are kept)')
    return out
