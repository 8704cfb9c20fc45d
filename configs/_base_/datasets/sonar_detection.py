# Side-scan sonar in COCO format for two-stage detectors (the counterpart of mmdet's
# _base_/datasets/coco_detection.py): data/sonar/annotations/{train,val}.json + data/sonar/images/.
# Sonar images are a few hundred pixels wide, so the scale is 1024x640 rather than COCO's 1333x800.
# Evaluated with VOC-style mAP50 (area), what sonar papers report, and COCO mAP.
dataset_type = 'SonarDataset'
data_root = 'data/sonar/'
metainfo = dict(classes=('shipwreck', 'aircraft', 'victim'))

# Gray 8/16-bit sonar images load as 3-channel uint8 at full contrast. An unreadable image is
# skipped with a warning in training and stops val/test (a smaller test set gives a wrong mAP).
train_pipeline = [
    dict(type='LoadSonarImageFromFile', ignore_empty=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1024, 640), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadSonarImageFromFile'),
    dict(type='Resize', scale=(1024, 640), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/train.json', data_prefix=dict(img='images/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=8), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/val.json', data_prefix=dict(img='images/'),
                 test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='VOCMetric', metric='mAP', eval_mode='area', iou_thrs=0.5),
    dict(type='CocoMetric', ann_file=data_root + 'annotations/val.json', metric='bbox'),
]
test_evaluator = val_evaluator
