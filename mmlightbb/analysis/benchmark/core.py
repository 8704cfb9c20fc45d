"""One benchmark run: deploy and check a copy of the model, time the chosen unit, count its cost."""
import collections
import copy
import dataclasses
import itertools
import os
import sys
import tempfile
from typing import List, Optional

import numpy as np
import torch
from torch import nn

from ..complexity import count_macs, count_params
from ...engine.precision import (autocast_compute, autocast_context,
                                 resolve_precision)
from .inputs import (backbone_layout, build_detector, conv_input_layouts, count_bn, deploy_model,
                     find_test_scale, flatten_outputs, in_channels_of, load_test_batches,
                     make_batch, max_rel_diff)
from .profile import profile_ops
from .settings import BenchmarkSettings, input_dtype
from .timing import cpu_name, matmul_peak_gflops, summarize, time_fn, versions

__all__ = ['SCHEMA_VERSION', 'MACS_COUNTER', 'benchmark', 'run_benchmark']

SCHEMA_VERSION = 1
MACS_COUNTER = ('mmengine FlopAnalyzer, conv + linear layers of the backbone '
                '(1 multiply-add = 1 MAC; FLOPs = 2 x MACs)')


def _settings(settings: Optional[BenchmarkSettings], overrides: dict) -> BenchmarkSettings:
    if settings is None:
        return BenchmarkSettings(**overrides)
    return dataclasses.replace(settings, **overrides) if overrides else settings


def benchmark(model: nn.Module, settings: Optional[BenchmarkSettings] = None, *,
              batches: Optional[List[dict]] = None, images_info: Optional[dict] = None,
              source: Optional[dict] = None, return_model: bool = False, **overrides):
    """Benchmark a built detector; returns the result dict (see the package doc).

    ``settings`` (or keyword ``overrides`` of its fields, e.g. ``shape=(640, 640), deploy=True``)
    say what is timed and how. ``model`` is not modified: a deep copy is (deployed,) moved and
    timed. ``batches`` (test_step batches on CPU, e.g. from :func:`load_test_batches`, described by
    ``images_info``) replace the synthetic batch: iteration i runs on ``batches[i % len]``.
    ``source`` (config, checkpoint, cfg_options) is recorded in the settings of the result. With
    ``return_model`` returns ``(results, timed_model)``. ``threads`` apply during the call only.
    """
    settings = _settings(settings, overrides)
    if batches is None and settings.shape is None:
        raise ValueError('shape is needed without batches: pass shape=(H, W)')
    if batches is not None and not batches:
        raise ValueError('batches is empty; pass at least one batch or none for a synthetic one')
    threads_before = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        results, timed = _benchmark(model, settings, batches, images_info, source or {})
    finally:
        torch.set_num_threads(threads_before)  # the caller's setting is left as it was
    return (results, timed) if return_model else results


