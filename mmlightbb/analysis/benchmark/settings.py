"""What one benchmark run measures: :class:`BenchmarkSettings`, validated once when made."""
import dataclasses
from typing import TYPE_CHECKING, Optional, Tuple

import torch

from ...engine.precision import PRECISIONS, TORCH_DTYPE_NAMES, resolve_precision

if TYPE_CHECKING:  # analysis.quantize builds on analysis.export, which builds on this package
    from ..quantize import QuantizationSettings

__all__ = ['BenchmarkSettings', 'BACKENDS', 'RUNTIME_PRECISIONS']

BACKENDS = ('pytorch', 'onnxruntime', 'openvino')
# what each export runtime runs: ORT the fp32 graph, OpenVINO also bf16 (INFERENCE_PRECISION_HINT);
# both an INT8 graph that analysis.quantize wrote
RUNTIME_PRECISIONS = {'onnxruntime': ('fp32', 'int8'), 'openvino': ('fp32', 'bf16', 'int8')}


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings:
    """Every knob of a benchmark run (see the package doc for what each one changes).

    ``shape`` is (H, W) of the synthetic batch (None: the config's test scale, or the real
    images' size with ``real_images``). Making one raises ValueError naming the first bad
    setting, so nothing is built or timed with a bad one; :func:`dataclasses.replace` re-checks.

    ``precision`` is 'fp32', 'bf16' (autocast; CPUs with native bf16, else it runs fp32 with a
    warning) or 'fp16' (CUDA autocast); ``fp16=True`` is the older spelling of
    ``precision='fp16'``. ``backend`` 'onnxruntime' / 'openvino' times the exported (ONNX) model in
    that runtime instead of PyTorch (CPU, deployed): the backbone with ``backbone_only``, else the
    YOLOX detector with box decoding and NMS in the graph (batch 1; other detectors raise
    ``ExportError`` when benchmarked). ``precision='int8'`` (runtimes, whole detector) times that
    graph quantized as ``tools/export.py --precision int8`` quantizes it, calibrated as
    ``quantization`` says through the config of the benchmark's ``source``.
    """
    shape: Optional[Tuple[int, int]] = None
    batch_size: int = 1
    backbone_only: bool = False
    warmup: int = 5
    iters: int = 20
    threads: Optional[int] = None
    device: str = 'cpu'
    deploy: bool = False
    channels_last: bool = False
    fp16: bool = False
    precision: str = 'fp32'
    backend: str = 'pytorch'
    real_images: bool = False
    profile: bool = False
    profile_iters: int = 3
    peak_size: int = 2048
    progress: bool = True
    quantization: Optional['QuantizationSettings'] = None

    def __post_init__(self):
        if self.shape is not None:
            if len(self.shape) != 2 or any(int(s) < 1 for s in self.shape):
                raise ValueError(f'shape must be two positive ints H W, got {self.shape!r}')
            object.__setattr__(self, 'shape', tuple(int(s) for s in self.shape))
        if not _is_count(self.iters, 1):
            raise ValueError(f'iters must be an int >= 1 (timed iterations), got {self.iters!r}')
        if not _is_count(self.warmup, 0):
            raise ValueError(f'warmup must be an int >= 0 (discarded iterations), got '
                             f'{self.warmup!r}')
        if not _is_count(self.batch_size, 1):
            raise ValueError(f'batch size must be an int >= 1, got {self.batch_size!r}')
        if self.threads is not None and not _is_count(self.threads, 1):
            raise ValueError(f'threads must be an int >= 1, got {self.threads!r}')
        if self.device not in ('cpu', 'cuda'):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == 'cuda' and not torch.cuda.is_available():
            raise ValueError('device cuda requested but torch.cuda.is_available() is False '
                             f'(torch {torch.__version__}); use --device cpu')
        if self.precision == 'int8':
            self._check_int8()
        elif self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS + ('int8', ))}, "
                             f'got {self.precision!r}')
        elif self.quantization is not None:
            raise ValueError(f'quantization settings are for precision int8, not '
                             f'{self.precision}; drop them or use precision int8')
        if self.fp16:  # the older flag: an alias of precision='fp16'
            if self.precision not in ('fp32', 'fp16'):
                raise ValueError(f'--fp16 and --precision {self.precision} exclude each other; '
                                 'use --precision alone')
            object.__setattr__(self, 'precision', 'fp16')
        object.__setattr__(self, 'fp16', self.precision == 'fp16')
        if self.precision == 'fp16':
            resolve_precision('fp16', self.device)  # raises on CPU
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got "
                             f'{self.backend!r}')
        if self.backend != 'pytorch':
            if not self.backbone_only and self.batch_size != 1:
                raise ValueError(f'--backend {self.backend} times the exported YOLOX detector '
                                 'with NMS at batch 1 (tools/export.py --with-nms); use '
                                 '--batch-size 1 or --backbone-only')
            if self.device != 'cpu':
                raise ValueError(f'--backend {self.backend} runs on the CPU here; use --device cpu')
            if not self.deploy:
                raise ValueError(f'--backend {self.backend} times the deployed export (what '
                                 'tools/export.py writes): add --deploy')
            if self.profile and self.backend != 'openvino':
                raise ValueError('--profile is for --backend pytorch or openvino (ONNX Runtime\'s '
                                 'call is one opaque op here)')
            for flag, on in (('--real-images', self.real_images),
                             ('--channels-last', self.channels_last)):
                if on:
                    raise ValueError(f'{flag} is for --backend pytorch only')
            if self.precision not in RUNTIME_PRECISIONS[self.backend]:  # only ORT gets here
                raise ValueError('--backend onnxruntime runs the fp32 ONNX graph; use --precision '
                                 'fp32 (bf16: --backend openvino or pytorch)')
        if self.profile and not _is_count(self.profile_iters, 1):
            raise ValueError(f'profile iters must be an int >= 1, got {self.profile_iters!r}')
        if self.real_images and self.shape is not None:
            raise ValueError('--shape and --real-images exclude each other (the test pipeline '
                             'sizes real images); drop one')

    def _check_int8(self):
        if self.backend == 'pytorch':
            raise ValueError('precision int8 runs an INT8 graph in a runtime: use --backend '
                             'openvino or onnxruntime (PyTorch runs fp32, bf16 or fp16)')
        if self.backbone_only:
            raise ValueError('precision int8 times the quantized detector; drop --backbone-only '
                             '(benchmarks/deploy_targets.py times INT8 backbones)')
        if self.quantization is None:
            raise ValueError('precision int8 needs calibration images: --calib FOLDER of '
                             'training images (quantization=QuantizationSettings(calib=...))')

    @property
    def dtype(self) -> str:
        """The requested compute dtype (the result's ``settings.dtype`` says what ran); an INT8
        graph takes float32 input and quantizes it inside."""
        return input_dtype(self.precision)


def input_dtype(precision: str) -> str:
    """The dtype of what the timed unit takes at ``precision``."""
    return 'float32' if precision == 'int8' else TORCH_DTYPE_NAMES[precision]


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
