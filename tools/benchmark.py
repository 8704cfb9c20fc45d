"""Inference latency of a detector (test_step incl. NMS) or its backbone alone; see
``mmlightbb/analysis/benchmark/`` for exactly what is timed, the profile rules and the JSON schema.

    python tools/benchmark.py CONFIG [--checkpoint CKPT] [--backbone-only]
        [--shape H W | --real-images] [--batch-size N] [--warmup 5] [--iters 20] [--threads T]
        [--device cpu|cuda] [--deploy] [--channels-last] [--precision fp32|bf16|fp16|int8]
        [--backend pytorch|onnxruntime|openvino] [--calib IMAGES [--calib-images 300]]
        [--profile [--profile-iters 3]] [--out results.json] [--cfg-options k=v ...]

No dataloader is timed: one synthetic batch of fixed size, or with ``--real-images`` (warmup +
iters) batches of the config's test set, is built before the clock starts. ``--profile`` adds a
per-operator-type time breakdown from extra iterations run after the timed ones. ``--precision
int8`` (``--backend onnxruntime|openvino``) times the exported detector quantized as
``tools/export.py --precision int8`` quantizes it, calibrated on ``--calib`` images.
"""
import argparse
import os.path as osp

from mmengine.config import DictAction

from mmlightbb.analysis.quantize import add_quantization_args


def parse_args():
    parser = argparse.ArgumentParser(description='Benchmark a detector or its backbone')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--checkpoint', help='checkpoint to load (map_location cpu)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='time model.backbone(x) only (default: the whole test_step)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input size (default: the config's test Resize scale)")
    parser.add_argument('--real-images', action='store_true',
                        help="time on (warmup + iters) x batch images of the config's test set, "
                        'loaded through its test pipeline before timing (needs that many)')
    parser.add_argument('--batch-size', type=int, default=1, help='images per batch')
    parser.add_argument('--warmup', type=int, default=5, help='discarded iterations (>= 0)')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations (>= 1)')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--deploy', action='store_true',
                        help='re-parameterize mmlightbb backbones and fold Conv+BN everywhere '
                        'else (mmdet backbones too); checked against the original model, the '
                        'deployed one is timed')
    parser.add_argument('--channels-last', action='store_true',
                        help='NHWC model and input (mmlightbb backbones already run NHWC on CPU '
                        'by themselves: the table then says channels_last=auto)')
    parser.add_argument('--precision', choices=['fp32', 'bf16', 'fp16', 'int8'], default=None,
                        help='fp32 (default); bf16 autocast on CPUs with avx512_bf16/amx_bf16 '
                        '(elsewhere: fp32 with a warning) or CUDA; fp16 autocast, CUDA only. '
                        'bf16 prints the backbone outputs\' max relative difference to fp32; '
                        'int8: --backend onnxruntime/openvino, the exported detector quantized '
                        'on --calib images')
    parser.add_argument('--fp16', action='store_true', help='= --precision fp16 (CUDA only)')
    parser.add_argument('--backend', choices=['pytorch', 'onnxruntime', 'openvino'],
                        default='pytorch',
                        help='time the exported model (ONNX opset 17, deployed, NCHW) in this '
                        'runtime: the backbone with --backbone-only, else the YOLOX detector with '
                        'box decoding and NMS (batch 1); needs --deploy; session creation and '
                        'warm-up untimed, runtime threads = --threads')
    parser.add_argument('--profile', action='store_true',
                        help='per-operator-type time shares from extra iterations after the '
                        'timed ones (torch.profiler; --backend openvino: OpenVINO\'s own '
                        'performance counters, by kernel precision and layer type)')
    parser.add_argument('--profile-iters', type=int, default=3,
                        help='iterations profiled with --profile (>= 1)')
    add_quantization_args(parser)
    parser.add_argument('--out', help='write all settings and numbers to this .json file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    return parser, parser.parse_args()


def main():
    parser, args = parse_args()
    from mmlightbb.analysis.benchmark import (BenchmarkSettings, dump_json, format_table,
                                              run_benchmark)
    from mmlightbb.analysis.export import ExportError
    from mmlightbb.analysis.quantize import QuantizationSettings
    quantization = None
    if args.precision == 'int8':
        try:
            quantization = QuantizationSettings(args.calib, args.calib_images, args.max_drop,
                                                args.val_images)
        except ExportError as err:
            parser.error(str(err))
    elif args.calib or args.max_drop is not None:
        parser.error('--calib and --max-drop are for --precision int8')
    try:
        settings = BenchmarkSettings(
            shape=args.shape, batch_size=args.batch_size, backbone_only=args.backbone_only,
            warmup=args.warmup, iters=args.iters, threads=args.threads, device=args.device,
            deploy=args.deploy, channels_last=args.channels_last, fp16=args.fp16,
            precision=args.precision or 'fp32', backend=args.backend,
            real_images=args.real_images, profile=args.profile,
            profile_iters=args.profile_iters, quantization=quantization)
    except ValueError as err:
        parser.error(str(err))
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint!r}')
    try:
        res = run_benchmark(args.config, settings, args.checkpoint, args.cfg_options)
    except (ValueError, FileNotFoundError) as err:  # too few or missing test images, no scale
        raise SystemExit(f'error: {err}') from None
    except RuntimeError as err:  # a runtime package missing (ExportError), an export failure
        if type(err).__name__ != 'ExportError':
            raise
        raise SystemExit(f'error: {err}') from None
    print(format_table(res))
    if args.out:
        dump_json(res, args.out)
        print(f'results -> {args.out}')


if __name__ == '__main__':
    main()
