"""Every change that ``import mmlightbb`` makes to how torch and mmengine behave, in one place.

Each :class:`Patch` says what it changes and why, and can be applied and undone; both are
idempotent. ``mmlightbb/__init__.py`` calls :func:`apply_all`; :func:`undo_all` restores stock
torch/mmengine (the tests use it to show the stock behaviour each patch exists for). Plain
registrations of new names in mmdet's registries (the backbones, ``SonarDataset``, hooks,
transforms) change nothing that exists and are not listed here.
"""
import functools
import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List

import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.fileio import io as mmengine_io
from mmengine.registry import HOOKS, MODELS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn

from ..models.layers import LayerNorm2d
from ..models.neck_check import on_submodule_registered
from .checkpoint import RUNNER_CHECKPOINT_GLOBALS, load_from_local
from .downloads import SCHEME, load_from_mmlightbb
from .fileio import AtomicLocalBackend
from .hooks import AtomicCheckpointHook
from .randomness import wrap_build_train_loop

__all__ = ['Patch', 'PATCHES', 'apply_all', 'undo_all']


@dataclass
class Patch:
    name: str
    why: str
    apply_fn: Callable[[dict], None]
    undo_fn: Callable[[dict], None]
    saved: dict = field(default_factory=dict)  # what apply replaced, for undo
    applied: bool = False

    def apply(self) -> None:
        if not self.applied:
            self.apply_fn(self.saved)
            self.applied = True

    def undo(self) -> None:
        if self.applied:
            self.undo_fn(self.saved)
            self.saved.clear()
            self.applied = False


# --------------------------------------------------------------------- torch.load allow-list
def _add_safe_globals(saved: dict) -> None:
    saved['safe_globals'] = list(torch.serialization.get_safe_globals())
    torch.serialization.add_safe_globals(RUNNER_CHECKPOINT_GLOBALS)


def _restore_safe_globals(saved: dict) -> None:
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved['safe_globals'])


# ------------------------------------------------------------- mmengine's local file backend
def _drop_cached_backends(kind: type) -> None:
    # mmengine.fileio.put/dump reuse cached backend singletons made before the swap
    for key, backend in list(mmengine_io.backend_instances.items()):
        if type(backend) is kind:
            del mmengine_io.backend_instances[key]


def _use_atomic_backend(saved: dict) -> None:
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    _drop_cached_backends(LocalBackend)


def _use_stock_backend(saved: dict) -> None:
    register_backend('local', LocalBackend, force=True, prefixes='')
    _drop_cached_backends(AtomicLocalBackend)


# ------------------------------------------------------- CheckpointLoader's local-path scheme
def _use_safe_loader(saved: dict) -> None:
    saved['loader'] = CheckpointLoader._schemes['']
    CheckpointLoader._schemes[''] = load_from_local


def _restore_loader(saved: dict) -> None:
    CheckpointLoader._schemes[''] = saved['loader']


# --------------------------------------------------------------- names in mmengine registries
def _replace_names(registry, names: Dict[str, type]) -> Callable[[dict], None]:
    def apply(saved: dict) -> None:
        saved['previous'] = {name: registry._module_dict.get(name) for name in names}
        registry._module_dict.update(names)

    return apply


def _restore_names(registry) -> Callable[[dict], None]:
    def undo(saved: dict) -> None:
        for name, previous in saved['previous'].items():
            if previous is None:
                registry._module_dict.pop(name, None)
            else:
                registry._module_dict[name] = previous

    return undo


# ---------------------------------------------------------------- backbone/neck channel check
def _install_neck_check(saved: dict) -> None:
    saved['handle'] = nn.modules.module.register_module_module_registration_hook(
        on_submodule_registered)


def _remove_neck_check(saved: dict) -> None:
    saved['handle'].remove()


# --------------------------------------------- Runner.build_train_loop: resumable randomness
def _wrap_build_train_loop(saved: dict) -> None:
    saved['build'] = Runner.__dict__['build_train_loop']
    Runner.build_train_loop = wrap_build_train_loop(saved['build'])


def _unwrap_build_train_loop(saved: dict) -> None:
    Runner.build_train_loop = saved['build']


# ------------------------------------------------- CheckpointLoader scheme 'mmlightbb://NAME'
def _register_weights_scheme(saved: dict) -> None:
    saved['loader'] = CheckpointLoader._schemes.get(SCHEME)
    CheckpointLoader.register_scheme(SCHEME, load_from_mmlightbb, force=True)


def _unregister_weights_scheme(saved: dict) -> None:
    if saved['loader'] is None:
        CheckpointLoader._schemes.pop(SCHEME, None)
    else:
        CheckpointLoader.register_scheme(SCHEME, saved['loader'], force=True)


# ------------------------------------------ mmcv's NMS and RoIAlign under CPU bf16 autocast
# (module, function): module globals that mmcv's own callers look up at call time
# (batched_nms -> nms, RoIAlign.forward -> roi_align)
FP32_OPS = (('mmcv.ops.nms', 'nms'), ('mmcv.ops.roi_align', 'roi_align'))
_REDUCED = (torch.bfloat16, torch.float16)


