"""What a comparison runs: the runs of heads x backbones, their schedule defaults, the settings
that make a finished run the same run, the precision and backends it is tested and timed in, and
how far each run got."""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from ...engine.precision import PRECISIONS, resolve_precision
from ...models.pretrained import get_weights
from .. import detector_configs as dc
from ..benchmark.settings import BACKENDS, RUNTIME_PRECISIONS
from ..compare import BENCHMARK, benchmark_file_name
from ..compare import timed_only as timed_only_run

RUN_INFO = 'run.json'
TEST_METRICS = 'test_metrics.json'
SETTINGS_VERSION = 1
QUICK = dict(size=160, epochs=4, min_iters=120, max_epochs=30)
DEFAULT = dict(epochs=12, min_iters=300, max_epochs=100)
FEW_ITERS = 100  # fewer training iterations per run than this: say that mAP will mean little


class ComparisonError(ValueError):
    """Bad options or a work dir made with other settings (one line with the fix)."""


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------- planning
def plan_runs(heads: Sequence[str], backbones: Sequence[str], quick: bool = False,
              pretrained: Optional[Dict[str, str]] = None) -> List[dict]:
    """One dict per run (``name``, ``head``, ``family``, ``arch``, ``checkpoint``), heads outer,
    in the given order, duplicates dropped. Unknown names raise ``detector_configs.ConfigError``;
    a ``pretrained`` key that matches no chosen backbone or a missing checkpoint file raise
    :class:`ComparisonError`."""
    if not heads:
        raise ComparisonError('no head chosen; pass --heads yolox cascade (or one of them)')
    if not backbones:
        raise ComparisonError('no backbone chosen; pass --backbones, e.g. fasternet:t0 baseline')
    runs, seen = [], set()
    for head in heads:
        dc.check_head(head)
        for spec in backbones:
            family, arch = dc.parse_backbone(spec, head, quick)
            if family in dc.WHOLE_DETECTORS and dc.WHOLE_DETECTORS[family][0] != head:
                continue  # e.g. RTMDet is a row of the yolox runs only
            name = dc.run_name(head, family, arch)
            if name not in seen:
                seen.add(name)
                runs.append(dict(name=name, head=head, family=family, arch=arch,
                                 checkpoint=None))
    for key, path in (pretrained or {}).items():
        family, _, arch = key.partition(':')
        if family == 'baseline':
            raise ComparisonError(f'--pretrained {key}=...: name the backbone itself (e.g. '
                                  'resnet:50=CKPT or cspdarknet:s=CKPT), not baseline')
        fam, arch = dc.parse_backbone(key) if arch else (dc.parse_backbone(family)[0], None)
        hits = [r for r in runs if r['family'] == fam and (arch is None or r['arch'] == arch)]
        if not hits:
            raise ComparisonError(
                f'--pretrained {key}=...: no chosen backbone is {key} (chosen: '
                f"{sorted({r['family'] + ':' + r['arch'] for r in runs})})")
        if path.startswith('mmlightbb://'):  # named weights, downloaded once (docs/pretrained.md)
            try:
                get_weights(path)
            except KeyError as err:
                raise ComparisonError(f'--pretrained {key}={path}: {err.args[0]}') from None
        elif '://' not in path:  # other URLs (https://, torchvision://) go to mmengine as given
            if not osp.isfile(path):
                raise ComparisonError(f'--pretrained {key}={path}: checkpoint file not found')
            path = osp.abspath(path)
        for r in hits:
            r['checkpoint'] = path
    return runs


def seed_dir_name(name: str, seed: int) -> str:
    """The folder of a run trained with ``seed``: seed 0 keeps the run's name (so a comparison
    made before --seeds is the seed-0 part of one with more), another seed adds ``_seed<seed>``."""
    return name if seed == 0 else f'{name}_seed{seed}'


def epochs_text(n: int) -> str:
    if n == 0:
        return 'timed only (0 epochs: not trained or tested)'
    return f"{n} epoch{'' if n == 1 else 's'}"


def default_epochs(train_images: int, batch_size: int, quick: bool = False) -> int:
    """12 epochs (``quick``: 4), or more on a small set so that a run gets at least 300
    (``quick``: 120) iterations: from scratch, a YOLOX or Cascade R-CNN run of fewer iterations
    ends with a mAP near 0 on the synthetic sonar set (measured: YOLOX-s with FasterNet-T0,
    40 iterations, mAP50 0.000; Cascade R-CNN with FasterNet-T2, 24 iterations, 0.005, and 96
    iterations, 0.27)."""
    preset = QUICK if quick else DEFAULT
    steps = max(1, math.ceil(train_images / batch_size))
    return int(min(preset['max_epochs'],
                   max(preset['epochs'], math.ceil(preset['min_iters'] / steps))))


def default_size(summary: dict) -> int:
    """The median image's longer side rounded up to a multiple of 32, within 128..640."""
    side = max(summary['image_size']['width'], summary['image_size']['height'])
    return int(min(640, max(128, 32 * math.ceil(side / 32))))


