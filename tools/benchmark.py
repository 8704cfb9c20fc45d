"""Inference latency of a detector (test_step incl. NMS) or its backbone alone; see
``mmlightbb/utils/benchmark.py`` for exactly what is timed and the JSON schema.

    python tools/benchmark.py CONFIG [--checkpoint CKPT] [--backbone-only] [--shape H W]
        [--batch-size N] [--warmup 5] [--iters 20] [--threads T] [--device cpu|cuda] [--deploy]
        [--channels-last] [--fp16] [--out results.json] [--cfg-options k=v ...]

No dataloader is timed: one synthetic batch of fixed size is built before the clock starts.
``--profile`` is not implemented.
"""
import argparse
import os.path as osp

from mmengine.config import DictAction


def parse_args():
    parser = argparse.ArgumentParser(description='Benchmark a detector or its backbone')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--checkpoint', help='checkpoint to load (map_location cpu)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='time model.backbone(x) only (default: the whole test_step)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input size (default: the config's test Resize scale)")
    parser.add_argument('--batch-size', type=int, default=1, help='images per batch')
    parser.add_argument('--warmup', type=int, default=5, help='discarded iterations (>= 0)')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations (>= 1)')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--deploy', action='store_true',
                        help='re-parameterize the backbone and fuse Conv+BN elsewhere; checked '
                        'against the original model, the deployed one is timed')
    parser.add_argument('--channels-last', action='store_true', help='NHWC model and input')
    parser.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    parser.add_argument('--out', help='write all settings and numbers to this .json file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    return parser, parser.parse_args()


def main():
    parser, args = parse_args()
    from mmlightbb.utils.benchmark import (dump_json, format_table, run_benchmark,
                                           validate_settings)
    try:
        validate_settings(args.iters, args.warmup, args.batch_size, args.threads, args.shape,
                          args.device, args.fp16)
    except ValueError as err:
        parser.error(str(err))
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint!r}')
    try:
        res = run_benchmark(args.config, args.checkpoint, args.cfg_options, args.shape,
                            batch_size=args.batch_size, backbone_only=args.backbone_only,
                            warmup=args.warmup, iters=args.iters, threads=args.threads,
                            device=args.device, deploy=args.deploy,
                            channels_last=args.channels_last, fp16=args.fp16)
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    print(format_table(res))
    if args.out:
        dump_json(res, args.out)
        print(f'results -> {args.out}')


if __name__ == '__main__':
    main()
