"""The contract every mmlightbb backbone follows (see docs/backbones.md).

A subclass declares ``arch_settings`` (name -> settings dict), builds its layers, sets
``stage_channels`` (channels of the four stride-4/8/16/32 maps) and implements
``frozen_modules(i)`` (the modules that ``frozen_stages >= i`` freezes: 0 is the stem, k the k-th
stage including the downsampling that belongs to it) and ``forward_stages(x, last_stage)`` (the
stage maps before output norms, on which its ``forward`` and ``classify`` are built). It then gets:
arch parsing with clear errors, ``out_indices``/``out_channels``/``num_classes``/
``drop_path_rate``/``csp`` checks, the stochastic-depth schedule, the ``classify`` guard, mmdet's
``frozen_stages`` (applied once the subclass is built, and again by ``train()``)/``norm_eval``
semantics, pretrained loading from every common checkpoint layout with a key report, and
``switch_to_deploy()`` that calls each submodule's own re-parameterization.
"""
import copy
import functools
import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import MMLogger, print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..checkpoint import runner_checkpoint_loading
from ..layers.csp_stage import parse_csp_cfg

NUM_OUTPUTS = 4  # stride 4, 8, 16 and 32
# Keys under which training frameworks wrap a state_dict: mmengine/mmcv ('state_dict'),
# official ConvNeXt/RepLKNet/DeiT-style trainers ('model'), DataParallel dumps ('module').
WRAPPER_KEYS = ('state_dict', 'model', 'module')
STRIPPED_PREFIXES = ('module.', 'backbone.')
CLASSIFIER_HEAD_PREFIX = 'head.'  # mmpretrain classifiers: backbone.* + head.fc.*


