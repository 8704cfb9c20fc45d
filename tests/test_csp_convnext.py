"""CSPConvNeXt V1 and E-ConvNeXt: published size/cost, output norms, stage layout, deploy form,
Paddle keys.

The shared contract (shapes, freezing, norm_eval, with_cp, deploy, load errors) is tested for every
arch in test_backbone_contract.py.
"""
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmlightbb.models.backbones.csp_convnext import CSPConvNeXt
from mmlightbb.analysis.complexity import count_macs, count_params
from mmlightbb.models.layers import randomize_bn_stats

from helpers import assert_cpu_channels_last_equals_nchw

ARCHS = ('tiny', 'e-mini', 'e-tiny', 'e-small')
# Classification form (backbone + norm on the pooled vector + Linear 1000) at 224x224; MACs are
# conv + linear multiply-accumulates. V1 'tiny': the author's code comment "Total Flops: 1189500624
# Total Params: 8688640" (we count 8,688,616 / 1.186 G). E-ConvNeXt README: mini 7.6 M / 0.9 G,
# tiny 13.2 M / 2.0 G, small 19.4 M / 3.1 G, recounted as 7.66 M / 0.92 G, 13.25 M / 2.03 G,
# 19.43 M / 3.10 G in the reference notes.
PUBLISHED = {'tiny': (8_688_640, 1.1895e9), 'e-mini': (7.66e6, 0.92e9),
             'e-tiny': (13.25e6, 2.03e9), 'e-small': (19.43e6, 3.10e9)}
# the layouts of 'tiny' (V1, patchify stem) and 'e-mini' (4x4/s4 ConvBN stem) at a fraction of the
# size, for the tests of keys, init and execution paths
SMALL_V1 = dict(version='v1', stem='patchify', depths=[1, 1, 1, 3], stem_channels=16,
                channels=[16, 32, 64, 128])
SMALL_E = dict(version='e', stem='va', depths=[1, 1, 1, 3], stem_channels=16,
               channels=[32, 64, 128, 256])


@pytest.mark.slow
@pytest.mark.parametrize('arch', ARCHS)
def test_params_and_macs_match_published(arch):
    model = CSPConvNeXt(arch, num_classes=1000).eval()
    params, macs = PUBLISHED[arch]
    assert abs(count_params(model) - params) / params < 0.01
    assert abs(count_macs(model.classify, conv_linear_only=True) - macs) / macs < 0.01


def test_output_norms():
    # official detection: a BN per returned map in E-ConvNeXt (indexed by output position), none
    # in V1; the classification form has none
    with torch.device('meta'):
        assert [n.num_features for n in CSPConvNeXt('e-tiny', out_indices=(1, 2, 3)).norms] == \
            [256, 512, 1024]
        assert not hasattr(CSPConvNeXt('tiny'), 'norms')
        assert len(CSPConvNeXt('tiny', norm_output=True).norms) == 4
        classifier = CSPConvNeXt('e-mini', num_classes=10)
        assert not hasattr(classifier, 'norms') and isinstance(classifier.norm, nn.BatchNorm1d)
        assert isinstance(CSPConvNeXt('tiny', num_classes=10).norm, nn.LayerNorm)


@pytest.mark.parametrize('arch', ['tiny', 'e-tiny'])
def test_frozen_modules_layout(arch):
    with torch.device('meta'):
        model = CSPConvNeXt(arch)
    assert model.frozen_modules(0) == [model.Down_Conv]
    assert model.frozen_modules(2) == [model.stages[1]]  # the stage owns its `down`


@pytest.mark.parametrize('arch', ARCHS)
def test_deploy_folds_bn(arch):
    # outputs: test_backbone_contract.py; here what is folded
    with torch.device('meta'):
        model = CSPConvNeXt(arch).switch_to_deploy()
    keys = list(model.state_dict())
    assert not any('.bn.' in k for k in keys)  # every ConvBN folded
    if arch != 'tiny':
        assert not any(k.startswith('stages.') and '.norm' in k for k in keys)  # block BNs folded
        assert all(isinstance(n, _BatchNorm) for n in model.norms)  # output BNs: no conv to fold


def test_e_block_uses_drop_path_on_residual_branch():
    with torch.device('meta'):
        block = CSPConvNeXt('e-mini', drop_path_rate=0.5).stages[3].blocks[2]
        assert block.drop_path.drop_prob == 0.5
        assert isinstance(CSPConvNeXt('e-mini').stages[3].blocks[2].drop_path, nn.Identity)


def test_official_init():
    model = CSPConvNeXt(SMALL_E, num_classes=1000)
    model.init_weights()
    weight = model.stages[2].blocks[0].pwconv1.weight
    assert abs(weight.std().item() - 0.02) < 0.002
    assert model.stages[1].attn.fc.bias.abs().sum() == 0
    assert model.head.fc_cls.bias.abs().sum() == 0


