"""CPU speed targets: every backbone against its straightforward form, side by side.

    python benchmarks/speed_targets.py [--size 640] [--threads 2] [--out speed.json] [--quick]

One run prints one table. Each row times two sides in the same process, interleaved (A, B, A, B,
...; medians), so that load from elsewhere on the machine hits both alike; fp32, batch 1 unless
the row says otherwise, ``--threads`` torch threads (default 2), ``torch.no_grad()``, eval mode.

* "straightforward" = what the official code does with the same weights: NCHW contiguous maps
  (:func:`~mmlightbb.models.layers.set_cpu_channels_last` ``False``, large kernels included), every
  BN unfused and the training-form branches evaluated separately (no ``switch_to_deploy``).
* "ours" = what every tool gets by default: :func:`~mmlightbb.analysis.benchmark.deploy_model`
  (explicit, as ``tools/benchmark.py --deploy``) and the automatic CPU paths (channels_last maps,
  FasterNet's GEMM blocks, batched 1x1 dynamic convs); the "paths" section lists them. The
  YOLOX-tiny baseline of the detector row is deployed by the same function (its CSPDarknet's BN
  folded).
* Outputs: before timing, both sides run the same input (BN statistics randomized first, so
  folding is really tested) and the max relative difference ``max|a - b| / max|a|`` over all
  returned maps is reported; > 1e-4 fails the row whatever the speed.

Rows whose two sides are different models (CSPConvNeXt vs ConvNeXt, ParameterNet vs its static
twin, the two detectors) report the worst difference of each side's fast path against its own
straightforward form instead. The FasterNet-S row compares achieved GFLOP/s (2 x MACs / latency)
with the best fp32 2048^3 matmul of the same run: its "baseline" column is the time the MACs would
take at that peak, so the ratio column is the share of peak. The RepLKNet straightforward side at
640 runs its 31x31 kernels on PyTorch's slow NCHW path (tens of seconds per image on 2 cores), so
that row uses few iterations (its note says how many).

``--only GROUP ...`` runs some of the rows. ``--quick`` runs every row at 64x64 with one
iteration per side (a smoke test of the table, not a measurement). ``--out`` writes everything (settings, machine, rows, paths, crossover) as JSON.
"""
import argparse
import copy
import datetime
import json
import os.path as osp
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

from mmlightbb.analysis.benchmark import (build_detector, cpu_name, deploy_model, make_batch,
                                          matmul_peak_gflops, max_rel_diff, time_interleaved)
from mmlightbb.analysis.complexity import count_macs
from mmlightbb.models.backbones.fasternet import MLPBlock
from mmlightbb.models.backbones.replknet import ReparamLargeKernelConv
from mmlightbb.models.layers import DynamicConv, randomize_bn_stats, set_cpu_channels_last

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

TOLERANCE = 1e-4
FASTERNET_ARCHS = ('t0', 't1', 't2', 's', 'm', 'l')
GROUPS = ('fasternet', 'replknet', 'cspconvnext', 'parameternet', 'yolox')


# ------------------------------------------------------------------------------------ timing
def interleaved(fn_a, fn_b, iters: int, warmup: int = 1):
    """Median ms of ``fn_a`` and ``fn_b`` timed alternately (A, B, A, B, ...)."""
    samples = time_interleaved(dict(a=fn_a, b=fn_b), iters, warmup)
    return statistics.median(samples['a']), statistics.median(samples['b'])


def once_ms(fn) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1000.0


def pick_iters(fn_a, fn_b, budget_s: float, lo: int, hi: int) -> int:
    """Iterations that fit both sides in about ``budget_s`` (after one untimed call each, which
    is also the warm-up), between ``lo`` and ``hi``."""
    if lo >= hi:
        return lo
    per_pair = (once_ms(fn_a) + once_ms(fn_b)) / 1000.0
    return max(lo, min(hi, int(budget_s / max(per_pair, 1e-6))))


# ----------------------------------------------------------------------------------- models
def build(cfg: dict):
    init_default_scope('mmdet')
    model = MODELS.build(cfg).eval()
    randomize_bn_stats(model)
    return model


def straightforward(model):
    """The official execution of ``model``'s weights: NCHW everywhere, nothing folded."""
    return set_cpu_channels_last(copy.deepcopy(model), False)


def ours(model):
    """What the tools run: deployed, automatic CPU paths on."""
    return deploy_model(copy.deepcopy(model))


def out_diff(ref_model, model, x) -> float:
    with torch.no_grad():
        return max_rel_diff(ref_model(x), model(x))


