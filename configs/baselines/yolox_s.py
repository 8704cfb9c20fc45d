# Incumbent: mmdet's YOLOX-s (CSPDarknet) on side-scan sonar, same data and schedule as
# configs/yolox_<backbone>.py.
_base_ = '../_base_/yolox_sonar.py'
