"""Stand-in for scipy on the GPU check machine (tools/gpu/check.sh installs it only where scipy is
missing): scipy's 35 MB wheel does not fit the 64 MiB a device run may carry. mmdet imports the
names of ``optimize`` and ``sparse`` when ``mmdet.models`` / ``mmdet.evaluation`` are imported, for
the Hungarian assigners of DETR-like heads and the CrowdHuman metric; mmlightbb's comparison
imports ``stats.ttest_ind`` for the verdict between runs of several seeds. The check runs none of
them; each raises if it is called.
"""
__version__ = '0+gpu-check-stub'


def unavailable(name):
    def stub(*args, **kwargs):
        raise NotImplementedError(f'{name}: scipy is a stub on the GPU check machine '
                                  '(tools/gpu/stubs/scipy)')
    return stub