# ---------------------------------------------------------------------- Paddle key layouts
def _source(arch, **kwargs):
    torch.manual_seed(0)
    model = CSPConvNeXt(arch, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    randomize_bn_stats(model)
    return model.eval()


def _to_paddle(model):
    """The model's weights as a converted ``.pdparams`` holds them (Paddle names and layouts)."""
    linear = {f'{n}.weight' for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    paddle = {}
    for key, value in model.state_dict().items():
        if key.endswith('num_batches_tracked'):
            continue
        if key in linear:
            value = value.t().contiguous()  # Paddle Linear weights are [in, out]
        paddle[key.replace('running_mean', '_mean').replace('running_var', '_variance')] = value
    if model.version == 'e':  # built, never used by the official block
        for i, stage in enumerate(model.stages):
            for j in range(len(stage.blocks)):
                paddle[f'stages.{i}.blocks.{j}.gamma'] = torch.ones(1)
    return paddle


def _save(tmp_path, obj):
    path = str(tmp_path / 'converted_pdparams.pth')
    torch.save(obj, path)
    return path


def test_load_paddle_e_convnext_classifier(tmp_path):
    source = _source(SMALL_E, num_classes=1000)
    paddle = _to_paddle(source)
    # the official classification class also builds (unused) output BNs for channels[1:]
    for k, c in enumerate(SMALL_E['channels'][1:]):
        paddle.update({f'norms.{k}.weight': torch.ones(c), f'norms.{k}.bias': torch.zeros(c),
                       f'norms.{k}._mean': torch.zeros(c), f'norms.{k}._variance': torch.ones(c)})
    path = _save(tmp_path, paddle)
    model = CSPConvNeXt(SMALL_E, num_classes=1000,
                        init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.classify(x), source.classify(x))
    report = model.load_pretrained(path)
    assert report['missing'] == [] and report['unexpected'] == []


def test_load_paddle_e_convnext_detector(tmp_path):
    # official detection backbone: return_idx [1, 2, 3] with norms.{0,1,2}
    source = _source(SMALL_E, out_indices=(1, 2, 3))
    path = _save(tmp_path, {'state_dict': _to_paddle(source)})
    model = CSPConvNeXt(SMALL_E, out_indices=(1, 2, 3)).eval()
    report = model.load_pretrained(path)
    assert report['missing'] == [] and report['unexpected'] == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), source(x)):
            torch.testing.assert_close(a, b)
    # its output norms are per output position: other out_indices disagree in shape
    with pytest.raises(ValueError, match='disagree'):
        CSPConvNeXt(SMALL_E).load_pretrained(path)


def test_load_paddle_v1_classifier(tmp_path):
    source = _source(SMALL_V1, num_classes=1000)
    paddle = _to_paddle(source)
    # PaddleClas `Model`: backbone.* + head.fc_cls.*
    wrapped = {(k if k.startswith('head.') else f'backbone.{k}'): v for k, v in paddle.items()}
    assert wrapped['head.fc_cls.weight'].shape == (128, 1000)
    path = _save(tmp_path, wrapped)
    model = CSPConvNeXt(SMALL_V1, num_classes=1000).eval()
    report = model.load_pretrained(path)
    assert report['missing'] == [] and report['unexpected'] == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.classify(x), source.classify(x))
    # into the detection form: the classifier's `norm` and head are left over
    detection = CSPConvNeXt(SMALL_V1)
    report = detection.load_pretrained(path)
    assert sorted(report['unexpected']) == ['head.fc_cls.bias', 'head.fc_cls.weight', 'norm.bias',
                                            'norm.weight'] and report['missing'] == []
    torch.testing.assert_close(detection.stages[3].blocks[2].pwconv1.weight,
                               source.stages[3].blocks[2].pwconv1.weight)


def test_load_own_checkpoint_untouched(tmp_path):
    # a torch state dict of this model (no `_mean` keys): Linear weights are not transposed
    source = _source(SMALL_V1)
    path = _save(tmp_path, {'state_dict': {f'backbone.{k}': v
                                           for k, v in source.state_dict().items()}})
    model = CSPConvNeXt(SMALL_V1, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_bad_kwargs():
    with pytest.raises(ValueError, match='no layer scale'):
        CSPConvNeXt('e-tiny', layer_scale_init_value=1e-6)
    with pytest.raises(ValueError, match='layer_scale_init_value'):
        CSPConvNeXt('tiny', layer_scale_init_value=-1.)
    with pytest.raises(ValueError, match='num_classes'):
        CSPConvNeXt('tiny', num_classes=1.5)
    good = dict(version='e', stem='vb', depths=[1, 1, 1, 1], stem_channels=32,
                channels=[64, 128, 256, 512])
    assert CSPConvNeXt(good).out_channels == [64, 128, 256, 512]
    with pytest.raises(ValueError, match="'v1' or 'e'"):
        CSPConvNeXt({**good, 'version': 'v2'})
    with pytest.raises(ValueError, match='4 channels'):
        CSPConvNeXt({**good, 'channels': [64, 128, 256]})
    with pytest.raises(ValueError, match='must be even'):
        CSPConvNeXt({**good, 'channels': [66, 128, 256, 512]})
    with pytest.raises(ValueError, match='patchify'):
        CSPConvNeXt({**good, 'stem': 'patchify'})


@pytest.mark.parametrize('arch', [SMALL_V1, SMALL_E], ids=['v1', 'e'])
def test_cpu_inference_runs_channels_last_and_equals_nchw(arch):
    model = CSPConvNeXt(arch).eval()
    randomize_bn_stats(model)
    assert_cpu_channels_last_equals_nchw(model, model.Down_Conv)
