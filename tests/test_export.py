"""tools/export.py and mmlightbb.analysis.export: every backbone family (small custom archs)
exported deployed and NCHW to ONNX and OpenVINO IR, run in onnxruntime / OpenVINO (CPU, fp32)
with outputs equal to PyTorch's (relative 1e-4, measured ~1e-6); FasterNet's deployed block
exported as convs (no GEMM layout); dynamic H/W; atomic writes; the CLI, and its one-line errors
for an unknown format, a missing runtime package and a checkpoint that does not fit the config."""
import contextlib
import os
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
import torch

import mmlightbb  # noqa: F401
from mmlightbb.analysis import export as ex
from mmlightbb.analysis.benchmark import max_rel_diff
from mmlightbb.models.backbones import BACKBONES
from mmlightbb.models.layers import randomize_bn_stats

from helpers import CUSTOM_ARCHS, REPO, build, load_tool, tiny_yolox_config

TINY_CFG = osp.join(REPO, 'configs', 'yolox_fasternet_t0_tiny.py')
RTOL = 1e-4
ARCHS = [pytest.param(name, arch, id=f'{name}-{arch}')
         for name in BACKBONES for arch in CUSTOM_ARCHS[name]]
pytest.importorskip('onnx')


def _backbone(name, arch):
    torch.manual_seed(0)
    model = build(name, arch)
    randomize_bn_stats(model, 0)
    return model.eval()


@pytest.mark.parametrize('name, arch', ARCHS)
@pytest.mark.parametrize('fmt', ex.FORMATS)
def test_every_backbone_exports_and_runs_equal(name, arch, fmt, tmp_path):
    pytest.importorskip('onnxruntime' if fmt == 'onnx' else 'openvino')
    model = _backbone(name, arch)
    x = torch.randn(1, 3, 64, 64)
    module = ex.prepare_for_export(model)
    path = ex.export_model(module, x, str(tmp_path / ('m.onnx' if fmt == 'onnx' else 'm.xml')),
                           fmt)
    assert ex.check_export(module, path, fmt, x) <= RTOL
    with torch.no_grad():  # and equal to the original (training-form, channels_last) backbone
        ref = model(x)
    outs = ex.load_runtime(path, fmt, threads=1)(x.numpy())
    assert max_rel_diff(ref, [torch.from_numpy(o) for o in outs]) <= RTOL
    assert sorted(os.listdir(tmp_path)) == (['m.onnx'] if fmt == 'onnx' else ['m.bin', 'm.xml'])


def test_fasternet_exports_as_plain_convs(tmp_path):
    import onnx
    model = _backbone('FasterNet', 'custom')
    path = ex.export_onnx(ex.prepare_for_export(model), torch.randn(1, 3, 32, 32),
                          str(tmp_path / 'f.onnx'))  # 32 px: a 1x1 last map, NCHW and NHWC
    nodes = onnx.load(path).graph.node
    ops = {node.op_type for node in nodes}
    assert 'Conv' in ops and not ops & {'MatMul', 'Gemm', 'Transpose'}, ops
    # every block's BN folded; left: the output norms after each stage's residual sum (no conv
    # to fold them into; a runtime applies them as one scale + shift)
    bns = [node.name for node in nodes if node.op_type == 'BatchNormalization']
    assert bns == [f'/module/norm{i}/BatchNormalization' for i in (0, 2, 4, 6)]
    # the model given is untouched: still channels_last on CPU, its GEMM path still runs
    assert model.cpu_channels_last


def test_dynamic_height_width(tmp_path):
    pytest.importorskip('onnxruntime')
    module = ex.prepare_for_export(_backbone('ConvNeXt', 'custom'))
    path = ex.export_onnx(module, torch.randn(1, 3, 64, 64), str(tmp_path / 'd.onnx'),
                          dynamic=True)
    run = ex.load_runtime(path, 'onnx')
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref = module(x)
    outs = run(x.numpy())
    assert [tuple(o.shape) for o in outs] == [tuple(r.shape) for r in ref]
    assert max_rel_diff(ref, [torch.from_numpy(o) for o in outs]) <= RTOL


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    module = ex.prepare_for_export(_backbone('FasterNet', 'custom'))
    target = tmp_path / 'old.onnx'
    target.write_bytes(b'previous export')

    def half_written(model, args, f, **kwargs):
        with open(f, 'wb') as fh:
            fh.write(b'partial')
        raise RuntimeError('exporter crashed')
    monkeypatch.setattr(torch.onnx, 'export', half_written)
    with pytest.raises(RuntimeError, match='exporter crashed'):
        ex.export_onnx(module, torch.randn(1, 3, 32, 32), str(target))
    assert os.listdir(tmp_path) == ['old.onnx'] and target.read_bytes() == b'previous export'


