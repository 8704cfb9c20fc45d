# ParameterNet-600M on ImageNet-1k: no ParameterNet weights are published (official repo issue
# #289), and no training recipe either (huawei-noah/Efficient-AI-Backbones ships the model code
# only; the paper pre-trains on ImageNet-22K). This config uses the closest published recipe at
# this cost, FasterNet-T0's (0.34 vs 0.59 G MACs).
# Source: JierunChen/FasterNet cfg/fasternet_t0.yaml:
# AdamW, lr 4e-3 for batch 4096 (512 per GPU x 8, the README's -b 4096), weight decay 0.005,
# 300 epochs, 20 warm-up epochs from 1e-6, cosine to 1e-5, no RandAugment, no random erasing,
# Mixup 0.05 / CutMix 1.0, label smoothing 0.1, bicubic, fp16 (add --amp); evaluation resize
# 224/0.9 / crop 224. The head is GhostNet's (conv_head 1280 + dropout 0.2), as classify().
# arch='ghostnet' (GhostNet 1.0x) has official weights: mmlightbb://ghostnet_1x.
_base_ = ['./_base_imagenet.py']

model = dict(backbone=dict(type='ParameterNet', arch='600m', num_classes=1000))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=512, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model.update(train_cfg=dict(augments=[dict(type='Mixup', alpha=0.05),
                                      dict(type='CutMix', alpha=1.0)]))
optim_wrapper = dict(optimizer=dict(lr=4e-3, weight_decay=0.005))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / 4e-3, by_epoch=True, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20),
]
train_cfg = dict(max_epochs=300)
auto_scale_lr = dict(base_batch_size=4096)
