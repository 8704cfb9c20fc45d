"""Config loading with errors that name the problem (missing file, unknown --cfg-options key), and
the command-line arguments that tools/train.py and tools/test.py share."""
import argparse
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction


def _has_path(cfg: dict, dotted: str) -> bool:
    node = cfg
    for part in dotted.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile`` + ``merge_from_dict`` that refuse a missing file or an unknown option key.

    A ``--cfg-options`` key whose parent exists may add a new leaf (e.g.
    ``model.backbone.init_cfg.checkpoint``); a key whose parent is missing is a typo and is refused.
    """
    if not osp.isfile(path):
        raise SystemExit(f'config file not found: {path!r} (the configs shipped with mmlightbb are '
                         'under configs/; run the command from the repository root)')
    cfg = Config.fromfile(path)
    for key in (cfg_options or {}):
        parent = key.rsplit('.', 1)[0] if '.' in key else ''
        if parent and not _has_path(cfg.to_dict(), parent):
            raise SystemExit(f'--cfg-options key {key!r}: {parent!r} does not exist in {path}. '
                             'Check the spelling against `python -c "from mmengine import Config; '
                             f"print(Config.fromfile('{path}').pretty_text)\"`.")
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local-rank``, as mmdet's tools."""
    parser.add_argument('--work-dir', help='the dir for logs, checkpoints and metrics (default: '
                        'work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, xxx=yyy format')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def config_from_args(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the :func:`add_runner_args` options applied; the work dir
    defaults to ``work_dirs/<config name>``. Sets ``LOCAL_RANK`` for launchers that pass
    ``--local-rank`` instead."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg
