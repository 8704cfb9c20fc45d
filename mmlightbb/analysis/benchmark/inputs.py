"""What is timed: the detector built from a config and deployed, the batches it runs on, and the
checks around it (output differences, the conv inputs' memory layout)."""
import contextlib
import copy
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet.registry import DATASETS, MODELS
from mmdet.structures import DetDataSample
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...engine import load_config
from ...models.checkpoint import runner_checkpoint_loading
from ...models.layers.conv_bn import fuse_conv_norm, is_foldable
from ...models.neck_check import check_backbone_neck_channels
from .timing import Progress

__all__ = ['find_test_scale', 'build_detector', 'deploy_model', 'max_rel_diff', 'make_batch',
           'load_test_batches', 'flatten_outputs', 'in_channels_of', 'count_bn', 'conv_input_layouts',
           'backbone_layout']


def find_test_scale(cfg) -> Optional[Tuple[int, int]]:
    """(H, W) of the first ``Resize`` in the test pipeline (mmdet's scale is (w, h)), or None."""
    def walk(node):
        if isinstance(node, dict):
            if str(node.get('type', '')).split('.')[-1] == 'Resize' and 'scale' in node:
                scale = node['scale']
                if isinstance(scale, int):
                    return scale, scale
                if isinstance(scale, (tuple, list)) and len(scale) == 2:
                    return int(scale[1]), int(scale[0])
            for key in ('dataset', 'datasets', 'pipeline'):
                if key in node:
                    found = walk(node[key])
                    if found:
                        return found
        elif isinstance(node, (list, tuple)):
            for item in node:
                found = walk(item)
                if found:
                    return found
        return None

    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key, None)
        if loader:
            found = walk(loader.get('dataset', {}))
            if found:
                return found
    return walk(cfg.get('test_pipeline', None))


def build_detector(config: str, checkpoint: Optional[str] = None,
                   cfg_options: Optional[dict] = None):
    """(model in eval mode on CPU, cfg): ``MODELS.build(cfg.model)`` with the backbone/neck
    channel check, and the checkpoint loaded safely (``weights_only=True``) if one is given."""
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    check_backbone_neck_channels(model)
    if checkpoint is not None:
        with runner_checkpoint_loading(checkpoint):
            load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    return model, cfg


def deploy_model(model: nn.Module) -> nn.Module:
    """``model`` (a detector or a bare backbone) as it is timed and exported, in place, in eval
    mode: the one deploy of every tool (``tools/benchmark.py --deploy``, the comparison, the
    export, ``benchmarks/``).

    A module with its own ``switch_to_deploy()`` (the mmlightbb backbones and layers: branches
    merged, BN folded) re-parameterises itself. In every other module (mmdet's ResNet and
    CSPDarknet, necks, heads) each BatchNorm that directly follows a ``Conv2d`` among its children
    is folded into it (:func:`~mmlightbb.models.layers.fuse_conv_norm`); children are taken to be
    registered in the order the forward runs them, as mmcv's ``fuse_conv_bn`` assumes. So the
    baselines are timed with their BN folded like ours; ``benchmark`` checks the outputs.
    """
    model.eval()
    _deploy(model)
    return model


def _deploy(module: nn.Module) -> None:
    if hasattr(module, 'switch_to_deploy'):
        module.switch_to_deploy()
        return
    conv_name = None
    for name, child in list(module.named_children()):
        conv = module._modules[conv_name] if conv_name else None
        # a BN over the conv's input channels is a pre-norm (mmcv's order=('norm', 'conv', ...))
        if conv is not None and is_foldable(child) and child.num_features == conv.out_channels:
            fused, identity = fuse_conv_norm(conv, child)
            setattr(module, conv_name, fused)
            setattr(module, name, identity)
            conv_name = None
        else:
            _deploy(child)
            conv_name = name if isinstance(child, nn.Conv2d) else None


def flatten_outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flatten_outputs(o)]
    return []