def test_input_shape(head: str, size: int, image_size: dict) -> tuple:
    """(H, W) of the network input at test time for the median image: YOLOX pads to the
    ``size`` square; Cascade R-CNN resizes to fit ``size`` (keeping the ratio) and pads to a
    multiple of 32."""
    if head == 'yolox':
        return size, size
    w, h = image_size['width'], image_size['height']
    scale = size / max(w, h)
    return (int(32 * math.ceil(round(h * scale) / 32)), int(32 * math.ceil(round(w * scale) / 32)))


def run_settings(run: dict, summary: dict, epochs: int, size: int, batch_size: int,
                 seed: int, precision: str = 'fp32') -> dict:
    """What a run's result depends on; a finished run is reused only when these are equal.
    ``precision`` is the one its test runs in (what runs here, see
    :func:`check_precision_and_backends`); the backends it is timed with are not in them."""
    ckpt = run['checkpoint']
    weights = None
    if ckpt and osp.isfile(ckpt):
        st = os.stat(ckpt)
        weights = dict(path=ckpt, bytes=st.st_size, mtime=int(st.st_mtime))
    elif ckpt:
        weights = dict(path=ckpt)
    return dict(version=SETTINGS_VERSION, data=summary['fingerprint'],
                classes=summary['classes'], epochs=epochs, size=size, batch_size=batch_size,
                seed=seed, schedule=dc.SCHEDULES[run['head']],
                cascade=dc.CASCADE_SMALL if run['head'] == 'cascade' else None,
                weights=weights, precision=precision)


def saved_settings(info: dict) -> dict:
    """The settings in a run's run.json; those written before --precision were tested in fp32."""
    return dict(dict(precision='fp32'), **info['settings'])


def check_precision_and_backends(precision: str, backends: Sequence[str], device: str) -> dict:
    """``dict(requested, precision, note, backends)``: the precision that runs here and why, and
    the backends with PyTorch first, of ``--precision`` and ``--backends``;
    :class:`ComparisonError` for what cannot run, before anything is trained. bf16 on a CPU
    without native bf16 runs fp32 (the note says so)."""
    if precision not in PRECISIONS:
        raise ComparisonError(f'unknown precision {precision!r}; valid precisions are '
                              f'{list(PRECISIONS)} (--precision)')
    for backend in backends:
        if backend not in BACKENDS:
            raise ComparisonError(f'unknown backend {backend!r}; valid backends are '
                                  f'{list(BACKENDS)} (--backends)')
    try:
        ran, note = resolve_precision(precision, device, warn=False)
    except ValueError as err:
        raise ComparisonError(f'--precision {precision}: {err}') from None
    runtimes = [b for b in dict.fromkeys(backends) if b != 'pytorch']
    if runtimes and device != 'cpu':
        raise ComparisonError(f'--backends {runtimes[0]} runs on the CPU; use --device cpu, or '
                              'drop it from --backends')
    if any(ran not in RUNTIME_PRECISIONS[b] for b in runtimes):  # ORT only: fp16 is CUDA's
        raise ComparisonError(f'--backends onnxruntime runs the fp32 graph, but the runs are '
                              f'tested in {ran}; use --precision fp32, or drop onnxruntime '
                              '(openvino runs bf16)')
    return dict(requested=precision, precision=ran, note=note, backends=['pytorch'] + runtimes)


def settings_diff(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = []
    for k in keys[:3]:
        a, b = old.get(k), new.get(k)
        shown.append(f'{k} {a} -> {b}' if not isinstance(a, (dict, list)) else k)
    return ', '.join(shown)


def timed_only(run_dir: str) -> bool:
    """Whether the run's run.json says 0 epochs: its detector is timed, never trained or
    tested (e.g. the demo's Cascade R-CNN rows)."""
    return timed_only_run(read_json(osp.join(run_dir, RUN_INFO)) or {})


def run_state(run_dir: str) -> str:
    """'done' (test metrics and benchmark saved; a :func:`timed_only` run: its benchmark),
    'tested' (test metrics only: trained and tested by a launcher, not timed yet), 'started' (a
    checkpoint or files) or 'new'."""
    if osp.isfile(osp.join(run_dir, TEST_METRICS)):
        return 'done' if osp.isfile(osp.join(run_dir, BENCHMARK)) else 'tested'
    if osp.isfile(osp.join(run_dir, BENCHMARK)) and timed_only(run_dir):
        return 'done'
    if osp.isdir(run_dir) and any(f.endswith('.pth') for f in os.listdir(run_dir)):
        return 'started'
    return 'new'


def runtime_timed(run_dir: str, backend: str, precision: str) -> bool:
    """Whether the run has the numbers of ``backend`` (an entry with a note has none)."""
    entry = read_json(osp.join(run_dir, benchmark_file_name(backend, precision)))
    return entry is not None and 'fps' in entry
