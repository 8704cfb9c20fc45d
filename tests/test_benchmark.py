"""tools/benchmark.py and mmlightbb.analysis.benchmark: what is timed, the numbers it derives,
--deploy, --profile, --real-images, the JSON schema and the CLI. Tiny FasterNet models at 64-128 px
keep it short."""
import copy
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from torch import nn

import mmlightbb  # noqa: F401
from mmlightbb.models.layers import randomize_bn_stats
from mmlightbb.analysis import benchmark as bm

from helpers import FAST, REPO, T0, TinyDet, tiny_yolox_config, write_shapes_coco

T0_DEEP = dict(T0, depths=(2, 4, 16, 4))
CFG_OPTS = ['model.backbone.arch=t0', 'model.neck.in_channels=[80,160,320]']


def test_fps_is_1000_over_median_times_batch():
    stats, fps = bm.summarize([3.0, 1.0, 2.0], batch_size=4)
    assert stats['median'] == 2.0 and fps == 2000.0
    assert stats['min'] == 1.0 and stats['max'] == 3.0 and stats['p90'] == pytest.approx(2.8)
    res = bm.benchmark(TinyDet(), shape=(64, 64), batch_size=2, backbone_only=True, warmup=1,
                       iters=3,
                       **FAST)
    assert len(res['latency_ms']['samples']) == 3
    assert res['fps'] == 1000.0 / res['latency_ms']['median'] * 2
    assert res['achieved_gflops'] == pytest.approx(
        2 * res['macs']['backbone_per_image'] * 2 / (res['latency_ms']['median'] / 1000) / 1e9)
    assert res['flops']['backbone_per_image'] == 2 * res['macs']['backbone_per_image']
    assert res['peak']['share'] == pytest.approx(res['achieved_gflops'] /
                                                 res['peak']['matmul_gflops'])


def test_twice_as_deep_measures_slower():
    torch.manual_seed(0)
    kw = dict(backbone_only=True, warmup=3, iters=20, threads=1, **FAST)
    shallow = bm.benchmark(TinyDet(T0), shape=(128, 128), **kw)
    deep = bm.benchmark(TinyDet(T0_DEEP), shape=(128, 128), **kw)
    assert deep['macs']['backbone_per_image'] > 1.5 * shallow['macs']['backbone_per_image']
    assert deep['params']['backbone'] > shallow['params']['backbone']
    # ~1.9x the work; min is the least noisy statistic on a shared machine
    assert deep['latency_ms']['min'] > 1.2 * shallow['latency_ms']['min']
    assert deep['latency_ms']['median'] > shallow['latency_ms']['median']
    assert deep['settings']['threads'] == 1


SCHEMA = {
    'schema_version', 'timed_unit', 'settings', 'latency_ms', 'fps', 'params', 'macs', 'flops',
    'achieved_gflops', 'peak', 'deploy_check', 'precision_check', 'export_check', 'timed_model',
    'versions', 'hardware', 'real_images', 'profile'}
SUBKEYS = {
    'settings': {'config', 'checkpoint', 'cfg_options', 'mode', 'input_hw', 'batch_size',
                 'warmup', 'iters', 'threads', 'device', 'deploy', 'channels_last', 'dtype',
                 'precision', 'precision_requested', 'precision_note', 'backend', 'real_images',
                 'profile'},
    'latency_ms': {'median', 'mean', 'p90', 'min', 'max', 'std', 'samples'},
    'params': {'model', 'backbone'},
    'macs': {'backbone_per_image', 'backbone_per_batch', 'counter'},
    'flops': {'backbone_per_image', 'backbone_per_batch'},
    'peak': {'matmul_gflops', 'matmul_size', 'share'},
    'timed_model': {'deployed', 'backbone_batchnorm_layers', 'memory_format', 'backbone_layout',
                    'conv_inputs_channels_last'},
    'versions': {'python', 'torch', 'mmcv', 'mmdet', 'mmengine', 'mmlightbb'},
    'hardware': {'cpu', 'gpu'},
}


