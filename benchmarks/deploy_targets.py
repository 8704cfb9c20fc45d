"""CPU deployment targets: bf16 and the export runtimes against PyTorch fp32, side by side.

    python benchmarks/deploy_targets.py [--only backbones detectors training] [--threads 2]
        [--iters 8] [--warmup 2] [--quick] [--profile] [--out r.json]

Every row times its sides in one process, interleaved (A, B, C, ... repeated ``--iters`` times;
medians), so that load from elsewhere on the machine hits all sides alike: read the ratios, not the
absolute times. Session creation, compilation and ``--warmup`` calls are untimed; torch, ONNX
Runtime and OpenVINO are pinned to ``--threads``. Batch 1 unless stated.

* backbones (the target: the fastest of bf16 / ONNX Runtime / OpenVINO <= 0.6x the fp32 PyTorch
  path): FasterNet-T2, CSPConvNeXt-tiny, ConvNeXt-T and ParameterNet-600m at 640, RepLKNet-31B at
  384; out_indices 1..3, random init with randomized BN statistics, deployed. "pytorch fp32" is
  the project's fastest CPU path (channels_last, FasterNet's GEMM blocks), "pytorch bf16" the same
  under bf16 autocast, the runtimes run the exported plain NCHW graph (``tools/export.py``).
* int8 (every backbone and detector): ONNX Runtime (QDQ, per-channel) and OpenVINO (NNCF) INT8
  graphs of the same export, quantized on random inputs (latency does not depend on their
  content; accuracy is measured with ``tools/test.py --precision int8`` on real images); target
  for the detectors: OpenVINO int8 <= 0.6x OpenVINO bf16.
* detectors (target <= 0.6x): YOLOX-s with FasterNet-T2 and with CSPConvNeXt-tiny at 640, the
  shipped configs with random weights, deployed; PyTorch sides = ``model.test_step`` (data
  preprocessor, backbone, neck, head, box decoding and NMS); runtime sides = the same data
  preprocessor in PyTorch, then the exported graph with decoding and NMS in it
  (``tools/export.py --with-nms``).
* cascade (no target: what exporting would save): Cascade R-CNN with FasterNet-T2 at 640, random
  weights, deployed: its whole ``test_step``, its backbone + neck (``extract_feat``) in PyTorch and
  exported to every runtime side, and the projected ``test_step`` with that part exported (RPN and
  RoI stages stay in PyTorch), so that one can judge whether exporting the RoI stages would pay.
* training (target <= 0.7x): one YOLOX training iteration of the demo
  (``configs/yolox_fasternet.py`` rescaled by ``short_schedule_config``: 160x160, batch 8, from
  scratch) in fp32
  (``OptimWrapper``) and bf16 (``CPUBF16OptimWrapper``, what ``tools/train.py --amp`` uses on
  CPU), on the same batch from a small synthetic sonar set, each side with its own model and
  optimizer.

Every side's outputs are compared with PyTorch fp32 on the same input first (max relative
difference; detectors: the number of detections and the largest score difference of the top 10).
``--profile`` breaks down the fp32 side, the fastest side and OpenVINO bf16 and int8 of every
target: PyTorch sides by torch.profiler's op categories, OpenVINO sides by its own performance
counters (:mod:`mmlightbb.analysis.runtime_profile`: kernel precision, layer type, slowest nodes).
bf16 sides need a CPU with native bf16 (else they are left out, with the reason). The load
average before and after is printed. ``--quick`` runs every row at a small size with one iteration
(a smoke test of the script, not a measurement).
"""
import argparse
import copy
import functools
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmlightbb.analysis.benchmark import (autocast_compute, autocast_context, build_detector,
                                          cpu_bf16_support, cpu_name, deploy_model, make_batch,
                                          max_rel_diff, profile_ops, time_interleaved)
from mmlightbb.analysis.export import (export_model, load_runtime, prepare_for_export,
                                       prepare_with_nms)
from mmlightbb.analysis.pipeline import short_schedule_config
from mmlightbb.analysis.quantize import MIN_CALIBRATION_IMAGES, quantize_exported
from mmlightbb.analysis.runtime_profile import profile_openvino
from mmlightbb.datasets import make_sonar_dataset
from mmlightbb.models.layers import randomize_bn_stats

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
GROUPS = ('backbones', 'detectors', 'cascade', 'training')
BACKBONES = [  # label, backbone config, input side
    ('FasterNet-T2', dict(type='FasterNet', arch='t2'), 640),
    ('CSPConvNeXt-tiny', dict(type='CSPConvNeXt', arch='tiny'), 640),
    ('ConvNeXt-T', dict(type='ConvNeXt', arch='tiny'), 640),
    ('RepLKNet-31B', dict(type='RepLKNet', arch='31B'), 384),
    ('ParameterNet-600m', dict(type='ParameterNet', arch='600m'), 640),
]
DETECTORS = [('YOLOX FasterNet-T2', 'configs/yolox_fasternet.py'),
             ('YOLOX CSPConvNeXt-tiny', 'configs/yolox_cspconvnext.py')]
