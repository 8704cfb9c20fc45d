"""The backbone contract (docs/backbones.md) for every registered backbone and arch.

Every family in ``mmlightbb.models.backbones.BACKBONES`` runs every check with every arch of its
``arch_settings`` plus small custom arch dicts (``CUSTOM_ARCHS``, which also exercise the
custom-arch path). Checks on structure and shapes run on the meta device (no memory, no
arithmetic), so the full matrix is fast; checks that run numbers through a model (deploy,
activation checkpointing) run on the custom archs by default and on the published ones with
``-m slow``. The family test files keep only what is specific to their family.
"""
import re

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmlightbb.models.backbones import BACKBONES
from mmlightbb.analysis.benchmark import max_rel_diff

from helpers import CUSTOM_ARCHS, assert_deploy_equal, assert_frozen, build, loss_of

OUT_INDICES = [(0, 1, 2, 3), (1, 2, 3), (3, ), (0, 2)]
# Output norms (``norm_output``): not part of any stage, so ``frozen_stages`` leaves them trainable.
OUTPUT_NORM = re.compile(r'(norm\d|norms\.\d+|stages\.\d+\.norm)\.')


def all_archs(slow_real=False):
    """(backbone, arch) parameters: every arch of every backbone, then its custom archs.
    ``slow_real``: a check that runs numbers through the model, marked slow but for the custom
    archs."""
    params = []
    for name, cls in BACKBONES.items():
        customs = CUSTOM_ARCHS.get(name, {})  # test_every_backbone_has_a_custom_arch
        for arch in [*cls.arch_settings, *customs]:
            slow = slow_real and arch not in customs
            params.append(pytest.param(name, arch, id=f'{name}-{arch}',
                                       marks=[pytest.mark.slow] if slow else []))
    return params


def one_per_backbone():
    return [pytest.param(name, id=name) for name in BACKBONES]


def expected_side(name, arch_settings, side, index):
    """Side of the stride 4 * 2**index map: floor where non-overlapping patches (4x4/s4, 2x2/s2)
    down-sample, ceil where padded 3x3/s2 (or k x k/s2) convs do."""
    ceil_stem = name in ('RepLKNet', 'ParameterNet')
    ceil_down = ceil_stem or (name == 'CSPConvNeXt' and arch_settings['version'] == 'v1')
    side = -(-side // 4) if ceil_stem else side // 4
    for _ in range(index):
        side = -(-side // 2) if ceil_down else side // 2
    return side


# ----------------------------------------------------------------------------- structure
def test_every_backbone_has_a_custom_arch():
    assert set(CUSTOM_ARCHS) == set(BACKBONES), 'add a small arch of each family to CUSTOM_ARCHS'


@pytest.mark.parametrize('name, arch', all_archs())
def test_out_channels_and_shapes(name, arch):
    """``out_channels`` and the returned maps for several ``out_indices``, at sizes that are
    and are not multiples of 32; the stage widths are the arch's ``channels`` where it has them.
    (A published arch runs the maps of the subsets at one size: which maps a subset returns is
    the family's code, run for every subset by the custom archs.)"""
    for out_indices in OUT_INDICES:
        model = build(name, arch, 'meta', out_indices=out_indices).eval()
        assert model.out_indices == out_indices
        if 'channels' in model.arch:
            assert model.out_channels == [list(model.arch['channels'])[i] for i in out_indices]
        assert len(model.out_channels) == len(out_indices)
        if len(out_indices) == 4:
            sizes = ((64, 64), (70, 45))
        else:
            sizes = ((70, 45), ) if arch in CUSTOM_ARCHS.get(name, {}) else ()
        for h, w in sizes:
            outs = model(torch.empty(2, 3, h, w, device='meta'))
            assert isinstance(outs, tuple) and len(outs) == len(out_indices)
            for out, i, c in zip(outs, out_indices, model.out_channels):
                assert out.shape == (2, c, expected_side(name, model.arch, h, i),
                                     expected_side(name, model.arch, w, i)), (out_indices, i)


@pytest.mark.parametrize('name, arch', all_archs())
@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 3, 4])
def test_frozen_stages(name, arch, frozen_stages):
    """mmdet's semantics through ``frozen_modules``: index 0 is the stem, k the k-th stage with
    its down-sampling; the indices partition every parameter but the output norms, and
    ``frozen_stages=k`` freezes exactly indices 0..k (eval mode, no gradients), from the
    constructor on: DDP wraps the model before ``train()``."""
    model = build(name, arch, 'meta', frozen_stages=frozen_stages)
    frozen_when_built = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert_frozen(model, frozen_stages)
    names = {id(p): n for n, p in model.named_parameters()}
    per_index = [{names[id(p)] for m in model.frozen_modules(i) for p in m.parameters()}
                 for i in range(5)]
    assert all(per_index), [len(s) for s in per_index]  # every index owns parameters
    owned = set().union(*per_index)
    assert sum(map(len, per_index)) == len(owned), 'an index shares parameters with another'
    rest = sorted(set(names.values()) - owned)
    assert all(OUTPUT_NORM.match(n) for n in rest), rest[:8]
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == frozen_when_built == set().union(*per_index[:frozen_stages + 1])