def _benchmark(model, s: BenchmarkSettings, batches, images_info, source):
    threads_used = torch.get_num_threads()
    model = model.eval()
    if getattr(model, 'backbone', None) is None:
        raise ValueError(f'{type(model).__name__} has no .backbone; pass a detector')
    batch_size, device = s.batch_size, s.device
    if s.backend != 'pytorch':  # a missing runtime or a head that does not export: say so first
        from ..export import require, yolox_head
        require('onnx')
        require(s.backend)
        if not s.backbone_only:
            yolox_head(model)
    if s.precision == 'int8':
        precision, precision_note = 'int8', (
            f'the exported graph quantized to INT8, calibrated on up to '
            f'{s.quantization.calib_images} images of {s.quantization.calib}')
    else:
        precision, precision_note = resolve_precision(s.precision, device, warn=False)
    if precision != s.precision:  # bf16 without native support: fp32, said in one line
        print(f'warning: {precision_note}', file=sys.stderr)
    fp16 = precision == 'fp16'
    dtype = input_dtype(precision)
    mode = ('backbone_only' if s.backbone_only else
            'test_step' if s.backend == 'pytorch' else 'exported_detector')
    real = batches is not None
    if not real:
        batches = [make_batch(batch_size, s.shape, in_channels_of(model))]

    # the backbone inputs, normalised by the model's own preprocessor (CPU, fp32); with real
    # images the most frequent padded size stands for the input size (MACs, deploy check)
    with torch.no_grad():
        xs = [model.data_preprocessor(copy.copy(b), False)['inputs'].float() for b in batches]
    sizes = collections.Counter(tuple(x.shape[-2:]) for x in xs)
    shape = sizes.most_common(1)[0][0]
    x = next(x for x in xs if tuple(x.shape[-2:]) == shape)
    if real:
        images_info = dict(images_info or {},
                           batch_input_hw={f'{h}x{w}': n for (h, w), n in sizes.items()})

    # --deploy: deploy a copy, check it against the original on the same input (CPU, fp32)
    timed = copy.deepcopy(model)
    deploy_check = None
    if s.deploy:
        timed = deploy_model(timed)
        with torch.no_grad():
            diff = max_rel_diff(model.backbone(x), timed.backbone(x))
            neck_diff = None
            if not s.backbone_only and getattr(model, 'neck', None) is not None:
                neck_diff = max_rel_diff(model.extract_feat(x), timed.extract_feat(x))
        deploy_check = dict(
            max_rel_diff=diff, neck_max_rel_diff=neck_diff,
            compared=('backbone outputs' + ('' if neck_diff is None else ' (and neck outputs)') +
                      f' of the deployed vs the original model on one {x.shape[0]}x'
                      f'{x.shape[1]}x{shape[0]}x{shape[1]} preprocessed input, fp32 CPU'))

    # complexity of the timed model (CPU, fp32, before any memory-format / dtype change)
    macs = count_macs(timed.backbone, (1, x.shape[1], shape[0], shape[1]), conv_linear_only=True)
    params = dict(model=count_params(timed), backbone=count_params(timed.backbone))

    # the accuracy of reduced precision: backbone outputs under autocast vs fp32 (CPU)
    precision_check = None
    if precision == 'bf16' and s.backend == 'pytorch' and device == 'cpu':
        with torch.no_grad():
            ref = timed.backbone(x)
            with autocast_context('bf16', 'cpu'):
                low = timed.backbone(x)
        precision_check = dict(
            max_rel_diff=max_rel_diff(ref, low),
            compared=f'backbone outputs under bf16 autocast vs fp32, same weights, one '
                     f'{x.shape[0]}x{x.shape[1]}x{shape[0]}x{shape[1]} preprocessed input, CPU')

    # device, memory format, dtype
    timed = timed.to(device)
    memory_format = torch.channels_last if s.channels_last else torch.contiguous_format
    if s.channels_last:
        timed = timed.to(memory_format=torch.channels_last)
    images = (f'{batch_size} real test image(s) per iteration (a different batch each time, '
              'decoded and resized before timing)' if real else
              f'{batch_size} uint8 {shape[0]}x{shape[1]} image(s)')
    export_check = None
    workdir = None
    if s.backend != 'pytorch':
        # here, not at the top: analysis.export builds on this package's inputs module
        from ..export import load_runtime, prepare_for_export, prepare_with_nms
        from ..quantize import export_graph
        from ..runtime_profile import profile_openvino
        fmt = 'onnx' if s.backend == 'onnxruntime' else 'openvino'
        if s.backbone_only:
            module = prepare_for_export(timed, backbone_only=True, deploy=False)
            exported_backbone = module.module
            exported = 'the exported backbone'
        else:  # box decoding and NMS in the graph: what test_step's post-processing does
            module = prepare_with_nms(timed, shape, deploy=False)
            exported_backbone = module.detector.backbone
            exported = ('the exported detector: backbone, neck, head, box decoding and NMS; '
                        'the normalisation before it is not in the graph')
        workdir = tempfile.TemporaryDirectory(prefix='mmlightbb-bench-')
        path = export_graph(module, timed, x, os.path.join(
            workdir.name, 'model.onnx' if fmt == 'onnx' else 'model.xml'), fmt,
            s.quantization, source)
        runtime_threads = s.threads or threads_used
        run = load_runtime(path, fmt, runtime_threads, precision)  # session creation, untimed
        with torch.no_grad():
            ref = module(x)
        export_check = dict(
            max_rel_diff=_runtime_max_rel_diff(ref, run(x.numpy())),
            fp32_max_rel_diff=(_runtime_max_rel_diff(ref, load_runtime(path, fmt)(x.numpy()))
                               if precision == 'bf16' else None),
            runtime_threads=runtime_threads,
            compared=f'{s.backend} ({precision}) vs the PyTorch '
                     f"{'backbone' if s.backbone_only else 'detections'} (fp32) on one "
                     f'{x.shape[0]}x{x.shape[1]}x{shape[0]}x{shape[1]} preprocessed input; the '
                     'exported graph is deployed, NCHW, ONNX opset 17; null: the outputs differ '
                     'in shape (another number of detections)')
        arrays = [t.contiguous().numpy() for t in xs]
        feed = itertools.cycle(arrays)
        fn = lambda: run(next(feed))  # noqa: E731
        unit = (f'{s.backend} session.run of {exported}, on a '
                f'{batch_size}x{x.shape[1]}x{shape[0]}x{shape[1]} {dtype} array already '
                f'normalised (session creation and warm-up not timed; {runtime_threads} runtime '
                'threads)')
    elif s.backbone_only:
        xins = [t.to(device).contiguous(memory_format=memory_format) for t in xs]
        if fp16:
            timed = timed.half()
            xins = [t.half() for t in xins]
        backbone, feed = timed.backbone, itertools.cycle(xins)
        if precision == 'bf16':
            def fn():
                with autocast_context('bf16', device):
                    return backbone(next(feed))
        else:
            fn = lambda: backbone(next(feed))  # noqa: E731
        unit = (f'model.backbone(x) on a {batch_size}x{x.shape[1]}x{shape[0]}x{shape[1]} '
                f'{"bfloat16 autocast, float32" if precision == "bf16" else dtype} tensor '
                f'already normalised and on {device}'
                + (f' (the preprocessed {images})' if real else ''))
    else:
        if s.channels_last:  # the preprocessor stacks NCHW-contiguous; hand the backbone NHWC
            timed.backbone.register_forward_pre_hook(
                lambda mod, args: tuple(a.contiguous(memory_format=torch.channels_last)
                                        if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                                        for a in args))
        feed = itertools.cycle([dict(b, inputs=[t.to(device) for t in b['inputs']])
                                for b in batches])

        def fn():
            with autocast_compute(timed, precision, device):  # post-processing in fp32
                return timed.test_step(dict(next(feed)))
        unit = (f'model.test_step(batch) = data_preprocessor + backbone + neck + head + '
                f'post-processing/NMS on {images} already on {device}'
                + (f' ({precision} autocast)' if precision != 'fp32' else ''))

    if s.backend != 'pytorch':  # the exported graph's layout: that of the NCHW module traced
        layouts = conv_input_layouts(exported_backbone, x)
    else:
        probe = xins[0] if s.backbone_only else x.to(device)  # as the preprocessor hands it
        with autocast_context(precision if not s.backbone_only or precision == 'bf16'
                              else 'fp32', device):
            layouts = conv_input_layouts(timed.backbone, probe)
    samples = time_fn(fn, s.iters, s.warmup, device, s.progress)
    latency, fps = summarize(samples, batch_size)
    median_s = latency['median'] / 1000.0

    peak = matmul_peak_gflops(device, s.peak_size)
    profile = None
    if s.profile and s.backend == 'openvino':  # torch.profiler would see one opaque call
        profile = profile_openvino(path, arrays[0], runtime_threads, precision, s.profile_iters)
    elif s.profile:
        profile = profile_ops(fn, s.profile_iters, device)
    if workdir is not None:
        del fn, run
        workdir.cleanup()
    achieved = 2.0 * macs * batch_size / median_s / 1e9 if s.backbone_only else None
    results = dict(
        schema_version=SCHEMA_VERSION,
        timed_unit=unit,
        settings=dict(config=source.get('config'), checkpoint=source.get('checkpoint'),
                      cfg_options=source.get('cfg_options'), mode=mode, input_hw=list(shape),
                      batch_size=batch_size, warmup=s.warmup, iters=s.iters,
                      threads=threads_used, device=device, deploy=s.deploy,
                      channels_last=s.channels_last, dtype=dtype, precision=precision,
                      precision_requested=s.precision, precision_note=precision_note,
                      backend=s.backend, real_images=real, profile=profile is not None),
        latency_ms=latency,
        fps=fps,
        params=params,
        macs=dict(backbone_per_image=macs, backbone_per_batch=macs * batch_size,
                  counter=MACS_COUNTER),
        flops=dict(backbone_per_image=2 * macs, backbone_per_batch=2 * macs * batch_size),
        achieved_gflops=achieved,
        peak=dict(matmul_gflops=peak, matmul_size=s.peak_size,
                  share=None if achieved is None else achieved / peak),
        deploy_check=deploy_check,
        precision_check=precision_check,
        export_check=export_check,
        timed_model=dict(deployed=s.deploy, backbone_batchnorm_layers=count_bn(timed.backbone),
                         memory_format='channels_last' if s.channels_last else 'contiguous',
                         backbone_layout=backbone_layout(*layouts),
                         conv_inputs_channels_last=list(layouts)),
        versions=versions(),
        hardware=dict(cpu=cpu_name(),
                      gpu=torch.cuda.get_device_name() if device == 'cuda' else None),
        real_images=images_info if real else None,
        profile=profile,
    )
    return results, timed