CASCADE = ('Cascade R-CNN FasterNet-T2', 'configs/cascade_rcnn_fasternet.py')
LIMITS = dict(backbones=0.6, detectors=0.6, training=0.7, int8=0.6)
CALIBRATION_INPUTS = MIN_CALIBRATION_IMAGES  # random inputs: latency does not depend on them


def as_tensors(out):
    return [o if isinstance(o, torch.Tensor) else torch.from_numpy(np.asarray(o))
            for o in (out if isinstance(out, (list, tuple)) else [out])]


def runtime_sides(module, x, tmp, key, threads, bf16, calibration):
    """({side: fn(array) -> outputs}, {OpenVINO side: fn() -> its profile on ``x``}) of
    ``module`` exported to ONNX Runtime and OpenVINO, fp32, bf16 (OpenVINO) and INT8 (both;
    quantized on the ``calibration`` arrays)."""
    onnx_path = export_model(module, x, osp.join(tmp, f'{key}.onnx'), 'onnx')
    xml_path = export_model(module, x, osp.join(tmp, f'{key}.xml'), 'openvino')
    files = {'onnxruntime fp32': (onnx_path, 'onnx', 'fp32'),
             'openvino f32': (xml_path, 'openvino', 'fp32')}
    if bf16:
        files['openvino bf16'] = (xml_path, 'openvino', 'bf16')
    for fmt, path, name in (('onnx', onnx_path, 'onnxruntime int8'),
                            ('openvino', xml_path, 'openvino int8')):
        int8 = osp.join(tmp, f'{key}_int8{osp.splitext(path)[1]}')
        quantize_exported(None, None, path, fmt, int8, calibration)
        files[name] = (int8, fmt, 'int8')
    sides = {name: load_runtime(path, fmt, threads, precision)
             for name, (path, fmt, precision) in files.items()}
    arr = x.numpy()
    profilers = {name: functools.partial(profile_openvino, path, arr, threads, precision)
                 for name, (path, fmt, precision) in files.items() if fmt == 'openvino'}
    return sides, profilers


def int8_target(rows, label):
    """The INT8 target of a detector: OpenVINO int8 <= 0.6x OpenVINO bf16 (f32 without bf16)."""
    by_side = {r['side']: r['median_ms'] for r in rows}
    base = 'openvino bf16' if 'openvino bf16' in by_side else 'openvino f32'
    ratio = by_side['openvino int8'] / by_side[base]
    return dict(group='int8', model=f'{label} (vs {base})', limit=LIMITS['int8'],
                best_side='openvino int8', best_ratio=ratio, passed=ratio <= LIMITS['int8'])


def time_row(group, label, sides, args, diffs, note='', profilers=None):
    samples = time_interleaved(sides, args.iters, args.warmup)
    base = statistics.median(samples['pytorch fp32'])
    rows = [dict(group=group, model=label, side=name, median_ms=statistics.median(s),
                 ratio=statistics.median(s) / base, diff=diffs.get(name), note=note)
            for name, s in samples.items()]
    best = min((r for r in rows if r['side'] != 'pytorch fp32'), key=lambda r: r['ratio'],
               default=None)
    target = dict(group=group, model=label, limit=LIMITS[group],
                  best_side=best and best['side'], best_ratio=best and best['ratio'],
                  passed=bool(best) and best['ratio'] <= LIMITS[group])
    if args.profile and best:
        # where the time goes: PyTorch sides by torch.profiler, OpenVINO sides by their own
        # counters (ONNX Runtime's call stays one opaque op); OpenVINO bf16 and int8 always, for
        # the int8 target
        profilers = profilers or {}
        names = ['pytorch fp32', best['side'], 'openvino bf16', 'openvino int8']
        target['profile'] = {
            name: profilers[name]() if name in profilers else profile_ops(sides[name], iters=3)
            for name in dict.fromkeys(names)
            if name in profilers or (name in sides and name.startswith('pytorch'))}
    return rows, target


