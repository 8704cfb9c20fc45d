"""``RecoverableRunner``: mmengine's Runner for runs that can always be resumed, selected by
``runner_type='RecoverableRunner'`` (``configs/_base_/mmlightbb_runtime.py`` sets it).

Importing mmlightbb changes nothing of mmengine's own ``Runner``; a config that names this one gets

* **safe loading**: ``load_from``, ``--resume`` and ``tools/test.py`` read checkpoints with
  ``weights_only=True`` and exactly the globals a Runner checkpoint holds allowed, for that load
  only (stock mmengine 0.10.7 on torch >= 2.6 cannot resume its own checkpoints: their message
  hub holds numpy scalars), with one line naming the problem for a missing, broken or unsafe file;
* **atomic checkpoints**: a checkpoint hook of mmengine's type ``CheckpointHook`` (the default one
  included) is built as :class:`~mmlightbb.engine.hooks.AtomicCheckpointHook` with the same
  options, and :class:`~mmlightbb.engine.hooks.NonFiniteLossHook` is added when the config lists
  none, so a diverging run never saves NaN weights;
* **exact resumption** when the config sets ``randomness.seed``
  (:func:`~mmlightbb.engine.randomness.prepare_exact_resumption`);
* **the backbone/neck channel check** on the built model, before any data is read
  (:func:`~mmlightbb.models.neck_check.check_backbone_neck_channels`).
"""
import copy

from mmdet.registry import RUNNERS
from mmengine.hooks import CheckpointHook
from mmengine.runner import BaseLoop, Runner

from ..models.neck_check import check_backbone_neck_channels
from ..models.checkpoint import runner_checkpoint_loading
from .hooks import AtomicCheckpointHook, NonFiniteLossHook
from .randomness import prepare_exact_resumption

__all__ = ['RecoverableRunner', 'build_runner']

_STOCK_CHECKPOINT_HOOK = dict(type='CheckpointHook', interval=1)  # mmengine's default


def _is_stock_checkpoint_hook(hook) -> bool:
    if not isinstance(hook, dict):  # a built hook is taken as it is
        return False
    kind = hook.get('type', 'CheckpointHook')
    return kind is CheckpointHook or (isinstance(kind, str)
                                      and kind.split('.')[-1] == 'CheckpointHook')


def _is_nonfinite_loss_hook(hook) -> bool:
    if isinstance(hook, dict):
        kind = hook.get('type')
        return kind is NonFiniteLossHook or (isinstance(kind, str) and
                                             kind.split('.')[-1] == 'NonFiniteLossHook')
    return isinstance(hook, NonFiniteLossHook)


@RUNNERS.register_module()
class RecoverableRunner(Runner):
    """mmengine's ``Runner`` with safe loading, atomic checkpoints, exact resumption and the
    backbone/neck channel check (see the module docstring)."""

    def build_model(self, model):
        model = super().build_model(model)
        check_backbone_neck_channels(model)
        return model

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        default_hooks = dict(default_hooks or {})
        checkpoint = default_hooks.get('checkpoint', _STOCK_CHECKPOINT_HOOK)
        if checkpoint is not None and _is_stock_checkpoint_hook(checkpoint):
            default_hooks['checkpoint'] = dict(checkpoint, type=AtomicCheckpointHook)
        custom_hooks = list(custom_hooks or [])
        if not any(_is_nonfinite_loss_hook(hook) for hook in custom_hooks):
            custom_hooks.append(dict(type=NonFiniteLossHook))
        super().register_hooks(default_hooks, custom_hooks)

    def build_train_loop(self, loop):
        if not isinstance(loop, BaseLoop):
            prepare_exact_resumption(self)
        return super().build_train_loop(loop)

    def load_checkpoint(self, filename, map_location='cpu', strict=False,
                        revise_keys=[(r'^module.', '')]):  # noqa: B006  (mmengine's default)
        with runner_checkpoint_loading(filename):
            return super().load_checkpoint(filename, map_location=map_location, strict=strict,
                                           revise_keys=copy.copy(revise_keys))


def build_runner(cfg) -> Runner:
    """The Runner that ``cfg`` names with ``runner_type``; :class:`RecoverableRunner` when it
    names none (what mmlightbb's tools train and test with)."""
    if cfg.get('runner_type'):
        return RUNNERS.build(cfg)
    return RecoverableRunner.from_cfg(cfg)
