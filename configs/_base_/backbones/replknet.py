# RepLKNet-31B (Ding et al., CVPR 2022). Recipe: the official RepLKNet Cascade configs, AdamW
# lr 4e-4 wd 0.05, no decay on norms. Large kernels run channels_last on CPU.
# ImageNet-1k weights by default (83.5 % top-1; mmlightbb://replknet_31b_22k_1k for the 22k ones,
# 85.2 %), downloaded once into torch's hub cache (python tools/weights.py list).
# From scratch: --cfg-options model.backbone.init_cfg=None

backbone = dict(type='RepLKNet', arch='31B', drop_path_rate=0.3,
                init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://replknet_31b_1k'))
# YOLOX: strides 8/16/32; ImageNet normalisation (YOLOX's default feeds raw BGR 0-255)
backbone_yolox = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(_delete_=True, **backbone, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[256, 512, 1024]))
# Cascade R-CNN: strides 4..32 into the FPN
backbone_cascade = dict(
    backbone=dict(_delete_=True, **backbone, out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
backbone_optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
