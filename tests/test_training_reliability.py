"""Interrupted training loses nothing; a NaN/inf loss stops cleanly.

Over 400 lines: the checkpoint-safety cases share one set of fixtures and subprocess helpers.

Every training run here is ``tools/train.py`` in a subprocess on 4 synthetic images at 64x64 with
FasterNet-T0 + YOLOX-tiny, batch 1 (4 iterations an epoch), on CPU with
``randomness=dict(seed=0, deterministic=True)`` and ``num_workers=0``.
"""
import os
import os.path as osp
import re
import signal
import subprocess
import sys

import pytest
import torch

from helpers import REPO, tiny_yolox_config, write_shapes_coco

BACKBONE = dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3))
NECK_IN = [80, 160, 320]
ITERS_PER_EPOCH = 4  # 4 images, batch 1

# a pipeline without random transforms and no validation (it would only cost time); one kept
# checkpoint, the hardest case for a kill while saving: mmengine itself deletes the old
# checkpoint before writing the new one
DETERMINISTIC = """
randomness = dict(seed=0, deterministic=True)
default_hooks['checkpoint']['max_keep_ckpts'] = 1
val_dataloader = None
val_cfg = None
val_evaluator = None
"""


@pytest.fixture(scope='module')
def four_images(tmp_path_factory):
    return write_shapes_coco(str(tmp_path_factory.mktemp('four_images')), num_images=4, size=64)


def write_config(tmp_path, data, extra='', max_epochs=2):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(tiny_yolox_config(data, BACKBONE, NECK_IN, size=64, max_epochs=max_epochs,
                                          batch_size=1) + DETERMINISTIC + extra)
    return str(cfg_file)


# one thread per run: the same kernels in every run, and no oversubscribed cores when two run
ENV = dict(os.environ, OMP_NUM_THREADS='1')


def train(*args, script='tools/train.py', env=ENV):
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)


def assert_same_tensors(a, b, where='checkpoint'):
    """Bitwise equality of two nested dict/list structures of tensors and numbers."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f'{where}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f'{where} differs (max abs diff {(a - b).abs().max()})'
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(four_images, tmp_path):
    """SIGKILL in epoch 2, ``--resume``: the final weights, EMA weights and optimizer state are
    bitwise equal to those of a run that was never interrupted.

    mmengine resumes from the last checkpoint, saved at the end of epoch 1, and replays epoch 2
    whole: it saves no mid-epoch position of the data loader, so a checkpoint is only a clean
    restart point at an epoch boundary (checkpoints every N iterations would make the resumed
    run repeat or skip batches). This pipeline has no random transform; with random ones the
    same holds through mmlightbb.engine.randomness (tests/test_exact_resume.py).
    """
    cfg = write_config(tmp_path, four_images)
    reference = tmp_path / 'reference'  # trained alongside the run that gets killed
    work = tmp_path / 'killed'
    with open(tmp_path / 'reference.log', 'w') as reference_log:
        uninterrupted = subprocess.Popen(
            [sys.executable, 'tools/train.py', cfg, '--work-dir', str(reference)], cwd=REPO,
            env=ENV, stdout=reference_log, stderr=subprocess.STDOUT)
        child = subprocess.Popen(
            [sys.executable, '-u', 'tools/train.py', cfg, '--work-dir', str(work)], cwd=REPO,
            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # kill right after the 1st of 4 iterations of epoch 2 is logged: 3 iterations (> 1 s)
        # before the epoch-2 checkpoint, far more than reading one line takes
        for line in child.stdout:
            if re.search(rf'Epoch\(train\)\s*\[2\]\[\s*1/{ITERS_PER_EPOCH}\]', line):
                child.send_signal(signal.SIGKILL)
                break
        child.stdout.close()
        assert child.wait(timeout=60) == -signal.SIGKILL
        assert uninterrupted.wait(timeout=300) == 0, \
            (tmp_path / 'reference.log').read_text()[-3000:]
    assert (work / 'epoch_1.pth').is_file() and not (work / 'epoch_2.pth').exists(), \
        'the kill did not land in epoch 2'
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    from mmlightbb.engine import safe_load
    epoch1 = safe_load(work / 'epoch_1.pth')['state_dict']

    proc = train(cfg, '--work-dir', str(work), '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'resumed epoch: 1, iter: {ITERS_PER_EPOCH}' in proc.stdout + proc.stderr

    expected, resumed = (safe_load(d / 'epoch_2.pth') for d in (reference, work))
    assert resumed['meta']['iter'] == expected['meta']['iter'] == 2 * ITERS_PER_EPOCH
    for key in ('state_dict', 'ema_state_dict', 'optimizer'):
        assert_same_tensors(expected[key], resumed[key], key)
    assert any(not torch.equal(v, epoch1[k]) for k, v in resumed['state_dict'].items())
    # max_keep_ckpts=1: the old checkpoint went only after the new one was complete
    for directory in (reference, work):
        assert sorted(p.name for p in directory.glob('*.pth')) == ['epoch_2.pth']


# Run tools/train.py, but os.fsync of the N-th temporary file whose name starts with PREFIX cuts
# that file to half its size and SIGKILLs the process: a kill while the bytes are being written.
KILL_WHILE_SAVING = """
import os, runpy, signal, sys
prefix, nth = sys.argv[1], int(sys.argv[2])
sys.argv = sys.argv[2:]
sys.argv[0] = 'tools/train.py'
real_fsync, seen = os.fsync, []

