# mmdet's Cascade R-CNN R50-FPN 1x recipe on COCO 2017 as it is: data/coco/.
_base_ = 'mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py'
