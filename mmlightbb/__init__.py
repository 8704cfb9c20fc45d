"""mmlightbb: lightweight and large-kernel CNN backbones for MMDetection 3.x.

``import mmlightbb`` (or ``custom_imports=dict(imports=['mmlightbb'])`` in a config) registers new
names only: the backbones in mmdet's ``MODELS``, ``SonarDataset`` and its transforms, the hooks,
``AutocastTestLoop``, ``RecoverableRunner``, the ``'atomic_local'`` file backend and the
``mmlightbb://`` checkpoint scheme. Nothing that existed in torch, mmengine, mmcv or mmdet is
changed; a config selects what it wants (``configs/_base_/mmlightbb_runtime.py`` selects all).
"""
from . import datasets, engine, models  # noqa: F401  (importing registers the modules)
from .version import __version__

__all__ = ['__version__']
