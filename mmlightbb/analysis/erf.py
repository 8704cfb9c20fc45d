"""Effective receptive fields (ERF), measured as in the RepLKNet paper (Ding et al., CVPR 2022,
appendix and the official ``erf/`` scripts; this is an independent implementation).

For each image (resized to ``size`` x ``size``): the sum over channels of the centre pixel of one
backbone output map is back-propagated to the input; the gradient's absolute value (or, with
``mode='relu'``, its positive part as in the official script, which also applies a ReLU to the
centre pixel) is summed over the input channels. The maps are averaged over the images (images
whose map is not finite are skipped, as the official script does).

For display and for the area ratios the averaged map ``A`` is normalised as the paper does:
``log10(A + 1) / max(log10(A + 1))``. The *high-contribution area ratio* at threshold ``t`` is
the area of the smallest centred square (side 3, 5, 7, ...) whose share of the normalised map's
total exceeds ``t``, divided by the input area (``None`` when no square inside the input does).
"""
import logging
import os
import os.path as osp
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
from mmengine.logging import MMLogger
from torch import nn

from ..datasets import make_sonar_dataset
from ..models.layers import LayerNorm2d, randomize_bn_stats
from .benchmark import build_detector

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
# ImageNet mean/std in RGB order, the fall-back normalisation of a bare backbone
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


# ------------------------------------------------------------------------------------ maps
def _select_output(out, stage: int) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        maps = [out]
    elif isinstance(out, (list, tuple)):
        maps = list(out)
    else:
        raise TypeError(f'ERF: the model returned {type(out).__name__}; expected a tensor or a '
                        'tuple of N x C x H x W maps')
    if not -len(maps) <= stage < len(maps):
        raise ValueError(f'ERF: --stage {stage} is out of range: the backbone returns {len(maps)} '
                         f'maps (indices 0..{len(maps) - 1}, or -1 for the last)')
    selected = maps[stage]
    if selected.dim() != 4:
        raise ValueError(f'ERF: output {stage} has shape {tuple(selected.shape)}, not '
                         'N x C x H x W')
    return selected


