# Cascade R-CNN (mmdet's R50-FPN model and 1x schedule) on side-scan sonar, 3 classes.
_base_ = [
    'mmdet::_base_/models/cascade-rcnn_r50_fpn.py', './datasets/sonar_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py', 'mmdet::_base_/default_runtime.py',
    './mmlightbb_runtime.py'
]
model = dict(roi_head=dict(
    bbox_head=[dict(head, num_classes=3) for head in _base_.model.roi_head.bbox_head]))
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', max_keep_ckpts=3,
                                     save_best='pascal_voc/mAP'))
# stop at the first NaN/inf loss (mmlightbb.engine); SyncBN only when distributed on GPUs
custom_hooks = [dict(type='NonFiniteLossHook')]
sync_bn = 'torch'