def fp32_on_cpu(op: Callable) -> Callable:
    """``op`` run in fp32, autocast off, when CPU tensor arguments come in bf16/fp16; its
    floating outputs go back in that dtype (what the caller would have got from a kernel that
    took it: RoI extractors write RoIAlign's output into a map of the features' dtype)."""

    def wrapper(*args, **kwargs):
        reduced = [v.dtype for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)
                   and v.device.type == 'cpu' and v.dtype in _REDUCED]
        if not reduced:
            return op(*args, **kwargs)

        def up(value):
            return value.float() if isinstance(value, torch.Tensor) and \
                value.dtype in _REDUCED else value

        def down(value):
            return value.to(reduced[0]) if isinstance(value, torch.Tensor) and \
                value.is_floating_point() else value

        with torch.autocast('cpu', enabled=False):
            out = op(*map(up, args), **{k: up(v) for k, v in kwargs.items()})
        return tuple(map(down, out)) if isinstance(out, tuple) else down(out)

    return functools.wraps(op)(wrapper)


def _wrap_fp32_ops(saved: dict) -> None:
    for module_name, name in FP32_OPS:
        module = importlib.import_module(module_name)
        saved[(module_name, name)] = getattr(module, name)
        setattr(module, name, fp32_on_cpu(saved[(module_name, name)]))


def _unwrap_fp32_ops(saved: dict) -> None:
    for (module_name, name), op in saved.items():
        setattr(importlib.import_module(module_name), name, op)


PATCHES: List[Patch] = [
    Patch('torch.load allow-list',
          "torch >= 2.6 loads with weights_only=True, which refuses the numpy objects and "
          "mmengine HistoryBuffer that a Runner checkpoint holds; exactly those globals "
          "(engine.checkpoint.RUNNER_CHECKPOINT_GLOBALS) are allowed",
          _add_safe_globals, _restore_safe_globals),
    Patch("mmengine file backend 'local'",
          "mmengine writes checkpoints and last_checkpoint in place (truncate, then write): a "
          "kill while saving destroys them; AtomicLocalBackend writes a temp file and renames it",
          _use_atomic_backend, _use_stock_backend),
    Patch('CheckpointLoader local-path scheme',
          'load_from, --resume, init_cfg and tools/test.py read local files through '
          'engine.checkpoint.safe_load: weights_only=True and one clear line for a bad file',
          _use_safe_loader, _restore_loader),
    Patch("HOOKS['CheckpointHook']",
          "mmengine deletes the oldest/previous-best checkpoint before the new one is written; "
          "AtomicCheckpointHook writes first, deletes after, and never saves NaN/inf weights",
          _replace_names(HOOKS, {'CheckpointHook': AtomicCheckpointHook}), _restore_names(HOOKS)),
    Patch("MODELS['LN2d'], MODELS['Hardsigmoid']",
          "mmcv's build_norm_layer/build_activation_layer look up mmengine's root registry, which "
          "has no channels-first LayerNorm and no plain Hardsigmoid (mmcv's HSigmoid warns on "
          'every build)',
          _replace_names(MODELS, {'LN2d': LayerNorm2d, 'Hardsigmoid': nn.Hardsigmoid}),
          _restore_names(MODELS)),
    Patch('module-registration hook: backbone/neck channel check',
          'a neck whose in_channels differ from the backbone\'s out_channels fails only at the '
          'first forward, deep in a conv; the hook names both lists at build time',
          _install_neck_check, _remove_neck_check),
    Patch('Runner.build_train_loop: exactly resumable randomness',
          'mmengine seeds random/numpy/torch once per process and the loader workers by worker '
          'id, so a resumed run draws other augmentations, batch-resize sizes and drop-path '
          'masks than an uninterrupted one; with randomness.seed set, the train loader fetches '
          'each sample under its own seed and ExactResumeHook reseeds the main process (keyed '
          'by seed, rank, epoch, iteration, sample position: engine.randomness); without a '
          'seed one log line says so',
          _wrap_build_train_loop, _unwrap_build_train_loop),
    Patch("CheckpointLoader scheme 'mmlightbb://'",
          "init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://fasternet_t2') names an "
          'official ImageNet checkpoint (models.pretrained.PRETRAINED); engine.downloads '
          'fetches it once into torch.hub.get_dir()/checkpoints, checks length and sha256, and '
          'reads it with safe_load (weights_only=True); mmengine knows no such scheme',
          _register_weights_scheme, _unregister_weights_scheme),
    Patch('mmcv.ops nms and roi_align: fp32 under CPU autocast',
          "mmcv's CPU kernels of NMS and RoIAlign take fp32 only (\"expected scalar type Float "
          "but found BFloat16\"), so every detector's test_step failed under bf16 autocast "
          '(--precision bf16, tools/test.py, the comparison); their bf16/fp16 CPU inputs are '
          'cast to fp32 and the results back (CUDA inputs and fp32 pass as they are)',
          _wrap_fp32_ops, _unwrap_fp32_ops),
]


def apply_all() -> None:
    for patch in PATCHES:
        patch.apply()


def undo_all() -> None:
    for patch in reversed(PATCHES):
        patch.undo()
