"""Shared fixtures: the interpreter of subprocesses, no downloads, fresh visualizers, a tiny
detection dataset made on the fly. Plain functions the tests share are in helpers.py."""
import os
import sys

import pytest
from helpers import write_shapes_coco


@pytest.fixture(autouse=True, scope='session')
def only_the_chosen_interpreter(tmp_path_factory):
    """Every subprocess the suite starts must run the interpreter the suite runs on
    (``sys.executable``; shell scripts: ``$PYTHON``), never ``python``/``python3`` from PATH, which
    may be another installation without the stack (``make test PYTHON=venv/bin/python`` with the
    venv not activated). Those names on PATH are replaced by a stub that fails with that message."""
    stub_dir = tmp_path_factory.mktemp('interpreter_stub')
    for name in ('python', 'python3'):
        stub = stub_dir / name
        stub.write_text(f'#!/bin/sh\necho "test suite: a subprocess ran {name} from PATH instead '
                        'of sys.executable or PYTHON" >&2\nexit 97\n')
        stub.chmod(0o755)
    saved = {key: os.environ.get(key) for key in ('PATH', 'PYTHON')}
    os.environ['PATH'] = f"{stub_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ['PYTHON'] = sys.executable
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True, scope='session')
def no_downloads():
    """Tests never download: a config that would fetch official weights fails with one line
    instead of reaching the network (tests that serve weights on 127.0.0.1 lift this)."""
    saved = os.environ.get('MMLIGHTBB_OFFLINE')
    os.environ['MMLIGHTBB_OFFLINE'] = '1'
    yield
    if saved is None:
        os.environ.pop('MMLIGHTBB_OFFLINE', None)
    else:
        os.environ['MMLIGHTBB_OFFLINE'] = saved


@pytest.fixture(autouse=True)
def fresh_visualizers():
    """Each test starts as a new process would. mmdet's configs name their visualizer
    'visualizer' and mmengine returns an existing instance of that name, so a Runner would
    otherwise log into the work dir of an earlier test (removed by then: pytest.ini)."""
    from mmengine.visualization import Visualizer
    yield
    pending = [Visualizer]
    while pending:
        cls = pending.pop()
        cls._instance_dict.clear()
        pending.extend(cls.__subclasses__())


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    return write_shapes_coco(str(tmp_path_factory.mktemp('tiny_coco')))
