# YOLOX-tiny-sized detector with FasterNet-T0 on side-scan sonar (data/sonar/): the neck and head
# widths of mmdet's yolox_tiny_8xb8-300e_coco.py (96 channels), so it runs against
# configs/baselines/yolox_tiny.py (CSPDarknet, widen 0.375) at the same cost of neck and head.
# The fastest mmlightbb backbone on CPU; benchmarks/speed_targets.py times the two side by side.
_base_ = ['./_base_/yolox_sonar.py', './_base_/backbones/fasternet.py']
model = dict(
    data_preprocessor=_base_.backbone_yolox.data_preprocessor,
    # ImageNet-1k weights (71.9 % top-1) by default; from scratch: --cfg-options
    # model.backbone.init_cfg=None
    backbone=dict(_delete_=True, type='FasterNet', arch='t0', out_indices=(1, 2, 3),
                  init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://fasternet_t0')),
    neck=dict(in_channels=[80, 160, 320], out_channels=96),
    bbox_head=dict(in_channels=96, feat_channels=96))
optim_wrapper = _base_.backbone_optim_wrapper
