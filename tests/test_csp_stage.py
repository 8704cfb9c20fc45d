"""The shared CSP stage (mmlightbb/models/layers/csp_stage.py) and the backbones built from it."""
import pytest
import torch
from torch import nn

from mmlightbb.models.backbones import CSPConvNeXt, FasterNet, ParameterNet, RepLKNet
from mmlightbb.models.layers import CSPStage, csp_split, randomize_bn_stats
from mmlightbb.analysis.complexity import count_macs, count_params

from helpers import assert_deploy_equal, assert_frozen


def conv_block(channels):
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())


def test_split_concat_fuse_shapes_and_names():
    down = nn.Conv2d(8, 12, 3, stride=2, padding=1)
    stage = CSPStage(12, 16, lambda c: [conv_block(c), conv_block(c)], down=down, ratio=0.5)
    assert stage.block_channels == 6 and stage.conv1.conv.out_channels == 6
    assert [name for name, _ in stage.named_children()] == ['down', 'conv1', 'conv2', 'blocks',
                                                            'attn', 'conv3']
    assert isinstance(stage.attn, nn.Identity) and len(stage.blocks) == 2
    assert stage(torch.randn(2, 8, 16, 16)).shape == (2, 16, 8, 8)


def test_ratio_sets_the_block_part_and_scales_its_cost():
    def block_params(ratio):
        stage = CSPStage(16, 16, lambda c: conv_block(c), ratio=ratio)
        return stage.block_channels, sum(p.numel() for p in stage.blocks.parameters())

    assert block_params(0.25) == (4, 4 * 4 * 9 + 4)
    assert block_params(0.75) == (12, 12 * 12 * 9 + 12)
    stage = CSPStage(16, 24, lambda c: conv_block(c), ratio=0.25)
    assert stage.conv1.conv.out_channels == 12 and stage.conv2.conv.out_channels == 4
    assert stage(torch.randn(1, 16, 8, 8)).shape == (1, 24, 8, 8)


@pytest.mark.parametrize('ratio', [0, 1, 1.5, 0.3, 'half'])
def test_bad_ratios_are_refused(ratio):
    with pytest.raises(ValueError, match='ratio'):
        csp_split(16, ratio)


def test_run_block_runs_every_block_and_the_result_equals_the_plain_forward():
    stage = CSPStage(8, 8, lambda c: [conv_block(c) for _ in range(3)]).eval()
    calls = []

    def run_block(block, x):
        calls.append(block)
        return block(x)

    x = torch.randn(1, 8, 8, 8)
    assert torch.equal(stage(x, run_block), stage(x))
    assert calls == list(stage.blocks)


def test_forward_is_shortcut_and_blocks_concatenated_then_fused():
    stage = CSPStage(8, 10, lambda c: conv_block(c), ratio=0.5).eval()
    randomize_bn_stats(stage)
    x = torch.randn(1, 8, 6, 6)
    expected = stage.conv3(torch.cat([stage.conv1(x), stage.blocks(stage.conv2(x))], 1))
    assert torch.allclose(stage(x), expected)


@pytest.mark.parametrize('arch', ['tiny', 'e-mini'])
def test_cspconvnext_is_built_from_the_shared_stage(arch):
    model = CSPConvNeXt(arch=arch)
    assert all(type(stage) is CSPStage for stage in model.stages)
    assert all(stage.block_channels * 2 == stage.mid_channels for stage in model.stages)


def never_frozen(model, frozen_stages):
    """``frozen_stages`` freezes what it should, and the ``frozen_modules`` of indices 0..4
    cover disjoint parameter sets; returns the names in none of them (the always trainable)."""
    assert_frozen(model, frozen_stages)
    names = {id(p): n for n, p in model.named_parameters()}
    per_index = [{names[id(p)] for m in model.frozen_modules(i) for p in m.parameters()}
                 for i in range(5)]
    assert all(per_index) and sum(map(len, per_index)) == len(set().union(*per_index))
    return set(names.values()) - set().union(*per_index)


