"""Exact resumption with random augmentations (mmlightbb.engine.randomness).

A run SIGKILLed mid-epoch or at an epoch boundary and continued with ``--resume`` must end with
weights, EMA weights and optimizer state bitwise equal (``torch.equal``) to an uninterrupted run,
with the shipped configs' full random pipelines. The training runs are ``tools/train.py`` (or
``tools/dist_train.sh``) subprocesses on 6 synthetic 80x80 images, batch 2 (3 iterations an
epoch), with the shipped config ``configs/yolox_fasternet_t0_tiny.py`` as it is except: its input
scales shrunk to 64 px (Mosaic, RandomAffine, MixUp, YOLOXHSVRandomAug, RandomFlip, Resize, Pad all
kept), BatchSyncRandomResize drawing 64 or 96 px every iteration, drop-path 0.1 (FasterNet-T0's
default is 0, so its masks are drawn here), Mosaic/MixUp switched off in the last of 3 epochs, no
validation, ``randomness=dict(seed=0)``. The kills come from a test-only hook that SIGKILLs its own
process at a given iteration or right after a given epoch's checkpoint. ``OMP_NUM_THREADS=1`` in
every run, as in test_training_reliability.py.

Exact resumption is what ``RecoverableRunner`` adds (the shipped configs select it with
``runner_type``; tools/train.py builds it); "stock" below is mmengine's own ``Runner``. One
uninterrupted reference run (``num_workers=0``) serves every setting: with ``RecoverableRunner``
the draws do not depend on ``num_workers`` or persistent workers, which the runs with 2 workers
check too.

Over 400 lines on purpose: every case shares that module-scoped reference run, so they stay in one
module.
"""
import os
import os.path as osp
import random
import signal
import socket
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from torch import nn
from mmengine.runner import Runner
from torch.utils.data import DataLoader, Dataset

import mmlightbb  # noqa: F401  (registers the components the configs select)
from mmlightbb.engine import RecoverableRunner, runner_checkpoint_loading, safe_load
from mmlightbb.engine.randomness import (CHECKPOINT_KEY, NOT_RESUMABLE_MESSAGE, ExactResumeHook,
                                         SeededIndex, _SeedState, install_seeded_loading,
                                         prepare_exact_resumption)

from helpers import REPO, TINY_CLASSES, write_shapes_coco

NUM_IMAGES, BATCH = 6, 2
ITERS = NUM_IMAGES // BATCH  # per epoch, one process
YOLOX_PIPELINE = ['Mosaic', 'RandomAffine', 'MixUp', 'YOLOXHSVRandomAug', 'RandomFlip', 'Resize',
                  'Pad', 'FilterAnnotations', 'PackDetInputs']

# SIGKILL this process where $KILL_AT says: 'iter:N' right after global iteration N (1-based),
# 'epoch:N' right after epoch N's checkpoint is complete (CheckpointHook is VERY_LOW, this LOWEST)
KILL_HOOK = """
import os
import signal

from mmdet.registry import HOOKS
from mmengine.hooks import Hook


@HOOKS.register_module()
class KillHook(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.at = os.environ.get('KILL_AT', '')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.at == f'iter:{runner.iter + 1}':
            os.kill(os.getpid(), signal.SIGKILL)

    def after_train_epoch(self, runner):
        if self.at == f'epoch:{runner.epoch + 1}':
            os.kill(os.getpid(), signal.SIGKILL)
"""

# tools/train.py with mmengine's own Runner instead of the config's RecoverableRunner: stock
# mmengine randomness. Stock mmengine 0.10.7 on torch >= 2.6 cannot --resume at all (its message
# hub holds numpy scalars, refused by weights_only=True); so that the resumed run differs by its
# randomness only, this Runner loads checkpoints as RecoverableRunner does, and changes nothing else
STOCK_TRAIN = """
import runpy
import sys

from mmdet.registry import RUNNERS
from mmengine.runner import Runner

from mmlightbb.engine import runner_checkpoint_loading


@RUNNERS.register_module()
class StockRandomnessRunner(Runner):
    def load_checkpoint(self, filename, *args, **kwargs):
        with runner_checkpoint_loading(filename):
            return super().load_checkpoint(filename, *args, **kwargs)


sys.argv = [*sys.argv[1:], '--cfg-options', 'runner_type=mmdet.StockRandomnessRunner']
runpy.run_path(sys.argv[0], run_name='__main__')
"""


