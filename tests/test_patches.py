"""mmlightbb.engine.patches: every change that ``import mmlightbb`` makes to torch and mmengine is
listed there, applied once, and can be undone to stock behaviour (and applied again)."""
import io

import pytest
import torch
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS, MODELS
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local as stock_local_loader

import mmlightbb  # noqa: F401
from mmlightbb.engine import AtomicCheckpointHook, AtomicLocalBackend
from mmlightbb.engine.checkpoint import RUNNER_CHECKPOINT_GLOBALS, load_from_local
from mmlightbb.engine.patches import PATCHES, apply_all, undo_all
from mmlightbb.models.neck_check import ChannelMismatchError


def _state():
    """What each patch changes, as seen from outside."""
    return dict(
        safe_globals=len(torch.serialization.get_safe_globals()),
        local_backend=type(get_file_backend('/tmp/x.pth')),
        loader=CheckpointLoader._schemes[''],
        checkpoint_hook=HOOKS.get('CheckpointHook'),
        ln2d='LN2d' in MODELS._module_dict,
        hardsigmoid='Hardsigmoid' in MODELS._module_dict,
        neck_check=_neck_check_fires(),
        bf16_nms=_bf16_nms_runs(),
    )


def _bf16_nms_runs() -> bool:
    from mmcv.ops import batched_nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            dets, keep = batched_nms(boxes.bfloat16(), scores.bfloat16(), torch.zeros(3),
                                     dict(type='nms', iou_threshold=0.5))
    except RuntimeError as err:
        assert 'expected scalar type Float' in str(err)
        return False
    assert keep.tolist() == [0, 2]
    return True


def _neck_check_fires() -> bool:
    from mmlightbb.models.backbones import FasterNet
    parent = torch.nn.Module()
    parent.backbone = FasterNet(arch='t0', out_indices=(1, 2, 3))
    neck = torch.nn.Module()
    neck.in_channels = [1, 2, 3]
    try:
        parent.neck = neck
    except ChannelMismatchError:
        return True
    return False


PATCHED = dict(local_backend=AtomicLocalBackend, loader=load_from_local,
               checkpoint_hook=AtomicCheckpointHook, ln2d=True, hardsigmoid=True, neck_check=True,
               bf16_nms=True)
STOCK = dict(local_backend=LocalBackend, loader=stock_local_loader, checkpoint_hook=CheckpointHook,
             ln2d=False, hardsigmoid=False, neck_check=False, bf16_nms=False)


@pytest.fixture
def undone():
    undo_all()
    try:
        yield
    finally:
        apply_all()


def test_every_patch_says_what_and_why_and_is_applied_by_import():
    assert len(PATCHES) >= 6 and all(p.applied for p in PATCHES)
    for patch in PATCHES:
        assert patch.name and len(patch.why) > 40, patch.name
    state = _state()
    assert {k: state[k] for k in PATCHED} == PATCHED


def test_apply_is_idempotent():
    before = _state()
    apply_all()
    apply_all()
    assert _state() == before


def test_undo_restores_stock_torch_and_mmengine(undone):
    state = _state()
    assert {k: state[k] for k in STOCK} == STOCK
    apply_all()
    state = _state()
    assert {k: state[k] for k in PATCHED} == PATCHED


def test_undo_restores_the_allow_list_exactly(undone):
    stock = torch.serialization.get_safe_globals()
    apply_all()
    patched = torch.serialization.get_safe_globals()
    assert all(g in patched for g in RUNNER_CHECKPOINT_GLOBALS)
    undo_all()
    assert set(torch.serialization.get_safe_globals()) == set(stock)  # torch keeps no order


def test_stock_loading_refuses_a_runner_checkpoint_that_the_patch_allows(undone, tmp_path):
    """The reason for the allow-list: a Runner checkpoint's message hub holds numpy scalars."""
    import numpy as np
    path = tmp_path / 'runner.pth'
    torch.save({'meta': {'seed': np.int64(3)}, 'state_dict': {'w': torch.ones(1)}}, path)
    with pytest.raises(Exception, match='weights_only|Unsupported global'):
        CheckpointLoader.load_checkpoint(str(path))
    apply_all()
    assert CheckpointLoader.load_checkpoint(str(path))['meta']['seed'] == 3


def test_atomic_backend_is_what_mmengine_writes_with(tmp_path):
    buffer = io.BytesIO()
    torch.save({'w': torch.ones(1)}, buffer)
    get_file_backend(str(tmp_path)).put(buffer.getvalue(), str(tmp_path / 'a.pth'))
    assert torch.load(tmp_path / 'a.pth')['w'].item() == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


def test_roi_align_takes_bf16_features_under_autocast(undone):
    """Cascade R-CNN's RoI extractor under bf16 autocast: the neck hands RoIAlign bf16 maps."""
    from mmcv.ops import RoIAlign
    layer = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    feats = torch.randn(1, 4, 16, 16)
    rois = torch.tensor([[0., 1., 1., 8., 8.]])
    with pytest.raises(NotImplementedError, match='BFloat16'):
        layer(feats.bfloat16(), rois)
    apply_all()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = layer(feats.bfloat16(), rois.bfloat16())
    assert out.dtype == torch.bfloat16  # the features' dtype, as the extractor's buffer has
    assert torch.allclose(out.float(), layer(feats.bfloat16().float(), rois), atol=1e-2)
