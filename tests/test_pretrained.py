"""Official ImageNet weights by name: the table, the ``mmlightbb://`` scheme, the downloader.

Nothing here touches the internet: checkpoints are served by an HTTP server on 127.0.0.1 (a
port the OS picks, stopped by the fixture), table entries are pointed at it with monkeypatch,
and torch's hub cache is a temporary folder (TORCH_HOME).
"""
import dataclasses
import glob
import hashlib
import http.server
import io
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
import torch

import mmlightbb  # noqa: F401  (registers the mmlightbb:// scheme)
from mmlightbb.engine import PretrainedWeightsError
from mmlightbb.engine.downloads import SCHEME, load_from_mmlightbb
from mmlightbb.models import pretrained as table
from mmlightbb.models.backbones import BACKBONES, FasterNet

from helpers import REPO, load_tool

DETECTOR_CONFIGS = sorted(
    f for f in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in f and osp.join('configs', 'imagenet') not in f)


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch.hub.get_dir() -> tmp; returns its checkpoints folder."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    monkeypatch.delenv('MMLIGHTBB_OFFLINE', raising=False)
    return tmp_path / 'torch' / 'hub' / 'checkpoints'


@pytest.fixture
def server():
    """A local HTTP server: ``files[path] = (bytes, mode)``; mode 'truncate' announces 4 KiB more
    than it sends and closes the connection."""
    files, hits = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body, mode = files.get(self.path, (None, None))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header('Content-Length', str(len(body) + (4096 if mode == 'truncate' else 0)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f'http://127.0.0.1:{httpd.server_port}', files=files, hits=hits)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _official_fasternet_t0():
    """A FasterNet-T0 classification state_dict in the official layout, BN statistics random."""
    torch.manual_seed(0)
    model = FasterNet('t0', num_classes=1000, norm_output=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _to_bytes(state_dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def _serve(monkeypatch, server, name, payload, mode=None, sha256='auto', file_name=None):
    """Point the table entry ``name`` at ``payload`` on the local server."""
    file_name = file_name or f'{name}.pth'
    server.files[f'/{file_name}'] = (payload, mode)
    digest = hashlib.sha256(payload).hexdigest() if sha256 == 'auto' else sha256
    entry = dataclasses.replace(table.PRETRAINED[name], url=f'{server.url}/{file_name}',
                                file_name=file_name, sha256=digest)
    monkeypatch.setitem(table.PRETRAINED, name, entry)
    return entry


def _files(folder):
    return sorted(os.listdir(folder)) if osp.isdir(folder) else []


# --------------------------------------------------------------------------------- the table
def test_table_has_every_family_and_entries_fit_their_arch():
    families = {e.family for e in table.PRETRAINED.values()}
    assert families == {'ConvNeXt', 'FasterNet', 'RepLKNet', 'ParameterNet'}
    names = set(table.PRETRAINED)
    for arch in ('tiny', 'small', 'base'):
        assert {f'convnext_{arch}_1k', f'convnext_{arch}_22k', f'convnext_{arch}_22k_1k'} <= names
    assert {f'fasternet_{a}' for a in ('t0', 't1', 't2', 's', 'm', 'l')} <= names
    assert {'replknet_31b_1k', 'replknet_31b_22k', 'replknet_31b_22k_1k', 'replknet_31l_22k',
            'replknet_xl_meg73m_1k_320', 'ghostnet_1x'} <= names
    for entry in table.PRETRAINED.values():
        assert entry.arch in BACKBONES[entry.family].arch_settings, entry.name
        assert entry.source.startswith('https://'), entry.name
        assert entry.top1 is None or 70 < entry.top1 < 90, entry.name
        if entry.manual:
            assert entry.manual_url.startswith('https://drive.google.com/'), entry.name
            assert entry.sha256 is None
        else:
            assert osp.basename(entry.url) == entry.file_name, entry.name
            host = re.match(r'https://([^/]+)/', entry.url).group(1)
            assert host in ('dl.fbaipublicfiles.com', 'github.com', 'download.openmmlab.com')
            hashed = re.search(r'-([0-9a-f]{8})\.pth$', entry.file_name)
            if host == 'download.openmmlab.com':  # the name carries the sha256 prefix
                assert hashed and entry.sha256 == hashed.group(1), entry.name
            else:
                assert entry.sha256 is None, entry.name  # no published checksum: none invented


def test_tools_weights_list_shows_the_table(capsys):
    tool = load_tool('weights.py')
    tool.main(['list'])
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ['name', 'family', 'arch'] and 'top-1' in header and 'URL' in header
    for entry in table.PRETRAINED.values():
        line = next(line for line in out.splitlines() if line.startswith(entry.name + ' '))
        assert entry.family in line and (entry.url or 'manual download') in line
    assert 'fasternet_t2  ' in out and '78.90' in out and '14.99' in out
    with pytest.raises(SystemExit, match="unknown pretrained weights 'nope'"):
        tool.main(['info', 'nope'])


def test_shipped_detector_configs_load_the_official_weights_of_their_backbone():
    """Every shipped config whose backbone has official ImageNet-1k weights loads them by
    default (the entry fits its family and arch); the others start from scratch."""
    from mmengine.config import Config
    default = {(e.family, e.arch): e.name for e in table.PRETRAINED.values()
               if e.trained_on == 'ImageNet-1k' and e.resolution == 224}
    for path in DETECTOR_CONFIGS:
        backbone = Config.fromfile(path, import_custom_modules=False).model.backbone
        init_cfg = backbone.get('init_cfg')
        name = table.weights_name(init_cfg.get('checkpoint')) if init_cfg else None
        expected = default.get((backbone.type, backbone.get('arch')))
        assert name == expected, (osp.relpath(path, REPO), name, expected)
        if name:
            assert init_cfg['type'] == 'Pretrained'
            text = open(path).read() + ''.join(
                open(osp.join(osp.dirname(path), b)).read() for b in
                re.findall(r"'([./\w]+_base_/backbones/\w+\.py)'", open(path).read()))
            assert '--cfg-options model.backbone.init_cfg=None' in text, path


# ------------------------------------------------------------------------- scheme and loader
def test_scheme_is_a_new_name_beside_mmengines_own():
    """``import mmlightbb`` adds the scheme through ``CheckpointLoader.register_scheme``; every
    scheme mmengine had (local files, http://, ...) is still mmengine's own loader."""
    from mmengine.runner import checkpoint
    schemes = checkpoint.CheckpointLoader._schemes
    assert schemes[SCHEME] is load_from_mmlightbb
    assert schemes[''] is checkpoint.load_from_local
    stock = {prefix: loader for prefix, loader in schemes.items() if prefix != SCHEME}
    assert len(stock) >= 5 and all(loader.__module__ == checkpoint.__name__
                                   for loader in stock.values()), stock


def test_init_cfg_name_downloads_once_checks_and_loads_with_the_key_report(
        hub, server, monkeypatch, tmp_path):
    official = _official_fasternet_t0()
    payload = _to_bytes(official)
    _serve(monkeypatch, server, 'fasternet_t0', payload)
    model = FasterNet('t0', out_indices=(1, 2, 3),
                      init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://fasternet_t0'))
    model.init_weights()
    assert _files(hub) == ['fasternet_t0.pth'] and server.hits == ['/fasternet_t0.pth']
    with open(hub / 'fasternet_t0.pth', 'rb') as f:
        assert f.read() == payload

    # the same weights loaded directly from a local file
    local = tmp_path / 'local.pth'
    local.write_bytes(payload)
    direct = FasterNet('t0', out_indices=(1, 2, 3))
    direct.load_pretrained(str(local))
    for key, value in direct.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    # cached: no second request; the key report as for any checkpoint (the detection output
    # norms are new, the classifier head is not a backbone key)
    again = FasterNet('t0', out_indices=(1, 2, 3))
    report = again.load_pretrained('mmlightbb://fasternet_t0')
    assert server.hits == ['/fasternet_t0.pth']
    assert all(k.startswith(('norm2.', 'norm4.', 'norm6.')) for k in report['missing'])
    assert report['missing'] and report['matched'] == len(official) - 3  # head, conv_head
    assert set(report['unexpected']) == {'head.weight', 'head.bias', 'avgpool_pre_head.1.weight'}


def test_a_converted_layout_through_the_scheme_equals_loading_the_official_weights(
        hub, server, monkeypatch):
    """timm's FasterNet layout served by name: convert_state_dict's result equals the official
    state_dict loaded directly."""
    official = _official_fasternet_t0()
    timm = {}
    for key, value in official.items():
        match = re.match(r'stages\.(\d+)\.(.*)', key)
        if match:
            index, rest = int(match.group(1)), match.group(2)
            key = (f'stages.{(index + 1) // 2}.downsample.{rest}' if index % 2 else
                   f'stages.{index // 2}.{rest}')
        timm[{'avgpool_pre_head.1.weight': 'conv_head.weight', 'head.weight': 'classifier.weight',
              'head.bias': 'classifier.bias'}.get(key, key)] = value
    assert 'stages.1.downsample.reduction.weight' in timm and 'head.weight' not in timm
    _serve(monkeypatch, server, 'fasternet_t0', _to_bytes(timm))

    via_scheme = FasterNet('t0', num_classes=1000, norm_output=False)
    report = via_scheme.load_pretrained('mmlightbb://fasternet_t0')
    assert report['missing'] == [] and report['unexpected'] == []
    direct = FasterNet('t0', num_classes=1000, norm_output=False)
    direct.load_state_dict(official)
    for key, value in direct.state_dict().items():
        assert torch.equal(via_scheme.state_dict()[key], value), key


def _closed_port_url():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    return f'http://127.0.0.1:{port}/fasternet_t0.pth'


@pytest.mark.parametrize('failure', ['wrong checksum', 'truncated', 'unreachable'])
def test_a_failed_download_is_one_line_and_leaves_nothing_in_the_cache(
        failure, hub, server, monkeypatch):
    payload = _to_bytes(_official_fasternet_t0())
    entry = _serve(monkeypatch, server, 'fasternet_t0', payload,
                   mode='truncate' if failure == 'truncated' else None,
                   sha256='0123abcd' if failure == 'wrong checksum' else 'auto')
    if failure == 'unreachable':
        entry = dataclasses.replace(entry, url=_closed_port_url())
        monkeypatch.setitem(table.PRETRAINED, 'fasternet_t0', entry)
    model = FasterNet('t0', out_indices=(1, 2, 3),
                      init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://fasternet_t0'))
    with pytest.raises(PretrainedWeightsError) as info:
        model.init_weights()
    message = str(info.value)
    assert '\n' not in message and entry.url in message
    assert str(hub / 'fasternet_t0.pth') in message
    assert '--cfg-options model.backbone.init_cfg=None' in message
    assert {'wrong checksum': 'sha256', 'truncated': 'cut short',
            'unreachable': 'cannot download'}[failure] in message
    assert _files(hub) == []  # no file, no hidden .partial


def test_manual_offline_unknown_and_corrupt_cache_each_say_what_to_do(hub, server, monkeypatch):
    from mmlightbb.engine import fetch_weights
    with pytest.raises(PretrainedWeightsError, match=r'replknet_31l_22k has no direct download: '
                       r'get it by hand from https://drive\.google\.com/.* save it as .*'
                       r'RepLKNet-31L_ImageNet-22K\.pth'):
        fetch_weights('replknet_31l_22k')
    with pytest.raises(PretrainedWeightsError, match="unknown pretrained weights 'fasternet_t3'"):
        FasterNet('t0').load_pretrained('mmlightbb://fasternet_t3')
    payload = _to_bytes(_official_fasternet_t0())
    _serve(monkeypatch, server, 'fasternet_t0', payload)
    monkeypatch.setenv('MMLIGHTBB_OFFLINE', '1')
    with pytest.raises(PretrainedWeightsError, match='MMLIGHTBB_OFFLINE forbids downloads'):
        fetch_weights('fasternet_t0')
    assert server.hits == []
    # a file placed by hand is used offline, and checked against the published sha256
    hub.mkdir(parents=True)
    (hub / 'fasternet_t0.pth').write_bytes(payload)
    assert fetch_weights('fasternet_t0') == str(hub / 'fasternet_t0.pth')
    (hub / 'fasternet_t0.pth').write_bytes(payload[:-10])
    with pytest.raises(PretrainedWeightsError, match='does not have the published sha256'):
        fetch_weights('fasternet_t0')


def test_train_tool_without_network_stops_with_one_line(tmp_path):
    """tools/train.py on a shipped config whose weights are not cached, downloads forbidden (as
    without a network): one line naming the URL, the cache file and how to train from scratch."""
    from mmlightbb.datasets import make_sonar_dataset
    make_sonar_dataset(str(tmp_path / 'data' / 'sonar'), num_train=2, num_val=1, size=64)
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch'), MMLIGHTBB_OFFLINE='1')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'),
         osp.join(REPO, 'configs/yolox_fasternet.py'),
         '--work-dir', str(tmp_path / 'work'), '--cfg-options', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    entry = table.PRETRAINED['fasternet_t2']
    assert last.startswith('error: fasternet_t2 is not in the cache'), proc.stderr[-3000:]
    assert entry.url in last and osp.join(str(tmp_path / 'torch'), 'hub', 'checkpoints',
                                          entry.file_name) in last
    assert last.endswith('or train from scratch with --cfg-options model.backbone.init_cfg=None')
