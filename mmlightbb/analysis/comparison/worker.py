"""One run of a comparison in a process of its own, as the launchers (:mod:`.launchers`) start it:

    python -m mmlightbb.analysis.comparison.worker RUN_DIR [--stage all|train|test]
        [--launcher none|pytorch|slurm] [--threads N] [--prefix TEXT]

RUN_DIR is a run folder the comparison prepared (``<run>.py`` and ``run.json``). ``train`` trains
it, or resumes it from its last complete checkpoint; with ``--launcher pytorch`` (under torchrun)
or ``slurm`` (under srun) this process is one of a distributed training (gloo on CPU).
``test`` tests the last checkpoint in one process (``test_metrics.json`` and the per-image
detections); ``all`` does both in one process. Nothing is timed here: the comparison times every
run together after all training. The progress lines go to stdout (rank 0 only); a failure ends
with one ``error:`` line.
"""
import argparse
import functools
import os
import os.path as osp
import sys
import traceback

import torch
from mmengine.config import Config

from ...engine import last_complete_checkpoint
from .plan import RUN_INFO, read_json, saved_settings
from .runs import Clock, last_line, test_run, test_runner, train_run


def _rank(launcher: str) -> int:
    if launcher == 'pytorch':
        return int(os.environ.get('RANK', 0))
    if launcher == 'slurm':
        return int(os.environ.get('SLURM_PROCID', 0))
    return 0


def _test_runner(cfg: Config, run_dir: str, precision: str):
    """A Runner that tests the run's last complete checkpoint in this one process."""
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f'no complete checkpoint in {run_dir} to test; train it first '
                                '(--stage train)')
    return test_runner(cfg, checkpoint, precision)


def run_stage(run_dir: str, stage: str = 'all', launcher: str = 'none', prefix: str = '') -> None:
    """Train and/or test the prepared run in ``run_dir`` (see the module doc)."""
    info = read_json(osp.join(run_dir, RUN_INFO))
    if info is None:
        raise FileNotFoundError(f'{run_dir} has no readable {RUN_INFO}: it is not a run folder '
                                'that tools/compare_backbones.py prepared')
    # the folder's own config and outputs, also where the folder was moved or is mounted
    # under another path (a compute node)
    cfg = Config.fromfile(osp.join(run_dir, info['name'] + '.py'))
    cfg.launcher, cfg.work_dir = launcher, run_dir
    precision = saved_settings(info)['precision']
    rank0 = _rank(launcher) == 0
    clock = Clock(functools.partial(print, flush=True) if rank0 else (lambda msg: None))
    prefix = prefix or info['name']
    runner = None
    if stage in ('all', 'train'):
        runner = train_run(cfg, info, run_dir, precision, clock, prefix)
    if stage in ('all', 'test') and rank0:
        runner = runner or _test_runner(cfg, run_dir, precision)
        test_run(runner, run_dir, precision, len(info['settings']['classes']), clock, prefix)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('run_dir')
    parser.add_argument('--stage', choices=('all', 'train', 'test'), default='all')
    parser.add_argument('--launcher', choices=('none', 'pytorch', 'slurm'), default='none')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--prefix', default='', help='the run\'s name in the progress lines')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run_stage(osp.abspath(args.run_dir), args.stage, args.launcher, args.prefix)
    except Exception as err:  # the traceback for the log, then the one line the comparison shows
        traceback.print_exc()
        print(f'error: {last_line(err)}', file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == '__main__':
    main()
