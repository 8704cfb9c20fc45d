"""On a CUDA GPU, what the CPU suite proves on the CPU (``tools/gpu/check.sh`` runs this file on
one: docs/gpu.md). Without a visible CUDA device every test is skipped with one line.

* Every backbone family (its small custom arch and its first published arch), as built and after
  ``switch_to_deploy()``: fp32 outputs on CUDA equal the CPU's within CUDA_RTOL = 1e-4 of the
  output scale (``max|cpu - cuda| / max|cpu|`` per map), TF32 off for matmuls and cuDNN convs
  (with TF32 every conv input is rounded to 10 mantissa bits, ~1e-3 relative).
* fp16 and bf16 autocast: every family, both forms, finite and within FP16_RTOL = 1e-2 /
  BF16_RTOL = 3e-2 (tests/test_precision.py, where bf16 measured up to 1.2e-2 on the CPU) of fp32:
  fp16 keeps 3 more mantissa bits than bf16, 1e-2 is 5x what that predicts. YOLOX and Cascade
  R-CNN ``test_step``: finite detections, and 4 of the 5 best fp32 boxes have twins (IoU > 0.8,
  scores within 2e-2), as test_precision.py checks bf16 on the CPU.
* One training epoch of YOLOX and of Cascade R-CNN (FasterNet-T0, the comparison's configs) on a
  tiny VOC set: finite losses, the mean of the last 4 iterations below that of the first 4.
* tools/train.py SIGKILLed mid-epoch and resumed on CUDA with ``randomness=dict(seed=0,
  deterministic=True)``: weights, EMA and optimizer ``torch.equal`` to the uninterrupted run's.
* tools/benchmark.py --device cuda at 640 for every backbone; tools/compare_backbones.py --quick
  --device cuda end to end (YOLOX and Cascade R-CNN with FasterNet-T0, 1 epoch, to fit the check's
  time).

The tiny data sets, runs and comparisons are those of the CPU tests, imported from their modules.
"""
import json
import os.path as osp
import signal

import pytest
import torch
from test_backbone_contract import CUSTOM_ARCHS, build
from test_benchmark import _cli as benchmark_cli
from test_compare_backbones import _run_cli as compare_cli
from test_compare_backbones import _table
from test_exact_resume import ITERS, assert_same_training_state, checkpoints, train, yolox_config
from test_exact_resume import workspace  # noqa: F401  (its fixture: the tiny set, the kill hook)
from test_folder_layouts import make_samples, write_voc
from test_precision import BF16_RTOL

import mmlightbb  # noqa: F401
from mmlightbb.analysis import benchmark as bm
from mmlightbb.engine import safe_load
from mmlightbb.engine.precision import autocast_context
from mmlightbb.models.backbones import BACKBONES
from mmlightbb.models.layers import randomize_bn_stats

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='no CUDA device visible (torch.cuda.is_available() is False): run on a GPU machine, '
           'e.g. bash tools/gpu/check.sh OUT_DIR')]

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CUDA_RTOL = 1e-4
RTOL = {'fp16': 1e-2, 'bf16': BF16_RTOL}
ARCHS = [pytest.param(name, arch, id=f'{name}-{arch}') for name, cls in BACKBONES.items()
         for arch in (next(iter(CUSTOM_ARCHS[name])), next(iter(cls.arch_settings)))]
FAMILIES = ('convnext', 'cspconvnext', 'fasternet', 'replknet', 'parameternet')
DETECTORS = {  # as in test_precision.py, from scratch
    'yolox': ('yolox_fasternet_t0_tiny.py', {'model.backbone.init_cfg': None}),
    'cascade': ('cascade_rcnn_fasternet.py', {'model.backbone.init_cfg': None,
                                              'model.backbone.arch': 't0',
                                              'model.neck.in_channels': [40, 80, 160, 320]})}


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope='module')
def voc_tiny(tmp_path_factory):
    """80 gray 128 px images of rectangles and discs (tests/test_folder_layouts.py's)."""
    return write_voc(str(tmp_path_factory.mktemp('voc') / 'shapes'),
                     make_samples(80, ('rect', 'disc'), size=128, seed=5))


def _backbone(name, arch):
    torch.manual_seed(0)
    model = build(name, arch)
    randomize_bn_stats(model, 0)
    return model.eval()


def _assert_close(ref, out, tol):
    assert len(ref) == len(out)
    for r, o in zip(ref, out):
        assert r.shape == o.shape and torch.isfinite(o).all()
        diff = bm.max_rel_diff(r.float().cpu(), o.float().cpu())
        assert diff <= tol, f'max relative difference {diff:.2e} > {tol}'


# ----------------------------------------------------------------------------------- backbones
@pytest.mark.parametrize('deployed', [False, True], ids=['as-built', 'deployed'])
@pytest.mark.parametrize('name, arch', ARCHS)
def test_backbone_on_cuda_equals_cpu(name, arch, deployed, no_tf32):
    model = _backbone(name, arch)
    if deployed:
        model.switch_to_deploy()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
        out = model.cuda()(x.cuda())
    _assert_close(ref, out, CUDA_RTOL)


@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
@pytest.mark.parametrize('name, arch', ARCHS)
def test_backbone_autocast_on_cuda_close_to_fp32(name, arch, precision, no_tf32):
    model = _backbone(name, arch).cuda()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).cuda()
    for form in ('as built', 'deployed'):
        if form == 'deployed':
            model.switch_to_deploy()
        with torch.no_grad():
            ref = model(x)
            with autocast_context(precision, 'cuda'):
                out = model(x)
        _assert_close(ref, out, RTOL[precision])