def test_a_subclass_is_frozen_once_it_is_built():
    """Freezing waits for the outermost ``__init__``: layers that a subclass adds after
    ``super().__init__()`` exist (and are frozen) by then."""

    class ConvNeXtWithPreStem(BACKBONES['ConvNeXt']):

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.pre_stem = nn.Conv2d(3, 3, 1)

        def frozen_modules(self, index):
            return super().frozen_modules(index) + ([self.pre_stem] if index == 0 else [])

    arch = CUSTOM_ARCHS['ConvNeXt']['custom']
    model = ConvNeXtWithPreStem(arch=arch, frozen_stages=0)
    assert not any(p.requires_grad for p in model.pre_stem.parameters())
    assert not model.pre_stem.training
    assert all(p.requires_grad for p in model.stages.parameters())
    assert all(p.requires_grad for p in ConvNeXtWithPreStem(arch=arch).parameters())


@pytest.mark.parametrize('name, arch', all_archs())
def test_norm_eval(name, arch):
    """``norm_eval=True``: train() leaves every BatchNorm in eval mode and all else training."""
    model = build(name, arch, 'meta', norm_eval=True).train()
    for module_name, module in model.named_modules():
        assert module.training != isinstance(module, _BatchNorm), module_name
    assert all(m.training for m in build(name, arch, 'meta').train().modules())


@pytest.mark.parametrize('name', one_per_backbone())
def test_input_channels(name):
    model = build(name, device='meta')
    with pytest.raises(ValueError, match=r'expects input of shape \(N, 3, H, W\).*in_channels=1'):
        model(torch.empty(1, 1, 64, 64, device='meta'))
    gray = build(name, device='meta', in_channels=1).eval()
    assert len(gray(torch.empty(1, 1, 64, 64, device='meta'))) == 4


@pytest.mark.parametrize('name', one_per_backbone())
@pytest.mark.parametrize('kwargs, match', [
    pytest.param(dict(out_indices=(4, )), 'out_indices', id='out_indices'),
    pytest.param(dict(frozen_stages=5), 'frozen_stages', id='frozen_stages'),
    pytest.param(dict(drop_path_rate=1.0), 'drop_path_rate', id='drop_path_rate'),
    pytest.param(dict(num_classes=-1), 'num_classes', id='num_classes'),
])
def test_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(name, device='meta', **kwargs)


def test_drop_path_rates_rise_linearly_over_all_blocks():
    rates = build('ConvNeXt', device='meta').drop_path_rates(0.3, [1, 2, 3, 1])
    assert [len(stage) for stage in rates] == [1, 2, 3, 1]
    assert sum(rates, []) == torch.linspace(0, 0.3, 7).tolist()


