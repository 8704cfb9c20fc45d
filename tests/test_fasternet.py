"""FasterNet: published size/cost, official/timm/Lightning layouts, PConv, the GEMM block form,
output norms, stage layout, deploy forms.

The shared contract (shapes, freezing, norm_eval, with_cp, deploy, load errors) is tested for every
arch in test_backbone_contract.py.
"""
import copy
import re

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmlightbb.models.backbones.fasternet import FasterNet
from mmlightbb.models.layers import randomize_bn_stats, set_cpu_channels_last
from mmlightbb.analysis.benchmark import max_rel_diff
from mmlightbb.analysis.complexity import count_macs, count_params

from helpers import assert_deploy_equal

ARCHS = ('t0', 't1', 't2', 's', 'm', 'l')
# stage-0 width; the official archs' channels are (w, 2w, 4w, 8w)
WIDTH = dict(t0=40, t1=64, t2=96, s=128, m=144, l=192)
DEPTHS = dict(t0=(1, 2, 8, 2), t1=(1, 2, 8, 2), t2=(1, 2, 8, 2), s=(1, 2, 13, 2),
              m=(3, 4, 18, 3), l=(3, 4, 18, 3))
# README (params M, "FLOPs" G = fvcore MACs at 224) and the exact recount of the official module
PUBLISHED = dict(t0=(3.9, 0.34), t1=(7.6, 0.85), t2=(15.0, 1.90), s=(31.1, 4.55), m=(53.5, 8.72),
                 l=(93.4, 15.49))
RECOUNT_PARAMS = dict(t0=3.91, t1=7.60, t2=14.98, s=31.18, m=53.52, l=93.47)
DET_NORM_KEYS = {f'norm{i}.{p}' for i in (0, 2, 4, 6)
                 for p in ('weight', 'bias', 'running_mean', 'running_var')}
HEAD_KEYS = {'avgpool_pre_head.1.weight', 'head.weight', 'head.bias'}


def cls_model(arch='t0', **kwargs):
    """The official classification model: head, no detection norms."""
    return FasterNet(arch, num_classes=1000, norm_output=False, **kwargs)


def classify_macs(model, shape):
    """Conv + linear MACs of ``model.classify``, i.e. what fvcore's "FLOPs" in the README count."""
    return count_macs(model.classify, shape, conv_linear_only=True)


def head_macs(arch):
    return 8 * WIDTH[arch] * 1280 + 1280 * 1000


@pytest.mark.parametrize('arch', [a if a in ('t0', 't1', 't2', 's') else
                                  pytest.param(a, marks=pytest.mark.slow) for a in ARCHS])
def test_params_and_macs_match_published(arch):
    model = cls_model(arch).eval()
    params = count_params(model) / 1e6
    pub_params, pub_macs = PUBLISHED[arch]
    assert abs(params - pub_params) / pub_params < 0.01, params
    assert abs(params - RECOUNT_PARAMS[arch]) < 0.006, params
    # conv + linear MACs (what fvcore's FLOPs of the README are, norms/pooling aside). Every layer
    # is a non-overlapping or stride-1 'same' conv, so at 32 x 32 the body sees exactly 1/49 of the
    # pixels it sees at 224 x 224 (8,4,2,1 vs 56,28,14,7 per side); the head after the global pool
    # does not scale. Hence MACs(224) = 49 * (MACs(32) - head) + head, exactly.
    macs32 = classify_macs(model, (1, 3, 32, 32))
    macs = (49 * (macs32 - head_macs(arch)) + head_macs(arch)) / 1e9
    if arch == 't0':
        # 0.3354 G: the README's 0.34 is its rounding to two digits (1.4 % off); check the rounding
        assert round(macs, 2) == pub_macs, macs
    else:
        assert abs(macs - pub_macs) / pub_macs < 0.01, macs


def test_mac_scaling_is_exact():
    model = cls_model('t0').eval()
    macs224 = classify_macs(model, (1, 3, 224, 224))
    macs32 = classify_macs(model, (1, 3, 32, 32))
    assert macs224 == 49 * (macs32 - head_macs('t0')) + head_macs('t0')
    assert abs(macs224 / 1e9 - 0.335) < 0.001


