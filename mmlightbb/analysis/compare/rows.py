"""Reading one run dir into report rows: its mAP (test results, else the last validation entry,
or what a runtime measured), its benchmark files, run.json and bootstrap intervals (the rules are
in the package doc)."""
import json
import os
import os.path as osp
from typing import List, Optional, Tuple

from ..uncertainty import BOOTSTRAP, latency_stats

METRIC_PREFERENCE = ('pascal_voc/mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP')
MISSING = 'missing'
BENCHMARK = 'benchmark.json'
OUTPUT_FILES = ('compare.md', 'compare.json', 'map_vs_fps.png', 'macs_vs_latency.png')


# --------------------------------------------------------------------------------- reading
def _timestamp_dirs(run_dir: str) -> List[str]:
    """mmengine's ``<timestamp>`` log dirs of a work dir, newest first (the names sort by time:
    ``%Y%m%d_%H%M%S``)."""
    return sorted((d for d in os.listdir(run_dir) if osp.isdir(osp.join(run_dir, d))),
                  reverse=True)


def _read_json(path: str, lines: bool = False):
    """The JSON object of ``path`` (a list of them, one per line, with ``lines``); a broken file
    is named in the error."""
    with open(path) as f:
        try:
            return ([json.loads(line) for line in f if line.strip()] if lines else json.load(f))
        except json.JSONDecodeError as err:
            raise ValueError(f'{path} is not valid JSON ({err})') from None


def find_metrics(run_dir: str, metric: Optional[str] = None) -> Tuple[Optional[dict], str]:
    """(metrics, where they came from) of a work dir: the newest test json, else the last val
    entry of the newest ``vis_data/scalars.json`` that has one; (None, reason) if neither."""
    stamps = _timestamp_dirs(run_dir)
    for stamp in stamps:
        test_json = osp.join(run_dir, stamp, f'{stamp}.json')
        if osp.isfile(test_json):
            return _read_json(test_json), osp.relpath(test_json, run_dir)
    wanted = (metric, ) if metric else METRIC_PREFERENCE
    for stamp in stamps:
        scalars = osp.join(run_dir, stamp, 'vis_data', 'scalars.json')
        if osp.isfile(scalars):
            vals = [e for e in _read_json(scalars, lines=True) if any(k in e for k in wanted)]
            if vals:
                return vals[-1], f'{osp.relpath(scalars, run_dir)} (last val entry)'
    return None, 'no test results (<timestamp>/<timestamp>.json) or val entry in vis_data'


def pick_metric(metrics: Optional[dict], metric: Optional[str] = None
                ) -> Tuple[Optional[str], Optional[float]]:
    """(name, value) of ``metric`` or of the first of METRIC_PREFERENCE present; else (None,
    None). A value that is not a number (e.g. -1 for "no GT", NaN) counts as missing."""
    if not metrics:
        return None, None
    for name in ((metric, ) if metric else METRIC_PREFERENCE):
        value = metrics.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return name, float(value)
    return None, None


def variant_file(name: str, backend: str, precision: str) -> str:
    """``name`` for PyTorch, ``<stem>-<backend>-<precision><ext>`` for a runtime: the files of a
    runtime row (its benchmark, and the test, detections and bootstrap measured in it)."""
    if backend == 'pytorch':
        return name
    stem, ext = osp.splitext(name)
    return f'{stem}-{backend}-{precision}{ext}'


def benchmark_file_name(backend: str, precision: str) -> str:
    """``benchmark.json`` for PyTorch, ``benchmark-<backend>-<precision>.json`` for a runtime."""
    return variant_file(BENCHMARK, backend, precision)


def find_benchmarks(run_dir: str) -> List[str]:
    """The benchmark files of a work dir: ``benchmark.json`` first, then the others by name."""
    others = sorted(f for f in os.listdir(run_dir)
                    if f.startswith('benchmark-') and f.endswith('.json'))
    return ([BENCHMARK] if osp.isfile(osp.join(run_dir, BENCHMARK)) else []) + others


def variant(row: dict) -> str:
    """' <backend> <precision>' of a row, each part only where it is not the default (PyTorch,
    fp32): a suffix for names, plot labels and fit lines."""
    parts = [row.get('backend') if row.get('backend') not in (None, 'pytorch') else None,
             row.get('precision') if row.get('precision') not in (None, 'fp32') else None]
    return ''.join(f' {p}' for p in parts if p)


