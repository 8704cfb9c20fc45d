# FasterNet-T2 (Chen et al., CVPR 2023; 't0'..'l' via model.backbone.arch). Recipe: the official
# FasterNet detection configs, AdamW lr 2e-4 wd 1e-4.
# ImageNet-1k weights by default (78.9 % top-1), downloaded once into torch's hub cache
# (python tools/weights.py list; another arch: also model.backbone.init_cfg.checkpoint=
# mmlightbb://fasternet_t0 etc.). From scratch: --cfg-options model.backbone.init_cfg=None

backbone = dict(type='FasterNet', arch='t2',
                init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://fasternet_t2'))
# YOLOX: strides 8/16/32; ImageNet normalisation (YOLOX's default feeds raw BGR 0-255)
backbone_yolox = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(_delete_=True, **backbone, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[192, 384, 768]))
# Cascade R-CNN: strides 4..32 into the FPN
backbone_cascade = dict(
    backbone=dict(_delete_=True, **backbone, out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[96, 192, 384, 768]))
backbone_optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
