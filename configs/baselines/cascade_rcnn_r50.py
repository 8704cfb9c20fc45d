# Incumbent: mmdet's Cascade R-CNN R50-FPN on side-scan sonar, same data and schedule as
# configs/cascade_rcnn_<backbone>.py. ResNet-50 from scratch like the mmlightbb configs (nothing is
# downloaded); set model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH) for ImageNet R50.
_base_ = '../_base_/cascade_rcnn_sonar.py'
model = dict(backbone=dict(init_cfg=None))