def max_rel_diff(ref, out) -> float:
    """Max over outputs of ``max|ref - out| / max|ref|``."""
    refs, outs = flatten_outputs(ref), flatten_outputs(out)
    if len(refs) != len(outs) or not refs:
        raise ValueError(f'outputs differ in structure: {len(refs)} vs {len(outs)} tensors')
    worst = 0.0
    for a, b in zip(refs, outs):
        a, b = a.detach().float(), b.detach().float()
        worst = max(worst, ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item())
    return worst


def make_batch(batch_size: int, shape: Sequence[int], in_channels: int = 3, seed: int = 0,
               device: str = 'cpu') -> dict:
    """A ``test_step`` batch: random uint8 CxHxW images and DetDataSamples of that size."""
    h, w = int(shape[0]), int(shape[1])
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (in_channels, h, w), generator=gen,
                                    dtype=torch.uint8).to(device))
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                                 pad_shape=(h, w), batch_input_shape=(h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def load_test_batches(cfg, num_batches: int, batch_size: int, config: str = 'the config'
                      ) -> Tuple[List[dict], dict]:
    """(``num_batches`` test_step batches of real images, info): the first num_batches x
    batch_size samples of ``cfg.test_dataloader.dataset`` through its test pipeline, in order,
    collated as the test dataloader does (``pseudo_collate``). All decoding and resizing happens
    here, before any timing.

    Raises ValueError (naming both numbers and the fix) when the test set is smaller.
    """
    loader = cfg.get('test_dataloader', None)
    if not loader or 'dataset' not in loader:
        raise ValueError(f'--real-images: {config} has no test_dataloader.dataset')
    with contextlib.redirect_stdout(sys.stderr):  # pycocotools prints; stdout is the table's
        dataset = DATASETS.build(copy.deepcopy(loader['dataset']))
    needed, available = num_batches * batch_size, len(dataset)
    if needed > available:
        raise ValueError(
            f'--real-images needs (warmup + iters) x batch = {needed} test images but the test '
            f'set of {config} has {available}; lower --iters/--warmup/--batch-size or drop '
            '--real-images')
    bar = Progress(needed, 'loading test images (not timed)')
    samples = []
    for idx in range(needed):
        samples.append(dataset[idx])
        bar.update()
    batches = [pseudo_collate(samples[i:i + batch_size]) for i in range(0, needed, batch_size)]
    info = dict(dataset=type(dataset).__name__, test_set_size=available, images_used=needed)
    return batches, info


def in_channels_of(model) -> int:
    backbone = getattr(model, 'backbone', model)
    return int(getattr(backbone, 'in_channels', 3) or 3)


def count_bn(module: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in module.modules())


def conv_input_layouts(backbone: nn.Module, x: torch.Tensor) -> Tuple[int, int]:
    """(channels_last, counted): the layout of every conv layer's input in one untimed
    ``backbone(x)``. This is what the timed backbone really computes on, whoever chose it
    (``--channels-last``, or a backbone that turns its CPU input channels_last by itself). Inputs
    that are both layouts (1x1 maps) or neither (channel slices) are not counted."""
    layouts: List[bool] = []

    def record(module, args):
        t = args[0] if args else None
        if isinstance(t, torch.Tensor) and t.dim() == 4:
            nhwc, nchw = t.is_contiguous(memory_format=torch.channels_last), t.is_contiguous()
            if nhwc != nchw:
                layouts.append(nhwc)

    handles = [m.register_forward_pre_hook(record) for m in backbone.modules()
               if isinstance(m, nn.modules.conv._ConvNd)]
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for handle in handles:
            handle.remove()
    return sum(layouts), len(layouts)


def backbone_layout(channels_last: int, counted: int) -> str:
    """'channels_last' | 'contiguous' | 'mixed' | 'unknown' (no conv input counted)."""
    if counted == 0:
        return 'unknown'
    return {channels_last: 'mixed', counted: 'channels_last', 0: 'contiguous'}[channels_last]