def backbone_rows(args, bf16, tmp):
    rows, targets = [], []
    for label, cfg, side in BACKBONES:
        side = 64 if args.quick else side
        torch.manual_seed(0)
        model = MODELS.build(dict(cfg, out_indices=(1, 2, 3), drop_path_rate=0.0))
        randomize_bn_stats(model, 0)
        model = deploy_model(model.eval())
        x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        sides = {'pytorch fp32': lambda: model(x)}
        if bf16:
            def run_bf16(model=model, x=x):
                with autocast_context('bf16', 'cpu'):
                    return model(x)
            sides['pytorch bf16'] = run_bf16
        arr = x.numpy()
        module = prepare_for_export(model, deploy=False)
        calibration = [torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(i))
                       .numpy() for i in range(1, CALIBRATION_INPUTS + 1)]
        runtimes, profilers = runtime_sides(module, x, tmp, label, args.threads, bf16,
                                            calibration)
        for name, run in runtimes.items():
            sides[name] = lambda run=run: run(arr)
        with torch.no_grad():
            ref = model(x)
            diffs = {name: max_rel_diff(ref, as_tensors(fn())) for name, fn in sides.items()}
        r, t = time_row('backbones', f'{label} @{side}', sides, args, diffs, profilers=profilers)
        rows += r
        targets.append(t)
        print(f'{label}: done', file=sys.stderr)
    return rows, targets


def detection_diff(ref, dets) -> str:
    """'N vs M dets, top-10 score diff D': a DetDataSample against (K, 5) x1 y1 x2 y2 score."""
    ref_scores = ref.pred_instances.scores[:10].float()
    scores = torch.as_tensor(np.asarray(dets)).float()[:10, 4]
    k = min(len(ref_scores), len(scores))
    worst = (ref_scores[:k] - scores[:k]).abs().max().item() if k else 0.0
    return f'{len(ref.pred_instances)} vs {len(dets)} dets, top-10 score diff {worst:.1e}'


def as_dets(out):
    """(K, 5) detections of a test_step result (a list of one DetDataSample) or of the exported
    graph's (dets, labels)."""
    if isinstance(out, (list, tuple)) and hasattr(out[0], 'pred_instances'):
        pred = out[0].pred_instances
        return torch.cat([pred.bboxes.float(), pred.scores[:, None].float()], 1)
    return out[0]


def detector_rows(args, bf16, tmp):
    rows, targets = [], []
    for label, config in DETECTORS:
        side = 96 if args.quick else 640
        torch.manual_seed(0)
        model, _ = build_detector(osp.join(REPO, config),
                                  cfg_options={'model.backbone.init_cfg': None})
        randomize_bn_stats(model, 0)
        model = deploy_model(model.eval())
        batch = make_batch(1, (side, side), seed=0)
        sides = {'pytorch fp32': lambda: model.test_step(batch)}
        if bf16:
            def run_bf16(model=model, batch=batch):
                with autocast_compute(model, 'bf16', 'cpu'):  # post-processing in fp32
                    return model.test_step(batch)
            sides['pytorch bf16'] = run_bf16
        with torch.no_grad():
            x = model.data_preprocessor(batch, False)['inputs']
        module = prepare_with_nms(model, (side, side))
        with torch.no_grad():
            calibration = [model.data_preprocessor(make_batch(1, (side, side), seed=i), False)
                           ['inputs'].numpy() for i in range(1, CALIBRATION_INPUTS + 1)]
        runtimes, profilers = runtime_sides(module, x, tmp, label.replace(' ', '_'),
                                            args.threads, bf16, calibration)
        for name, run in runtimes.items():
            def run_exported(run=run, model=model, batch=batch):
                inputs = model.data_preprocessor(batch, False)['inputs']
                return run(inputs.numpy())
            sides[name] = run_exported
        with torch.no_grad():
            ref = sides['pytorch fp32']()[0]
            diffs = {name: detection_diff(ref, as_dets(fn())) for name, fn in sides.items()}
        r, t = time_row('detectors', f'{label} @{side}', sides, args, diffs,
                        note='random weights: detections are near-threshold noise; the '
                        'equality of detections is tested in tests/test_export.py',
                        profilers=profilers)
        rows += r
        targets += [t, int8_target(r, f'{label} @{side}')]
        print(f'{label}: done', file=sys.stderr)
    return rows, targets


