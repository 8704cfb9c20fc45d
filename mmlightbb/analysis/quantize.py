"""INT8 post-training quantization of an exported detector graph, calibrated on real images.

The graph quantized is the one :mod:`.export` writes (deployed: BN folded, re-parameterised;
YOLOX with box decoding and NMS in it), so what is timed and tested is what ships.

* OpenVINO: NNCF's ``nncf.quantize`` on the IR (8-bit weights per channel, 8-bit activations,
  ``preset=MIXED``: asymmetric activations). With ``max_drop``, NNCF's
  ``quantize_with_accuracy_control`` measures VOC mAP50 on a validation subset and keeps the layers
  whose quantization costs most in floating point until the drop is at most ``max_drop``.
* ONNX Runtime: ``onnxruntime.quantization.quantize_static`` in QDQ format with per-channel
  weights (int8 weights, uint8 activations, MinMax calibration).

In both, only convolutions and matrix products are quantized (ORT ``op_types_to_quantize``;
NNCF quantizes the inputs of those ops): box decoding, scores and NMS stay float.

Calibration images go through the config's own test pipeline (annotation loading dropped) and the
detector's data preprocessor, so they reach the graph exactly as test images do.
"""
import argparse
import dataclasses
import glob
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmdet.evaluation.functional import eval_map
from mmdet.registry import DATASETS
from mmdet.structures.bbox import bbox_overlaps
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from ..engine.config import load_config
from ..engine.fileio import atomic_files
from .export import ExportError, export_model, require

__all__ = ['IMAGE_SUFFIXES', 'MIN_CALIBRATION_IMAGES', 'QuantizationSettings',
           'add_quantization_args', 'export_int8', 'export_graph', 'link_annotated_images',
           'find_images', 'preprocessed_inputs', 'quantize_exported', 'map50_of_runtime',
           'detection_agreement']

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')
MIN_CALIBRATION_IMAGES = 10  # fewer give activation ranges of a handful of scenes
QUANTIZED_OPS = ['Conv', 'MatMul', 'Gemm']


@dataclasses.dataclass(frozen=True)
class QuantizationSettings:
    """How an INT8 graph is calibrated (and, with ``max_drop``, validated); ExportError naming
    the flag for a bad value."""
    calib: str  # a folder of training images, found recursively
    calib_images: int = 300
    max_drop: Optional[float] = None  # NNCF accuracy control: VOC mAP50 drop allowed
    val_images: int = 100  # accuracy control: the first images of the config's test set

    def __post_init__(self):
        if not self.calib:
            raise ExportError('INT8 needs --calib FOLDER: training images to calibrate the '
                              'activation ranges on')
        if self.calib_images < MIN_CALIBRATION_IMAGES:
            raise ExportError(f'--calib-images {self.calib_images}: INT8 calibration needs at '
                              f'least {MIN_CALIBRATION_IMAGES} images (300 is the usual number)')
        if self.max_drop is not None and not 0 < self.max_drop < 1:
            raise ExportError(f'--max-drop {self.max_drop}: an absolute mAP50 drop in (0, 1), '
                              'e.g. 0.01')
        if self.val_images < 1:
            raise ExportError(f'--val-images {self.val_images}: at least 1')


def add_quantization_args(parser: argparse.ArgumentParser) -> None:
    """``--calib``, ``--calib-images``, ``--max-drop`` and ``--val-images``, as tools/export.py and
    tools/test.py take them (:class:`QuantizationSettings`)."""
    parser.add_argument('--calib', help='int8: a folder of training images (found recursively)')
    parser.add_argument('--calib-images', type=int, default=300,
                        help='int8: how many of them calibrate (default 300)')
    parser.add_argument('--max-drop', type=float,
                        help='int8, openvino: NNCF accuracy control, at most this VOC mAP50 '
                        'drop on the first --val-images images of the test set')
    parser.add_argument('--val-images', type=int, default=100,
                        help='--max-drop: validation images (default 100)')