def assert_with_cp_same_gradients(model):
    """Activation checkpointing through the CSP stages' run_block: the same gradients (the
    drop-path masks drawn again in the recomputation are the same under the same seed)."""
    model.train()
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for with_cp in (False, True):
        model.with_cp = with_cp
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        sum(o.square().mean() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


# ------------------------------------------------------------------- RepLKNet(csp=...)

TINY_REPLK = dict(large_kernel_sizes=[13, 11, 9, 7], depths=[1, 1, 2, 1], channels=[8, 16, 24, 32],
                  small_kernel=5, dw_ratio=1.0)


def tiny_csp_replknet(**kwargs):
    kwargs.setdefault('drop_path_rate', 0.)
    return RepLKNet(arch=TINY_REPLK, csp=dict(ratio=0.5), **kwargs)


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 2, 3), (3, ), (0, 2)])
def test_replknet_csp_out_channels_and_shapes(out_indices):
    model = tiny_csp_replknet(out_indices=out_indices).eval()
    assert model.out_channels == [TINY_REPLK['channels'][i] for i in out_indices]
    assert all(type(stage) is CSPStage for stage in model.stages) and not model.transitions
    outs = model(torch.randn(2, 3, 70, 45))
    sides = [(18, 12), (9, 6), (5, 3), (3, 2)]
    assert [tuple(o.shape) for o in outs] == [(2, c, *sides[i]) for c, i in
                                              zip(model.out_channels, out_indices)]
    assert [m.mid_channels for m in model.stages] == [8, 12, 20, 28]
    assert [m.block_channels for m in model.stages] == [4, 6, 10, 14]


@pytest.mark.parametrize('frozen_stages', [-1, 0, 2, 4])
def test_replknet_csp_frozen_stages_partition_the_parameters(frozen_stages):
    rest = never_frozen(tiny_csp_replknet(frozen_stages=frozen_stages, norm_output=True),
                        frozen_stages)
    assert rest and all(n.startswith('stages.') and '.norm.' in n for n in rest)


def test_replknet_csp_deploy_keeps_outputs_and_deploy_form_loads():
    torch.manual_seed(0)
    model = tiny_csp_replknet()
    assert_deploy_equal(model)
    deployed = tiny_csp_replknet(deploy=True)
    assert deployed.load_state_dict(model.state_dict()) is not None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), deployed.eval()(x)):
            assert torch.equal(a, b)


def test_replknet_csp_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    assert_with_cp_same_gradients(tiny_csp_replknet(drop_path_rate=0.1))


def test_replknet_csp_31b_arch_is_31b_in_csp_stages():
    with torch.device('meta'):
        plain, csp = RepLKNet(arch='31B'), RepLKNet(arch='csp-31B')
    assert csp.csp == dict(ratio=0.5) and plain.csp is None
    assert csp.out_channels == plain.out_channels == [128, 256, 512, 1024]
    # 78.84 M -> 15.40 M parameters (the blocks run on half of the inner width)
    assert count_params(plain) == 78_837_120
    assert count_params(csp) == 15_400_768
    assert [len(s.blocks) for s in csp.stages] == [4, 4, 36, 4]


def test_replknet_csp_31b_macs():
    model = RepLKNet(arch='csp-31B').eval()
    macs = count_macs(model, (1, 3, 224, 224), conv_linear_only=True)
    assert abs(macs / 1e9 - 3.696) < 0.01  # 31B: 15.43 G


@pytest.mark.parametrize('csp, match', [(dict(ratio=0), 'ratio'), (dict(ratio=0.3), 'ratio'),
                                        (dict(split=0.5), 'unknown keys'), ('yes', 'csp must')])
def test_replknet_bad_csp_is_refused(csp, match):
    with pytest.raises(ValueError, match=match):
        RepLKNet(arch=TINY_REPLK, csp=csp)


# ------------------------------------------------------------------ FasterNet(csp=...)

TINY_FN = dict(channels=(16, 32, 48, 64), depths=(1, 2, 1, 1), act_cfg=dict(type='ReLU'),
               drop_path_rate=0.0)


def tiny_csp_fasternet(**kwargs):
    return FasterNet(arch=TINY_FN, csp=dict(ratio=0.5), **kwargs)


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 2, 3), (3, ), (0, 2)])
def test_fasternet_csp_out_channels_and_shapes(out_indices):
    model = tiny_csp_fasternet(out_indices=out_indices).eval()
    assert model.out_channels == [TINY_FN['channels'][i] for i in out_indices]
    assert len(model.stages) == 4 and all(type(s) is CSPStage for s in model.stages)
    assert [s.mid_channels for s in model.stages] == [16, 24, 40, 56]
    assert [len(s.blocks) for s in model.stages] == list(TINY_FN['depths'])
    # PConv inside the CSP part convolves a quarter of the block part
    assert [s.blocks[0].spatial_mixing.conv_channels for s in model.stages] == [2, 3, 5, 7]
    outs = model(torch.randn(2, 3, 64, 48))
    sides = [(16, 12), (8, 6), (4, 3), (2, 1)]
    assert [tuple(o.shape) for o in outs] == [(2, c, *sides[i]) for c, i in
                                              zip(model.out_channels, out_indices)]


@pytest.mark.parametrize('frozen_stages', [-1, 0, 2, 4])
def test_fasternet_csp_frozen_stages_partition_the_parameters(frozen_stages):
    rest = never_frozen(tiny_csp_fasternet(frozen_stages=frozen_stages), frozen_stages)
    assert rest and all(n.startswith('norm') for n in rest)  # the new output norms


