"""mmlightbb: lightweight and large-kernel CNN backbones for MMDetection 3.x.

``import mmlightbb`` (or ``custom_imports=dict(imports=['mmlightbb'])`` in a config) registers the
package's backbones, datasets, transforms and hooks in mmdet's registries and applies the changes
to torch and mmengine that :mod:`mmlightbb.engine.patches` lists (safe checkpoint loading, atomic
checkpoint writes, the backbone/neck channel check, ...).
"""
from . import datasets, engine, models  # noqa: F401  (importing registers the modules)
from .engine.patches import apply_all
from .version import __version__

apply_all()

__all__ = ['__version__']
