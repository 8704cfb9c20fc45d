"""ConvNeXt: published size/cost, shapes, freezing, cp, deploy, official/mmpretrain layouts."""
import functools

import pytest
import torch
from backbone_utils import (assert_cpu_channels_last_equals_nchw, assert_deploy_equal,
                            assert_frozen, count_macs, count_params)

from mmlightbb.models.backbones.convnext import ConvNeXt

ARCHS = ('tiny', 'small', 'base')
# Classification form (backbone + LN on the pooled vector + Linear 1000) at 224x224. Published:
# official README 28M / 4.5G, 50M / 8.7G, 89M / 15.4G; mmpretrain metafile tiny 28,589,128 params.
# MACs are conv + linear multiply-accumulates (the papers' "FLOPs").
PUBLISHED = dict(tiny=(28.6e6, 4.5e9), small=(50e6, 8.7e9), base=(89e6, 15.4e9))


@functools.lru_cache(maxsize=None)
def detector(arch):
    """One shared detection-form model per arch for the tests that do not change weights."""
    return ConvNeXt(arch).eval()


def _out_size(size, index):
    size //= 4  # 4x4/s4 stem, then a 2x2/s2 conv per stage: floor at every step
    for _ in range(index):
        size //= 2
    return size


@pytest.mark.parametrize('arch', ARCHS)
def test_params_and_macs_match_published(arch):
    model = ConvNeXt(arch, num_classes=1000).eval()
    params, macs = PUBLISHED[arch]
    assert abs(count_params(model) - params) / params < 0.01
    assert abs(count_macs(model.classify, conv_linear_only=True) - macs) / macs < 0.01
    if arch == 'tiny':
        assert count_params(model) == 28_589_128  # mmpretrain metafile, exactly


@pytest.mark.parametrize('arch, out_indices', [('tiny', (0, 1, 2, 3)), ('tiny', (1, 2, 3)),
                                               ('tiny', (3, )), ('small', (0, 1, 2, 3)),
                                               ('base', (0, 1, 2, 3))])
def test_output_shapes(arch, out_indices):
    if len(out_indices) == 4:
        model = detector(arch)
    else:
        model = ConvNeXt(arch, out_indices=out_indices).eval()
    channels = ConvNeXt.arch_settings[arch]['channels']
    assert model.out_channels == [channels[i] for i in out_indices]
    for h, w in ((64, 64), (70, 90)):
        with torch.no_grad():
            outs = model(torch.randn(1, 3, h, w))
        assert isinstance(outs, tuple) and len(outs) == len(out_indices)
        for out, i in zip(outs, out_indices):
            assert out.shape == (1, channels[i], _out_size(h, i), _out_size(w, i))


