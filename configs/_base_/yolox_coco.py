# mmdet's YOLOX-s recipe on COCO 2017 as it is (300 epochs): data/coco/.
_base_ = 'mmdet::yolox/yolox_s_8xb8-300e_coco.py'
