"""Accuracy vs speed of several runs: a Markdown table, mAP-vs-FPS and MACs-vs-latency plots.

    python tools/compare.py RUN_DIR [RUN_DIR ...] --out OUT_DIR [--metric pascal_voc/mAP]
        [--names NAME ...]

A RUN_DIR is a work dir (``work_dirs/<config>/``) holding:

* the mAP: the newest test results of ``tools/test.py``. mmengine's ``LoggerHook.after_test_epoch``
  dumps the test metrics as one JSON object to ``<work_dir>/<timestamp>/<timestamp>.json``
  (``runner.log_dir`` + ``<timestamp>.json``); the newest timestamp wins. Without one, the last
  validation entry of ``<timestamp>/vis_data/scalars.json`` (one JSON object per line, written
  during training) of the newest run that has one.
* the speed: ``benchmark.json``, the schema-1 JSON of ``tools/benchmark.py --out``, and any
  ``benchmark-<backend>-<precision>.json`` beside it (``tools/compare_backbones.py --backends``
  writes one per runtime; an entry with a ``note`` instead of numbers says why that backend was
  not timed). One row per benchmark file, with its ``backend`` and ``precision`` (what ran) as
  columns; a work dir without any has one row with the numbers missing.
* optionally ``run.json`` (written by ``tools/compare_backbones.py``): the run's ``head`` and
  ``backbone`` (``family:arch``), shown as their own columns ("-" when a work dir has none), and
  the precision it was tested in (``settings.precision``; absent: fp32). A row of another
  precision shows no mAP (it was not tested in that precision); without run.json the mAP is
  shown on every row.

Besides the chosen mAP the table shows COCO mAP@[.5:.95] (``coco/bbox_mAP``) when the run has it.

How sure (:mod:`.uncertainty`): a work dir's ``bootstrap.json`` (written by
``tools/compare_backbones.py`` from the run's per-image detections) gives the 95 % interval of its
mAP and COCO mAP, each class's AP50 and the precision/recall at the best-F1 threshold; work dirs
given the same name are the seeds of one run and become one row (mean, standard deviation, every
seed's value; :func:`merge_seeds`); a side-by-side timing (``timing``, from
:mod:`.comparison.timing`) replaces the FPS of the rows it timed (median and inter-quartile range
over its rounds) and adds the whole detector's params and GFLOPs. A run whose mAP interval reaches
0 "did not learn": it is never on the Pareto front. compare.md opens with the verdict sentence
(:func:`.uncertainty.verdict`: FPS neighbours within each head, what holds beyond the noise) and
has the sections "Detection quality and size", "How sure" and "Timing".

Metric: ``--metric`` if given, else the first of :data:`METRIC_PREFERENCE` that the run has; the
table names the metric of every row. A run without a metric or a benchmark shows "missing" (never
0) and is left out of the plots, with a note. The Pareto front of mAP vs FPS is the set of rows
that learned and that no other such row beats in one and at least matches in the other (higher is
better for both; identical points are all on it), so of one run's backends only the fastest can
be on it. The
MACs-vs-latency plot fits ``latency = k x MACs`` by least squares through the origin, one line
per head, backend and precision (runs of different heads do not share one: the head's own cost
is not in the backbone's MACs; nor do runtimes or precisions, whose cost per MAC differs): the
runs far from their line are those whose latency MACs do not explain (memory-bound depthwise or
large-kernel convs, NMS, Python overhead). When a run has several timed rows the report names
its fastest (the best deployable FPS of that backbone).

Writes ``compare.md``, ``compare.json``, ``map_vs_fps.png`` and ``macs_vs_latency.png`` to
OUT_DIR.
"""
import datetime
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .uncertainty import (BOOTSTRAP, LEARNED_FLOOR, did_not_learn, interval, latency_stats,
                          seed_stats, verdict)

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