def cascade_rows(args, bf16, tmp):
    """What exporting Cascade R-CNN's backbone + neck would save: its whole test_step, its
    backbone + neck (extract_feat) in PyTorch and exported (every runtime side), interleaved;
    the projected test_step = whole - extract_feat (PyTorch) + extract_feat (runtime)."""
    label, config = CASCADE
    side = 96 if args.quick else 640
    torch.manual_seed(0)
    model, _ = build_detector(osp.join(REPO, config), cfg_options={'model.backbone.init_cfg': None})
    randomize_bn_stats(model, 0)
    model = deploy_model(model.eval())
    batch = make_batch(1, (side, side), seed=0)
    with torch.no_grad():
        x = model.data_preprocessor(batch, False)['inputs']
        calibration = [model.data_preprocessor(make_batch(1, (side, side), seed=i), False)
                       ['inputs'].numpy() for i in range(1, CALIBRATION_INPUTS + 1)]
    arr = x.numpy()
    sides = {'pytorch fp32': lambda: model.test_step(batch),
             'pytorch fp32 extract_feat': lambda: model.extract_feat(x)}
    module = prepare_for_export(model, backbone_only=False, deploy=False)
    runtimes = runtime_sides(module, x, tmp, 'cascade', args.threads, bf16, calibration)[0]
    for name, run in runtimes.items():
        sides[f'{name} extract_feat'] = lambda run=run: run(arr)
    samples = time_interleaved(sides, args.iters, args.warmup)
    ms = {name: statistics.median(s) for name, s in samples.items()}
    whole, features = ms['pytorch fp32'], ms['pytorch fp32 extract_feat']
    rows = [dict(group='cascade', model=f'{label} @{side}', side=name, median_ms=value,
                 ratio=value / whole, diff=None,
                 note='ratio: of the whole PyTorch test_step')
            for name, value in ms.items()]
    rows += [dict(group='cascade', model=f'{label} @{side}', side=f'projected {name}',
                  median_ms=whole - features + ms[f'{name} extract_feat'],
                  ratio=(whole - features + ms[f'{name} extract_feat']) / whole, diff=None,
                  note='test_step with the backbone + neck exported to this side, the RPN and '
                  'RoI stages in PyTorch fp32')
             for name in runtimes]
    print(f'{label}: backbone + neck = {features / whole:.0%} of the PyTorch test_step',
          file=sys.stderr)
    return rows, []


def training_rows(args, bf16, tmp):
    if not bf16:
        return [], []
    size = 64 if args.quick else 160
    data = osp.join(tmp, 'sonar')
    make_sonar_dataset(data, num_train=8, num_val=2, size=size, seed=0)
    init_default_scope('mmdet')
    # the weight-init and paramwise reports of mmengine's logger would bury the table
    MMLogger.get_instance('deploy_targets', log_level='WARNING')
    cfg = short_schedule_config(osp.join(REPO, 'configs/yolox_fasternet.py'), data,
                                osp.join(tmp, 'work'), epochs=8, size=size)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
    torch.manual_seed(0)
    fp32_model = MODELS.build(cfg.model)
    fp32_model.init_weights()
    bf16_model = copy.deepcopy(fp32_model)
    wrappers = {'pytorch fp32': (fp32_model, build_optim_wrapper(fp32_model, cfg.optim_wrapper)),
                'pytorch bf16': (bf16_model, build_optim_wrapper(
                    bf16_model, dict(cfg.optim_wrapper, type='CPUBF16OptimWrapper')))}
    losses = {}

    def step(name):
        model, wrapper = wrappers[name]
        model.train()
        with torch.enable_grad():  # time_interleaved runs under no_grad
            out = model.train_step(batch, wrapper)
        losses.setdefault(name, float(out['loss']))

    sides = {name: (lambda name=name: step(name)) for name in wrappers}
    step('pytorch fp32')  # the first losses, on the same initial weights
    step('pytorch bf16')
    diff = {'pytorch bf16': abs(losses['pytorch bf16'] - losses['pytorch fp32']) /
            abs(losses['pytorch fp32'])}
    rows, target = time_row('training', f'YOLOX FasterNet-T2 train_step @{size} x8', sides, args,
                            diff, note='diff = relative difference of the first loss')
    return rows, [target]