@pytest.mark.parametrize('name', one_per_backbone())
def test_registry_and_classify(name):
    """mmdet's registry builds it; ``classify()`` gives logits with ``num_classes`` and raises a
    ValueError that says how to get them without."""
    from mmdet.registry import MODELS
    model = MODELS.build(dict(type=name, arch=next(iter(CUSTOM_ARCHS[name].values())),
                               out_indices=(1, 2, 3)))
    assert type(model) is BACKBONES[name] and len(model.out_channels) == 3
    with pytest.raises(ValueError, match='num_classes=1000'):
        model.classify(torch.randn(1, 3, 32, 32))
    classifier = build(name, num_classes=10).eval()
    with torch.no_grad():
        assert classifier.classify(torch.randn(2, 3, 64, 64)).shape == (2, 10)


# ------------------------------------------------------------------------------ weights
def _save(tmp_path, obj):
    path = str(tmp_path / 'ckpt.pth')
    torch.save(obj, path)
    return path


@pytest.mark.parametrize('name', one_per_backbone())
def test_load_errors(name, tmp_path):
    """No matching key, a shape mismatch and a prefix no key has: one clear ValueError each."""
    model = build(name)
    state = model.state_dict()
    path = _save(tmp_path, {'model': {'encoder.layer.weight': torch.zeros(3)}})
    with pytest.raises(ValueError, match=r'none of the 1 keys .* matches this model'):
        model.load_pretrained(path)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    wrong = dict(state, **{key: torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])})
    path = _save(tmp_path, {'state_dict': wrong})
    model.init_cfg = dict(type='Pretrained', checkpoint=path)
    with pytest.raises(ValueError, match=r'1 shapes .* disagree with the model') as error:
        model.init_weights()
    assert f'{key}: file ({state[key].shape[0] + 1}, ' in str(error.value)
    path = _save(tmp_path, {f'backbone.{k}': v for k, v in state.items()})
    with pytest.raises(ValueError, match="no key of .* starts with prefix 'neck.'"):
        model.load_pretrained(path, prefix='neck.')
    assert model.load_pretrained(path, prefix='backbone.')['matched'] == len(state)


# ------------------------------------------------------------------------ real numbers
@pytest.mark.parametrize('name, arch', all_archs(slow_real=True))
def test_deploy_keeps_outputs(name, arch):
    """``switch_to_deploy()`` (BNs randomized first) keeps every output to 1e-5 relative, returns
    the model and is idempotent; outputs are NCHW-contiguous before and after."""
    model = build(name, arch)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert all(out.is_contiguous() for out in model.eval()(x))
    assert_deploy_equal(model, shape=(2, 3, 64, 64))
    with torch.no_grad():
        deployed = model(x)
        assert model.switch_to_deploy() is model
        again = model(x)
    for first, second in zip(deployed, again):
        assert second.is_contiguous() and torch.equal(first, second)


@pytest.mark.parametrize('name, arch', all_archs(slow_real=True))
def test_with_cp_matches(name, arch):
    """``with_cp`` (activation checkpointing) recomputes blocks in backward and gives the same
    outputs and gradients, stochastic depth included."""
    torch.manual_seed(0)
    model = build(name, arch, drop_path_rate=0.1).train()
    calls = [0]
    for module in model.modules():
        module.register_forward_pre_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    x = torch.randn(2, 3, 32, 32)
    results = []
    for with_cp in (False, True):
        model.with_cp = with_cp
        model.zero_grad(set_to_none=True)
        calls[0] = 0
        torch.manual_seed(1)
        outs = model(x)
        loss_of(outs).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert all(g is not None for g in grads.values()), \
            [n for n, g in grads.items() if g is None]
        results.append((outs, grads, calls[0]))
    (outs, grads, calls), (cp_outs, cp_grads, cp_calls) = results
    assert cp_calls > calls  # blocks ran again in backward
    for out, cp_out in zip(outs, cp_outs):
        assert max_rel_diff(out, cp_out) <= 1e-5
    for key, grad in grads.items():
        assert max_rel_diff(grad, cp_grads[key]) <= 1e-5, key