# ------------------------------------------------------------------------------- analysis
def pareto_front(points: Sequence[Optional[Tuple[float, float]]]) -> List[bool]:
    """Which (x, y) points no other point dominates (>= in both and > in one; higher is better
    for both). Identical points do not dominate each other; None (missing) is never on it."""
    front = []
    for p in points:
        if p is None:
            front.append(False)
            continue
        front.append(not any(q is not None and q[0] >= p[0] and q[1] >= p[1] and q != p
                             for q in points))
    return front


def fit_through_origin(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Least-squares k of y = k x (None without a non-zero x)."""
    sxx = sum(x * x for x in xs)
    return sum(x * y for x, y in zip(xs, ys)) / sxx if sxx > 0 else None


def merge_seeds(rows: List[dict]) -> List[dict]:
    """One row per run name, backend and precision: the rows of a run's seeds (work dirs given
    the same name whose run.json names their seed) become one, in the place of the first, with
    the mean mAP, its standard deviation and every seed's value, the bootstrap of the seed-mean
    (the seeds' resampled values averaged draw by draw, when they were drawn from the same
    images), and the first seed's
    timing."""
    groups: Dict[tuple, List[dict]] = {}
    for k, row in enumerate(rows):  # only runs of tools/compare_backbones.py know their seed
        key = (row['name'], row['backend'], row['precision']) if row['seed'] is not None else k
        groups.setdefault(key, []).append(row)
    merged = []
    for group in groups.values():
        row = dict(group[0], run_dirs=[r['run_dir'] for r in group],
                   seeds=[r['seed'] for r in group])
        for key, samples_key, interval_key in (('map', 'map_samples', 'map_interval'),
                                               ('coco_map', 'coco_samples', 'coco_interval')):
            values = [r[key] for r in group]
            if any(v is None for v in values):
                row.update({key: None, f'{key}_seeds': None, f'{key}_std': None})
                continue
            stats = seed_stats(values)
            row.update({key: stats['mean'], f'{key}_seeds': stats['values'],
                        f'{key}_std': stats['std'] if len(values) > 1 else None})
            samples = [r[samples_key] for r in group]
            if len(group) > 1:
                same = len({r['images_key'] for r in group}) == 1
                mean = (np.mean(samples, axis=0).tolist()
                        if same and all(x is not None for x in samples) else None)
                row.update({samples_key: mean,
                            interval_key: interval(mean) if mean is not None else None})
        merged.append(row)
    return merged


def apply_timing(rows: List[dict], timing: Optional[dict]) -> None:
    """The FPS of the side-by-side timing (:mod:`.comparison.timing`) on the rows it timed, and
    the whole detector's parameters and GFLOPs it counted, in place; the others keep their own
    benchmark's FPS."""
    for row in rows:
        size = (timing or {}).get('complexity', {}).get(row['name'], {})
        row.update(detector_params=size.get('params'), detector_gflops=size.get('gflops'))
        entry = (timing or {}).get('entries', {}).get(
            f"{row['name']} {row['backend']} {row['precision']}")
        if entry and 'fps' in entry:
            row.update(fps=entry['fps']['median'], fps_iqr=entry['fps']['iqr'],
                       latency_ms=entry['latency_ms']['median'],
                       latency_samples=entry['samples_ms'], paired_timing=timing['started'],
                       fps_source='side by side')


