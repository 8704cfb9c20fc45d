"""Hooks that keep an interrupted or diverging training run recoverable.

* :class:`AtomicCheckpointHook` is mmengine's ``CheckpointHook`` (same options) that writes every
  checkpoint through the ``'atomic_local'`` file backend, replaces the ``last_checkpoint`` pointer
  atomically and only after the checkpoint it names is complete, and deletes the oldest checkpoint
  only after the new one exists. Select it with
  ``default_hooks.checkpoint.type='AtomicCheckpointHook'`` (``RecoverableRunner`` does so for a
  stock ``CheckpointHook``).
* :class:`NonFiniteLossHook` stops training at the first NaN/inf loss, before anything saves the
  broken weights, and says where the last good checkpoint is.
"""
import math
import os.path as osp
from typing import List, Optional

import torch
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmengine.dist import all_reduce, is_main_process
from mmengine.fileio import register_backend
from mmengine.hooks import CheckpointHook, Hook

from .fileio import AtomicLocalBackend, atomic_write
from .resume import CHECKPOINT_POINTER, last_complete_checkpoint

__all__ = ['ATOMIC_BACKEND', 'AtomicCheckpointHook', 'NonFiniteLossHook', 'NonFiniteLossError',
           'nonfinite_parameters', 'raise_if_weights_nonfinite']


# a new name in mmengine's file backends (the stock 'local' one stays as it is)
ATOMIC_BACKEND = 'atomic_local'
register_backend(ATOMIC_BACKEND, AtomicLocalBackend)


@MMDET_HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that never leaves the work dir without a loadable checkpoint.

    Checkpoint files are written atomically by :class:`mmlightbb.engine.fileio.AtomicLocalBackend`
    (the ``'atomic_local'`` backend, the default here when ``backend_args`` is not given and the
    checkpoints go to a local folder). mmengine 0.10.7 additionally

    * deletes the oldest of ``max_keep_ckpts`` checkpoints *before* writing the new one: with
      ``max_keep_ckpts=1``, a kill while saving leaves no checkpoint at all;
    * writes ``last_checkpoint`` with a plain ``open(..., 'w')``, which truncates it first;
    * deletes the previous ``save_best`` checkpoint *before* writing the new best one.

    Here the new checkpoint is written first, then the pointer (atomically), then the outdated
    checkpoint is deleted; the same order for the best checkpoint. A kill between the last steps
    only leaves one extra file behind. Weights that are NaN/inf are never saved: the run stops
    with :class:`NonFiniteLossError` instead, so the last checkpoint is always one to resume from.
    """

    def __init__(self, *args, backend_args=None, file_client_args=None, out_dir=None, **kwargs):
        if backend_args is None and file_client_args is None and (
                out_dir is None or '://' not in str(out_dir)):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, backend_args=backend_args, file_client_args=file_client_args,
                         out_dir=out_dir, **kwargs)

    def _refuse_nonfinite(self, runner, filename: str):
        bad = nonfinite_parameters(runner.model)
        if bad:
            raise _weights_error(runner, bad, f'{filename} was not written')

    def _best_paths(self) -> dict:
        if len(self.key_indicators) == 1:
            return {None: self.best_ckpt_path}
        return dict(self.best_ckpt_path_dict)

    def _set_best_paths(self, paths: dict):
        if None in paths:
            self.best_ckpt_path = paths[None]
        else:
            self.best_ckpt_path_dict.update(paths)

    def _remove_checkpoint(self, path: str):
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # DeepSpeed saves directories
            self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics):
        if not self.save_best:
            return
        self._refuse_nonfinite(runner, 'the best checkpoint')
        previous = self._best_paths()
        self._set_best_paths(dict.fromkeys(previous))  # mmengine deletes what it finds here first
        super()._save_best_checkpoint(runner, metrics)
        current = self._best_paths()
        for key, old in previous.items():
            if current[key] is None:  # not improved: the previous best stays the best
                current[key] = old
            elif old is not None and old != current[key] and is_main_process():
                self._remove_checkpoint(old)
                runner.logger.info(f'The previous best checkpoint {old} is removed')
        self._set_best_paths(current)

    def _save_checkpoint_with_step(self, runner, step, meta):
        ckpt_filename = self.filename_tmpl.format(step)
        self._refuse_nonfinite(runner, ckpt_filename)  # before any bookkeeping changes
        outdated = None
        # mmengine skips the bookkeeping when one step is saved twice (save_best re-saves it)
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            # before saving: the checkpoint's message hub must list the ids it keeps
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, CHECKPOINT_POINTER), self.last_ckpt)
        if outdated is not None:
            self._remove_checkpoint(
                self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated)))


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training was stopped."""