def print_profile(target):
    """ms per iteration and category (self CPU time) of the profiled PyTorch sides, then each
    OpenVINO side's time by kernel precision, layer type and slowest nodes."""
    names = [n for n in target['profile'] if 'categories' in target['profile'][n]]
    profiles = [target['profile'][n] for n in names]
    walls = ', '.join(f"{n} {p['wall_ms_per_iter']:.0f}" for n, p in zip(names, profiles))
    print(f"\nprofile of {target['model']} (self CPU ms per iteration; wall ms per iteration "
          f'with the profiler on: {walls})')
    print(f"  {'category':<16}" + ''.join(f'{n:>18}' for n in names) + f"{'ratio':>8}")
    for cat in profiles[0]['categories']:
        ms = [p['categories'][cat]['ms_per_iter'] for p in profiles]
        ratio = (f'{ms[1] / ms[0]:8.2f}' if len(ms) > 1 and ms[0] > 0.05 else f"{'-':>8}")
        print(f'  {cat:<16}' + ''.join(f'{m:18.1f}' for m in ms) + ratio)
    for name, p in target['profile'].items():
        if 'by_type' not in p:
            continue
        print(f"  {name} (OpenVINO counters, {p['op_ms_per_iter']:.1f} ms of nodes per "
              f"iteration, wall {p['wall_ms_per_iter']:.1f} ms):")
        for what in ('by_precision', 'by_type'):
            print(f"    {what.replace('_', ' ')}: " + ', '.join(
                f"{k} {v['ms_per_iter']:.1f} ms ({v['share']:.0%})"
                for k, v in list(p[what].items())[:8]))
        print('    slowest nodes: ' + '; '.join(
            f"{n['type']} {n['kernel']} {n['ms_per_iter']:.1f} ms" for n in p['top_nodes'][:5]))


def fmt_diff(diff) -> str:
    if diff is None:
        return '-'
    return diff if isinstance(diff, str) else f'{diff:.1e}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='+', choices=GROUPS, default=list(GROUPS))
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--quick', action='store_true',
                        help='small inputs, one iteration: a smoke test, not a measurement')
    parser.add_argument('--profile', action='store_true',
                        help='profile the fp32 side, the fastest side and OpenVINO bf16/int8 '
                        'of every target (PyTorch: torch.profiler op categories; OpenVINO: its '
                        'performance counters by kernel precision and layer type)')
    parser.add_argument('--out', help='write settings, machine, rows and targets as JSON')
    args = parser.parse_args()
    if args.quick:
        args.iters, args.warmup = 1, 0

    torch.set_num_threads(args.threads)
    init_default_scope('mmdet')
    bf16, bf16_reason = cpu_bf16_support()
    load_before = os.getloadavg()
    rows, targets = [], []
    builders = dict(backbones=backbone_rows, detectors=detector_rows, cascade=cascade_rows,
                    training=training_rows)
    with tempfile.TemporaryDirectory(prefix='mmlightbb-deploy-') as tmp:
        for group in args.only:
            r, t = builders[group](args, bf16, tmp)
            rows += r
            targets += t
    load_after = os.getloadavg()
    print(f'deployment targets -- {time.strftime("%Y-%m-%dT%H:%M:%S")} -- {cpu_name()}')
    print(f'torch {torch.__version__}, threads={args.threads}, batch 1 (training: 8); '
          f'{args.iters} interleaved iters, {args.warmup} warm-up; bf16: {bf16_reason}')
    print(f'load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/'
          f'{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/'
          f'{load_after[2]:.2f}')
    width = max([len('model')] + [len(r['model']) for r in rows + targets]) + 1
    side_width = max(len(r['side']) for r in rows) + 1
    print(f"{'model':<{width}}| {'side':<{side_width}}| {'median ms':>9} | {'vs fp32':>7} | "
          'diff to fp32')
    print('-' * width + '+' + '-' * (side_width + 1) + '+' + '-' * 11 + '+' + '-' * 9 + '+' +
          '-' * 30)
    for r in rows:
        print(f"{r['model']:<{width}}| {r['side']:<{side_width}}| {r['median_ms']:9.1f} | "
              f"{r['ratio']:7.2f} | {fmt_diff(r['diff'])}")
    print('\ntargets (the fastest side / pytorch fp32; int8: openvino int8 / openvino bf16):')
    for t in targets:
        best = 'no side' if t['best_side'] is None else \
            f"{t['best_side']} {t['best_ratio']:.2f}x"
        print(f"  {'PASS' if t['passed'] else 'MISS'}  {t['model']:<{width}}{best} "
              f"(limit <= {t['limit']}x)")
    for t in targets:
        if 'profile' in t:
            print_profile(t)
    if not bf16:
        print(f'bf16 sides and the training row left out: {bf16_reason}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(rows=rows, targets=targets, threads=args.threads, iters=args.iters,
                           warmup=args.warmup, quick=args.quick, load_before=load_before,
                           load_after=load_after, cpu=cpu_name(), torch=torch.__version__,
                           bf16=bf16_reason), f, indent=2)


if __name__ == '__main__':
    main()