def load_rows(run_dir: str, name: Optional[str] = None, metric: Optional[str] = None
              ) -> List[dict]:
    """The rows of one work dir, one per benchmark file (see the module doc): the run's name,
    mAP (or None) and that benchmark's numbers (or None)."""
    if not osp.isdir(run_dir):
        raise FileNotFoundError(f'run dir not found: {run_dir!r} (pass work dirs of '
                                'tools/train.py / tools/test.py)')
    metrics, source = find_metrics(run_dir, metric)
    metric_name, value = pick_metric(metrics, metric)
    wanted = [metric] if metric else list(METRIC_PREFERENCE)
    info_path = osp.join(run_dir, 'run.json')
    info = _read_json(info_path) if osp.isfile(info_path) else {}
    run_notes = []
    if value is None:
        run_notes.append('timed only (0 epochs): not trained or tested' if timed_only(info) else
                         f'no mAP: {source}' if metrics is None else
                         f'no mAP: {source} has none of {wanted}')
    # the settings of compare_backbones' run.json; version 1 (before --precision) tested in fp32
    tested = info['settings'].get('precision', 'fp32') if info.get('settings') else None
    coco, coco75 = (_number((metrics or {}).get(k)) for k in ('coco/bbox_mAP',
                                                              'coco/bbox_mAP_75'))
    boot = _bootstrap_of(run_dir, metric_name)
    files = find_benchmarks(run_dir)
    if not files:
        run_notes.append('no benchmark.json (run tools/benchmark.py CONFIG --out '
                         f'{osp.join(run_dir, BENCHMARK)})')
    rows = []
    for bench_file in files or [None]:
        bench = _read_json(osp.join(run_dir, bench_file)) if bench_file else None
        notes = list(run_notes)
        row = dict(name=name or osp.basename(osp.normpath(run_dir)), run_dir=run_dir,
                   head=info.get('head'), backbone=info.get('backbone'), coco_map=coco,
                   coco_map75=coco75,
                   metric=metric_name, map=value,
                   map_source=source if value is not None else None, benchmark=bench_file,
                   backend=None, precision=None, config=None, fps=None, latency_ms=None,
                   backbone_params=None, backbone_macs=None, deploy=None, input=None,
                   threads=None, device=None, cpu=None, torch=None, seed=info.get('seed'),
                   fps_iqr=None, fps_source=None, latency_samples=None, paired_timing=None,
                   map_pytorch=None, classes=(info.get('settings') or {}).get('classes'),
                   **boot)
        if bench is not None:
            s = bench['settings']
            # files from before backends and precisions: PyTorch, fp32
            row.update(backend=s.get('backend', 'pytorch'), precision=s.get('precision', 'fp32'))
            if 'note' in bench:  # an entry of a backend that could not be timed, and why
                notes.append(f"{row['backend']} {row['precision']} not timed: {bench['note']}")
            else:
                row.update(
                    config=s['config'], fps=bench['fps'],
                    latency_ms=bench['latency_ms']['median'],
                    backbone_params=bench['params']['backbone'],
                    backbone_macs=bench['macs']['backbone_per_image'], deploy=s['deploy'],
                    input=('real ' if s.get('real_images') else '') +
                    f"{s['input_hw'][0]}x{s['input_hw'][1]} b{s['batch_size']} {s['mode']}",
                    threads=s['threads'], device=s['device'], cpu=bench['hardware']['cpu'],
                    torch=bench['versions']['torch'], fps_source='own benchmark')
                samples = bench['latency_ms'].get('samples')
                if samples and len(samples) >= 3:  # files of tools/benchmark.py hold them
                    row.update(latency_samples=samples,
                               fps_iqr=latency_stats(samples)['fps']['iqr'])
            own = _runtime_test(run_dir, row['backend'], row['precision'], metric)
            if own is not None:  # tested in the runtime itself: its own mAP and interval
                own_name, own_value, own_metrics, own_file = own
                if value is not None and own_name == metric_name:
                    notes.append(f"mAP measured in {row['backend']} {row['precision']}: "
                                 f"{own_value:.4f}, {own_value - value:+.4f} vs PyTorch "
                                 f"{tested or 'fp32'}")
                row.update(map=own_value, metric=own_name, map_source=own_file,
                           coco_map=_number(own_metrics.get('coco/bbox_mAP')),
                           coco_map75=_number(own_metrics.get('coco/bbox_mAP_75')),
                           map_pytorch=value, **_bootstrap_of(
                               run_dir, own_name, variant_file(BOOTSTRAP, row['backend'],
                                                               row['precision'])))
            elif tested is not None and value is not None and row['precision'] != tested:
                row.update(map=None, metric=None, map_source=None, coco_map=None,
                           coco_map75=None,
                           **dict.fromkeys(boot))
                notes.append(f"no mAP in {row['precision']}: the run was tested in {tested}")
        plotted = row['map'] is not None and row['fps'] is not None
        if not plotted:
            notes.append('not in map_vs_fps.png')
        row.update(plotted=plotted, notes=notes)
        rows.append(row)
    return rows


def timed_only(info: dict) -> bool:
    """Whether a run.json (``info``) is that of a run of 0 epochs: its detector was timed, never
    trained or tested."""
    return (info.get('settings') or {}).get('epochs') == 0


def _number(value) -> Optional[float]:
    """A metric's value, None for what is not a number >= 0 (e.g. -1 for "no GT")."""
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None


def _runtime_test(run_dir: str, backend: Optional[str], precision: Optional[str],
                  metric: Optional[str]):
    """(metric name, value, metrics, file) of the test measured in a runtime
    (``test_metrics-<backend>-<precision>.json``), None for PyTorch rows and runtime rows
    without one."""
    if backend in (None, 'pytorch'):
        return None
    name = variant_file('test_metrics.json', backend, precision)
    metrics = _read_json(osp.join(run_dir, name)) if osp.isfile(osp.join(run_dir, name)) \
        else None
    metric_name, value = pick_metric(metrics, metric)
    return None if value is None else (metric_name, value, metrics, name)


def _bootstrap_of(run_dir: str, metric: Optional[str], name: str = BOOTSTRAP) -> dict:
    """The mAP intervals of a run's ``bootstrap.json`` (or the file ``name``;
    :mod:`.uncertainty`): of ``metric`` and of COCO mAP, and the resampled values behind them
    (for paired differences); None each without one."""
    path = osp.join(run_dir, name)
    boot = _read_json(path) if osp.isfile(path) else {}
    chosen, coco = boot.get(metric) if metric else None, boot.get('coco/bbox_mAP')
    return dict(map_interval=chosen and chosen['interval'],
                map_samples=chosen and chosen['samples'],
                coco_interval=coco and coco['interval'], coco_samples=coco and coco['samples'],
                images_key=boot.get('images_key'), class_ap50=boot.get('class_ap50'),
                best_f1=boot.get('best_f1'),
                bootstrap=dict(resamples=boot['resamples'], images=boot['images'],
                               level=boot['level']) if boot else None)
