"""tools/compare.py and mmlightbb.analysis.compare: where mAP and speed come from (mmengine's own
file formats), the Pareto front, "missing" values, the table and the plots."""
import json
import os
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import pytest

from mmlightbb.analysis import compare as cmp

from helpers import REPO, main_table


@pytest.mark.parametrize('points,front', [
    ([(1, 1), (2, 2), (3, 1)], [False, True, True]),
    ([(1, 5), (2, 4), (3, 3), (2, 2)], [True, True, True, False]),
    ([(2, 2), (2, 2), (1, 1)], [True, True, False]),  # identical points: both on the front
    ([(2, 2), (2, 3)], [False, True]),  # same FPS, higher mAP dominates
    ([(2, 3), (3, 3)], [False, True]),  # same mAP, higher FPS dominates
    ([None, (1, 1), None], [False, True, False]),  # missing is never on it
])
def test_pareto_front(points, front):
    assert cmp.pareto_front(points) == front


def test_fit_through_origin():
    assert cmp.fit_through_origin([1, 2, 3], [2, 4, 6]) == pytest.approx(2)
    assert cmp.fit_through_origin([], []) is None


def _bench(run_dir, fps, macs_g, cpu='Test CPU @ 1GHz', config='configs/yolox_fasternet.py',
           backend=None, precision=None):
    """The parts of a tools/benchmark.py --out JSON (schema 1) that compare.py reads; without
    ``backend``/``precision`` as written before they existed, to ``benchmark.json``, else to
    the file tools/compare_backbones.py names for them."""
    res = dict(schema_version=1,
               settings=dict(config=config, mode='test_step', input_hw=[640, 640], batch_size=1,
                             threads=2, device='cpu', deploy=True, real_images=False),
               latency_ms=dict(median=1000.0 / fps), fps=fps,
               params=dict(model=5e6, backbone=3e6),
               macs=dict(backbone_per_image=macs_g * 1e9), versions=dict(torch='2.13.0+cpu'),
               hardware=dict(cpu=cpu, gpu=None))
    if backend is not None:
        res['settings'].update(backend=backend, precision=precision)
    name = cmp.benchmark_file_name(backend or 'pytorch', precision or 'fp32')
    (run_dir / name).write_text(json.dumps(res, indent=2))


def _test_json(run_dir, stamp, metrics):
    """What LoggerHook.after_test_epoch writes: <work_dir>/<stamp>/<stamp>.json, one object
    (metrics, then data_time and time), mmengine.fileio.dump's json.dump without indent."""
    tag = OrderedDict(metrics)
    tag.update(data_time=0.0123, time=0.4567)
    os.makedirs(run_dir / stamp, exist_ok=True)
    (run_dir / stamp / f'{stamp}.json').write_text(json.dumps(tag))


def _scalars_json(run_dir, stamp, val_maps):
    """What LocalVisBackend.add_scalars appends during training: one object per line in
    <stamp>/vis_data/scalars.json -- train logs per interval, val metrics per val epoch."""
    os.makedirs(run_dir / stamp / 'vis_data', exist_ok=True)
    lines = []
    for epoch, value in enumerate(val_maps, 1):
        lines.append(dict(lr=0.001, data_time=0.01, loss=1.5, loss_cls=0.7, time=0.5,
                          epoch=epoch, iter=epoch * 10, memory=0, step=epoch * 10))
        lines.append({'pascal_voc/mAP': value, 'pascal_voc/AP50': value, 'coco/bbox_mAP': 0.1,
                      'coco/bbox_mAP_50': 0.2, 'data_time': 0.01, 'time': 0.2, 'step': epoch})
    with open(run_dir / stamp / 'vis_data' / 'scalars.json', 'w') as f:
        for line in lines:
            f.write(json.dumps(line) + '\n')


