"""The comparison beyond one process (mmlightbb/analysis/comparison/launchers.py): --parallel on
this machine and --launcher slurm on a real one-node Slurm cluster started here
(tests/slurm_cluster.py; installed with apt-get when missing).

Every run trains with one thread, so that a run trained in this process, in a worker beside
another one, or in a Slurm job does the same arithmetic: the final weights are compared with
``torch.equal``, not only the mAPs (which on 60 iterations of a tiny set say little).
"""
import json
import os
import os.path as osp
import subprocess
import time

import pytest
import torch

from mmlightbb.analysis.comparison import ComparisonError, RunFailures, compare_backbones
from mmlightbb.analysis.comparison.launchers import SLURM_INFO

from helpers import make_samples, write_voc
from slurm_cluster import OneNodeSlurm, SlurmUnavailable

RUNS = ('yolox_fasternet_t0', 'yolox_cspdarknet_tiny')
EPOCHS = 6
KW = dict(heads=['yolox'], backbones=['fasternet:t0', 'baseline'], quick=True, epochs=EPOCHS,
          size=64, batch_size=2, bench_iters=2, threads=1, bootstrap=100)


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    try:
        cluster = OneNodeSlurm(str(tmp_path_factory.mktemp('slurm'))).start()
    except SlurmUnavailable as err:
        if os.environ.get('CI'):
            pytest.fail(f'CI must run the Slurm tests: {err}')
        pytest.skip(f'no Slurm test cluster here: {err}')
    yield cluster
    cluster.stop()


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('voc') / 'voc')
    write_voc(root, make_samples(10, ('wreck', ), size=64, seed=11))
    return root


@pytest.fixture(scope='module')
def sequential(voc, tmp_path_factory):
    """The reference: both runs one after another in this process."""
    out = str(tmp_path_factory.mktemp('seq') / 'cmp')
    compare_backbones(voc, out, log=lambda line: None, **KW)
    return out


def final_weights(out, run):
    return torch.load(osp.join(out, run, f'epoch_{EPOCHS}.pth'), weights_only=False)['state_dict']


def assert_same_runs(out, reference):
    for run in RUNS:
        ours, ref = final_weights(out, run), final_weights(reference, run)
        assert ours.keys() == ref.keys()
        assert all(torch.equal(ours[k], ref[k]) for k in ref), run
        metrics = [json.load(open(osp.join(d, run, 'test_metrics.json')))
                   for d in (out, reference)]
        assert metrics[0]['pascal_voc/mAP'] == metrics[1]['pascal_voc/mAP']
    assert osp.isfile(osp.join(out, 'report', 'compare.md'))


@pytest.mark.slow
def test_two_runs_at_once_train_as_one_after_another(voc, sequential, tmp_path):
    out, lines = str(tmp_path / 'cmp'), []
    compare_backbones(voc, out, log=lines.append, parallel=2, **KW)
    assert_same_runs(out, sequential)
    assert any('yolox_fasternet_t0: started on cores 0' in ln for ln in lines), lines
    assert any('yolox_cspdarknet_tiny: started on cores 1' in ln for ln in lines), lines
    # the workers' progress reaches the comparison's log, and timing runs after all training
    last_epoch = max(i for i, ln in enumerate(lines) if f'epoch {EPOCHS}/{EPOCHS} done' in ln)
    assert last_epoch < min(i for i, ln in enumerate(lines) if 'benchmarking pytorch' in ln)
    assert osp.isfile(osp.join(out, RUNS[0], 'worker.log'))


@pytest.mark.slow
def test_slurm_comparison_equals_the_local_one(slurm, voc, sequential, tmp_path):
    out, lines = str(tmp_path / 'cmp'), []
    res = compare_backbones(voc, out, log=lines.append, launcher='slurm', **KW)
    assert_same_runs(out, sequential)
    for run in RUNS:
        info = json.load(open(osp.join(out, run, SLURM_INFO)))
        assert osp.isfile(info['log']) and info['log'].endswith(f"slurm-{info['job_id']}.out")
        assert any(f"submitted as Slurm job {info['job_id']}" in ln for ln in lines)
    assert any('Slurm job' in ln and 'RUNNING' in ln for ln in lines), lines
    assert any(f'epoch {EPOCHS}/{EPOCHS} done' in ln for ln in lines)
    timing = json.load(open(osp.join(out, 'timing.json')))
    assert timing['host'] and res['result']['timing']['started'] == timing['started']


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f'timed out waiting for {what}'
        time.sleep(0.2)