@MMDET_HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first iteration whose loss is NaN or infinite.

    Once a loss is non-finite the optimizer step has already filled the weights with NaN, and
    every later epoch (and its checkpoint) would be worthless. The check runs after each train
    iteration at ``ABOVE_NORMAL`` priority, i.e. before ``EMAHook`` averages the broken weights
    in and before ``CheckpointHook`` could save them, and raises :class:`NonFiniteLossError`
    (``tools/train.py`` prints it as one ``error:`` line). In distributed training the verdict is
    all-reduced, so every rank stops at the same iteration instead of the healthy ones waiting
    forever in the next gradient all-reduce.

    With ``AmpOptimWrapper`` the check sees the unscaled loss: an fp16 gradient overflow that the
    dynamic loss scale absorbs (skipped step) does not stop training, a NaN loss does. A finite
    loss whose update overflows the weights is seen only at the next iteration, and a head may
    fail on the NaN predictions before it computes a loss (YOLOX's SimOTA assigner: "all elements
    of input should be between 0 and 1"); ``tools/train.py`` then calls
    :func:`raise_if_weights_nonfinite`, which names that cause instead.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        losses = {name: float(value.detach() if isinstance(value, torch.Tensor) else value)
                  for name, value in (outputs or {}).items() if 'loss' in name}
        bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
        flag = torch.tensor(float(bool(bad)))
        all_reduce(flag)  # a no-op without torch.distributed
        if flag.item() == 0:
            return
        terms = ', '.join(f'{name}={value}' for name, value in bad.items()) or 'on another rank'
        raise NonFiniteLossError(
            f'non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}, batch '
            f'{batch_idx + 1}): {terms}. {_stopped(runner)}')


def _stopped(runner) -> str:
    checkpoint = last_complete_checkpoint(runner.work_dir) or 'none saved yet'
    return (f'Training stopped; these weights were not saved. Last complete checkpoint: '
            f'{checkpoint}. Typical fixes: lower the learning rate (optim_wrapper.optimizer.lr), '
            'clip gradients (optim_wrapper.clip_grad=dict(max_norm=10, norm_type=2)), or with '
            "--amp keep a dynamic loss scale (optim_wrapper.loss_scale='dynamic').")


def nonfinite_parameters(model: torch.nn.Module) -> List[str]:
    """Names of the parameters of ``model`` (or of the module a DDP wrapper holds) with a NaN or
    infinite value."""
    model = getattr(model, 'module', model)
    with torch.no_grad():
        return [name for name, param in model.named_parameters() if not param.isfinite().all()]


def _weights_error(runner, bad: List[str], consequence: str) -> NonFiniteLossError:
    more = f' and {len(bad) - 1} more' if len(bad) > 1 else ''
    return NonFiniteLossError(
        f'non-finite weights after iteration {runner.iter} although its loss was finite (the '
        f'update overflowed): {bad[0]}{more}; {consequence}. {_stopped(runner)}')


def raise_if_weights_nonfinite(runner, error: BaseException) -> None:
    """Raise :class:`NonFiniteLossError` naming the cause when ``error`` stopped training after
    the weights had become NaN/inf under a finite loss; return otherwise, so the caller
    re-raises ``error`` itself."""
    if isinstance(error, NonFiniteLossError):  # the loss or checkpoint check named the cause
        return
    bad = nonfinite_parameters(runner.model)
    if bad:
        raise _weights_error(
            runner, bad, f'iteration {runner.iter + 1} then failed with {type(error).__name__}: '
            f'{str(error).strip().splitlines()[-1]}') from error
