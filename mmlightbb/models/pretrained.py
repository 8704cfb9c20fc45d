"""The official ImageNet checkpoints of every mmlightbb family, by name (data only: no I/O here).

``init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://fasternet_t2')`` names an entry of
:data:`PRETRAINED`; :mod:`mmlightbb.engine.downloads` fetches it once into torch's hub cache
(``torch.hub.get_dir()/checkpoints/<file_name>``), checks its checksum and hands it to the
backbone's own loader (``load_pretrained``: key layouts converted, key report logged).
``python tools/weights.py list`` prints the table.

Every URL, checksum and top-1 below was copied from the source named in the entry, never
inferred. Checksums: the publisher gives none for ConvNeXt, FasterNet or GhostNet, so those
entries have ``sha256=None`` (the download is still checked for truncation against the
server's Content-Length, and the file is opened with ``weights_only=True``). OpenMMLab's file
names end in the first 8 hex digits of the file's sha256 (torch.hub's ``check_hash``
convention), so the RepLKNet entries hosted there carry that prefix. Entries whose only
official copy is on Google Drive / Baidu have ``url=None`` and a ``manual_url``: download by
hand and save the file in the cache under ``file_name``.
"""
from dataclasses import dataclass
from typing import Dict, Optional

__all__ = ['SCHEME', 'PretrainedWeights', 'PRETRAINED', 'get_weights', 'weights_name']

SCHEME = 'mmlightbb://'

# where each publisher lists its weights (the "source" of the entries)
CONVNEXT_README = 'https://github.com/facebookresearch/ConvNeXt/blob/main/README.md'
FASTERNET_README = 'https://github.com/JierunChen/FasterNet/blob/master/README.MD'
REPLKNET_README = 'https://github.com/DingXiaoH/RepLKNet-pytorch/blob/main/README.md'
REPLKNET_MMPRETRAIN = ('https://github.com/open-mmlab/mmpretrain/blob/main/configs/replknet/'
                       'metafile.yml')
GHOSTNET_README = ('https://github.com/huawei-noah/Efficient-AI-Backbones/blob/master/'
                   'ghostnet_pytorch/readme.md')
OPENMMLAB_HASH = ('OpenMMLab file name: first 8 hex digits of the sha256 (torch.hub check_hash '
                  'convention)')


@dataclass(frozen=True)
class PretrainedWeights:
    """One official checkpoint. ``url=None``: only a manual download exists (``manual_url``)."""
    name: str
    family: str            # the mmlightbb backbone class it loads into
    arch: str              # the arch it was trained with (shapes fit no other)
    trained_on: str        # e.g. 'ImageNet-1k', 'ImageNet-22k -> 1k'
    resolution: int
    top1: Optional[float]  # published ImageNet-1k top-1 (%), None for a 22k-class classifier
    params_m: float        # classification form with its 1000-class head, as tools/model_stats.py
    url: Optional[str]
    file_name: str         # the name in the cache (the URL's basename when there is a URL)
    sha256: Optional[str]  # full hex digest or its leading digits; None where none is published
    checksum_source: str
    layout: str            # how the keys are laid out (converted on load where needed)
    source: str            # the page that lists the file, its top-1 and (if any) its checksum
    manual_url: Optional[str] = None
    note: str = ''

    @property
    def manual(self) -> bool:
        return self.url is None


def _convnext(arch, size, top1_1k, top1_22k_1k, params):
    base = 'https://dl.fbaipublicfiles.com/convnext/'
    common = dict(family='ConvNeXt', arch=arch, resolution=224, params_m=params, sha256=None,
                  checksum_source='none published', source=CONVNEXT_README,
                  layout="official ConvNeXt ({'model': state_dict}, classifier norm/head)")
    return [
        PretrainedWeights(name=f'convnext_{arch}_1k', trained_on='ImageNet-1k', top1=top1_1k,
                          url=f'{base}convnext_{arch}_1k_224_ema.pth',
                          file_name=f'convnext_{arch}_1k_224_ema.pth',
                          note='EMA weights', **common),
        PretrainedWeights(name=f'convnext_{arch}_22k', trained_on='ImageNet-22k', top1=None,
                          url=f'{base}convnext_{arch}_22k_224.pth',
                          file_name=f'convnext_{arch}_22k_224.pth',
                          note=f'21841-class head (unexpected keys in a detector; does not fit '
                               f'num_classes=1000); {size} after 1k fine-tuning: '
                               f'convnext_{arch}_22k_1k', **common),
        PretrainedWeights(name=f'convnext_{arch}_22k_1k', trained_on='ImageNet-22k -> 1k',
                          top1=top1_22k_1k, url=f'{base}convnext_{arch}_22k_1k_224.pth',
                          file_name=f'convnext_{arch}_22k_1k_224.pth', **common),
    ]


