from .conv_bn import ConvBN, bn_scale_shift, fold_bn, fuse_conv_norm, randomize_bn_stats
from .dynamic_conv import DynamicConv
from .large_kernel_conv import DepthwiseLargeKernelConv2d
from .memory_format import cpu_channels_last, nchw_outputs, set_cpu_channels_last
from .norm import LayerNorm2d

__all__ = ['ConvBN', 'bn_scale_shift', 'fold_bn', 'fuse_conv_norm', 'LayerNorm2d', 'DynamicConv',
           'DepthwiseLargeKernelConv2d', 'cpu_channels_last', 'nchw_outputs',
           'set_cpu_channels_last', 'randomize_bn_stats']
