from .base import BaseBackbone
from .fasternet import FasterNet

__all__ = ['BaseBackbone', 'FasterNet']