# --------------------------------------------------------------------------------- the rows
def row(target, base_ms, ours_ms, limit, diff, base_form, ours_form, note='', higher=False):
    """``higher``: the ratio is a share that must reach ``limit`` (GFLOP/s row)."""
    ratio = base_ms / ours_ms if higher else ours_ms / base_ms
    passed = (ratio >= limit if higher else ratio <= limit) and diff <= TOLERANCE
    return dict(target=target, baseline_ms=base_ms, ours_ms=ours_ms, ratio=ratio,
                limit=('>= ' if higher else '<= ') + f'{limit:g}', passed=passed,
                max_rel_diff=diff, baseline_form=base_form, ours_form=ours_form, note=note)


def fasternet_rows(args, x, peak):
    rows = []
    for arch in FASTERNET_ARCHS:
        model = build(dict(type='FasterNet', arch=arch))
        base, fast = straightforward(model), ours(model)
        diff = out_diff(base, fast, x)
        iters = pick_iters(lambda: base(x), lambda: fast(x), args.budget, args.min_iters,
                           args.max_iters)
        base_ms, ours_ms = interleaved(lambda: base(x), lambda: fast(x), iters, warmup=0)
        limit = 0.67 if arch == 't0' else 0.8
        rows.append(row(f'FasterNet-{arch.upper()} vs straightforward', base_ms, ours_ms, limit,
                        diff, 'NCHW, BN unfused', 'deploy, channels_last, GEMM blocks',
                        f'{iters} iters'))
        if arch == 's':
            macs = count_macs(fast, tuple(x.shape), conv_linear_only=True)
            peak_ms = 2.0 * macs / (peak * 1e9) * 1000.0
            share_base = peak_ms / base_ms
            rows.append(row('FasterNet-S share of matmul peak', peak_ms, ours_ms, 0.75, diff,
                            f'{peak:.0f} GFLOP/s fp32 matmul', 'deploy, channels_last',
                            f'{2 * macs / 1e9:.1f} GFLOP; ours {2 * macs / ours_ms / 1e6:.0f} '
                            f'GFLOP/s; straightforward {100 * share_base:.0f}% of peak',
                            higher=True))
    return rows


def replknet_row(args, x):
    model = build(dict(type='RepLKNet', arch='31B', drop_path_rate=0.))
    base, fast = straightforward(model), ours(model)
    diff = out_diff(base, fast, x)
    iters = 1 if args.quick else args.replknet_iters
    base_ms, ours_ms = interleaved(lambda: base(x), lambda: fast(x), iters, warmup=0)
    return row('RepLKNet-31B deployed vs straightforward', base_ms, ours_ms, 0.15, diff,
               'NCHW (31x31 on NCHW), 5x5 branch + BN separate', 'deploy, channels_last',
               f'{iters} iters (the NCHW side is slow), 1 untimed call each before')


def csp_row(args, x):
    csp = build(dict(type='CSPConvNeXt', arch='tiny'))
    cnx = build(dict(type='ConvNeXt', arch='tiny'))
    csp_fast, cnx_fast = ours(csp), ours(cnx)
    diff = max(out_diff(straightforward(csp), csp_fast, x),
               out_diff(straightforward(cnx), cnx_fast, x))
    iters = pick_iters(lambda: cnx_fast(x), lambda: csp_fast(x), args.budget, args.min_iters,
                       args.max_iters)
    cnx_ms, csp_ms = interleaved(lambda: cnx_fast(x), lambda: csp_fast(x), iters, warmup=0)
    return row('CSPConvNeXt-tiny vs ConvNeXt-T', cnx_ms, csp_ms, 0.45, diff,
               'ConvNeXt-T, channels_last (its best)', 'deploy, channels_last',
               f'{iters} iters; diff = each fast path vs its own NCHW form')


def parameternet_rows(args, size):
    dyn = build(dict(type='ParameterNet', arch='600m'))
    twin = build(dict(type='ParameterNet', arch='600m', num_experts=1))
    dyn_fast, twin_fast = ours(dyn), ours(twin)
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    x8 = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(2))
    diff1 = max(out_diff(dyn, dyn_fast, x1), out_diff(twin, twin_fast, x1))
    iters = pick_iters(lambda: twin_fast(x1), lambda: dyn_fast(x1), args.budget,
                       args.min_iters, args.max_iters)
    twin_ms, dyn_ms = interleaved(lambda: twin_fast(x1), lambda: dyn_fast(x1), iters, warmup=0)
    rows = [row('ParameterNet-600m vs static twin, batch 1', twin_ms, dyn_ms, 1.3, diff1,
                'num_experts=1, deploy', 'num_experts=4, deploy', f'{iters} iters')]
    with torch.no_grad():  # batch 8 == 8 single images (routing is per sample)
        batched = dyn_fast(x8)
        singles = [dyn_fast(x8[i:i + 1]) for i in range(8)]
        diff8 = max(max_rel_diff(torch.cat([s[k] for s in singles]), batched[k])
                    for k in range(len(batched)))
    iters = pick_iters(lambda: dyn_fast(x1), lambda: dyn_fast(x8), args.budget,
                       args.min_iters, args.max_iters)
    b1_ms, b8_ms = interleaved(lambda: dyn_fast(x1), lambda: dyn_fast(x8), iters, warmup=0)
    rows.append(row('ParameterNet-600m per image, batch 8 vs 1', b1_ms, b8_ms / 8, 1.0, diff8,
                    'batch 1', 'batch 8 (ms per image)',
                    f'{iters} iters; diff = batch 8 vs 8 single images'))
    return rows


