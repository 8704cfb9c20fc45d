"""INT8 deployment (mmlightbb.analysis.quantize, tools/export.py and tools/test.py --precision
int8): a trained tiny YOLOX quantized with NNCF (OpenVINO) and quantize_static (ONNX Runtime)
keeps its mAP, measured through the runtime by mmdet's test loop; bad input gives one line."""
import os.path as osp

import pytest

from mmlightbb.analysis.export import ExportError
from mmlightbb.analysis.quantize import (MIN_CALIBRATION_IMAGES, QuantizationSettings,
                                         find_images)

from helpers import REPO, run_tool

TINY_CFG = osp.join(REPO, 'configs', 'yolox_fasternet_t0_tiny.py')
SIZE = 128
EPOCHS = 12
# what INT8 may cost on this tiny set (48 test images at 128 px), VOC mAP50, absolute
MAX_INT8_DROP = 0.05


def test_settings_and_image_folders_are_checked_in_one_line(tmp_path):
    with pytest.raises(ExportError, match='--calib FOLDER'):
        QuantizationSettings('')
    with pytest.raises(ExportError, match='at least 10'):
        QuantizationSettings(str(tmp_path), calib_images=3)
    with pytest.raises(ExportError, match=r'--max-drop 2.0: an absolute mAP50 drop in \(0, 1\)'):
        QuantizationSettings(str(tmp_path), max_drop=2.0)
    with pytest.raises(ExportError, match='is not a folder'):
        find_images(str(tmp_path / 'missing'), 300)
    for i in range(MIN_CALIBRATION_IMAGES - 1):
        (tmp_path / f'{i}.png').write_bytes(b'')
    with pytest.raises(ExportError, match=f'holds {MIN_CALIBRATION_IMAGES - 1} images'):
        find_images(str(tmp_path), 300)
    (tmp_path / 'sub').mkdir()
    for i in range(30):
        (tmp_path / 'sub' / f'{i:02d}.JPG').write_bytes(b'')
    picked = find_images(str(tmp_path), 12)
    assert len(picked) == 12 and len(set(picked)) == 12
    assert picked[0].endswith('0.png') and any('sub' in p for p in picked)  # spread over all