@pytest.mark.parametrize('arch', ARCHS)
def test_official_state_dict_layout(arch):
    with torch.device('meta'):  # keys and shapes only
        sd = cls_model(arch).state_dict()
        det = FasterNet(arch).state_dict()
    # 6 stem keys, 8 per block, 6 per merging layer, 3 head keys (reference A5)
    assert len(sd) == 6 + 8 * sum(DEPTHS[arch]) + 6 * 3 + 3
    e = WIDTH[arch]
    assert FasterNet.arch_settings[arch]['channels'] == (e, 2 * e, 4 * e, 8 * e)
    assert sd['patch_embed.proj.weight'].shape == (e, 3, 4, 4)
    pconv = sd['stages.0.blocks.0.spatial_mixing.partial_conv3.weight']
    assert pconv.shape == (e // 4, e // 4, 3, 3)
    assert sd['stages.6.blocks.0.mlp.0.weight'].shape == (16 * e, 8 * e, 1, 1)
    assert sd['stages.6.blocks.0.mlp.1.running_var'].shape == (16 * e, )
    assert sd['stages.6.blocks.0.mlp.3.weight'].shape == (8 * e, 16 * e, 1, 1)
    assert sd['stages.1.reduction.weight'].shape == (2 * e, e, 2, 2)
    assert sd['stages.5.norm.weight'].shape == (8 * e, )
    assert sd['avgpool_pre_head.1.weight'].shape == (1280, 8 * e, 1, 1)
    assert sd['head.weight'].shape == (1000, 1280)
    counters = {f'norm{i}.num_batches_tracked' for i in (0, 2, 4, 6)}
    assert set(det) - set(sd) == DET_NORM_KEYS | counters
    assert set(sd) - set(det) == HEAD_KEYS


def test_arch_defaults_and_overrides():
    t0, s = FasterNet('t0'), FasterNet('s')
    assert isinstance(t0.stages[0].blocks[0].mlp[2], nn.GELU)
    assert not hasattr(t0, 'avgpool_pre_head')  # detection form: no head
    assert isinstance(cls_model('t0').avgpool_pre_head[2], nn.GELU)
    assert isinstance(s.stages[0].blocks[0].mlp[2], nn.ReLU)
    assert isinstance(cls_model('s').avgpool_pre_head[2], nn.ReLU)
    model = FasterNet('t0', act_cfg=dict(type='ReLU'))
    assert all(not isinstance(m, nn.GELU) for m in model.modules())
    # drop path: per block, linear over all blocks; default = the official detection value for S
    drops = [b.drop_path for st in s.stages[::2] for b in st.blocks]
    assert isinstance(drops[0], nn.Identity)
    assert drops[-1].drop_prob == pytest.approx(0.15)
    expected = torch.linspace(0, 0.15, 18).tolist()
    assert [getattr(d, 'drop_prob', 0.0) for d in drops] == pytest.approx(expected)
    assert FasterNet('s', drop_path_rate=0.3).stages[6].blocks[1].drop_path.drop_prob == \
        pytest.approx(0.3)
    # norm_cfg reaches every norm (stem, merging, MLPs, output norms, head has none)
    model = FasterNet('t0', norm_cfg=dict(type='SyncBN'), num_classes=10)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(norms) == 1 + 3 + 13 + 4
    assert all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    # layer scale (off by default, as released)
    assert 'stages.0.blocks.0.layer_scale' not in FasterNet('t0').state_dict()
    ls = FasterNet('t0', layer_scale_init_value=1e-2).stages[2].blocks[0].layer_scale
    assert ls.shape == (80, ) and torch.all(ls == 1e-2)


def test_partial_conv_is_out_of_place():
    block = FasterNet('t0').stages[0].blocks[0]
    pconv = block.spatial_mixing
    x = torch.randn(2, 40, 9, 11)
    x_copy = x.clone()
    y = pconv(x)
    assert torch.equal(x, x_copy)  # the block's shortcut stays intact
    assert torch.equal(y[:, 10:], x[:, 10:])
    assert torch.allclose(y[:, :10], pconv.partial_conv3(x[:, :10]))
    block.eval()
    with torch.no_grad():
        out = block(x)
    assert torch.equal(x, x_copy)
    assert torch.allclose(out, x + block.mlp(y), atol=1e-6)
    assert FasterNet('t0', n_div=2).stages[0].blocks[0].spatial_mixing.partial_conv3.in_channels \
        == 20


@pytest.mark.parametrize('act_cfg', [None, dict(type='ReLU', inplace=True)])
def test_deployed_block_as_gemms_equals_module_form(act_cfg):
    """The deployed NHWC block (PConv + GEMMs, no concat) is the module form's function."""
    block = FasterNet('t0', act_cfg=act_cfg).stages[2].blocks[0].eval()
    randomize_bn_stats(block)
    x = torch.randn(2, 80, 9, 11)
    with torch.no_grad():
        reference = block(x)  # BN unfused, NCHW: the official computation
        block.mlp.switch_to_deploy()
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        assert block._runs_as_matmuls(x_nhwc) and not block._runs_as_matmuls(x)
        out = block(x_nhwc)
        assert max_rel_diff(reference, out) <= 1e-5
        assert max_rel_diff(reference, block(x)) <= 1e-5  # NCHW input: the module form
    assert torch.equal(x_nhwc, x)  # the shortcut is intact
    block.train()
    assert not block._runs_as_matmuls(x_nhwc)


def test_cpu_inference_runs_channels_last_and_returns_nchw():
    model = FasterNet('t0').eval()
    randomize_bn_stats(model)
    seen = []
    model.stages[0].blocks[0].register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(1, 3, 64, 96)
    official = set_cpu_channels_last(copy.deepcopy(model), False)
    with torch.no_grad():
        outs = model(x)
        assert seen == [True]
        reference = official(x)
        assert seen == [True, False]
        model.switch_to_deploy()
        deployed = model(x)
    for out, ref, dep in zip(outs, reference, deployed):
        assert out.is_contiguous() and dep.is_contiguous()  # plain NCHW for the neck
        assert max_rel_diff(ref, out) <= 1e-5 and max_rel_diff(ref, dep) <= 1e-5
    model.train()
    model(x)
    assert seen[-1] is False  # training keeps the input's layout


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 3), (2, )])
def test_output_norms_only_for_returned_maps(out_indices):
    with torch.device('meta'):
        model = FasterNet('t0', out_indices=out_indices)
    assert {n for n, _ in model.named_children() if n.startswith('norm')} == \
        {f'norm{2 * i}' for i in out_indices}