def _fasternet(arch, file_name, top1, params):
    return PretrainedWeights(
        name=f'fasternet_{arch}', family='FasterNet', arch=arch, trained_on='ImageNet-1k',
        resolution=224, top1=top1, params_m=params,
        url=f'https://github.com/JierunChen/FasterNet/releases/download/v1.0/{file_name}',
        file_name=file_name, sha256=None, checksum_source='none published',
        layout='official FasterNet (flat state_dict)', source=FASTERNET_README,
        note='the README evaluation command spells the file with "=" (epoch=...); the release '
             'asset uses "."')


def _replknet_mmpretrain(name, arch, trained_on, resolution, top1, params, file_name, drive_id,
                         note=''):
    digest = file_name.rsplit('-', 1)[1].split('.')[0]
    return PretrainedWeights(
        name=name, family='RepLKNet', arch=arch, trained_on=trained_on, resolution=resolution,
        top1=top1, params_m=params,
        url=f'https://download.openmmlab.com/mmclassification/v0/replknet/{file_name}',
        file_name=file_name, sha256=digest, checksum_source=OPENMMLAB_HASH,
        layout='mmpretrain (backbone.*, stages.3.norm, head.fc.*; training form)',
        source=f'{REPLKNET_README} (top-1); {REPLKNET_MMPRETRAIN} (URL, converted from the '
               f'authors\' Google Drive file {drive_id})',
        note=note)


def _replknet_manual(name, arch, trained_on, resolution, params, file_name, drive_id, note):
    return PretrainedWeights(
        name=name, family='RepLKNet', arch=arch, trained_on=trained_on, resolution=resolution,
        top1=None, params_m=params, url=None, file_name=file_name, sha256=None,
        checksum_source='none published', layout='official RepLKNet (flat state_dict)',
        source=REPLKNET_README,
        manual_url=f'https://drive.google.com/file/d/{drive_id}/view?usp=sharing',
        note=note + '; Google Drive / Baidu only (no direct URL)')


