# mmdet's Cascade R-CNN R50-FPN 1x recipe on COCO 2017 as it is: data/coco/.
_base_ = ['mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py', './mmlightbb_runtime.py']
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
# stop at the first NaN/inf loss (mmlightbb.engine); SyncBN only when distributed on GPUs
custom_hooks = [dict(type='NonFiniteLossHook')]
sync_bn = 'torch'
