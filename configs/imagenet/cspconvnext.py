# CSPConvNeXt-tiny (the 2022 V1) on ImageNet-1k: no weights are published for any CSPConvNeXt,
# so a detector starts from scratch unless it is pre-trained here.
# Source: the author's V1 recipe CSPConvNext_tiny.yaml (violetweir/convnext, PaddleClas format):
# 300 epochs, AdamW (0.9, 0.999), lr 5e-4, weight decay 0.05 (none on biases and norms), cosine
# to 1e-5 after 20 warm-up epochs from 1e-6, batch 128 per GPU, random-resized crop 224 bicubic,
# flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, Mixup 0.8 / CutMix 1.0 (p 0.5
# each), label smoothing 0.1. The recipe states no GPU count (auto_scale_lr below assumes 8)
# and no drop-path rate (none here). Evaluation: resize 256 / crop 224, as the other configs.
# E-ConvNeXt (arch e-mini / e-tiny / e-small, E-ConvNext_tiny.yaml): lr 2.5e-4, batch 64 per GPU,
# cosine to 1e-6, the same augmentation.
_base_ = ['./_base_imagenet.py']

model = dict(backbone=dict(type='CSPConvNeXt', arch='tiny', num_classes=1000))

train_dataloader = dict(batch_size=128)

model.update(train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8),
                                      dict(type='CutMix', alpha=1.0)]))
optim_wrapper = dict(optimizer=dict(lr=5e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 5e-4, by_epoch=True, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20),
]
train_cfg = dict(max_epochs=300)
auto_scale_lr = dict(base_batch_size=1024)