@pytest.mark.parametrize('fails', [False, True])
def test_openvino_pair_is_replaced_together_or_not_at_all(fails, tmp_path, monkeypatch):
    """The .bin and the .xml that reads it: both new, or (the writer failing after the .bin) both
    old; the intermediate ONNX file and the temporary files never remain. OpenVINO itself is
    stood in for: what is tested is the file handling."""
    (tmp_path / 'm.xml').write_text('old xml')
    (tmp_path / 'm.bin').write_text('old bin')

    def fake_export_onnx(module, x, path, dynamic):
        open(path, 'w').close()

    def save_model(model, xml, compress_to_fp16):
        assert xml.endswith('.xml') and not compress_to_fp16
        with open(xml[:-4] + '.bin', 'w') as f:  # OpenVINO's rule: the .bin beside the .xml
            f.write('new bin')
        if fails:
            raise RuntimeError('disk full')
        with open(xml, 'w') as f:
            f.write('new xml')

    monkeypatch.setattr(ex, 'require', lambda package: SimpleNamespace(
        convert_model=lambda path: path, save_model=save_model))
    monkeypatch.setattr(ex, 'export_onnx', fake_export_onnx)
    with (pytest.raises(RuntimeError, match='disk full') if fails else contextlib.nullcontext()):
        ex.export_openvino(None, None, str(tmp_path / 'm.xml'))
    assert sorted(os.listdir(tmp_path)) == ['m.bin', 'm.xml']
    expected = 'old' if fails else 'new'
    assert [(tmp_path / f).read_text() for f in ('m.bin', 'm.xml')] == [
        f'{expected} bin', f'{expected} xml']


def test_unknown_format_and_bad_paths(tmp_path):
    module = ex.prepare_for_export(_backbone('FasterNet', 'custom'))
    with pytest.raises(ex.ExportError, match="unknown export format 'tflite'"):
        ex.export_model(module, torch.randn(1, 3, 32, 32), str(tmp_path / 'm'), 'tflite')
    with pytest.raises(ex.ExportError, match='ends in .xml'):
        ex.export_openvino(module, torch.randn(1, 3, 32, 32), str(tmp_path / 'm.onnx'))


def test_missing_runtime_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import openvino -> ImportError
    with pytest.raises(ex.ExportError, match=r"package 'openvino' is not installed.*pip install "
                       'openvino'):
        ex.require('openvino')


