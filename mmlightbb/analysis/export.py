"""Export a deployed detector or backbone to ONNX / OpenVINO IR, run it there, and check it.

About 400 lines: the export, the runtimes that run it and the YOLOX post-processing graph
they evaluate (:class:`YOLOXDetections`, :func:`exported_predictions`) change together.

What a runtime receives is the plain graph: the model is re-parameterised first
(:func:`~mmlightbb.analysis.benchmark.deploy_model`: RepLKNet/CSPConvNeXt branches merged, BN
folded into convs), then the CPU layout tricks that help PyTorch's oneDNN path are switched off
(``set_cpu_channels_last(model, False)``: NCHW throughout; FasterNet's deployed block exports as
its convs, not as the NHWC GEMMs of ``MLPBlock._forward_matmuls``). ONNX Runtime's and OpenVINO's
own graph optimisers choose their layouts; the GEMM layout measured 1.5x (ORT) and 6.3x
(OpenVINO) slower than the plain graph there.

* ONNX: ``torch.onnx.export(..., dynamo=False, opset_version=17)``; input ``input`` (N, C, H, W),
  outputs ``out0``, ``out1``, ... (the backbone's maps, or the detector's raw head outputs in
  ``mode='tensor'`` order, flattened: no box decoding or NMS); ``dynamic`` makes H and W
  symbolic. The batch size stays the one exported (ParameterNet's per-image dynamic kernels make
  it part of the traced graph).
* OpenVINO IR (.xml + .bin): ``openvino.convert_model`` of that ONNX file (converting from the
  module fails in OpenVINO's tracer for RepLKNet-31B), saved with fp32 weights
  (``compress_to_fp16=False``).

Files are written atomically (:func:`~mmlightbb.engine.fileio.atomic_files`): a failed export
leaves no file (nor a half-written one) under the target name. :func:`check_export` runs the file
in its runtime (CPU, fp32: OpenVINO's CPU plugin would otherwise pick bf16 on CPUs that have it)
and returns the max relative difference to PyTorch on the same input.
"""
import copy
import importlib
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmcv.ops import nms
from mmengine.runner import load_checkpoint
from mmengine.structures import InstanceData
from torch import nn

from ..models.checkpoint import runner_checkpoint_loading
from ..engine.fileio import atomic_files
from ..engine.precision import replaced_test_step
from ..models.layers import set_cpu_channels_last
from .benchmark.inputs import (build_detector, deploy_model, find_test_scale, flatten_outputs,
                               max_rel_diff)

__all__ = ['FORMATS', 'OPSET', 'ExportError', 'require', 'prepare_for_export', 'export_onnx',
           'export_openvino', 'export_model', 'load_runtime', 'compile_openvino', 'check_export',
           'build_for_export',
           'default_out_path', 'yolox_head', 'YOLOXDetections', 'two_stage', 'TWO_STAGE_EXPORT',
           'prepare_with_nms', 'export_with_nms', 'exported_predictions']

FORMATS = ('onnx', 'openvino')
OPSET = 17
RUNTIME_PACKAGES = {'onnx': 'onnx', 'onnxruntime': 'onnxruntime', 'openvino': 'openvino'}


class ExportError(RuntimeError):
    """A problem the user can fix, told in one line (tools/export.py prints ``error: <it>``)."""


