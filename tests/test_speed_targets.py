"""``benchmarks/speed_targets.py --quick`` prints the full table (timing itself is not tested:
ratios from a loaded CI machine are noise)."""
import json
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TARGETS = ('FasterNet-T0', 'FasterNet-T1', 'FasterNet-T2', 'FasterNet-S vs', 'FasterNet-S share',
           'FasterNet-M', 'FasterNet-L', 'RepLKNet-31B', 'CSPConvNeXt-tiny vs ConvNeXt-T',
           'ParameterNet-600m vs static twin', 'ParameterNet-600m per image',
           'YOLOX: FasterNet-T0 vs YOLOX-tiny')


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
