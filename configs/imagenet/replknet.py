# RepLKNet-31B on ImageNet-1k with the published recipe. Official weights exist
# (mmlightbb://replknet_31b_1k, 83.5 %): use this config to retrain or for another data set.
# Source: DingXiaoH/RepLKNet-pytorch README "Pretrain RepLKNet-31B on ImageNet-1K" (single
# machine, 8 GPUs: --drop_path 0.5 --batch_size 64 --lr 4e-3 --update_freq 4 --model_ema true
# --warmup_epochs 10 --epochs 300 --use_checkpoint True) and the defaults of its main.py, which is
# ConvNeXt's (README acknowledgement): AdamW, weight decay 0.05, cosine to 1e-6, RandAugment
# rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0, label smoothing 0.1, EMA
# 0.9999, bicubic; evaluation resize 256 / crop 224 with the ImageNet mean/std.
# Batch: 64 per GPU x 8 GPUs x 4 accumulated steps = 2048 for lr 4e-3.
_base_ = ['./_base_imagenet.py']

model = dict(backbone=dict(type='RepLKNet', arch='31B', drop_path_rate=0.5, num_classes=1000,
                           with_cp=True))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in _base_.bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=_base_.bgr_mean, fill_std=_base_.bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=64, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model.update(train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                                      dict(type='CutMix', alpha=1.0)]))
optim_wrapper = dict(optimizer=dict(lr=4e-3, weight_decay=0.05), accumulative_counts=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=10, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=10),
]
train_cfg = dict(max_epochs=300)
custom_hooks = [dict(type='mmdet.NonFiniteLossHook'),
                dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
# mmengine scales by batch_size x processes (accumulation not counted): 8 x 64
auto_scale_lr = dict(base_batch_size=512)