def test_fasternet_csp_deploy_keeps_outputs_also_on_the_cpu_gemm_path():
    torch.manual_seed(0)
    model = tiny_csp_fasternet()
    assert_deploy_equal(model, shape=(2, 3, 64, 64))
    blocks = [b for s in model.stages for b in s.blocks]
    x = torch.randn(1, blocks[0].mlp[0].in_channels, 8, 8).contiguous(
        memory_format=torch.channels_last)
    assert blocks[0]._runs_as_matmuls(x)  # the deployed blocks take FasterNet's GEMM path


def test_fasternet_csp_with_cp_and_classify():
    torch.manual_seed(0)
    assert_with_cp_same_gradients(tiny_csp_fasternet(drop_path_rate=0.1))
    x = torch.randn(2, 3, 32, 32)
    assert tiny_csp_fasternet(num_classes=5).eval().classify(x).shape == (2, 5)


def test_fasternet_csp_t2_arch_is_t2_in_csp_stages():
    with torch.device('meta'):
        plain, csp = FasterNet(arch='t2'), FasterNet(arch='csp-t2')
    assert csp.csp == dict(ratio=0.5) and plain.csp is None
    assert csp.out_channels == plain.out_channels == [96, 192, 384, 768]
    assert [len(s.blocks) for s in csp.stages] == [1, 2, 8, 2]
    assert [s.block_channels for s in csp.stages] == [48, 72, 144, 288]
    assert count_params(plain) == 12_721_728 and count_params(csp) == 3_789_720


def test_fasternet_csp_refuses_a_block_part_narrower_than_n_div():
    with pytest.raises(ValueError, match='fewer than n_div'):
        FasterNet(arch=dict(TINY_FN, channels=(4, 8, 8, 8)), csp=dict(ratio=0.5))
    with pytest.raises(ValueError, match='csp must'):
        FasterNet(arch='t0', csp='yes')


# --------------------------------------------------------------- ParameterNet(csp=...)

TINY_PN = dict(cfgs=[[[3, 16, 16, 0, 1]], [[3, 48, 24, 0, 2]], [[3, 72, 24, 0, 1]],
                     [[5, 72, 40, 0.25, 2]], [[3, 120, 40, 0.25, 1]], [[3, 240, 80, 0, 2]],
                     [[3, 200, 80, 0, 1], [3, 480, 112, 0.25, 1]], [[5, 672, 160, 0.25, 2]],
                     [[3, 960, 160, 0.25, 1]]],
               width=0.5, act_cfg=dict(type='HSwish'), num_experts=4)


def tiny_csp_parameternet(**kwargs):
    return ParameterNet(arch=TINY_PN, csp=dict(ratio=0.5), **kwargs)


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 3)])
def test_parameternet_csp_out_channels_and_shapes(out_indices):
    with torch.device('meta'):
        plain = ParameterNet(arch=TINY_PN, out_indices=out_indices)
    model = tiny_csp_parameternet(out_indices=out_indices).eval()
    assert model.out_channels == plain.out_channels
    assert [type(row) is CSPStage for row in model.blocks] == [False] + [True] * 4 + [False]
    assert [len(model.blocks[i].blocks) for i in range(1, 5)] == [1, 1, 2, 1]
    outs = model(torch.randn(2, 3, 70, 45))
    sides = [(18, 12), (9, 6), (5, 3), (3, 2)]
    assert [tuple(o.shape) for o in outs] == [(2, c, *sides[i]) for c, i in
                                              zip(model.out_channels, out_indices)]


@pytest.mark.parametrize('frozen_stages', [-1, 0, 2, 4])
def test_parameternet_csp_frozen_stages_partition_the_parameters(frozen_stages):
    assert never_frozen(tiny_csp_parameternet(frozen_stages=frozen_stages), frozen_stages) == set()


def test_parameternet_csp_deploy_classify_and_cost():
    torch.manual_seed(0)
    assert_deploy_equal(tiny_csp_parameternet(), shape=(2, 3, 64, 64))
    assert tiny_csp_parameternet(num_classes=10).eval().classify(
        torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with torch.device('meta'):
        plain, csp = ParameterNet(arch='600m'), ParameterNet(arch='600m', csp=dict(ratio=0.5))
    assert csp.out_channels == plain.out_channels == [44, 76, 212, 1824]
    assert count_params(plain) == 30_887_504 and count_params(csp) == 11_043_760


def test_parameternet_csp_needs_stride_two_blocks_to_start_rows():
    cfgs = [list(row) for row in TINY_PN['cfgs']]
    cfgs[1] = [[3, 48, 24, 0, 1], [3, 48, 24, 0, 2]]
    with pytest.raises(ValueError, match='start a row'):
        ParameterNet(arch=dict(TINY_PN, cfgs=cfgs), csp=dict(ratio=0.5))