def compare(run_dirs: Sequence[str], names: Optional[Sequence[str]] = None,
            metric: Optional[str] = None, timing: Optional[dict] = None,
            head_names: Optional[Dict[str, str]] = None) -> dict:
    """The rows of every run (in the given order; one per benchmark file; the seeds of a run,
    work dirs of the same name, merged: :func:`merge_seeds`) with the FPS of ``timing`` where it
    has them, the did-not-learn and Pareto flags, the verdict (:func:`.uncertainty.verdict`),
    the MACs-latency fit and each run's fastest row."""
    if not run_dirs:
        raise ValueError('no run dirs given')
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f'--names gives {len(names)} names for {len(run_dirs)} run dirs')
    rows = merge_seeds([row for d, n in zip(run_dirs, names or [None] * len(run_dirs))
                        for row in load_rows(d, n, metric)])
    apply_timing(rows, timing)
    for row in rows:
        row['did_not_learn'] = did_not_learn(row)
        row['label'] = row.get('backbone') or row['name']
    flags = pareto_front([(r['fps'], r['map']) if r['plotted'] and not r['did_not_learn']
                          else None for r in rows])
    for row, flag in zip(rows, flags):
        row['pareto'] = flag if row['plotted'] else None
    judged = verdict([r for r in rows if r['backend'] in (None, 'pytorch')], head_names)
    for row in rows:  # the resampled values are behind the verdict, not in compare.json
        for key in ('map_samples', 'coco_samples', 'latency_samples'):
            row.pop(key, None)
    # One line per head, backend and precision: a detector head's own cost (Cascade R-CNN's RoI
    # head) is not in the backbone's MACs, and a runtime or precision changes the cost per MAC.
    per_group = {}
    for group in dict.fromkeys(fit_group(r) for r in rows):
        timed = [r for r in rows if fit_group(r) == group and r['backbone_macs'] is not None]
        k = fit_through_origin([r['backbone_macs'] / 1e9 for r in timed],
                               [r['latency_ms'] for r in timed])
        if timed:
            per_group[group] = k
        for row in rows:
            if fit_group(row) == group:
                row['latency_vs_fit'] = (row['latency_ms'] / (k * row['backbone_macs'] / 1e9)
                                         if row in timed and k and row['backbone_macs'] > 0
                                         else None)
    fastest = {}  # run name -> its row with the most FPS
    for row in rows:
        if row['fps'] is not None and row['fps'] > fastest.get(row['name'], {}).get('fps', -1):
            fastest[row['name']] = dict(backend=row['backend'], precision=row['precision'],
                                        fps=row['fps'])
    single = list(per_group.values())[0] if len(per_group) == 1 else None
    return dict(date=datetime.datetime.now().isoformat(timespec='seconds'),
                metric_preference=[metric] if metric else list(METRIC_PREFERENCE),
                machines=sorted({r['cpu'] for r in rows if r['cpu']}),
                torch=sorted({r['torch'] for r in rows if r['torch']}),
                fit=dict(model='latency_ms = k x backbone GMACs (least squares through 0), one k '
                         'per head, backend and precision', ms_per_gmac=single,
                         per_group=per_group),
                fastest=fastest, verdict=judged, timing=_timing_summary(timing), rows=rows)


def _timing_summary(timing: Optional[dict]) -> Optional[dict]:
    """When, where and how the side-by-side timing ran (its rounds' values stay in
    timing.json)."""
    if not timing:
        return None
    return {k: v for k, v in timing.items() if k != 'entries'}


def fit_group(row: dict) -> str:
    """The MACs-vs-latency line a row belongs to: its head ('all' without one) and variant."""
    return (row.get('head') or 'all') + variant(row)


# -------------------------------------------------------------------------------- writing
def _cell(value, fmt: str = '{}') -> str:
    return MISSING if value is None else fmt.format(value)