class StockRandomnessRunner(Runner):
    """mmengine's Runner that can resume on torch >= 2.6 (the loading of RecoverableRunner), with
    stock mmengine randomness (see STOCK_TRAIN)."""

    def load_checkpoint(self, filename, *args, **kwargs):
        with runner_checkpoint_loading(filename):
            return super().load_checkpoint(filename, *args, **kwargs)


# ------------------------------------------------------------------------------ configs and runs
@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('exact_resume')
    data = write_shapes_coco(str(root / 'data'), num_images=NUM_IMAGES, size=80)
    (root / 'kill_hook.py').write_text(KILL_HOOK)
    (root / 'stock_train.py').write_text(STOCK_TRAIN)
    return root, data


def _shrink(node, size):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ('img_scale', 'scale') and isinstance(value, tuple):
                node[key] = (size, size)
            elif key == 'border' and isinstance(value, tuple):
                node[key] = (-size // 2, -size // 2)
            else:
                _shrink(value, size)
    elif isinstance(node, list):
        for item in node:
            _shrink(item, size)


def _common(cfg, data, dataset, num_workers, persistent, max_epochs):
    """Tiny data, no validation, a checkpoint every epoch (all kept), the kill hook, a seed."""
    dataset.update(data_root=data['data_root'], ann_file=data['ann_file'],
                   data_prefix=dict(img=data['img_prefix']), metainfo=dict(classes=TINY_CLASSES))
    cfg.train_dataloader.update(batch_size=BATCH, num_workers=num_workers,
                                persistent_workers=persistent)
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator', 'test_dataloader', 'test_cfg',
                'test_evaluator'):
        cfg[key] = None
    cfg.train_cfg.max_epochs = max_epochs
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=-1, save_best=None)
    cfg.default_hooks.logger.interval = 1
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='KillHook')]
    cfg.custom_imports = dict(imports=['mmlightbb', 'kill_hook'], allow_failed_imports=False)
    cfg.randomness = dict(seed=0)


def yolox_config(directory, data, num_workers=0, persistent=False, max_epochs=3, name='yolox'):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs/yolox_fasternet_t0_tiny.py'))
    cfg.model.backbone.init_cfg = None  # no download in tests
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == YOLOX_PIPELINE  # the real one, only smaller
    _shrink(pipeline, 64)
    cfg.model.backbone.drop_path_rate = 0.1
    cfg.model.bbox_head.num_classes = len(TINY_CLASSES)
    (augment,) = cfg.model.data_preprocessor.batch_augments
    assert augment['type'] == 'BatchSyncRandomResize'
    augment.update(random_size_range=(64, 96), interval=1)
    _common(cfg, data, cfg.train_dataloader.dataset.dataset, num_workers, persistent, max_epochs)
    for hook in cfg.custom_hooks:
        if hook['type'] == 'YOLOXModeSwitchHook':  # Mosaic and MixUp off in the last epoch
            hook['num_last_epochs'] = 0
    path = osp.join(directory, f'{name}.py')
    cfg.dump(path)
    return path


