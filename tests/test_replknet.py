"""RepLKNet: published size/cost, official key counts and deploy forms, large-kernel paths,
output norms, checkpointed modules, official/mmpretrain layouts.

The shared contract (shapes, freezing, norm_eval, with_cp, deploy, load errors) is tested for every
arch in test_backbone_contract.py.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmlightbb.models.backbones.replknet import ReparamLargeKernelConv, RepLKNet
from mmlightbb.models.layers import randomize_bn_stats, set_cpu_channels_last
from mmlightbb.analysis.benchmark import max_rel_diff
from mmlightbb.analysis.complexity import count_macs, count_params

from helpers import assert_deploy_equal

ARCHS = ('31B', '31L', 'XL')
# README: params (M), "FLOPs" (G MACs) at the resolution it names.
PUBLISHED = {'31B': (79, 15.3, 224), '31L': (172, 96.0, 384), 'XL': (335, 128.7, 320)}
# Exact counts of the official classification model: training form (= mmpretrain metafile),
# official small_kernel_merged deploy form, state_dict sizes (reference 1.2, 1.5).
TRAIN_PARAMS = {'31B': 79_864_168, '31L': 172_671_016, 'XL': 335_435_752}
MERGED_PARAMS = {'31B': 79_527_272, '31L': 172_165_672, 'XL': 335_399_656}
TRAIN_KEYS = {'31B': 1171, '31L': 1171, 'XL': 1027}
CHANNELS = {'31B': [128, 256, 512, 1024], '31L': [192, 384, 768, 1536],
            'XL': [256, 512, 1024, 2048]}
# small but complete: every kernel larger than the maps of a 64 x 64 input, as in the real archs
TINY = dict(large_kernel_sizes=[13, 11, 9, 7], depths=[1, 1, 2, 1], channels=[8, 16, 24, 32],
            small_kernel=5, dw_ratio=1.0)
TINY_XL = dict(TINY, small_kernel=None, dw_ratio=1.5)
BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def conv_linear_macs(model, size):
    """Conv + linear MACs of ``model.classify`` at ``size`` x ``size`` (the README's "FLOPs")."""
    return count_macs(model.classify, (1, 3, size, size), conv_linear_only=True)


def scaled_macs(model, size):
    """MACs at ``size`` (a multiple of 32) from a count at 32 x 32.

    Every conv is stride 1 'same' or stride 2 with k3/p1, so for a multiple of 32 each map is
    exactly ``size / 32`` times its size at 32 per side and every conv's MACs scale by
    ``(size / 32) ** 2``; only the Linear head after the global pool does not scale.
    """
    head = model.head.in_features * model.head.out_features
    return (conv_linear_macs(model, 32) - head) * (size // 32)**2 + head


def official_merged(model):
    """The state dict the official ``structural_reparam()`` gives: only ``lkb_reparam`` merged."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, ReparamLargeKernelConv):
            module.switch_to_deploy()
    return model.state_dict()


def to_mmpretrain(state_dict):
    """Official keys -> mmpretrain ``ImageClassifier`` keys (``replknet_to_mmpretrain.py``)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('head.'):
            out['head.fc.' + key[5:]] = value
        elif key.startswith('norm.'):
            out['backbone.stages.3.norm.' + key[5:]] = value
        else:
            out['backbone.' + key] = value
    return out


def random_state(model, seed=1):
    """``model``'s state dict with every float tensor random, so loading can be verified."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.rand(v.shape, generator=gen) + 0.5 if v.is_floating_point() else v)
            for k, v in model.state_dict().items()}


def load_report(model, obj, tmp_path, **kwargs):
    path = str(tmp_path / 'ckpt.pth')
    torch.save(obj, path)
    return model.load_pretrained(path, **kwargs), path


def assert_loaded(model, state_dict):
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own:
            assert torch.equal(own[key], value), key


# ------------------------------------------------------------------------------ real archs
@pytest.mark.slow
@pytest.mark.parametrize('arch', ARCHS)
def test_real_arch(arch):
    """Published params/MACs and official key counts (shapes, deploy: test_backbone_contract.py)."""
    model = RepLKNet(arch, num_classes=1000, drop_path_rate=0.0).eval()
    pub_params, pub_macs, res = PUBLISHED[arch]
    assert count_params(model) == TRAIN_PARAMS[arch]  # = mmpretrain's metafile
    assert len(model.state_dict()) == TRAIN_KEYS[arch]
    with torch.device('meta'):  # structure only: the official deploy form
        merged = RepLKNet(arch, num_classes=1000, small_kernel_merged=True)
    assert count_params(merged) == MERGED_PARAMS[arch]
    assert len(merged.state_dict()) == 931
    # the README's "79M" for 31B is 1.09 % below the training form (79.864 M) but 0.67 % below
    # the deploy form (79.527 M; mmpretrain's README says 79.5 M): compare the deploy form
    assert abs(MERGED_PARAMS[arch] / 1e6 - pub_params) / pub_params < 0.01
    # conv + linear MACs of the training form: 15.431 / 96.332 / 128.730 G, 0.85 / 0.35 / 0.02 %
    # above the README
    macs = scaled_macs(model, res) / 1e9
    assert abs(macs - pub_macs) / pub_macs < 0.01, macs
    assert model.out_channels == CHANNELS[arch]
    if arch == '31B':  # without the 5x5 branch: 15.354 G, 0.35 % off the README's 15.3 G
        model.switch_to_deploy()
        assert round(scaled_macs(model, 224) / 1e9, 2) == 15.35


def test_mac_scaling_is_exact():
    model = RepLKNet(TINY, num_classes=10).eval()
    assert scaled_macs(model, 96) == conv_linear_macs(model, 96)


# ------------------------------------------------------------------------------ outputs
def test_large_kernel_runs_channels_last_on_cpu():
    """The fast oneDNN path: the large depthwise conv must see channels_last input on CPU."""
    model = RepLKNet(TINY).eval()
    randomize_bn_stats(model)
    seen = []
    hooks = [m.lkb_origin.conv.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
             for m in model.modules() if isinstance(m, ReparamLargeKernelConv)]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
        assert len(seen) == 5 and all(seen)
        assert all(o.is_contiguous() for o in outs)
        for hook in hooks:
            hook.remove()
        # the same numbers as the stock NCHW computation
        large_kernel = model.stages[0].blocks[0].large_kernel
        y = torch.randn(2, 8, 16, 16)
        reference = large_kernel.lkb_origin(y) + large_kernel.small_conv(y)
        assert max_rel_diff(reference, large_kernel(y)) < 1e-6


def test_set_cpu_channels_last_off_gives_the_official_nchw_execution():
    """The straightforward form of the speed benchmark: same weights, NCHW large kernels."""
    model = RepLKNet(TINY).eval()
    randomize_bn_stats(model)
    official = set_cpu_channels_last(copy.deepcopy(model), False)
    seen = []
    for m in official.modules():
        if isinstance(m, ReparamLargeKernelConv):
            m.lkb_origin.conv.register_forward_pre_hook(
                lambda mod, args: seen.append(args[0].is_contiguous()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = official(x)
        assert len(seen) == 5 and all(seen)
        for out, ref in zip(model(x), reference):
            assert max_rel_diff(ref, out) <= 1e-5


@pytest.mark.parametrize('kernel,size,bias', [(31, 12, False), (13, 20, True), (7, 9, True)])
def test_large_kernel_conv_gradients_match_nn_conv2d(kernel, size, bias):
    """The fast CPU weight gradient (a grouped conv over the batch) equals autograd's, and so do
    the output and the input and bias gradients, in both memory formats."""
    from mmlightbb.models.layers import DepthwiseLargeKernelConv2d
    fast = DepthwiseLargeKernelConv2d(6, kernel, bias=bias)
    stock = nn.Conv2d(6, 6, kernel, 1, kernel // 2, groups=6, bias=bias)
    stock.load_state_dict(fast.state_dict())
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 6, size, size + 3).contiguous(memory_format=memory_format)
        grad_out = torch.randn(3, 6, size, size + 3)
        results = []
        for conv in (fast, stock):
            conv.zero_grad()
            xin = x.clone().requires_grad_()
            out = conv(xin)
            out.backward(grad_out)
            results.append([out, xin.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
        for got, want in zip(*results):
            assert got.shape == want.shape
            assert max_rel_diff(want, got) < 1e-5
    # inference is plain nn.Conv2d
    with torch.no_grad():
        assert torch.equal(fast(x), stock(x))


def test_norm_output_only_on_returned_maps():
    plain = RepLKNet(TINY, out_indices=(1, 2)).eval()
    normed = RepLKNet(TINY, out_indices=(1, 2), norm_output=True).eval()
    assert {k for k in normed.state_dict() if '.norm.' in k} == {
        f'stages.{i}.norm.{p}' for i in (1, 2) for p in BN_KEYS}
    randomize_bn_stats(normed)
    normed.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for i, a, b in zip((1, 2), plain(x), normed(x)):
            # applied to the tapped map only: the main path goes on un-normalized
            assert max_rel_diff(b, normed.stages[i].norm(a)) < 1e-6
    with torch.device('meta'):
        assert not any('.norm.' in k for k in RepLKNet('XL', num_classes=1000).state_dict())
        assert {k for k in RepLKNet('XL').state_dict() if '.norm.' in k} == {
            f'stages.{i}.norm.{p}' for i in range(4) for p in BN_KEYS}


def test_norm_cfg_reaches_every_bn():
    bn = RepLKNet(TINY_XL, num_classes=10, norm_output=True)
    sync = RepLKNet(TINY_XL, num_classes=10, norm_output=True,
                    norm_cfg=dict(type='SyncBN', eps=1e-3))
    norms = [m for m in sync.modules() if isinstance(m, _BatchNorm)]
    assert len(norms) == len([m for m in bn.modules() if isinstance(m, _BatchNorm)])
    assert all(isinstance(m, nn.SyncBatchNorm) and m.eps == 1e-3 for m in norms)
    assert list(sync.state_dict()) == list(bn.state_dict())


def test_drop_path_rates():
    with torch.device('meta'):
        model = RepLKNet('31B', drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.stages for b in s.blocks]
    expected = torch.linspace(0, 0.3, 24).tolist()
    # a RepLK block and the ConvFFN after it share the rate
    assert rates[0::2] == pytest.approx(expected) and rates[1::2] == pytest.approx(expected)
    assert isinstance(model.stages[0].blocks[0].drop_path, nn.Identity)


# ------------------------------------------------------------------------------ training
def test_frozen_modules_layout():
    with torch.device('meta'):
        model = RepLKNet(TINY_XL, norm_output=True)
    assert model.frozen_modules(0) == [model.stem]
    assert model.frozen_modules(1) == [model.stages[0].blocks]
    # a stage owns the transition into it; its output norm feeds the neck, is in no checkpoint
    # and stays trainable
    assert model.frozen_modules(2) == [model.transitions[0], model.stages[1].blocks]


def test_with_cp_checkpoints_stem_tail_and_blocks():
    """As the official ``use_checkpoint``: stem[1:] and every block recompute in backward,
    stem[0] does not (equality of outputs and gradients: test_backbone_contract.py)."""
    model = RepLKNet(TINY, drop_path_rate=0.0, with_cp=True).train()
    calls = {'stem.0': 0, 'stem.1': 0, 'stages.3.blocks.1': 0}
    for name in calls:  # pre-hooks: a recompute stops early, before post-hooks would run
        model.get_submodule(name).register_forward_pre_hook(
            lambda *args, name=name: calls.__setitem__(name, calls[name] + 1))
    sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert calls == {'stem.0': 1, 'stem.1': 2, 'stages.3.blocks.1': 2}


# ------------------------------------------------------------------------------ deploy
@pytest.mark.parametrize('arch', [TINY, TINY_XL, dict(TINY, small_kernel=3, dw_ratio=0.5)])
def test_deploy_equal(arch):
    model = RepLKNet(arch, num_classes=10, norm_output=True)
    assert_deploy_equal(model)
    keys = list(model.state_dict())
    assert not any('lkb_origin' in k or 'small_conv' in k or '.bn.' in k for k in keys)
    assert not any(k.startswith(('stages.0.blocks.0.prelkb_bn', 'stages.0.blocks.1.preffn_bn'))
                   for k in keys)
    # every BN is folded except the output norms and the classifier's (nothing follows them)
    assert {n for n, m in model.named_modules() if isinstance(m, _BatchNorm)} == {
        'stages.0.norm', 'stages.1.norm', 'stages.2.norm', 'stages.3.norm', 'norm'}
    lkb = model.stages[0].blocks[0].large_kernel.lkb_reparam
    assert lkb.padding == (6, 6) and lkb.bias is not None
    model.switch_to_deploy()  # idempotent


def test_deploy_kwargs_load_saved_deploy_forms(tmp_path):
    train = RepLKNet(TINY, num_classes=10).eval()
    randomize_bn_stats(train)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = train.classify(x)
    # official deploy checkpoint (structural_reparam): only the large kernels merged
    merged_sd = official_merged(train)
    merged = RepLKNet(TINY, num_classes=10, small_kernel_merged=True).eval()
    assert list(merged.state_dict()) == list(merged_sd)
    report, path = load_report(merged, merged_sd, tmp_path)
    assert report['missing'] == [] and report['unexpected'] == []
    # ours after switch_to_deploy(): also every BN folded
    train.switch_to_deploy()
    deploy = RepLKNet(TINY, num_classes=10, deploy=True).eval()
    deploy.load_state_dict(train.state_dict())
    with torch.no_grad():
        assert max_rel_diff(expected, merged.classify(x)) < 1e-5
        assert max_rel_diff(expected, deploy.classify(x)) < 1e-5
        merged.switch_to_deploy()
        assert max_rel_diff(expected, merged.classify(x)) < 1e-5
    with pytest.raises(ValueError, match='small_kernel_merged=True'):
        RepLKNet(TINY, num_classes=10).load_pretrained(path)
    with pytest.raises(ValueError, match='deploy=False'):
        load_report(RepLKNet(TINY, deploy=True), RepLKNet(TINY).state_dict(), tmp_path)


# ------------------------------------------------------------------------------ checkpoints
def test_load_official_classification_checkpoint(tmp_path):
    state = random_state(RepLKNet(TINY, num_classes=10))
    # {'model': ...} (official trainer) into the classifier: every key, nothing left over
    cls = RepLKNet(TINY, num_classes=10)
    report, _ = load_report(cls, {'model': state}, tmp_path)
    assert report['missing'] == [] and report['unexpected'] == []
    assert_loaded(cls, state)
    # flat file through init_cfg into the detection backbone: the classifier is left over, as
    # with the official code's strict=False load
    path = str(tmp_path / 'flat.pth')
    torch.save(state, path)
    det = RepLKNet(TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    det.init_weights()
    assert_loaded(det, state)
    report = det.load_pretrained(path)
    assert report['missing'] == []
    assert set(report['unexpected']) == {f'norm.{p}' for p in BN_KEYS} | {'head.weight',
                                                                          'head.bias'}
    # DataParallel dump
    report, _ = load_report(RepLKNet(TINY, num_classes=10),
                            {'module.' + k: v for k, v in state.items()}, tmp_path)
    assert report['missing'] == [] and report['unexpected'] == []


def test_load_mmpretrain_checkpoint(tmp_path):
    state = random_state(RepLKNet(TINY, num_classes=10))
    ckpt = {'meta': {'epoch': 300}, 'state_dict': to_mmpretrain(state)}
    cls = RepLKNet(TINY, num_classes=10)
    report, path = load_report(cls, ckpt, tmp_path)
    assert report['missing'] == [] and report['unexpected'] == []
    assert_loaded(cls, state)  # stages.3.norm -> norm, head.fc -> head
    det = RepLKNet(TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    det.init_weights()
    assert_loaded(det, state)
    report = det.load_pretrained(path)
    assert report['missing'] == []
    assert set(report['unexpected']) == {f'norm.{p}' for p in BN_KEYS} | {'head.weight',
                                                                          'head.bias'}
    # an explicit prefix='backbone.' (as mmdet configs write it) takes only that part
    cls = RepLKNet(TINY, num_classes=10)
    report = cls.load_pretrained(path, prefix='backbone.')
    assert set(report['missing']) == {'head.weight', 'head.bias'} and report['unexpected'] == []
    assert_loaded(cls, {k: v for k, v in state.items() if not k.startswith('head.')})


def test_load_official_detection_checkpoint(tmp_path):
    """An official XL detector: ``backbone.`` keys with all four output norms, plus the rest."""
    det = RepLKNet(TINY_XL, norm_output=True)
    state = random_state(det)
    ckpt = {'state_dict': {**{'backbone.' + k: v for k, v in state.items()},
                           'neck.lateral_convs.0.conv.weight': torch.zeros(4, 8, 1, 1)}}
    model = RepLKNet(TINY_XL, norm_output=True)
    report, _ = load_report(model, ckpt, tmp_path)
    assert report['missing'] == [] and report['unexpected'] == []
    assert_loaded(model, state)  # the output norms stay output norms


# ------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize('kwargs, match', [
    (dict(arch=dict(TINY, depths=[1, 1, 1])), 'depths must be 4'),
    (dict(arch=dict(TINY, large_kernel_sizes=[13, 11, 9, 8])), 'must be odd'),
    (dict(arch=TINY, small_kernel=4), 'small_kernel'),
    (dict(arch=TINY, small_kernel=9), 'small_kernel'),
    (dict(arch=TINY, dw_ratio=0), 'dw_ratio'),
    (dict(arch=TINY, mlp_ratio=-1), 'mlp_ratio'),
    (dict(arch=TINY, norm_cfg=dict(type='GN', num_groups=4)), 'BatchNorm'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RepLKNet(**kwargs)
