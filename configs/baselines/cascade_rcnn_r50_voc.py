# Incumbent: mmdet's Cascade R-CNN R50-FPN on voc (R50 from scratch unless init_cfg is set, as above).
_base_ = '../_base_/cascade_rcnn_voc.py'
model = dict(backbone=dict(init_cfg=None))