def cascade_config(directory, data, max_epochs=2):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs/cascade_rcnn_fasternet.py'))
    cfg.model.backbone.init_cfg = None  # no download in tests
    _shrink(cfg.train_dataloader.dataset.pipeline, 64)
    assert 'RandomFlip' in [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    cfg.model.backbone = dict(type='FasterNet', arch='t0', out_indices=(0, 1, 2, 3),
                              drop_path_rate=0.1, init_cfg=None)
    cfg.model.neck.in_channels = [40, 80, 160, 320]
    for head in cfg.model.roi_head.bbox_head:
        head['num_classes'] = len(TINY_CLASSES)
    # 32 sampled RoIs an image instead of 512: the three R-CNN heads' cost on CPU (still drawn at
    # random in the main process, as the RPN's 256 anchors are)
    cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    for stage in cfg.model.train_cfg.rcnn:
        stage['sampler']['num'] = 32
    # the shipped loader settings: 2 persistent workers, AspectRatioBatchSampler
    _common(cfg, data, cfg.train_dataloader.dataset, cfg.train_dataloader.num_workers,
            cfg.train_dataloader.persistent_workers, max_epochs)
    path = osp.join(directory, 'cascade.py')
    cfg.dump(path)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def train(root, work, cfg, *args, kill_at='', stock=False, procs=1):
    """Run tools/train.py (tools/dist_train.sh when procs > 1) into ``work``; return its exit
    status and log. The log goes to a file, not a pipe: data-loader workers orphaned by a SIGKILL
    keep a pipe open for seconds."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(root), KILL_AT=kill_at)
    if procs == 1:
        script = [str(root / 'stock_train.py'), 'tools/train.py'] if stock else ['tools/train.py']
        command = [sys.executable, *script]
    else:
        assert not stock
        bin_dir = root / 'bin'  # tools/dist_train.sh runs ${PYTHON:-python}
        bin_dir.mkdir(exist_ok=True)
        if not (bin_dir / 'python').exists():
            (bin_dir / 'python').symlink_to(sys.executable)
        env.update(PYTHON=sys.executable, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
                   PORT=str(free_port()))
        command = ['tools/dist_train.sh']
    log_path = f'{work}.{uuid.uuid4().hex[:6]}.log'
    with open(log_path, 'w') as log:
        extra = [str(procs)] if procs > 1 else []
        proc = subprocess.run([*command, cfg, *extra, '--work-dir', str(work), *args], cwd=REPO,
                              env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    with open(log_path) as log:
        return proc.returncode, log.read()


def checkpoints(work):
    return sorted(p.name for p in work.glob('epoch_*.pth'))


def assert_same(a, b, where):
    """Bitwise equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f'{where} differs (max abs diff {(a - b).abs().max()})'
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def assert_same_training_state(expected, resumed):
    assert resumed['meta']['iter'] == expected['meta']['iter']
    for key in ('state_dict', 'ema_state_dict', 'optimizer', CHECKPOINT_KEY):
        if key in expected or key in resumed:
            assert_same(expected[key], resumed[key], key)


def max_weight_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope='module')
def yolox_reference(workspace):
    """The uninterrupted run: epoch checkpoints 1..3."""
    root, data = workspace
    work = root / 'reference'
    code, log = train(root, work, yolox_config(root, data, name='reference'))
    assert code == 0, log[-3000:]
    assert 'exact resumption: random draws are reseeded' in log
    assert 'No mosaic and mixup aug now!' in log
    checkpoints = {epoch: safe_load(work / f'epoch_{epoch}.pth') for epoch in (1, 2, 3)}
    assert 'ema_state_dict' in checkpoints[3]
    # BatchSyncRandomResize's size is saved with every checkpoint; epoch 3 starts at 96 px, not
    # at the pipeline's 64: resuming from epoch_2.pth needs the saved size (seed 0's draws)
    sizes = [c[CHECKPOINT_KEY]['batch_augment_sizes'] for c in checkpoints.values()]
    assert sizes[1] == {'data_preprocessor.batch_augments.0': [96, 96]}, sizes
    return checkpoints


