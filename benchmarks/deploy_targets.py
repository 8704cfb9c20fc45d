"""bf16 and the export runtimes against PyTorch fp32, side by side in one process.

    python benchmarks/precision_runtimes.py [--size 640] [--threads 2] [--iters 8] [--warmup 2]
        [--only fasternet cspconvnext convnext] [--out r.json]

For each backbone (the YOLOX configs' FasterNet-T2, CSPConvNeXt-tiny, ConvNeXt-T; out_indices
1..3; random init with randomized BN statistics), deployed, batch 1: PyTorch fp32 (the project's
CPU path: channels_last, FasterNet's GEMM blocks), PyTorch bf16 autocast (CPUs with native bf16
only), ONNX Runtime fp32 and OpenVINO f32 / bf16 on the exported plain NCHW graph. The sides are
timed interleaved (A, B, C, ... repeated ``--iters`` times; medians), with session creation,
compilation and ``--warmup`` calls untimed and every runtime pinned to ``--threads``. Prints
one table: median ms, ratio to PyTorch fp32, max relative difference of the outputs to PyTorch
fp32, and the load average before and after (absolute times move with machine load; read the
ratios).
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

from mmlightbb.analysis.benchmark import (autocast_context, cpu_bf16_support, cpu_name,
                                          deploy_model, max_rel_diff)
from mmlightbb.analysis.export import export_model, load_runtime, prepare_for_export
from mmlightbb.models.layers import randomize_bn_stats

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BACKBONES = {
    'fasternet': ('FasterNet-T2', dict(type='FasterNet', arch='t2')),
    'cspconvnext': ('CSPConvNeXt-tiny', dict(type='CSPConvNeXt', arch='tiny')),
    'convnext': ('ConvNeXt-T', dict(type='ConvNeXt', arch='tiny')),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=640)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--only', nargs='+', choices=list(BACKBONES), default=list(BACKBONES))
    parser.add_argument('--out')
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    init_default_scope('mmdet')
    bf16, bf16_reason = cpu_bf16_support()
    load_before = os.getloadavg()
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    rows, tmp = [], tempfile.TemporaryDirectory(prefix='mmlightbb-runtimes-')
    for key in args.only:
        label, cfg = BACKBONES[key]
        torch.manual_seed(0)
        model = MODELS.build(dict(cfg, out_indices=(1, 2, 3), drop_path_rate=0.0))
        randomize_bn_stats(model, 0)
        model = deploy_model(model.eval())
        module = prepare_for_export(model, deploy=False)
        sides = {'pytorch fp32': lambda: model(x)}
        if bf16:
            def run_bf16():
                with autocast_context('bf16', 'cpu'):
                    return model(x)
            sides['pytorch bf16'] = run_bf16
        arr = x.numpy()
        onnx_path = export_model(module, x, osp.join(tmp.name, f'{key}.onnx'), 'onnx')
        xml_path = export_model(module, x, osp.join(tmp.name, f'{key}.xml'), 'openvino')
        ort = load_runtime(onnx_path, 'onnx', args.threads)
        sides['onnxruntime fp32'] = lambda: ort(arr)
        ov32 = load_runtime(xml_path, 'openvino', args.threads, 'fp32')
        sides['openvino f32'] = lambda: ov32(arr)
        if bf16:
            ov16 = load_runtime(xml_path, 'openvino', args.threads, 'bf16')
            sides['openvino bf16'] = lambda: ov16(arr)
        with torch.no_grad():
            ref = model(x)
            diffs = {}
            for name, fn in sides.items():
                out = fn()
                out = [torch.from_numpy(o) if not isinstance(o, torch.Tensor) else o
                       for o in (out if isinstance(out, (list, tuple)) else [out])]
                diffs[name] = max_rel_diff(ref, out)
            for _ in range(args.warmup):
                for fn in sides.values():
                    fn()
            samples = {name: [] for name in sides}
            for _ in range(args.iters):
                for name, fn in sides.items():
                    start = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - start) * 1000.0)
        base = statistics.median(samples['pytorch fp32'])
        for name in sides:
            med = statistics.median(samples[name])
            rows.append(dict(backbone=label, side=name, median_ms=med, ratio=med / base,
                             max_rel_diff=diffs[name]))
        print(f'{label}: done', file=sys.stderr)
    load_after = os.getloadavg()
    print(f'precision and runtimes -- {time.strftime("%Y-%m-%dT%H:%M:%S")} -- {cpu_name()}')
    print(f'torch {torch.__version__}, threads={args.threads}, input {args.size}x{args.size}, '
          f'batch 1, backbone only (out_indices 1..3), deployed; {args.iters} interleaved iters, '
          f'{args.warmup} warm-up; bf16: {bf16_reason}')
    print(f'load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/'
          f'{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/'
          f'{load_after[2]:.2f}')
    print(f"{'backbone':<18}| {'side':<17}| {'median ms':>9} | {'vs fp32':>7} | max rel diff")
    print('-' * 18 + '+' + '-' * 18 + '+' + '-' * 11 + '+' + '-' * 9 + '+' + '-' * 13)
    for r in rows:
        print(f"{r['backbone']:<18}| {r['side']:<17}| {r['median_ms']:9.1f} | "
              f"{r['ratio']:7.2f} | {r['max_rel_diff']:.1e}")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(rows=rows, threads=args.threads, size=args.size, iters=args.iters,
                           load_before=load_before, load_after=load_after, cpu=cpu_name(),
                           bf16=bf16_reason), f, indent=2)
    tmp.cleanup()


if __name__ == '__main__':
    main()
