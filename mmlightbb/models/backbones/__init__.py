from .base import BaseBackbone

__all__ = ['BaseBackbone']
