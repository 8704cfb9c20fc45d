"""Helpers shared by the backbone tests."""
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmlightbb.analysis.benchmark import max_rel_diff  # noqa: F401  (re-exported; ref first)
from mmlightbb.analysis.complexity import count_macs, count_params  # noqa: F401  (re-exported)
from mmlightbb.models.layers import randomize_bn_stats  # noqa: F401  (re-exported)
from mmlightbb.models.layers import set_cpu_channels_last


def assert_deploy_equal(model: nn.Module, shape=(2, 3, 64, 64), tol=1e-5, seed=0) -> None:
    """Outputs before and after ``switch_to_deploy()`` agree within ``tol`` (relative), per map."""
    torch.manual_seed(seed)
    randomize_bn_stats(model, seed)
    model.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    assert len(before) == len(after)
    for b, a in zip(before, after):
        assert a.shape == b.shape
        diff = max_rel_diff(b, a)
        assert diff <= tol, f'deploy changed the output: max relative difference {diff:.2e} > {tol}'


def assert_frozen(model, frozen_stages: int) -> None:
    """Frozen parts have no trainable params and their norms stay in eval mode after train()."""
    model.train()
    for index in range(frozen_stages + 1):
        for module in model.frozen_modules(index):
            assert not module.training
            for m in module.modules():
                if isinstance(m, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                    assert not m.training
            assert all(not p.requires_grad for p in module.parameters())
    for index in range(frozen_stages + 1, 5):
        for module in model.frozen_modules(index):
            assert all(p.requires_grad for p in module.parameters())


def assert_cpu_channels_last_equals_nchw(model: nn.Module, first_layer: nn.Module) -> None:
    """CPU inference feeds ``first_layer`` channels_last maps, returns NCHW-contiguous maps and
    equals the official NCHW execution (``set_cpu_channels_last(model, False)``) to 1e-5."""
    seen = []
    first_layer.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model(x)
        reference = set_cpu_channels_last(model, False)(x)
    assert seen == [True, False]
    for out, ref in zip(outs, reference):
        assert out.is_contiguous() and max_rel_diff(ref, out) <= 1e-5
