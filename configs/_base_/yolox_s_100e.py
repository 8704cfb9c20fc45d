# mmdet's YOLOX-s recipe shortened from 300 to 100 epochs (datasets of ~1k-16k images):
# 5 warm-up epochs, cosine decay, the last 15 epochs without Mosaic/MixUp at a constant LR.
_base_ = ['mmdet::yolox/yolox_s_8xb8-300e_coco.py', './mmlightbb_runtime.py']

max_epochs = 100
num_last_epochs = 15
train_cfg = dict(max_epochs=max_epochs, val_interval=10)
param_scheduler = [
    dict(type='mmdet.QuadraticWarmupLR', by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.01 * 0.05, begin=5, T_max=max_epochs - num_last_epochs,
         end=max_epochs - num_last_epochs, by_epoch=True, convert_to_iter_based=True),
    dict(type='ConstantLR', by_epoch=True, factor=1, begin=max_epochs - num_last_epochs,
         end=max_epochs),
]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=10, max_keep_ckpts=3,
                                     save_best='pascal_voc/mAP'))
# stop at the first NaN/inf loss (mmlightbb.engine); SyncBN only when distributed on GPUs
custom_hooks = [*_base_.custom_hooks, dict(type='NonFiniteLossHook')]
sync_bn = 'torch'
