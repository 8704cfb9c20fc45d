from .conv_bn import ConvBN, bn_scale_shift, fold_bn
from .norm import LayerNorm2d

__all__ = ['ConvBN', 'bn_scale_shift', 'fold_bn', 'LayerNorm2d']
