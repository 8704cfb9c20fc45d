"""tools/compare_backbones.py end to end on tiny VOC, COCO and YOLO-txt folders (made here): the
report with head and backbone columns, the dumped configs, skipping finished runs, resuming a
killed one, timing a finished run in another backend without training it again, and one clear
``error:`` line for each bad input.

Runs are kept tiny (64 px images, 1-3 epochs of 2-3 iterations, FasterNet-T0) so that the file
stays around two minutes on two busy cores; the numbers they produce mean nothing.
"""
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from mmlightbb.analysis.uncertainty import load_detections
from mmlightbb.engine.precision import cpu_bf16_support

from helpers import REPO, load_tool, main_table, make_samples, write_coco, write_voc, write_yolo

TOOL = osp.join(REPO, 'tools', 'compare_backbones.py')
TINY = ['--epochs', '1', '--size', '64', '--batch-size', '2', '--bench-iters', '1',
        '--backbones', 'fasternet:t0']


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600, env={**os.environ, 'PYTHONPATH': REPO}, **kw)


def _error_line(argv) -> str:
    """The SystemExit message of the tool's main() (what the command prints as its last line)."""
    with pytest.raises(SystemExit) as info:
        load_tool('compare_backbones.py').main(argv)
    msg = str(info.value.code)
    assert msg.startswith('error: ') and '\n' not in msg, msg
    return msg


def _table(md: str) -> dict:
    rows = main_table(md)
    header = [c.strip() for c in rows[0].strip('| ').split(' | ')]
    cells = [[c.strip() for c in r.strip('| ').split(' | ')] for r in rows[1:]]
    return {c[0]: dict(zip(header, c)) for c in cells}


