"""mmlightbb: lightweight and large-kernel CNN backbones for MMDetection 3.x.

``import mmlightbb`` (or ``custom_imports=dict(imports=['mmlightbb'])`` in a config) registers every
module of the package in mmdet's registries, lets torch >= 2.6 load Runner checkpoints safely and
makes mmengine write local checkpoints atomically.
"""
from .utils import register_atomic_local_backend, register_runner_checkpoint_globals
from .version import __version__

register_runner_checkpoint_globals()
register_atomic_local_backend()

# registers datasets, transforms, backbones and hooks (incl. the atomic CheckpointHook)
from . import datasets, engine, models  # noqa: E402,F401

__all__ = ['__version__']
