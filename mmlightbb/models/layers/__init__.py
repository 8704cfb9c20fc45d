from .conv_bn import (ConvBN, ConvBNSequential, bn_scale_shift, conv_bn_layers, fold_bn,
                      fuse_conv_norm, randomize_bn_stats)
from .csp_stage import CSPStage, csp_split, parse_csp_cfg
from .dynamic_conv import DynamicConv
from .large_kernel_conv import DepthwiseLargeKernelConv2d
from .memory_format import cpu_channels_last, nchw_outputs, set_cpu_channels_last
from .norm import LayerNorm2d

__all__ = ['ConvBN', 'ConvBNSequential', 'bn_scale_shift', 'conv_bn_layers', 'fold_bn',
           'fuse_conv_norm', 'LayerNorm2d', 'DynamicConv', 'DepthwiseLargeKernelConv2d',
           'cpu_channels_last', 'nchw_outputs', 'set_cpu_channels_last', 'randomize_bn_stats',
           'CSPStage', 'csp_split', 'parse_csp_cfg']
