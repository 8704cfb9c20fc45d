"""Effective receptive fields (mmlightbb/analysis/erf.py, tools/erf.py)."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mmlightbb.analysis import erf
from mmlightbb.models.backbones import RepLKNet
from mmlightbb.models.layers import randomize_bn_stats

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIZE = 64


def conv_stack(kernel: int, layers: int = 3, channels: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    mods = [nn.Conv2d(3, channels, kernel, padding=kernel // 2)]
    for _ in range(layers - 1):
        mods += [nn.ReLU(), nn.Conv2d(channels, channels, kernel, padding=kernel // 2)]
    return nn.Sequential(*mods).eval()


def random_images(num: int = 2, size: int = SIZE, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, size, size, generator=gen) for _ in range(num)]


def test_map_is_centred_and_zero_outside_the_theoretical_receptive_field():
    raw, used = erf.erf_map(conv_stack(3), random_images())
    assert used == 2 and raw.shape == (SIZE, SIZE)
    row, col = erf.center_of_mass(raw)
    assert abs(row - 0.5) < 0.03 and abs(col - 0.5) < 0.03
    # 3 layers of 3x3: a 7x7 receptive field around the centre pixel (32, 32)
    nonzero = np.argwhere(raw > 0)
    assert nonzero.min(0).tolist() == [29, 29] and nonzero.max(0).tolist() == [35, 35]


def test_area_ratios_rise_with_the_threshold():
    raw, _ = erf.erf_map(conv_stack(5), random_images())
    ratios = erf.area_ratios(raw)
    assert list(ratios) == [0.2, 0.3, 0.5, 0.99]
    values = list(ratios.values())
    assert all(v is not None for v in values)
    assert values == sorted(values) and values[0] < values[-1]
    # 3 layers of 5x5: everything lies in the central 13x13 square
    assert ratios[0.99] <= 13 * 13 / SIZE**2


def test_a_larger_kernel_gives_a_larger_99_percent_area():
    small = erf.area_ratios(erf.erf_map(conv_stack(3), random_images())[0])
    large = erf.area_ratios(erf.erf_map(conv_stack(9), random_images())[0])
    assert large[0.99] > small[0.99]
    assert large[0.5] > small[0.5]


def test_the_official_relu_mode_and_bad_arguments():
    raw_relu, _ = erf.erf_map(conv_stack(3), random_images(1), mode='relu')
    raw_abs, _ = erf.erf_map(conv_stack(3), random_images(1), mode='abs')
    assert (raw_relu >= 0).all() and (raw_abs >= 0).all()
    assert not np.allclose(raw_relu, raw_abs)
    with pytest.raises(ValueError, match='mode'):
        erf.erf_map(conv_stack(3), random_images(1), mode='square')
    with pytest.raises(ValueError, match='stage 4 is out of range'):
        erf.erf_map(conv_stack(3), random_images(1), stage=4)
    with pytest.raises(ValueError, match='no image'):
        erf.erf_map(conv_stack(3), [])


def test_normalisation_and_square_search_follow_the_paper():
    data = np.zeros((9, 9))
    data[4, 4] = 9.0
    norm = erf.normalize_erf(data)
    assert norm.max() == 1.0 and norm[4, 4] == 1.0 and norm.sum() == 1.0
    # the smallest square the official search tries is 3x3
    assert erf.high_contribution_area(norm, 0.5) == (3, 9 / 81)
    assert erf.high_contribution_area(np.zeros((9, 9)), 0.5) is None


def test_erf_leaves_the_models_parameters_as_they_were():
    model = conv_stack(3)
    model[0].weight.requires_grad_(False)
    erf.erf_map(model, random_images(1))
    assert [p.requires_grad for p in model.parameters()] == [False] + [True] * 5
    assert all(p.grad is None for p in model.parameters())


def _tiny_replknet(kernels):
    torch.manual_seed(0)
    model = RepLKNet(arch=dict(large_kernel_sizes=kernels, depths=[1, 1, 1, 1],
                               channels=[8, 8, 8, 8], small_kernel=None, dw_ratio=1.0),
                     out_indices=(1, ), drop_path_rate=0.).eval()
    with torch.no_grad():
        randomize_bn_stats(model)
    return model


def test_real_backbone_large_kernels_widen_the_erf():
    # RepLKNet at stride 8 on 96 px: 13x13 kernels vs the same network with 3x3 kernels
    images = random_images(2, 96)
    small = erf.area_ratios(erf.erf_map(_tiny_replknet([3, 3, 3, 3]), images)[0])
    large = erf.area_ratios(erf.erf_map(_tiny_replknet([13, 13, 13, 13]), images)[0])
    assert large[0.99] > small[0.99]
    assert large[0.5] > small[0.5]


def test_images_from_a_folder_are_normalised_and_resized(tmp_path):
    paths = erf.sonar_images(str(tmp_path / 'sonar'), 2, 64)
    assert len(paths) == 2
    x = list(erf.load_images(paths, 32))
    assert [t.shape for t in x] == [torch.Size([1, 3, 32, 32])] * 2
    assert x[0].abs().max() < 3  # (x - ImageNet mean) / std of 8-bit images
    assert erf.list_images(str(tmp_path)) == sorted(paths)


def test_plots(tmp_path):
    data = erf.normalize_erf(np.random.default_rng(0).random((16, 16)))
    path = erf.plot_erf_grid({'a': data, 'b': data}, str(tmp_path / 'x' / 'grid.png'))
    assert osp.getsize(path) > 1000


def test_cli_runs_on_a_tiny_config(tmp_path):
    out = tmp_path / 'erf'
    config = osp.join(ROOT, 'configs', 'yolox_fasternet_t0_tiny.py')
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'erf.py'), config, '--num-images', '2',
         '--size', '64', '--out-dir', str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'yolox_fasternet_t0_tiny: high-contribution area ratio {0.2:' in proc.stdout
    assert '2 of 2 synthetic sonar images, 64x64' in proc.stdout
    assert sorted(os.listdir(out)) == ['erf.png', 'yolox_fasternet_t0_tiny.npy',
                                       'yolox_fasternet_t0_tiny.png']
    assert np.load(out / 'yolox_fasternet_t0_tiny.npy').shape == (64, 64)


def test_cli_refuses_a_missing_image_folder(tmp_path):
    config = osp.join(ROOT, 'configs', 'yolox_fasternet_t0_tiny.py')
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'erf.py'), config, '--images',
         str(tmp_path / 'nope'), '--size', '64', '--out-dir', str(tmp_path / 'o')],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith('ERF: --images')


def test_a_fresh_output_layernorm_hides_the_erf_and_random_affines_fix_it():
    from mmlightbb.models.layers import LayerNorm2d
    model = nn.Sequential(conv_stack(3), LayerNorm2d(4)).eval()
    before = erf.erf_map(model, random_images(1))[0].max()
    with torch.no_grad():
        erf.randomize_norm_affine(model)
    after = erf.erf_map(model, random_images(1))[0].max()
    assert before < 1e-5 < 1e-2 < after  # rounding noise vs a real map


def test_an_all_zero_map_is_refused():
    model = conv_stack(3)
    with torch.no_grad():
        model[-1].weight.zero_()
    with pytest.raises(ValueError, match='zero everywhere'):
        erf.erf_map(model, random_images(1))


def test_input_normalisation_follows_the_data_preprocessor():
    from mmdet.models.data_preprocessors import DetDataPreprocessor
    model = nn.Module()
    assert erf.preprocessor_normalization(model) == (list(erf.IMAGENET_MEAN),
                                                     list(erf.IMAGENET_STD), True)
    model.data_preprocessor = DetDataPreprocessor(mean=[1, 2, 3], std=[4, 5, 6], bgr_to_rgb=True)
    assert erf.preprocessor_normalization(model) == ([1, 2, 3], [4, 5, 6], True)
    model.data_preprocessor = DetDataPreprocessor()  # YOLOX: raw 0-255 BGR
    assert erf.preprocessor_normalization(model) == ([0, 0, 0], [1, 1, 1], False)