def require(package: str):
    """Import ``package`` or raise ExportError saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ExportError(f'the python package {package!r} is not installed ({err}); '
                          f'pip install {package} (tools/install.sh installs onnx, onnxruntime '
                          'and openvino)') from None


class _Outputs(nn.Module):
    """The wrapped module's outputs as one flat tuple of tensors (ONNX wants tensors, not nests).

    ``part``: 'module' runs ``module(x)`` (a backbone); 'head' runs a detector in
    ``mode='tensor'`` (backbone + neck + head, raw head outputs); 'features' runs a detector's
    ``extract_feat`` (backbone + neck maps).
    """

    def __init__(self, module: nn.Module, part: str = 'module'):
        super().__init__()
        self.module, self.part = module, part

    def forward(self, x):
        out = (self.module._forward(x) if self.part == 'head' else
               self.module.extract_feat(x) if self.part == 'features' else self.module(x))
        return tuple(flatten_outputs(out))


# Why a two-stage detector's export stops after the neck: its RPN selects proposals with NMS per
# level and image, and each Cascade stage then pools them with RoIAlign (ONNX RoiAlign differs
# from mmcv's aligned=True sampling) and refines them before the next stage pools again; exporting
# that needs per-op rewrites of mmdet's heads (mmdeploy's approach), which this project does not
# carry. The backbone + neck graph is the costly part for the light backbones.
TWO_STAGE_EXPORT = ('backbone + neck (the FPN maps); the RPN and the RoI stages are not in the '
                    'graph: proposals need NMS per level and image and each cascade stage pools '
                    "them with mmcv's RoIAlign, which needs mmdet's heads rewritten op by op "
                    '(as mmdeploy does); run them in PyTorch on the exported maps')


def two_stage(model: nn.Module) -> bool:
    return getattr(model, 'roi_head', None) is not None


def prepare_for_export(model: nn.Module, backbone_only: bool = True, deploy: bool = True
                       ) -> nn.Module:
    """A deployed, NCHW, eval-mode copy of ``model`` (a detector, or a bare backbone) whose forward
    returns a flat tuple of tensors: the backbone's maps (``backbone_only`` or a bare backbone),
    a two-stage detector's backbone + neck maps (:data:`TWO_STAGE_EXPORT` says why), or a
    one-stage detector's raw head outputs. ``model`` is not modified."""
    model = copy.deepcopy(model).cpu().float().eval()
    is_detector = getattr(model, 'backbone', None) is not None
    if deploy:
        model = deploy_model(model)
    set_cpu_channels_last(model, False)
    if is_detector and backbone_only:
        return _Outputs(model.backbone).eval()
    if is_detector:
        return _Outputs(model, 'features' if two_stage(model) else 'head').eval()
    return _Outputs(model).eval()


def export_onnx(module: nn.Module, x: torch.Tensor, path: str, dynamic: bool = False) -> str:
    """``module`` (from :func:`prepare_for_export`) to ONNX at ``path``, atomically."""
    require('onnx')
    with torch.no_grad():
        n_out = len(module(x))
    names = [f'out{i}' for i in range(n_out)]
    axes = None
    if dynamic:
        axes = {'input': {2: 'height', 3: 'width'}}
        with torch.no_grad():
            dims = [t.dim() for t in module(x)]
        axes.update({n: ({2: f'{n}_height', 3: f'{n}_width'} if d == 4 else {})
                     for n, d in zip(names, dims)})
    with atomic_files(path) as (tmp, ):
        torch.onnx.export(module, (x, ), tmp, dynamo=False, opset_version=OPSET,
                          input_names=['input'], output_names=names, dynamic_axes=axes,
                          do_constant_folding=True)
        import onnx
        onnx.checker.check_model(tmp)
    return path


def export_openvino(module: nn.Module, x: torch.Tensor, path: str, dynamic: bool = False) -> str:
    """``module`` to OpenVINO IR at ``path`` (.xml; the weights go to the .bin beside it), via
    a temporary ONNX file, atomically (the .bin is renamed before the .xml that reads it)."""
    ov = require('openvino')
    if not path.endswith('.xml'):
        raise ExportError(f'an OpenVINO IR path ends in .xml (the weights go beside it in .bin), '
                          f'got {path!r}')
    # save_model writes the .bin beside the .xml it is given: the temporary names keep the pair
    with atomic_files(path[:-4] + '.bin', path, keep_extension=True) as (_, tmp_xml):
        tmp_onnx = tmp_xml[:-4] + '.onnx'
        try:
            export_onnx(module, x, tmp_onnx, dynamic)
            ov.save_model(ov.convert_model(tmp_onnx), tmp_xml, compress_to_fp16=False)
        finally:
            if osp.exists(tmp_onnx):
                os.remove(tmp_onnx)
    return path


