"""Bad input: every case gets an error that names what is wrong and how to fix it.

This module is the catalogue: each case below with the tests (pytest node ids) that hold its
message and behaviour. Cases already tested elsewhere are listed, not tested twice; this module
tests the rest.

* unknown ``arch`` -> lists the valid archs
    tests/test_errors.py::test_unknown_arch_lists_the_valid_archs (every backbone)
* ``out_indices`` out of range
    tests/test_backbone_contract.py::test_bad_arguments[out_indices-*] (every backbone)
* ``out_indices`` empty
    tests/test_errors.py::test_empty_out_indices
* ``frozen_stages`` out of range
    tests/test_backbone_contract.py::test_bad_arguments[frozen_stages-*] (every backbone)
* input with the wrong number of channels
    tests/test_backbone_contract.py::test_input_channels[*] (every backbone)
* 1-channel 8-bit and 16-bit PNGs -> 3-channel uint8 through the sonar configs' pipelines
    tests/test_errors.py::test_sonar_configs_load_gray_8_and_16_bit_png_as_3_channel_uint8
    tests/test_sonar.py::test_gray_png_16bit_tif_and_bmp_load_as_3_channel_uint8 (the loader)
* backbone ``out_channels`` != neck ``in_channels`` -> refused when RecoverableRunner builds the
  detector (a stock ``MODELS.build`` builds it; the check is a function on the built model)
    tests/test_errors.py::test_neck_mismatch_is_found_on_the_built_detector (YOLOXPAFPN, FPN)
    tests/test_errors.py::test_neck_mismatch_fails_in_the_recoverable_runner (mmdet's train.py
    path with runner_type, and mmlightbb's build_runner)
    tests/test_errors.py::test_neck_check_covers_channel_mapper_and_neck_lists
    tests/test_errors.py::test_test_tool_reports_bad_input_in_one_line (one line, no traceback)
* pretrained checkpoint missing, truncated, not a checkpoint (init_cfg, load_from, --resume and
  tools/test.py all read through ``mmlightbb.engine.safe_load``)
    tests/test_plugin.py::test_bad_checkpoint_files_raise_clear_errors
* pretrained checkpoint with zero matching keys
    tests/test_backbone_contract.py::test_load_errors[*] (every backbone)
* pretrained checkpoint with shape mismatches -> listed
    tests/test_backbone_contract.py::test_load_errors[*] (every backbone)
    tests/test_errors.py::test_shape_mismatches_are_listed (keys and both shapes)
* config path or ``--cfg-options`` key that does not exist
    tests/test_plugin.py::test_config_tool_errors_name_the_problem
* dataset annotation file or image folder missing
    tests/test_sonar.py::test_missing_files_name_the_path_and_how_to_get_the_data
    tests/test_configs.py::test_flat_config_without_data_fails_with_how_to_get_it
* annotation classes matching none of the config's classes
    tests/test_sonar.py::test_classes_matching_no_annotation_raise
* corrupt, unreadable or missing image: val/test stop naming it, training skips it with a warning
    tests/test_errors.py::test_unreadable_images_stop_val_and_test_naming_the_file
    tests/test_errors.py::test_training_skips_unreadable_images_with_a_warning
    tests/test_errors.py::test_test_tool_reports_bad_input_in_one_line

Non-finite loss, weights that blew up under a finite loss (tests/test_training_reliability.py)
and benchmark iterations (tests/test_benchmark.py) are tested with their implementations.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from mmlightbb.datasets.sonar import UnreadableImageError
from mmlightbb.models.backbones import (ConvNeXt, CSPConvNeXt, FasterNet, ParameterNet,
                                        RepLKNet)
from mmlightbb.models.neck_check import ChannelMismatchError, check_backbone_neck_channels

from helpers import REPO, tiny_yolox_config

BACKBONES = (ConvNeXt, CSPConvNeXt, FasterNet, ParameterNet, RepLKNet)
SONAR_DATASET_CFG = osp.join(REPO, 'configs/_base_/datasets/sonar_detection.py')
YOLOX_SONAR_CFG = osp.join(REPO, 'configs/_base_/yolox_sonar.py')


# ------------------------------------------------------------------------ backbone arguments
@pytest.mark.parametrize('cls', BACKBONES, ids=lambda c: c.__name__)
def test_unknown_arch_lists_the_valid_archs(cls):
    with pytest.raises(ValueError, match='unknown arch') as e:
        cls('no-such-arch')
    assert all(repr(name) in str(e.value) for name in cls.arch_settings)


@pytest.mark.parametrize('out_indices', [(), []])
def test_empty_out_indices(out_indices):
    with pytest.raises(ValueError, match=r'non-empty list of stage indices in 0\.\.3'):
        FasterNet('t0', out_indices=out_indices)


def test_shape_mismatches_are_listed(tmp_path):
    arch = dict(channels=(8, 16, 32, 64), depths=(1, 1, 1, 1), act_cfg=dict(type='ReLU'),
                drop_path_rate=0.)
    path = str(tmp_path / 'small.pth')
    torch.save(FasterNet(arch).state_dict(), path)
    with pytest.raises(ValueError, match='disagree') as e:
        FasterNet(dict(arch, channels=(16, 32, 64, 128))).load_pretrained(path)
    assert 'patch_embed.proj.weight: file (8, 3, 4, 4) vs model (16, 3, 4, 4)' in str(e.value)
    assert 'wrong arch?' in str(e.value)


# ------------------------------------------------------------------- backbone/neck channels
def build_detector_cfg(config, **changes):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(changes)
    init_default_scope('mmdet')
    return cfg.model


@pytest.mark.parametrize('config, changes, lists', [
    ('configs/yolox_fasternet.py', {'model.backbone.arch': 't0'},
     ('YOLOXPAFPN', '[80, 160, 320]', '[192, 384, 768]')),
    ('configs/cascade_rcnn_fasternet.py', {'model.backbone.out_indices': (1, 2, 3)},
     ('FPN', '[192, 384, 768]', '[96, 192, 384, 768]')),
], ids=['yolox', 'cascade'])
def test_neck_mismatch_is_found_on_the_built_detector(config, changes, lists):
    """Stock mmdet builds the detector (it would fail at the first forward); the check on the
    built model, which RecoverableRunner.build_model runs, names both lists and the fix."""
    from mmdet.registry import MODELS
    model_cfg = build_detector_cfg(osp.join(REPO, config), **changes)
    model = MODELS.build(model_cfg)
    with pytest.raises(ChannelMismatchError) as e:
        check_backbone_neck_channels(model)
    neck, returned, expected = lists
    msg = str(e.value)
    assert f'returns feature maps with channels {returned}' in msg
    assert f'the neck {neck} expects in_channels {expected}' in msg
    assert f'model.neck.in_channels={returned}' in msg and 'out_indices' in msg


@pytest.mark.parametrize('runner_type', ['mmdet.RecoverableRunner', None],
                         ids=['mmdet-train-runner-type', 'build-runner'])
def test_neck_mismatch_fails_in_the_recoverable_runner(tiny_coco, tmp_path, runner_type):
    """The path of mmdet's own tools/train.py (``RUNNERS.build(cfg)`` for a config that names
    ``runner_type``, as the shipped configs do through _base_/mmlightbb_runtime.py) and of
    mmlightbb's tools (``build_runner``: RecoverableRunner when the config names none); the model
    is built (and refused) before any data is read."""
    from mmengine.config import Config
    from mmengine.registry import RUNNERS

    from mmlightbb.engine import build_runner
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(tiny_yolox_config(
        tiny_coco, dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3)), [96, 192, 384]))
    cfg = Config.fromfile(str(cfg_file))
    cfg.work_dir = str(tmp_path / 'work')
    with pytest.raises(ChannelMismatchError) as e:
        if runner_type:
            cfg.runner_type = runner_type
            RUNNERS.build(cfg)
        else:
            build_runner(cfg)
    msg = str(e.value)
    assert 'channels [80, 160, 320]' in msg and 'in_channels [96, 192, 384]' in msg


def test_neck_check_covers_channel_mapper_and_neck_lists():
    from mmdet.models.necks import FPN, ChannelMapper
    backbone = FasterNet('t2', out_indices=(1, 2, 3))  # [192, 384, 768]
    holder = nn.Module()
    holder.backbone = backbone
    holder.neck = ChannelMapper([96, 192, 384], 8)  # assigning checks nothing (stock torch)
    with pytest.raises(ChannelMismatchError, match=r'ChannelMapper expects .*\[96, 192') as e:
        check_backbone_neck_channels(holder)
    assert 'model.backbone.out_indices=(0, 1, 2)' in str(e.value)  # those stages fit the neck
    holder.neck = nn.Sequential(FPN([1, 2, 3], 8, 3), nn.Identity())
    with pytest.raises(ChannelMismatchError, match=r'FPN expects in_channels \[1, 2, 3\]'):
        check_backbone_neck_channels(holder)
    holder.neck = ChannelMapper([192, 384, 768], 8)  # matching: accepted
    check_backbone_neck_channels(holder)

    neck_first = nn.Module()  # the order the modules were put in place does not matter
    neck_first.neck = FPN([1, 2, 3], 8, 3)
    neck_first.backbone = backbone
    with pytest.raises(ChannelMismatchError, match=r'FasterNet.*channels \[192, 384, 768\]'):
        check_backbone_neck_channels(neck_first)
    # a backbone that does not list its channels (mmdet's own, or a bare conv) is not judged
    plain = nn.Module()
    plain.backbone = nn.Conv2d(3, 5, 1)
    plain.neck = FPN([1, 2, 3], 8, 3)
    check_backbone_neck_channels(plain)


# ---------------------------------------------------------------------------------- images
def write_coco(root, files):
    """A one-box COCO set ``ann.json`` + ``images/`` of {name: pixel array or raw bytes}."""
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, anns = [], []
    for i, (name, content) in enumerate(files.items(), 1):
        path = osp.join(root, 'images', name)
        if isinstance(content, bytes):
            with open(path, 'wb') as f:
                f.write(content)
        elif content is not None:  # None: listed in the json, absent on disk
            assert cv2.imwrite(path, content)
        images.append(dict(id=i, file_name=name, width=64, height=64))
        anns.append(dict(id=i, image_id=i, category_id=1, bbox=[8, 8, 20, 20], area=400,
                         iscrowd=0))
    with open(osp.join(root, 'ann.json'), 'w') as f:
        json.dump(dict(images=images, annotations=anns,
                       categories=[dict(id=1, name='shipwreck')]), f)


def sonar_dataset(root, pipeline, test_mode):
    from mmengine.registry import init_default_scope

    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    return DATASETS.build(dict(type='SonarDataset', data_root=str(root), ann_file='ann.json',
                               data_prefix=dict(img='images/'), test_mode=test_mode,
                               metainfo=dict(classes=('shipwreck', )), pipeline=pipeline))


def config_pipelines():
    """(name, train load steps, test pipeline) of both sonar dataset configs."""
    from mmengine.config import Config
    two_stage = Config.fromfile(SONAR_DATASET_CFG)
    yolox = Config.fromfile(YOLOX_SONAR_CFG)
    return [('cascade', two_stage.train_dataloader.dataset.pipeline,
             two_stage.test_dataloader.dataset.pipeline),
            ('yolox', yolox.train_dataloader.dataset.dataset.pipeline,
             yolox.test_dataloader.dataset.pipeline)]


@pytest.fixture(scope='module')
def png_bytes():
    ok, buf = cv2.imencode('.png', np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    return buf.tobytes()


def test_sonar_configs_load_gray_8_and_16_bit_png_as_3_channel_uint8(tmp_path):
    from mmdet.registry import TRANSFORMS
    gray = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    twelve_bit = gray.astype(np.uint16) * 16  # 12-bit samples in a 16-bit PNG
    write_coco(tmp_path, {'gray8.png': gray, 'gray16.png': twelve_bit})
    assert cv2.imread(str(tmp_path / 'images/gray16.png'), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    for name, train_pipeline, test_pipeline in config_pipelines():
        for pipeline, test_mode in ((train_pipeline, False), (test_pipeline, True)):
            assert pipeline[0]['type'] == 'LoadSonarImageFromFile', name
            # skip unreadable images in training only
            assert pipeline[0].get('ignore_empty', False) is not test_mode, name
            loader = TRANSFORMS.build(pipeline[0])
            for file in ('gray8.png', 'gray16.png'):  # both depths at full contrast
                img = loader(dict(img_path=str(tmp_path / 'images' / file)))['img']
                assert img.shape == (64, 64, 3) and img.dtype == np.uint8, (name, file)
                assert np.abs(img[..., 0].astype(int) - gray).max() <= 1, (name, file)
            ds = sonar_dataset(tmp_path, pipeline, test_mode)
            for i in range(len(ds)):  # and the whole pipeline takes them
                item = ds[i]
                img = item['inputs'] if 'inputs' in item else item['img']
                assert img.dtype in (np.uint8, torch.uint8) and 3 in img.shape[::2], name


def test_unreadable_images_stop_val_and_test_naming_the_file(tmp_path, png_bytes):
    write_coco(tmp_path, {'good.png': png_bytes, 'half.png': png_bytes[:len(png_bytes) // 2],
                          'empty.png': b'', 'notes.png': b'not an image', 'gone.png': None})
    (_, _, test_pipeline), = [p for p in config_pipelines() if p[0] == 'yolox']
    ds = sonar_dataset(tmp_path, test_pipeline, test_mode=True)
    assert ds[0]['inputs'].shape[0] == 3
    for i, name in enumerate(('half.png', 'empty.png', 'notes.png'), 1):
        with pytest.raises(UnreadableImageError, match='cannot decode image') as e:
            ds[i]
        assert osp.join('images', name) in str(e.value) and 'wrong mAP' in str(e.value)
    with pytest.raises(FileNotFoundError, match=r'image not found: .*gone\.png'):
        ds[4]


def test_training_skips_unreadable_images_with_a_warning(tmp_path, png_bytes, monkeypatch):
    import mmlightbb.datasets.sonar as sonar
    write_coco(tmp_path, {'good.png': png_bytes, 'half.png': png_bytes[:50], 'gone.png': None})
    warnings = []
    monkeypatch.setattr(sonar, 'print_log', lambda msg, **kwargs: warnings.append(msg))
    for name, train_pipeline, _ in config_pipelines():
        warnings.clear()
        ds = sonar_dataset(tmp_path, train_pipeline, test_mode=False)
        for _ in range(3):  # each unreadable index is replaced by another (readable) image
            for i in range(3):
                item = ds[i]
                path = item['data_samples'].img_path if 'data_samples' in item else item['img_path']
                assert osp.basename(path) == 'good.png', name
        assert len(warnings) == 2, name  # once per file, not once per epoch
        assert 'half.png' in warnings[0] and '1 unreadable image(s) so far' in warnings[0]
        assert 'gone.png' in warnings[1] and '2 unreadable image(s) so far' in warnings[1]


def test_test_tool_reports_bad_input_in_one_line(tiny_coco, tmp_path, png_bytes):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    root = tmp_path / 'data'
    write_coco(root, {'good.png': png_bytes, 'bad.png': png_bytes[:100]})
    data = dict(data_root=str(root) + '/', ann_file='ann.json', img_prefix='images/')
    text = tiny_yolox_config(data, dict(type='FasterNet', arch='t0', out_indices=(1, 2, 3)),
                             [80, 160, 320], size=64)
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(text.replace("type='LoadImageFromFile'", "type='LoadSonarImageFromFile'"))
    checkpoint = str(tmp_path / 'model.pth')
    torch.save({'state_dict': MODELS.build(Config.fromfile(str(cfg_file)).model).state_dict()},
               checkpoint)

    def last_error_line(*cfg_options):
        proc = subprocess.run(
            [sys.executable, 'tools/test.py', str(cfg_file), checkpoint, '--work-dir',
             str(tmp_path / 'work'), '--cfg-options', *cfg_options],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith('error: ')
        return last

    # the image fails in a dataloader worker, as with the shipped configs (num_workers=2)
    last = last_error_line('test_dataloader.num_workers=1')
    assert 'cannot decode image' in last and osp.join('images', 'bad.png') in last
    last = last_error_line('model.neck.in_channels=[1,2,3]')
    assert 'expects in_channels [1, 2, 3]' in last and 'model.neck.in_channels=[80' in last