@pytest.fixture
def runs(tmp_path):
    fast, slow, nomap, nobench = (tmp_path / n for n in ('fast', 'slow', 'nomap', 'nobench'))
    for d in (fast, slow, nomap, nobench):
        d.mkdir()
    # fast: a training run's val entries, then two test runs; the newest test wins
    _scalars_json(fast, '20260101_100000', [0.30, 0.40])
    _test_json(fast, '20260102_090000', {'pascal_voc/mAP': 0.10, 'coco/bbox_mAP': 0.05})
    _test_json(fast, '20260102_120000', {'pascal_voc/mAP': 0.45, 'pascal_voc/AP50': 0.45,
                                         'coco/bbox_mAP': 0.2, 'coco/bbox_mAP_50': 0.4})
    _bench(fast, fps=20.0, macs_g=3.0)
    (fast / 'run.json').write_text(json.dumps(dict(head='yolox', backbone='fasternet:t0')))
    # slow: only val entries of training (no test run yet): the last one
    _scalars_json(slow, '20260101_100000', [0.50, 0.60])
    _bench(slow, fps=5.0, macs_g=10.0)
    # nomap: a benchmark, no results at all; nobench: a COCO-only test run, no benchmark
    _bench(nomap, fps=30.0, macs_g=2.0)
    _test_json(nobench, '20260103_080000', {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50': 0.5})
    return [str(d) for d in (fast, slow, nomap, nobench)]


def test_metrics_come_from_the_newest_test_json_else_the_last_val_entry(runs):
    fast, slow, nomap, nobench = (cmp.load_rows(d)[0] for d in runs)
    assert (fast['metric'], fast['map']) == ('pascal_voc/mAP', 0.45)
    assert fast['map_source'] == osp.join('20260102_120000', '20260102_120000.json')
    assert (slow['metric'], slow['map']) == ('pascal_voc/mAP', 0.60)
    assert 'scalars.json (last val entry)' in slow['map_source']
    assert (nobench['metric'], nobench['map']) == ('coco/bbox_mAP_50', 0.5)
    assert nomap['map'] is None and nomap['metric'] is None
    assert cmp.load_rows(runs[0], metric='coco/bbox_mAP')[0]['map'] == 0.2


def test_table_plots_and_json(runs, tmp_path):
    out = tmp_path / 'out'
    result, paths = cmp.run_compare(runs, str(out), names=['Fast', 'Slow', 'NoMap', 'NoBench'])
    for name in cmp.OUTPUT_FILES:
        assert osp.getsize(paths[name]) > 0, name
    for png in ('map_vs_fps.png', 'macs_vs_latency.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    md = (out / 'compare.md').read_text()
    rows = main_table(md)
    assert len(rows) == 1 + 4  # header + one per run
    cells = {r.split(' | ')[0][2:]: [c.strip() for c in r.strip('| ').split(' | ')]
             for r in rows[1:]}
    # name | head | backbone | config | mAP (metric) | COCO mAP | FPS | latency | ... | backend |
    # precision | Pareto
    assert cells['Fast'][1:3] == ['yolox', 'fasternet:t0']  # from run.json
    assert cells['Slow'][1:3] == ['-', '-']  # a work dir without run.json
    assert cells['Fast'][4] == '0.4500 (pascal_voc/mAP)' and cells['Fast'][-1] == 'yes'
    assert cells['Fast'][5] == '0.2000'  # COCO mAP of the same test json
    assert cells['Slow'][-1] == 'yes'  # more mAP, fewer FPS: also on the front
    assert cells['NoMap'][4] == 'missing' and cells['NoMap'][6] == '30.00'
    assert cells['NoMap'][5] == '-'
    assert cells['NoMap'][-1] == '-'  # not plotted, so no Pareto verdict
    assert cells['NoBench'][4] == '0.5000 (coco/bbox_mAP_50)'
    assert cells['NoBench'][6:8] == ['missing', 'missing'] and cells['NoBench'][-1] == '-'
    assert cells['Fast'][-3:-1] == ['pytorch', 'fp32']  # a file without them: PyTorch, fp32
    assert cells['NoBench'][-3:-1] == ['-', '-']  # no benchmark at all
    assert '0.0000' not in md and '| 0.00 |' not in md  # missing is never shown as 0
    assert 'machine: Test CPU @ 1GHz' in md and 'torch: 2.13.0+cpu' in md
    assert 'NoMap: no mAP' in md and 'NoBench: no benchmark.json' in md
    assert md.count('not in map_vs_fps.png') == 2
    saved = json.loads((out / 'compare.json').read_text())
    by_name = {r['name']: r for r in saved['rows']}
    assert by_name['NoMap']['map'] is None and by_name['NoMap']['plotted'] is False
    assert (by_name['Fast']['head'], by_name['Fast']['coco_map']) == ('yolox', 0.2)
    assert [r['name'] for r in saved['rows'] if r['plotted']] == ['Fast', 'Slow']
    # latency = k x GMACs through the origin, one line per head: Fast is a yolox run (run.json),
    # Slow and NoMap have no head ('all')
    lat = {'Fast': 50.0, 'Slow': 200.0, 'NoMap': 1000 / 30}
    macs = {'Fast': 3.0, 'Slow': 10.0, 'NoMap': 2.0}
    k = sum(lat[n] * macs[n] for n in ('Slow', 'NoMap')) / (10.0**2 + 2.0**2)
    assert saved['fit']['per_group'] == {'yolox': pytest.approx(50 / 3), 'all': pytest.approx(k)}
    assert saved['fit']['ms_per_gmac'] is None  # two lines, no single one
    assert by_name['Fast']['latency_vs_fit'] == pytest.approx(1.0)
    assert 'MACs vs latency (yolox runs): least-squares line through 0, 16.667 ms' in md
    one_head = cmp.compare(runs[1:3])
    assert one_head['fit']['ms_per_gmac'] == pytest.approx(k)


def test_a_dominated_run_is_not_on_the_front(runs, tmp_path):
    _bench(tmp_path / 'slow', fps=25.0, macs_g=10.0)  # now faster than fast and more mAP
    worse = tmp_path / 'worse'
    worse.mkdir()
    _test_json(worse, '20260104_000000', {'pascal_voc/mAP': 0.3})
    _bench(worse, fps=10.0, macs_g=1.0)
    result = cmp.compare(runs[:2] + [str(worse)])
    assert [r['pareto'] for r in result['rows']] == [False, True, False]


def test_bad_run_dir_and_names_are_clear_errors(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="run dir not found: '.*nope'"):
        cmp.compare([runs[0], str(tmp_path / 'nope')])
    with pytest.raises(ValueError, match='--names gives 1 names for 2 run dirs'):
        cmp.compare(runs[:2], names=['a'])
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools/compare.py'), runs[0],
                           str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'PYTHONPATH': REPO})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: run dir not found: '")
    assert not (tmp_path / 'o').exists()


def _rows_by_name_and_backend(md: str) -> dict:
    rows = main_table(md)
    header = [c.strip() for c in rows[0].strip('| ').split(' | ')]
    cells = [dict(zip(header, (c.strip() for c in r.strip('| ').split(' | ')))) for r in rows[1:]]
    return {(c['name'], c['backend']): c for c in cells}


def test_one_row_per_backend_and_precision_with_the_mAP_tested_in_it(tmp_path):
    """A bf16 run timed in PyTorch and OpenVINO (bf16) and, by hand, ONNX Runtime (fp32); a run
    of settings version 1 (no precision: fp32) whose ONNX Runtime entry is a note."""
    bf16, old = tmp_path / 'yolox_fasternet_t0', tmp_path / 'cascade_resnet_50'
    for d in (bf16, old):
        d.mkdir()
    (bf16 / 'run.json').write_text(json.dumps(dict(
        head='yolox', backbone='fasternet:t0', settings=dict(version=1, precision='bf16'))))
    _test_json(bf16, '20260102_120000', {'pascal_voc/mAP': 0.4})
    _bench(bf16, fps=20.0, macs_g=3.0, backend='pytorch', precision='bf16')
    _bench(bf16, fps=50.0, macs_g=3.0, backend='openvino', precision='bf16')
    _bench(bf16, fps=40.0, macs_g=3.0, backend='onnxruntime', precision='fp32')
    (old / 'run.json').write_text(json.dumps(dict(head='cascade', backbone='resnet:50',
                                                  settings=dict(version=1))))
    _test_json(old, '20260102_120000', {'pascal_voc/mAP': 0.5})
    _bench(old, fps=5.0, macs_g=10.0)
    note = ('--with-nms exports YOLOX detectors (so do the runtime benchmarks of a whole '
            'detector); CascadeRCNN with CascadeRoIHead is not exported yet: export or time its '
            'backbone alone (--backbone-only)')
    (old / cmp.benchmark_file_name('onnxruntime', 'fp32')).write_text(json.dumps(dict(
        schema_version=1, settings=dict(backend='onnxruntime', precision='fp32'), note=note)))

    out = tmp_path / 'report'
    result, paths = cmp.run_compare([str(bf16), str(old)], str(out))
    assert [(r['name'], r['backend'], r['precision']) for r in result['rows']] == [
        ('yolox_fasternet_t0', 'pytorch', 'bf16'), ('yolox_fasternet_t0', 'onnxruntime', 'fp32'),
        ('yolox_fasternet_t0', 'openvino', 'bf16'), ('cascade_resnet_50', 'pytorch', 'fp32'),
        ('cascade_resnet_50', 'onnxruntime', 'fp32')]
    md = (out / 'compare.md').read_text()
    rows = _rows_by_name_and_backend(md)
    pt, ort, ov = (rows['yolox_fasternet_t0', b] for b in ('pytorch', 'onnxruntime', 'openvino'))
    assert (pt['precision'], pt['mAP (metric)'], pt['FPS'], pt['Pareto']) == (
        'bf16', '0.4000 (pascal_voc/mAP)', '20.00', 'no')  # OpenVINO: same mAP, more FPS
    assert (ov['precision'], ov['mAP (metric)'], ov['FPS'], ov['Pareto']) == (
        'bf16', '0.4000 (pascal_voc/mAP)', '50.00', 'yes')
    # tested in bf16 only: the fp32 row has no mAP of its own, so no point in the plot
    assert (ort['mAP (metric)'], ort['FPS'], ort['Pareto']) == ('missing', '40.00', '-')
    assert ('* yolox_fasternet_t0 onnxruntime: no mAP in fp32: the run was tested in bf16; '
            'not in map_vs_fps.png') in md
    cascade, noted = rows['cascade_resnet_50', 'pytorch'], rows['cascade_resnet_50', 'onnxruntime']
    assert (cascade['precision'], cascade['mAP (metric)'], cascade['Pareto']) == (
        'fp32', '0.5000 (pascal_voc/mAP)', 'yes')  # version-1 settings: tested in fp32
    assert (noted['precision'], noted['mAP (metric)'], noted['FPS'], noted['Pareto']) == (
        'fp32', '0.5000 (pascal_voc/mAP)', 'missing', '-')
    assert f'* cascade_resnet_50 onnxruntime: onnxruntime fp32 not timed: {note}' in md
    # the best deployable FPS of each backbone, and one MACs-latency line per head/variant
    assert ('Fastest timed deployment per run: yolox_fasternet_t0 openvino bf16 50.00 FPS, '
            'cascade_resnet_50 pytorch fp32 5.00 FPS') in md
    assert result['fastest']['yolox_fasternet_t0'] == dict(backend='openvino', precision='bf16',
                                                           fps=50.0)
    assert result['fit']['per_group'] == {
        'yolox bf16': pytest.approx(50 / 3), 'yolox onnxruntime': pytest.approx(25 / 3),
        'yolox openvino bf16': pytest.approx(20 / 3), 'cascade': pytest.approx(20.0)}
    assert 'MACs vs latency (yolox openvino bf16 runs): least-squares line through 0, 6.667' in md
    for png in ('map_vs_fps.png', 'macs_vs_latency.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    saved = json.loads((out / 'compare.json').read_text())
    assert [r['benchmark'] for r in saved['rows']][:3] == [
        'benchmark.json', 'benchmark-onnxruntime-fp32.json', 'benchmark-openvino-bf16.json']


def _boot(run_dir, value, samples, key='same-images'):
    samples = list(samples)
    (run_dir / 'bootstrap.json').write_text(json.dumps({
        'resamples': len(samples), 'images': 10, 'level': 0.95, 'images_key': key,
        'pascal_voc/mAP': dict(value=value, interval=[min(samples), max(samples)],
                               samples=samples), 'coco/bbox_mAP': None,
        'class_ap50': [value], 'best_f1': dict(score_threshold=0.3, precision=0.5, recall=0.4,
                                               f1=0.44)}))


def test_seeds_merge_into_one_row_and_a_run_that_did_not_learn_is_off_the_front(tmp_path):
    """Two work dirs named alike whose run.json name seeds 0 and 1 are one row (mean, std, both
    values, the interval of the seed-mean); a run whose interval reaches 0 did not learn: never
    on the Pareto front, named in the verdict that opens compare.md."""
    dirs = {}
    for name, seed, value, fps, samples in (
            ('a', 0, 0.40, 10.0, [0.30, 0.35, 0.40, 0.45, 0.50]),
            ('a', 1, 0.50, 10.0, [0.40, 0.45, 0.50, 0.55, 0.60]),
            ('dead', 0, 0.02, 50.0, [0.0, 0.0, 0.01, 0.03, 0.05])):
        d = tmp_path / f'{name}{seed}'
        d.mkdir()
        (d / 'run.json').write_text(json.dumps(dict(head='yolox', backbone=f'{name}:x', seed=seed,
                                                    settings=dict(classes=['wreck']))))
        _test_json(d, '20260102_120000', {'pascal_voc/mAP': value})
        _bench(d, fps=fps, macs_g=1.0)
        _boot(d, value, samples)
        dirs[d] = name
    out = tmp_path / 'report'
    result, _ = cmp.run_compare([str(d) for d in dirs], str(out), list(dirs.values()))
    a, dead = result['rows']
    assert (a['name'], a['seeds'], a['map_seeds']) == ('a', [0, 1], [0.40, 0.50])
    assert a['map'] == pytest.approx(0.45) and a['map_std'] == pytest.approx(0.0707, abs=1e-4)
    assert a['map_interval'] == pytest.approx([0.355, 0.545])  # of the draw-by-draw seed-mean
    assert (a['pareto'], a['did_not_learn']) == (True, False)
    assert (dead['pareto'], dead['did_not_learn']) == (False, True)
    assert result['verdict']['sentence'] == 'Yolox: only a:x learned (did not learn: dead:x).'
    md = (out / 'compare.md').read_text()
    assert md.startswith('# Accuracy vs speed\n\n**Verdict:** ')
    assert main_table(md)[2].endswith('| did not learn |')
    assert '| a | pytorch | 0, 1 | 0.450 ± 0.071 | 0.400, 0.500 | [0.355, 0.545] |' in md
    assert '| a | 0.450 | missing | missing | 0.500 | 0.400 | 0.300 | wreck 0.400 |' in md
    assert "Each run's own benchmark at the end of its training (not side by side" in md