def _run_tool(argv, capsys):
    tool = load_tool('export.py')
    code = None
    try:
        tool.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tool_exports_the_detector_and_checks_it(tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    out = str(tmp_path / 'det.onnx')
    code, stdout, _ = _run_tool([TINY_CFG, '--format', 'onnx', '--shape', '64', '64',
                                 '--out', out], capsys)
    assert code is None and osp.isfile(out)
    assert 'detector (raw head outputs, no NMS)' in stdout
    diff = float(stdout.split('max relative difference ')[1].split()[0])
    assert diff <= RTOL


@pytest.mark.parametrize('fmt', ex.FORMATS)
def test_cascade_rcnn_exports_backbone_and_neck(fmt, tmp_path, capsys):
    """A two-stage detector's export is its FPN maps (the RoI stages are not in the graph), equal
    to ``extract_feat`` in the runtime; the tool says what is left out."""
    pytest.importorskip('onnxruntime' if fmt == 'onnx' else 'openvino')
    cfg = osp.join(REPO, 'configs', 'cascade_rcnn_fasternet.py')
    out = str(tmp_path / ('cascade.onnx' if fmt == 'onnx' else 'cascade.xml'))
    code, stdout, _ = _run_tool(
        [cfg, '--format', fmt, '--shape', '64', '64', '--out', out, '--cfg-options',
         'model.backbone.init_cfg=None', 'model.backbone.arch=t0',
         'model.neck.in_channels=[40,80,160,320]'], capsys)
    assert code is None and osp.isfile(out)
    assert 'two-stage detector: backbone + neck (the FPN maps)' in stdout
    assert float(stdout.split('max relative difference ')[1].split()[0]) <= RTOL
    model, _ = ex.build_for_export(cfg, cfg_options={
        'model.backbone.init_cfg': None, 'model.backbone.arch': 't0',
        'model.neck.in_channels': [40, 80, 160, 320]})
    module = ex.prepare_for_export(model, backbone_only=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = module(x)
    assert len(maps) == 5 and all(m.shape[1] == 256 for m in maps)  # FPN P2..P6


def test_tool_errors_are_one_line(tmp_path, capsys, monkeypatch):
    code, _, err = _run_tool([TINY_CFG, '--format', 'tflite'], capsys)
    assert code == 2 and "unknown --format 'tflite'; choose one of onnx, openvino" in err

    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    code, _, _ = _run_tool([TINY_CFG, '--format', 'onnx', '--backbone-only'], capsys)
    assert isinstance(code, str) and code.startswith('error: ') and '\n' not in code
    assert "'onnxruntime' is not installed" in code
    monkeypatch.delitem(sys.modules, 'onnxruntime')

    # a checkpoint of a different model: one line naming the mismatch, no file written
    model, _ = ex.build_for_export(TINY_CFG)
    state = model.state_dict()
    state['backbone.unexpected.weight'] = torch.zeros(1)
    state.pop(next(k for k in state if k.startswith('neck.')))
    ckpt = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=state), ckpt)
    out = str(tmp_path / 'x.onnx')
    code, _, _ = _run_tool([TINY_CFG, ckpt, '--format', 'onnx', '--out', out], capsys)
    assert isinstance(code, str) and code.startswith('error: checkpoint') and '\n' not in code
    assert 'does not fit' in code and 'backbone.unexpected.weight' in code
    assert not osp.exists(out)

    code, _, _ = _run_tool([TINY_CFG, str(tmp_path / 'nope.pth'), '--format', 'onnx'], capsys)
    assert code == f"error: checkpoint not found: {str(tmp_path / 'nope.pth')!r}"


@pytest.mark.parametrize('fmt', ex.FORMATS)
def test_yolox_with_nms_gives_mmdets_detections(fmt, tmp_path):
    """Box decoding + class-aware NMS in the graph: the runtime's detections equal mmdet's
    ``predict`` (rescale=False) on the same image: same count, boxes, scores and labels."""
    import copy

    from mmlightbb.analysis.benchmark import make_batch
    pytest.importorskip('onnxruntime' if fmt == 'onnx' else 'openvino')
    torch.manual_seed(0)
    model, _ = ex.build_for_export(TINY_CFG)
    for conv in model.bbox_head.multi_level_conv_obj:  # objectness high: many boxes reach NMS
        conv.bias.data.fill_(2.0)
    det = ex.prepare_for_export(model, backbone_only=False).module
    wrap = ex.YOLOXDetections(det, (96, 96)).eval()
    with torch.no_grad():
        data = det.data_preprocessor(copy.copy(make_batch(1, (96, 96))), False)
        x = data['inputs']
        ref = det.predict(x, data['data_samples'], rescale=False)[0].pred_instances
    path = ex.export_model(wrap, x, str(tmp_path / ('d.onnx' if fmt == 'onnx' else 'd.xml')), fmt)
    dets, labels = ex.load_runtime(path, fmt)(x.numpy())
    order = torch.argsort(ref.scores, descending=True)
    assert 50 < len(ref.scores) == dets.shape[0] == labels.shape[0]
    assert max_rel_diff(ref.bboxes[order], torch.from_numpy(dets[:, :4])) <= RTOL
    assert max_rel_diff(ref.scores[order], torch.from_numpy(dets[:, 4])) <= RTOL
    assert (torch.from_numpy(labels) == ref.labels[order]).all()


def test_with_nms_needs_a_yolox_head():
    model, _ = ex.build_for_export(TINY_CFG)
    model.bbox_head.__class__ = type('RetinaHead', (type(model.bbox_head), ), {})
    with pytest.raises(ex.ExportError, match='--with-nms exports YOLOX detectors'):
        ex.YOLOXDetections(model, (64, 64))


