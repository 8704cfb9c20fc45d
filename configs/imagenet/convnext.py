# ConvNeXt-T on ImageNet-1k with the published recipe. Official weights exist
# (mmlightbb://convnext_tiny_1k, 82.1 %): use this config to retrain or for another data set.
# Source: facebookresearch/ConvNeXt TRAINING.md ("ConvNeXt-T training on ImageNet-1K with 4 8-GPU
# nodes": --drop_path 0.1 --batch_size 128 --lr 4e-3 --update_freq 1 --model_ema true) and the
# defaults of its main.py: AdamW, weight decay 0.05, 300 epochs, 20 warm-up epochs, cosine to
# 1e-6, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0 (switch
# 0.5), label smoothing 0.1, EMA 0.9999, bicubic; evaluation resize 256 / crop 224.
# Batch: 128 per GPU x 32 GPUs = 4096 for lr 4e-3. On 8 GPUs keep the total with
# --cfg-options optim_wrapper.accumulative_counts=4 (as TRAINING.md's --update_freq 4).
_base_ = ['./_base_imagenet.py']

model = dict(backbone=dict(type='ConvNeXt', arch='tiny', drop_path_rate=0.1, num_classes=1000))

train_dataloader = dict(batch_size=128)

model.update(train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                                      dict(type='CutMix', alpha=1.0)]))
optim_wrapper = dict(optimizer=dict(lr=4e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=20),
]
train_cfg = dict(max_epochs=300)
custom_hooks = [dict(type='mmdet.NonFiniteLossHook'),
                dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
auto_scale_lr = dict(base_batch_size=4096)