def detector_row(args, size):
    # the YOLOX test_step with the fastest mmlightbb backbone vs mmdet's YOLOX-tiny
    sides = []
    for config in ('configs/baselines/yolox_tiny.py', 'configs/yolox_fasternet_t0_tiny.py'):
        model, _ = build_detector(osp.join(REPO, config))
        randomize_bn_stats(model)
        deployed = deploy_model(copy.deepcopy(model))
        batch = make_batch(1, (size, size))
        with torch.no_grad():
            x = model.data_preprocessor(copy.copy(batch), False)['inputs']
            diff = max_rel_diff(straightforward(model).extract_feat(x), deployed.extract_feat(x))
        sides.append((lambda m, b: lambda: m.test_step(dict(b)))(deployed, batch))
        sides.append(diff)
    base_fn, base_diff, ours_fn, ours_diff = sides
    iters = pick_iters(base_fn, ours_fn, args.budget, args.min_iters, args.max_iters)
    base_ms, ours_ms = interleaved(base_fn, ours_fn, iters, warmup=0)
    return row('YOLOX: FasterNet-T0 vs YOLOX-tiny, test_step', base_ms, ours_ms, 1.0,
               max(base_diff, ours_diff), 'yolox_tiny.py, deploy', 'yolox_fasternet_t0_tiny.py, '
               'deploy', f'{iters} iters; FPS {1000 / base_ms:.1f} vs {1000 / ours_ms:.1f}; '
               'diff = neck outputs, deployed vs NCHW unfused')


# ------------------------------------------------------------------- FFT vs direct crossover
def fft_depthwise(x, weight, bias, spectrum, fft_size):
    """Exact 'same' depthwise correlation via rfft2 (zero-padded to ``fft_size``, no wrap-around:
    each side >= H + K - 1); ``spectrum`` = rfft2 of the flipped kernels, computed once."""
    h, w = x.shape[-2:]
    pad = weight.shape[-1] // 2
    freq = torch.fft.rfft2(x.contiguous(), s=fft_size)
    out = torch.fft.irfft2(freq.mul_(spectrum), s=fft_size)[..., pad:pad + h, pad:pad + w]
    return (out + bias.view(-1, 1, 1)).contiguous(memory_format=torch.channels_last)


