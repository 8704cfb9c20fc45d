"""compare.md: the table, "Detection quality and size", "How sure" and "Timing"."""
import os.path as osp
from typing import List

from ..uncertainty import LEARNED_FLOOR
from .result import fit_group
from .rows import MISSING, variant

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
            f"| {r['name']}", (r['backend'] or '-') + (  # an INT8 row beside the fp32 one
                f" {r['precision']}" if r.get('precision') not in (None, 'fp32') else ''),
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
