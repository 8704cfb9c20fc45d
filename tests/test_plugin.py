"""The plugin mechanism: registration, custom_imports, train/test tools, safe checkpoints."""
import pickle

import pytest
import torch

from helpers import run_tool, tiny_yolox_config

BACKBONE = dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3))
NECK_IN = [80, 160, 320]


def test_import_registers_backbones_in_mmdet_registry():
    import mmlightbb  # noqa: F401
    from mmdet.registry import MODELS
    for name in ('ConvNeXt', 'CSPConvNeXt', 'FasterNet', 'RepLKNet', 'ParameterNet'):
        assert MODELS.get(name) is not None, name
        assert MODELS.get(name).__module__.startswith('mmlightbb.'), name


def test_stock_yolox_config_with_custom_imports_trains_and_predicts(tiny_coco, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg_file = tmp_path / 'yolox_tiny_fasternet.py'
    cfg_file.write_text(tiny_yolox_config(tiny_coco, BACKBONE, NECK_IN))
    cfg = Config.fromfile(str(cfg_file))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1000)
    cfg.param_scheduler = []
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1000)
    runner = Runner.from_cfg(cfg)
    assert type(runner.model.backbone).__module__.startswith('mmlightbb.')
    runner.train()
    assert runner.iter == 1
    losses = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(losses))
    batch = next(iter(runner.build_dataloader(cfg.test_dataloader)))
    runner.model.eval()
    with torch.no_grad():
        results = runner.model.test_step(batch)
    assert len(results) == len(batch['inputs'])
    pred = results[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred.scores) == len(pred.labels)


@pytest.mark.slow
def test_train_then_resume_continues_from_saved_epoch(tiny_coco, tmp_path):
    from mmlightbb.engine import safe_load
    cfg_file = tmp_path / 'yolox_resume.py'
    cfg_file.write_text(tiny_yolox_config(tiny_coco, BACKBONE, NECK_IN, max_epochs=2))
    work = tmp_path / 'work'
    first = run_tool('tools/train.py', str(cfg_file), '--work-dir', str(work))
    assert first.returncode == 0, first.stderr[-3000:]
    epoch2 = safe_load(work / 'epoch_2.pth')
    iters_per_epoch = 4  # 8 images / batch 2
    assert epoch2['meta']['epoch'] == 2 and epoch2['meta']['iter'] == 2 * iters_per_epoch

    resumed = run_tool('tools/train.py', str(cfg_file), '--work-dir', str(work), '--resume',
                       '--cfg-options', 'train_cfg.max_epochs=3')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed epoch: 2, iter: 8' in log
    assert 'Epoch(train) [1]' not in log and 'Epoch(train) [3]' in log
    epoch3 = safe_load(work / 'epoch_3.pth')
    assert epoch3['meta']['epoch'] == 3 and epoch3['meta']['iter'] == 3 * iters_per_epoch
    # the optimizer state was restored, not rebuilt: SGD momentum buffers exist from the first run
    # and the scheduler continued counting
    assert epoch3['optimizer']['state'], 'optimizer state missing after resume'
    assert epoch3['param_schedulers'][0]['last_step'] > epoch2['param_schedulers'][0]['last_step']

    test = run_tool('tools/test.py', str(cfg_file), str(work / 'epoch_3.pth'), '--work-dir',
                    str(tmp_path / 'test'))
    assert test.returncode == 0, test.stderr[-3000:]
    out = test.stdout + test.stderr
    assert f"Load checkpoint from {work / 'epoch_3.pth'}" in out and 'Epoch(test) [4/4]' in out


class _RunsCode:
    """Unpickling this would execute code that writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").write("pwned")', ))


def test_checkpoint_with_arbitrary_callable_is_refused_and_runs_nothing(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader

    from mmlightbb.engine import UnsafeCheckpointError, runner_checkpoint_loading, safe_load
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': _RunsCode(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'`exec`.*trust'):
        safe_load(path)
    # the same refusal through mmengine's loader, which Runner (load_from / resume) and init_cfg
    # use: stock torch >= 2.6 loads with weights_only=True ...
    with pytest.raises(pickle.UnpicklingError, match=r'exec'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    # ... and so does RecoverableRunner.load_checkpoint, its allow-list a Runner checkpoint's only
    with pytest.raises(UnsafeCheckpointError, match=r'`exec`.*trust'):
        with runner_checkpoint_loading(path):
            CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


def test_test_tool_refuses_unsafe_checkpoint_with_clear_message(tiny_coco, tmp_path):
    marker = tmp_path / 'marker'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _RunsCode(str(marker))}, path)
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(tiny_yolox_config(tiny_coco, BACKBONE, NECK_IN))
    proc = run_tool('tools/test.py', str(cfg_file), str(path), '--work-dir', str(tmp_path / 'w'))
    assert proc.returncode != 0
    assert '`exec`' in proc.stderr and 'weights_only' in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize('content', [b'', b'not a checkpoint at all', None])
def test_bad_checkpoint_files_raise_clear_errors(tmp_path, content):
    from mmlightbb.engine import CheckpointFormatError, safe_load
    path = tmp_path / 'bad.pth'
    if content is None:  # a real checkpoint cut in half
        torch.save({'w': torch.randn(1000)}, path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match='not a readable PyTorch checkpoint'):
        safe_load(path)
    with pytest.raises(FileNotFoundError, match='not found'):
        safe_load(tmp_path / 'missing.pth')


def test_config_tool_errors_name_the_problem(tmp_path, tiny_coco):
    proc = run_tool('tools/train.py', 'configs/does_not_exist.py')
    assert proc.returncode != 0 and 'config file not found' in proc.stderr
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(tiny_yolox_config(tiny_coco, BACKBONE, NECK_IN))
    proc = run_tool('tools/train.py', str(cfg_file), '--cfg-options', 'modle.backbone.arch=t1')
    assert proc.returncode != 0 and "'modle.backbone' does not exist" in proc.stderr
