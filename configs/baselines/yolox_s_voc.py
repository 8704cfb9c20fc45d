# Incumbent: mmdet's YOLOX-s (CSPDarknet) on voc, same data and schedule as the mmlightbb voc configs.
_base_ = '../_base_/yolox_voc.py'
