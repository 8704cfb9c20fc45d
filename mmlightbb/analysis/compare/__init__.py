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
import json
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

from .markdown import format_markdown
from .plots import plot_macs_vs_latency, plot_map_vs_fps
from .result import (apply_timing, compare, fit_group, fit_through_origin, merge_seeds,
                     pareto_front)
from .rows import (BENCHMARK, METRIC_PREFERENCE, MISSING, OUTPUT_FILES, benchmark_file_name,
                   find_benchmarks, find_metrics, load_rows, pick_metric, timed_only, variant,
                   variant_file)

__all__ = ['METRIC_PREFERENCE', 'MISSING', 'BENCHMARK', 'OUTPUT_FILES', 'find_metrics',
           'pick_metric', 'variant_file', 'benchmark_file_name', 'find_benchmarks', 'variant',
           'load_rows', 'timed_only', 'pareto_front', 'fit_through_origin', 'merge_seeds',
           'apply_timing', 'compare', 'fit_group', 'format_markdown', 'write_outputs',
           'run_compare']


def write_outputs(result: dict, out_dir: str) -> Dict[str, str]:
    """Write compare.md, compare.json and the two PNGs; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: osp.join(out_dir, name) for name in OUTPUT_FILES}
    with open(paths['compare.md'], 'w') as f:
        f.write(format_markdown(result))
    with open(paths['compare.json'], 'w') as f:
        json.dump(result, f, indent=2)
    plot_map_vs_fps(paths['map_vs_fps.png'], [r for r in result['rows'] if r['plotted']])
    plot_macs_vs_latency(paths['macs_vs_latency.png'],
                         [r for r in result['rows'] if r['backbone_macs'] is not None],
                         result['fit']['per_group'])
    return paths


def run_compare(run_dirs: Sequence[str], out_dir: str, names: Optional[Sequence[str]] = None,
                metric: Optional[str] = None, timing: Optional[dict] = None,
                head_names: Optional[Dict[str, str]] = None) -> Tuple[dict, Dict[str, str]]:
    """:func:`compare` the runs and :func:`write_outputs` to ``out_dir``."""
    result = compare(run_dirs, names, metric, timing, head_names)
    return result, write_outputs(result, out_dir)
