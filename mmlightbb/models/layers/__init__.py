from .conv_bn import ConvBN, bn_scale_shift, fold_bn, fuse_conv_norm
from .dynamic_conv import DynamicConv
from .norm import LayerNorm2d

__all__ = ['ConvBN', 'bn_scale_shift', 'fold_bn', 'fuse_conv_norm', 'LayerNorm2d', 'DynamicConv']