def _runtime_max_rel_diff(ref, outs) -> Optional[float]:
    """:func:`max_rel_diff` of a runtime's outputs (numpy arrays) to PyTorch's; None when their
    shapes differ (a box scored near the threshold or the NMS IoU kept by one side only), 0 for
    equal empty outputs (no detection on either side)."""
    refs = flatten_outputs(ref)
    outs = [torch.from_numpy(np.asarray(o)) for o in outs]
    if [tuple(t.shape) for t in refs] != [tuple(t.shape) for t in outs]:
        return None
    pairs = [(a, b) for a, b in zip(refs, outs) if a.numel()]
    return max_rel_diff([a for a, _ in pairs], [b for _, b in pairs]) if pairs else 0.0


def run_benchmark(config: str, settings: Optional[BenchmarkSettings] = None,
                  checkpoint: Optional[str] = None, cfg_options: Optional[dict] = None,
                  **overrides) -> dict:
    """Build the detector from ``config`` and :func:`benchmark` it, at ``settings.shape`` (default:
    the config's test scale) or, with ``real_images``, on images of the config's test set."""
    s = _settings(settings, overrides)
    model, cfg = build_detector(config, checkpoint, cfg_options)
    batches = info = None
    if s.real_images:
        batches, info = load_test_batches(cfg, s.warmup + s.iters, s.batch_size, config)
    elif s.shape is None:
        shape = find_test_scale(cfg)
        if shape is None:
            raise ValueError(f'{config}: no Resize scale in the test pipeline; pass --shape H W')
        s = dataclasses.replace(s, shape=shape)
    return benchmark(model, s, batches=batches, images_info=info,
                     source=dict(config=config, checkpoint=checkpoint, cfg_options=cfg_options))
