from .base import BaseBackbone
from .convnext import ConvNeXt
from .csp_convnext import CSPConvNeXt
from .fasternet import FasterNet
from .parameternet import ParameterNet
from .replknet import RepLKNet

# the backbone families of mmlightbb, for tools that iterate over them
BACKBONES = {cls.__name__: cls for cls in (ConvNeXt, CSPConvNeXt, FasterNet, RepLKNet, ParameterNet)}

__all__ = ['BaseBackbone', 'BACKBONES', 'ConvNeXt', 'CSPConvNeXt', 'FasterNet', 'ParameterNet',
           'RepLKNet']