@dataclasses.dataclass
class Int8Export:
    """What :func:`export_int8` did: the first calibration input (for a check), how many images
    calibrated, and the validation mAP50 drop NNCF measured (``max_drop`` only)."""
    first_input: torch.Tensor
    images: int
    drop: Optional[float]


def export_int8(module, model, cfg, shape: Tuple[int, int], out: str, fmt: str,
                settings: QuantizationSettings) -> Int8Export:
    """Export ``module`` (prepared from the detector ``model`` of ``cfg``) at batch 1 and
    ``shape`` and quantize it to INT8 at ``out`` (the fp32 graph lives in a temporary folder)."""
    require('nncf' if fmt == 'openvino' else 'onnxruntime')
    calibration = preprocessed_inputs(model, cfg, find_images(settings.calib,
                                                              settings.calib_images), shape)
    first = torch.from_numpy(calibration[0])
    with tempfile.TemporaryDirectory(prefix='mmlightbb-int8-') as folder:
        fp32 = export_model(module, first, osp.join(folder, 'fp32' + osp.splitext(out)[1]), fmt)
        drop = quantize_exported(model, cfg, fp32, fmt, out, calibration, settings.max_drop,
                                 settings.val_images)
    return Int8Export(first, len(calibration), drop)


def export_graph(module, model, x: torch.Tensor, path: str, fmt: str,
                 quantization: Optional[QuantizationSettings] = None,
                 source: Optional[dict] = None) -> str:
    """``module`` (prepared from the detector ``model``) exported on the input ``x`` to ``path``:
    the fp32 graph, or with ``quantization`` that graph quantized to INT8 (:func:`export_int8`),
    calibrated through the test pipeline of ``source['config']`` (and its ``cfg_options``)."""
    if quantization is None:
        return export_model(module, x, path, fmt)
    if not (source or {}).get('config'):
        raise ExportError('INT8 calibrates through the test pipeline of the detector\'s config: '
                          'pass source=dict(config=...)')
    cfg = load_config(source['config'], source.get('cfg_options'))
    export_int8(module, model, cfg, tuple(x.shape[-2:]), path, fmt, quantization)
    return path


def link_annotated_images(ann_file: str, image_root: str, folder: str) -> str:
    """``folder`` (made, or emptied of earlier links) holding a link to every image of the COCO
    annotation file ``ann_file`` (``file_name`` relative to ``image_root``): e.g. the training
    split as calibration images, so that calibration never sees the test images."""
    with open(ann_file) as f:
        images = json.load(f)['images']
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if osp.islink(osp.join(folder, name)):
            os.remove(osp.join(folder, name))
    for i, image in enumerate(images):
        src = osp.abspath(osp.join(image_root, image['file_name']))
        os.symlink(src, osp.join(folder, f'{i:05d}{osp.splitext(src)[1]}'))
    return folder


def find_images(folder: str, count: int) -> List[str]:
    """``count`` images found under ``folder`` (recursively, sorted, evenly spaced over the
    sorted list so that every part of the folder is represented); ExportError when there are
    fewer than :data:`MIN_CALIBRATION_IMAGES`."""
    if not osp.isdir(folder):
        raise ExportError(f'--calib {folder!r} is not a folder; give a folder of training images '
                          '(any layout: found recursively)')
    paths = sorted(p for p in glob.glob(osp.join(folder, '**', '*'), recursive=True)
                   if p.lower().endswith(IMAGE_SUFFIXES) and osp.isfile(p))
    if len(paths) < MIN_CALIBRATION_IMAGES:
        raise ExportError(f'--calib {folder!r} holds {len(paths)} images '
                          f'({"/".join(IMAGE_SUFFIXES)}); INT8 calibration needs at least '
                          f'{MIN_CALIBRATION_IMAGES} (300 is the usual number)')
    if len(paths) <= count:
        return paths
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def _test_pipeline(cfg, with_annotations: bool) -> Compose:
    pipeline = cfg.test_dataloader.dataset.get('pipeline') or cfg.get('test_pipeline')
    steps = [dict(step) for step in pipeline
             if with_annotations or step.get('type') != 'LoadAnnotations']
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return Compose(steps)