# --------------------------------------------------------------------- the real YOLOX pipeline
KILLS = {  # where each setting's run is killed (then resumed), in turn
    # after iteration 2 of 3 of epoch 2, then right after epoch 2's checkpoint
    'main-process': (0, False, [f'iter:{ITERS + 2}', 'epoch:2']),
    'two-workers': (2, False, [f'iter:{ITERS + 2}']),
    # right after epoch 1's checkpoint: the resumed process runs epochs 2 and 3 with the same
    # persistent workers, restarted by YOLOXModeSwitchHook for epoch 3
    'two-persistent-workers': (2, True, ['epoch:1']),
}


def complete(kill_at):
    """Epochs complete when KillHook fires at ``kill_at``."""
    where, n = kill_at.split(':')
    return int(n) if where == 'epoch' else (int(n) - 1) // ITERS


@pytest.mark.slow
@pytest.mark.parametrize('setting', [
    'main-process', 'two-workers', 'two-persistent-workers'])
def test_yolox_killed_and_resumed_equals_uninterrupted_bitwise(workspace, yolox_reference,
                                                               tmp_path, setting):
    """SIGKILLed mid-epoch or at an epoch boundary and resumed with ``--resume`` until done: every
    epoch checkpoint equals the uninterrupted run's bit for bit (weights, EMA, optimizer), with
    the data loaded in the main process or by 2 workers, persistent or not."""
    root, data = workspace
    num_workers, persistent, kills = KILLS[setting]
    cfg = yolox_config(tmp_path, data, num_workers, persistent)
    work = tmp_path / 'work'
    for n, kill_at in enumerate(kills):
        saved = len(checkpoints(work)) if n else 0
        code, log = train(root, work, cfg, *(['--resume'] if n else []), kill_at=kill_at)
        assert code == -signal.SIGKILL, log[-3000:]
        if n:
            assert f'resumed epoch: {saved}, iter: {saved * ITERS}' in log
        assert checkpoints(work) == [f'epoch_{e}.pth' for e in range(1, complete(kill_at) + 1)]

    saved = len(checkpoints(work))
    code, log = train(root, work, cfg, '--resume')
    assert code == 0, log[-3000:]
    assert f'resumed epoch: {saved}, iter: {saved * ITERS}' in log
    assert 'No mosaic and mixup aug now!' in log
    for epoch in (1, 2, 3):
        assert_same_training_state(yolox_reference[epoch], safe_load(work / f'epoch_{epoch}.pth'))


@pytest.mark.slow
def test_stock_mmengine_resumes_with_other_random_draws(workspace, tmp_path):
    """The reason for RecoverableRunner's seeding: with mmengine's Runner (stock seeding), a run
    resumed from the epoch-1 checkpoint ends epoch 2 with other weights than the uninterrupted run, although the
    code, data, seed and checkpoint are the same."""
    import shutil
    root, data = workspace
    cfg = yolox_config(tmp_path, data)
    reference, work = tmp_path / 'reference', tmp_path / 'work'
    code, log = train(root, reference, cfg, kill_at='epoch:2', stock=True)  # 2 epochs suffice
    assert code == -signal.SIGKILL, log[-3000:]
    assert 'exact resumption' not in log and NOT_RESUMABLE_MESSAGE not in log
    # what a kill in epoch 2 leaves behind (the runs are deterministic up to there)
    work.mkdir()
    shutil.copy(reference / 'epoch_1.pth', work / 'epoch_1.pth')
    code, log = train(root, work, cfg, '--resume', str(work / 'epoch_1.pth'), kill_at='epoch:2',
                      stock=True)
    assert code == -signal.SIGKILL and f'resumed epoch: 1, iter: {ITERS}' in log, log[-3000:]

    expected, resumed = (safe_load(d / 'epoch_2.pth') for d in (reference, work))
    assert CHECKPOINT_KEY not in resumed
    assert max_weight_diff(expected['state_dict'], resumed['state_dict']) > 0
    assert any(not torch.equal(v, resumed['ema_state_dict'][k])
               for k, v in expected['ema_state_dict'].items())


