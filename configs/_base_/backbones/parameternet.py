# ParameterNet-600M (Han et al., 2023), stride-32 map from blocks.8 (304 ch) rather than the
# 1824-ch final conv. No detection recipe was published: the head's own optimizer is kept.
# No ParameterNet weights are published: from scratch, or pre-train on ImageNet with
# configs/imagenet/parameternet.py and set model.backbone.init_cfg=dict(type='Pretrained',
# checkpoint=PATH) to its checkpoint (arch='ghostnet' has mmlightbb://ghostnet_1x).

backbone = dict(type='ParameterNet', arch='600m', with_final_conv=False, init_cfg=None)
# YOLOX: strides 8/16/32; ImageNet normalisation (YOLOX's default feeds raw BGR 0-255)
backbone_yolox = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(_delete_=True, **backbone, out_indices=(1, 2, 3)),
    neck=dict(in_channels=[76, 212, 304]))
# Cascade R-CNN: strides 4..32 into the FPN
backbone_cascade = dict(
    backbone=dict(_delete_=True, **backbone, out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[44, 76, 212, 304]))
backbone_optim_wrapper = dict()
