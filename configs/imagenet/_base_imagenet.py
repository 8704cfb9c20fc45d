# Shared by configs/imagenet/*.py: ImageNet-1k classification pre-training of an mmlightbb
# backbone with mmpretrain 1.2.0 (default_scope 'mmpretrain'), for backbones that have no
# official weights (CSPConvNeXt, ParameterNet-600M) or for retraining one that has.
#
#   tools/dist_train.sh configs/imagenet/cspconvnext.py 8 [--amp] [--work-dir DIR]  # 8 GPUs
#   NNODES=4 NODE_RANK=0..3 MASTER_ADDR=... tools/dist_train.sh CONFIG 8             # 4 machines
#
# Data: an ImageNet-layout folder, data/imagenet/train/<class>/*.JPEG and
# data/imagenet/val/<class>/*.JPEG (mmpretrain's CustomDataset: the classes are the sorted
# folder names, 1000 for ImageNet-1k; another class count: set num_classes in
# model.backbone and data_preprocessor). batch_size is per GPU (per process).
# The checkpoint (state_dict: backbone.* in the official layout) initialises the detector
# configs' backbone with no conversion step:
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/cspconvnext/epoch_300.pth
# (init_cfg=dict(type='Pretrained', checkpoint=PATH); the 'backbone.' prefix is stripped).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmlightbb', 'mmlightbb.models.mmpretrain_compat'],
                      allow_failed_imports=False)

data_root = 'data/imagenet/'
data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],  # RGB, the detector configs' normalisation too
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

# DeiT-style augmentation of the ConvNeXt, RepLKNet and CSPConvNeXt recipes: RandAugment
# rand-m9-mstd0.5-inc1, random erasing 0.25, bicubic; evaluation resize 256 / crop 224
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10,
         magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand', min_area_ratio=0.02,
         max_area_ratio=1 / 3, fill_color=bgr_mean, fill_std=bgr_std),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val',
                 pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# logits from the backbone's own published head (backbone.classify()); ClsHead only computes
# the loss and the predictions
model = dict(
    type='BackboneClassifier',
    head=dict(type='ClsHead',
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
              topk=(1, 5)))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='mmdet.AtomicCheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='auto'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))
custom_hooks = [dict(type='mmdet.NonFiniteLossHook')]
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)  # exactly resumable (mmlightbb.engine.randomness)
# safe loading, exact resumption (mmlightbb.engine.runner)
runner_type = 'mmdet.RecoverableRunner'
