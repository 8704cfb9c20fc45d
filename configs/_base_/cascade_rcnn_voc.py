# Cascade R-CNN on Pascal VOC 07+12 with mmdet's VOC recipe (voc0712 data repeated 3x, 4 epochs,
# LR step after epoch 3 = 12 effective epochs; 11-point VOC2007 AP).
_base_ = [
    'mmdet::_base_/models/cascade-rcnn_r50_fpn.py', 'mmdet::_base_/datasets/voc0712.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py',
    './mmlightbb_runtime.py'
]
model = dict(roi_head=dict(
    bbox_head=[dict(head, num_classes=20) for head in _base_.model.roi_head.bbox_head]))
train_cfg = dict(max_epochs=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=4, by_epoch=True, milestones=[3], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
# stop at the first NaN/inf loss (mmlightbb.engine); SyncBN only when distributed on GPUs
custom_hooks = [dict(type='NonFiniteLossHook')]
sync_bn = 'torch'