def export_model(module: nn.Module, x: torch.Tensor, path: str, fmt: str,
                 dynamic: bool = False) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return (export_onnx if fmt == 'onnx' else export_openvino)(module, x, path, dynamic)


def load_runtime(path: str, fmt: str, threads: Optional[int] = None, precision: str = 'fp32'
                 ) -> Callable[[np.ndarray], List[np.ndarray]]:
    """A function running the exported file on one NCHW float32 array and returning its outputs.
    Session creation / compilation happens here, once. ``threads`` pins the runtime's intra-op
    threads (ORT ``intra_op_num_threads``, OpenVINO ``INFERENCE_NUM_THREADS``); ``precision``
    'fp32' or 'bf16' (OpenVINO's ``INFERENCE_PRECISION_HINT``; ORT runs fp32 only), or 'int8'
    for a file :mod:`.quantize` wrote (its float parts run fp32)."""
    if fmt == 'onnx':
        if precision not in ('fp32', 'int8'):
            raise ExportError('onnxruntime runs the fp32 or an int8 graph; use precision fp32')
        ort = require('onnxruntime')
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
        name = sess.get_inputs()[0].name
        return lambda arr: sess.run(None, {name: arr})
    if fmt == 'openvino':
        compiled = compile_openvino(path, threads, precision)
        request = compiled.create_infer_request()

        def run(arr):
            request.infer({0: arr})
            return [request.get_output_tensor(i).data.copy()
                    for i in range(len(compiled.outputs))]
        return run
    raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def compile_openvino(path: str, threads: Optional[int] = None, precision: str = 'fp32',
                     **config):
    """The OpenVINO model ``path`` compiled for the CPU as :func:`load_runtime` runs it (latency
    hint, ``threads``, ``precision`` as the inference precision hint), with extra ``config``
    properties (e.g. ``PERF_COUNT=True``)."""
    ov = require('openvino')
    config = {'INFERENCE_PRECISION_HINT': 'bf16' if precision == 'bf16' else 'f32',
              'PERFORMANCE_HINT': 'LATENCY', **config}
    if threads:
        config['INFERENCE_NUM_THREADS'] = int(threads)
    return ov.Core().compile_model(path, 'CPU', config)


def check_export(module: nn.Module, path: str, fmt: str, x: torch.Tensor,
                 precision: str = 'fp32') -> float:
    """Max relative difference (``max|ref - out| / max|ref|`` over outputs) between ``module``
    in PyTorch and the exported file in its runtime (``precision``: fp32, or int8 for a
    quantized file) on ``x``."""
    with torch.no_grad():
        ref = [t.float() for t in module(x)]
    outs = load_runtime(path, fmt, precision=precision)(x.numpy())
    return max_rel_diff(ref, [torch.from_numpy(np.asarray(o)).float() for o in outs])


def default_out_path(config: str, fmt: str, backbone_only: bool) -> str:
    stem = osp.splitext(osp.basename(config))[0] + ('_backbone' if backbone_only else '')
    return osp.join('work_dirs', 'export', stem + ('.onnx' if fmt == 'onnx' else '.xml'))


def build_for_export(config: str, checkpoint: Optional[str] = None,
                     cfg_options: Optional[dict] = None):
    """(detector, cfg) with ``checkpoint`` loaded strictly: a checkpoint that does not fit the
    config (missing, unexpected or differently shaped weights) raises ExportError in one line,
    rather than exporting a partly random model."""
    model, cfg = build_detector(config, None, cfg_options)
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise ExportError(f'checkpoint not found: {checkpoint!r}')
        try:
            with runner_checkpoint_loading(checkpoint):
                load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                                logger='silent')
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = '; '.join(lines[:3])[:400]
            raise ExportError(f'checkpoint {checkpoint!r} does not fit {config}: {detail}'
                              ) from None
        model.eval()
    return model, cfg


