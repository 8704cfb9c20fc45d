"""bf16 on CPU: every backbone (small custom archs) runs under ``torch.autocast('cpu', bf16)`` in
training form, deployed form and in train mode, within a stated tolerance of fp32; a bf16 training
step (backbone, and a whole YOLOX detector through ``CPUBF16OptimWrapper``) has a finite loss and
finite gradients; detectors test in bf16 through ``AutocastTestLoop`` (``autocast_compute``: the
backbone, neck and heads under autocast, NMS/RoIAlign and the metrics in fp32), where a whole
``test_step`` under stock autocast fails in mmcv's fp32-only CPU kernels; the precision settings of
the benchmark, tools/test.py and tools/train.py.

Tolerance: bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per op); through a whole
backbone the max relative difference of the outputs (``max|fp32 - bf16| / max|fp32|``) measured
0.6e-2 to 1.2e-2 on the custom archs, so ``BF16_RTOL = 3e-2``. Outputs are compared in eval
mode: in train mode BN normalises by batch statistics, which on the tiny test maps (2x2 in the last
stage, 8 values per channel at batch 2) amplify the bf16 rounding to 0.1-0.4 there, so the training
step is checked for finite loss and gradients instead. Skipped, with the reason, on CPUs
without native bf16 (avx512_bf16 / amx_bf16).
"""
import dataclasses
import os.path as osp
import sys

import pytest
import torch

import mmlightbb  # noqa: F401
from mmlightbb.analysis import benchmark as bm
from mmlightbb.engine.precision import (AutocastTestLoop, CPUBF16OptimWrapper, autocast_compute,
                                        autocast_context, cpu_bf16_support, resolve_precision)
from mmlightbb.models.backbones import BACKBONES
from mmlightbb.models.layers import randomize_bn_stats

from helpers import CUSTOM_ARCHS, FAST, REPO, TinyDet, build, load_tool, loss_of

BF16_RTOL = 3e-2
NATIVE, REASON = cpu_bf16_support()
needs_bf16 = pytest.mark.skipif(not NATIVE, reason=f'no native bf16 on this CPU: {REASON}')
ARCHS = [pytest.param(name, arch, id=f'{name}-{arch}')
         for name in BACKBONES for arch in CUSTOM_ARCHS[name]]


def _same_structure_close(ref, out, tol=BF16_RTOL):
    assert len(ref) == len(out)
    for r, o in zip(ref, out):
        assert r.shape == o.shape
        assert torch.isfinite(o).all()
        diff = bm.max_rel_diff(r, o)
        assert diff <= tol, f'bf16 vs fp32 max relative difference {diff:.2e} > {tol}'


@needs_bf16
@pytest.mark.parametrize('name, arch', ARCHS)
def test_bf16_inference_train_and_deploy_forms_close_to_fp32(name, arch):
    torch.manual_seed(0)
    model = build(name, arch)
    randomize_bn_stats(model, 0)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    for form in ('train form', 'deployed'):
        if form == 'deployed':
            model.switch_to_deploy()
        with torch.no_grad():
            ref = model(x)
            with autocast_context('bf16', 'cpu'):
                out = model(x)
        _same_structure_close(ref, out)


@needs_bf16
@pytest.mark.parametrize('name, arch', ARCHS)
def test_bf16_training_step_of_every_backbone(name, arch):
    torch.manual_seed(0)
    model = build(name, arch).train()
    x = torch.randn(2, 3, 64, 64)
    with autocast_context('bf16', 'cpu'):
        loss = loss_of(model(x))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    assert all(g is None or (g.dtype == torch.float32 and torch.isfinite(g).all()) for g in grads)


def test_fasternet_deployed_gemm_path_under_autocast_has_one_dtype():
    """The deployed CPU GEMM block (``MLPBlock._forward_matmuls``) used to fail under bf16
    autocast: its in-place ``addmm_`` got a bf16 and an fp32 operand."""
    model = build('FasterNet').eval()
    model.switch_to_deploy()
    x = torch.randn(1, 3, 64, 64)
    seen = []
    for m in model.modules():
        if type(m).__name__ == 'MLPBlock':
            m.register_forward_hook(lambda mod, args, out: seen.append(
                mod._runs_as_matmuls(args[0])))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    assert seen and all(seen), 'the GEMM path did not run'
    assert all(o.dtype == torch.bfloat16 for o in outs)


