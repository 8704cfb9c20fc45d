"""mmlightbb: lightweight and large-kernel CNN backbones for MMDetection 3.x.

``import mmlightbb`` (or ``custom_imports=dict(imports=['mmlightbb'])`` in a config) registers every
module of the package in mmdet's registries and lets torch >= 2.6 load Runner checkpoints safely.
"""
from .utils import register_runner_checkpoint_globals
from .version import __version__

register_runner_checkpoint_globals()

from . import datasets, models  # noqa: E402,F401  (registers datasets, transforms, backbones)

__all__ = ['__version__']