def input_gradient_map(model: nn.Module, image: torch.Tensor, stage: int = -1,
                       mode: str = 'abs') -> np.ndarray:
    """H x W contribution map of one normalised 1 x C x H x W ``image`` (see the module doc)."""
    if mode not in ('abs', 'relu'):
        raise ValueError(f"ERF: mode must be 'abs' or 'relu' (the official script), got {mode!r}")
    x = image.detach().clone().float().requires_grad_(True)
    with torch.enable_grad():
        out = _select_output(model(x), stage)
        centre = out[:, :, out.shape[2] // 2, out.shape[3] // 2]
        if mode == 'relu':
            centre = torch.relu(centre)
        grad, = torch.autograd.grad(centre.sum(), x)
    grad = grad.abs() if mode == 'abs' else torch.relu(grad)
    return grad.sum((0, 1)).double().cpu().numpy()


def erf_map(model: nn.Module, images: Iterable[torch.Tensor], stage: int = -1,
            mode: str = 'abs') -> Tuple[np.ndarray, int]:
    """(mean contribution map over ``images``, number of images used). ``model`` is put in eval
    mode (fixed BN, no drop-path) and its parameters are not differentiated."""
    model.eval()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    total, count = None, 0
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for image in images:
            grad_map = input_gradient_map(model, image, stage, mode)
            if not np.isfinite(grad_map).all():
                continue
            total = grad_map if total is None else total + grad_map
            count += 1
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    if count == 0:
        raise ValueError('ERF: no image gave a finite gradient map (or no images were given)')
    if not (total > 0).any():
        raise ValueError('ERF: the gradient is zero everywhere (e.g. the chosen output ends in a '
                         'norm whose channel sum is constant, such as a fresh LayerNorm); try '
                         "mode 'relu' (--mode relu) or trained weights")
    return total / count, count


def normalize_erf(erf: np.ndarray) -> np.ndarray:
    """The paper's display normalisation: ``log10(x + 1)`` rescaled to a maximum of 1."""
    data = np.log10(np.asarray(erf, dtype=np.float64) + 1)
    peak = data.max()
    return data / peak if peak > 0 else data


def high_contribution_area(data: np.ndarray, thresh: float) -> Optional[Tuple[int, float]]:
    """(side, area ratio) of the smallest centred square holding more than ``thresh`` of the
    total of ``data`` (the official ``get_rectangle``: sides 3, 5, ...), or None."""
    h, w = data.shape
    total = float(np.sum(data))
    if total <= 0:
        return None
    for i in range(1, min(h, w) // 2 + 1):
        part = float(np.sum(data[max(h // 2 - i, 0):h // 2 + 1 + i,
                                 max(w // 2 - i, 0):w // 2 + 1 + i]))
        if part / total > thresh:
            side = 2 * i + 1
            return side, min(side, h) * min(side, w) / (h * w)
    return None


def area_ratios(erf: np.ndarray, thresholds: Sequence[float] = THRESHOLDS,
                normalize: bool = True) -> Dict[float, Optional[float]]:
    """{threshold: high-contribution area ratio} of a raw ERF map (normalised first, as the paper
    does, unless ``normalize=False``)."""
    data = normalize_erf(erf) if normalize else np.asarray(erf, dtype=np.float64)
    result = {}
    for t in thresholds:
        found = high_contribution_area(data, t)
        result[t] = None if found is None else found[1]
    return result


def center_of_mass(erf: np.ndarray) -> Tuple[float, float]:
    """(row, column) of the map's centre of mass, as fractions of its height and width (the centre
    of the input is about (0.5, 0.5))."""
    data = np.asarray(erf, dtype=np.float64)
    total = data.sum()
    if total <= 0:
        raise ValueError('ERF: the map is all zero')
    h, w = data.shape
    rows = (data.sum(1) * (np.arange(h) + 0.5)).sum() / total / h
    cols = (data.sum(0) * (np.arange(w) + 0.5)).sum() / total / w
    return float(rows), float(cols)


# ---------------------------------------------------------------------------------- images
def list_images(folder: str) -> List[str]:
    """Image files in ``folder`` (recursively), sorted."""
    found = []
    for root, _, files in os.walk(folder):
        found += [osp.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def load_images(paths: Sequence[str], size: int, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD, bgr_to_rgb: bool = True
                ) -> Iterator[torch.Tensor]:
    """Yield each image as a normalised 1 x 3 x size x size float tensor (read as 3-channel BGR,
    resized bicubically like the official script, then ``(x - mean) / std`` in the channel order
    the model expects)."""
    mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
    for path in paths:
        img = mmcv.imread(path, flag='color')
        if img is None:
            raise ValueError(f'ERF: cannot read image {path}')
        img = mmcv.imresize(img, (size, size), interpolation='bicubic')
        if bgr_to_rgb:
            img = img[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        yield (x - mean_t) / std_t


def sonar_images(out_dir: str, num_images: int, size: int, seed: int = 0) -> List[str]:
    """Make ``num_images`` synthetic sonar images of ``size`` px in ``out_dir`` (the 'val' split of
    :func:`mmlightbb.datasets.make_sonar_dataset`) and return their paths."""
    # the generator needs an even size >= 64; load_images resizes to the requested size anyway
    size = max(64, size + size % 2)
    make_sonar_dataset(out_dir, num_train=0, num_val=num_images, size=size, seed=seed)
    return list_images(osp.join(out_dir, 'images'))[:num_images]


# ------------------------------------------------------------------------------- detectors
def preprocessor_normalization(model: nn.Module) -> Tuple[List[float], List[float], bool]:
    """(mean, std, bgr_to_rgb) of a detector's data preprocessor: 0 and 1 when it does not
    normalise (e.g. YOLOX's raw 0-255 input), ImageNet's when there is none."""
    pre = getattr(model, 'data_preprocessor', None)
    if pre is None:
        return list(IMAGENET_MEAN), list(IMAGENET_STD), True
    bgr_to_rgb = bool(getattr(pre, '_channel_conversion', False))
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    if not getattr(pre, '_enable_normalize', True) or mean is None or std is None:
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], bgr_to_rgb
    return mean.flatten().tolist(), std.flatten().tolist(), bgr_to_rgb


def backbone_for_erf(config: str, checkpoint: Optional[str] = None, pretrained: bool = False,
                     seed: int = 0) -> Tuple[nn.Module, Tuple[List[float], List[float], bool]]:
    """(backbone of the config's detector in eval mode, its input normalisation).

    With ``checkpoint``: the trained weights. Otherwise random initialisation (the backbone's own
    ``init_weights`` with its ``Pretrained`` init_cfg removed, under ``seed``) with random BN
    statistics and random norm affines (:func:`randomize_bn_stats`,
    :func:`randomize_norm_affine`: fresh norms are the identity or have a constant channel sum),
    or with ``pretrained`` the config's ``init_cfg`` (e.g. ImageNet weights, downloaded once).
    """
    torch.manual_seed(seed)
    model, _ = build_detector(config, checkpoint)
    backbone = model.backbone
    if checkpoint is None:
        if not pretrained:
            backbone.init_cfg = None
        if hasattr(backbone, 'init_weights'):
            _quiet_init_weights(backbone)
        if not pretrained:
            with torch.no_grad():
                randomize_bn_stats(backbone, seed)
                randomize_norm_affine(backbone, seed)
    return backbone.eval(), preprocessor_normalization(model)


def randomize_norm_affine(model: nn.Module, seed: int = 0) -> None:
    """Give every LayerNorm / GroupNorm (incl. ``LayerNorm2d``) a random affine, as
    :func:`randomize_bn_stats` does for BNs. A fresh output LayerNorm has weight 1 and bias 0, so
    the sum over channels of its output is 0 whatever the input and the ERF would be all zero."""
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm, LayerNorm2d)):
            weight, bias = getattr(m, 'weight', None), getattr(m, 'bias', None)
            if isinstance(weight, torch.Tensor):
                weight.copy_(torch.rand(weight.shape, generator=gen) * 0.5 + 0.75)
            if isinstance(bias, torch.Tensor):
                bias.copy_(torch.randn(bias.shape, generator=gen) * 0.1)


def _quiet_init_weights(module: nn.Module) -> None:
    """``init_weights`` without mmengine's per-parameter initialisation report."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        module.init_weights()
    finally:
        logger.setLevel(level)


# -------------------------------------------------------------------------------- figures
def plot_erf(data: np.ndarray, path: str, title: Optional[str] = None) -> str:
    """Save one normalised ERF map as a heatmap PNG."""
    return plot_erf_grid({title or '': data}, path)


def plot_erf_grid(maps: Dict[str, np.ndarray], path: str, cmap: str = 'RdYlGn') -> str:
    """Save normalised ERF maps side by side (one panel each, a shared [0, 1] colour scale)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 1.0, 3.8), squeeze=False,
                             constrained_layout=True)
    image = None
    for ax, (name, data) in zip(axes[0], maps.items()):
        image = ax.imshow(data, cmap=cmap, vmin=0, vmax=1, interpolation='nearest')
        ax.set_xticks([])
        ax.set_yticks([])
        if name:
            ax.set_title(name, fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.01,
                 label='log10(contribution + 1), normalised')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_ratios(name: str, ratios: Dict[float, Optional[float]]) -> str:
    cells = ', '.join(f'{t:g}: {"n/a" if r is None else f"{r:.4f}"}' for t, r in ratios.items())
    return f'{name}: high-contribution area ratio {{{cells}}}'


# ------------------------------------------------------------------------------------- run
def run_erf(configs: Sequence[str], checkpoints: Optional[Sequence[Optional[str]]] = None,
            images: Optional[str] = None, num_images: int = 50, size: int = 1024,
            out_dir: str = 'work_dirs/erf', stage: int = -1, mode: str = 'abs',
            pretrained: bool = False, seed: int = 0, log=print) -> Dict[str, dict]:
    """ERF of each config's backbone on the same images; writes ``<name>.png``, ``<name>.npy``
    (the raw mean map) and ``erf.png`` (side by side) to ``out_dir``. Returns dict(figure, images,
    backbones={name: dict(ratios, center, num_images, map_shape, output_shape, png, npy,
    weights)})."""
    if num_images < 1 or size < 8:
        raise ValueError(f'ERF: need num_images >= 1 and size >= 8, got {num_images}, {size}')
    checkpoints = list(checkpoints) if checkpoints else [None] * len(configs)
    if len(checkpoints) != len(configs):
        raise ValueError(f'ERF: {len(checkpoints)} checkpoints for {len(configs)} configs; give '
                         'one per config (or none for random initialisation)')
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='erf-sonar-') as tmp:
        if images is None:
            paths = sonar_images(osp.join(tmp, 'sonar'), num_images, size, seed)
            source = f'{len(paths)} synthetic sonar images'
        else:
            if not osp.isdir(images):
                raise ValueError(f'ERF: --images {images!r} is not a folder')
            paths = list_images(images)[:num_images]
            if not paths:
                raise ValueError(f'ERF: no images ({"/".join(IMAGE_EXTENSIONS)}) in {images}')
            source = f'{len(paths)} images from {images}'
        results, normalised = {}, {}
        names = _unique_names(configs)
        for name, config, ckpt in zip(names, configs, checkpoints):
            backbone, (mean, std, bgr_to_rgb) = backbone_for_erf(config, ckpt, pretrained, seed)
            with torch.no_grad():
                probe = _select_output(backbone(torch.zeros(1, 3, size, size)), stage)
            raw, used = erf_map(backbone, load_images(paths, size, mean, std, bgr_to_rgb),
                                stage, mode)
            data = normalize_erf(raw)
            ratios = area_ratios(raw)
            png = plot_erf(data, osp.join(out_dir, f'{name}.png'), name)
            npy = osp.join(out_dir, f'{name}.npy')
            np.save(npy, raw)
            weights = 'random init' if ckpt is None and not pretrained else (ckpt or 'init_cfg')
            label = f'{name}\n({weights}, out {stage}: {probe.shape[2]}x{probe.shape[3]})'
            normalised[label] = data
            results[name] = dict(ratios=ratios, center=center_of_mass(raw), num_images=used,
                                 map_shape=list(raw.shape), output_shape=list(probe.shape),
                                 png=png, npy=npy, weights=weights)
            log(format_ratios(name, ratios) + f'  [{used} of {source}, {size}x{size}, '
                f'output {stage} {probe.shape[2]}x{probe.shape[3]}, {weights}]')
            del backbone
    figure = plot_erf_grid(normalised, osp.join(out_dir, 'erf.png'))
    log(f'ERF maps: {", ".join(r["png"] for r in results.values())}; side by side: {figure}')
    return dict(backbones=results, figure=figure, images=source)


def _unique_names(configs: Sequence[str]) -> List[str]:
    names = []
    for config in configs:
        base = osp.splitext(osp.basename(config))[0]
        name, k = base, 2
        while name in names:
            name, k = f'{base}_{k}', k + 1
        names.append(name)
    return names