def test_tools_refuse_int8_without_what_it_needs(tmp_path):
    proc = run_tool('tools/export.py', TINY_CFG, '--format', 'openvino', '--with-nms',
                    '--precision', 'int8')
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1] == (
        'error: INT8 needs --calib FOLDER: training images to calibrate the activation ranges on')
    proc = run_tool('tools/export.py', TINY_CFG, '--format', 'onnx', '--with-nms', '--precision',
                    'int8', '--calib', str(tmp_path), '--max-drop', '0.01')
    assert proc.returncode == 2 and 'it needs --with-nms and --format openvino' in proc.stderr
    proc = run_tool('tools/export.py', TINY_CFG, '--format', 'onnx', '--calib', str(tmp_path))
    assert proc.returncode == 2 and '--calib and --max-drop are for --precision int8' in proc.stderr
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    proc = run_tool('tools/benchmark.py', TINY_CFG, '--backend', 'openvino', '--deploy',
                    '--precision', 'int8')
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        'error: INT8 needs --calib FOLDER: training images to calibrate the activation ranges on')
    proc = run_tool('tools/benchmark.py', TINY_CFG, '--precision', 'int8', '--calib', str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        'error: precision int8 runs an INT8 graph in a runtime: use --backend openvino or '
        'onnxruntime (PyTorch runs fp32, bf16 or fp16)')
    proc = run_tool('tools/benchmark.py', TINY_CFG, '--calib', str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        'error: --calib and --max-drop are for --precision int8')
    proc = run_tool('tools/test.py', TINY_CFG, str(ckpt), '--precision', 'int8')
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        'error: --precision int8 runs in a runtime: add --backend openvino')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A YOLOX + FasterNet-T0 trained briefly on a small synthetic sonar set: (config, ckpt,
    training images folder)."""
    import mmlightbb  # noqa: F401
    from mmlightbb.analysis.pipeline import short_schedule_config
    from mmlightbb.datasets import make_sonar_dataset
    from mmlightbb.engine import build_runner
    root = tmp_path_factory.mktemp('int8')
    data = str(root / 'sonar') + '/'
    make_sonar_dataset(data, num_train=64, num_val=48, size=SIZE, seed=0)
    cfg = short_schedule_config(
        osp.join(REPO, 'configs/yolox_fasternet.py'), data, str(root / 'work'), EPOCHS, SIZE,
        cfg_options={'model.backbone.arch': 't0', 'model.neck.in_channels': [80, 160, 320]})
    config = str(root / 'trained.py')
    cfg.dump(config)
    runner = build_runner(cfg)
    runner.train()
    return config, osp.join(str(root / 'work'), f'epoch_{EPOCHS}.pth'), osp.join(data, 'images')


def test_map(config, ckpt, tmp_path, *extra):
    proc = run_tool('tools/test.py', config, ckpt, '--work-dir', str(tmp_path / 'test'), *extra,
                    timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if 'pascal_voc/mAP:' in ln)
    return float(line.split('pascal_voc/mAP: ')[1].split()[0])


test_map.__test__ = False  # a helper, not a test


@pytest.mark.slow
@pytest.mark.parametrize('backend', ['openvino', 'onnxruntime'])
def test_int8_detector_keeps_its_map_measured_in_the_runtime(trained, backend, tmp_path):
    config, ckpt, images = trained
    fp32 = test_map(config, ckpt, tmp_path)
    int8 = test_map(config, ckpt, tmp_path, '--backend', backend, '--precision', 'int8',
                    '--calib', images, '--calib-images', '32')
    assert fp32 > 0.05, f'the tiny detector did not learn (mAP50 {fp32:.3f}): nothing to keep'
    assert abs(int8 - fp32) <= MAX_INT8_DROP, (backend, fp32, int8)


@pytest.mark.slow
def test_broken_int8_graph_is_caught_by_the_runtime_map(trained, tmp_path, monkeypatch):
    """The mAP of a runtime row is the runtime's own: an INT8 graph calibrated on blank images
    (activation ranges of nothing) detects less, and the test says so."""
    import numpy as np
    config, ckpt, _ = trained
    blank = tmp_path / 'blank'
    blank.mkdir()
    import cv2
    for i in range(MIN_CALIBRATION_IMAGES):
        cv2.imwrite(str(blank / f'{i}.png'), np.zeros((SIZE, SIZE, 3), np.uint8))
    fp32 = test_map(config, ckpt, tmp_path, '--backend', 'openvino')
    broken = test_map(config, ckpt, tmp_path, '--backend', 'openvino', '--precision', 'int8',
                      '--calib', str(blank))
    assert broken < fp32 - MAX_INT8_DROP, (fp32, broken)


@pytest.mark.slow
def test_export_tool_writes_an_int8_graph_with_accuracy_control(trained, tmp_path):
    config, ckpt, images = trained
    out = tmp_path / 'det_int8.xml'
    proc = run_tool('tools/export.py', config, ckpt, '--format', 'openvino', '--with-nms',
                    '--precision', 'int8', '--calib', images, '--calib-images', '16',
                    '--max-drop', '0.02', '--val-images', '16', '--out', str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and out.with_suffix('.bin').is_file()
    assert 'int8: calibrated on 16 images' in proc.stdout
    drop = float(proc.stdout.split('validation mAP50 drop ')[1].split()[0])
    assert drop <= 0.02 + 1e-6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]


@pytest.mark.slow
def test_benchmark_times_the_int8_graph_it_calibrated(trained, tmp_path):
    """tools/benchmark.py --precision int8: the timed graph is the quantized one (OpenVINO's
    counters show INT8 kernels), calibrated on the given images."""
    import json
    config, ckpt, images = trained
    out = tmp_path / 'bench.json'
    proc = run_tool('tools/benchmark.py', config, '--checkpoint', ckpt, '--backend', 'openvino',
                    '--deploy', '--precision', 'int8', '--calib', images, '--calib-images', '16',
                    '--iters', '3', '--warmup', '1', '--threads', '1', '--profile',
                    '--out', str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    s = res['settings']
    assert (s['backend'], s['precision'], s['mode'], s['dtype']) == (
        'openvino', 'int8', 'exported_detector', 'float32')
    assert f'calibrated on up to 16 images of {images}' in s['precision_note']
    assert res['fps'] > 0
    shares = res['profile']['by_precision']
    assert sum(shares.get(k, {}).get('share', 0) for k in ('I8', 'U8')) > 0.2, shares


def test_openvino_counters_show_what_runs_in_int8(tmp_path):
    """The profile of an OpenVINO INT8 graph puts time on int8 kernels, the fp32 graph's on none;
    the slowest nodes and the layer types come with it."""
    pytest.importorskip('openvino')
    pytest.importorskip('nncf')
    import numpy as np
    import torch
    from torch import nn

    from mmlightbb.analysis.export import export_model
    from mmlightbb.analysis.quantize import quantize_exported
    from mmlightbb.analysis.runtime_profile import kernel_precision, profile_openvino
    assert [kernel_precision(k) for k in ('brgconv_avx512_amx_I8', 'jit_avx512_FP32',
                                          'ref_any_f32', 'unknown')] == ['I8', 'FP32', 'FP32',
                                                                         'other']
    torch.manual_seed(0)
    # wide enough, and summed over 10 inferences, that the convolutions hold most of the time
    # even on a loaded machine (32/64 channels at 64 px over 2 inferences: 0.25-0.46 between runs)
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(128, 128, 3, padding=1)).eval()
    x = torch.randn(1, 3, 96, 96)
    xml = export_model(net, x, str(tmp_path / 'net.xml'), 'openvino')
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1, 3, 96, 96)).astype(np.float32)
                   for _ in range(MIN_CALIBRATION_IMAGES)]
    int8 = str(tmp_path / 'net_int8.xml')
    quantize_exported(None, None, xml, 'openvino', int8, calibration)
    fp32, quantized = (profile_openvino(path, x.numpy(), threads=1, precision=precision, iters=10)
                       for path, precision in ((xml, 'fp32'), (int8, 'int8')))
    for p in (fp32, quantized):
        assert p['op_ms_per_iter'] > 0 and p['top_nodes'] and 'Convolution' in p['by_type']
        assert abs(sum(v['share'] for v in p['by_precision'].values()) - 1) < 1e-6
    assert not {'I8', 'U8'} & set(fp32['by_precision'])
    assert sum(quantized['by_precision'].get(k, {}).get('share', 0) for k in ('I8', 'U8')) > 0.3
