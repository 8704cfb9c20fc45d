"""Where a comparison's runs train when not one after another in its own process: several at
once on this machine (:class:`LocalProcesses`), or as Slurm jobs (:class:`SlurmJobs`). Each run
is the prepared run folder handed to :mod:`.worker` in a process of its own; a run of N > 1
processes trains with mmengine's launchers (torchrun's ``pytorch`` locally, ``slurm`` under srun;
gloo on CPU) and is then tested in one process. Nothing is timed where the runs train: the
comparison times every run together afterwards (:mod:`.timing`).

Slurm is driven with ``sbatch``/``squeue``/``scontrol``/``scancel`` directly rather than through
submitit: a job is a plain script in the run folder (``slurm_job.sh``; a user can read it and
``sbatch`` it again by hand), its id and output sit beside it (``slurm.json``,
``slurm-<id>.out``), and nothing but Slurm's own commands has to exist on the login node or agree
in version with the compute nodes (submitit pickles a Python callable for each job).
"""
import datetime
import os
import os.path as osp
import shlex
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from ...engine.fileio import atomic_write
from .plan import TEST_METRICS, ComparisonError, read_json
from .runs import atomic_json

WORKER = 'mmlightbb.analysis.comparison.worker'
SLURM_INFO = 'slurm.json'
SLURM_SCRIPT = 'slurm_job.sh'
WORKER_LOG = 'worker.log'
ACTIVE = ('PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING', 'SUSPENDED', 'REQUEUED',
          'RESIZING', 'SIGNALING', 'STAGE_OUT')
POLL_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def worker_commands(run_dir: str, processes: int, launcher: str, threads: Optional[int],
                    prefix: str, port: Optional[int] = None) -> List[List[str]]:
    """The commands that train and test one run: one process (``all``), or ``processes``
    trainers (``launcher`` 'pytorch': torchrun on ``port``; 'slurm': the srun tasks) and then
    one tester."""
    common = ['--prefix', prefix] + (['--threads', str(threads)] if threads else [])
    worker = [sys.executable, '-u', '-m', WORKER, run_dir]
    if processes == 1:
        return [worker + common]
    if launcher == 'pytorch':
        trainers = [sys.executable, '-u', '-m', 'torch.distributed.run', '--nnodes=1',
                    f'--nproc_per_node={processes}', f'--master_port={port or _free_port()}',
                    '-m', WORKER, run_dir, '--stage', 'train', '--launcher', 'pytorch']
    else:
        trainers = ['srun', '--kill-on-bad-exit=1'] + worker + ['--stage', 'train',
                                                               '--launcher', 'slurm']
    return [trainers + common, worker + ['--stage', 'test'] + common]


def log_error(path: str) -> str:
    """The last ``error:`` line of a worker's log, else its last line."""
    try:
        with open(path, errors='replace') as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return f'no log at {path}'
    errors = [ln for ln in lines if ln.startswith('error:')]
    return (errors or lines or ['(empty log)'])[-1]


def record_failure(job: dict, msg: str, failures: List[str], log: Callable[[str], None]):
    """A run that failed where it trained: marked, one failure line, one log line; the others
    go on."""
    job['failed'] = True
    failures.append(f"{job['name']}: {msg}")
    log(f"{job['prefix']}: FAILED: {msg}; going on")


class LogRelay:
    """Passes on the progress lines (``[cmp <time>] ...``) that workers append to their logs."""

    def __init__(self, log: Callable[[str], None]):
        self.log, self.offsets = log, {}

    def relay(self, path: str):
        if not osp.isfile(path):
            return
        with open(path, errors='replace') as f:
            f.seek(self.offsets.get(path, 0))
            text = f.read()
        end = text.rfind('\n') + 1  # a partial line waits for its end
        self.offsets[path] = self.offsets.get(path, 0) + len(text[:end].encode())
        for line in text[:end].splitlines():
            if line.startswith('[cmp '):  # re-stamped with the comparison's clock
                self.log(line.split('] ', 1)[-1])


