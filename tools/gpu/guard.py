"""The dry run's record of what the GPU machine would lack (``check.sh --cpu-dry-run`` copies this
file into its venv as ``_gpu_kit_guard.py``, imported by a ``.pth`` file in every Python process
that runs there, subprocesses included).

The venv sees only what the GPU machine has (``kit.py make-venv``), so an import of anything else
fails there as it would on that machine. This finder, last on ``sys.meta_path``, is asked only
when no other found the module: it writes the top-level names that this machine has but the venv
hides to the log named in ``_gpu_kit_guard.json``. The report lists them: an optional import
(inside try/except, or a ``find_spec`` probe) is harmless there, a needed one fails its step.
"""
import importlib.abc
import json
import os
import sys

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '_gpu_kit_guard.json')) as f:
    CONFIG = json.load(f)


class LogHiddenImports(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path=None, target=None):
        if path is None and fullname in CONFIG['absent']:
            with open(CONFIG['log'], 'a') as log:
                log.write(f"{fullname}\t{CONFIG['absent'][fullname]}\t{' '.join(sys.argv)[:200]}\n")
        return None


sys.meta_path.append(LogHiddenImports())
