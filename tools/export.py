"""Export a detector (raw head outputs) or its backbone to ONNX or OpenVINO IR, deployed and in
plain NCHW, and check the file against PyTorch; see ``mmlightbb/analysis/export.py``.

    python tools/export.py CONFIG [CHECKPOINT] --format onnx|openvino [--backbone-only]
        [--shape H W] [--batch-size 1] [--dynamic] [--with-nms] [--out PATH]
        [--precision fp32|int8 --calib IMAGES [--calib-images 300] [--max-drop D]]
        [--cfg-options k=v ...]

Re-parameterises first (``switch_to_deploy`` + Conv/BN folding), exports with
``torch.onnx.export(dynamo=False, opset_version=17)`` (OpenVINO: converted from that ONNX file,
fp32 weights), writes atomically, then runs the file in onnxruntime / OpenVINO (CPU, fp32) on the
same random input as PyTorch and prints the max relative difference. Default ``--out``:
``work_dirs/export/<config>[_backbone].onnx|.xml``. The detector export stops before box decoding
and NMS (its outputs are the head's score/box/objectness maps, ``model._forward``), except with
``--with-nms`` (YOLOX, batch 1, fixed size): box decoding, score = class x objectness and
class-aware NMS (ONNX NonMaxSuppression) at the config's test_cfg are in the graph, and the outputs
are ``dets`` (K x 5: x1 y1 x2 y2 score) and ``labels`` (K), equal to mmdet's ``predict``
(``rescale=False``). Two-stage detectors (Cascade R-CNN) export backbone + neck: the FPN maps
(``TWO_STAGE_EXPORT`` in the library says what the RPN and RoI stages would need).

``--precision int8`` quantizes the exported graph after training (``mmlightbb/analysis/
quantize.py``): NNCF for OpenVINO, ``quantize_static`` (QDQ, per-channel) for ONNX Runtime,
calibrated on ``--calib-images`` images found under ``--calib`` (training images; any layout)
through the config's test pipeline; convolutions and matrix products only, decoding and NMS stay
float. ``--max-drop D`` (OpenVINO) uses NNCF's accuracy control: VOC mAP50 on the first
``--val-images`` images of the config's test set may drop by at most D. The check then compares
the INT8 file with PyTorch (fp32) on a calibration image.
"""
import argparse
import sys

import torch
from mmengine.config import DictAction

from mmlightbb.analysis.export import (FORMATS, TWO_STAGE_EXPORT, ExportError, build_for_export,
                                       check_export, default_out_path, export_model, input_shape,
                                       load_runtime, prepare_for_export, prepare_with_nms, require,
                                       two_stage)
from mmlightbb.analysis.quantize import (QuantizationSettings, add_quantization_args,
                                         detection_agreement, export_int8)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a detector or backbone to ONNX/OpenVINO')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (loaded strictly; default: '
                        "the config's initialisation)")
    parser.add_argument('--format', required=True, help='onnx | openvino')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export model.backbone (default: backbone + neck + head, raw outputs)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input size traced and checked (default: the config's test scale)")
    parser.add_argument('--batch-size', type=int, default=1, help='batch of the exported input')
    parser.add_argument('--dynamic', action='store_true',
                        help='symbolic input height and width (the batch stays fixed)')
    parser.add_argument('--with-nms', action='store_true',
                        help='YOLOX only: box decoding + NMS in the graph (outputs dets, labels)')
    parser.add_argument('--out', help='output file (.onnx, or .xml for openvino)')
    parser.add_argument('--precision', choices=['fp32', 'int8'], default='fp32',
                        help='int8: post-training quantization calibrated on --calib images')
    add_quantization_args(parser)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    if args.format not in FORMATS:
        parser.error(f"unknown --format {args.format!r}; choose one of {', '.join(FORMATS)}")
    if args.with_nms and (args.backbone_only or args.dynamic or args.batch_size != 1):
        parser.error('--with-nms exports the whole YOLOX detector at batch 1 and a fixed size: '
                     'drop --backbone-only / --dynamic / --batch-size')
    if args.batch_size < 1 or (args.shape is not None and min(args.shape) < 1):
        parser.error('--batch-size and --shape must be positive')
    if args.precision == 'int8':
        if args.dynamic or args.batch_size != 1:
            parser.error('--precision int8 quantizes a graph of batch 1 at a fixed size: drop '
                         '--dynamic / --batch-size')
        if args.max_drop is not None and not (args.with_nms and args.format == 'openvino'):
            parser.error('--max-drop measures mAP50 on detections: it needs --with-nms and '
                         '--format openvino (NNCF)')
    elif args.calib or args.max_drop is not None:
        parser.error('--calib and --max-drop are for --precision int8')
    try:
        require('onnx')  # both formats go through ONNX; check the runtime before building
        require('onnxruntime' if args.format == 'onnx' else 'openvino')
        model, cfg = build_for_export(args.config, args.checkpoint, args.cfg_options)
        h, w = input_shape(cfg, args.shape, args.config)
        out = args.out or default_out_path(args.config, args.format, args.backbone_only)
        module = (prepare_with_nms(model, (h, w)) if args.with_nms else
                  prepare_for_export(model, args.backbone_only))
        in_ch = int(getattr(model.backbone, 'in_channels', 3) or 3)
        x = torch.randn(args.batch_size, in_ch, h, w, generator=torch.Generator().manual_seed(0))
        if args.precision == 'int8':
            int8 = export_int8(module, model, cfg, (h, w), out, args.format, QuantizationSettings(
                args.calib, args.calib_images, args.max_drop, args.val_images))
            x = int8.first_input
        else:
            export_model(module, x, out, args.format, args.dynamic)
        if args.precision == 'int8' and args.with_nms:  # not row for row: match detections
            with torch.no_grad():
                reference = module(x)
            found, total = detection_agreement(
                reference, load_runtime(out, args.format, precision='int8')(x.numpy()))
        else:
            diff = check_export(module, out, args.format, x, precision=args.precision)
    except (ExportError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f'error: {str(err).strip().splitlines()[-1]}') from None
    what = ('backbone' if args.backbone_only else
            'detector with box decoding + NMS (dets, labels)' if args.with_nms else
            f'two-stage detector: {TWO_STAGE_EXPORT}' if two_stage(model) else
            'detector (raw head outputs, no NMS)')
    runtime = 'onnxruntime' if args.format == 'onnx' else 'openvino'
    print(f'exported {what} of {args.config} -> {out} ({args.format}, {args.precision}, opset 17, '
          f'deployed, NCHW, input {args.batch_size}x{in_ch}x{h}x{w}'
          f"{', dynamic H W' if args.dynamic else ''})")
    if args.precision == 'int8':
        print(f'int8: calibrated on {int8.images} images of {args.calib}'
              + ('' if int8.drop is None else f'; validation mAP50 drop {int8.drop:.4f} '
                 f'(at most {args.max_drop})'))
        if args.with_nms:
            print(f'check: {runtime} int8 finds {found} of the {total} PyTorch fp32 detections '
                  '(score >= 0.3) on a calibration image (same label, IoU >= 0.5); measure its '
                  'mAP with tools/test.py --backend ... --precision int8')
        else:
            print(f'check: {runtime} int8 vs PyTorch fp32 on a calibration image: max relative '
                  f'difference {diff:.2e}')
    else:
        print(f'check: {runtime} vs PyTorch on the same random input, fp32: max relative '
              f'difference {diff:.2e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
