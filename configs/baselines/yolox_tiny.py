# Incumbent: mmdet's YOLOX-tiny (CSPDarknet, widen 0.375) on side-scan sonar, same data and schedule
# as configs/yolox_<backbone>.py (model settings as mmdet's yolox_tiny_8xb8-300e_coco.py).
_base_ = '../_base_/yolox_sonar.py'
model = dict(
    backbone=dict(deepen_factor=0.33, widen_factor=0.375),
    neck=dict(in_channels=[96, 192, 384], out_channels=96),
    bbox_head=dict(in_channels=96, feat_channels=96))
