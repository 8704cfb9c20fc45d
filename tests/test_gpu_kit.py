"""tools/gpu/ (docs/gpu.md), the kit that proves the GPU path on a GPU machine without network:
its dry run on this CPU machine writes the report with every step's status, in a venv that sees
only what the GPU machine has; the report of a failed GPU run names the build's first failing file
and error and each failed test; gpu_wheels/, when fetched, holds exactly the pinned wheels.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
KIT = osp.join(REPO, 'tools', 'gpu', 'kit.py')
STEPS = ['probe', 'venv', 'install', 'mmcv_source', 'build_mmcv', 'smoke', 'tests', 'cpu_run',
         'benchmark']


def _pins():
    with open(osp.join(REPO, 'tools', 'gpu', 'requirements.txt')) as f:
        return [line.strip() for line in f if line.strip()[:1].isalnum()]


@pytest.mark.slow
def test_cpu_dry_run_writes_the_report_with_every_step(tmp_path):
    """The whole check on this machine (4.5 minutes on 2 cores at load 4, 10 at load 12)."""
    out = tmp_path / 'out'
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'gpu', 'check.sh'), str(out),
                           '--cpu-dry-run'], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1200)
    assert (out / 'report.md').is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((out / 'report.json').read_text())
    status = {s['name']: s['status'] for s in rep['steps']}
    assert list(status) == STEPS, status
    assert proc.returncode == 0 and rep['ok'], (rep['problems'], proc.stdout[-2000:])
    wheels = osp.isdir(osp.join(REPO, 'gpu_wheels'))
    assert status == {**dict.fromkeys(STEPS, 'ok'), 'build_mmcv': 'not run',
                      **({} if wheels else {'mmcv_source': 'not run'})}
    assert all(s['wall_s'] >= 0 and osp.isfile(out / s['log'])
               for s in rep['steps'] if s['status'] == 'ok')
    assert rep['mode'] == 'cpu-dry-run'
    assert dict(module='scipy', distribution='scipy') in rep['hidden_imports']  # the stub's
    assert rep['probe']['cuda_available'] is False
    # every CUDA test collected (its helpers import under the GPU machine's package set), skipped
    tests = rep['tests']
    assert list(tests['counts']) == ['skipped'] and tests['counts']['skipped'] > 40
    assert tests['skip_reasons'] == {'no CUDA device visible (torch.cuda.is_available() is False): '
                                     'run on a GPU machine, e.g. bash tools/gpu/check.sh OUT_DIR':
                                     tests['counts']['skipped']}
    rows = rep['benchmark']
    assert [(r['config'], r['mode']) for r in rows] == [('yolox_fasternet.py', 'backbone_only'),
                                                        ('yolox_fasternet.py', 'test_step')]
    assert all(r['device'] == 'cpu' and r['fps'] > 0 for r in rows)
    assert 'cascade_fasternet_t0: test VOC mAP50' in (out / 'logs' / 'cpu_run.log').read_text()
    smoke = (out / 'logs' / 'smoke.log').read_text()
    assert 'scipy' in (out / 'logs' / 'install.log').read_text()  # the stub stands in
    if wheels:  # the carried opencv, not this machine's, ran the dry run
        assert re.search(r'^cv2 4\.10\.\S+ \S+/gpu_check\.\w+/venv/', smoke, re.M), smoke
    md = (out / 'report.md').read_text()
    assert md.startswith('# GPU check: OK (cpu-dry-run)') and all(f'| {s} |' in md for s in STEPS)


BUILD_LOG = (
    '[1/136] /usr/local/cuda/bin/nvcc -DMMCV_WITH_CUDA -c a.cu -o a.o -Werror=return-type\n'
    'FAILED: /tmp/pip-req/build/temp.linux-x86_64-cpython-312/mmcv/ops/csrc/pytorch/cuda/'
    'nms_cuda.o\n'
    '/tmp/pip-req/mmcv/ops/csrc/common/pytorch_cuda_helper.hpp:9:10: fatal error: '
    'THC/THCAtomics.cuh: No such file or directory\n'
    'compilation terminated.\n'
    '/tmp/pip-req/mmcv/ops/csrc/pytorch/cuda/x.cu(12): error: identifier "y" is undefined\n'
    "error: command '/usr/bin/g++' failed with exit code 1\n")
TESTS_LOG = (
    'tests/test_cuda.py::test_backbone_on_cuda_equals_cpu[as-built-FasterNet-custom] PASSED [ 1%]\n'
    'tests/test_cuda.py::test_one_training_epoch_on_cuda_lowers_the_loss[cascade] FAILED [ 2%]\n'
    'tests/test_cuda.py::test_compare_backbones_quick_on_cuda_end_to_end SKIPPED (x) [ 3%]\n'
    '=========================== short test summary info ============================\n'
    'PASSED tests/test_cuda.py::test_backbone_on_cuda_equals_cpu[as-built-FasterNet-custom]\n'
    'SKIPPED [1] tests/test_cuda.py:198: no roi_align on CUDA\n'
    'FAILED tests/test_cuda.py::test_one_training_epoch_on_cuda_lowers_the_loss[cascade] - '
    'RuntimeError: roi_align_forward_impl: implementation for device cuda:0 not found.\n')


def _kit(*args):
    proc = subprocess.run([sys.executable, KIT, *args], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def test_report_of_a_gpu_run_whose_build_failed(tmp_path):
    """What a failed CUDA build leaves: the first failing object and compiler error, the CPU-ops
    fallback, each test's outcome and the failures' reasons, a step stopped at its limit."""
    (tmp_path / 'logs').mkdir()
    (tmp_path / 'build.log').write_text(BUILD_LOG)
    code, info = _kit('build-info', str(tmp_path / 'build.log'), '9.0', '16', 'no shim')
    assert code == 0, info
    (tmp_path / 'build_cuda.json').write_text(info)
    (tmp_path / 'logs' / 'tests.log').write_text(TESTS_LOG)
    (tmp_path / 'meta.json').write_text(json.dumps(dict(mode='gpu', budget_s=540)))
    (tmp_path / 'steps.tsv').write_text(''.join(
        f'{name}\t{status}\t1.5\t{rc}\t{note}\n' for name, status, rc, note in [
            ('probe', 'ok', 0, ''), ('build_mmcv', 'failed', 1, 'mmcv build (cuda) failed'),
            ('build_mmcv_cpu_ops', 'ok', 0, ''), ('tests', 'failed', 1, '1 failed'),
            ('benchmark', 'timeout', 124, 'stopped after 30 s')]))
    code, out = _kit('report', str(tmp_path))
    assert code == 1 and out.startswith('check: NOT OK: build_mmcv; tests; benchmark'), out
    rep = json.loads((tmp_path / 'report.json').read_text())
    assert rep['build']['failed_object'] == 'mmcv/ops/csrc/pytorch/cuda/nms_cuda.o'
    assert rep['build']['first_error'].endswith(
        'fatal error: THC/THCAtomics.cuh: No such file or directory')
    assert len(rep['build']['errors']) == 3 and rep['build_cpu_ops'] is None
    assert rep['tests']['counts'] == {'passed': 1, 'failed': 1, 'skipped': 1}
    (failed, reason), = rep['tests']['failures'].items()
    assert failed.endswith('[cascade]') and reason.startswith('RuntimeError: roi_align')
    md = (tmp_path / 'report.md').read_text()
    assert md.startswith('# GPU check: NOT OK (gpu)') and '| benchmark | timeout | 2 |' in md
    assert 'First failing object: `mmcv/ops/csrc/pytorch/cuda/nms_cuda.o`' in md


def test_every_carried_package_is_pinned_and_fetched_once():
    pins = _pins()
    assert pins and all(re.fullmatch(r'[A-Za-z0-9._-]+==[\w.]+', p) for p in pins), pins
    if not osp.isdir(osp.join(REPO, 'gpu_wheels')):
        pytest.skip('no gpu_wheels/ (bash tools/gpu/wheels.sh fetches it from PyPI)')
    names = sorted(os.listdir(osp.join(REPO, 'gpu_wheels')))
    fetched = sorted('=='.join(n.split('-')[:2]).lower().replace('_', '-')
                     for n in names if n.endswith('.whl'))
    assert fetched == sorted(p.lower().replace('_', '-') for p in pins)
    assert 'mmcv-2.1.0.tar.gz' in names and len(names) == len(pins) + 1