def fast_fft_size(n: int) -> int:
    """The next size >= n with no prime factor above 5 (fast for pocketfft and MKL)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def crossover(args, size):
    """Each RepLKNet-31B large-kernel layer shape at ``size`` (and the 800x1344 of Cascade
    R-CNN): direct depthwise conv on channels_last vs an exact FFT convolution."""
    shapes = []
    for h, w in ((size, size), ) if args.quick else ((size, size), (800, 1344)):
        for stage, (c, k) in enumerate(((128, 31), (256, 29), (512, 27), (1024, 13))):
            shapes.append((c, h // 4 >> stage, w // 4 >> stage, k))
    results = []
    gen = torch.Generator().manual_seed(0)
    for c, h, w, k in shapes:
        x = torch.randn(1, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
        weight, bias = torch.randn(c, 1, k, k, generator=gen), torch.randn(c, generator=gen)
        fft_size = (fast_fft_size(h + k - 1), fast_fft_size(w + k - 1))
        spectrum = torch.fft.rfft2(weight.flip(-1, -2)[:, 0], s=fft_size)
        direct = lambda: F.conv2d(x, weight, bias, 1, k // 2, 1, c)  # noqa: E731
        fft = lambda: fft_depthwise(x, weight, bias, spectrum, fft_size)  # noqa: E731
        with torch.no_grad():
            diff = max_rel_diff(direct(), fft())
        iters = 1 if args.quick else 5
        direct_ms, fft_ms = interleaved(direct, fft, iters)
        results.append(dict(channels=c, height=h, width=w, kernel=k, direct_ms=direct_ms,
                            fft_ms=fft_ms, fft_max_rel_diff=diff,
                            faster='fft' if fft_ms < direct_ms else 'direct'))
    return results


# ---------------------------------------------------------------------------------- report
def paths():
    """The automatic CPU paths, as the library chooses them (no flags)."""
    return [
        ('memory format', 'channels_last inside FasterNet, RepLKNet, ConvNeXt, CSPConvNeXt on '
         'CPU (cpu_channels_last); NCHW-contiguous outputs; ParameterNet stays NCHW'),
        ('FasterNet block (deployed, CPU)', f'{MLPBlock.__name__}.'
         f'{MLPBlock._forward_matmuls.__name__}: PConv + three GEMMs over the NHWC map, no '
         'concat, bias and residual inside the GEMMs'),
        ('RepLKNet large kernel', f'{ReparamLargeKernelConv.__name__}: direct oneDNN '
         'depthwise on channels_last, every layer (the FFT column below is measured only)'),
        ('ParameterNet dynamic 1x1', f'{DynamicConv.__name__}: one batched matmul per call '
         '(bmm), 3x3/depthwise dynamic convs: one (grouped) conv'),
    ]


def format_report(res: dict) -> str:
    s = res['settings']
    lines = [f"speed targets -- {res['date']} -- {res['machine']['cpu']}",
             f"torch {res['versions']['torch']}, threads={s['threads']}, fp32, input "
             f"{s['size']}x{s['size']}, batch 1 unless the row says otherwise, matmul peak "
             f"{res['matmul_peak_gflops']:.0f} GFLOP/s" + (', QUICK (not a measurement)'
                                                            if s['quick'] else ''),
             '']
    head = ('target', 'baseline ms', 'ours ms', 'ratio', 'limit', 'result', 'max rel diff')
    table = [head] + [(r['target'], f"{r['baseline_ms']:.1f}", f"{r['ours_ms']:.1f}",
                       f"{r['ratio']:.3f}", r['limit'], 'PASS' if r['passed'] else 'FAIL',
                       f"{r['max_rel_diff']:.1e}") for r in res['rows']]
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for i, t in enumerate(table):
        lines.append(' | '.join(v.ljust(widths[j]) if j == 0 else v.rjust(widths[j])
                                for j, v in enumerate(t)))
        if i == 0:
            lines.append('-+-'.join('-' * w for w in widths))
    lines += ['', 'sides and notes:']
    for r in res['rows']:
        lines.append(f"  {r['target']}: baseline = {r['baseline_form']}; ours = "
                     f"{r['ours_form']}; {r['note']}")
    lines += ['', 'automatic CPU paths (default, no flags):']
    lines += [f'  {name}: {what}' for name, what in res['paths']]
    lines += ['', 'large depthwise kernel: direct (channels_last oneDNN) vs exact FFT, ms:']
    for c in res['crossover']:
        lines.append(f"  C={c['channels']:<5d} {c['height']}x{c['width']:<4d} K={c['kernel']:<3d}"
                     f" direct {c['direct_ms']:8.1f}  fft {c['fft_ms']:8.1f}  -> {c['faster']}"
                     f"  (fft diff {c['fft_max_rel_diff']:.1e})")
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=640, help='input H = W (multiple of 32)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--quick', action='store_true',
                        help='64x64, one iteration per side: checks the table, measures nothing')
    parser.add_argument('--out', help='write settings, machine, rows, paths as JSON')
    parser.add_argument('--budget', type=float, default=12.0,
                        help='seconds of timing per row (iterations follow from it)')
    parser.add_argument('--min-iters', type=int, default=3)
    parser.add_argument('--max-iters', type=int, default=15)
    parser.add_argument('--replknet-iters', type=int, default=2,
                        help='timed iterations of the RepLKNet row (the NCHW side is slow)')
    parser.add_argument('--only', nargs='+', choices=GROUPS, default=list(GROUPS),
                        help='run only these groups of rows (default: all)')
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.budget, args.min_iters, args.max_iters = 64, 0.0, 1, 1
    if args.size % 32:
        parser.error(f'--size must be a multiple of 32 (stride-32 backbones), got {args.size}')
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = args.size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    peak = matmul_peak_gflops('cpu', 256 if args.quick else 2048)
    groups = dict(fasternet=lambda: fasternet_rows(args, x, peak),
                  replknet=lambda: [replknet_row(args, x)],
                  cspconvnext=lambda: [csp_row(args, x)],
                  parameternet=lambda: parameternet_rows(args, size),
                  yolox=lambda: [detector_row(args, size)])
    rows = [r for name, rows_of in groups.items() if name in args.only for r in rows_of()]
    res = dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'),
        machine=dict(cpu=cpu_name(), python=platform.python_version()),
        versions=dict(torch=torch.__version__),
        settings=dict(size=size, threads=torch.get_num_threads(), quick=args.quick,
                      dtype='float32', tolerance=TOLERANCE),
        matmul_peak_gflops=peak, rows=rows, paths=paths(),
        crossover=crossover(args, size) if 'replknet' in args.only else [])
    print(format_report(res))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=2)
        print(f'results -> {args.out}')
    return res


if __name__ == '__main__':
    main()
