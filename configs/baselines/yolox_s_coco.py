# Incumbent: mmdet's YOLOX-s (CSPDarknet) on coco, same data and schedule as the mmlightbb coco configs.
_base_ = '../_base_/yolox_coco.py'
