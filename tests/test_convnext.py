"""ConvNeXt: published size/cost, output norms, stage layout, official/mmpretrain layouts.

The shared contract (shapes, freezing, norm_eval, with_cp, deploy, load errors) is tested for every
arch in test_backbone_contract.py.
"""
import pytest
import torch

from mmlightbb.models.backbones.convnext import ConvNeXt
from mmlightbb.analysis.complexity import count_macs, count_params

from helpers import assert_cpu_channels_last_equals_nchw

ARCHS = ('tiny', 'small', 'base')
# Classification form (backbone + LN on the pooled vector + Linear 1000) at 224x224. Published:
# official README 28M / 4.5G, 50M / 8.7G, 89M / 15.4G; mmpretrain metafile tiny 28,589,128 params.
# MACs are conv + linear multiply-accumulates (the papers' "FLOPs").
PUBLISHED = dict(tiny=(28.6e6, 4.5e9), small=(50e6, 8.7e9), base=(89e6, 15.4e9))
# the official layout at a fraction of the size, for the tests of keys and init
SMALL = dict(depths=[1, 1, 2, 1], channels=[16, 32, 64, 128])


@pytest.mark.slow
@pytest.mark.parametrize('arch', ARCHS)
def test_params_and_macs_match_published(arch):
    model = ConvNeXt(arch, num_classes=1000).eval()
    params, macs = PUBLISHED[arch]
    assert abs(count_params(model) - params) / params < 0.01
    assert abs(count_macs(model.classify, conv_linear_only=True) - macs) / macs < 0.01
    if arch == 'tiny':
        assert count_params(model) == 28_589_128  # mmpretrain metafile, exactly


def test_output_norms_follow_out_indices():
    with torch.device('meta'):
        model = ConvNeXt('tiny', out_indices=(1, 3))
        assert hasattr(model, 'norm1') and hasattr(model, 'norm3') and not hasattr(model, 'norm0')
        assert not hasattr(ConvNeXt('tiny', norm_output=False), 'norm0')
        # the official classifier has no output norms
        assert not hasattr(ConvNeXt('tiny', num_classes=10), 'norm0')


def test_frozen_modules_layout():
    # stage k owns the down-sampling that leads into it; stage 1 follows the stem directly
    with torch.device('meta'):
        model = ConvNeXt('tiny')
    assert model.frozen_modules(0) == [model.downsample_layers[0]]
    assert model.frozen_modules(1) == [model.stages[0]]
    assert model.frozen_modules(2) == [model.downsample_layers[1], model.stages[1]]


@pytest.mark.parametrize('arch', ARCHS)
def test_deploy_is_a_no_op(arch):
    # no BatchNorm to fold: the keys stay (outputs: test_backbone_contract.py)
    with torch.device('meta'):
        model = ConvNeXt(arch)
    keys = list(model.state_dict())
    assert list(model.switch_to_deploy().state_dict()) == keys


def test_official_init():
    model = ConvNeXt(SMALL, num_classes=1000)
    model.init_weights()
    weight = model.stages[2][0].pwconv1.weight
    assert abs(weight.std().item() - 0.02) < 0.002 and weight.abs().max() <= 2
    assert model.downsample_layers[0][0].bias.abs().sum() == 0
    assert model.head.bias.abs().sum() == 0


# ------------------------------------------------------------------------ checkpoint layouts
def _randomized(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


def _load(model, tmp_path, obj):
    path = str(tmp_path / 'ckpt.pth')
    torch.save(obj, path)
    return model.load_pretrained(path)


def _assert_loaded(model, source):
    own = model.state_dict()
    for key, value in source.items():
        if key in own:
            torch.testing.assert_close(own[key], value, rtol=0, atol=0)


def test_load_official_classification_checkpoint(tmp_path):
    source = _randomized(ConvNeXt(SMALL, num_classes=1000)).state_dict()
    # official classifier -> classification form: everything, nothing left over
    model = ConvNeXt(SMALL, num_classes=1000)
    report = _load(model, tmp_path, {'model': source})
    assert report['missing'] == [] and report['unexpected'] == []
    _assert_loaded(model, source)
    # ... -> detection form through init_cfg: the official detection backbone loads it with
    # strict=False, so `norm`/`head` are left over and the output norms stay fresh
    path = str(tmp_path / 'official.pth')
    torch.save({'model': source}, path)
    model = ConvNeXt(SMALL, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    _assert_loaded(model, source)
    report = model.load_pretrained(path)
    assert sorted(report['unexpected']) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert sorted(report['missing']) == sorted(f'norm{i}.{p}' for i in range(4)
                                                for p in ('weight', 'bias'))


def test_load_official_detection_checkpoint(tmp_path):
    source = _randomized(ConvNeXt(SMALL)).state_dict()
    detector = {'state_dict': {**{f'backbone.{k}': v for k, v in source.items()},
                               'neck.lateral_convs.0.conv.weight': torch.zeros(256, 16, 1, 1)}}
    model = ConvNeXt(SMALL, out_indices=(1, 2, 3))
    report = _load(model, tmp_path, detector)
    _assert_loaded(model, source)
    assert report['missing'] == []
    assert sorted(report['unexpected']) == ['norm0.bias', 'norm0.weight']


def _to_mmpretrain(key):
    key = key.replace('.dwconv.', '.depthwise_conv.').replace('.pwconv', '.pointwise_conv')
    if key.startswith('head.'):
        return 'head.fc.' + key[len('head.'):]
    if key.startswith('norm.'):
        key = 'norm3.' + key[len('norm.'):]
    return 'backbone.' + key


def test_load_mmpretrain_checkpoint(tmp_path):
    source = _randomized(ConvNeXt(SMALL, num_classes=1000)).state_dict()
    mmpretrain = {'state_dict': {_to_mmpretrain(k): v for k, v in source.items()}}
    assert 'backbone.stages.0.0.depthwise_conv.weight' in mmpretrain['state_dict']
    # detection form (mmdet's use of mmpretrain.ConvNeXt): norm3 is the stride-32 output norm
    model = ConvNeXt(SMALL)
    report = _load(model, tmp_path, mmpretrain)
    _assert_loaded(model, {k: v for k, v in source.items() if not k.startswith(('norm.', 'head'))})
    torch.testing.assert_close(model.norm3.weight, source['norm.weight'])
    assert sorted(report['unexpected']) == ['head.bias', 'head.weight']  # the classifier's
    assert sorted(report['missing']) == sorted(f'norm{i}.{p}' for i in range(3)
                                                for p in ('weight', 'bias'))
    # classification form: norm3 -> norm, head.fc -> head
    model = ConvNeXt(SMALL, num_classes=1000)
    report = _load(model, tmp_path, mmpretrain)
    torch.testing.assert_close(model.norm.weight, source['norm.weight'])
    torch.testing.assert_close(model.head.weight, source['head.weight'])
    assert report['unexpected'] == [] and report['missing'] == []


def test_bad_kwargs():
    with pytest.raises(ValueError, match='4 depths'):
        ConvNeXt(dict(depths=[3, 3, 9], channels=[96, 192, 384]))
    with pytest.raises(ValueError, match='layer_scale_init_value'):
        ConvNeXt('tiny', layer_scale_init_value=-1)


def test_cpu_inference_runs_channels_last_and_equals_nchw():
    model = ConvNeXt(dict(depths=[1, 1, 2, 1], channels=[16, 32, 64, 128])).eval()
    assert_cpu_channels_last_equals_nchw(model, model.downsample_layers[0])