def input_shape(cfg, shape: Optional[Sequence[int]], config: str) -> Tuple[int, int]:
    if shape is not None:
        return int(shape[0]), int(shape[1])
    found = find_test_scale(cfg)
    if found is None:
        raise ExportError(f'{config}: no Resize scale in the test pipeline; pass --shape H W')
    return found


class _ONNXNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (per class, corner boxes). In PyTorch (the trace's example run)
    the same selection by mmcv's NMS, so the traced graph's shapes are the real ones."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_thr, score_thr):
        selected = []
        for c in range(scores.shape[1]):
            s = scores[0, c]
            idx = torch.nonzero(s > float(score_thr)).flatten()
            if idx.numel():
                _, keep = nms(boxes[0, idx], s[idx], float(iou_thr))
                keep = idx[keep][:int(max_per_class)]
                selected.append(torch.stack([torch.zeros_like(keep), torch.full_like(keep, c),
                                             keep], 1))
        if not selected:
            return torch.zeros(0, 3, dtype=torch.int64)
        return torch.cat(selected).long()

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thr, score_thr):
        return g.op('NonMaxSuppression', boxes, scores, max_per_class, iou_thr, score_thr,
                    center_point_box_i=0)


def yolox_head(detector: nn.Module) -> nn.Module:
    """The detector's ``YOLOXHead``, whose post-processing :class:`YOLOXDetections` puts in the
    graph; ExportError naming the head of any other detector (two-stage detectors such as
    Cascade R-CNN: :data:`TWO_STAGE_EXPORT`)."""
    head = getattr(detector, 'bbox_head', None) or getattr(detector, 'roi_head', None)
    if type(head).__name__ != 'YOLOXHead':
        what = 'no bbox_head' if head is None else type(head).__name__
        raise ExportError(f'--with-nms exports YOLOX detectors (so do the runtime benchmarks of '
                          f'a whole detector); {type(detector).__name__} with {what} is not '
                          'exported yet: export or time its backbone alone (--backbone-only)')
    return head


class YOLOXDetections(nn.Module):
    """A YOLOX detector with its post-processing in the graph: backbone, neck, head, box
    decoding (``YOLOXHead._bbox_decode`` on the grid priors), score = max class score x
    objectness, class-aware NMS (ONNX ``NonMaxSuppression``) at the config's ``test_cfg``
    (``score_thr``, ``nms.iou_threshold``, ``max_per_img``). Batch 1; outputs ``dets`` (K, 5:
    x1 y1 x2 y2 score, by decreasing score) and ``labels`` (K), in input-pixel coordinates (no
    rescaling to the original image)."""

    def __init__(self, detector: nn.Module, shape: Tuple[int, int]):
        super().__init__()
        head = yolox_head(detector)
        self.detector, self.head = detector, head
        cfg = head.test_cfg
        self.score_thr = float(cfg.get('score_thr', 0.01))
        self.iou_thr = float(cfg['nms']['iou_threshold'])
        # mmdet's YOLOXHead keeps every box NMS keeps unless test_cfg says max_per_img
        self.max_per_img = cfg.get('max_per_img', None)

    def forward(self, x):
        cls_scores, bbox_preds, objectnesses = self.detector._forward(x)
        head = self.head
        sizes = [c.shape[2:] for c in cls_scores]
        priors = torch.cat(head.prior_generator.grid_priors(
            sizes, dtype=cls_scores[0].dtype, device=x.device, with_stride=True))
        cls = torch.cat([c.permute(0, 2, 3, 1).reshape(1, -1, head.cls_out_channels)
                         for c in cls_scores], 1).sigmoid()[0]
        boxes = head._bbox_decode(priors, torch.cat(
            [b.permute(0, 2, 3, 1).reshape(1, -1, 4) for b in bbox_preds], 1))
        obj = torch.cat([o.permute(0, 2, 3, 1).reshape(1, -1) for o in objectnesses],
                        1).sigmoid()[0]
        max_scores, labels = cls.max(1)
        scores = max_scores * obj  # (B,)
        one_hot = nn.functional.one_hot(labels, head.cls_out_channels).to(scores.dtype)
        per_class = (one_hot * scores[:, None]).t()[None]  # (1, C, B): 0 off the box's label
        # ONNX keeps scores > score_threshold; mmdet keeps >= score_thr (equal only at ties)
        limit = self.max_per_img or per_class.shape[2]
        selected = _ONNXNMS.apply(boxes, per_class, torch.tensor([limit], dtype=torch.int64),
                                  torch.tensor([self.iou_thr]),
                                  torch.tensor([self.score_thr]))
        box_idx = selected[:, 2]
        kept_scores = scores[box_idx]
        order = torch.argsort(kept_scores, descending=True)[:limit]
        box_idx = box_idx[order]
        dets = torch.cat([boxes[0, box_idx], kept_scores[order, None]], 1)
        return dets, labels[box_idx]