def test_resolve_precision():
    assert resolve_precision('fp32') == ('fp32', 'fp32')
    with pytest.raises(ValueError, match='fp16 is CUDA only'):
        resolve_precision('fp16', 'cpu')
    with pytest.raises(ValueError, match='precision must be one of'):
        resolve_precision('int8')
    ran, note = resolve_precision('bf16', 'cpu', warn=False)
    assert ran == ('bf16' if NATIVE else 'fp32') and (REASON in note)


def test_bf16_falls_back_to_fp32_with_one_warning_without_native_support(monkeypatch):
    from mmlightbb.engine import precision
    monkeypatch.setattr(precision, 'cpu_bf16_support', lambda: (False, 'no avx512_bf16'))
    with pytest.warns(RuntimeWarning, match='bf16 requested but not native here'):
        assert precision.resolve_precision('bf16', 'cpu')[0] == 'fp32'


def test_settings_precision_and_fp16_alias():
    s = bm.BenchmarkSettings(precision='bf16')
    assert s.precision == 'bf16' and s.dtype == 'bfloat16' and not s.fp16
    assert dataclasses.replace(s, precision='fp32').dtype == 'float32'
    with pytest.raises(ValueError, match='fp16 is CUDA only'):
        bm.BenchmarkSettings(fp16=True)
    with pytest.raises(ValueError, match='exclude each other'):
        bm.BenchmarkSettings(fp16=True, precision='bf16')
    with pytest.raises(ValueError, match='precision must be one of'):
        bm.BenchmarkSettings(precision='half')


@needs_bf16
def test_benchmark_bf16_states_its_accuracy():
    res = bm.benchmark(TinyDet(), shape=(64, 64), backbone_only=True, deploy=True,
                       precision='bf16', warmup=1, iters=2, **FAST)
    s = res['settings']
    assert (s['precision'], s['precision_requested'], s['dtype']) == ('bf16', 'bf16', 'bfloat16')
    assert 0 < res['precision_check']['max_rel_diff'] <= BF16_RTOL
    assert 'bf16 vs fp32 max rel diff' in bm.format_table(res)


def test_benchmark_bf16_without_native_support_runs_fp32(monkeypatch, capsys):
    from mmlightbb.engine import precision
    monkeypatch.setattr(precision, 'cpu_bf16_support', lambda: (False, 'no avx512_bf16'))
    res = bm.benchmark(TinyDet(), shape=(64, 64), backbone_only=True, precision='bf16',
                       warmup=0, iters=1, **FAST)
    assert res['settings']['precision'] == 'fp32' and res['settings']['dtype'] == 'float32'
    assert res['settings']['precision_requested'] == 'bf16' and res['precision_check'] is None
    err = capsys.readouterr().err
    assert 'warning: bf16 requested but not native here (no avx512_bf16); running fp32' in err


def test_test_tool_precision_sets_the_test_loop(monkeypatch):
    from mmengine.config import Config
    tool = load_tool('test.py')
    from mmdet.registry import LOOPS
    cfg = Config(dict(test_cfg=dict(type='TestLoop')))
    assert tool.set_test_precision(cfg, 'fp32') == 'fp32' and cfg.test_cfg == dict(type='TestLoop')
    ran = tool.set_test_precision(cfg, 'bf16')
    assert ran == ('bf16' if NATIVE else 'fp32')
    assert (cfg.test_cfg == dict(type='AutocastTestLoop', precision='bf16')) == NATIVE
    assert LOOPS.get('AutocastTestLoop') is AutocastTestLoop
    with pytest.raises(SystemExit, match='fp16 is CUDA only'):
        tool.set_test_precision(Config(dict(test_cfg=dict(type='TestLoop'))), 'fp16')
    if NATIVE:  # another kind of test loop is not replaced silently
        with pytest.raises(SystemExit, match="needs test_cfg type 'TestLoop'"):
            tool.set_test_precision(Config(dict(test_cfg=dict(type='MyLoop'))), 'bf16')


