"""ParameterNet / GhostNet: published size/cost, official keys, dynamic convs, taps, stage layout,
per-row drop path, deploy forms, official checkpoint layouts.

The shared contract (shapes, freezing, norm_eval, with_cp, deploy, load errors) is tested for every
arch in test_backbone_contract.py.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmlightbb.models.backbones.parameternet import (GHOSTNET_CFGS, PARAMETERNET_600M_CFGS,
                                                      ParameterNet)
from mmlightbb.models.layers.dynamic_conv import DynamicConv
from mmlightbb.analysis.benchmark import max_rel_diff
from mmlightbb.analysis.complexity import count_macs, count_params
from mmlightbb.models.layers import randomize_bn_stats

from helpers import assert_deploy_equal

ARCHS = ('600m', 'ghostnet')
# Published / recounted numbers (reference B5, C1): params of the ImageNet model, and its
# conv + linear MACs at 224 plus, for ParameterNet, the expert-aggregation matmuls
# (568.8 M conv + 19.4 M aggregation + 1.4 M linear = 0.590 G).
PUBLISHED = {'600m': (34.505e6, 0.59e9), 'ghostnet': (5.18e6, 141e6)}
NUM_KEYS = {'600m': 780, 'ghostnet': 512}  # official state_dict sizes with the head
CHANNELS = {'600m': [44, 76, 212, 1824], 'ghostnet': [24, 40, 112, 960]}
CHANNELS_BLOCKS8 = {'600m': [44, 76, 212, 304], 'ghostnet': [24, 40, 112, 160]}
# one row of blocks per stride: 1x1 (batched matmul), depthwise and stride-2 dynamic convs, SE
TINY_ROWS = (0, 1, 3, 5, 7)
TINY_DYNAMIC = dict(cfgs=[PARAMETERNET_600M_CFGS[i] for i in TINY_ROWS], width=0.5,
                    act_cfg=dict(type='HSwish'), num_experts=4)
TINY_GHOST = dict(cfgs=[GHOSTNET_CFGS[i] for i in TINY_ROWS], width=0.5,
                  act_cfg=dict(type='ReLU', inplace=True), num_experts=1)
HEAD_KEYS = {'conv_head.weight', 'conv_head.bias', 'classifier.weight', 'classifier.bias'}


def matmul_macs(model, shape=(1, 3, 224, 224)):
    """conv + linear + matmul MACs of ``model.classify`` (the papers' count; the matmul is the
    expert aggregation). A batch's per-sample kernels run as one grouped conv whose weight holds
    all B kernels, so the counter gets the true cost at any batch size."""
    return count_macs(model.classify, shape, conv_linear_only=True)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ARCHS)
def test_params_and_macs_match_published(arch):
    model = ParameterNet(arch, num_classes=1000).eval()
    pub_params, pub_macs = PUBLISHED[arch]
    params = count_params(model)
    assert abs(params - pub_params) / pub_params < 0.01, params
    assert len(model.state_dict()) == NUM_KEYS[arch]
    macs = matmul_macs(model)
    assert abs(macs - pub_macs) / pub_macs < 0.01, macs


@pytest.mark.slow
@pytest.mark.parametrize('static_kwargs', [dict(dynamic=False), dict(num_experts=1)])
def test_static_twin_has_same_convs_minus_experts(static_kwargs):
    twin = ParameterNet('600m', num_classes=1000, **static_kwargs).eval()
    assert not any(isinstance(m, DynamicConv) for m in twin.modules())
    assert abs(count_params(twin) - 19.822e6) < 1e3  # 14.7 M fewer: the extra experts
    keys = set(twin.state_dict())
    assert {'conv_stem.weight', 'blocks.9.0.conv.weight',
            'blocks.1.0.ghost1.primary_conv.0.weight', 'blocks.1.0.shortcut.2.weight'} <= keys
    if 'dynamic' in static_kwargs:
        # same conv MACs; the dynamic model adds only the aggregation matmuls and routing
        dynamic = ParameterNet('600m', num_classes=1000).eval()
        assert sum(isinstance(m, DynamicConv) for m in dynamic.modules()) == 88
        extra = (matmul_macs(dynamic, (1, 3, 32, 32))
                 - matmul_macs(twin, (1, 3, 32, 32)))
        assert 19.4e6 < extra < 19.6e6, extra


def test_official_key_names_and_shapes():
    sd = ParameterNet('600m', num_classes=1000).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes['conv_stem.routing.weight'] == (4, 3)
    assert shapes['conv_stem.routing.bias'] == (4, )
    assert shapes['conv_stem.cond_conv.weight'] == (4, 864)
    assert shapes['blocks.8.4.ghost1.primary_conv.0.routing.weight'] == (4, 304)
    assert shapes['blocks.8.4.ghost1.primary_conv.0.cond_conv.weight'] == (4, 277248)
    assert shapes['blocks.8.4.ghost1.cheap_operation.0.cond_conv.weight'] == (4, 912 * 9)
    assert shapes['blocks.3.0.conv_dw.weight'] == (136, 1, 5, 5)
    assert shapes['blocks.3.0.se.conv_reduce.weight'] == (36, 136, 1, 1)
    assert shapes['blocks.3.0.shortcut.0.cond_conv.weight'] == (4, 44 * 25)
    assert shapes['blocks.3.0.shortcut.2.cond_conv.weight'] == (4, 76 * 44)
    assert shapes['blocks.9.0.conv.cond_conv.weight'] == (4, 554496)
    assert shapes['blocks.9.0.bn1.weight'] == (1824, )
    assert shapes['conv_head.weight'] == (1280, 1824, 1, 1)
    assert shapes['classifier.weight'] == (1000, 1280)
    sd = ParameterNet('ghostnet', num_classes=1000).state_dict()
    ghost = {k: tuple(v.shape) for k, v in sd.items()}
    assert ghost['conv_stem.weight'] == (16, 3, 3, 3)
    assert ghost['blocks.6.3.shortcut.0.weight'] == (80, 1, 3, 3)
    assert ghost['blocks.8.1.se.conv_expand.weight'] == (960, 240, 1, 1)
    assert 'blocks.8.0.se.conv_reduce.weight' not in ghost
    assert ghost['blocks.9.0.conv.weight'] == (960, 160, 1, 1)


@pytest.mark.parametrize('groups,stride,gate,kernel_size', [
    (1, 1, 'sigmoid', 3), (6, 2, 'sigmoid', 3), (1, 2, 'softmax', 3),
    (1, 1, 'sigmoid', 1), (1, 1, 'softmax', 1)])  # 1x1: the batched-matmul path
@pytest.mark.parametrize('batch', [1, 3])
def test_dynamic_conv_equals_per_sample_loop(groups, stride, gate, kernel_size, batch):
    torch.manual_seed(0)
    conv = DynamicConv(6, 12, kernel_size, stride, groups=groups, num_experts=4, routing=gate)
    assert conv.is_pointwise == (kernel_size == 1)
    x = torch.randn(batch, 6, 11, 9)
    out = conv(x)
    for b in range(batch):
        alpha = conv.routing(x[b:b + 1].mean((2, 3)))
        alpha = alpha.sigmoid() if gate == 'sigmoid' else alpha.softmax(1)
        kernel = (alpha @ conv.cond_conv.weight).view(conv.cond_conv.weight_shape)
        ref = F.conv2d(x[b:b + 1], kernel, None, stride, kernel_size // 2, 1, groups)
        assert max_rel_diff(ref, out[b:b + 1]) <= 1e-5
    if gate == 'softmax':
        assert torch.allclose(conv.routing_weights(x).sum(1), torch.ones(batch))
    out.sum().backward()  # both paths train
    assert conv.cond_conv.weight.grad is not None and conv.routing.weight.grad is not None


@pytest.mark.parametrize('kernel_size,groups', [(3, 8), (1, 1)])
def test_dynamic_conv_fold_bn_is_exact(kernel_size, groups):
    torch.manual_seed(0)
    conv, bn = DynamicConv(8, 16, kernel_size, groups=groups), nn.BatchNorm2d(16)
    randomize_bn_stats(bn)
    bn.eval()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        ref = bn(conv(x))
        conv.fold_bn(bn)
        assert conv.bias is not None and conv.bias.shape == (16, )
        assert max_rel_diff(ref, conv(x)) <= 1e-5
        conv.fold_bn(bn)  # folding into an existing static bias
        assert max_rel_diff(bn(ref), conv(x)) <= 1e-5


@pytest.mark.parametrize('image_by_image', [False, True])
def test_batch_independence_in_eval(monkeypatch, image_by_image):
    monkeypatch.setattr(ParameterNet, 'IMAGE_BY_IMAGE_MIN_PIXELS', 48 * 48 if image_by_image
                        else 10**9)
    torch.manual_seed(0)
    model = ParameterNet(TINY_DYNAMIC).eval()
    randomize_bn_stats(model)
    x = torch.randn(2, 3, 48, 48)
    assert model._runs_image_by_image(x) == image_by_image
    with torch.no_grad():
        batched = model(x)
        single = model(x[1:])
        model.switch_to_deploy()
        deployed = model(x)
    for b, s, d in zip(batched, single, deployed):
        assert max_rel_diff(s, b[1:]) <= 1e-5 and max_rel_diff(b, d) <= 1e-5
    assert not model.train()._runs_image_by_image(x)


@pytest.mark.parametrize('arch', ARCHS)
def test_taps(arch):
    # the last block at each resolution (shapes for every out_indices: test_backbone_contract.py)
    with torch.device('meta'):
        assert ParameterNet(arch).out_channels == CHANNELS[arch]
        model = ParameterNet(arch, with_final_conv=False).eval()
    assert model.out_channels == CHANNELS_BLOCKS8[arch]
    assert len(model.blocks) == 9  # blocks.9 is not built
    assert model.tap_rows == [2, 4, 6, 8]
    with torch.no_grad():
        out = model(torch.empty(1, 3, 64, 64, device='meta'))[3]
    assert out.shape == (1, CHANNELS_BLOCKS8[arch][3], 2, 2)


def test_frozen_modules_layout():
    with torch.device('meta'):
        model = ParameterNet('ghostnet')
    assert model.frozen_modules(0)[3] is model.blocks[0]  # stride-2 work before stage 0
    assert model.frozen_modules(1) == [model.blocks[1], model.blocks[2]]
    assert model.frozen_modules(4) == [model.blocks[7], model.blocks[8], model.blocks[9]]


def test_dynamic_convs_train():
    torch.manual_seed(0)
    model = ParameterNet(TINY_DYNAMIC, drop_path_rate=0.1).train()
    outs = model(torch.randn(2, 3, 48, 48))
    sum(o.mean() for o in outs).backward()
    assert model.conv_stem.cond_conv.weight.grad is not None
    assert model.conv_stem.routing.weight.grad.abs().sum() > 0
    assert model.blocks[5][0].conv.cond_conv.weight.grad is not None


def test_drop_path_is_per_row():
    with torch.device('meta'):
        model = ParameterNet('600m', drop_path_rate=0.1)
    assert model.blocks[8][4].drop_path.drop_prob == pytest.approx(0.1)  # per row of blocks
    assert model.blocks[4][1].drop_path.drop_prob == pytest.approx(0.05)
    assert model.blocks[4][0].drop_path.drop_prob == pytest.approx(0.05)


@pytest.mark.parametrize('kwargs', [dict(arch='600m'), dict(arch='ghostnet'),
                                    dict(arch='600m', routing='softmax'),
                                    dict(arch='ghostnet', num_experts=3)])
def test_deploy_folds_every_bn(kwargs):
    # outputs of the default forms: test_backbone_contract.py
    with torch.device('meta'):
        model = ParameterNet(**kwargs).switch_to_deploy()
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    keys = set(model.state_dict())
    assert 'conv_stem.bias' in keys and 'blocks.1.0.conv_dw.bias' in keys
    if isinstance(model.conv_stem, DynamicConv):
        assert 'blocks.9.0.conv.bias' in keys and 'blocks.9.0.conv.cond_conv.weight' in keys


@pytest.mark.parametrize('kwargs', [dict(arch=TINY_DYNAMIC, routing='softmax'),
                                    dict(arch=TINY_GHOST, num_experts=3)])
def test_deploy_forms(kwargs):
    assert_deploy_equal(ParameterNet(**kwargs), shape=(2, 3, 40, 48))


def test_deploy_classify_at_batch_one():
    model = ParameterNet(TINY_DYNAMIC, num_classes=10)
    randomize_bn_stats(model)
    model.eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        before = model.classify(x)
        after = model.switch_to_deploy().classify(x)
    assert before.shape == (1, 10)
    assert max_rel_diff(before, after) <= 1e-5


def test_init_weights_is_official():
    model = ParameterNet('600m')
    model.init_weights()
    experts = model.blocks[1][0].ghost1.primary_conv[0].cond_conv
    bound = 1 / math.sqrt(32)  # kaiming_uniform(a=sqrt(5)) with each expert's fan-in 32
    assert experts.weight.abs().max() <= bound
    assert experts.weight.abs().max() > 0.9 * bound
    assert not torch.equal(experts.weight[0], experts.weight[1])


def _save(obj, tmp_path, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def _pretrained(tmp_path, ckpt, **kwargs):
    model = ParameterNet(init_cfg=dict(type='Pretrained', checkpoint=_save(ckpt, tmp_path)),
                         **kwargs)
    model.init_weights()
    return model


@pytest.mark.parametrize('layout', [pytest.param('flat_thop', marks=pytest.mark.slow),
                                    'state_dict', 'model', 'module'])
def test_load_official_parameternet_layouts(tmp_path, layout):
    # 600m itself for the flat file; a smaller dynamic arch (same key pattern) for the wrappers,
    # to keep the files small
    arch = '600m' if layout == 'flat_thop' else TINY_DYNAMIC
    torch.manual_seed(1)
    official = ParameterNet(arch, num_classes=1000)
    randomize_bn_stats(official)
    sd = official.state_dict()
    if layout == 'flat_thop':  # thop's profile() leaves these buffers in every module
        ckpt = dict(sd, total_ops=torch.zeros(1, dtype=torch.float64),
                    total_params=torch.zeros(1, dtype=torch.float64))
        ckpt['blocks.0.0.ghost1.primary_conv.0.total_ops'] = torch.zeros(1)
    elif layout == 'module':
        ckpt = {'module.' + k: v for k, v in sd.items()}
    else:
        ckpt = {layout: sd, 'epoch': 3}
    model = ParameterNet(arch)
    model.init_cfg = dict(type='Pretrained', checkpoint=_save(ckpt, tmp_path))
    report = model.load_pretrained(model.init_cfg['checkpoint'])
    assert report['missing'] == []
    assert set(report['unexpected']) == HEAD_KEYS
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # the same file through init_cfg + init_weights()
    loaded = _pretrained(tmp_path, ckpt, arch=arch)
    last = len(loaded.blocks) - 1  # the final 1x1 conv
    assert torch.equal(loaded.blocks[last][0].conv.cond_conv.weight,
                       sd[f'blocks.{last}.0.conv.cond_conv.weight'])


def test_load_ghostnet_checkpoint_into_static_twin(tmp_path):
    # official state_dict_73.98.pth and timm ghostnet_100: flat, GhostNet names (512 keys)
    sd = ParameterNet('ghostnet', num_classes=1000).state_dict()
    model = _pretrained(tmp_path, sd, arch='ghostnet', with_final_conv=False)
    assert torch.equal(model.blocks[8][3].se.conv_expand.weight,
                       sd['blocks.8.3.se.conv_expand.weight'])
    report = model.load_pretrained(_save(sd, tmp_path, 'g.pth'))
    assert report['missing'] == []
    assert set(report['unexpected']) == HEAD_KEYS | {k for k in sd if k.startswith('blocks.9.')}


@pytest.mark.parametrize('kwargs,match', [
    (dict(routing='tanh'), 'routing'),
    (dict(num_experts=0), 'num_experts'),
    (dict(dynamic=False, num_experts=4), 'contradicts'),
    (dict(num_classes=1000, with_final_conv=False), 'with_final_conv'),
    (dict(arch=dict(cfgs=[[[3, 16, 16, 0, 2]]], width=1.0, act_cfg=dict(type='ReLU'),
                    num_experts=1)), 'strides'),
])
def test_bad_kwargs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParameterNet(**kwargs)
