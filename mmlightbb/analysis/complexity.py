"""Parameter and MAC counts with mmengine's FlopAnalyzer (which counts one multiply-add as one "flop")."""
import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

# Ops that the papers' "FLOPs" (fvcore/thop-style MAC counts of conv and linear layers) leave out.
NON_MATMUL_OPS = ('aten::batch_norm', 'aten::group_norm', 'aten::layer_norm', 'aten::instance_norm',
                  'aten::upsample_nearest2d', 'aten::upsample_bilinear2d',
                  'aten::adaptive_avg_pool2d', 'aten::grid_sampler')


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _Call(nn.Module):
    """Wrap a method of a module (e.g. ``model.classify``) so FlopAnalyzer can trace it.

    The owning module is registered as a child, so the tracer sees its parameters as inputs rather
    than constants.
    """

    def __init__(self, method):
        super().__init__()
        self.owner = method.__self__
        self.name = method.__name__

    def forward(self, x):
        return getattr(self.owner, self.name)(x)


def _zero_macs(inputs, outputs) -> int:
    return 0


def count_macs(fn, shape=(1, 3, 224, 224), conv_linear_only: bool = False) -> int:
    """Multiply-accumulates of one forward of ``fn`` (a module or callable) on a random input.

    With ``conv_linear_only`` the norm/pooling/upsampling ops are not counted, as in the papers'
    tables; otherwise mmengine's defaults (they add about 1-2% for BN-heavy nets).
    """
    module = fn if isinstance(fn, nn.Module) else _Call(fn)
    analyzer = FlopAnalyzer(module, (torch.randn(shape), ))
    if conv_linear_only:
        # a handle of None only silences the op's warning in mmengine 0.10.7; a zero count skips it
        analyzer.set_op_handle(**{op: _zero_macs for op in NON_MATMUL_OPS})
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        return analyzer.total()