# ----------------------------------------------------------------------------------- detectors
@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
@pytest.mark.parametrize('head', DETECTORS)
def test_detector_test_step_under_autocast_on_cuda_finds_the_fp32_detections(head, precision):
    from mmdet.structures.bbox import bbox_overlaps
    config, options = DETECTORS[head]
    torch.manual_seed(0)
    model, _ = bm.build_detector(osp.join(REPO, 'configs', config), cfg_options=options)
    randomize_bn_stats(model, 0)
    model.eval().cuda()
    batch = bm.make_batch(1, (128, 128), seed=0)
    with torch.no_grad():
        ref = model.test_step(dict(batch))[0].pred_instances
        with autocast_context(precision, 'cuda'):
            out = model.test_step(dict(batch))[0].pred_instances
    assert ref.bboxes.is_cuda and len(ref) > 0 and len(out) > 0
    assert torch.isfinite(out.bboxes).all() and torch.isfinite(out.scores).all()
    iou = bbox_overlaps(ref.bboxes[:5].float(), out.bboxes.float())
    best_iou, match = iou.max(1)
    twins = best_iou > 0.8
    assert twins.sum() >= 4, best_iou
    assert (ref.scores[:5][twins].float() - out.scores[match[twins]].float()).abs().max() < 2e-2


# ------------------------------------------------------------------------------------ training
@pytest.mark.parametrize('head', ['yolox', 'cascade'])
def test_one_training_epoch_on_cuda_lowers_the_loss(head, voc_tiny, tmp_path):
    from mmlightbb.analysis.detector_configs import build_config
    from mmlightbb.datasets import prepare_dataset
    from mmlightbb.engine.runner import build_runner
    data = prepare_dataset(voc_tiny, str(tmp_path / 'data'))
    cfg = build_config(head, 'fasternet', 't0', data, str(tmp_path / 'work'), epochs=1, size=128,
                       batch_size=4)
    runner = build_runner(cfg)
    runner.train()
    assert next(runner.model.parameters()).is_cuda
    losses = torch.as_tensor(runner.message_hub.get_scalar('train/loss').data[0])
    assert len(losses) == runner.iter >= 12 and torch.isfinite(losses).all()
    assert losses[-4:].mean() < losses[:4].mean(), losses


def test_killed_and_resumed_on_cuda_equals_uninterrupted_bitwise(workspace, tmp_path,
                                                                 monkeypatch):
    """test_exact_resume.py's YOLOX run (real random pipeline, drop-path, EMA) on CUDA, 2 epochs,
    killed after iteration 1 of epoch 2 and resumed. ``deterministic=True`` makes mmengine call
    ``torch.use_deterministic_algorithms(True)``, for which cuBLAS needs a fixed workspace."""
    root, data = workspace
    monkeypatch.setenv('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
    cfg = yolox_config(tmp_path, data, max_epochs=2)
    deterministic = ('--cfg-options', 'randomness.deterministic=True')
    reference, work = tmp_path / 'reference', tmp_path / 'work'
    code, log = train(root, reference, cfg, *deterministic)
    assert code == 0, log[-3000:]
    assert 'CUDA available: True' in log and 'deterministic: True' in log, log[:3000]
    code, log = train(root, work, cfg, *deterministic, kill_at=f'iter:{ITERS + 1}')
    assert code == -signal.SIGKILL and checkpoints(work) == ['epoch_1.pth'], log[-3000:]
    code, log = train(root, work, cfg, '--resume', *deterministic)
    assert code == 0 and f'resumed epoch: 1, iter: {ITERS}' in log, log[-3000:]
    assert_same_training_state(safe_load(reference / 'epoch_2.pth'),
                               safe_load(work / 'epoch_2.pth'))


# ------------------------------------------------------------------------------------- tools
@pytest.mark.parametrize('family', FAMILIES)
def test_benchmark_tool_on_cuda_at_640(family, tmp_path):
    out = tmp_path / 'result.json'
    proc = benchmark_cli(osp.join(REPO, 'configs', f'yolox_{family}.py'), '--device', 'cuda',
                         '--backbone-only', '--shape', '640', '640', '--warmup', '2', '--iters',
                         '5', '--deploy', '--out', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert (res['settings']['device'], res['settings']['input_hw']) == ('cuda', [640, 640])
    assert res['hardware']['gpu'] and res['fps'] > 0
    assert res['deploy_check']['max_rel_diff'] < 1e-2  # TF32 convs (cuDNN's default) on both


def test_compare_backbones_quick_on_cuda_end_to_end(voc_tiny, tmp_path):
    out = str(tmp_path / 'cmp')
    proc = compare_cli([voc_tiny, '--out', out, '--quick', '--device', 'cuda', '--heads', 'yolox',
                        'cascade', '--backbones', 'fasternet:t0', '--epochs', '1',
                        '--bench-iters', '5'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _table(open(osp.join(out, 'report', 'compare.md')).read())
    assert set(rows) == {'yolox_fasternet_t0', 'cascade_fasternet_t0'}
    for run in rows:
        bench = json.load(open(osp.join(out, run, 'benchmark.json')))
        assert bench['settings']['device'] == 'cuda' and bench['fps'] > 0
        assert osp.isfile(osp.join(out, run, 'test_metrics.json'))