@pytest.mark.slow
def test_two_gloo_processes_killed_and_resumed_equal_uninterrupted(workspace, tmp_path):
    """tools/dist_train.sh with 2 processes (2 persistent workers each), 2 epochs of 2
    iterations: killed after iteration 1 of epoch 2 and resumed, epoch 2 equals the
    uninterrupted 2-process run's."""
    root, data = workspace
    cfg = yolox_config(tmp_path, data, num_workers=2, persistent=True, max_epochs=2)
    iters = -(-NUM_IMAGES // (2 * BATCH))  # per process and epoch
    reference, work = tmp_path / 'reference', tmp_path / 'work'
    code, log = train(root, reference, cfg, procs=2)
    assert code == 0, log[-4000:]
    code, log = train(root, work, cfg, kill_at=f'iter:{iters + 1}', procs=2)
    assert code != 0 and checkpoints(work) == ['epoch_1.pth'], log[-4000:]
    code, log = train(root, work, cfg, '--resume', procs=2)
    assert code == 0, log[-4000:]
    assert f'resumed epoch: 1, iter: {iters}' in log
    assert_same_training_state(safe_load(reference / 'epoch_2.pth'),
                               safe_load(work / 'epoch_2.pth'))


@pytest.mark.slow
def test_cascade_rcnn_killed_and_resumed_equals_uninterrupted(workspace, tmp_path):
    """configs/cascade_rcnn_fasternet.py (RandomFlip, AspectRatioBatchSampler, 2 persistent
    workers, random RPN/R-CNN sampling in the main process) with FasterNet-T0 at 64 px."""
    root, data = workspace
    cfg = cascade_config(tmp_path, data)
    reference, work = tmp_path / 'reference', tmp_path / 'work'
    code, log = train(root, reference, cfg)
    assert code == 0, log[-3000:]
    code, log = train(root, work, cfg, kill_at=f'iter:{ITERS + 1}')
    assert code == -signal.SIGKILL and checkpoints(work) == ['epoch_1.pth'], log[-3000:]
    code, log = train(root, work, cfg, '--resume')
    assert code == 0 and f'resumed epoch: 1, iter: {ITERS}' in log, log[-3000:]
    assert_same_training_state(safe_load(reference / 'epoch_2.pth'),
                               safe_load(work / 'epoch_2.pth'))


# ------------------------------------------------------------------- the mechanism, in-process
class DrawingDataset(Dataset):
    """Each sample draws once from python random, numpy and torch, as an augmentation does."""

    def __len__(self):
        return NUM_IMAGES

    def __getitem__(self, index):
        return dict(inputs=torch.tensor(
            [index, random.random(), np.random.rand(), float(torch.rand(()))], dtype=torch.float64))


def as_list(batch):
    return batch


def loader_draws(num_workers, persistent, epochs, start=0, seeded=True):
    """The samples of ``epochs``, loaded by a process that starts at epoch ``start`` (a resumed
    run) with generators seeded as mmengine seeds them."""
    from mmengine.runner import set_random_seed
    set_random_seed(0)
    loader = DataLoader(DrawingDataset(), batch_size=BATCH, num_workers=num_workers,
                        persistent_workers=persistent, collate_fn=as_list)
    state = _SeedState(seed=0, rank=0, epoch=start)
    if seeded:
        assert install_seeded_loading(loader, state) is None
    draws = {}
    for epoch in range(start, epochs):
        state.start_epoch(epoch)  # what ExactResumeHook.before_train_epoch does
        draws[epoch] = torch.stack([s['inputs'] for batch in loader for s in batch])
    if loader._iterator is not None:  # persistent workers: stop them now
        loader._iterator._shutdown_workers()
    return draws


def test_sample_draws_depend_on_epoch_and_position_only():
    """The same draws with 0 or 2 workers, persistent or not, and in a process that starts at
    epoch 2 (resumed); different draws in every epoch and for every sample."""
    continuous = loader_draws(0, False, 3)
    assert len({tuple(row[1:].tolist()) for d in continuous.values() for row in d}) == 3 * 6
    for workers, persistent in ((2, False), (2, True)):
        other = loader_draws(workers, persistent, 3)
        for epoch in range(3):
            assert torch.equal(other[epoch], continuous[epoch]), (workers, persistent, epoch)
    assert torch.equal(loader_draws(2, True, 3, start=2)[2], continuous[2])
    assert torch.equal(loader_draws(0, False, 3, start=2)[2], continuous[2])


def test_stock_loading_draws_depend_on_the_process_history():
    """Without seeding, a process that starts at epoch 2 (a resumed run) draws other numbers in
    the main process and in persistent workers."""
    for workers, persistent in ((0, False), (2, True)):
        continuous = loader_draws(workers, persistent, 3, seeded=False)
        resumed = loader_draws(workers, persistent, 3, start=2, seeded=False)
        assert not torch.equal(resumed[2], continuous[2]), (workers, persistent)


def test_loading_in_the_main_process_leaves_its_generators_alone():
    loader = DataLoader(DrawingDataset(), batch_size=BATCH, collate_fn=as_list)
    install_seeded_loading(loader, _SeedState(seed=0, rank=0, epoch=0))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(()))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    list(loader)
    assert (random.random(), np.random.rand(), torch.rand(())) == expected


