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

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
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