_ENTRIES = [
    # ConvNeXt: facebookresearch/ConvNeXt README (1k table and 22k table, 224 px rows)
    *_convnext('tiny', 'T', 82.1, 82.9, 28.59),
    *_convnext('small', 'S', 83.1, 84.6, 50.22),
    *_convnext('base', 'B', 83.8, 85.8, 88.59),
    # FasterNet: JierunChen/FasterNet README "Pre-trained Models" (GitHub release v1.0)
    _fasternet('t0', 'fasternet_t0-epoch.281-val_acc1.71.9180.pth', 71.9, 3.91),
    _fasternet('t1', 'fasternet_t1-epoch.291-val_acc1.76.2180.pth', 76.2, 7.60),
    _fasternet('t2', 'fasternet_t2-epoch.289-val_acc1.78.8860.pth', 78.9, 14.99),
    _fasternet('s', 'fasternet_s-epoch.299-val_acc1.81.2840.pth', 81.3, 31.18),
    _fasternet('m', 'fasternet_m-epoch.291-val_acc1.82.9620.pth', 83.0, 53.53),
    _fasternet('l', 'fasternet_l-epoch.299-val_acc1.83.5060.pth', 83.5, 93.47),
    # RepLKNet: top-1 from the authors' README, direct files from the OpenMMLab model zoo
    # (mmpretrain configs/replknet/metafile.yml, which also measured 83.48 / 84.84 / 85.20 /
    # 85.99 / 86.63 / 87.57 with its own evaluation)
    _replknet_mmpretrain('replknet_31b_1k', '31B', 'ImageNet-1k', 224, 83.5, 79.86,
                         'replknet-31B_3rdparty_in1k_20221118-fd08e268.pth',
                         '1azQUiCxK9feYVkkrPqwVPBtNsTzDrX7S'),
    _replknet_mmpretrain('replknet_31b_1k_384', '31B', 'ImageNet-1k', 384, 84.8, 79.86,
                         'replknet-31B_3rdparty_in1k-384px_20221118-03a170ce.pth',
                         '1vo-P3XB6mRLUeDzmgv90dOu73uCeLfZN'),
    _replknet_manual('replknet_31b_22k', '31B', 'ImageNet-22k', 224, 79.86,
                     'RepLKNet-31B_ImageNet-22K.pth', '1PYJiMszZYNrkZOeYwjccvxX8UHMALB7z',
                     '22K-pretrained (21841-class head); 85.2 after 1k fine-tuning: '
                     'replknet_31b_22k_1k'),
    _replknet_mmpretrain('replknet_31b_22k_1k', '31B', 'ImageNet-22k -> 1k', 224, 85.2, 79.86,
                         'replknet-31B_in21k-pre_3rdparty_in1k_20221118-54ed5c46.pth',
                         '1DslZ2voXZQR1QoFY9KnbsHAeF84hzS0s'),
    _replknet_mmpretrain('replknet_31b_22k_1k_384', '31B', 'ImageNet-22k -> 1k', 384, 86.0, 79.86,
                         'replknet-31B_in21k-pre_3rdparty_in1k-384px_20221118-76c92b24.pth',
                         '1Sc46BWdXXm2fVP-K_hKKU_W8vAB-0duX'),
    _replknet_manual('replknet_31l_22k', '31L', 'ImageNet-22k', 224, 172.67,
                     'RepLKNet-31L_ImageNet-22K.pth', '16jcPsPwo5rko7ojWS9k_W-svHX-iFknY',
                     '22K-pretrained (21841-class head); 86.6 after 1k fine-tuning at 384: '
                     'replknet_31l_22k_1k_384'),
    _replknet_mmpretrain('replknet_31l_22k_1k_384', '31L', 'ImageNet-22k -> 1k', 384, 86.6,
                         172.67, 'replknet-31L_in21k-pre_3rdparty_in1k-384px_20221118-dc3fc07c.pth',
                         '1JYXoNHuRvC33QV1pmpzMTKEni1hpWfBl'),
    _replknet_manual('replknet_xl_meg73m', 'XL', 'MegData-73M', 320, 335.44,
                     'RepLKNet-XL_MegData73M.pth', '1CBHAEUlCzoHfiAQmMIjZhDMAIyHUmAAj',
                     'MegData-73M-pretrained; 87.8 after 1k fine-tuning: '
                     'replknet_xl_meg73m_1k_320; trained with mean = std = 127.5'),
    _replknet_mmpretrain('replknet_xl_meg73m_1k_320', 'XL', 'MegData-73M -> ImageNet-1k', 320,
                         87.8, 335.44,
                         'replknet-XL_meg73m-pre_3rdparty_in1k-320px_20221118-88259b1d.pth',
                         '1tPC60El34GntXByIRHb-z-Apm4Y5LX1T',
                         note='trained with mean = std = 127.5 (timm INCEPTION), not the '
                              'ImageNet mean/std of the detector configs'),
    # GhostNet 1.0x (ParameterNet's static twin, arch 'ghostnet'): top-1 from the authors'
    # readme (validate.py); the file is the publisher's GitHub release asset that timm's
    # ghostnet_100 loads (the readme points to timm for the pretrained model)
    PretrainedWeights(
        name='ghostnet_1x', family='ParameterNet', arch='ghostnet', trained_on='ImageNet-1k',
        resolution=224, top1=73.98, params_m=5.18,
        url='https://github.com/huawei-noah/CV-backbones/releases/download/ghostnet_pth/'
            'ghostnet_1x.pth',
        file_name='ghostnet_1x.pth', sha256=None, checksum_source='none published',
        layout='official GhostNet = timm ghostnet_100 names (flat state_dict)',
        source=f'{GHOSTNET_README} (top-1); timm ghostnet_100 default_cfg (URL)',
        note='ParameterNet(arch="ghostnet") only: no ParameterNet weights are published'),
]

PRETRAINED: Dict[str, PretrainedWeights] = {entry.name: entry for entry in _ENTRIES}


def weights_name(checkpoint: str) -> Optional[str]:
    """``'fasternet_t2'`` for ``'mmlightbb://fasternet_t2'``; None for any other checkpoint."""
    if isinstance(checkpoint, str) and checkpoint.startswith(SCHEME):
        return checkpoint[len(SCHEME):]
    return None


def get_weights(name: str) -> PretrainedWeights:
    """The entry called ``name`` (with or without the ``mmlightbb://`` prefix).

    Raises KeyError with the list of known names."""
    key = weights_name(name) or name
    if key not in PRETRAINED:
        raise KeyError(f'unknown pretrained weights {key!r}; known names: '
                       f'{", ".join(sorted(PRETRAINED))} (python tools/weights.py list)')
    return PRETRAINED[key]