@pytest.mark.parametrize('deploy', [False, True])
def test_json_schema_is_stable(deploy, tmp_path):
    res = bm.benchmark(TinyDet(), shape=(64, 64), backbone_only=True, warmup=0, iters=1,
                       deploy=deploy, channels_last=deploy, **FAST)
    bm.dump_json(res, str(tmp_path / 'r.json'))
    loaded = json.loads((tmp_path / 'r.json').read_text())
    assert set(loaded) == SCHEMA and loaded['schema_version'] == bm.SCHEMA_VERSION == 1
    for key, sub in SUBKEYS.items():
        assert set(loaded[key]) == sub, key
    assert (loaded['deploy_check'] is None) == (not deploy)
    assert loaded['profile'] is None and loaded['real_images'] is None  # not requested
    if deploy:
        assert set(loaded['deploy_check']) == {'max_rel_diff', 'neck_max_rel_diff', 'compared'}
    s = loaded['settings']
    assert (s['mode'], s['input_hw'], s['device'], s['dtype']) == ('backbone_only', [64, 64],
                                                                   'cpu', 'float32')
    assert s['deploy'] is deploy and s['channels_last'] is deploy
    assert s['real_images'] is False and s['profile'] is False
    assert loaded['hardware']['cpu'] and loaded['versions']['mmlightbb'] == mmlightbb.__version__


def test_deploy_is_equal_and_the_deployed_model_is_timed():
    model = TinyDet(norm_output=False)
    randomize_bn_stats(model)
    res, timed = bm.benchmark(model, shape=(64, 64), batch_size=2, backbone_only=True, warmup=0,
                              iters=2, deploy=True, return_model=True, **FAST)
    assert res['deploy_check']['max_rel_diff'] <= 1e-5
    assert res['deploy_check']['max_rel_diff'] > 0  # something was actually fused
    assert res['timed_model'] == dict(deployed=True, backbone_batchnorm_layers=0,
                                      memory_format='contiguous', backbone_layout='channels_last',
                                      conv_inputs_channels_last=[4, 4])  # stem + 3 merges
    assert not any(isinstance(m, nn.BatchNorm2d) for m in timed.backbone.modules())
    assert timed.backbone.deploy
    # the caller's model is left as it was
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert not model.backbone.deploy


def test_deploy_of_a_whole_detector_also_fuses_the_neck():
    model, _ = bm.build_detector(osp.join(REPO, 'configs/yolox_fasternet.py'),
                                 cfg_options={'model.backbone.arch': 't0',
                                              'model.neck.in_channels': [80, 160, 320]})
    randomize_bn_stats(model)
    res, timed = bm.benchmark(model, shape=(64, 64), warmup=0, iters=1, deploy=True,
                              return_model=True,
                              **FAST)
    assert res['settings']['mode'] == 'test_step'
    assert res['deploy_check']['max_rel_diff'] <= 1e-5
    assert res['deploy_check']['neck_max_rel_diff'] <= 1e-4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in timed.neck.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.neck.modules()) > 0


@pytest.mark.parametrize('cfg', [
    dict(type='ResNet', depth=18, out_indices=(1, 2, 3)),
    dict(type='CSPDarknet', deepen_factor=0.33, widen_factor=0.375, out_indices=(2, 3, 4))])
