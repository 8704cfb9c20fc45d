# Everything mmlightbb adds to a run, selected here (importing mmlightbb changes nothing by itself).
# Inherit it beside your own detector config (its keys are disjoint from mmdet's configs):
#   _base_ = ['mmdet::yolox/yolox_s_8xb8-300e_coco.py', 'path/to/mmlightbb_runtime.py']
# RecoverableRunner (mmlightbb.engine.runner) loads checkpoints with weights_only=True, builds a
# stock CheckpointHook as AtomicCheckpointHook (atomic writes, never NaN/inf weights), adds
# NonFiniteLossHook, checks the neck's in_channels against the backbone at build time, and makes
# --resume continue bit for bit when a seed is set (mmlightbb.engine.randomness).
custom_imports = dict(imports=['mmlightbb'], allow_failed_imports=False)
runner_type = 'mmdet.RecoverableRunner'
randomness = dict(seed=0)