def test_output_norms_follow_out_indices():
    model = ConvNeXt('tiny', out_indices=(1, 3))
    assert hasattr(model, 'norm1') and hasattr(model, 'norm3') and not hasattr(model, 'norm0')
    assert not hasattr(ConvNeXt('tiny', norm_output=False), 'norm0')
    classifier = ConvNeXt('tiny', num_classes=10)
    assert not hasattr(classifier, 'norm0')  # the official classifier has no output norms
    assert classifier.classify(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize('frozen_stages', [0, 1, 4])
def test_frozen_stages(frozen_stages):
    model = ConvNeXt('tiny', frozen_stages=frozen_stages)
    assert_frozen(model, frozen_stages)
    if frozen_stages >= 1:  # stage 1 is stages[0]; downsample_layers[0] is the stem
        assert model.frozen_modules(1) == [model.stages[0]]
        assert model.frozen_modules(2) == [model.downsample_layers[1], model.stages[1]]


def test_forward_backward_with_cp():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(1)
        model = ConvNeXt('tiny', drop_path_rate=0.1, with_cp=with_cp).train()
        torch.manual_seed(2)
        sum(out.sum() for out in model(x)).backward()
        grads.append(model.stages[2][4].pwconv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize('arch', ARCHS)
def test_deploy_keeps_outputs(arch):
    # no BatchNorm to fold: deploy is a no-op that must keep outputs and keys
    model = detector(arch)
    keys = set(model.state_dict())
    assert_deploy_equal(model, shape=(1, 3, 64, 64))
    assert set(model.state_dict()) == keys


def test_official_init():
    model = ConvNeXt('tiny', num_classes=1000)
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
    source = _randomized(ConvNeXt('tiny', num_classes=1000)).state_dict()
    # official classifier -> classification form: everything, nothing left over
    model = ConvNeXt('tiny', num_classes=1000)
    report = _load(model, tmp_path, {'model': source})
    assert report['missing'] == [] and report['unexpected'] == []
    _assert_loaded(model, source)
    # ... -> detection form through init_cfg: the official detection backbone loads it with
    # strict=False, so `norm`/`head` are left over and the output norms stay fresh
    path = str(tmp_path / 'official.pth')
    torch.save({'model': source}, path)
    model = ConvNeXt('tiny', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    _assert_loaded(model, source)
    report = model.load_pretrained(path)
    assert sorted(report['unexpected']) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert sorted(report['missing']) == sorted(f'norm{i}.{p}' for i in range(4)
                                                for p in ('weight', 'bias'))


def test_load_official_detection_checkpoint(tmp_path):
    source = _randomized(ConvNeXt('tiny')).state_dict()
    detector = {'state_dict': {**{f'backbone.{k}': v for k, v in source.items()},
                               'neck.lateral_convs.0.conv.weight': torch.zeros(256, 96, 1, 1)}}
    model = ConvNeXt('tiny', out_indices=(1, 2, 3))
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
    source = _randomized(ConvNeXt('tiny', num_classes=1000)).state_dict()
    mmpretrain = {'state_dict': {_to_mmpretrain(k): v for k, v in source.items()}}
    assert 'backbone.stages.0.0.depthwise_conv.weight' in mmpretrain['state_dict']
    # detection form (mmdet's use of mmpretrain.ConvNeXt): norm3 is the stride-32 output norm
    model = ConvNeXt('tiny')
    report = _load(model, tmp_path, mmpretrain)
    _assert_loaded(model, {k: v for k, v in source.items() if not k.startswith(('norm.', 'head'))})
    torch.testing.assert_close(model.norm3.weight, source['norm.weight'])
    assert sorted(report['unexpected']) == ['head.bias', 'head.weight']  # the classifier's
    assert sorted(report['missing']) == sorted(f'norm{i}.{p}' for i in range(3)
                                                for p in ('weight', 'bias'))
    # classification form: norm3 -> norm, head.fc -> head
    model = ConvNeXt('tiny', num_classes=1000)
    report = _load(model, tmp_path, mmpretrain)
    torch.testing.assert_close(model.norm.weight, source['norm.weight'])
    torch.testing.assert_close(model.head.weight, source['head.weight'])
    assert report['unexpected'] == [] and report['missing'] == []


def test_load_errors(tmp_path):
    source = ConvNeXt('small').state_dict()
    with pytest.raises(ValueError, match='disagree'):
        _load(ConvNeXt('base'), tmp_path, {'model': source})
    with pytest.raises(ValueError, match='none of the'):
        _load(ConvNeXt('tiny'), tmp_path, {'model': {'foo.weight': torch.zeros(3)}})


def test_bad_kwargs():
    with pytest.raises(ValueError, match='unknown arch'):
        ConvNeXt('huge-ish')
    with pytest.raises(ValueError, match='4 depths'):
        ConvNeXt(dict(depths=[3, 3, 9], channels=[96, 192, 384]))
    with pytest.raises(ValueError, match='drop_path_rate'):
        ConvNeXt('tiny', drop_path_rate=1.0)
    with pytest.raises(ValueError, match='layer_scale_init_value'):
        ConvNeXt('tiny', layer_scale_init_value=-1)
    with pytest.raises(ValueError, match='num_classes'):
        ConvNeXt('tiny', num_classes=0)
    with pytest.raises(ValueError, match='num_classes=1000'):
        ConvNeXt('tiny').classify(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='expects input'):
        ConvNeXt('tiny')(torch.randn(1, 1, 32, 32))


def test_cpu_inference_runs_channels_last_and_equals_nchw():
    model = ConvNeXt(dict(depths=[1, 1, 2, 1], channels=[16, 32, 64, 128])).eval()
    assert_cpu_channels_last_equals_nchw(model, model.downsample_layers[0])