@needs_bf16
def test_train_amp_on_cpu_is_bf16_and_a_detector_step_is_finite():
    from mmengine.config import Config
    from mmengine.registry import OPTIM_WRAPPERS
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmengine.registry import init_default_scope

    train = load_tool('train.py')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', loss_scale='dynamic',
                                         optimizer=dict(type='SGD', lr=0.01, momentum=0.9))))
    assert train.set_amp(cfg) == 'bf16'
    assert cfg.optim_wrapper.type == 'CPUBF16OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper

    init_default_scope('mmdet')
    det_cfg = Config.fromfile(osp.join(REPO, 'configs', 'yolox_fasternet_t0_tiny.py'))
    model = MODELS.build(det_cfg.model).train()
    wrapper_cls = CPUBF16OptimWrapper
    assert OPTIM_WRAPPERS.get('CPUBF16OptimWrapper') is wrapper_cls
    from mmengine.optim import build_optim_wrapper
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)  # as the Runner builds it (mmdet)
    assert type(wrapper) is wrapper_cls
    torch.manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(img_shape=(96, 96), ori_shape=(96, 96),
                                             pad_shape=(96, 96), batch_input_shape=(96, 96),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 12., 60., 70.]]),
                                           labels=torch.tensor([0]))
        samples.append(sample)
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('iter', 0)  # YOLOX's batch resize reads it
    seen = []
    model.backbone.register_forward_hook(
        lambda mod, args, out: seen.append(torch.is_autocast_enabled('cpu')))
    weights_before = [p.detach().clone() for p in model.parameters()]
    log = model.train_step(dict(inputs=inputs, data_samples=samples), wrapper)
    assert seen == [True], 'the forward did not run under autocast'
    assert all(torch.isfinite(v).all() for v in log.values())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(weights_before, model.parameters()))


def test_tools_parse_precision_flags():
    bench = load_tool('benchmark.py')
    argv = sys.argv
    try:
        sys.argv = ['benchmark.py', 'cfg.py', '--precision', 'bf16', '--backend', 'openvino']
        _, args = bench.parse_args()
    finally:
        sys.argv = argv
    assert (args.precision, args.backend, args.fp16) == ('bf16', 'openvino', False)


def test_autocast_compute_hands_the_evaluator_fp32_inside_the_block_only():
    """Under a whole-model autocast the predicted boxes/scores are bf16, which mmdet's metrics
    cannot ``.numpy()`` ("Got unsupported ScalarType BFloat16"); ``autocast_compute`` runs the
    backbone and head under autocast and hands their outputs on in fp32, inside the block only."""
    import copy

    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from torch import nn

    class Model(nn.Module):  # the shape of an mmdet detector: backbone, head, post-processing
        def __init__(self):
            super().__init__()
            self.backbone = nn.Linear(4, 8)
            self.bbox_head = nn.Linear(8, 5)

        def test_step(self, data):
            out = self.bbox_head(self.backbone(torch.rand(3, 4)))
            sample = DetDataSample()
            sample.pred_instances = InstanceData(
                bboxes=out[:, :4], labels=torch.tensor([0, 1, 0]), scores=out[:, 4].sigmoid())
            return [sample]

    model = Model()
    seen = []
    model.bbox_head.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):  # stock: the whole step
        pred = model.test_step({})[0].pred_instances
    assert pred.scores.dtype == torch.bfloat16
    with pytest.raises(TypeError, match='BFloat16'):
        pred.scores.numpy()
    with torch.no_grad(), autocast_compute(model, 'bf16', 'cpu'):
        pred = model.test_step({})[0].pred_instances
    assert seen[-1] == torch.bfloat16  # the head computed in bf16 ...
    assert pred.bboxes.dtype == pred.scores.dtype == torch.float32  # ... and handed on fp32
    assert pred.labels.dtype == torch.int64 and len(pred) == 3
    pred.scores.numpy()
    # after the block the model is as it was: a deep copy (the benchmark's) runs its own step
    assert not any(m._forward_pre_hooks for m in model.modules())
    copied = copy.deepcopy(model)
    with torch.no_grad():
        assert copied.test_step({})[0].pred_instances.scores.dtype == torch.float32
    assert not torch.is_autocast_enabled('cpu')


