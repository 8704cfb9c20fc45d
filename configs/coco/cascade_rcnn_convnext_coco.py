# Cascade R-CNN with ConvNeXt on COCO 2017 (data/coco/).
_base_ = ['../_base_/cascade_rcnn_coco.py', '../_base_/backbones/convnext.py']
model = _base_.backbone_cascade
optim_wrapper = _base_.backbone_optim_wrapper
