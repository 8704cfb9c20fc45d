"""Params and MACs of every mmlightbb backbone arch (the model table of docs/backbones.md).

    python tools/model_stats.py [--families FasterNet RepLKNet] [--sizes 224 640] [--out stats.md]

Classification form (official head, num_classes=1000) at 224 -- the papers' setting -- and the
detection backbone alone (out_indices=(0, 1, 2, 3), no head) at each size. MACs are mmengine
FlopAnalyzer counts of conv and linear layers (1 multiply-add = 1 MAC; FLOPs = 2 x MACs).
"""
import argparse
import time

import torch

import mmlightbb  # noqa: F401
from mmlightbb.analysis.complexity import count_macs, count_params
from mmlightbb.models.backbones import BACKBONES


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--families', nargs='+', default=list(BACKBONES),
                        help=f'backbone classes to measure (default: all of {list(BACKBONES)})')
    parser.add_argument('--archs', nargs='+', help='only these arch names')
    parser.add_argument('--sizes', nargs='+', type=int, default=[224, 640],
                        help='square input sizes for the detection backbone')
    parser.add_argument('--out', help='also write the Markdown table to this file')
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_grad_enabled(False)
    header = ('| backbone | arch | params (cls) | MACs cls @224 | params (backbone) | '
              + ' | '.join(f'MACs backbone @{s}' for s in args.sizes) + ' |')
    lines = [header, '|' + '---|' * (5 + len(args.sizes))]
    print(header, flush=True)
    for family in args.families:
        cls = BACKBONES[family]
        for arch in cls.arch_settings:
            if args.archs and arch not in args.archs:
                continue
            start = time.perf_counter()
            classifier = cls(arch=arch, num_classes=1000).eval()
            cls_macs = count_macs(classifier.classify, (1, 3, 224, 224), conv_linear_only=True)
            cls_params = count_params(classifier)
            del classifier
            backbone = cls(arch=arch, out_indices=(0, 1, 2, 3)).eval()
            det_macs = [count_macs(backbone, (1, 3, s, s), conv_linear_only=True) for s in args.sizes]
            row = (f'| {family} | {arch} | {cls_params / 1e6:.2f} M | {cls_macs / 1e9:.3f} G | '
                   f'{count_params(backbone) / 1e6:.2f} M | '
                   + ' | '.join(f'{m / 1e9:.2f} G' for m in det_macs) + ' |')
            lines.append(row)
            print(row, f'  ({time.perf_counter() - start:.0f} s)', flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
