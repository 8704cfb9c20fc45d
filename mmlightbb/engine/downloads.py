"""Named ImageNet weights: download once into torch's hub cache, check, load.

``init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://fasternet_t2')`` reaches
:func:`load_from_mmlightbb` through mmengine's ``CheckpointLoader`` (a new scheme, registered
when this module is imported; mmengine's own schemes stay as they are). It looks the name up in
:data:`mmlightbb.models.pretrained.PRETRAINED`, returns the cached file ``torch.hub.get_dir()/checkpoints/<file_name>`` or downloads it there
first, and reads it with :func:`.checkpoint.safe_load` (``weights_only=True``). The backbone's
``load_pretrained`` then converts the key layout and logs its key report.

A download is checked before it is kept: as many bytes as the server announced, and the sha256
published for the file (where there is one); an interrupted, truncated or wrong download leaves
nothing behind (:func:`.fileio.atomic_files`). ``torch.hub.download_url_to_file`` (temporary
file, ``hash_prefix``, rename) is not used because it lacks what this module adds, its thin
layer over ``urllib``: the length check (``http.client`` returns a body cut short by a closed
connection as if it were complete, and torch.hub then keeps it, a corrupt cache entry when no
sha256 is published), a timeout (torch.hub waits forever on a stalled server), one-line errors
and an fsync before the rename. In a multi-process run the first process of each machine
downloads while the others wait. Every failure is one line (:class:`PretrainedWeightsError`)
naming the URL, the file to place in the cache by hand and how to train from scratch instead.
``MMLIGHTBB_OFFLINE=1`` forbids downloads (cached files are still used).
"""
import hashlib
import http.client
import os
import os.path as osp
import socket
import urllib.error
import urllib.request
from typing import Optional, Union

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from ..models.pretrained import SCHEME, PretrainedWeights, get_weights, weights_name
from ..models.checkpoint import CheckpointFormatError, safe_load
from .fileio import atomic_files

__all__ = ['PretrainedWeightsError', 'OFFLINE_ENV', 'SCRATCH_HINT', 'cache_dir', 'cached_path',
           'fetch_weights', 'download_file', 'load_from_mmlightbb']

OFFLINE_ENV = 'MMLIGHTBB_OFFLINE'
SCRATCH_HINT = 'or train from scratch with --cfg-options model.backbone.init_cfg=None'
CHUNK = 1 << 20


class PretrainedWeightsError(CheckpointFormatError):
    """Named weights that cannot be had: unknown name, no network, a truncated or wrong download,
    a manual-only file not yet in the cache. The message is one line."""


def cache_dir() -> str:
    """torch.hub's checkpoint cache, where torch.hub and mmengine keep downloads too."""
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def cached_path(entry: PretrainedWeights) -> str:
    return osp.join(cache_dir(), entry.file_name)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: str, sha256: Optional[str] = None, timeout: float = 60.,
                  hint: str = '') -> str:
    """Download ``url`` to ``dest`` atomically; check its length and (optionally) its sha256.

    ``sha256`` may be the full hex digest or its leading digits. Raises
    :class:`PretrainedWeightsError` (one line, ending in ``hint``) on any failure; ``dest`` is
    never left half-written.
    """
    hint = f'; {hint}' if hint else ''
    digest, received, expected = hashlib.sha256(), 0, None
    with atomic_files(dest) as (tmp, ), open(tmp, 'wb') as out:
        request = urllib.request.Request(url, headers={'User-Agent': 'mmlightbb'})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get('Content-Length')
                expected = int(length) if length and length.isdigit() else None
                print_log(f'downloading {url} to {dest}'
                          + (f' ({expected / 2**20:.1f} MiB)' if expected else ''),
                          logger='current')
                next_report = 0.1  # a line every 10%: a long download is not a hang
                for chunk in iter(lambda: response.read(CHUNK), b''):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if expected and next_report * expected <= received < expected:
                        print_log(f'  {100 * received // expected}% of {osp.basename(dest)}',
                                  logger='current')
                        next_report = received / expected + 0.1
        except http.client.IncompleteRead as err:
            received += len(err.partial)
            expected = expected or received + (err.expected or 1)
        except (urllib.error.URLError, socket.timeout, ConnectionError,
                http.client.HTTPException, OSError) as err:
            reason = ' '.join(str(getattr(err, 'reason', None) or err).split())
            code = f'HTTP {err.code} ' if isinstance(err, urllib.error.HTTPError) else ''
            raise PretrainedWeightsError(
                f'cannot download {url}: {code}{reason}. Without a network, download it on '
                f'another machine and place it as {dest}{hint}') from None
        if expected is not None and received != expected:
            raise PretrainedWeightsError(
                f'the download of {url} was cut short: {received} of {expected} bytes arrived; '
                f'nothing was kept in {osp.dirname(osp.abspath(dest))}. Try again, or download '
                f'it elsewhere and place it as {dest}{hint}')
        actual = digest.hexdigest()
        if sha256 and not actual.startswith(sha256.lower()):
            raise PretrainedWeightsError(
                f'the download of {url} has sha256 {actual[:max(len(sha256), 8)]}..., expected '
                f'{sha256}...; it was not kept (a changed or corrupted file). Try again, or '
                f'check the file by hand and place it as {dest}{hint}')
    return dest