class BaseBackbone(BaseModule):
    arch_settings: Dict[str, dict] = {}
    # the smallest ``num_classes`` that builds a classifier (FasterNet also takes 0)
    min_num_classes = 1

    def __init__(self, arch, in_channels: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 num_classes: Optional[int] = None, with_cp: bool = False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.arch_name, self.arch = self.parse_arch(arch)
        self.in_channels = in_channels
        self.out_indices = self.check_out_indices(out_indices)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= NUM_OUTPUTS:
            raise ValueError(
                f'{type(self).__name__}: frozen_stages={frozen_stages!r} is out of range; use -1 '
                f'(freeze nothing), 0 (the stem) or 1..{NUM_OUTPUTS} (the stem and that many stages).')
        self.frozen_stages = frozen_stages
        if num_classes is not None and (not isinstance(num_classes, int)
                                        or num_classes < self.min_num_classes):
            raise ValueError(
                f'{self.name_with_arch}: num_classes must be None (a detection backbone, no '
                f'classifier) or an int >= {self.min_num_classes} (1000 for the ImageNet '
                f'checkpoints), got {num_classes!r}.')
        self.num_classes = num_classes
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.deploy = False
        self.stage_channels: List[int] = []

    def __init_subclass__(cls, **kwargs):
        """Freeze ``frozen_stages`` as soon as a backbone is built, as mmdet's ResNet does.

        ``train()`` alone is too late: mmengine wraps the model in DistributedDataParallel in
        ``Runner.__init__``, and DDP then waits for a gradient of every parameter that requires
        one. The layers exist only once the subclass ``__init__`` returns, so each subclass
        ``__init__`` is wrapped here and the outermost one (that of the class being built) freezes
        at its end: once, for every family and any subclass of one, without a metaclass that
        would have to be merged with ``BaseModule``'s, and without a call each family could forget.
        """
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None:  # inherits an __init__ that is already wrapped
            return

        @functools.wraps(init)
        def init_then_freeze(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if type(self).__init__ is init_then_freeze:
                self._freeze_stages()

        cls.__init__ = init_then_freeze

    @property
    def name_with_arch(self) -> str:
        """``Family(arch='name')``, how error messages and load reports name this model."""
        return f'{type(self).__name__}(arch={self.arch_name!r})'

    # ----------------------------------------------------------------------------------- arch
    @classmethod
    def parse_arch(cls, arch) -> Tuple[str, dict]:
        """Return (name, settings) for an arch name or a dict of settings."""
        valid = sorted(cls.arch_settings)
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise ValueError(f'{cls.__name__}: unknown arch {arch!r}; valid archs are {valid}, '
                                 'or pass a dict of settings for a custom size.')
            return arch, copy.deepcopy(cls.arch_settings[arch])
        if isinstance(arch, dict):
            required = set(next(iter(cls.arch_settings.values())))
            missing = sorted(required - set(arch))
            unknown = sorted(set(arch) - required)
            if missing or unknown:
                raise ValueError(
                    f'{cls.__name__}: a custom arch dict needs exactly the keys {sorted(required)}; '
                    f'missing {missing}, unknown {unknown}. Example: {cls.arch_settings[valid[0]]}')
            return 'custom', copy.deepcopy(dict(arch))
        raise TypeError(f'{cls.__name__}: arch must be one of {valid} or a dict, got {arch!r}')

    def check_out_indices(self, out_indices) -> Tuple[int, ...]:
        name = type(self).__name__
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        if not isinstance(out_indices, (list, tuple)) or len(out_indices) == 0:
            raise ValueError(f'{name}: out_indices must be a non-empty list of stage indices in '
                             f'0..{NUM_OUTPUTS - 1} (0 = stride 4 ... 3 = stride 32), got {out_indices!r}')
        bad = [i for i in out_indices if not isinstance(i, int) or not -NUM_OUTPUTS <= i < NUM_OUTPUTS]
        if bad:
            raise ValueError(f'{name}: out_indices {list(out_indices)} has {bad} out of range; valid '
                             f'indices are 0..{NUM_OUTPUTS - 1} (0 = stride 4 ... 3 = stride 32).')
        normalized = sorted({i % NUM_OUTPUTS for i in out_indices})
        if len(normalized) != len(out_indices):
            raise ValueError(f'{name}: out_indices {list(out_indices)} repeats a stage.')
        return tuple(normalized)

    @property
    def out_channels(self) -> List[int]:
        """Channels of each returned feature map, in the order they are returned."""
        return [self.stage_channels[i] for i in self.out_indices]

    def drop_path_rates(self, drop_path_rate: float,
                        depths: Sequence[int]) -> List[List[float]]:
        """Stochastic depth per stage: rates rising linearly from 0 over all ``sum(depths)``
        blocks to ``drop_path_rate`` (the schedule of the official codes), split into the
        ``depths`` of the stages."""
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'{self.name_with_arch}: drop_path_rate must be in [0, 1), got '
                             f'{drop_path_rate!r}.')
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        return [rates[end - depth:end] for depth, end in zip(depths, itertools.accumulate(depths))]

    def parse_csp(self, csp) -> Optional[dict]:
        """The ``csp`` argument as ``dict(ratio=...)``, or None for the official stages; None
        builds an arch named ``csp-*`` (its base arch in CSP stages) with ``ratio=0.5``."""
        if csp is None and self.arch_name.startswith('csp-'):
            csp = dict(ratio=0.5)
        return parse_csp_cfg(csp, self.name_with_arch)

    # ---------------------------------------------------------------- freezing and norm_eval
    def frozen_modules(self, index: int) -> List[nn.Module]:
        """Modules frozen by ``frozen_stages >= index`` (0: stem; k: stage k with its downsampling)."""
        raise NotImplementedError

    def _freeze_stages(self):
        for index in range(self.frozen_stages + 1):
            for module in self.frozen_modules(index):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, (_BatchNorm, nn.SyncBatchNorm)):
                    module.eval()
        return self

    # ------------------------------------------------------------------------------ forward
    def forward_stages(self, x: torch.Tensor,
                       last_stage: int = NUM_OUTPUTS - 1) -> List[torch.Tensor]:
        """The maps of stages 0..``last_stage`` (strides 4, 8, ...) before any output norm; later
        stages do not run (``forward`` passes its last ``out_indices``)."""
        raise NotImplementedError

    def require_classifier(self) -> None:
        """``classify()`` needs the classifier that ``num_classes`` builds."""
        if self.num_classes is None:
            raise ValueError(f'{type(self).__name__}.classify needs the classification head: '
                             'build the model with num_classes=1000 (or your class count).')

    def check_input(self, x: torch.Tensor) -> None:
        """Fail clearly on input that is not an N x in_channels x H x W tensor."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} expects input of shape (N, {self.in_channels}, H, W), got '
                f'{tuple(x.shape)}. Load single-channel (e.g. 8/16-bit sonar) images as 3-channel '
                "with dict(type='LoadSonarImageFromFile') as the first pipeline step, or build "
                'the backbone with in_channels=1 (ImageNet checkpoints then do not fit its stem).')

    def run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``block``, with activation checkpointing when ``with_cp`` is set and it pays off."""
        if self.with_cp and self.training and x.requires_grad:
            return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return block(x)

    # ------------------------------------------------------------------------------- deploy
    def switch_to_deploy(self):
        """Re-parameterize for inference: every submodule's own ``switch_to_deploy`` (idempotent)."""
        if self.deploy:
            return self
        for module in list(self.modules()):
            if module is not self and hasattr(module, 'switch_to_deploy'):
                module.switch_to_deploy()
        self.deploy = True
        return self

    # ----------------------------------------------------------------------------- weights
    def init_weights(self):
        pretrained = self._pretrained_cfg()
        if pretrained is None:
            super().init_weights()
            return
        self.load_pretrained(pretrained['checkpoint'], prefix=pretrained.get('prefix'),
                             map_location=pretrained.get('map_location', 'cpu'))
        self._is_init = True

    def _pretrained_cfg(self) -> Optional[dict]:
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        for cfg in cfgs:
            if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
                if not cfg.get('checkpoint'):
                    raise ValueError(f"{type(self).__name__}: init_cfg type='Pretrained' needs "
                                     "checkpoint='path/to/weights.pth'")
                return cfg
        return None

    def convert_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Map third-party key layouts (timm, Paddle, ...) to this model's keys. Default: as is."""
        return state_dict

    @staticmethod
    def unwrap_state_dict(obj) -> Dict[str, torch.Tensor]:
        """Find the tensor dict inside a checkpoint saved by any of the common trainers."""
        while isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
        if not isinstance(obj, dict):
            raise ValueError(f'the checkpoint holds a {type(obj).__name__}, not a state_dict')
        return {k: v for k, v in obj.items() if torch.is_tensor(v)}

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None,
                        map_location='cpu') -> dict:
        """Load ImageNet/detector weights into this backbone and log a key report.

        Accepts a flat state_dict, ``{'state_dict': ...}``, ``{'model': ...}``, ``{'module': ...}``,
        and ``module.``/``backbone.`` prefixes (or an explicit ``prefix``). Raises ``ValueError`` when
        no key matches or when shapes disagree (listing them). Returns the report.
        """
        name = self.name_with_arch
        # weights_only=True; a Runner checkpoint (e.g. of ImageNet pre-training) also holds
        # mmengine/numpy objects, allowed for this load only
        with runner_checkpoint_loading(checkpoint):
            raw = CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location)
        state_dict = self.unwrap_state_dict(raw)
        own = self.state_dict()
        if prefix:
            kept = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if not kept:
                raise ValueError(f'{name}: no key of {checkpoint!r} starts with prefix {prefix!r}; '
                                 f'its first keys are {list(state_dict)[:5]}')
            state_dict = kept
        else:
            for strip in STRIPPED_PREFIXES:
                # a DataParallel dump, a detector or an mmpretrain classifier: keep the backbone
                # part, and a classifier's ``head.*`` for convert_state_dict (a detector's neck
                # and heads are not backbone weights)
                if any(k.startswith(strip) for k in state_dict) and \
                        not any(k in own for k in state_dict):
                    state_dict = {(k[len(strip):] if k.startswith(strip) else k): v
                                  for k, v in state_dict.items()
                                  if k.startswith((strip, CLASSIFIER_HEAD_PREFIX))}
        state_dict = self.convert_state_dict(state_dict)

        matched = [k for k in state_dict if k in own]
        if not matched:
            raise ValueError(
                f'{name}: none of the {len(state_dict)} keys of {checkpoint!r} matches this model. '
                f'File keys start {list(state_dict)[:4]}; model keys start {list(own)[:4]}. '
                'Is it the right model, arch and deploy form? For a detector checkpoint pass '
                "prefix='backbone.' in init_cfg.")
        mismatched = [f'{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                      for k in matched if state_dict[k].shape != own[k].shape]
        if mismatched:
            raise ValueError(f'{name}: {len(mismatched)} shapes in {checkpoint!r} disagree with the '
                             'model (wrong arch?): ' + '; '.join(mismatched[:10]))
        self.load_state_dict({k: state_dict[k] for k in matched}, strict=False)
        missing = [k for k in own if k not in state_dict and not k.endswith('num_batches_tracked')]
        unexpected = [k for k in state_dict if k not in own]
        report = dict(matched=len(matched), missing=missing, unexpected=unexpected)
        print_log(f'{name}: loaded {len(matched)}/{len(own)} keys from {checkpoint}; '
                  f'{len(missing)} missing {missing[:8]}; {len(unexpected)} unexpected '
                  f'{unexpected[:8]}', logger=MMLogger.get_current_instance())
        return report