def test_deploy_folds_the_bn_of_mmdet_backbones_and_keeps_their_outputs(cfg):
    """mmdet's ResNet and CSPDarknet have no switch_to_deploy: the baselines are deployed by
    folding every Conv+BN pair, with the outputs of the eval-mode model."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    torch.manual_seed(0)
    backbone = MODELS.build(cfg)
    randomize_bn_stats(backbone)
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    deployed = bm.deploy_model(copy.deepcopy(backbone))
    with torch.no_grad():
        assert bm.max_rel_diff(backbone(x), deployed(x)) <= 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())


def test_a_baseline_detector_is_timed_with_its_backbone_folded():
    model, _ = bm.build_detector(osp.join(REPO, 'configs/baselines/yolox_tiny.py'))
    randomize_bn_stats(model)
    res = bm.benchmark(model, shape=(64, 64), warmup=0, iters=1, deploy=True, **FAST)
    assert res['timed_model']['backbone_batchnorm_layers'] == 0
    assert res['deploy_check']['max_rel_diff'] <= 1e-4
    assert res['deploy_check']['neck_max_rel_diff'] <= 1e-4


@pytest.mark.parametrize('kwargs,match', [
    (dict(iters=0), 'iters must be an int >= 1'),
    (dict(iters=-3), 'iters must be an int >= 1'),
    (dict(iters=2.5), 'iters must be an int >= 1'),
    (dict(warmup=-1), 'warmup must be an int >= 0'),
    (dict(batch_size=0), 'batch size must be an int >= 1'),
    (dict(fp16=True), 'fp16 is CUDA only'),
    (dict(precision='fp16'), 'fp16 is CUDA only'),
    (dict(precision='fp8'), 'precision must be one of'),
    (dict(precision='int8'), 'precision int8 runs an INT8 graph in a runtime: use --backend '
     'openvino or onnxruntime'),
    (dict(precision='int8', backend='openvino', deploy=True, backbone_only=False),
     'precision int8 needs calibration images: --calib FOLDER'),
    (dict(precision='int8', backend='openvino', deploy=True, backbone_only=True),
     'precision int8 times the quantized detector; drop --backbone-only'),
    (dict(quantization='calibration'), 'quantization settings are for precision int8, not fp32'),
    (dict(backend='tensorrt'), 'backend must be one of'),
    (dict(backend='onnxruntime'), 'add --deploy'),
    (dict(backend='onnxruntime', deploy=True, backbone_only=False, batch_size=2),
     'exported YOLOX detector with NMS at batch 1'),
    (dict(backend='onnxruntime', deploy=True, precision='bf16'), 'onnxruntime runs the fp32'),
    (dict(backend='onnxruntime', deploy=True, profile=True),
     '--profile is for --backend pytorch or openvino'),
])
def test_invalid_settings_raise_clear_errors(kwargs, match):
    args = dict(backbone_only=True, warmup=0, iters=1, **FAST)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        bm.benchmark(TinyDet(), shape=(64, 64), **args)


def test_summarize_refuses_no_samples():
    with pytest.raises(ValueError, match='iters must be >= 1'):
        bm.summarize([], 1)


def test_default_shape_is_the_test_resize_scale():
    from mmlightbb.engine import load_config
    cfg = load_config(osp.join(REPO, 'configs/yolox_fasternet.py'))
    assert bm.find_test_scale(cfg) == (640, 640)


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, osp.join(REPO, 'tools/benchmark.py'), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': REPO})


def test_cli_end_to_end_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / 'results.json'
    proc = _cli(osp.join(REPO, 'configs/yolox_fasternet.py'), '--shape', '64', '64', '--iters',
                '2', '--warmup', '1', '--threads', '1', '--deploy', '--profile', '--out', str(out),
                '--cfg-options', *CFG_OPTS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    numbers = [line for line in lines if '|' in line]
    names = [line.split('  ')[0] for line in numbers]
    for name in ('latency median', 'latency p90', 'latency std', 'FPS (images/s)',
                 'backbone MACs/image', 'fp32 matmul peak GFLOP/s', 'deploy max rel diff',
                 'profile conv', 'profile depthwise conv', 'profile NMS', 'profile other'):
        assert name in names, (name, proc.stdout)
    for line in numbers:
        assert line.endswith('| 64x64 b1 threads=1 cpu deploy=on channels_last=auto float32')
    assert 'timed unit (test_step)' in proc.stdout and 'NMS' in proc.stdout
    res = json.loads(out.read_text())
    assert set(res) == SCHEMA
    assert res['settings']['cfg_options']['model.backbone.arch'] == 't0'
    assert res['deploy_check']['max_rel_diff'] <= 1e-5
    assert list(res['profile']['categories']) == list(bm.PROFILE_CATEGORIES)
    assert res['profile']['iters'] == 3 and res['profile']['time'] == 'self CPU time'


def test_cli_rejects_bad_iters_with_a_clear_message():
    proc = _cli(osp.join(REPO, 'configs/yolox_fasternet.py'), '--iters', '0')
    assert proc.returncode != 0
    assert 'iters must be an int >= 1' in proc.stderr.strip().splitlines()[-1]


def test_callers_model_and_threads_are_left_as_they_were():
    threads = torch.get_num_threads()
    model = TinyDet()
    res, timed = bm.benchmark(model, shape=(64, 64), backbone_only=True, warmup=0, iters=1,
                              threads=1,
                              channels_last=True, return_model=True, **FAST)
    assert res['settings']['threads'] == 1 and torch.get_num_threads() == threads
    assert timed is not model and res['timed_model']['memory_format'] == 'channels_last'
    assert model.backbone.patch_embed.proj.weight.is_contiguous()


@pytest.mark.parametrize('backbone,flag,layout,shown', [
    ('fasternet', False, 'channels_last', 'auto'),    # chooses channels_last by itself on CPU
    ('fasternet_nchw', False, 'contiguous', 'off'),  # the official NCHW execution
    ('fasternet_nchw', True, 'channels_last', 'on'),
    ('cspdarknet', False, 'contiguous', 'off'),      # mmdet's own backbone: NCHW unless asked
    ('cspdarknet', True, 'channels_last', 'on')])
def test_the_layout_the_backbone_really_ran_is_reported(backbone, flag, layout, shown):
    """The reported layout is observed, not assumed: checked here against the input of every
    nn.Conv2d during the timed iterations themselves."""
    from mmdet.registry import MODELS

    from mmlightbb.models.layers import set_cpu_channels_last
    model = TinyDet()
    if backbone == 'cspdarknet':
        model.backbone = MODELS.build(dict(type='CSPDarknet', deepen_factor=0.33,
                                           widen_factor=0.125))
    set_cpu_channels_last(model, backbone == 'fasternet')
    calls = []  # conv inputs per backbone call; the hooks travel into the benchmark's copy
    model.backbone.register_forward_pre_hook(lambda mod, args: calls.append([]))
    for conv in (m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)):
        conv.register_forward_pre_hook(lambda mod, args: calls[-1].append(args[0]))
    res = bm.benchmark(model, shape=(64, 64), backbone_only=True, warmup=0, iters=1,
                       channels_last=flag, **FAST)
    assert res['timed_model']['backbone_layout'] == layout
    done, counted = res['timed_model']['conv_inputs_channels_last']
    assert counted > 0 and done == (counted if layout == 'channels_last' else 0)
    assert f'deploy=off channels_last={shown} float32' in bm.format_table(res).splitlines()[-1]
    nhwc = [t.is_contiguous(memory_format=torch.channels_last) for t in calls[-1]  # timed call
            if t.is_contiguous(memory_format=torch.channels_last) != t.is_contiguous()]
    assert len(nhwc) == counted and sum(nhwc) == done


# ----------------------------------------------------------------------------------- --profile
class ConvDet(nn.Module):
    """A detector stand-in whose backbone is a few convs, dense or depthwise."""

    def __init__(self, depthwise: bool):
        super().__init__()
        from mmdet.models.data_preprocessors import DetDataPreprocessor
        self.data_preprocessor = DetDataPreprocessor(mean=[0, 0, 0], std=[1, 1, 1])
        if depthwise:  # a cheap 1x1 from 3 channels, then a 9x9 depthwise on 128: dw dominates
            self.backbone = nn.Sequential(nn.Conv2d(3, 128, 1),
                                          nn.Conv2d(128, 128, 9, padding=4, groups=128))
        else:
            self.backbone = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(64, 64, 3, padding=1))


@pytest.mark.parametrize('depthwise,largest', [(False, 'conv'), (True, 'depthwise conv')])
def test_profile_gives_conv_the_largest_share(depthwise, largest):
    res = bm.benchmark(ConvDet(depthwise), shape=(64, 64), backbone_only=True, warmup=1, iters=2,
                       threads=1, profile=True, profile_iters=2, **FAST)
    prof = res['profile']
    shares = {cat: entry['share'] for cat, entry in prof['categories'].items()}
    assert list(shares) == list(bm.PROFILE_CATEGORIES)
    assert max(shares, key=shares.get) == largest and shares[largest] > 0.5
    assert 100 * sum(shares.values()) == pytest.approx(100, abs=0.5)
    assert sum(e['ms_per_iter'] for e in prof['categories'].values()) == pytest.approx(
        prof['op_ms_per_iter'])
    assert 0 < prof['op_ms_per_iter'] <= prof['wall_ms_per_iter']
    assert res['settings']['profile'] is True and prof['iters'] == 2
    # profiling runs after timing: the timed samples are exactly the requested ones
    assert len(res['latency_ms']['samples']) == 2


def test_profile_charges_the_nms_kernel_to_nms():
    from mmcv.ops import batched_nms
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2000, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + 10 + torch.rand(2000, 2, generator=gen) * 40], 1)
    scores, idxs = torch.rand(2000, generator=gen), torch.randint(0, 3, (2000, ), generator=gen)
    prof = bm.profile_ops(lambda: batched_nms(boxes, scores, idxs, dict(iou_threshold=0.5)), 2)
    # the kernel (mmcv's NMSop scope, aten ops inside it included) is NMS; batched_nms's Python
    # around it (offsets, indexing) is charged to those ops' own types (see the module doc)
    nms_ops = [op for op in prof['top_ops'] if op['category'] == 'NMS']
    assert [op['op'] for op in nms_ops] == ['NMSop']
    assert nms_ops[0]['ms_per_iter'] == prof['categories']['NMS']['ms_per_iter'] > 0


@pytest.mark.parametrize('name,shapes,category', [
    ('aten::conv2d', [[1, 16, 8, 8], [16, 1, 3, 3]], 'depthwise conv'),
    ('aten::mkldnn_convolution', [[1, 16, 8, 8], [32, 1, 3, 3]], 'depthwise conv'),  # multiplier 2
    ('aten::conv2d', [[1, 16, 8, 8], [16, 16, 3, 3]], 'conv'),
    ('aten::conv2d', [[1, 16, 8, 8], [16, 4, 3, 3]], 'conv'),  # grouped, not depthwise
    ('aten::conv2d', [[1, 1, 8, 8], [16, 1, 3, 3]], 'conv'),  # one input channel: dense
    ('aten::conv_transpose2d', [[1, 16, 8, 8], [16, 1, 2, 2]], 'conv'),
    ('aten::addmm', [], 'matmul/linear'), ('aten::native_layer_norm', [], 'norm'),
    ('aten::relu_', [], 'activation'), ('aten::sigmoid', [], 'activation'),
    ('aten::add_', [], 'element-wise'), ('aten::copy_', [], 'memory/reshape'),
    ('aten::constant_pad_nd', [], 'memory/reshape'), ('torchvision::nms', [], 'NMS'),
    ('NMSop', [], 'NMS'), ('mmcv::batched_nms', [], 'NMS'),
    ('aten::max_pool2d', [], None),  # not recognised: its enclosing op decides, else 'other'
    ('warnings._showwarnmsg', [], None),  # "nms" inside a word is not NMS
])
def test_op_category_rules(name, shapes, category):
    assert bm.op_category(name, shapes) == category


# ------------------------------------------------------------------------------ --real-images
def _tiny_config(tmp_path, data, name='tiny.py'):
    path = tmp_path / name
    path.write_text(tiny_yolox_config(data, dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3)),
                                      [80, 160, 320], size=64))
    return str(path)


def test_real_images_time_a_different_test_image_each_iteration(tmp_path, tiny_coco):
    res = bm.run_benchmark(_tiny_config(tmp_path, tiny_coco), real_images=True, warmup=1, iters=3,
                           threads=1, **FAST)
    assert res['settings']['real_images'] is True and res['settings']['input_hw'] == [64, 64]
    assert res['real_images'] == dict(dataset='CocoDataset', test_set_size=8, images_used=4,
                                      batch_input_hw={'64x64': 4})
    assert len(res['latency_ms']['samples']) == 3 and 'real test image' in res['timed_unit']
    assert bm.format_table(res).splitlines()[-1].endswith('| real 64x64 b1 threads=1 cpu '
                                                          'deploy=off channels_last=auto float32')


@pytest.mark.parametrize('num_images,warmup,iters,batch,needed', [
    (8, 5, 4, 1, 9), (8, 1, 2, 3, 9), (1, 1, 1, 1, 2)])
def test_real_images_refuse_a_too_small_test_set(tmp_path, num_images, warmup, iters, batch,
                                                 needed):
    config = _tiny_config(tmp_path, write_shapes_coco(str(tmp_path / 'data'), num_images))
    with pytest.raises(ValueError) as err:
        bm.run_benchmark(config, real_images=True, warmup=warmup, iters=iters, batch_size=batch,
                         **FAST)
    assert str(err.value) == (
        f'--real-images needs (warmup + iters) x batch = {needed} test images but the test set '
        f'of {config} has {num_images}; lower --iters/--warmup/--batch-size or drop '
        '--real-images')


def test_cli_real_images_on_a_too_small_test_set_fails_with_one_line(tmp_path, tiny_coco):
    proc = _cli(_tiny_config(tmp_path, tiny_coco), '--real-images', '--warmup', '5', '--iters',
                '20')
    assert proc.returncode == 1 and proc.stdout == ''
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: --real-images needs (warmup + iters) x batch = 25 test '
                           'images but the test set of ') and 'has 8; lower --iters' in last


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_runtime_backends_time_the_exported_backbone(backend):
    pytest.importorskip(backend)
    res = bm.benchmark(TinyDet(), shape=(64, 64), backbone_only=True, deploy=True,
                       backend=backend, threads=1, warmup=1, iters=3, **FAST)
    s = res['settings']
    assert (s['backend'], s['precision'], s['dtype']) == (backend, 'fp32', 'float32')
    assert len(res['latency_ms']['samples']) == 3 and res['fps'] > 0
    assert res['export_check']['max_rel_diff'] <= 1e-4
    assert res['export_check']['runtime_threads'] == 1
    assert res['timed_model']['backbone_layout'] == 'contiguous'  # the plain NCHW graph
    assert 'session.run' in res['timed_unit'] and 'not timed' in res['timed_unit']
    assert f'backend={backend}' in bm.format_table(res)


def test_openvino_profile_is_the_runtimes_own_counters():
    pytest.importorskip('openvino')
    res = bm.benchmark(TinyDet(), shape=(64, 64), backbone_only=True, deploy=True,
                       backend='openvino', threads=1, warmup=1, iters=2, profile=True,
                       profile_iters=2, **FAST)
    prof = res['profile']
    assert prof['iters'] == 2 and prof['op_ms_per_iter'] > 0
    assert 'Convolution' in prof['by_type'] and set(prof['by_precision']) <= {'FP32', 'other'}
    assert abs(sum(e['share'] for e in prof['by_type'].values()) - 1) < 1e-6
    assert 'profile kernel FP32' in bm.format_table(res)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_runtime_backends_time_the_exported_yolox_detector_with_nms(backend):
    """Without --backbone-only a runtime times what test_step computes after the preprocessor:
    backbone, neck, head, box decoding and NMS (the graph of tools/export.py --with-nms)."""
    pytest.importorskip(backend)
    torch.manual_seed(0)  # weights whose detections have no tied scores: the runtime's are equal
    model, _ = bm.build_detector(osp.join(REPO, 'configs', 'yolox_fasternet_t0_tiny.py'))
    res = bm.benchmark(model, shape=(64, 64), deploy=True, backend=backend, threads=1, warmup=1,
                       iters=2, **FAST)
    s = res['settings']
    assert (s['mode'], s['backend'], s['precision']) == ('exported_detector', backend, 'fp32')
    assert 'box decoding and NMS' in res['timed_unit'] and res['fps'] > 0
    diff = res['export_check']['max_rel_diff']
    assert diff is not None and diff <= 1e-4, diff  # None: another number of detections
    assert res['deploy_check']['neck_max_rel_diff'] is not None
    assert res['timed_model']['backbone_layout'] == 'contiguous'  # the plain NCHW graph
    assert 'timed unit (exported_detector)' in bm.format_table(res)


def test_runtime_backends_refuse_a_detector_whose_post_processing_does_not_export(monkeypatch):
    """Cascade R-CNN's RoI stages (here: a detector with no bbox_head) and a missing runtime
    stop with one line before anything is deployed or exported."""
    from mmlightbb.analysis.export import ExportError
    pytest.importorskip('onnxruntime')
    with pytest.raises(ExportError, match='exports YOLOX detectors .* TinyDet with no bbox_head '
                       r'is not exported yet: .*\(--backbone-only\)'):
        bm.benchmark(TinyDet(), shape=(64, 64), deploy=True, backend='onnxruntime', **FAST)
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime -> ImportError
    with pytest.raises(ExportError, match="package 'onnxruntime' is not installed"):
        bm.benchmark(TinyDet(), shape=(64, 64), backbone_only=True, deploy=True,
                     backend='onnxruntime', **FAST)