def preprocessed_inputs(model, cfg, images: Sequence[str], shape: Tuple[int, int]
                        ) -> List[np.ndarray]:
    """Each image through the config's test pipeline and ``model.data_preprocessor``: the
    1 x C x H x W float32 array the exported graph takes. ExportError when the pipeline does not
    give the exported ``shape`` (a test pipeline that does not pad to a fixed size)."""
    pipeline = _test_pipeline(cfg, with_annotations=False)
    arrays = []
    for index, path in enumerate(images):
        packed = pipeline(dict(img_path=path, img_id=index))
        if packed is None:
            raise ExportError(f'the test pipeline dropped {path!r}; is it a readable image?')
        with torch.no_grad():
            inputs = model.data_preprocessor(pseudo_collate([packed]), False)['inputs']
        if tuple(inputs.shape[-2:]) != tuple(shape):
            raise ExportError(f'{path!r} comes out of the test pipeline at '
                              f'{tuple(inputs.shape[-2:])}, the graph takes {tuple(shape)}: '
                              'quantize at the padded test size (--shape H W)')
        arrays.append(inputs.float().numpy())
    return arrays


def _validation_items(model, cfg, count: int, shape: Tuple[int, int]) -> List[tuple]:
    """(input array, ground-truth boxes, labels) of the first ``count`` images of the config's
    test set, boxes in the graph's input coordinates."""
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    items = []
    for index in range(min(count, len(dataset))):
        packed = dataset[index]
        with torch.no_grad():
            data = model.data_preprocessor(pseudo_collate([packed]), False)
        inputs, sample = data['inputs'], data['data_samples'][0]
        if tuple(inputs.shape[-2:]) != tuple(shape):
            raise ExportError(f'test image {index} comes out of the test pipeline at '
                              f'{tuple(inputs.shape[-2:])}, the graph takes {tuple(shape)}')
        gt = sample.gt_instances
        items.append((inputs.float().numpy(), gt.bboxes.numpy().reshape(-1, 4),
                      gt.labels.numpy()))
    return items


def map50_of_runtime(run: Callable[[np.ndarray], list], items: Iterable[tuple],
                     num_classes: int) -> float:
    """VOC mAP50 (area) of a graph with NMS (outputs ``dets`` K x 5, ``labels`` K) over
    (input, gt boxes, gt labels) items, in the graph's input coordinates."""
    results, annotations = [], []
    for inputs, boxes, labels in items:
        dets, det_labels = (np.asarray(o) for o in run(inputs)[:2])
        results.append([dets[det_labels == c].reshape(-1, 5).astype(np.float32)
                        for c in range(num_classes)])
        annotations.append(dict(bboxes=boxes.astype(np.float32), labels=labels.astype(np.int64)))
    mean_ap, _ = eval_map(results, annotations, iou_thr=0.5, logger='silent')
    return float(mean_ap)


def detection_agreement(reference: Sequence, other: Sequence, score_thr: float = 0.3,
                        iou_thr: float = 0.5) -> Tuple[int, int]:
    """(found, total): how many of the ``reference`` detections (``dets`` K x 5, ``labels`` K)
    with score >= ``score_thr`` have a detection of the same label in ``other`` at IoU >=
    ``iou_thr`` (an INT8 graph's detections are not the fp32 ones row for row)."""
    ref_dets, ref_labels = (torch.as_tensor(np.asarray(v)) for v in reference[:2])
    dets, labels = (torch.as_tensor(np.asarray(v)) for v in other[:2])
    keep = ref_dets[:, 4] >= score_thr
    ref_dets, ref_labels = ref_dets[keep], ref_labels[keep]
    if len(ref_dets) == 0 or len(dets) == 0:
        return 0, len(ref_dets)
    ious = bbox_overlaps(ref_dets[:, :4].float(), dets[:, :4].float())
    ious[ref_labels[:, None] != labels[None, :]] = 0
    return int((ious.max(1).values >= iou_thr).sum()), len(ref_dets)