def prepare_with_nms(detector: nn.Module, shape: Tuple[int, int], deploy: bool = True
                     ) -> YOLOXDetections:
    """:func:`prepare_for_export`'s NCHW eval-mode copy of a YOLOX ``detector`` (deployed unless
    ``deploy`` is False) with decoding and NMS after it, for batch 1 at ``shape``."""
    return YOLOXDetections(prepare_for_export(detector, backbone_only=False, deploy=deploy).module,
                           shape).eval()


def export_with_nms(detector: nn.Module, shape: Tuple[int, int], path: str, fmt: str
                    ) -> Tuple[nn.Module, torch.Tensor]:
    """Export ``detector`` (YOLOX) deployed, with decoding and NMS in the graph, at batch 1 and
    ``shape``; returns the exported module and the random input it was traced and checked on."""
    module = prepare_with_nms(detector, shape)
    in_channels = int(getattr(detector.backbone, 'in_channels', 3) or 3)
    x = torch.randn(1, in_channels, *shape, generator=torch.Generator().manual_seed(0))
    export_model(module, x, path, fmt)
    return module, x


def exported_predictions(model: nn.Module, path: str, fmt: str, threads: Optional[int] = None,
                         precision: str = 'fp32'):
    """Within the block (a context manager) ``model.test_step`` predicts with an exported YOLOX
    graph (decoding and NMS inside: :class:`YOLOXDetections`) in its runtime instead of PyTorch,
    so mmdet's test loop and metrics evaluate the deployed file. The data preprocessor stays
    PyTorch's; boxes are rescaled to the original image as mmdet's ``predict(rescale=True)``
    does. Batch 1, at the exported input size: another batch or size raises ExportError naming
    the fix. Only this model instance is changed, and only inside the block."""
    run = load_runtime(path, fmt, threads, precision)  # session creation / compilation, once

    def test_step(data):
        data = model.data_preprocessor(data, False)
        inputs, samples = data['inputs'], data['data_samples']
        if inputs.shape[0] != 1:
            raise ExportError(f'the exported detector takes batch 1, the test loader gives '
                              f'{inputs.shape[0]}: set test_dataloader.batch_size=1')
        try:
            dets, labels = run(inputs.detach().cpu().float().numpy())
        except Exception as err:  # the runtimes' own errors name shapes, not the fix
            raise ExportError(f'{fmt} could not run the exported detector on a test batch of '
                              f'{tuple(inputs.shape)} ({str(err).splitlines()[0][:200]}); '
                              'export it at the test loader\'s padded size (--shape H W)'
                              ) from None
        dets = torch.from_numpy(np.asarray(dets)).float()
        pred = InstanceData(bboxes=dets[:, :4], scores=dets[:, 4],
                            labels=torch.from_numpy(np.asarray(labels)).long())
        scale = samples[0].metainfo.get('scale_factor')
        if scale is not None:  # back to the original image, as predict(rescale=True)
            pred.bboxes = pred.bboxes / pred.bboxes.new_tensor(scale).repeat(2)
        samples[0].pred_instances = pred
        return samples

    return replaced_test_step(model, test_step)
