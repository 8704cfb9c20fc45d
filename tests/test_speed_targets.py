"""The benchmark scripts' ``--quick`` runs (speed_targets, deploy_targets, csp_thesis) print their
full tables; timing itself is not tested (ratios from a loaded CI machine are noise), the outputs'
agreement is."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from helpers import REPO

TARGETS = ('FasterNet-T0', 'FasterNet-T1', 'FasterNet-T2', 'FasterNet-S vs', 'FasterNet-S share',
           'FasterNet-M', 'FasterNet-L', 'RepLKNet-31B', 'CSPConvNeXt-tiny vs ConvNeXt-T',
           'ParameterNet-600m vs static twin', 'ParameterNet-600m per image',
           'YOLOX: FasterNet-T0 vs YOLOX-tiny')


@pytest.mark.slow
def test_quick_run_prints_every_target_with_ratio(tmp_path):
    out = tmp_path / 'speed.json'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'benchmarks', 'speed_targets.py'), '--quick', '--threads',
         '1', '--out', str(out)], capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith('target'))
    assert [c.strip() for c in header.split('|')] == [
        'target', 'baseline ms', 'ours ms', 'ratio', 'limit', 'result', 'max rel diff']
    for target in TARGETS:
        line = next((line for line in lines if line.startswith(target)), None)
        assert line is not None, f'no row for {target}'
        cells = [c.strip() for c in line.split('|')]
        assert float(cells[3]) > 0 and cells[5] in ('PASS', 'FAIL')
        assert float(cells[6]) <= 1e-4  # the fast paths compute the same outputs
    assert 'threads=1' in proc.stdout and 'torch ' in proc.stdout
    res = json.loads(out.read_text())
    assert len(res['rows']) == len(TARGETS) and res['crossover'] and res['paths']


def _run_quick(script, tmp_path, *extra, timeout=900):
    out = tmp_path / 'r.json'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'benchmarks', script), '--quick', '--threads', '1',
         '--out', str(out), *extra], capture_output=True, text=True, cwd=str(tmp_path),
        timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_deploy_targets_quick_run_has_every_side_and_target(tmp_path):
    from mmlightbb.analysis.benchmark import cpu_bf16_support
    bf16 = cpu_bf16_support()[0]
    stdout, res = _run_quick('deploy_targets.py', tmp_path, '--profile', timeout=1800)
    runtimes = {'onnxruntime fp32', 'openvino f32', 'onnxruntime int8', 'openvino int8'} | (
        {'openvino bf16'} if bf16 else set())
    sides = {'pytorch fp32'} | runtimes | ({'pytorch bf16'} if bf16 else set())
    models = {r['model'] for r in res['rows'] if r['group'] in ('backbones', 'detectors')}
    assert len(models) == 7  # 5 backbones + 2 YOLOX detectors
    for model in models:
        assert {r['side'] for r in res['rows'] if r['model'] == model} == sides
    for r in res['rows']:
        assert r['median_ms'] > 0 and r['ratio'] > 0
        if r['group'] == 'backbones' and r['side'] in ('onnxruntime fp32', 'openvino f32'):
            assert r['diff'] <= 1e-4  # fp32 runtimes compute the same maps
        if r['group'] == 'backbones' and 'bf16' in r['side']:
            assert r['diff'] <= 5e-2
    # detectors: the runtimes find as many detections as mmdet's test_step
    for r in res['rows']:
        if r['group'] == 'detectors' and r['side'] in ('onnxruntime fp32', 'openvino f32'):
            n_ref, n = r['diff'].split(' dets')[0].split(' vs ')
            assert n_ref == n
    # Cascade R-CNN: its whole step, its backbone + neck in every side, the projected steps
    cascade = {r['side'] for r in res['rows'] if r['group'] == 'cascade'}
    assert cascade == {'pytorch fp32', 'pytorch fp32 extract_feat'} | {
        f'{side} extract_feat' for side in runtimes} | {f'projected {side}' for side in runtimes}
    # one target per backbone and detector, the int8 target per detector, training with bf16
    assert len(res['targets']) == 7 + 2 + bf16
    assert all(t['best_ratio'] > 0 and t['limit'] in (0.6, 0.7) for t in res['targets'])
    assert [t['group'] for t in res['targets']].count('int8') == 2
    assert 'targets (the fastest side / pytorch fp32; int8: openvino int8 / openvino bf16):' \
        in stdout
    # --profile: OpenVINO's int8 side by its own counters, its time partly in int8 kernels
    for target in (t for t in res['targets'] if t['group'] == 'detectors'):
        int8 = target['profile']['openvino int8']
        assert {'I8', 'U8'} & set(int8['by_precision']) and int8['top_nodes'], int8
        assert 'categories' in target['profile']['pytorch fp32']


@pytest.mark.slow
def test_int8_accuracy_quick_run_tests_each_runtime_against_fp32(tmp_path):
    stdout, res = _run_quick('int8_accuracy.py', tmp_path, '--work-dir', str(tmp_path / 'w'))
    (shapes, ) = res
    assert shapes['dataset'] == 'shapes' and shapes['test_images'] == 8
    fp32, *int8 = shapes['rows']
    assert fp32['side'] == 'pytorch fp32' and 0 <= fp32['voc'] <= 1
    assert [r['side'] for r in int8] == ['openvino int8', 'onnxruntime int8']
    for r in int8:  # calibrated on the 12 training images, never on the 8 test images
        assert r['calibration_images'] == 12
        assert r['diff'] == pytest.approx(r['voc'] - fp32['voc'], abs=1e-6)
        low, high = r['diff_interval']  # paired: the same bootstrap draws for both
        assert -1 <= low <= high <= 1
    assert '| shapes | 8 | openvino int8 |' in stdout


@pytest.mark.slow
def test_csp_thesis_quick_run_reports_each_pair(tmp_path):
    stdout, res = _run_quick('csp_thesis.py', tmp_path)
    assert [p['mixer'] for p in res['pairs']] == ['7x7 depthwise', 'PConv 3x3', '31x31 depthwise']
    for p in res['pairs']:
        # half the stage width through the blocks: fewer params and MACs than the plain form
        assert 0 < p['params'] < 1 and 0 < p['macs'] < 1 and p['latency'] > 0
        assert p['map50_delta'] is None  # --map not given
    assert all(r['map50'] is None for r in res['rows'])
    assert 'not run' in stdout and 'latency cut of CSP for the 31x31 net' in stdout
