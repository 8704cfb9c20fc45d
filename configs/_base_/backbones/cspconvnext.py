# CSPConvNeXt-tiny, the 2022 V1 of the mission's source ('e-mini'/'e-tiny'/'e-small' give the
# published E-ConvNeXt). Recipe: E-ConvNeXt's detection configs, AdamW lr 2e-4 wd 5e-4.
# No CSPConvNeXt weights are published: from scratch, or pre-train on ImageNet with
# configs/imagenet/cspconvnext.py and set model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint=PATH) to its checkpoint.

backbone = dict(type='CSPConvNeXt', arch='tiny', drop_path_rate=0.2, init_cfg=None)
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
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=5e-4),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.))