def test_roi_align_gets_fp32_features_under_autocast_compute():
    """Cascade R-CNN's RoI extractor: under a whole-model bf16 autocast the neck hands mmcv's
    RoIAlign bf16 maps, which its CPU kernel refuses; with ``autocast_compute`` the neck computes
    in bf16 and hands fp32 maps on, RoIAlign runs in fp32 and the RoI head in bf16 again."""
    from mmcv.ops import RoIAlign
    from torch import nn
    layer = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    rois = torch.tensor([[0., 1., 1., 8., 8.]])

    class TwoStage(nn.Module):  # backbone, neck, RoI extractor, roi_head.bbox_head
        def __init__(self):
            super().__init__()
            self.backbone = nn.Conv2d(3, 4, 3, padding=1)
            self.neck = nn.Conv2d(4, 4, 1)
            self.roi_head = nn.Module()
            self.roi_head.bbox_head = nn.Linear(4 * 7 * 7, 5)

        def forward(self, x):
            feats = self.neck(self.backbone(x))
            seen.append(('roi_align', feats.dtype))
            return self.roi_head.bbox_head(layer(feats, rois).flatten(1))

    model, seen = TwoStage().eval(), []
    model.roi_head.bbox_head.register_forward_hook(
        lambda mod, args, out: seen.append(('bbox_head', out.dtype)))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        with pytest.raises(NotImplementedError, match='BFloat16'):
            with torch.autocast('cpu', dtype=torch.bfloat16):
                model(x)
        seen.clear()
        with autocast_compute(model, 'bf16', 'cpu'):
            out = model(x)
    assert seen == [('roi_align', torch.float32), ('bbox_head', torch.bfloat16)]
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=5e-2)


@needs_bf16
@pytest.mark.parametrize('config, options', [
    ('yolox_fasternet_t0_tiny.py', {}),
    ('cascade_rcnn_fasternet.py', {'model.backbone.arch': 't0',
                                   'model.neck.in_channels': [40, 80, 160, 320]}),
], ids=['yolox', 'cascade'])
def test_detector_test_step_under_bf16_autocast_finds_the_fp32_detections(config, options):
    """A whole ``test_step`` under stock bf16 autocast fails in mmcv's CPU NMS (bf16 scores);
    through ``AutocastTestLoop``'s ``autocast_compute`` (backbone, neck and heads in bf16,
    post-processing in fp32) the top detections of bf16 and fp32 are the same boxes with close
    scores."""
    from mmdet.structures.bbox import bbox_overlaps
    options = dict(options, **{'model.backbone.init_cfg': None})
    torch.manual_seed(0)
    model, _ = bm.build_detector(osp.join(REPO, 'configs', config), cfg_options=options)
    randomize_bn_stats(model, 0)
    model.eval()
    batch = bm.make_batch(1, (128, 128), seed=0)
    with torch.no_grad():
        ref = model.test_step(dict(batch))[0].pred_instances
        with pytest.raises(RuntimeError, match='expected scalar type Float but found BFloat16'):
            with autocast_context('bf16', 'cpu'):
                model.test_step(dict(batch))
        with autocast_compute(model, 'bf16', 'cpu'):
            out = model.test_step(dict(batch))[0].pred_instances
    assert len(ref) > 0 and len(out) > 0
    assert out.bboxes.dtype == out.scores.dtype == torch.float32
    # the 5 best fp32 boxes have bf16 twins (near-equal scores may swap places). Random weights
    # give large box deltas and near-tied scores, so bf16 rounding can move a box or change which
    # proposal Cascade R-CNN refines: 4 of 5 must match (trained models' mAP in bf16: a
    # comparison with --precision bf16, docs/comparison.md)
    iou = bbox_overlaps(ref.bboxes[:5].float(), out.bboxes.float())
    best_iou, match = iou.max(1)
    twins = best_iou > 0.8
    assert twins.sum() >= 4, best_iou
    assert (ref.scores[:5][twins].float() - out.scores[match[twins]].float()).abs().max() < 2e-2