def test_outputs_are_the_official_normed_taps():
    model = FasterNet('t0', num_classes=5).eval()
    randomize_bn_stats(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
        feat = model.patch_embed(x)
        for idx, layer in enumerate(model.stages):
            feat = layer(feat)  # the main path continues un-normalised
            if idx % 2 == 0:
                # the model runs channels_last on CPU: equal up to float summation order
                assert max_rel_diff(getattr(model, f'norm{idx}')(feat), outs[idx // 2]) <= 1e-5
        raw = FasterNet('t0', norm_output=False).eval()
        raw.load_state_dict(model.state_dict(), strict=False)
        assert max_rel_diff(feat, raw(x)[3]) <= 1e-5
        logits = model.classify(x)
    assert logits.shape == (1, 5)


def test_frozen_modules_layout():
    model = FasterNet('t0')
    assert model.frozen_modules(0) == [model.patch_embed]
    assert model.frozen_modules(1) == [model.stages[0]]
    for k in (2, 3, 4):  # the merging layer that leads into stage k belongs to it
        assert model.frozen_modules(k) == [model.stages[2 * k - 3], model.stages[2 * k - 2]]


@pytest.mark.parametrize('kwargs', [
    dict(arch='t1', out_indices=(1, 3), layer_scale_init_value=0.5),
    dict(act_cfg=dict(type='ReLU', inplace=True), norm_output=False),
    dict(norm_cfg=dict(type='GN', num_groups=2)),  # nothing foldable: must stay exact
])
def test_deploy_forms(kwargs):
    # the default form of every arch: test_backbone_contract.py
    model = FasterNet(**{'arch': 't0', **kwargs})
    assert_deploy_equal(model, shape=(1, 3, 64, 96))
    bns = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    assert all(re.fullmatch(r'norm\d', n) for n in bns), bns  # only the output norms remain


def test_deploy_keys_and_classify():
    model = cls_model('t0').eval()
    randomize_bn_stats(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model.classify(x)
        model.switch_to_deploy().switch_to_deploy()  # idempotent
        after = model.classify(x)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-5)
    sd = model.state_dict()
    # the names of the official fuse_conv_bn output
    for key in ('patch_embed.proj.bias', 'stages.1.reduction.bias', 'stages.6.blocks.1.mlp.0.bias'):
        assert key in sd
    assert not any('.norm.' in k or '.mlp.1.' in k for k in sd)


def test_official_init():
    torch.manual_seed(0)
    model = cls_model('t0')
    model.init_weights()
    w = model.stages[6].blocks[0].mlp[0].weight
    assert abs(w.std().item() - 0.02) < 0.001
    assert torch.all(model.head.bias == 0)
    assert torch.all(model.patch_embed.norm.weight == 1)


# ----------------------------------------------------------------------------- checkpoints
def _random_state_dict(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone())
            for k, v in model.state_dict().items()}


def _to_timm(sd):
    """Official -> timm layout, as timm's checkpoint_filter_fn maps it (reference A5)."""
    out = {}
    for k, v in sd.items():
        m = re.match(r'stages\.(\d+)\.(.*)', k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            k = f'stages.{(i + 1) // 2}.downsample.{rest}' if i % 2 else f'stages.{i // 2}.{rest}'
        k = {'avgpool_pre_head.1.weight': 'conv_head.weight', 'head.weight': 'classifier.weight',
             'head.bias': 'classifier.bias'}.get(k, k)
        out[k] = v
    return out


def _load(model, tmp_path, obj, name='ckpt.pth', **cfg):
    path = str(tmp_path / name)
    torch.save(obj, path)
    model.init_cfg = dict(type='Pretrained', checkpoint=path, **cfg)
    model.init_weights()
    return model.load_pretrained(path, prefix=cfg.get('prefix'))


def _assert_loaded(model, sd):
    own = model.state_dict()
    for k, v in sd.items():
        if k in own:
            assert torch.equal(own[k], v), k


@pytest.mark.parametrize('wrap', ['flat', 'model', 'state_dict', 'module.', 'backbone.'])
def test_load_official_imagenet_checkpoint(tmp_path, wrap):
    sd = _random_state_dict(cls_model('t0'))
    if wrap in ('model', 'state_dict'):
        obj = {wrap: sd, 'epoch': 3}
    elif wrap.endswith('.'):
        obj = {wrap + k: v for k, v in sd.items()}
    else:
        obj = sd
    model = FasterNet('t0')
    report = _load(model, tmp_path, obj)
    _assert_loaded(model, sd)
    # exactly what the official fork_feat model reports
    assert set(report['missing']) == DET_NORM_KEYS
    assert set(report['unexpected']) == HEAD_KEYS
    assert report['matched'] == len(sd) - 3


def test_load_into_classification_model(tmp_path):
    sd = _random_state_dict(cls_model('t1'))
    model = cls_model('t1')
    report = _load(model, tmp_path, sd)
    _assert_loaded(model, sd)
    assert report['missing'] == [] and report['unexpected'] == []


@pytest.mark.parametrize('num_classes', [1000, None])
def test_load_timm_checkpoint(tmp_path, num_classes):
    sd = _random_state_dict(cls_model('t0'))
    timm_sd = _to_timm(sd)
    assert 'stages.3.downsample.reduction.weight' in timm_sd and 'stages.2.blocks.7.mlp.0.weight' \
        in timm_sd and 'conv_head.weight' in timm_sd
    model = FasterNet('t0', num_classes=num_classes, norm_output=num_classes is None)
    report = _load(model, tmp_path, {'state_dict': timm_sd})
    _assert_loaded(model, sd)
    if num_classes:
        assert report['missing'] == [] and report['unexpected'] == []
    else:
        assert set(report['missing']) == DET_NORM_KEYS and set(report['unexpected']) == HEAD_KEYS
    assert model.convert_state_dict(dict(sd)).keys() == sd.keys()  # official layout untouched


def test_load_detector_checkpoint(tmp_path):
    sd = _random_state_dict(FasterNet('t0'))
    obj = {'meta': {'epoch': 12}, 'state_dict': {
        **{'backbone.' + k: v for k, v in sd.items()},
        'neck.lateral_convs.0.conv.weight': torch.randn(256, 40, 1, 1),
        'rpn_head.rpn_conv.weight': torch.randn(256, 256, 3, 3)}}
    for cfg in (dict(), dict(prefix='backbone.')):
        model = FasterNet('t0')
        report = _load(model, tmp_path, obj, **cfg)
        _assert_loaded(model, sd)
        assert report['missing'] == [] and report['unexpected'] == []


def test_load_lightning_checkpoint(tmp_path):
    sd = _random_state_dict(cls_model('t0'))
    obj = {'epoch': 299, 'state_dict': {
        **{'model.' + k: v for k, v in sd.items()},
        'criterion.teacher_model.fc.weight': torch.randn(10, 10)}}
    model = cls_model('t0')
    report = _load(model, tmp_path, obj)
    _assert_loaded(model, sd)
    assert report['missing'] == [] and report['unexpected'] == []


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch=dict(channels=(40, 80, 160, 320), depths=(1, 2, 8, 2))), 'act_cfg'),
    (dict(arch=dict(channels=(40, 80, 160, 320), depths=(1, 2, 2), act_cfg=dict(type='ReLU'),
                    drop_path_rate=0.)), 'depths'),
    (dict(arch=dict(channels=40, depths=(1, 2, 8, 2), act_cfg=dict(type='ReLU'),
                    drop_path_rate=0.)), 'channels'),
    (dict(n_div=0), 'n_div'),
    (dict(n_div=41), 'n_div'),
    (dict(mlp_ratio=0), 'mlp_ratio'),
    (dict(layer_scale_init_value=-1.0), 'layer_scale'),
    (dict(num_classes=-1), 'num_classes'),
    (dict(feature_dim=0), 'feature_dim'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FasterNet(**{'arch': 't0', **kwargs})


def test_custom_arch_widths():
    # any 4 stage widths: each merging layer maps one width to the next
    arch = dict(channels=(32, 48, 96, 160), depths=(1, 1, 1, 1), act_cfg=dict(type='ReLU'),
                drop_path_rate=0.)
    model = FasterNet(arch, out_indices=(0, 3)).eval()
    assert model.out_channels == [32, 160]
    assert model.stages[5].reduction.weight.shape == (160, 96, 2, 2)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 160]