def test_seeded_index_is_an_int_that_survives_pickling():
    import pickle
    index = SeededIndex(4, seed=2**63 + 5)
    copy = pickle.loads(pickle.dumps(index))
    assert copy == 4 and copy.seed == 2**63 + 5 and [10, 11, 12, 13, 14][copy] == 14


def _toy_runner(work_dir, seed, max_epochs=3, resume_from=None, iters=None, num_workers=0,
                runner_cls=RecoverableRunner):
    """A ``runner_cls`` with a tiny model that draws dropout masks, on DrawingDataset;
    iteration-based with an InfiniteSampler and a checkpoint every 4 iterations when ``iters`` is
    given."""
    from mmengine.model import BaseModel

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            x = torch.stack(inputs).float()
            x = nn.functional.dropout(x, 0.5, training=self.training)  # main-process draws
            return dict(loss=((self.linear(x) - 1) ** 2).mean())

    by_epoch = iters is None
    torch.manual_seed(0)  # the same initial weights in every run
    return runner_cls(
        model=Toy(), work_dir=str(work_dir), experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(
            dataset=DrawingDataset(), batch_size=BATCH, num_workers=num_workers,
            persistent_workers=num_workers > 0,
            sampler=dict(type='DefaultSampler' if by_epoch else 'InfiniteSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs) if by_epoch else dict(
            by_epoch=False, max_iters=iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1 if by_epoch else 4,
                                           by_epoch=by_epoch)),
        randomness=dict(seed=seed), load_from=resume_from, resume=resume_from is not None)


def _train(runner):
    """``runner.train()``, then its persistent workers stopped (else they linger until garbage
    collection, which then waits for them)."""
    runner.train()
    iterator = getattr(runner.train_loop, 'dataloader_iterator', None)  # IterBasedTrainLoop
    for candidate in (getattr(iterator, '_iterator', None), runner.train_dataloader._iterator):
        if hasattr(candidate, '_shutdown_workers'):
            candidate._shutdown_workers()


def _toy_resume_matches(tmp_path, runner_cls=RecoverableRunner):
    """Epoch-based, 3 epochs: uninterrupted vs. stopped after epoch 1 and resumed."""
    _toy_runner(tmp_path / 'a', seed=0, runner_cls=runner_cls).train()
    _toy_runner(tmp_path / 'b', seed=0, max_epochs=1, runner_cls=runner_cls).train()
    _toy_runner(tmp_path / 'b', seed=0, resume_from=str(tmp_path / 'b/epoch_1.pth'),
                runner_cls=runner_cls).train()
    a, b = (safe_load(tmp_path / d / 'epoch_3.pth')['state_dict'] for d in 'ab')
    return all(torch.equal(a[k], b[k]) for k in a)