@pytest.mark.slow
def test_a_cancelled_run_resumes_and_no_run_is_submitted_twice(slurm, voc, sequential,
                                                               tmp_path):
    out, lines = str(tmp_path / 'cmp'), []
    res = compare_backbones(voc, out, log=lines.append, launcher='slurm', wait=False, **KW)
    assert res['report'] is None and sorted(res['submitted']) == sorted(RUNS)
    jobs = {run: json.load(open(osp.join(out, run, SLURM_INFO)))['job_id'] for run in RUNS}
    # the same command while they are pending or running: nothing is submitted again
    again = []
    compare_backbones(voc, out, log=again.append, launcher='slurm', wait=False, **KW)
    assert sum('not submitted again' in ln for ln in again) == 2, again
    assert not any('submitted as Slurm job' in ln for ln in again)
    victim = osp.join(out, RUNS[0])
    _wait_for(lambda: osp.isfile(osp.join(victim, 'epoch_1.pth')), 300, 'the first checkpoint')
    subprocess.run(['scancel', jobs[RUNS[0]]], check=True)
    _wait_for(lambda: subprocess.run(['squeue', '-h', '-j', jobs[RUNS[0]]], capture_output=True,
                                     text=True).stdout.strip() == '', 60, 'the cancellation')
    assert not osp.isfile(osp.join(victim, 'test_metrics.json')), 'finished before scancel'
    lines = []
    compare_backbones(voc, out, log=lines.append, launcher='slurm', **KW)
    resubmitted = [ln for ln in lines if 'submitted as Slurm job' in ln]
    assert len(resubmitted) == 1 and RUNS[0] in resubmitted[0], lines
    assert any(f'{RUNS[0]}: resuming from {RUNS[0]}/epoch_' in ln for ln in lines), lines
    assert_same_runs(out, sequential)


@pytest.mark.slow
def test_two_processes_per_run_on_slurm(slurm, voc, tmp_path):
    out = str(tmp_path / 'cmp')
    kw = dict(KW, backbones=['fasternet:t0'], epochs=1)
    compare_backbones(voc, out, log=lambda line: None, launcher='slurm', gpus_per_run=2, **kw)
    run = osp.join(out, RUNS[0])
    info = json.load(open(osp.join(run, SLURM_INFO)))
    log = open(info['log']).read()
    assert 'Distributed launcher: slurm' in log and 'MMDistributedDataParallel' in log
    assert '#SBATCH --ntasks=2' in open(info['script']).read()
    assert osp.isfile(osp.join(run, 'test_metrics.json'))


@pytest.mark.slow
def test_slurm_failures_are_one_line_and_the_other_runs_go_on(slurm, voc, tmp_path):
    # a bad partition: sbatch refuses every run, each named with the fix
    with pytest.raises(RunFailures) as info:
        compare_backbones(voc, str(tmp_path / 'bad_partition'), log=lambda line: None,
                          launcher='slurm', partition='nosuch', **KW)
    msg = str(info.value)
    assert '\n' not in msg and all(run in msg for run in RUNS)
    assert 'invalid partition' in msg.lower() and '--partition one of debug' in msg
    # a job that fails (weights that are not a checkpoint): its name, log and error; the other
    # run finishes and is in the report
    bad = tmp_path / 'not_a_checkpoint.pth'
    bad.write_text('not a checkpoint')
    out = str(tmp_path / 'bad_job')
    with pytest.raises(RunFailures) as info:
        compare_backbones(voc, out, log=lambda line: None, launcher='slurm',
                          pretrained={'fasternet:t0': str(bad)}, **KW)
    msg = str(info.value)
    assert '\n' not in msg and f'{RUNS[0]}: Slurm job' in msg and 'slurm-' in msg, msg
    assert 'error: ' in msg and 'run the same command again' in msg
    assert osp.isfile(osp.join(out, RUNS[1], 'test_metrics.json'))
    assert RUNS[1] in open(osp.join(out, 'report', 'compare.md')).read()


def test_without_sbatch_the_slurm_launcher_is_one_line(voc, tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))  # no Slurm command on it
    with pytest.raises(ComparisonError) as info:
        compare_backbones(voc, str(tmp_path / 'cmp'), log=lambda line: None, launcher='slurm',
                          **KW)
    assert str(info.value).startswith('--launcher slurm: sbatch not found on PATH; run the '
                                      'comparison on a Slurm login node')