@pytest.fixture(scope='module')
def voc_one_class(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('voc') / 'sonar_voc')
    write_voc(root, make_samples(10, ('wreck', ), size=64, seed=11))
    with open(osp.join(root, 'JPEGImages', 'img_009.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n truncated')  # an unreadable image: skipped with a count
    return root


@pytest.fixture(scope='module')
def voc_finished(voc_one_class, tmp_path_factory):
    """(out dir, stdout) of the command line's one tiny YOLOX run on ``voc_one_class``."""
    out = str(tmp_path_factory.mktemp('cmp') / 'cmp')
    proc = _run_cli([voc_one_class, '--out', out, '--heads', 'yolox', '--threads', '1', *TINY])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_voc_one_class_end_to_end_then_skipped(voc_one_class, voc_finished):
    out, log = voc_finished
    assert "dataset: " in log and "(voc layout), 1 classes ['wreck']" in log
    assert 'skipped 1 unreadable image(s): JPEGImages/img_009.png' in log
    assert '[1/1] yolox_fasternet_t0: training 1 epoch from scratch' in log
    assert '[1/1] yolox_fasternet_t0: epoch 1/1 done' in log and 'ETA this run' in log
    run_dir = osp.join(out, 'yolox_fasternet_t0')
    for name in ('benchmark.json', 'test_metrics.json', 'run.json', 'yolox_fasternet_t0.py',
                 'epoch_1.pth'):
        assert osp.isfile(osp.join(run_dir, name)), name
    rows = _table(open(osp.join(out, 'report', 'compare.md')).read())
    row = rows['yolox_fasternet_t0']
    assert (row['head'], row['backbone'], row['input']) == ('yolox', 'fasternet:t0',
                                                             '64x64 b1 test_step')
    assert (row['backend'], row['precision']) == ('pytorch', 'fp32')
    assert row['mAP (metric)'].endswith('(pascal_voc/mAP)') and row['deploy'] == 'yes'
    for png in ('map_vs_fps.png', 'macs_vs_latency.png'):
        assert osp.getsize(osp.join(out, 'report', png)) > 0
    # the noise of every number: the bootstrap of the saved detections, the side-by-side timing
    md = open(osp.join(out, 'report', 'compare.md')).read()
    assert md.startswith('# Accuracy vs speed\n\n**Verdict:** ')
    boot = json.load(open(osp.join(run_dir, 'bootstrap.json')))
    assert boot['resamples'] == 1000 and boot['images'] == 2
    low, high = boot['pascal_voc/mAP']['interval']
    assert 0 <= low <= boot['pascal_voc/mAP']['value'] <= high <= 1
    timing = json.load(open(osp.join(out, 'timing.json')))
    entry = timing['entries']['yolox_fasternet_t0 pytorch fp32']
    assert len(entry['samples_ms']) == 1 and entry['fps']['median'] > 0
    assert f"Side by side, {timing['started']} to {timing['finished']}" in md
    saved = json.load(open(osp.join(out, 'report', 'compare.json')))
    assert saved['rows'][0]['fps_source'] == 'side by side'
    assert 'map_samples' not in saved['rows'][0]  # the resampled values stay in bootstrap.json
    # the converted data: COCO json next to the runs, images referenced where they are
    train = json.load(open(osp.join(out, 'data', 'train.json')))
    assert train['info']['image_root'] == voc_one_class
    assert all(im['file_name'].startswith('JPEGImages/') for im in train['images'])
    # again with the same arguments: nothing is trained
    from mmlightbb.analysis.comparison import compare_backbones
    lines = []
    compare_backbones(voc_one_class, out, heads=['yolox'], backbones=['fasternet:t0'], epochs=1,
                      size=64, batch_size=2, bench_iters=1, threads=1, log=lines.append)
    assert any('yolox_fasternet_t0: already done, skipped' in ln for ln in lines)
    assert any('(0 trained now, 1 reused, 0 failed)' in ln for ln in lines)
    # other settings into the same folder are refused, not mixed into the table
    msg = _error_line([voc_one_class, '--out', out, '--heads', 'yolox', '--threads', '1',
                       *TINY[:-1], 'fasternet:t0', '--epochs', '2'])
    assert 'was made with other settings (epochs 1 -> 2)' in msg and 'another --out' in msg
    # the test precision is a setting of the run too (without native bf16, bf16 runs fp32 here
    # and the finished run is the same run)
    if cpu_bf16_support()[0]:
        msg = _error_line([voc_one_class, '--out', out, '--heads', 'yolox', '--threads', '1',
                           *TINY, '--precision', 'bf16'])
        assert 'was made with other settings (precision fp32 -> bf16)' in msg


@pytest.mark.slow
def test_a_backend_added_to_a_finished_run_is_timed_without_training(voc_one_class, voc_finished,
                                                                     tmp_path, monkeypatch):
    """--backends onnxruntime on a finished comparison: the run is timed in ONNX Runtime from its
    checkpoint, nothing is trained or tested again; a missing runtime leaves a note and is tried
    again next time; a run.json of settings version 1 (no precision: fp32) is the same run."""
    pytest.importorskip('onnxruntime')
    pytest.importorskip('openvino')
    from mmlightbb.analysis.comparison import compare_backbones
    out = str(tmp_path / 'cmp')
    shutil.copytree(voc_finished[0], out)  # the shared run stays as it is for the other tests
    run_dir = osp.join(out, 'yolox_fasternet_t0')
    with open(osp.join(run_dir, 'last_checkpoint'), 'w') as f:  # mmengine's absolute pointer
        f.write(osp.join(run_dir, 'epoch_1.pth'))
    with_every_box(run_dir)
    info = json.load(open(osp.join(run_dir, 'run.json')))
    del info['settings']['precision']  # as written before --precision
    json.dump(info, open(osp.join(run_dir, 'run.json'), 'w'))
    finished = ('epoch_1.pth', 'test_metrics.json', 'benchmark.json')
    mtimes = {name: os.stat(osp.join(run_dir, name)).st_mtime_ns for name in finished}
    kw = dict(heads=['yolox'], backends=['pytorch', 'onnxruntime', 'openvino'], epochs=1,
              backbones=['fasternet:t0'], size=64, batch_size=2, bench_iters=1, threads=1)
    lines = []
    with monkeypatch.context() as m:
        m.setitem(sys.modules, 'openvino', None)  # import openvino -> ImportError
        res = compare_backbones(voc_one_class, out, log=lines.append, **kw)
    text = '\n'.join(lines)
    assert ('yolox_fasternet_t0: already done, skipped' in text
            and 'timing it in onnxruntime fp32, openvino fp32' in text)
    assert 'training 1 epochs' not in text and 'resuming' not in text
    assert 'test VOC mAP50' not in text
    assert "openvino fp32 not timed: the python package 'openvino' is not installed" in text
    assert ('(0 trained now, 1 reused, 0 failed; backends added to finished runs: '
            'yolox_fasternet_t0 onnxruntime fp32, yolox_fasternet_t0 openvino fp32)') in text
    assert {name: os.stat(osp.join(run_dir, name)).st_mtime_ns for name in finished} == mtimes
    ort = json.load(open(osp.join(run_dir, 'benchmark-onnxruntime-fp32.json')))
    s = ort['settings']
    assert (s['backend'], s['precision'], s['mode'], s['input_hw']) == (
        'onnxruntime', 'fp32', 'exported_detector', [64, 64])
    assert ort['fps'] > 0 and s['checkpoint'] == osp.join(run_dir, 'epoch_1.pth')
    note = json.load(open(osp.join(run_dir, 'benchmark-openvino-fp32.json')))
    assert 'fps' not in note and "pip install openvino" in note['note']
    rows = {r['backend']: r for r in res['result']['rows']}
    assert list(rows) == ['pytorch', 'onnxruntime', 'openvino']
    # the runtime row's mAP is its own test's: the exported detector run in ONNX Runtime
    own = json.load(open(osp.join(run_dir, 'test_metrics-onnxruntime-fp32.json')))
    assert rows['onnxruntime']['map'] == own['pascal_voc/mAP']
    assert rows['onnxruntime']['map_source'] == 'test_metrics-onnxruntime-fp32.json'
    assert rows['onnxruntime']['map_pytorch'] == rows['pytorch']['map'] is not None
    assert 'test in onnxruntime fp32: VOC mAP50' in text
    # its detections, image by image, are PyTorch's (the same fp32 graph): the best box of each
    torch_dets, ort_dets = (load_detections(osp.join(run_dir, name)) for name in
                            ('detections.npz', 'detections-onnxruntime-fp32.npz'))
    assert np.array_equal(torch_dets['img_ids'], ort_dets['img_ids'])
    assert_same_best_boxes(torch_dets, ort_dets)
    assert osp.isfile(osp.join(run_dir, 'bootstrap-onnxruntime-fp32.json'))
    assert rows['onnxruntime']['map_interval'] is not None
    assert rows['openvino']['fps'] is None and rows['openvino']['pareto'] is None
    table = open(osp.join(out, 'report', 'compare.md')).read()
    assert '| onnxruntime | fp32 |' in table and 'Fastest timed deployment per run:' in table
    # again: the note is tried again (OpenVINO is there now), ONNX Runtime is not timed again
    ort_mtime = os.stat(osp.join(run_dir, 'benchmark-onnxruntime-fp32.json')).st_mtime_ns
    lines.clear()
    compare_backbones(voc_one_class, out, log=lines.append, **kw)
    text = '\n'.join(lines)
    assert 'timing it in openvino fp32' in text and 'openvino fp32: ' in text
    assert 'training 1 epochs' not in text
    assert os.stat(osp.join(run_dir, 'benchmark-onnxruntime-fp32.json')).st_mtime_ns == ort_mtime
    assert json.load(open(osp.join(run_dir, 'benchmark-openvino-fp32.json')))['fps'] > 0


def with_every_box(run_dir):
    """Test the finished tiny run again keeping every box (score_thr 0): after its one epoch
    no box scores above the config's 0.01, and the runtime tests compare boxes."""
    from mmlightbb.analysis.comparison.worker import run_stage
    name = osp.basename(run_dir)
    with open(osp.join(run_dir, name + '.py'), 'a') as f:
        f.write("\nmodel['test_cfg']['score_thr'] = 0.0\n")
    run_stage(run_dir, 'test')


def best_boxes(dets):
    """{image index: (box, score)} of the highest-scoring detection of each image."""
    best = {}
    for img, box, score in zip(dets['det_img'], dets['boxes'], dets['scores']):
        if img not in best or score > best[img][1]:
            best[int(img)] = (box, float(score))
    return best


def assert_same_best_boxes(a, b, shift=0, atol=0.5):
    """The best box of each image of detections ``a``, moved by ``shift`` px, is that of ``b``."""
    best_a, best_b = best_boxes(a), best_boxes(b)
    assert best_a.keys() == best_b.keys() and best_a
    for img, (box, score) in best_a.items():
        assert np.allclose(box + shift, best_b[img][0], atol=atol), (img, box, best_b[img][0])
        assert abs(score - best_b[img][1]) < 1e-3


@pytest.mark.slow
def test_a_broken_export_is_caught_by_the_runtimes_own_test(voc_one_class, voc_finished,
                                                           tmp_path, monkeypatch):
    """An export whose graph differs from the model (every box moved 16 px) is what the
    runtime row is tested on: its detections are the moved ones, not PyTorch's."""
    pytest.importorskip('onnxruntime')
    import torch
    from torch import nn

    from mmlightbb.analysis.comparison import compare_backbones, runs
    from mmlightbb.analysis.export import export_model, prepare_with_nms

    class Moved(nn.Module):
        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, x):
            dets, labels = self.detector(x)
            return torch.cat([dets[:, :4] + 16, dets[:, 4:]], 1), labels

    def broken_export(detector, shape, path, fmt):
        module = Moved(prepare_with_nms(detector, shape))
        x = torch.randn(1, 3, *shape)
        export_model(module, x, path, fmt)
        return module, x

    out = str(tmp_path / 'cmp')
    shutil.copytree(voc_finished[0], out)
    run_dir = osp.join(out, 'yolox_fasternet_t0')
    with open(osp.join(run_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(run_dir, 'epoch_1.pth'))
    with_every_box(run_dir)
    monkeypatch.setattr(runs, 'export_with_nms', broken_export)
    compare_backbones(voc_one_class, out, heads=['yolox'], backends=['pytorch', 'onnxruntime'],
                      epochs=1, backbones=['fasternet:t0'], size=64, batch_size=2,
                      bench_iters=1, threads=1, log=lambda line: None)
    torch_dets, ort_dets = (load_detections(osp.join(run_dir, name)) for name in
                            ('detections.npz', 'detections-onnxruntime-fp32.npz'))
    # the runtime's test saw the moved boxes: the best box of each image is PyTorch's + 16
    with pytest.raises(AssertionError):
        assert_same_best_boxes(torch_dets, ort_dets)
    assert_same_best_boxes(torch_dets, ort_dets, shift=16)


def test_the_runtime_rows_own_test_gives_its_map_interval_and_difference(tmp_path):
    """compare.load_rows: a runtime row with test_metrics-<backend>-<precision>.json takes its
    mAP, COCO mAP and bootstrap interval from there and notes the difference to PyTorch's."""
    from mmlightbb.analysis.compare import load_rows
    run = tmp_path / 'run'
    (run / '20261204_000000').mkdir(parents=True)
    json.dump({'pascal_voc/mAP': 0.5, 'coco/bbox_mAP': 0.3},
              open(run / '20261204_000000' / '20261204_000000.json', 'w'))
    json.dump({'pascal_voc/mAP': 0.0, 'coco/bbox_mAP': 0.0},
              open(run / 'test_metrics-onnxruntime-fp32.json', 'w'))
    boot = dict(resamples=100, images=2, level=0.95, images_key='k',
                **{'pascal_voc/mAP': dict(interval=[0.0, 0.0], samples=[0.0] * 100)})
    json.dump(boot, open(run / 'bootstrap-onnxruntime-fp32.json', 'w'))
    bench = dict(settings=dict(backend='onnxruntime', precision='fp32'), note='not timed')
    json.dump(bench, open(run / 'benchmark-onnxruntime-fp32.json', 'w'))
    rows = {r['backend']: r for r in load_rows(str(run))}
    ort = rows['onnxruntime']
    assert (ort['map'], ort['coco_map'], ort['map_pytorch']) == (0.0, 0.0, 0.5)
    assert ort['map_interval'] == [0.0, 0.0]
    assert 'mAP measured in onnxruntime fp32: 0.0000, -0.5000 vs PyTorch fp32' in ort['notes']


@pytest.mark.slow
def test_int8_rows_are_quantized_on_the_training_split_timed_and_tested_in_the_runtime(tmp_path):
    """--int8 added to a finished comparison: each runtime gets an INT8 row beside its fp32 row,
    calibrated on links to the training images only, timed side by side with the others and
    tested in that runtime (its own mAP and interval); nothing is trained again. Through the
    command line, so that NNCF and the INT8 runtimes live in their own process."""
    pytest.importorskip('nncf')
    pytest.importorskip('onnxruntime')
    data = write_voc(str(tmp_path / 'voc'), make_samples(18, ('wreck', ), size=64, seed=5))
    out = str(tmp_path / 'cmp')
    args = [data, '--out', out, '--heads', 'yolox', '--threads', '1', *TINY, '--backends',
            'pytorch', 'onnxruntime', 'openvino']
    proc = _run_cli(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = osp.join(out, 'yolox_fasternet_t0')
    finished = ('epoch_1.pth', 'test_metrics.json', 'benchmark-openvino-fp32.json')
    mtimes = {name: os.stat(osp.join(run_dir, name)).st_mtime_ns for name in finished}
    proc = _run_cli(args + ['--int8'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert 'timing it in onnxruntime int8, openvino int8' in text
    assert 'training 1 epoch' not in text
    assert {name: os.stat(osp.join(run_dir, name)).st_mtime_ns for name in finished} == mtimes
    calib = osp.join(out, 'int8_calibration')
    targets = {os.readlink(osp.join(calib, n)) for n in os.listdir(calib)}
    split = {part: {osp.basename(i['file_name']) for i in
                    json.load(open(osp.join(out, 'data', f'{part}.json')))['images']}
             for part in ('train', 'test')}
    assert {osp.basename(t) for t in targets} == split['train']
    assert not split['train'] & split['test']
    result = json.load(open(osp.join(out, 'report', 'compare.json')))
    rows = {(r['backend'], r['precision']): r for r in result['rows']}
    assert set(rows) == {('pytorch', 'fp32'), ('onnxruntime', 'fp32'), ('openvino', 'fp32'),
                         ('onnxruntime', 'int8'), ('openvino', 'int8')}
    timing = json.load(open(osp.join(out, 'timing.json')))
    for backend in ('onnxruntime', 'openvino'):
        bench = json.load(open(osp.join(run_dir, f'benchmark-{backend}-int8.json')))
        assert bench['settings']['precision'] == 'int8' and bench['fps'] > 0, bench
        assert calib in bench['settings']['precision_note']
        own = json.load(open(osp.join(run_dir, f'test_metrics-{backend}-int8.json')))
        row = rows[(backend, 'int8')]
        assert row['map'] == own['pascal_voc/mAP'] and row['map_interval'] is not None
        assert row['map_source'] == f'test_metrics-{backend}-int8.json'
        assert f'test in {backend} int8: VOC mAP50' in text
        assert 'fps' in timing['entries'][f'yolox_fasternet_t0 {backend} int8']
    md = open(osp.join(out, 'report', 'compare.md')).read()
    assert '| openvino | int8 |' in md and '* int8 rows: ' in md
    assert '| yolox_fasternet_t0 | openvino int8 | 0 | ' in md  # told apart from openvino fp32


@pytest.mark.slow
def test_more_seeds_train_only_the_new_seeds(voc_one_class, voc_finished, tmp_path):
    """--seeds 2 on a finished one-seed comparison: seed 0 is kept as it is, seed 1 is trained
    into its own folder, the report gives both seeds' mAP; the side-by-side timing is kept
    (seed 1 is not timed) until --retime."""
    from mmlightbb.analysis.comparison import compare_backbones
    out = str(tmp_path / 'cmp')
    shutil.copytree(voc_finished[0], out)
    run_dir = osp.join(out, 'yolox_fasternet_t0')
    with open(osp.join(run_dir, 'last_checkpoint'), 'w') as f:  # mmengine's absolute pointer
        f.write(osp.join(run_dir, 'epoch_1.pth'))
    finished = ('epoch_1.pth', 'test_metrics.json', 'benchmark.json', 'detections.npz')
    mtimes = {name: os.stat(osp.join(run_dir, name)).st_mtime_ns for name in finished}
    kw = dict(heads=['yolox'], backbones=['fasternet:t0'], epochs=1, size=64, batch_size=2,
              bench_iters=1, threads=1, seeds=2)
    lines = []
    res = compare_backbones(voc_one_class, out, log=lines.append, **kw)
    text = '\n'.join(lines)
    assert '[1/2] yolox_fasternet_t0 seed 0: already done, skipped' in text
    assert '[2/2] yolox_fasternet_t0 seed 1: training 1 epoch from scratch' in text
    assert {name: os.stat(osp.join(run_dir, name)).st_mtime_ns for name in finished} == mtimes
    seed1 = osp.join(out, 'yolox_fasternet_t0_seed1')
    assert json.load(open(osp.join(seed1, 'run.json')))['settings']['seed'] == 1
    assert osp.isfile(osp.join(seed1, 'bootstrap.json'))
    row = res['result']['rows'][0]
    assert len(res['result']['rows']) == 1 and row['seeds'] == [0, 1]
    assert len(row['map_seeds']) == 2 and row['map'] == pytest.approx(sum(row['map_seeds']) / 2)
    md = open(osp.join(out, 'report', 'compare.md')).read()
    assert '| yolox_fasternet_t0 | pytorch | 0, 1 | ' in md
    assert 'timing: timing.json of' in text  # the first seed's timing holds
    lines.clear()
    compare_backbones(voc_one_class, out, log=lines.append, retime=True, **kw)
    text = '\n'.join(lines)
    assert 'timing 1 detectors side by side: 1 rounds' in text
    assert 'training 1 epoch from scratch' not in text


@pytest.mark.slow
@pytest.mark.skipif(not cpu_bf16_support()[0], reason='no native bf16: bf16 runs fp32 here')
def test_bf16_is_the_precision_of_the_test_and_of_every_backend(voc_one_class, tmp_path):
    """--precision bf16: the test loop autocasts (in the Runner's config, not in <run>.py, which
    stays the fp32 config of tools/train.py and tools/test.py), PyTorch and OpenVINO time in
    bf16, and the report shows the bf16 mAP on both rows."""
    pytest.importorskip('openvino')
    from mmengine.config import Config

    from mmlightbb.analysis.comparison import compare_backbones
    out = str(tmp_path / 'cmp')
    res = compare_backbones(voc_one_class, out, heads=['yolox'], backbones=['fasternet:t0'],
                            epochs=1, size=64, batch_size=2, bench_iters=1, threads=1,
                            precision='bf16', backends=['openvino'], log=lambda line: None)
    run_dir = osp.join(out, 'yolox_fasternet_t0')
    assert json.load(open(osp.join(run_dir, 'run.json')))['settings']['precision'] == 'bf16'
    stamp = next(f for f in os.listdir(run_dir) if f[:8].isdigit() and f.endswith('.py'))
    assert Config.fromfile(osp.join(run_dir, stamp)).test_cfg == dict(type='AutocastTestLoop',
                                                                      precision='bf16')
    assert Config.fromfile(osp.join(run_dir, 'yolox_fasternet_t0.py')).test_cfg == dict(
        type='TestLoop')
    torch_bench = json.load(open(osp.join(run_dir, 'benchmark.json')))['settings']
    assert (torch_bench['precision'], torch_bench['dtype']) == ('bf16', 'bfloat16')
    ov = json.load(open(osp.join(run_dir, 'benchmark-openvino-bf16.json')))
    assert ov['settings']['precision'] == 'bf16' and ov['fps'] > 0
    rows = res['result']['rows']
    assert [(r['backend'], r['precision']) for r in rows] == [('pytorch', 'bf16'),
                                                              ('openvino', 'bf16')]
    assert rows[0]['map'] is not None and rows[1]['map'] == rows[0]['map']
    assert 'precision of the test and of every benchmark: bf16 autocast' in open(
        osp.join(out, 'report', 'compare.md')).read()


@pytest.mark.slow
def test_coco_several_classes_cascade_and_its_config(tmp_path):
    classes = ('rect', 'disc', 'triangle')
    root = write_coco(str(tmp_path / 'coco'), make_samples(8, classes, size=64, seed=12),
                      classes, parts={'train': range(6), 'val': [6, 7]})
    from mmengine.config import Config

    from mmlightbb.analysis.comparison import compare_backbones
    lines = []
    res = compare_backbones(root, str(tmp_path / 'cmp'), heads=['cascade'],
                            backbones=['fasternet:t0'], epochs=1, size=64, batch_size=2,
                            bench_iters=1, bench_warmup=1, threads=1,
                            backends=['pytorch', 'onnxruntime'], log=lines.append)
    assert res['data']['classes'] == list(classes)
    assert res['data']['split'] == 'annotations/train.json (train) and annotations/val.json (test)'
    run_dir = osp.join(str(tmp_path / 'cmp'), 'cascade_fasternet_t0')
    metrics = json.load(open(osp.join(run_dir, 'test_metrics.json')))
    assert 'pascal_voc/mAP' in metrics
    row = res['result']['rows'][0]
    assert (row['head'], row['backbone'], row['fps'] > 0) == ('cascade', 'fasternet:t0', True)
    # its RoI stages do not export: the ONNX Runtime entry is a note, the run does not fail
    entry = json.load(open(osp.join(run_dir, 'benchmark-onnxruntime-fp32.json')))
    assert 'fps' not in entry and res['failures'] == []
    if importlib.util.find_spec('onnxruntime'):
        assert 'CascadeRCNN with CascadeRoIHead is not exported yet' in entry['note']
    noted = res['result']['rows'][1]
    assert (noted['backend'], noted['fps'], noted['map']) == ('onnxruntime', None, row['map'])
    assert any('cascade_fasternet_t0: onnxruntime fp32 not timed: ' in ln for ln in lines)
    # the dumped config stands alone: absolute paths, mmlightbb imported, the neck fits
    cfg = Config.fromfile(osp.join(run_dir, 'cascade_fasternet_t0.py'))
    assert cfg.custom_imports == dict(imports=['mmlightbb'], allow_failed_imports=False)
    assert cfg.work_dir == run_dir and osp.isabs(cfg.train_dataloader.dataset.ann_file)
    assert cfg.model.neck.in_channels == [40, 80, 160, 320]  # FasterNet-T0's out_channels
    assert cfg.model.roi_head.bbox_head[0].num_classes == 3
    assert cfg.train_dataloader.dataset.metainfo.classes == classes
    assert cfg.train_dataloader.dataset.type == 'SonarDataset'
    assert cfg.train_dataloader.dataset.pipeline[0].type == 'LoadSonarImageFromFile'


def test_a_head_of_0_epochs_is_timed_only_never_trained_or_tested(voc_one_class, tmp_path):
    from mmlightbb.analysis.comparison import compare_backbones
    out, lines = str(tmp_path / 'cmp'), []
    kw = dict(heads=['cascade'], backbones=['fasternet:t0', 'baseline'], epochs=1,
              epochs_by_head={'cascade': 0}, size=64, batch_size=2, bench_iters=2,
              bench_warmup=1, threads=1)
    res = compare_backbones(voc_one_class, out, log=lines.append, **kw)
    run_dir = osp.join(out, 'cascade_fasternet_t0')
    assert not osp.exists(osp.join(run_dir, 'test_metrics.json'))
    assert not osp.exists(osp.join(run_dir, 'detections.npz'))
    assert sorted(f for f in os.listdir(run_dir) if f.endswith('.pth')) == ['epoch_0.pth']
    assert not any(': training' in ln or ': test' in ln for ln in lines), lines
    rows = {r['name']: r for r in res['result']['rows']}
    assert set(rows) == {'cascade_fasternet_t0', 'cascade_resnet_50'}
    for row in rows.values():  # timed side by side, no mAP, off the front and the verdict
        assert row['fps'] > 0 and row['fps_source'].startswith('side by side'), row
        assert (row['map'], row['pareto'], row['did_not_learn']) == (None, None, False)
        assert 'timed only (0 epochs): not trained or tested' in row['notes']
    assert res['result']['verdict']['pairs'] == []
    assert res['result']['verdict']['sentence'] == 'Cascade R-CNN: no run has an mAP (speeds only).'
    md = open(res['paths']['compare.md']).read()
    assert 'Cascade R-CNN: timed only (0 epochs: not trained or tested)' in md
    # run again: both are finished runs, nothing is built, trained or timed again
    lines.clear()
    compare_backbones(voc_one_class, out, log=lines.append, **kw)
    assert sum('already done, skipped (timed only' in ln for ln in lines) == 2, lines
    assert any('timing.json of' in ln and 'holds every run' in ln for ln in lines), lines
    # a timed-only folder is not reused for a trained run: its settings differ
    from mmlightbb.analysis.comparison import ComparisonError
    with pytest.raises(ComparisonError, match='was made with other settings'):
        compare_backbones(voc_one_class, out, **dict(kw, epochs_by_head={'cascade': 1}))


@pytest.mark.slow
def test_yolo_killed_run_resumes_then_is_skipped(tmp_path):
    classes = ('mine', 'tyre')
    samples = make_samples(8, classes, size=64, seed=13)
    root = write_yolo(str(tmp_path / 'yolo'), samples, classes, ext='.jpg',
                      sub_splits={'train': range(6), 'val': [6, 7]}, names_file='data.yaml')
    out = str(tmp_path / 'cmp')
    args = [root, '--out', out, '--heads', 'yolox', '--threads', '1', '--epochs', '4',
            '--size', '64', '--batch-size', '2', '--bench-iters', '1',
            '--backbones', 'fasternet:t0']
    run_dir = osp.join(out, 'yolox_fasternet_t0')
    proc = subprocess.Popen([sys.executable, TOOL, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, 'PYTHONPATH': REPO})
    try:
        deadline = time.time() + 400
        from mmlightbb.engine import last_complete_checkpoint
        # the pointer is written after the checkpoint: kill once a resumable state exists
        while (last_complete_checkpoint(run_dir) is None and proc.poll() is None
               and time.time() < deadline):
            time.sleep(0.05)
        assert proc.poll() is None, 'the run ended before it could be killed'
        proc.kill()  # as a crash or a power cut would: no clean-up
    finally:
        proc.kill()
        proc.wait()
    assert not osp.exists(osp.join(out, 'yolox_fasternet_t0', 'benchmark.json'))
    from mmlightbb.analysis.comparison import compare_backbones
    lines = []
    kw = dict(heads=['yolox'], backbones=['fasternet:t0'], epochs=4, size=64, batch_size=2,
              bench_iters=1, threads=1)
    res = compare_backbones(root, out, log=lines.append, **kw)
    text = '\n'.join(lines)
    assert "2 classes ['mine', 'tyre'] (names from data.yaml)" in text
    assert 'sub-folders train (train) and val (test)' in text
    assert 'yolox_fasternet_t0: resuming from yolox_fasternet_t0/epoch_' in text
    assert 'epoch 4/4 done' in text and 'epoch 1/4 done' not in text
    assert res['result']['rows'][0]['fps'] > 0
    lines.clear()
    compare_backbones(root, out, log=lines.append, **kw)
    assert any('already done, skipped' in ln for ln in lines)


# ------------------------------------------------------------------------------ bad inputs
@pytest.fixture(scope='module')
def voc_small(tmp_path_factory):
    return write_voc(str(tmp_path_factory.mktemp('vs') / 'v'), make_samples(6, size=64))


@pytest.mark.parametrize('extra,expected', [
    (['--heads', 'retina'], "unknown head 'retina'; valid heads are ['yolox', 'cascade']"),
    (['--backbones', 'mobilenet'], "unknown backbone 'mobilenet'; valid backbones are"),
    (['--backbones', 'fasternet:t9'],
     "unknown arch 't9' for backbone 'fasternet'; valid archs are ['csp-t2', 'l', 'm', 's', "
     "'t0', 't1', 't2']"),
    (['--pretrained', 'convnext=x.pth', '--backbones', 'fasternet'],
     '--pretrained convnext=...: no chosen backbone is convnext'),
    (['--pretrained', 'fasternet=/nope.pth', '--backbones', 'fasternet'],
     '--pretrained fasternet=/nope.pth: checkpoint file not found'),
    (['--pretrained', 'fasternet=mmlightbb://nope', '--backbones', 'fasternet'],
     "--pretrained fasternet=mmlightbb://nope: unknown pretrained weights 'nope'"),
    (['--classes', 'rect', 'mine'], '--classes names mine, which the annotations of'),
    (['--batch-size', '4'], 'the test split has 1 image(s), fewer than the batch size 4'),
    (['--size', '100'], '--size must be a multiple of 32'),
    (['--precision', 'fp8'],
     "unknown precision 'fp8'; valid precisions are ['fp32', 'bf16', 'fp16'] (--precision)"),
    (['--backends', 'pytorch', 'tensorrt'],
     "unknown backend 'tensorrt'; valid backends are ['pytorch', 'onnxruntime', 'openvino'] "
     '(--backends)'),
    (['--precision', 'fp16'], '--precision fp16: fp16 is CUDA only'),
    (['--seeds', '0'], '--seeds must be an integer >= 1, got 0'),
    (['--bootstrap', '10'], '--bootstrap must be an integer >= 100, got 10'),
    (['--int8'], '--int8 quantizes the runtimes of --backends; add --backends openvino (or '
     'onnxruntime)'),
    (['--cascade-epochs', '-1'],
     '--cascade-epochs must be an integer >= 0 (0: timed only, not trained), got -1'),
])
def test_bad_options_are_one_line(voc_small, tmp_path, extra, expected):
    msg = _error_line([voc_small, '--out', str(tmp_path / 'o'), '--epochs', '1', *extra])
    assert expected in msg, msg


def test_pretrained_weights_reach_the_run_config(voc_small, tmp_path):
    from mmlightbb.analysis import detector_configs as dc
    from mmlightbb.analysis.comparison import plan_runs
    from mmlightbb.datasets import prepare_dataset
    ckpt = tmp_path / 'r18.pth'
    ckpt.write_bytes(b'weights')
    runs = plan_runs(['yolox', 'cascade'], ['fasternet:t0', 'baseline'], quick=True,
                     pretrained={'resnet:18': str(ckpt), 'fasternet': 'mmlightbb://fasternet_t0'})
    assert [(r['name'], r['checkpoint']) for r in runs] == [
        ('yolox_fasternet_t0', 'mmlightbb://fasternet_t0'), ('yolox_cspdarknet_tiny', None),
        ('cascade_fasternet_t0', 'mmlightbb://fasternet_t0'), ('cascade_resnet_18', str(ckpt))]
    data = prepare_dataset(voc_small, str(tmp_path / 'data'))
    cfg = dc.build_config('cascade', 'resnet', '18', data, str(tmp_path / 'run'), 1, 64,
                          checkpoint=str(ckpt))
    backbone = cfg.model.backbone
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=str(ckpt))
    assert (backbone.frozen_stages, backbone.norm_eval) == (1, True)  # mmdet's pretrained recipe
    assert cfg.model.neck.in_channels == [64, 128, 256, 512]
    scratch = dc.build_config('cascade', 'resnet', '18', data, str(tmp_path / 'run'), 1, 64)
    assert (scratch.model.backbone.frozen_stages, scratch.model.backbone.norm_eval) == (-1, False)


def test_mobilenetv2_is_the_classic_lightweight_baseline(voc_small, tmp_path):
    """mmdet's MobileNetV2 by width factor: strides 8/16/32 for YOLOX (32/96/320 channels at
    1.0), 4..32 for Cascade R-CNN; an unknown width is one line."""
    from mmlightbb.analysis import detector_configs as dc
    from mmlightbb.analysis.comparison import plan_runs
    from mmlightbb.datasets import prepare_dataset
    runs = plan_runs(['yolox', 'cascade'], ['mobilenetv2', 'mobilenetv2:0.5'])
    assert [r['name'] for r in runs] == [
        'yolox_mobilenetv2_1.0', 'yolox_mobilenetv2_0.5', 'cascade_mobilenetv2_1.0',
        'cascade_mobilenetv2_0.5']
    data = prepare_dataset(voc_small, str(tmp_path / 'data'))
    cfg = dc.build_config('yolox', 'mobilenetv2', '1.0', data, str(tmp_path / 'run'), 1, 64)
    assert cfg.model.backbone.type == 'MobileNetV2' and cfg.model.neck.in_channels == [32, 96,
                                                                                         320]
    cfg = dc.build_config('cascade', 'mobilenetv2', '0.5', data, str(tmp_path / 'run'), 1, 64)
    assert cfg.model.backbone.widen_factor == 0.5 and len(cfg.model.neck.in_channels) == 4
    assert "valid archs are ['0.5', '0.75', '1.0', '1.4']" in _error_line(
        [voc_small, '--out', str(tmp_path / 'o'), '--backbones', 'mobilenetv2:2'])


@pytest.mark.slow
def test_rtmdet_tiny_is_a_row_of_the_yolox_runs(voc_one_class, tmp_path):
    """--backbones rtmdet:tiny: mmdet's RTMDet-tiny, whole, trained and tested on the YOLOX
    schedule beside YOLOX runs (not with Cascade R-CNN); its config stands alone."""
    from mmengine.config import Config

    from mmlightbb.analysis.comparison import compare_backbones
    out = str(tmp_path / 'cmp')
    res = compare_backbones(voc_one_class, out, heads=['yolox', 'cascade'],
                            backbones=['rtmdet:tiny'], epochs=1, size=64, batch_size=2,
                            bench_iters=1, threads=1, log=lambda line: None)
    assert [(r['name'], r['head'], r['backbone']) for r in res['result']['rows']] == [
        ('rtmdet_tiny', 'yolox', 'rtmdet:tiny')]
    row = res['result']['rows'][0]
    assert row['fps'] > 0 and row['map'] is not None and row['map_interval'] is not None
    cfg = Config.fromfile(osp.join(out, 'rtmdet_tiny', 'rtmdet_tiny.py'))
    assert cfg.model.bbox_head.type == 'RTMDetSepBNHead' and cfg.model.bbox_head.num_classes == 1
    assert cfg.model.backbone.init_cfg is None and cfg.model.neck.norm_cfg == dict(type='BN')
    assert cfg.train_dataloader.dataset.pipeline[0].type == 'LoadSonarImageFromFile'


def test_bad_folders_are_one_line(tmp_path):
    out = str(tmp_path / 'o')
    (tmp_path / 'photos').mkdir()
    (tmp_path / 'photos' / 'readme.txt').write_text('hello')
    assert 'is in none of the known layouts' in _error_line([str(tmp_path / 'photos'), '--out',
                                                             out])
    (tmp_path / 'noxml' / 'Annotations').mkdir(parents=True)
    (tmp_path / 'noxml' / 'JPEGImages').mkdir()
    assert 'holds no .xml annotation files' in _error_line([str(tmp_path / 'noxml'), '--out',
                                                            out])
    root = write_voc(str(tmp_path / 'empty'), [(img, []) for img, _ in make_samples(4, size=64)])
    assert 'the annotations hold no boxes' in _error_line([root, '--out', out])
    root = write_voc(str(tmp_path / 'split'), make_samples(4, size=64),
                     splits={'train': [0, 1], 'val': [2, 3]})
    os.remove(osp.join(root, 'JPEGImages', 'img_003.png'))
    msg = _error_line([root, '--out', out])
    assert 'ImageSets/Main/val.txt names 1 image(s) with no image' in msg and 'img_003' in msg


def test_the_command_prints_one_error_line_and_exits_1(tmp_path):
    proc = _run_cli([str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: dataset folder not found: '{tmp_path / 'missing'}'")
    assert 'Traceback' not in proc.stderr


def test_the_demo_refuses_an_unknown_backend_before_making_its_data(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--backends',
                           'pytorch', 'tensorrt', '--precision', 'bf16', '--work-dir',
                           str(tmp_path / 'demo'), '--data', str(tmp_path / 'data')],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, 'PYTHONPATH': REPO})
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unknown backend 'tensorrt'; valid backends are ['pytorch', 'onnxruntime', "
        "'openvino'] (--backends)")
    assert not (tmp_path / 'data').exists()


@pytest.mark.slow
def test_the_demo_trains_yolox_and_times_cascade_rcnn_only(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--backbones',
                           'fasternet:t0', '--epochs', '1', '--size', '64', '--num-train', '16',
                           '--num-val', '8', '--bench-iters', '2', '--work-dir',
                           str(tmp_path / 'demo'), '--data', str(tmp_path / 'data')],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, 'PYTHONPATH': REPO})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '(1 trained now, 1 timed only, 0 reused, 0 failed)' in proc.stdout
    table = _table((tmp_path / 'demo' / 'report' / 'compare.md').read_text())
    assert table['yolox_fasternet_t0']['mAP (metric)'].endswith('(pascal_voc/mAP)')
    assert table['cascade_fasternet_t0']['mAP (metric)'] == 'missing'
    assert float(table['cascade_fasternet_t0']['FPS']) > 0
    assert not (tmp_path / 'demo' / 'cascade_fasternet_t0' / 'test_metrics.json').exists()


@pytest.mark.slow
def test_dumped_config_reproduces_the_run_with_tools_train(tmp_path):
    """python tools/train.py <run>.py, unedited, trains the same weights bit for bit (~1 min;
    at the same number of torch threads: float sums depend on it)."""
    import torch
    root = write_voc(str(tmp_path / 'voc'), make_samples(10, ('wreck', ), size=64, seed=14))
    from mmlightbb.analysis.comparison import compare_backbones
    compare_backbones(root, str(tmp_path / 'cmp'), heads=['yolox'], backbones=['fasternet:t0'],
                      epochs=1, size=64, batch_size=2, bench_iters=1,
                      threads=torch.get_num_threads(), log=lambda line: None)
    run_dir = tmp_path / 'cmp' / 'yolox_fasternet_t0'
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'train.py'),
                           str(run_dir / 'yolox_fasternet_t0.py'), '--work-dir',
                           str(tmp_path / 'again')], capture_output=True, text=True, cwd=REPO,
                          timeout=600, env={**os.environ, 'PYTHONPATH': REPO})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = torch.load(run_dir / 'epoch_1.pth', map_location='cpu', weights_only=False)
    again = torch.load(tmp_path / 'again' / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert ours['state_dict'].keys() == again['state_dict'].keys()
    for key, value in ours['state_dict'].items():
        assert torch.equal(value, again['state_dict'][key]), key


@pytest.mark.parametrize('precision,backends,device,native,expected', [
    ('bf16', ['onnxruntime'], 'cpu', True, '--backends onnxruntime runs the fp32 graph, but the '
     'runs are tested in bf16; use --precision fp32, or drop onnxruntime (openvino runs bf16)'),
    ('fp32', ['openvino'], 'cuda', True, '--backends openvino runs on the CPU; use --device cpu'),
])
def test_precision_and_backends_that_cannot_run_are_refused(monkeypatch, precision, backends,
                                                            device, native, expected):
    from mmlightbb.analysis.comparison import ComparisonError, check_precision_and_backends
    from mmlightbb.engine import precision as prec
    monkeypatch.setattr(prec, 'cpu_bf16_support', lambda: (native, 'test'))
    with pytest.raises(ComparisonError, match='^' + re.escape(expected)):
        check_precision_and_backends(precision, backends, device)


def test_bf16_without_native_support_runs_fp32_with_the_reason(monkeypatch):
    from mmlightbb.analysis.comparison import check_precision_and_backends
    from mmlightbb.engine import precision as prec
    monkeypatch.setattr(prec, 'cpu_bf16_support', lambda: (False, 'no avx512_bf16'))
    plan = check_precision_and_backends('bf16', ['onnxruntime', 'pytorch', 'onnxruntime'], 'cpu')
    assert plan == dict(requested='bf16', precision='fp32', backends=['pytorch', 'onnxruntime'],
                        note='bf16 requested but not native here (no avx512_bf16); running fp32')
