# YOLOX-s recipe (mmdet) on a side-scan sonar dataset in COCO format:
#   data/sonar/annotations/{train,val}.json + data/sonar/images/
# Make one with `python tools/make_sonar_dataset.py --out data/sonar` (synthetic) or convert SCTD's
# Pascal VOC folders with `python tools/dataset_converters/voc2coco.py`. ~1000 images: the 100-epoch schedule;
# evaluated with VOC-style mAP50 (area) -- what sonar papers report -- and COCO mAP.
_base_ = './yolox_s_100e.py'

data_root = 'data/sonar/'
metainfo = dict(classes=('shipwreck', 'aircraft', 'victim'))
model = dict(bbox_head=dict(num_classes=3))

# Gray 8/16-bit sonar images load as 3-channel uint8 at full contrast. An unreadable image is
# skipped with a warning in training and stops val/test (a smaller test set gives a wrong mAP).
test_pipeline = [dict(type='LoadSonarImageFromFile'), *_base_.test_pipeline[1:]]
train_dataloader = dict(dataset=dict(dataset=dict(
    type='SonarDataset', data_root=data_root, metainfo=metainfo,
    ann_file='annotations/train.json', data_prefix=dict(img='images/'),
    pipeline=[dict(type='LoadSonarImageFromFile', ignore_empty=True),
              dict(type='LoadAnnotations', with_bbox=True)])))
val_dataloader = dict(dataset=dict(
    type='SonarDataset', data_root=data_root, metainfo=metainfo,
    ann_file='annotations/val.json', data_prefix=dict(img='images/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='VOCMetric', metric='mAP', eval_mode='area', iou_thrs=0.5),
    dict(type='CocoMetric', ann_file=data_root + 'annotations/val.json', metric='bbox'),
]
test_evaluator = val_evaluator