def _check_cached(entry: PretrainedWeights, path: str) -> None:
    if entry.sha256 and not _sha256(path).startswith(entry.sha256.lower()):
        raise PretrainedWeightsError(
            f'{path} does not have the published sha256 {entry.sha256}... of '
            f'{entry.url or entry.manual_url}: delete it and run again to download it anew, '
            f'{SCRATCH_HINT}')


def fetch_weights(name: Union[str, PretrainedWeights], timeout: float = 60.,
                  download: bool = True) -> str:
    """The local path of the named weights, downloaded into :func:`cache_dir` if absent
    (``download=False``: only a cached file, else :class:`PretrainedWeightsError`)."""
    try:
        entry = name if isinstance(name, PretrainedWeights) else get_weights(name)
    except KeyError as err:
        raise PretrainedWeightsError(err.args[0]) from None
    path = cached_path(entry)
    if osp.isfile(path):
        _check_cached(entry, path)
        return path
    if entry.manual:
        raise PretrainedWeightsError(
            f'{entry.name} has no direct download: get it by hand from {entry.manual_url} and '
            f'save it as {path}, {SCRATCH_HINT}')
    if not download:
        raise PretrainedWeightsError(
            f'{entry.name} is not in the cache ({path}) and this process does not download it '
            f'(the first process of the machine does: see its error); {SCRATCH_HINT}')
    if os.environ.get(OFFLINE_ENV, '') not in ('', '0'):
        raise PretrainedWeightsError(
            f'{entry.name} is not in the cache and {OFFLINE_ENV} forbids downloads: download '
            f'{entry.url} elsewhere and place it as {path}, {SCRATCH_HINT}')
    download_file(entry.url, path, sha256=entry.sha256, timeout=timeout, hint=SCRATCH_HINT)
    return path


def _local_rank() -> int:
    return int(os.environ.get('LOCAL_RANK', get_dist_info()[0]))


def load_from_mmlightbb(filename: str, map_location=None):
    """mmengine ``CheckpointLoader`` scheme ``mmlightbb://NAME``: fetch (once per machine in a
    multi-process run), then :func:`safe_load`."""
    name = weights_name(filename)
    _, world_size = get_dist_info()
    if world_size > 1 and _local_rank() != 0:
        barrier()  # the first process of this machine downloads
        path = fetch_weights(name, download=False)
    else:
        try:
            path = fetch_weights(name)
        finally:
            if world_size > 1:
                barrier()
    entry = get_weights(name)
    print_log(f'{SCHEME}{name}: {entry.family}(arch={entry.arch!r}) {entry.trained_on} '
              f'weights from {path}', logger='current')
    return safe_load(path, map_location=map_location or 'cpu')


CheckpointLoader.register_scheme(SCHEME, load_from_mmlightbb)