def _num_classes(model) -> int:
    head = getattr(model, 'bbox_head', None)
    return int(getattr(head, 'num_classes'))


def quantize_exported(model, cfg, fp32_path: str, fmt: str, out: str,
                      calibration: Sequence[np.ndarray], max_drop: Optional[float] = None,
                      validation_images: int = 100) -> Optional[float]:
    """Quantize the fp32 graph ``fp32_path`` (``fmt`` 'onnx' or 'openvino') to INT8 at ``out``,
    written atomically; returns the validation mAP50 drop NNCF measured with ``max_drop`` (else
    None). ``model``/``cfg`` are the exported detector and its config (validation data)."""
    if len(calibration) < MIN_CALIBRATION_IMAGES:
        raise ExportError(f'{len(calibration)} calibration images; INT8 calibration needs at '
                          f'least {MIN_CALIBRATION_IMAGES} (--calib-images)')
    if fmt == 'onnx':
        if max_drop is not None:
            raise ExportError('--max-drop is NNCF accuracy control: use --format openvino')
        _quantize_onnx(fp32_path, out, calibration)
        return None
    if fmt != 'openvino':
        raise ExportError(f"unknown format {fmt!r}; INT8 runs in 'onnx' (ONNX Runtime) or "
                          "'openvino'")
    nncf = require('nncf')
    ov = require('openvino')
    core = ov.Core()
    fp32 = core.read_model(fp32_path)
    dataset = nncf.Dataset(list(calibration))
    settings = dict(preset=nncf.QuantizationPreset.MIXED, subset_size=len(calibration))
    drop = None
    if max_drop is None:
        quantized = nncf.quantize(fp32, dataset, **settings)
    else:
        shape = tuple(calibration[0].shape[-2:])
        items = _validation_items(model, cfg, validation_images, shape)
        num_classes = _num_classes(model)

        def validate(compiled, data) -> float:
            request = compiled.create_infer_request()

            def run(arr):
                request.infer({0: arr})
                return [request.get_output_tensor(i).data.copy()
                        for i in range(len(compiled.outputs))]
            return map50_of_runtime(run, data, num_classes)

        reference = validate(core.compile_model(fp32, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'}),
                             items)
        quantized = nncf.quantize_with_accuracy_control(
            fp32, dataset, nncf.Dataset(items, lambda item: item[0]), validate,
            max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **settings)
        drop = reference - validate(core.compile_model(
            quantized, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'}), items)
    bin_path = out[:-4] + '.bin'
    with atomic_files(bin_path, out, keep_extension=True) as (_, tmp_xml):
        ov.save_model(quantized, tmp_xml, compress_to_fp16=False)
    return drop


class _Reader:
    """onnxruntime's ``CalibrationDataReader``: one input array at a time."""

    def __init__(self, name: str, arrays: Sequence[np.ndarray]):
        self.name = name
        self.arrays = iter(arrays)

    def get_next(self):
        arr = next(self.arrays, None)
        return None if arr is None else {self.name: arr}


def _quantize_onnx(fp32_path: str, out: str, calibration: Sequence[np.ndarray]) -> None:
    ort = require('onnxruntime')
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    name = ort.InferenceSession(fp32_path, providers=['CPUExecutionProvider']
                                ).get_inputs()[0].name
    # the quantizer writes an augmented copy beside its input: work in a private folder
    with tempfile.TemporaryDirectory(prefix='mmlightbb-quant-') as folder:
        source = osp.join(folder, 'fp32.onnx')
        shutil.copyfile(fp32_path, source)
        with atomic_files(out, keep_extension=True) as (tmp, ):
            os.remove(tmp)  # quantize_static writes the file itself
            quantize_static(source, tmp, _Reader(name, calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=QUANTIZED_OPS)