# --------------------------------------------------------------------------------- local
class LocalProcesses:
    """``parallel`` runs at a time on this machine, each on its own cores (CPU: the allowed
    cores split into disjoint sets, the process pinned to its set and its threads limited to
    it) or its own GPUs (``CUDA_VISIBLE_DEVICES``), each with ``gpus_per_run`` processes."""

    def __init__(self, parallel: int, gpus_per_run: int, device: str,
                 threads: Optional[int] = None):
        self.parallel, self.processes, self.device = parallel, gpus_per_run, device
        if device == 'cuda':
            n = gpus_per_run
            self.slots = [dict(CUDA_VISIBLE_DEVICES=','.join(map(str, range(i * n, (i + 1) * n))))
                          for i in range(parallel)]
        else:
            cores = sorted(os.sched_getaffinity(0))
            size = len(cores) // parallel
            self.slots = [dict(cores=cores[i * size:(i + 1) * size]) for i in range(parallel)]
        self.threads = threads

    def _threads(self, slot: dict) -> int:
        if 'cores' not in slot:
            return self.threads or 0
        per_process = max(1, len(slot['cores']) // self.processes)
        return min(self.threads, per_process) if self.threads else per_process

    def train(self, jobs: Sequence[dict], log: Callable[[str], None]) -> List[str]:
        """Train and test ``jobs`` (prepared run folders, with ``name``, ``dir``, ``prefix``);
        returns one failure line per failed run."""
        pending, running, failures, relay = list(jobs), {}, [], LogRelay(log)
        free = list(range(len(self.slots)))
        while pending or running:
            while pending and free:
                job, slot = pending.pop(0), free.pop(0)
                running[slot] = self._start(job, self.slots[slot], log)
            time.sleep(POLL_S)
            for slot, state in list(running.items()):
                relay.relay(state['log'])
                rc = state['proc'].poll()
                if rc is None:
                    continue
                if rc == 0 and state['commands']:
                    state['proc'] = self._spawn(state)
                    continue
                relay.relay(state['log'])
                del running[slot]
                free.append(slot)
                if rc != 0:
                    record_failure(state['job'], f"{log_error(state['log'])} (log: "
                                   f"{state['log']})", failures, log)
        return failures

    def _start(self, job: dict, slot: dict, log: Callable[[str], None]) -> dict:
        threads = self._threads(slot)
        env = dict(os.environ, **{k: v for k, v in slot.items() if k != 'cores'})
        if threads:
            env['OMP_NUM_THREADS'] = str(threads)
        where = (f"cores {','.join(map(str, slot['cores']))}" if 'cores' in slot
                 else f"GPUs {slot['CUDA_VISIBLE_DEVICES']}")
        state = dict(job=job, env=env, cores=slot.get('cores'),
                     log=osp.join(job['dir'], WORKER_LOG),
                     commands=worker_commands(job['dir'], self.processes, 'pytorch',
                                              threads or None, job['prefix']))
        with open(state['log'], 'a') as f:
            f.write(f'--- {datetime.datetime.now().isoformat(timespec="seconds")} on {where}\n')
        log(f"{job['prefix']}: started on {where}"
                   + (f', {self.processes} processes' if self.processes > 1 else '')
                   + f' (log: {state["log"]})')
        state['proc'] = self._spawn(state)
        return state

    @staticmethod
    def _spawn(state: dict) -> subprocess.Popen:
        cores = state['cores']
        with open(state['log'], 'a') as out:
            return subprocess.Popen(
                state['commands'].pop(0), env=state['env'], stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)


# --------------------------------------------------------------------------------- Slurm
class SlurmError(ComparisonError):
    """Slurm is missing or refused the comparison as a whole (one line with the fix)."""


def _slurm(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SlurmError(f'--launcher slurm: {cmd[0]} not found on PATH; run the comparison on '
                         'a Slurm login node (where sbatch works), or drop --launcher slurm to '
                         'train here') from None
    if check and proc.returncode:
        raise SlurmError(f"{' '.join(cmd[:2])} failed: "
                         f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc


def job_states(job_ids: Sequence[str]) -> Dict[str, str]:
    """The Slurm state of each job id that Slurm still knows (squeue, then scontrol for jobs
    that left the queue); ids it has forgotten are missing."""
    if not job_ids:
        return {}
    out = _slurm(['squeue', '-h', '-o', '%i %T', '-j', ','.join(job_ids)], check=False).stdout
    states = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
    for job_id in job_ids:
        if job_id not in states:
            proc = _slurm(['scontrol', '-o', 'show', 'job', job_id], check=False)
            for field in proc.stdout.split():
                if field.startswith('JobState='):
                    states[job_id] = field.split('=', 1)[1]
    return states


class SlurmJobs:
    """One Slurm job per run (sbatch). A run whose job is pending or running is never submitted
    again; one whose job failed, was cancelled or timed out is submitted again and resumes from
    its last checkpoint. ``wait`` False: submit and return (run the command again to collect)."""

    def __init__(self, partition: Optional[str], time_limit: Optional[str],
                 slurm_args: Sequence[str], gpus_per_run: int, device: str,
                 threads: Optional[int], wait: bool = True):
        self.partition, self.time_limit, self.extra = partition, time_limit, list(slurm_args)
        self.processes, self.device, self.threads, self.wait = gpus_per_run, device, threads, wait
        _slurm(['sbatch', '--version'])

    def script(self, job: dict) -> str:
        run_dir, n = job['dir'], self.processes
        lines = ['#!/bin/bash', f"#SBATCH --job-name=mmlightbb-{job['name']}",
                 f'#SBATCH --output={run_dir}/slurm-%j.out', '#SBATCH --nodes=1',
                 f'#SBATCH --ntasks={n}']
        if self.threads:
            lines.append(f'#SBATCH --cpus-per-task={self.threads}')
        if self.device == 'cuda':
            lines.append(f'#SBATCH --gres=gpu:{n}')
        if self.partition:
            lines.append(f'#SBATCH --partition={self.partition}')
        if self.time_limit:
            lines.append(f'#SBATCH --time={self.time_limit}')
        lines += ['set -euo pipefail', f'cd {shlex.quote(os.getcwd())}',
                  'export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))']
        if self.device == 'cpu':
            lines.append('export CUDA_VISIBLE_DEVICES=')
        lines += [shlex.join(cmd) for cmd in worker_commands(
            run_dir, n, 'slurm', self.threads, job['prefix'])]
        return '\n'.join(lines) + '\n'

    def submit(self, job: dict) -> str:
        path = osp.join(job['dir'], SLURM_SCRIPT)
        atomic_write(path, self.script(job))
        proc = _slurm(['sbatch', '--parsable'] + self.extra + [path], check=False)
        if proc.returncode:
            reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no message']
            raise RuntimeError(f'sbatch refused it: {reason[0]}{self._fix(reason[0])} '
                               f'(script: {path})')
        job_id = proc.stdout.strip().split(';')[0]
        atomic_json(dict(job_id=job_id, script=path,
                         submitted=datetime.datetime.now().isoformat(timespec='seconds'),
                         log=osp.join(job['dir'], f'slurm-{job_id}.out')),
                    osp.join(job['dir'], SLURM_INFO))
        return job_id

    def _fix(self, reason: str) -> str:
        if 'partition' in reason.lower():
            parts = _slurm(['sinfo', '-h', '-o', '%P'], check=False).stdout.split()
            return (f"; fix: --partition one of {', '.join(p.rstrip('*') for p in parts)} "
                    '(sinfo)')
        return '; fix: check --slurm-args, --time and --partition against sinfo'

    def train(self, jobs: Sequence[dict], log: Callable[[str], None]) -> List[str]:
        """Submit every run of ``jobs`` that has no pending or running job, then (``wait``)
        show each job's state and progress until all have ended. Returns one failure line per
        failed run; with ``wait`` False, the runs still in Slurm as ``job['slurm_state']``."""
        failures, tracked = [], {}
        known = {}
        for job in jobs:
            info = read_json(osp.join(job['dir'], SLURM_INFO))
            if info:
                known[job['name']] = info['job_id']
        states = job_states(list(known.values()))
        for job in jobs:
            old = known.get(job['name'])
            if old and states.get(old) in ACTIVE:
                tracked[old] = job
                log(f"{job['prefix']}: Slurm job {old} is {states[old]}, not submitted "
                           'again')
                continue
            try:
                job_id = self.submit(job)
            except RuntimeError as err:
                record_failure(job, str(err), failures, log)
                continue
            tracked[job_id] = job
            log(f"{job['prefix']}: submitted as Slurm job {job_id} "
                       f"(log: {osp.join(job['dir'], f'slurm-{job_id}.out')})")
        if not self.wait:
            for job_id, job in tracked.items():
                job['slurm_state'] = f'job {job_id}'
            return failures
        relay, shown = LogRelay(log), {}
        while tracked:
            states = job_states(list(tracked))
            for job_id, job in list(tracked.items()):
                out = osp.join(job['dir'], f'slurm-{job_id}.out')
                relay.relay(out)
                state = states.get(job_id, 'ENDED')
                if state != shown.get(job_id):
                    shown[job_id] = state
                    if state in ACTIVE:
                        log(f"{job['prefix']}: Slurm job {job_id} {state}")
                if state in ACTIVE:
                    continue
                del tracked[job_id]
                if not osp.isfile(osp.join(job['dir'], TEST_METRICS)):
                    msg = (f'Slurm job {job_id} {state.lower()}: {log_error(out)} (log: {out}); '
                           'fix the cause and run the same command again (it resumes from the '
                           'last checkpoint)')
                    record_failure(job, msg, failures, log)
            if tracked:
                time.sleep(POLL_S)
        return failures


def make_launcher(s) -> object:
    """The launcher of :class:`~.settings.ComparisonSettings` ``s`` that is not in-process."""
    if s.launcher == 'slurm':
        return SlurmJobs(s.partition, s.time_limit, s.slurm_args, s.gpus_per_run, s.device,
                         s.threads, s.wait)
    return LocalProcesses(s.parallel, s.gpus_per_run, s.device, s.threads)
