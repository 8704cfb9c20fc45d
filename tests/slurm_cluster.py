"""A real one-node Slurm cluster for the tests (../shared/reference/slurm_one_node.md): Debian's
slurm-wlm and munge (installed with apt-get when missing and this is root), a ``slurm.conf`` of
this machine's real CPUs and memory in a temporary folder (clients find it through
``SLURM_CONF``; /etc/slurm is not touched), ``munged``, ``slurmctld`` and ``slurmd`` started as
root on free ports, and exactly those daemons stopped afterwards (by the pids they wrote).
"""
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import time

PACKAGES = ('slurm-wlm', 'munge')


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the test cluster (the one line says why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('', 0))
        return s.getsockname()[1]


def install() -> None:
    if shutil.which('slurmctld') and shutil.which('munged'):
        return
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        raise SlurmUnavailable('slurm-wlm and munge are not installed and this is not a root '
                               'Debian machine (apt-get install -y slurm-wlm munge)')
    for cmd in (['apt-get', 'update', '-qq'],
                ['apt-get', 'install', '-y', '-qq', *PACKAGES]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                              env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
        if proc.returncode:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {tail}")


class OneNodeSlurm:

    def __init__(self, root: str):
        self.root, self.pids, self.env_before = root, [], None
        self.conf = osp.join(root, 'slurm.conf')

    def _node(self):
        out = subprocess.run(['slurmd', '-C'], capture_output=True, text=True,
                             check=True).stdout
        fields = dict(f.split('=', 1) for f in out.split() if '=' in f)
        return fields['NodeName'], fields['CPUs'], int(fields['RealMemory']) * 9 // 10

    def _munge(self):
        if subprocess.run(['munge', '-n'], capture_output=True).returncode == 0:
            return  # a munged is already serving
        for d in ('/run/munge', '/var/lib/munge', '/var/log/munge', '/etc/munge'):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, 'munge', 'munge')
        if not osp.isfile('/etc/munge/munge.key'):
            subprocess.run(['mungekey', '--create'], check=True, capture_output=True)
            shutil.chown('/etc/munge/munge.key', 'munge', 'munge')
        subprocess.run(['su', '-s', '/bin/sh', 'munge', '-c', '/usr/sbin/munged'], check=True,
                       capture_output=True)
        self.pids.append(int(open('/run/munge/munged.pid').read()))

    def start(self, timeout: float = 60):
        install()
        host, cpus, memory = self._node()
        for d in ('state', 'spool', 'log'):
            os.makedirs(osp.join(self.root, d), exist_ok=True)
        r = self.root
        with open(self.conf, 'w') as f:
            f.write(f"""ClusterName=mmlightbbtest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ReturnToService=2
MinJobAge=3600
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        self.env_before = os.environ.get('SLURM_CONF')
        os.environ['SLURM_CONF'] = self.conf
        self._munge()
        for daemon, pid_file in (('slurmctld', 'slurmctld.pid'), ('slurmd', 'slurmd.pid')):
            subprocess.run([daemon, '-f', self.conf], check=True, capture_output=True)
            path = osp.join(r, pid_file)
            deadline = time.time() + 10
            while not osp.isfile(path) and time.time() < deadline:
                time.sleep(0.2)
            self.pids.append(int(open(path).read()))
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run(['sinfo', '-h', '-o', '%t'], capture_output=True,
                                 text=True).stdout.split()
            if out == ['idle']:
                return self
            time.sleep(1)
        self.stop()
        raise SlurmUnavailable(f'the test cluster did not become idle in {timeout:.0f} s '
                               f'(sinfo: {out}; logs in {r}/log)')

    def stop(self):
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.pids = []
        if self.env_before is None:
            os.environ.pop('SLURM_CONF', None)
        else:
            os.environ['SLURM_CONF'] = self.env_before