def dying_fsync(fd):
    if os.path.basename(os.readlink(f'/proc/self/fd/{fd}')).startswith(prefix):
        seen.append(fd)
        if len(seen) == nth:
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)

os.fsync = dying_fsync
runpy.run_path('tools/train.py', run_name='__main__')
"""


@pytest.mark.slow
@pytest.mark.skipif(not osp.isdir('/proc/self/fd'), reason='names open files through /proc')
@pytest.mark.parametrize('interrupted', ['checkpoint', 'pointer'])
def test_kill_while_saving_keeps_previous_checkpoint_and_pointer(four_images, tmp_path,
                                                                  interrupted):
    """Killed halfway through writing epoch_2.pth (or the pointer to it): epoch_1.pth and
    ``last_checkpoint`` naming it are intact and loadable, and ``--resume`` would use them."""
    from mmlightbb.engine import find_resume_checkpoint
    from mmlightbb.engine import safe_load
    cfg = write_config(tmp_path, four_images)
    work = tmp_path / 'work'
    driver = tmp_path / 'kill_while_saving.py'
    driver.write_text(KILL_WHILE_SAVING)
    prefix, nth = ('.epoch_2.pth.', 1) if interrupted == 'checkpoint' else ('.last_checkpoint.', 2)
    proc = train(prefix, str(nth), cfg, '--work-dir', str(work), script=str(driver))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    epoch1 = str(work / 'epoch_1.pth')
    assert (work / 'last_checkpoint').read_text() == epoch1
    assert safe_load(epoch1)['meta']['epoch'] == 1
    assert find_resume_checkpoint(str(work)) == epoch1
    leftovers = [name for name in os.listdir(work) if name.startswith(prefix)]
    assert len(leftovers) == 1 and leftovers[0].endswith('.tmp')  # the half-written temp file
    if interrupted == 'checkpoint':
        assert not (work / 'epoch_2.pth').exists()
    else:  # the checkpoint was complete before its pointer was replaced
        assert safe_load(work / 'epoch_2.pth')['meta']['epoch'] == 2


def test_atomic_backend_failed_write_keeps_old_file(tmp_path, monkeypatch):
    """The 'atomic_local' file backend (AtomicCheckpointHook's default for a local out_dir,
    through mmengine's ``get_file_backend``): a write that fails midway leaves the old content and
    no temporary file. mmengine's own 'local' backend stays the stock one."""
    from mmengine.fileio import LocalBackend, get_file_backend

    from mmlightbb.engine import ATOMIC_BACKEND, AtomicCheckpointHook, AtomicLocalBackend
    assert type(get_file_backend(str(tmp_path / 'x.pth'))) is LocalBackend
    backend_args = AtomicCheckpointHook(interval=1).backend_args
    assert backend_args == dict(backend=ATOMIC_BACKEND)
    backend = get_file_backend(str(tmp_path / 'x.pth'), backend_args=backend_args)
    assert type(backend) is AtomicLocalBackend
    target = tmp_path / 'x.pth'
    backend.put(b'old', target)

    def failing_fsync(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', failing_fsync)
    with pytest.raises(OSError, match='No space'):
        backend.put_text('new', target)
    assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['x.pth']


def test_resume_with_dangling_pointer_falls_back_or_fails_clearly(tmp_path):
    from mmlightbb.engine import ResumeCheckpointError, find_resume_checkpoint
    work = tmp_path / 'work'
    work.mkdir()
    assert find_resume_checkpoint(str(work)) is None  # nothing saved yet: start afresh

    pointer = work / 'last_checkpoint'
    pointer.write_text(str(work / 'epoch_3.pth'))
    with pytest.raises(ResumeCheckpointError,
                       match=r'epoch_3.pth.*missing.*--resume PATH.*delete last_checkpoint'):
        find_resume_checkpoint(str(work))

    torch.save({'w': torch.zeros(100)}, work / 'epoch_1.pth')
    torch.save({'w': torch.zeros(100)}, work / 'epoch_2.pth')
    data = (work / 'epoch_2.pth').read_bytes()
    (work / 'epoch_2.pth').write_bytes(data[:len(data) // 2])  # cut short by an older writer
    pointer.write_text(str(work / 'epoch_2.pth'))
    assert find_resume_checkpoint(str(work)) == str(work / 'epoch_1.pth')
    pointer.write_text('')
    assert find_resume_checkpoint(str(work)) == str(work / 'epoch_1.pth')


def test_train_tool_dangling_pointer_is_one_line_error(four_images, tmp_path):
    cfg = write_config(tmp_path, four_images)
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'last_checkpoint').write_text(str(work / 'epoch_5.pth'))
    proc = train(cfg, '--work-dir', str(work), '--resume')
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: cannot resume:') and 'epoch_5.pth' in last, proc.stderr[-2000:]


# a test-only hook: from global iteration `at` on, the objectness loss is weighted by NaN
POISON_LOSS = """
from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class PoisonLossHook(Hook):

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            runner.model.bbox_head.loss_obj.loss_weight = float('nan')
"""


@pytest.mark.slow
def test_nan_loss_stops_training_naming_last_checkpoint(four_images, tmp_path):
    """The loss turns NaN at iteration 6 (epoch 2, batch 2): training stops there with one line
    naming the NaN terms and the epoch-1 checkpoint, which is intact; nothing NaN is saved.

    The NaN comes from a poisoned loss weight, not from a huge learning rate: with exploding
    weights YOLOX's SimOTA assigner fails on NaN scores before any loss exists (see the hook's
    docstring).
    """
    from mmlightbb.engine import safe_load
    (tmp_path / 'poison_loss.py').write_text(POISON_LOSS)
    cfg = write_config(tmp_path, four_images, extra="""
custom_imports = dict(imports=['mmlightbb', 'poison_loss'], allow_failed_imports=False)
custom_hooks = custom_hooks + [dict(type='NonFiniteLossHook'), dict(type='PoisonLossHook', at=6)]
""")
    work = tmp_path / 'work'
    proc = train(cfg, '--work-dir', str(work), env=dict(ENV, PYTHONPATH=str(tmp_path)))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    checkpoint = work / 'epoch_1.pth'
    assert last.startswith(
        'error: non-finite loss at iteration 6 (epoch 2, batch 2): loss=nan, loss_obj=nan. '
        'Training stopped; these weights were not saved. Last complete checkpoint: '
        f'{checkpoint}. Typical fixes: lower the learning rate'), proc.stderr[-2000:]
    assert 'clip_grad' in last and 'loss_scale' in last
    state = safe_load(checkpoint)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert sorted(name for name in os.listdir(work) if name.endswith('.pth')) == ['epoch_1.pth']


POISON_WEIGHTS = """
from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class PoisonWeightsHook(Hook):
    # after iteration `at` (its loss finite and checked) the weights turn NaN, as after an update
    # that overflowed
    priority = 'LOWEST'

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:  # mmengine counts the iteration after its hooks
            runner.model.backbone.patch_embed.proj.weight.data.fill_(float('nan'))
"""


@pytest.mark.slow
@pytest.mark.parametrize('at', [5, 4])
def test_weights_that_blew_up_under_a_finite_loss_stop_with_one_line(four_images, tmp_path, at):
    """After iteration 5, YOLOX's SimOTA fails on NaN scores before any loss exists: train.py
    names the cause (the weights) and the last good checkpoint instead of SimOTA's traceback.
    After iteration 4, the last of epoch 1, the NaN weights are refused by the checkpoint hook:
    no checkpoint holds them."""
    (tmp_path / 'poison_weights.py').write_text(POISON_WEIGHTS)
    cfg = write_config(tmp_path, four_images, extra=f"""
custom_imports = dict(imports=['mmlightbb', 'poison_weights'], allow_failed_imports=False)
custom_hooks = custom_hooks + [dict(type='NonFiniteLossHook'),
                               dict(type='PoisonWeightsHook', at={at})]
""")
    work = tmp_path / 'work'
    proc = train(cfg, '--work-dir', str(work), env=dict(ENV, PYTHONPATH=str(tmp_path)))
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    consequence, checkpoint = {
        5: ('iteration 6 then failed with RuntimeError: all elements of input should be between 0 '
            'and 1', work / 'epoch_1.pth'),
        4: ('epoch_1.pth was not written', 'none saved yet')}[at]
    assert last.startswith(
        f'error: non-finite weights after iteration {at} although its loss was finite (the update '
        f'overflowed): backbone.patch_embed.proj.weight; {consequence}. Training stopped; these '
        f'weights were not saved. Last complete checkpoint: {checkpoint}.'), last
    assert 'Traceback' not in proc.stderr
    assert sorted(name for name in os.listdir(work) if name.endswith('.pth')) == (
        ['epoch_1.pth'] if at == 5 else [])


def test_other_training_errors_are_not_blamed_on_the_weights(tmp_path):
    from torch import nn

    from mmlightbb.engine import NonFiniteLossError, raise_if_weights_nonfinite

    class Runner:  # what the check reads of mmengine's Runner
        model, work_dir, iter, epoch = nn.Linear(2, 2), str(tmp_path), 3, 0

    raise_if_weights_nonfinite(Runner, ValueError('a bug'))  # finite weights: not the cause
    Runner.model.bias.data[0] = float('inf')
    raise_if_weights_nonfinite(Runner, NonFiniteLossError('loss=nan'))  # already named
    Runner.model.weight.data[1, 1] = float('nan')
    with pytest.raises(NonFiniteLossError, match=r'after iteration 3 although its loss was '
                       r'finite \(the update overflowed\): weight and 1 more; iteration 4 then '
                       r'failed with ValueError: a bug\. Training stopped'):
        raise_if_weights_nonfinite(Runner, ValueError('a bug'))


def test_nan_hook_message_without_checkpoint(tmp_path):
    from mmlightbb.engine import NonFiniteLossError, NonFiniteLossHook

    class Runner:  # what the hook reads of mmengine's Runner
        work_dir, iter, epoch = str(tmp_path), 2, 0

    hook = NonFiniteLossHook()
    finite = dict(loss=torch.tensor(1.5), loss_cls=torch.tensor(1.0))
    hook.after_train_iter(Runner, 2, outputs=finite)  # no error
    outputs = dict(loss=torch.tensor(float('nan')), loss_cls=torch.tensor(float('inf')),
                   loss_bbox=torch.tensor(0.5))
    with pytest.raises(NonFiniteLossError) as err:
        hook.after_train_iter(Runner, 2, outputs=outputs)
    msg = str(err.value)
    assert msg.startswith('non-finite loss at iteration 3 (epoch 1, batch 3): loss=nan, '
                          'loss_cls=inf. ')
    assert 'loss_bbox' not in msg and 'Last complete checkpoint: none saved yet.' in msg


class SavingRunner:
    """What CheckpointHook's save_best reads of mmengine's Runner; ``save_checkpoint`` writes a
    small file, or dies like a killed process when ``crash`` is set."""

    def __init__(self, work_dir, name):
        from mmengine.logging import MessageHub, MMLogger
        self.work_dir, self.epoch, self.iter, self.crash = work_dir, 0, 0, False
        self.model = torch.nn.Linear(2, 2)
        self.message_hub = MessageHub.get_instance(name)
        self.logger = MMLogger.get_current_instance()

    def save_checkpoint(self, out_dir, filename, **kwargs):
        if self.crash:
            raise KeyboardInterrupt('killed while saving')
        with open(osp.join(out_dir, filename), 'w') as f:
            f.write(str(self.epoch))

    def validate(self, hook, epoch, crash=False, **metrics):
        self.epoch = self.iter = epoch
        self.crash = crash
        hook.after_val_epoch(self, metrics)


def _best_files(directory):
    return sorted(name for name in os.listdir(directory) if name.startswith('best_'))


@pytest.mark.parametrize('stock', [False, True])
def test_previous_best_checkpoint_survives_a_kill_while_saving_the_new_one(tmp_path, stock):
    from mmengine.hooks import CheckpointHook as StockCheckpointHook

    from mmlightbb.engine import AtomicCheckpointHook
    hook_type = StockCheckpointHook if stock else AtomicCheckpointHook
    hook = hook_type(interval=1, save_best='acc', rule='greater')
    runner = SavingRunner(str(tmp_path), f'best_kill_{stock}')
    hook.before_train(runner)
    runner.validate(hook, 1, acc=0.1)
    assert _best_files(tmp_path) == ['best_acc_epoch_1.pth']
    with pytest.raises(KeyboardInterrupt):
        runner.validate(hook, 2, crash=True, acc=0.2)
    # mmengine 0.10.7 deletes the old best before writing the new one: nothing is left
    assert _best_files(tmp_path) == ([] if stock else ['best_acc_epoch_1.pth'])


def test_best_checkpoint_is_replaced_when_better_and_kept_otherwise(tmp_path):
    from mmlightbb.engine import AtomicCheckpointHook
    hook = AtomicCheckpointHook(interval=1, save_best='acc', rule='greater')
    runner = SavingRunner(str(tmp_path), 'best_replace')
    hook.before_train(runner)
    for epoch, acc, best in ((1, 0.1, 1), (2, 0.3, 2), (3, 0.25, 2), (4, 0.3, 2), (5, 0.5, 5)):
        runner.validate(hook, epoch, acc=acc)
        assert _best_files(tmp_path) == [f'best_acc_epoch_{best}.pth'], epoch
        assert runner.message_hub.get_info('best_ckpt') == str(
            tmp_path / f'best_acc_epoch_{best}.pth')
        assert hook.best_ckpt_path == str(tmp_path / f'best_acc_epoch_{best}.pth')


def test_nonfinite_weights_never_become_the_best_checkpoint(tmp_path):
    from mmlightbb.engine import AtomicCheckpointHook, NonFiniteLossError
    hook = AtomicCheckpointHook(interval=1, save_best='acc', rule='greater')
    runner = SavingRunner(str(tmp_path), 'best_nonfinite')
    hook.before_train(runner)
    runner.validate(hook, 1, acc=0.1)
    runner.model.weight.data[0, 0] = float('nan')
    with pytest.raises(NonFiniteLossError, match='weight; the best checkpoint was not written'):
        runner.validate(hook, 2, acc=0.9)
    assert _best_files(tmp_path) == ['best_acc_epoch_1.pth']


def test_best_checkpoints_of_two_metrics_are_kept_apart(tmp_path):
    from mmlightbb.engine import AtomicCheckpointHook
    hook = AtomicCheckpointHook(interval=1, save_best=['acc', 'err'], rule=['greater', 'less'])
    runner = SavingRunner(str(tmp_path), 'best_two_metrics')
    hook.before_train(runner)
    for epoch, acc, err in ((1, 0.1, 0.5), (2, 0.3, 0.6), (3, 0.2, 0.4)):
        runner.validate(hook, epoch, acc=acc, err=err)
    assert _best_files(tmp_path) == ['best_acc_epoch_2.pth', 'best_err_epoch_3.pth']
