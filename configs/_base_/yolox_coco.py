# mmdet's YOLOX-s recipe on COCO 2017 as it is (300 epochs): data/coco/.
_base_ = ['mmdet::yolox/yolox_s_8xb8-300e_coco.py', './mmlightbb_runtime.py']
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
# stop at the first NaN/inf loss (mmlightbb.engine); SyncBN only when distributed on GPUs
custom_hooks = [*_base_.custom_hooks, dict(type='NonFiniteLossHook')]
sync_bn = 'torch'