def format_markdown(result: dict) -> str:
    """The table (one row per run and benchmark) with a header of date, machine(s) and torch
    version(s)."""
    lines = ['# Accuracy vs speed', '', f"**Verdict:** {result['verdict']['sentence']}", '',
             f"* date: {result['date']}",
             f"* machine: {', '.join(result['machines']) or MISSING}",
             f"* torch: {', '.join(result['torch']) or MISSING}",
             '* FPS and latency: tools/benchmark.py (`benchmark.json`, '
             '`benchmark-<backend>-<precision>.json`); mAP: the newest test results of '
             'tools/test.py, else the last val entry', '',
             '| name | head | backbone | config | mAP (metric) | COCO mAP | FPS | '
             'latency median ms | backbone params M | backbone MACs G | deploy | input | threads '
             '| device | backend | precision | Pareto |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in result['rows']:
        map_cell = MISSING if r['map'] is None else f"{r['map']:.4f} ({r['metric']})"
        deploy = None if r['deploy'] is None else ('yes' if r['deploy'] else 'no')
        pareto = ('-' if r['pareto'] is None else 'did not learn' if r['did_not_learn'] else
                  'yes' if r['pareto'] else 'no')
        lines.append(' | '.join([
            f"| {r['name']}", r.get('head') or '-', r.get('backbone') or '-',
            _cell(r['config'] and osp.basename(r['config'])), map_cell,
            '-' if r.get('coco_map') is None else f"{r['coco_map']:.4f}",
            _cell(r['fps'], '{:.2f}'), _cell(r['latency_ms'], '{:.2f}'),
            _cell(r['backbone_params'] and r['backbone_params'] / 1e6, '{:.2f}'),
            _cell(r['backbone_macs'] and r['backbone_macs'] / 1e9, '{:.2f}'), _cell(deploy),
            _cell(r['input']), _cell(r['threads']), _cell(r['device']), r['backend'] or '-',
            r['precision'] or '-', pareto]) + ' |')
    lines += _quality_lines(result) + _uncertainty_lines(result)
    notes = [f"* {r['name']}{variant(r)}: {'; '.join(r['notes'])}" for r in result['rows']
             if r['notes']]
    if notes:
        lines += ['', 'Notes:', ''] + notes
    timed = [r['name'] for r in result['rows'] if r['fps'] is not None]
    if len(timed) > len(set(timed)):  # a run timed with several backends: name its fastest
        lines += ['', 'Fastest timed deployment per run: ' + ', '.join(
            f"{name} {f['backend']} {f['precision']} {f['fps']:.2f} FPS"
            for name, f in result['fastest'].items())]
    for group, k in result['fit']['per_group'].items():
        if k is None:
            continue
        rows = [r for r in result['rows'] if fit_group(r) == group
                and r['latency_vs_fit'] is not None]
        what = '' if group == 'all' else f' ({group} runs)'
        lines += ['', f'MACs vs latency{what}: least-squares line through 0, {k:.3f} ms per '
                  'backbone GMAC; latency / line per run: ' + ', '.join(
                      f"{r['name']} {r['latency_vs_fit']:.2f}x" for r in rows)]
    return '\n'.join(lines) + '\n'


def _interval_cell(ci, fmt: str = '{:.3f}') -> str:
    return '-' if ci is None else f'[{fmt.format(ci[0])}, {fmt.format(ci[1])}]'


def _quality_lines(result: dict) -> List[str]:
    """What detection papers report, one row per run: mAP50, mAP50:95, mAP75, precision and
    recall at the best-F1 score threshold, each class's AP50, and the whole detector's size."""
    rows = [r for r in result['rows'] if r['backend'] in (None, 'pytorch')]
    if not any(r.get('best_f1') or r.get('detector_params') for r in rows):
        return []
    lines = ['', '## Detection quality and size', '',
             '| name | mAP50 | mAP50:95 | mAP75 | precision | recall | score threshold | '
             'AP50 per class | detector params M | detector GFLOPs | FPS |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        f1 = r.get('best_f1') or {}
        aps = r.get('class_ap50') or []
        names = r.get('classes') or [str(i) for i in range(len(aps))]
        lines.append(' | '.join([
            f"| {r['name']}", _cell(r['map'], '{:.3f}'), _cell(r.get('coco_map'), '{:.3f}'),
            _cell(r.get('coco_map75'), '{:.3f}'), _cell(f1.get('precision'), '{:.3f}'),
            _cell(f1.get('recall'), '{:.3f}'), _cell(f1.get('score_threshold'), '{:.3f}'),
            ', '.join(f"{n} {'-' if a is None else f'{a:.3f}'}" for n, a in zip(names, aps))
            or MISSING, _cell(r.get('detector_params') and r['detector_params'] / 1e6, '{:.2f}'),
            _cell(r.get('detector_gflops'), '{:.2f}'), _cell(r['fps'], '{:.1f}')]) + ' |')
    lines += ['', 'mAP50: the table\'s metric (VOC mAP50 where a run has it); mAP50:95 and '
              'mAP75: COCO (pycocotools); precision and recall: all classes, IoU 0.5, keeping '
              'the detections scored at least the threshold of the best F1; with several seeds '
              'the per-class AP50 and the operating point are the first seed\'s. Detector '
              'params and GFLOPs: the whole deployed detector (backbone, neck, head(s); not the '
              'post-processing) at the test size, 1 multiply-add = 2 FLOPs. FPS: batch 1, the '
              'precision of the Setup, PyTorch rows include preprocessing, box decoding and NMS '
              '(see Timing).']
    return lines


def _uncertainty_lines(result: dict) -> List[str]:
    """The noise of every number (seeds, bootstrap, timing rounds), the verdict on each pair of
    neighbours, and when and where the timing ran."""
    lines = ['', '## How sure', '',
             '| name | backend | seeds | mAP mean ± std | mAP per seed | mAP 95 % interval | '
             'COCO mAP | COCO 95 % interval | FPS median | FPS IQR | FPS from | learned |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in result['rows']:
        seeds = r.get('seeds') or [r.get('seed')]
        per_seed = r.get('map_seeds') or []
        lines.append(' | '.join([
            f"| {r['name']}", r['backend'] or '-',
            ', '.join('-' if x is None else str(x) for x in seeds),
            MISSING if r['map'] is None else f"{r['map']:.3f}" + (
                '' if r.get('map_std') is None else f" ± {r['map_std']:.3f}"),
            ', '.join(f'{v:.3f}' for v in per_seed) if len(per_seed) > 1 else '-',
            _interval_cell(r.get('map_interval')),
            '-' if r.get('coco_map') is None else f"{r['coco_map']:.3f}",
            _interval_cell(r.get('coco_interval')), _cell(r['fps'], '{:.1f}'),
            _interval_cell(r.get('fps_iqr'), '{:.1f}'), r.get('fps_source') or '-',
            '-' if r['map'] is None else ('no' if r['did_not_learn'] else 'yes')]) + ' |')
    boot = next((r['bootstrap'] for r in result['rows'] if r.get('bootstrap')), None)
    lines += ['', 'mAP intervals: ' + (
        f"percentile bootstrap, {boot['resamples']} resamples of the {boot['images']} test "
        'images (the same draws for every run), of the seed-mean where a run has several seeds; '
        'they hold the test-set noise, the seeds\' spread the training noise.' if boot else
        'none (no bootstrap.json: runs tested before per-image detections were saved).'
        if any(r['map'] is not None for r in result['rows']) else 'none (no run was tested).'),
        f'A run whose interval reaches 0, or whose mAP is under {LEARNED_FLOOR:g}, did not learn '
        '(a speed-only row): it is not on the Pareto front and not compared.']
    pairs = result['verdict']['pairs']
    if pairs:
        lines += ['', '### Neighbours by FPS within each head', '',
                  '| head | faster | slower | FPS ratio | 95 % interval | mAP difference | '
                  '95 % interval | p (seeds) | verdict |', '|---|---|---|---|---|---|---|---|---|']
        for p in pairs:
            lines.append(' | '.join([
                f"| {p['head'] or '-'}", p['fast'], p['slow'], f"{p['fps']['ratio']:.2f}x",
                _interval_cell(p['fps']['interval'], '{:.2f}'), f"{p['map']['diff']:+.3f}",
                _interval_cell(p['map']['interval'], '{:+.3f}'),
                '-' if p['map']['p_seeds'] is None else f"{p['map']['p_seeds']:.3f}",
                p['statement'] or 'tie (within noise)']) + ' |')
        lines += ['', 'FPS ratio: median over timing rounds of the per-round latency ratio '
                  '(paired when timed side by side); it holds when its 95 % bootstrap interval '
                  'excludes 1. mAP difference: of the (seed-mean) mAPs; it holds when its paired '
                  '95 % bootstrap interval excludes 0 and, with several seeds, Welch\'s t-test on '
                  'the seeds gives p < 0.05.']
    timing = result.get('timing')
    lines += ['', '## Timing', '']
    if timing:
        lines += [f"Side by side, {timing['started']} to {timing['finished']} on {timing['host']}"
                  f" ({timing['cpu']}, {timing['device']}, {timing['threads']} threads): "
                  f"{timing['rounds']} rounds after {timing['warmup']} warm-up, {timing['how']}. "
                  'FPS is the median over rounds, IQR its inter-quartile range.']
    else:
        lines += ["Each run's own benchmark at the end of its training (not side by side: load "
                  'on the machine then may differ between runs).']
    return lines


def _panels(rows: List[dict]) -> List[List[dict]]:
    """The rows of one panel each: one per head when the heads' FPS differ by 10x or more (one
    scale would squeeze the slow head against the axis), else all in one."""
    heads = list(dict.fromkeys(r.get('head') for r in rows))
    if len(heads) > 1:
        medians = [float(np.median([r['fps'] for r in rows if r.get('head') == h]))
                   for h in heads]
        if max(medians) >= 10 * min(medians):
            return [[r for r in rows if r.get('head') == h] for h in heads]
    return [rows]


def _plot_map_vs_fps(path: str, rows: List[dict]):
    """mAP vs FPS: a marker per row with its 95 % mAP interval (else the seeds' standard
    deviation) and FPS inter-quartile range as error bars, named in the legend (no labels to
    overlap); the runs that did not learn hollow and grey; the Pareto front of the others."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = _panels(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), dpi=100,
                             squeeze=False)
    colors = plt.get_cmap('tab10').colors
    markers = {'yolox': 'o', 'cascade': 's'}
    metrics = sorted({r['metric'] for r in rows})
    for ax, panel in zip(axes[0], panels):
        heads = {r.get('head') for r in panel}
        for k, r in enumerate(panel):
            x, y = r['fps'], r['map']
            ci, std, iqr = r.get('map_interval'), r.get('map_std'), r.get('fps_iqr')
            yerr = ([[max(y - ci[0], 0)], [max(ci[1] - y, 0)]] if ci else
                    [[std], [std]] if std else None)
            xerr = [[max(x - iqr[0], 0)], [max(iqr[1] - x, 0)]] if iqr else None
            label = (r['label'] + variant(r) + (f" ({r['head']})" if len(heads) > 1 else '')
                     + (' - did not learn' if r['did_not_learn'] else ''))
            color = 'tab:gray' if r['did_not_learn'] else colors[k % len(colors)]
            ax.errorbar([x], [y], yerr=yerr, xerr=xerr, fmt=markers.get(r.get('head'), 'D'),
                        color=color, ecolor=color, elinewidth=1, capsize=3, zorder=3,
                        markerfacecolor='none' if r['did_not_learn'] else color, label=label)
        front = sorted((r['fps'], r['map']) for r in panel if r['pareto'])
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], color='tab:red', alpha=0.5,
                    linestyle='--', zorder=2, label='Pareto front (runs that learned)')
        if not panel:
            ax.text(0.5, 0.5, 'no run has both numbers', ha='center', va='center',
                    transform=ax.transAxes)
        title = 'mAP vs FPS' + ('' if len(panels) == 1 else f" ({panel[0].get('head')})")
        ax.set(title=title, xlabel='FPS (median over timing rounds; bars: IQR)',
               ylabel=f"mAP ({', '.join(metrics) or 'none'}; bars: 95 % interval)")
        ax.grid(True, alpha=0.3)
        if panel:
            ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, bbox_inches='tight')
    plt.close(fig)


def _plot(path: str, title: str, xlabel: str, ylabel: str, rows: List[dict], xkey, ykey,
          group, line_k=None):
    """Scatter ``rows`` in one colour per ``group(row)`` (a legend when there are several), each
    point labelled with its backbone (or name) and variant; ``line_k``: {group: slope} lines
    through the origin in their group's colour."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    xs, ys = [xkey(r) for r in rows], [ykey(r) for r in rows]
    groups = list(dict.fromkeys(group(r) for r in rows))
    heads = {r.get('head') for r in rows}
    colors = ['tab:blue', 'tab:green', 'tab:orange', 'tab:purple', 'tab:brown']
    for k, name in enumerate(groups):
        pts = [(x, y) for r, x, y in zip(rows, xs, ys) if group(r) == name]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colors[k % len(colors)],
                   zorder=3, label=name if name and len(groups) > 1 else None)
    if len(groups) > 1:
        ax.legend()
    for name, line in (line_k or {}).items():
        if line is None or not xs:
            continue
        top = max(xs) * 1.1
        color = (colors[groups.index(name) % len(colors)] if name in groups and len(groups) > 1
                 else 'tab:gray')
        ax.plot([0, top], [0, line * top], color=color, linestyle='--',
                label=f"{'' if name == 'all' else name + ': '}{line:.3f} ms / GMAC "
                '(fit through 0)')
        ax.legend()
    if not rows:
        ax.text(0.5, 0.5, 'no run has both numbers', ha='center', va='center',
                transform=ax.transAxes)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    labels = [((r.get('backbone') if r.get('head') and len(heads) > 1 else r['name'])
               or r['name']) + variant(r) for r in rows]
    _label_points(ax, xs, ys, labels)
    fig.savefig(path)
    plt.close(fig)


def _label_points(ax, xs, ys, labels, fontsize: int = 8):
    """Label each point beside it, moving a label up or down by whole lines until it overlaps
    no label placed before (points from left to right), so that close points stay readable."""
    ax.figure.canvas.draw()  # the final limits: display coordinates are valid from here
    line = fontsize * 1.4 * ax.figure.dpi / 72
    placed = []  # (x0, y0, x1, y1) in display pixels
    for i in sorted(range(len(xs)), key=lambda k: (xs[k], ys[k])):
        px, py = ax.transData.transform((xs[i], ys[i]))
        width = 0.6 * fontsize * len(labels[i]) * ax.figure.dpi / 72
        for step in [0] + [d * k for k in range(1, 12) for d in (1, -1)]:
            box = (px + 5, py + 5 + step * line, px + 5 + width, py + 5 + (step + 1) * line)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                break
        placed.append(box)
        ax.annotate(labels[i], (xs[i], ys[i]), textcoords='offset pixels',
                    xytext=(box[0] - px, box[1] - py), fontsize=fontsize,
                    arrowprops=dict(arrowstyle='-', color='0.6', lw=0.5) if step else None)


def write_outputs(result: dict, out_dir: str) -> Dict[str, str]:
    """Write compare.md, compare.json and the two PNGs; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: osp.join(out_dir, name) for name in OUTPUT_FILES}
    with open(paths['compare.md'], 'w') as f:
        f.write(format_markdown(result))
    with open(paths['compare.json'], 'w') as f:
        json.dump(result, f, indent=2)
    _plot_map_vs_fps(paths['map_vs_fps.png'], [r for r in result['rows'] if r['plotted']])
    timed = [r for r in result['rows'] if r['backbone_macs'] is not None]
    _plot(paths['macs_vs_latency.png'], 'Backbone MACs vs latency', 'backbone GMACs / image',
          'median latency (ms / batch)', timed, lambda r: r['backbone_macs'] / 1e9,
          lambda r: r['latency_ms'], group=fit_group, line_k=result['fit']['per_group'])
    return paths


def run_compare(run_dirs: Sequence[str], out_dir: str, names: Optional[Sequence[str]] = None,
                metric: Optional[str] = None, timing: Optional[dict] = None,
                head_names: Optional[Dict[str, str]] = None) -> Tuple[dict, Dict[str, str]]:
    """:func:`compare` the runs and :func:`write_outputs` to ``out_dir``."""
    result = compare(run_dirs, names, metric, timing, head_names)
    return result, write_outputs(result, out_dir)

