"""mmlightbb: lightweight and large-kernel CNN backbones for MMDetection 3.x.

``import mmlightbb`` (or ``custom_imports=dict(imports=['mmlightbb'])`` in a config) registers every
module of the package in mmdet's registries and lets torch >= 2.6 load Runner checkpoints safely.
"""
from .utils import register_runner_checkpoint_globals
from .version import __version__

register_runner_checkpoint_globals()

from . import models  # noqa: E402,F401  (registers backbones and layers)

__all__ = ['__version__']