@pytest.mark.slow
@pytest.mark.parametrize('fmt, backend', [('onnx', 'onnxruntime'), ('openvino', 'openvino')])
def test_test_tool_evaluates_the_exported_detector_as_pytorch(fmt, backend, tmp_path, tiny_coco):
    """tools/test.py --backend: the exported YOLOX graph (decoding + NMS) gives mmdet's
    detections on every test image (boxes rescaled to the original 128 px images, matched at IoU
    >= 0.99, scores within 1e-3) and so the same mAP as the PyTorch test."""
    import pickle
    import subprocess
    import sys

    from mmdet.structures.bbox import bbox_overlaps

    pytest.importorskip('onnxruntime' if fmt == 'onnx' else 'openvino')
    config = tmp_path / 'tiny.py'
    config.write_text(tiny_yolox_config(tiny_coco, dict(type='FasterNet', arch='t0',
                                                         out_indices=(1, 2, 3)),
                                        [80, 160, 320], size=64)
                      # VOC mAP50 too: near-random boxes rarely reach COCO's IoU thresholds
                      + "test_evaluator = [dict(type='CocoMetric', metric='bbox', ann_file="
                      f"data_root + {tiny_coco['ann_file']!r}), dict(type='VOCMetric', "
                      "metric='mAP', eval_mode='area', iou_thrs=0.5)]\n")
    torch.manual_seed(0)
    model, _ = ex.build_for_export(str(config))
    for conv in model.bbox_head.multi_level_conv_obj:  # objectness high: many boxes reach NMS
        conv.bias.data.fill_(2.0)
    for conv in model.bbox_head.multi_level_conv_reg:  # small deltas: finite, varied boxes
        conv.weight.data.mul_(0.01)
    ckpt = tmp_path / 'tiny.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)

    def test(*extra):
        out = tmp_path / f'{len(extra)}.pkl'
        proc = subprocess.run(
            [sys.executable, osp.join(REPO, 'tools', 'test.py'), str(config), str(ckpt), '--out',
             str(out), '--work-dir', str(tmp_path / 'w'), *extra], capture_output=True, text=True,
            timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        line = next(ln for ln in proc.stdout.splitlines() if 'coco/bbox_mAP:' in ln)
        maps = [float(line.split(f'{key}: ')[1].split()[0])
                for key in ('coco/bbox_mAP', 'pascal_voc/mAP')]
        return maps, pickle.load(open(out, 'rb'))

    ref_map, ref = test()
    got_map, got = test('--backend', backend)
    assert ref_map[1] > 0  # some boxes hit: the comparison means something
    assert got_map == pytest.approx(ref_map, abs=5e-4)  # identical to the third decimal
    assert len(ref) == len(got) == 8
    for r, g in zip(ref, got):
        rb, gb = r['pred_instances']['bboxes'], g['pred_instances']['bboxes']
        assert len(rb) == len(gb) > 10
        iou, match = bbox_overlaps(torch.as_tensor(rb), torch.as_tensor(gb)).max(1)
        assert (iou >= 0.99).all()
        scores = torch.as_tensor(g['pred_instances']['scores'])[match]
        assert (scores - torch.as_tensor(r['pred_instances']['scores'])).abs().max() <= 1e-3
        assert (torch.as_tensor(g['pred_instances']['labels'])[match] ==
                torch.as_tensor(r['pred_instances']['labels'])).all()


def test_exported_predictions_name_the_fix_for_another_batch_or_size(tmp_path):
    """The test loop hands the exported graph a batch it was not exported for: one line naming
    the fix, not the runtime's shape error."""
    pytest.importorskip('onnxruntime')
    from mmlightbb.analysis.benchmark import make_batch
    model, _ = ex.build_for_export(TINY_CFG)
    path = str(tmp_path / 'd.onnx')
    ex.export_with_nms(model, (64, 64), path, 'onnx')
    with ex.exported_predictions(model.eval(), path, 'onnx'):
        with pytest.raises(ex.ExportError, match='takes batch 1, the test loader gives 2: set '
                           'test_dataloader.batch_size=1'):
            model.test_step(make_batch(2, (64, 64)))
        with pytest.raises(ex.ExportError, match=r"on a test batch of \(1, 3, 96, 96\) .*export "
                           r"it at the test loader's padded size \(--shape H W\)"):
            model.test_step(make_batch(1, (96, 96)))
        pred = model.test_step(make_batch(1, (64, 64)))[0].pred_instances  # the exported size
        assert pred.bboxes.shape[1] == 4 and len(pred.scores) == len(pred.labels)
    assert 'test_step' not in vars(model)  # the class's test_step again after the block


def test_test_tool_backend_refuses_a_precision_it_cannot_run(tmp_path):
    import subprocess
    import sys
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')  # refused before it is read
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'test.py'), TINY_CFG, str(ckpt), '--backend',
         'onnxruntime', '--precision', 'bf16'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        'error: --backend onnxruntime runs fp32 or int8; drop --precision bf16')
