# YOLOX-s recipe (mmdet) on Pascal VOC 07+12 trainval, tested on VOC2007 test:
#   data/VOCdevkit/VOC2007, data/VOCdevkit/VOC2012 (as mmdet's voc0712 base).
# VOCMetric with the 11-point AP of VOC2007; use eval_mode='area' for the VOC2012 protocol
# (--cfg-options val_evaluator.eval_mode=area test_evaluator.eval_mode=area).
_base_ = './yolox_s_100e.py'

data_root = 'data/VOCdevkit/'
model = dict(bbox_head=dict(num_classes=20))
voc_load = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True)]
train_dataloader = dict(dataset=dict(dataset=dict(
    _delete_=True, type='ConcatDataset', ignore_keys=['dataset_type'],
    datasets=[
        dict(type='VOCDataset', data_root=data_root, ann_file=f'{year}/ImageSets/Main/trainval.txt',
             data_prefix=dict(sub_data_root=f'{year}/'), pipeline=voc_load,
             filter_cfg=dict(filter_empty_gt=False, min_size=32))
        for year in ('VOC2007', 'VOC2012')
    ])))
val_dataloader = dict(dataset=dict(
    type='VOCDataset', data_root=data_root, ann_file='VOC2007/ImageSets/Main/test.txt',
    data_prefix=dict(_delete_=True, sub_data_root='VOC2007/')))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator
