from .conv_bn import ConvBN, bn_scale_shift, fold_bn, fuse_conv_norm
from .dynamic_conv import DynamicConv
from .large_kernel_conv import DepthwiseLargeKernelConv2d
from .norm import LayerNorm2d

__all__ = ['ConvBN', 'bn_scale_shift', 'fold_bn', 'fuse_conv_norm', 'LayerNorm2d', 'DynamicConv',
           'DepthwiseLargeKernelConv2d']