def test_runner_with_seed_resumes_exactly_in_process(tmp_path):
    assert _toy_resume_matches(tmp_path)


def test_stock_runner_with_seed_does_not(tmp_path):
    assert not _toy_resume_matches(tmp_path, StockRandomnessRunner)


@pytest.mark.parametrize('num_workers', [0, 2])
def test_iteration_based_training_resumes_exactly(tmp_path, num_workers):
    """IterBasedTrainLoop (it iterates its loader when built; mmengine replays the data of the
    done iterations on resume): 12 iterations vs. 4, then resumed from iter_4.pth to 12."""
    _train(_toy_runner(tmp_path / 'a', seed=0, iters=12, num_workers=num_workers))
    _train(_toy_runner(tmp_path / 'b', seed=0, iters=4, num_workers=num_workers))
    _train(_toy_runner(tmp_path / 'b', seed=0, iters=12, num_workers=num_workers,
                       resume_from=str(tmp_path / 'b/iter_4.pth')))
    a, b = (safe_load(tmp_path / d / 'iter_12.pth')['state_dict'] for d in 'ab')
    assert_same(a, b, 'state_dict')


def test_without_seed_nothing_changes_but_one_log_line(tmp_path):
    from torch.utils.data import DataLoader as TorchDataLoader
    runner = _toy_runner(tmp_path, seed=None, max_epochs=1)
    runner.train()
    assert not any(isinstance(hook, ExactResumeHook) for hook in runner.hooks)
    loader = runner.train_dataloader
    assert type(loader) is TorchDataLoader and '__getitems__' not in vars(loader.dataset)
    assert CHECKPOINT_KEY not in safe_load(tmp_path / 'epoch_1.pth')
    (log,) = tmp_path.glob('*/*.log')
    lines = [line for line in log.read_text().splitlines() if NOT_RESUMABLE_MESSAGE in line]
    assert len(lines) == 1 and 'randomness=dict(seed=0)' in lines[0]


def test_with_seed_the_hook_and_seeded_loading_are_installed(tmp_path):
    runner = _toy_runner(tmp_path, seed=3, max_epochs=1)
    runner.train()
    assert [type(h) for h in runner.hooks].count(ExactResumeHook) == 1
    assert runner.hooks[0].__class__ is ExactResumeHook  # HIGHEST: reseeds before other hooks
    assert vars(runner.train_dataloader.dataset)['__getitems__'] is not None
    assert CHECKPOINT_KEY in safe_load(tmp_path / 'epoch_1.pth')


def test_only_the_recoverable_runner_prepares_exact_resumption_once(tmp_path):
    """What replaced the patch of ``Runner.build_train_loop``: mmengine's Runner is left as it is
    (no hook, a plain loader), RecoverableRunner prepares the run once, however often asked."""
    from torch.utils.data import DataLoader as TorchDataLoader
    stock = _toy_runner(tmp_path / 'stock', seed=3, max_epochs=1, runner_cls=StockRandomnessRunner)
    assert Runner.build_train_loop is not RecoverableRunner.build_train_loop
    stock.train()
    assert not any(isinstance(hook, ExactResumeHook) for hook in stock.hooks)
    assert type(stock.train_dataloader) is TorchDataLoader
    assert '__getitems__' not in vars(stock.train_dataloader.dataset)
    assert CHECKPOINT_KEY not in safe_load(tmp_path / 'stock/epoch_1.pth')

    runner = _toy_runner(tmp_path / 'ours', seed=3, max_epochs=1)
    runner.train()
    prepare_exact_resumption(runner)  # idempotent: still one hook, the same seeded loader
    loader = runner.train_dataloader
    prepare_exact_resumption(runner)
    assert [type(h) for h in runner.hooks].count(ExactResumeHook) == 1
    assert runner.train_dataloader is loader and type(loader) is not TorchDataLoader
