"""Train a detector: mmdet's tools/train.py with mmlightbb registered; a config that names no
``runner_type`` trains with ``RecoverableRunner`` (safe loading, atomic checkpoints, exact
resumption, the backbone/neck channel check: mmlightbb.engine.runner).

    python tools/train.py configs/yolox_cspconvnext.py [--work-dir DIR] [--resume [CKPT]] [--amp]
    tools/dist_train.sh configs/yolox_cspconvnext.py NUM_PROCS [args]   # --launcher pytorch

Checkpoints are written atomically, ``--resume`` skips a dangling ``last_checkpoint``, a NaN/inf
loss stops the run with one ``error:`` line, and ``--launcher pytorch`` also runs on CPU (gloo).
"""
import argparse
import logging

import torch
from mmengine.config import Config
from mmengine.logging import print_log

import mmlightbb  # noqa: F401  (registers backbones, datasets, hooks, loops and the runner)
from mmlightbb.datasets.sonar import UnreadableImageError
from mmlightbb.engine import (CheckpointFormatError, NonFiniteLossError, UnsafeCheckpointError,
                              find_resume_checkpoint, raise_if_weights_nonfinite)
from mmlightbb.engine.config import add_runner_args, config_from_args
from mmlightbb.engine.distributed import setup_cpu_distributed
from mmlightbb.engine.precision import resolve_precision
from mmlightbb.engine.runner import build_runner
from mmlightbb.models.neck_check import ChannelMismatchError


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='mixed precision: fp16 autocast + dynamic loss scaling on CUDA; bf16 '
                        'autocast on CPUs with avx512_bf16/amx_bf16 (elsewhere: fp32 with a '
                        'warning)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate with the total batch size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the work '
                        'dir when no path is given')
    add_runner_args(parser)
    return parser.parse_args()


def build_train_config(args) -> Config:
    cfg = config_from_args(args)
    if args.amp:
        set_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                             'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = find_resume_checkpoint(cfg.work_dir)  # None: nothing saved, start afresh
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def set_amp(cfg: Config) -> str:
    """``--amp``: fp16 with mmengine's AmpOptimWrapper on CUDA; on CPU (where AmpOptimWrapper
    asserts a GPU) bf16 autocast with ``CPUBF16OptimWrapper`` when the CPU has native bf16, else
    fp32 with a one-line warning. Returns the precision chosen."""
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
        return 'fp16'
    precision, note = resolve_precision('bf16', 'cpu', warn=False)
    if precision != 'bf16':
        print_log(f'--amp: {note}', logger='current', level=logging.WARNING)
        return precision
    cfg.optim_wrapper.type = 'CPUBF16OptimWrapper'
    for key in ('loss_scale', 'dtype'):  # AmpOptimWrapper's; bf16 needs no loss scaling
        cfg.optim_wrapper.pop(key, None)
    print_log(f'--amp: training with {note}', logger='current')
    return precision


def main():
    args = parse_args()
    # one line instead of a traceback for what the user can fix: missing data or checkpoint,
    # a broken or unsafe checkpoint, a diverged loss or weights, a neck that does not fit the
    # backbone, an unreadable val image (raised in a dataloader worker: its last line is the message)
    try:
        cfg = build_train_config(args)
        setup_cpu_distributed(cfg)
        runner = build_runner(cfg)
        try:
            runner.train()
        except Exception as err:
            raise_if_weights_nonfinite(runner, err)  # the cause, if a head failed on NaN weights
            raise
    except (FileNotFoundError, CheckpointFormatError, UnsafeCheckpointError, NonFiniteLossError,
            ChannelMismatchError, UnreadableImageError) as err:
        raise SystemExit(f'error: {str(err).strip().splitlines()[-1]}') from None


if __name__ == '__main__':
    main()
