"""Multi-process training without CUDA: mmengine's launchers over gloo on CPU."""
import datetime
import logging
import os
import subprocess

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

CPU_LAUNCHERS = ('pytorch', 'slurm')


def slurm_rendezvous(port: int = 29500) -> None:
    """The torch.distributed environment (``env://``) of a process started by ``srun``:
    RANK/WORLD_SIZE/LOCAL_RANK from Slurm's task variables and the first node of the job as the
    master, as mmengine's slurm launcher derives them (kept where already set)."""
    env = os.environ
    if 'MASTER_ADDR' not in env:
        hosts = subprocess.run(['scontrol', 'show', 'hostnames', env['SLURM_JOB_NODELIST']],
                               capture_output=True, text=True, check=True).stdout.split()
        env['MASTER_ADDR'] = hosts[0]
    env.setdefault('MASTER_PORT', str(port))
    env.setdefault('RANK', env['SLURM_PROCID'])
    env.setdefault('WORLD_SIZE', env['SLURM_NTASKS'])
    env.setdefault('LOCAL_RANK', env.get('SLURM_LOCALID', '0'))


def setup_cpu_distributed(cfg: Config) -> None:
    """Let ``launcher='pytorch'`` (torchrun) or ``'slurm'`` (srun) train on machines without
    CUDA (gloo, DDP on CPU).

    mmengine 0.10.7 assumes one GPU per process: its ``init_dist`` calls ``torch.cuda.set_device``
    (an AttributeError on CPU builds of torch) and DDP gets ``device_ids=[LOCAL_RANK]``. Without
    CUDA the gloo process group is started here (the Runner skips ``init_dist`` when one exists),
    DDP gets ``device_ids=None`` (CPU modules), and ``sync_bn`` is dropped: torch's and mmcv's
    SyncBatchNorm only run on GPUs, so each process normalizes its own batch instead.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher not in CPU_LAUNCHERS:
        raise SystemExit(f'error: --launcher {launcher} needs CUDA; without it use '
                         '--launcher pytorch (tools/dist_train.sh) or slurm (srun), which train '
                         'over gloo on CPU')
    if launcher == 'slurm':
        slurm_rendezvous()
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')  # seconds, as mmengine
    kwargs = {} if timeout is None else dict(timeout=datetime.timedelta(seconds=timeout))
    torch.distributed.init_process_group(backend='gloo', **kwargs)
    wrapper_cfg = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.update(cfg.get('model_wrapper_cfg') or {})
    if issubclass(MODEL_WRAPPERS.get(wrapper_cfg['type']), DistributedDataParallel):
        wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    if cfg.get('sync_bn') is not None:
        if torch.distributed.get_rank() == 0:
            print_log(f"sync_bn={cfg.sync_bn!r} needs GPUs; training on CPU with per-process "
                      'BatchNorm statistics', logger='current', level=logging.WARNING)
        cfg.sync_bn = None
