"""Test (evaluate) a detector checkpoint: mmdet's tools/test.py with mmlightbb registered.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
        [--precision fp32|bf16|fp16] [--backend pytorch|onnxruntime|openvino]

``--precision bf16`` tests with ``AutocastTestLoop``: backbone, neck and heads under bf16 autocast
on CPUs with avx512_bf16/amx_bf16 (elsewhere fp32, with a warning) and on CUDA, post-processing
in fp32; ``fp16`` is CUDA only.
``--backend onnxruntime|openvino`` (YOLOX) evaluates the deployed file instead of PyTorch: the
detector is exported with box decoding and NMS in the graph (``tools/export.py --with-nms``) at the
config's test scale into a temporary folder, and the test loop (batch 1) takes its predictions from
the runtime; OpenVINO also runs ``--precision bf16``; both run ``--precision int8``: the graph
quantized as ``tools/export.py --precision int8`` does (``--calib FOLDER`` of training images),
so the INT8 mAP is the one measured in the runtime.
"""
import argparse
import contextlib
import os.path as osp
import tempfile

import torch
from mmengine.evaluator import DumpResults

import mmlightbb  # noqa: F401  (registers backbones, datasets, the test loop and the runner)
from mmlightbb.analysis.benchmark import RUNTIME_PRECISIONS
from mmlightbb.analysis.export import (ExportError, build_for_export, export_with_nms,
                                       exported_predictions, input_shape, prepare_with_nms)
from mmlightbb.analysis.quantize import (QuantizationSettings, add_quantization_args,
                                         export_int8)
from mmlightbb.datasets.sonar import UnreadableImageError
from mmlightbb.engine import CheckpointFormatError, UnsafeCheckpointError
from mmlightbb.engine.config import add_runner_args, config_from_args
from mmlightbb.engine.precision import resolve_precision, use_autocast_test_loop
from mmlightbb.engine.runner import build_runner
from mmlightbb.models.neck_check import ChannelMismatchError


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', type=str,
                        help='dump predictions to a pickle file (.pkl) for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory (inside the work dir) to save drawn images')
    parser.add_argument('--precision', choices=['fp32', 'bf16', 'fp16', 'int8'], default='fp32',
                        help='fp32 (default); bf16 autocast on CPUs with native bf16 (else fp32 '
                        'with a warning); fp16 autocast, CUDA only; int8: --backend onnxruntime/'
                        'openvino, the exported graph quantized on --calib images')
    add_quantization_args(parser)
    parser.add_argument('--backend', choices=['pytorch', 'onnxruntime', 'openvino'],
                        default='pytorch', help='pytorch (default); onnxruntime / openvino: '
                        'evaluate the YOLOX detector exported with box decoding and NMS (batch 1, '
                        'the test scale) in that runtime')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    add_runner_args(parser)
    return parser.parse_args()


def set_test_precision(cfg, precision: str) -> str:
    """Test in the precision that runs here (``AutocastTestLoop`` unless fp32); returns it."""
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        ran, note = resolve_precision(precision, device, warn=False)
        use_autocast_test_loop(cfg, ran)
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    if ran != precision:
        print(f'warning: {note}')
    if ran != 'fp32':
        print(f'test precision: {note}')
    return ran


def export_for_test(args, cfg, folder: str, int8_settings) -> str:
    """The checkpoint's YOLOX detector exported with decoding and NMS at the test scale."""
    model, model_cfg = build_for_export(args.config, args.checkpoint, args.cfg_options)
    fmt = 'onnx' if args.backend == 'onnxruntime' else 'openvino'
    path = osp.join(folder, 'detector.onnx' if fmt == 'onnx' else 'detector.xml')
    shape = input_shape(cfg, None, args.config)
    if args.precision == 'int8':
        int8 = export_int8(prepare_with_nms(model, shape), model, model_cfg, shape, path, fmt,
                           int8_settings)
        print(f'int8: calibrated on {int8.images} images of {args.calib}')
    else:
        export_with_nms(model, shape, path, fmt)
    print(f'evaluating {args.config} exported with box decoding and NMS, {shape[0]}x{shape[1]}, '
          f'in {args.backend} ({args.precision})')
    return path


def main():
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint!r}')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'--out must be a .pkl/.pickle file, got {args.out!r}')
    cfg = config_from_args(args)
    cfg.load_from = args.checkpoint
    if args.precision == 'int8' and args.backend == 'pytorch':
        raise SystemExit('error: --precision int8 runs in a runtime: add --backend openvino or '
                         '--backend onnxruntime (and --calib FOLDER of training images)')
    if args.precision != 'int8' and (args.calib or args.max_drop is not None):
        raise SystemExit('error: --calib and --max-drop are for --precision int8')
    try:
        int8_settings = (QuantizationSettings(args.calib, args.calib_images, args.max_drop,
                                              args.val_images)
                         if args.precision == 'int8' else None)
    except ExportError as err:
        raise SystemExit(f'error: {err}') from None
    if args.backend == 'pytorch':
        set_test_precision(cfg, args.precision)
    elif args.precision not in RUNTIME_PRECISIONS[args.backend]:
        runs = RUNTIME_PRECISIONS[args.backend]
        raise SystemExit(f"error: --backend {args.backend} runs {' or '.join(runs)}"
                         f"{' only' if len(runs) == 1 else ''}; drop --precision {args.precision}")
    else:
        cfg.test_dataloader.batch_size = 1  # the exported graph's batch
    if args.show or args.show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise SystemExit('--show/--show-dir need a `visualization` hook in default_hooks')
        hook['draw'] = True
        if args.show:
            hook['show'] = True
            hook['wait_time'] = args.wait_time
        if args.show_dir:
            hook['test_out_dir'] = args.show_dir
    # one line instead of a traceback for what the user can fix: missing data, an unreadable
    # image, a broken or unsafe checkpoint, a neck that does not fit the backbone
    try:
        runner = build_runner(cfg)
        if args.out is not None:
            runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
        with contextlib.ExitStack() as stack:
            if args.backend != 'pytorch':
                path = export_for_test(args, cfg, stack.enter_context(tempfile.TemporaryDirectory(
                    prefix='mmlightbb-test-')), int8_settings)
                stack.enter_context(exported_predictions(
                    runner.model, path, 'onnx' if args.backend == 'onnxruntime' else 'openvino',
                    precision=args.precision))
            runner.test()
    except (FileNotFoundError, UnreadableImageError, CheckpointFormatError, UnsafeCheckpointError,
            ChannelMismatchError, ExportError) as err:
        # raised in a dataloader worker, the message holds the worker's traceback; ours is last
        raise SystemExit(f'error: {str(err).strip().splitlines()[-1]}') from None


if __name__ == '__main__':
    main()
