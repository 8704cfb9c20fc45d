"""Every run of a comparison timed side by side, after all training: one process builds each run's
deployed detector (and its export for each runtime of ``--backends``) and times them all
round-robin (:func:`~mmlightbb.analysis.benchmark.time_interleaved`), so that load from elsewhere
falls on every run alike; ``OUT/timing.json`` holds every round's latency, the median and
inter-quartile range, and when, where and how the timing ran.

What one call times is what the run's own benchmark times: PyTorch the deployed detector's whole
``test_step`` (preprocessing, backbone, neck, head, box decoding and NMS) on one synthetic uint8
image at the test size, batch 1, in the comparison's precision; a runtime the exported YOLOX
detector with decoding and NMS on the normalised input (no preprocessing), its INT8 graph
calibrated as the run's own benchmark calibrates it. A run is timed with its
first seed's last checkpoint (the seeds share the architecture; the weights change only how many
boxes reach NMS, on random pixels as much as on any).
"""
import copy
import datetime
import os.path as osp
import platform
import tempfile
from typing import Callable, List

import torch
from torch import nn

from ...engine.precision import autocast_compute
from ..benchmark import build_detector, cpu_name, deploy_model, time_interleaved
from ..benchmark.timing import SETTLE_MS
from ..benchmark.inputs import in_channels_of, make_batch
from ..complexity import count_macs, count_params
from ..export import load_runtime, prepare_with_nms, require
from ..quantize import export_graph
from ..uncertainty import latency_stats
from .runs import last_line

TIMING = 'timing.json'


def entry_key(name: str, backend: str, precision: str) -> str:
    return f'{name} {backend} {precision}'


def _pytorch_call(model, bench) -> Callable[[], object]:

    batch = make_batch(1, bench.shape, in_channels_of(model), device=bench.device)
    cuda = bench.device == 'cuda'

    def call():
        with autocast_compute(model, bench.precision, bench.device):
            out = model.test_step(dict(batch))
        if cuda:
            torch.cuda.synchronize()
        return out
    return call


def _runtime_call(model, bench, stem: str, source: dict) -> Callable[[], object]:

    require('onnx')
    require(bench.backend)
    fmt = 'onnx' if bench.backend == 'onnxruntime' else 'openvino'
    batch = make_batch(1, bench.shape, in_channels_of(model))
    x = model.data_preprocessor(copy.copy(batch), False)['inputs'].float()
    module = prepare_with_nms(model, tuple(x.shape[-2:]), deploy=False)
    path = export_graph(module, model, x, stem + ('.onnx' if fmt == 'onnx' else '.xml'), fmt,
                        bench.quantization, source)
    run = load_runtime(path, fmt, bench.threads, bench.precision)
    arr = x.numpy()
    return lambda: run(arr)


def detector_complexity(model, shape) -> dict:
    """Parameters and GFLOPs (2 x multiply-adds; mmengine's FlopAnalyzer, every op it counts) of
    the whole deployed detector -- backbone, neck and head(s), not the post-processing -- on one
    preprocessed image at the test size; a ``note`` instead of GFLOPs when tracing fails."""
    data = model.data_preprocessor(make_batch(1, shape, in_channels_of(model)), False)
    samples, channels = data['data_samples'], data['inputs'].shape[1]  # what the network gets

    class Network(nn.Module):  # the tensor-mode forward (Cascade R-CNN's needs the samples)
        def __init__(self):
            super().__init__()
            self.detector = model

        def forward(self, x):
            return model._forward(x, samples)

    out = dict(params=count_params(model), input_hw=list(shape), gflops=None,
               counter='mmengine FlopAnalyzer, all counted ops of backbone + neck + head(s), '
                       '1 multiply-add = 2 FLOPs')
    try:
        out['gflops'] = 2 * count_macs(Network(), (1, channels, *shape)) / 1e9
    except Exception as err:  # e.g. an op the tracer cannot follow
        out['note'] = f'GFLOPs not counted: {last_line(err)}'
    return out


def time_side_by_side(runs: List[dict], rounds: int, warmup: int, threads: int, device: str,
                      log: Callable[[str], None]) -> dict:
    """Time ``runs`` (dicts with ``name``, ``config``, ``checkpoint`` and ``benches``, the
    BenchmarkSettings of each backend) round-robin in this process; returns what
    ``timing.json`` holds. A runtime that is missing or a detector that does not export gets a
    ``note`` instead of numbers."""
    calls, entries, complexity = {}, {}, {}
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix='mmlightbb-timing-') as workdir:
        try:
            for run in runs:
                model = deploy_model(build_detector(run['config'], run['checkpoint'])[0])
                complexity[run['name']] = detector_complexity(model, run['benches'][0].shape)
                model = model.to(device)
                for bench in run['benches']:
                    key = entry_key(run['name'], bench.backend, bench.precision)
                    entries[key] = dict(name=run['name'], backend=bench.backend,
                                        precision=bench.precision, checkpoint=run['checkpoint'])
                    try:
                        calls[key] = (_pytorch_call(model, bench) if bench.backend == 'pytorch'
                                      else _runtime_call(model, bench, osp.join(
                                          workdir, str(len(entries))), run))
                    except Exception as err:
                        if bench.backend == 'pytorch':
                            raise
                        entries[key]['note'] = last_line(err)
            log(f'timing {len(calls)} detectors side by side: {rounds} rounds, each round every '
                f'one once (order reversed every other round, each turn after {SETTLE_MS:g} ms '
                f'of untimed calls), {threads} threads, {device}')
            started = datetime.datetime.now().isoformat(timespec='seconds')
            samples = time_interleaved(calls, rounds, warmup)
            finished = datetime.datetime.now().isoformat(timespec='seconds')
        finally:
            torch.set_num_threads(threads_before)
    for key, values in samples.items():
        entries[key].update(samples_ms=values, **latency_stats(values))
    return dict(started=started, finished=finished, host=platform.node(), cpu=cpu_name(),
                device=device, threads=threads, rounds=rounds, warmup=warmup,
                settle_ms=SETTLE_MS,
                how='after all training, in one process, every detector once per round '
                    '(order reversed every other round; each turn timed after untimed calls of '
                    f'the same detector for at least {SETTLE_MS:g} ms, so that the previous '
                    "detector's runtime threads are quiet and the caches hold this one), batch 1; "
                    'PyTorch: the whole test_step '
                    '(preprocessing, network, box decoding, NMS) on a synthetic image at the test '
                    'size; runtimes: the exported detector with decoding and NMS, without the '
                    'preprocessing', entries=entries, complexity=complexity)
