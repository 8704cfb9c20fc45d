"""Inference latency of a detector or of its backbone alone, on CPU or CUDA, with what was timed.

Modules: :mod:`.settings` (what to measure, validated once), :mod:`.inputs` (the model, its
batches, deploy), :mod:`.timing` (the clock, statistics, matmul peak), :mod:`.profile` (operator
breakdown), :mod:`.core` (one run) and :mod:`.report` (table, JSON).

    python tools/benchmark.py CONFIG [--checkpoint CKPT] [--backbone-only] [--shape H W] ...

What is timed (the "timed unit"), on one synthetic batch of fixed size that is built once, outside
the clock (no dataloader, no image decoding, no host-to-device copy of a new batch per iteration):

* ``test_step`` (default): ``model.test_step(batch)`` -- the data preprocessor (uint8 -> float,
  normalisation, padding), backbone, neck, head and post-processing (box decoding + NMS). The batch
  is ``dict(inputs=[uint8 CxHxW] * B, data_samples=[DetDataSample] * B)`` of random pixels, so the
  number of boxes reaching NMS is whatever the (possibly untrained) head produces.
* ``backbone_only``: ``model.backbone(x)`` on a float tensor that the model's own data preprocessor
  normalised once, before timing.
* ``exported_detector`` (``backend`` onnxruntime / openvino without ``backbone_only``): the
  runtime's ``session.run`` of the deployed YOLOX detector exported with box decoding and NMS in
  the graph (``tools/export.py --with-nms``, batch 1) on that normalised tensor: test_step less
  the preprocessor. Other detectors (Cascade R-CNN's RoI stages) raise ``ExportError``.

Real images (``--real-images``): instead of the synthetic batch, (warmup + iters) x batch images of
the config's test set (``test_dataloader.dataset`` built from mmdet's ``DATASETS`` with its test
pipeline) are loaded, decoded, resized and packed *before* the clock starts; every iteration then
runs the same timed unit on a different batch of them (still no dataloader, decoding or resizing in
the timed region; the inputs are already on the device). The NMS then sees the boxes a real image
produces, and sizes that vary per image (keep-ratio resizing + ``pad_size_divisor``) vary per
batch; ``input_hw`` is the most frequent preprocessed (padded) batch size, MACs are counted there.

Warm-up iterations are run and discarded; each timed iteration is measured with
``time.perf_counter`` (after ``torch.cuda.synchronize()`` on CUDA only), under ``torch.no_grad()``.

MACs are mmengine FlopAnalyzer counts of the backbone's conv and linear layers (1 multiply-add = 1
MAC, as the papers' tables and docs/backbones.md); FLOPs = 2 x MACs. Achieved GFLOP/s
(backbone-only mode) = 2 x MACs x batch / median latency; it is compared with the best of a few
2048x2048 @ 2048x2048 fp32 matmuls on the same device and thread count ("peak").

``--deploy`` (:func:`deploy_model`) re-parameterises every module that has a
``switch_to_deploy()`` (the mmlightbb backbones) and folds Conv+BN pairs everywhere else (necks,
heads, and mmdet's ResNet and CSPDarknet, so the baselines are timed deployed too); the deployed
model is the one timed. Its outputs are checked against the non-deployed model on the same
input: the relative difference of one output is ``max|ref - dep| / max|ref|``, and the reported
value is the max over the backbone's outputs (``deploy_check.max_rel_diff``; the neck's outputs
in ``neck_max_rel_diff``).

``--profile`` (ShuffleNet-V2-style breakdown by operator type): after the timed iterations and the
peak measurement -- never inside them, so the latency numbers are those of an unprofiled model --
the same timed unit runs ``profile_iters`` more times under ``torch.profiler`` (CPU activity, plus
CUDA on CUDA; ``record_shapes`` for the conv rule). The time of an event is its *self* time (CPU;
on CUDA the self device time of the kernels it launched), summed over every recorded event: the
dispatcher ops (``aten::``, ``torchvision::``) and the scopes of custom autograd Functions such as
mmcv's ``NMSop`` or ``RoIAlignFunction``, whose self time is their compiled kernel. Python code
between ops is in no event, so it is in neither the categories nor the shares
(``op_ms_per_iter`` vs ``wall_ms_per_iter`` shows how much that is). Each event is charged to the
category of its *outermost* recognised ancestor (itself included), so e.g. the ``aten::copy_``
inside a conv counts as conv and the aten ops inside mmcv's ``NMSop`` as NMS:

* NMS: an event whose name has "nms" at the start of a word (``NMSop``, ``torchvision::nms``).
  Python frames are not traced (torch 2.13's Python tracer, ``with_stack=True``, intermittently
  yields undecodable event names), so the box offsetting and indexing that ``batched_nms`` does
  in Python around the kernel count as their op types (element-wise, memory/reshape, other)
* conv / depthwise conv: ``aten::conv*``/``*convolution*``; depthwise when every filter sees one
  input channel (weight shape[1] == 1, i.e. ``groups == in_channels``) and in_channels > 1;
  other grouped and transposed convs count as conv
* matmul/linear: linear, (b)mm, addmm, matmul, einsum, scaled-dot-product attention
* norm: batch/layer/group/instance/RMS norm; activation: ReLU family, GELU, SiLU, sigmoid,
  hard-swish, tanh, softmax, ...; element-wise: arithmetic, comparisons, clamp, where, fill
* memory/reshape: copies and casts, cat/stack, permute/transpose/view/reshape, contiguous,
  slicing, split, index/gather, pad, repeat, allocation (empty/zeros), nearest upsampling
* other: everything else (pooling, reductions, sort/topk, bilinear resizing, RoIAlign, ...)

JSON schema (``--out``; ``schema_version`` 1; every key always present, ``null`` when not
applicable):

* ``schema_version`` (int), ``timed_unit`` (str, what one timed iteration ran)
* ``settings``: ``config``, ``checkpoint``, ``cfg_options`` (dict or null), ``mode``
  ('test_step' | 'backbone_only' | 'exported_detector'), ``input_hw`` [H, W], ``batch_size``,
  ``warmup``, ``iters``, ``threads`` (torch.get_num_threads() during timing), ``device`` ('cpu' |
  'cuda'), ``deploy`` (bool), ``channels_last`` (bool), ``dtype`` ('float32' | 'bfloat16' |
  'float16': what ran),
  ``precision`` ('fp32' | 'bf16' | 'fp16': what ran), ``precision_requested`` (what was asked:
  bf16 runs fp32 on a CPU without native bf16), ``precision_note`` (str, why), ``backend``
  ('pytorch' | 'onnxruntime' | 'openvino'), ``real_images`` (bool), ``profile`` (bool)
* ``latency_ms``: ``median``, ``mean``, ``p90``, ``min``, ``max``, ``std`` (population, ddof=0),
  ``samples`` (list of every timed iteration) -- per batch
* ``fps``: images per second = 1000 / median_ms * batch_size
* ``params``: ``model``, ``backbone`` (counts of the timed model)
* ``macs``: ``backbone_per_image``, ``backbone_per_batch``, ``counter`` (str)
* ``flops``: ``backbone_per_image``, ``backbone_per_batch`` (= 2 x macs)
* ``achieved_gflops`` (backbone-only mode, else null)
* ``peak``: ``matmul_gflops`` (best fp32 matmul), ``matmul_size``, ``share`` (achieved / peak,
  backbone-only mode, else null)
* ``deploy_check``: null without --deploy, else ``max_rel_diff``, ``neck_max_rel_diff`` (null in
  backbone-only mode or without a neck), ``compared`` (str)
* ``precision_check``: null unless bf16 ran in PyTorch on CPU, else ``max_rel_diff`` (backbone
  outputs under bf16 autocast vs fp32, same weights and input) and ``compared`` (str)
* ``export_check``: null with backend pytorch, else ``max_rel_diff`` (the runtime's outputs at
  the precision that ran vs the exported PyTorch module in fp32; null when their shapes differ,
  i.e. another number of detections), ``fp32_max_rel_diff`` (OpenVINO bf16 only: the same file
  run in f32), ``runtime_threads`` and ``compared`` (str)
* ``timed_model``: ``deployed`` (bool), ``backbone_batchnorm_layers`` (BatchNorm modules left in
  the timed backbone), ``memory_format`` ('channels_last' | 'contiguous': what --channels-last
  did to the weights and input), ``backbone_layout`` ('channels_last' | 'contiguous' | 'mixed' |
  'unknown': the layout the backbone's conv layers really received in an untimed call, which
  mmlightbb backbones choose by themselves on CPU), ``conv_inputs_channels_last`` ([channels_last,
  counted] conv inputs; 1x1 maps and channel slices are not counted)
* ``versions``: ``python``, ``torch``, ``mmcv``, ``mmdet``, ``mmengine``, ``mmlightbb``
* ``hardware``: ``cpu`` (model name from /proc/cpuinfo), ``gpu`` (name, or null on CPU)
* ``real_images``: null without --real-images, else ``dataset`` (type), ``test_set_size``,
  ``images_used`` (= (warmup + iters) x batch_size), ``batch_input_hw`` ({"HxW": batches})
* ``profile``: null without --profile, else ``iters`` (profiled iterations), ``time`` ('self CPU
  time' | 'self CUDA time'), ``wall_ms_per_iter`` (with the profiler on), ``op_ms_per_iter`` (sum
  of the categories), ``categories`` ({category: {``ms_per_iter``, ``share``}} in the order above,
  shares of ``op_ms_per_iter`` summing to 1), ``top_ops`` (the 10 largest as ``op``, ``category``,
  ``ms_per_iter``; ``op`` is the outermost recognised op the time was charged to). With
  ``--backend openvino`` the runtime's own performance counters instead
  (:func:`~mmlightbb.analysis.runtime_profile.profile_openvino`): ``iters``, ``time``,
  ``wall_ms_per_iter``, ``op_ms_per_iter``, ``by_precision`` (kernel precision, e.g. BF16, I8,
  FP32) and ``by_type`` (OpenVINO layer type) as {name: {``ms_per_iter``, ``share``}}, and
  ``top_nodes`` (``node``, ``type``, ``kernel``, ``ms_per_iter``)

Keys were only ever added to schema 1 (``settings.precision``, ``settings.precision_requested``,
``settings.precision_note``, ``settings.backend``, ``precision_check``, ``export_check``,
``settings.real_images``, ``settings.profile``,
``real_images``, ``profile``, ``timed_model.backbone_layout``,
``timed_model.conv_inputs_channels_last``); a reader of older files should treat them as absent =
off.
"""

