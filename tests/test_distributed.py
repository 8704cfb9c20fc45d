"""Multi-process training with tools/dist_train.sh (torchrun + ``--launcher pytorch``) on CPU/gloo.

Tiny FasterNet-T0 + YOLOX-tiny at 64x64 on the 8-image tiny set, 2 epochs: 2 processes with
batch 2 each against 1 process with batch 4 (4 iterations either way), and 2 processes with
``frozen_stages=1``.

GroupNorm (one group: per-sample statistics) replaces BatchNorm in backbone, neck and head, so
that a sample's forward pass does not depend on which other samples share its batch: on CPU
SyncBN cannot run (torch's and mmcv's SyncBatchNorm are GPU-only; tools/train.py drops
``sync_bn`` there) and per-process BatchNorm over 2 samples differs from BatchNorm over 4 by
design. With per-sample normalization the only difference between the runs is how sums are split
and ordered, and YOLOX normalizes each rank's loss by the positives averaged over ranks
(``reduce_mean``), so the mean of the ranks' first losses equals the 1-process loss up to float32
rounding (measured: 2e-7 relative; asserted: 1e-5 relative).
"""
import os
import socket
import subprocess
import sys

import pytest
import torch

from mmlightbb.models.backbones import FasterNet

from helpers import REPO, tiny_yolox_config

GN = dict(type='GN', num_groups=1, requires_grad=True)

# test-only hook: each rank saves its first-iteration losses, its initial and its final weights
RANK_DUMP = """
import os.path as osp

import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


@HOOKS.register_module()
class RankDumpHook(Hook):

    def before_train(self, runner):  # after init_weights
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.initial_state_dict = {k: v.clone() for k, v in model.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == 0:
            self.first_losses = {name: float(value) for name, value in outputs.items()}

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        torch.save(dict(first_losses=self.first_losses, state_dict=model.state_dict(),
                        initial_state_dict=self.initial_state_dict,
                        world_size=get_world_size(), model_type=type(runner.model).__name__),
                   osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
"""


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_two_processes(tmp_path, cfg_file, work_dir):
    """tools/dist_train.sh CONFIG 2 on CPU/gloo; returns its log."""
    (tmp_path / 'rank_dump.py').write_text(RANK_DUMP)
    # torchrun gives each worker one thread
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PORT=str(free_port()), OMP_NUM_THREADS='1')
    proc = subprocess.run(['tools/dist_train.sh', cfg_file, '2', '--work-dir', str(work_dir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def write_config(tmp_path, data, batch_size):
    text = tiny_yolox_config(
        data, dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3), norm_cfg=GN),
        [80, 160, 320], size=64, max_epochs=2, batch_size=batch_size)
    cfg_file = tmp_path / f'cfg_b{batch_size}.py'
    cfg_file.write_text(text + f"""
custom_imports = dict(imports=['mmlightbb', 'rank_dump'], allow_failed_imports=False)
model['neck']['norm_cfg'] = dict(_delete_=True, **{GN!r})
model['bbox_head']['norm_cfg'] = dict(_delete_=True, **{GN!r})
train_dataloader['sampler'] = dict(type='DefaultSampler', shuffle=True, seed=0)
custom_hooks = custom_hooks + [dict(type='RankDumpHook')]
sync_bn = 'torch'
val_dataloader = None
val_cfg = None
val_evaluator = None
""")
    return str(cfg_file)


@pytest.mark.slow
def test_two_processes_on_cpu_match_one_process_with_the_same_total_batch(tiny_coco, tmp_path):
    dist_work, single_work = tmp_path / 'dist', tmp_path / 'single'
    log = run_two_processes(tmp_path, write_config(tmp_path, tiny_coco, batch_size=2), dist_work)
    assert "sync_bn='torch' needs GPUs" in log
    # the same thread count as each torchrun worker
    env = dict(os.environ, PYTHONPATH=str(tmp_path), OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', write_config(tmp_path, tiny_coco, batch_size=4),
         '--work-dir', str(single_work)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    ranks = [torch.load(dist_work / f'rank{r}.pth', weights_only=False) for r in (0, 1)]
    single = torch.load(single_work / 'rank0.pth', weights_only=False)
    assert [r['world_size'] for r in ranks] == [2, 2] and single['world_size'] == 1
    assert ranks[0]['model_type'] == 'MMDistributedDataParallel'
    # DDP all-reduces gradients, so both ranks take bitwise identical optimizer steps
    for name, value in ranks[0]['state_dict'].items():
        assert torch.equal(value, ranks[1]['state_dict'][name]), name
    # first iteration, before any update: the same 4 images, so the same loss
    for name, expected in single['first_losses'].items():
        mean = sum(r['first_losses'][name] for r in ranks) / 2
        assert abs(mean - expected) <= 1e-5 * abs(expected), (name, mean, expected)
    # and 4 SGD steps later the weights still agree to float32 rounding (measured: 1.2e-7)
    for name, value in single['state_dict'].items():
        assert torch.allclose(ranks[0]['state_dict'][name], value, rtol=0, atol=1e-5), name


@pytest.mark.slow
def test_two_processes_train_with_frozen_stages_and_leave_them_unchanged(tiny_coco, tmp_path):
    """DDP is built in ``Runner.__init__``, before ``train()``: the backbone must already be frozen
    then, or DDP waits for gradients of frozen parameters and fails at the second iteration
    ("Expected to have finished reduction in the prior iteration ...")."""
    backbone = dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3), frozen_stages=1)
    cfg_file = tmp_path / 'cfg_frozen.py'
    cfg_file.write_text(tiny_yolox_config(tiny_coco, backbone, [80, 160, 320], size=64) + """
custom_imports = dict(imports=['mmlightbb', 'rank_dump'], allow_failed_imports=False)
custom_hooks = custom_hooks + [dict(type='RankDumpHook')]
val_dataloader = None
val_cfg = None
val_evaluator = None
""")
    run_two_processes(tmp_path, str(cfg_file), tmp_path / 'work')

    model = FasterNet('t0', out_indices=(1, 2, 3))
    names = {id(m): name for name, m in model.named_modules()}
    frozen_prefixes = tuple(f'backbone.{names[id(m)]}.'
                            for index in (0, 1) for m in model.frozen_modules(index))
    for rank in (0, 1):
        dump = torch.load(tmp_path / 'work' / f'rank{rank}.pth', weights_only=False)
        assert dump['world_size'] == 2 and dump['model_type'] == 'MMDistributedDataParallel'
        initial, final = dump['initial_state_dict'], dump['state_dict']
        frozen = [k for k in final if k.startswith(frozen_prefixes)]
        assert len(frozen) > 10, frozen  # the stem and stage 0: weights and BN statistics
        for key in frozen:
            assert torch.equal(initial[key], final[key]), key
        trained = [k for k in final if k.startswith('backbone.') and k not in frozen]
        assert any(not torch.equal(initial[k], final[k]) for k in trained)


def test_the_suite_never_runs_python_from_path():
    """The guard in conftest.py: a bare ``python`` fails, so the distributed test above passes only
    because tools/dist_train.sh runs ``$PYTHON`` (the interpreter ``make test PYTHON=...`` chose)."""
    for name in ('python', 'python3'):
        proc = subprocess.run([name, '-c', 'pass'], capture_output=True, text=True)
        assert proc.returncode == 97 and 'instead of sys.executable' in proc.stderr
    assert os.environ['PYTHON'] == sys.executable
