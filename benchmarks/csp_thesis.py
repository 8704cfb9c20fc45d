"""The CSPConvNeXt source's thesis, measured: do Cross-Stage-Partial stages cut a backbone's latency
at equal mAP, and more for large kernels than for 3x3 convs?

    python benchmarks/csp_thesis.py [--size 640] [--threads 2] [--iters 5] [--warmup 1]
        [--map] [--data work_dirs/csp_thesis/data_src] [--work-dir work_dirs/csp_thesis]
        [--epochs 8] [--map-size 160] [--quick] [--out r.json]

Three plain / CSP pairs with the same blocks: ConvNeXt-T vs CSPConvNeXt-tiny (7x7 depthwise),
FasterNet-T2 vs FasterNet csp-t2 (PConv: 3x3 on a quarter of the channels), RepLKNet-31B vs
RepLKNet csp-31B (31x31 depthwise); the CSP forms are the shared
:class:`~mmlightbb.models.layers.CSPStage` with ratio 0.5. For each backbone (out_indices 1..3,
as in the YOLOX configs): params, MACs (conv + linear) at ``--size``, and its latency at
``--size``: deployed, the project's CPU path, batch 1, ``--threads`` threads, all six timed
interleaved in one process (medians; read the ratios, the load average is printed).

``--map`` also trains YOLOX with each of the six on one short schedule (the comparison tool's:
``compare_backbones``, from scratch, ``--epochs`` epochs at ``--map-size``) on the synthetic sonar
set (made in ``--data`` when absent) and reports VOC mAP50 per backbone; finished runs in
``--work-dir`` are kept, so a second call only re-times. Without ``--map`` the mAP column says
"not run". ``--quick``: 64x64 and one iteration, a smoke test of the script.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

from mmlightbb.analysis.benchmark import cpu_name, deploy_model, time_interleaved
from mmlightbb.analysis.comparison import compare_backbones
from mmlightbb.analysis.complexity import count_macs, count_params
from mmlightbb.datasets import make_sonar_dataset
from mmlightbb.models.layers import randomize_bn_stats

PAIRS = [  # (what the blocks mix with, plain, CSP); each side: label, config, comparison name
    ('7x7 depthwise', ('ConvNeXt-T', dict(type='ConvNeXt', arch='tiny'), 'convnext:tiny'),
     ('CSPConvNeXt-tiny', dict(type='CSPConvNeXt', arch='tiny'), 'cspconvnext:tiny')),
    ('PConv 3x3', ('FasterNet-T2', dict(type='FasterNet', arch='t2'), 'fasternet:t2'),
     ('FasterNet csp-t2', dict(type='FasterNet', arch='csp-t2'), 'fasternet:csp-t2')),
    ('31x31 depthwise', ('RepLKNet-31B', dict(type='RepLKNet', arch='31B'), 'replknet:31B'),
     ('RepLKNet csp-31B', dict(type='RepLKNet', arch='csp-31B'), 'replknet:csp-31B')),
]


def build(cfg: dict):
    torch.manual_seed(0)
    model = MODELS.build(dict(cfg, out_indices=(1, 2, 3), drop_path_rate=0.0))
    randomize_bn_stats(model, 0)
    return deploy_model(model.eval())


def train_for_map(args) -> dict:
    """{comparison name: VOC mAP50} of the same short YOLOX schedule for all six backbones."""
    make_sonar_dataset(args.data, num_train=96, num_val=48, size=args.map_size, seed=0)
    names = [side[2] for _, *sides in PAIRS for side in sides]
    out = compare_backbones(args.data, args.work_dir, heads=['yolox'], backbones=names,
                            epochs=args.epochs, size=args.map_size, device='cpu',
                            threads=args.threads, bench_iters=5, tag='csp-thesis')
    return {row['backbone']: row['map'] for row in out['result']['rows']}


def main():
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('--size', type=int, default=640)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--map', action='store_true', help='also train and test each backbone')
    parser.add_argument('--data', default='work_dirs/csp_thesis/data_src')
    parser.add_argument('--work-dir', default='work_dirs/csp_thesis')
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--map-size', type=int, default=160)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--out')
    args = parser.parse_args()
    if args.quick:
        args.size, args.iters, args.warmup = 64, 1, 0

    torch.set_num_threads(args.threads)
    init_default_scope('mmdet')
    maps = train_for_map(args) if args.map else {}
    init_default_scope('mmdet')
    torch.set_num_threads(args.threads)
    shape = (1, 3, args.size, args.size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    models, rows = {}, []
    for mixer, *sides in PAIRS:
        for label, cfg, name in sides:
            model = build(cfg)
            models[label] = model
            rows.append(dict(mixer=mixer, backbone=label, name=name,
                             params_m=count_params(model) / 1e6,
                             gmacs=count_macs(model, shape, conv_linear_only=True) / 1e9,
                             map50=maps.get(name)))
            print(f'{label}: built', file=sys.stderr)
    load_before = os.getloadavg()
    samples = time_interleaved({k: (lambda m=m: m(x)) for k, m in models.items()}, args.iters,
                               args.warmup)
    load_after = os.getloadavg()
    for row in rows:
        row['latency_ms'] = statistics.median(samples[row['backbone']])
    pairs = []
    for i, (mixer, *_) in enumerate(PAIRS):
        plain, csp = rows[2 * i], rows[2 * i + 1]
        pairs.append(dict(mixer=mixer, plain=plain['backbone'], csp=csp['backbone'],
                          params=csp['params_m'] / plain['params_m'],
                          macs=csp['gmacs'] / plain['gmacs'],
                          latency=csp['latency_ms'] / plain['latency_ms'],
                          map50_delta=(None if plain['map50'] is None or csp['map50'] is None
                                       else csp['map50'] - plain['map50'])))

    print(f'CSP thesis -- {time.strftime("%Y-%m-%dT%H:%M:%S")} -- {cpu_name()}')
    print(f'torch {torch.__version__}, threads={args.threads}, input {args.size}x{args.size}, '
          f'batch 1, out_indices 1..3, deployed; {args.iters} interleaved iters, '
          f'{args.warmup} warm-up; load average before {load_before[0]:.2f}, after '
          f'{load_after[0]:.2f}')
    if args.map:
        print(f'mAP: YOLOX, {args.epochs} epochs at {args.map_size} px from scratch on the '
              f'synthetic sonar set ({args.work_dir}/report)')
    print(f"{'backbone':<18}| {'mixer':<16}| {'params M':>8} | {'GMACs':>7} | {'ms':>8} | mAP50")
    print('+'.join('-' * n for n in (18, 17, 10, 9, 10, 8)))
    for r in rows:
        m = 'not run' if r['map50'] is None else f"{r['map50']:.3f}"
        print(f"{r['backbone']:<18}| {r['mixer']:<16}| {r['params_m']:8.2f} | {r['gmacs']:7.2f} | "
              f"{r['latency_ms']:8.1f} | {m}")
    print('\nCSP / plain:')
    for p in pairs:
        d = '' if p['map50_delta'] is None else f", mAP50 {p['map50_delta']:+.3f}"
        print(f"  {p['mixer']:<16} params {p['params']:.2f}x, MACs {p['macs']:.2f}x, latency "
              f"{p['latency']:.2f}x{d}")
    large, pconv = pairs[2]['latency'], pairs[1]['latency']
    verdict = 'larger' if large < pconv else 'not larger'
    print(f'\nThe latency cut of CSP for the 31x31 net ({1 - large:.0%}) is {verdict} than for '
          f'the PConv 3x3 net ({1 - pconv:.0%}) on this machine and input.')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(rows=rows, pairs=pairs, size=args.size, threads=args.threads,
                           iters=args.iters, load_before=load_before, load_after=load_after,
                           cpu=cpu_name(), torch=torch.__version__, map=args.map,
                           epochs=args.epochs, map_size=args.map_size), f, indent=2)


if __name__ == '__main__':
    main()