from .core import MACS_COUNTER, SCHEMA_VERSION, benchmark, run_benchmark
from .inputs import (backbone_layout, build_detector, conv_input_layouts, deploy_model,
                     find_test_scale, load_test_batches, make_batch, max_rel_diff)
from ...engine.precision import (PRECISIONS, autocast_compute, autocast_context, cpu_bf16_support,
                                 resolve_precision)
from .profile import PROFILE_CATEGORIES, categorize_events, op_category, profile_ops
from .report import dump_json, format_table
from .settings import BACKENDS, RUNTIME_PRECISIONS, BenchmarkSettings
from .timing import cpu_name, matmul_peak_gflops, summarize, time_fn, time_interleaved

__all__ = ['MACS_COUNTER', 'SCHEMA_VERSION', 'benchmark', 'run_benchmark', 'BenchmarkSettings',
           'BACKENDS', 'RUNTIME_PRECISIONS', 'PRECISIONS', 'autocast_compute', 'autocast_context',
           'cpu_bf16_support', 'resolve_precision',
           'backbone_layout', 'build_detector', 'conv_input_layouts', 'deploy_model',
           'find_test_scale', 'load_test_batches', 'make_batch', 'max_rel_diff',
           'PROFILE_CATEGORIES', 'categorize_events', 'op_category', 'profile_ops', 'dump_json',
           'format_table', 'cpu_name', 'matmul_peak_gflops', 'summarize', 'time_fn',
           'time_interleaved']
