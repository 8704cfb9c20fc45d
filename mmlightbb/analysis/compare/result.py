"""All runs together: seeds merged, the side-by-side timing applied, did-not-learn and Pareto
flags, the verdict and the MACs-latency fit (:func:`compare`)."""
import datetime
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..uncertainty import did_not_learn, interval, seed_stats, verdict
from .rows import METRIC_PREFERENCE, load_rows, variant

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
