# Cascade R-CNN with RepLKNet on Pascal VOC 07+12 (data/VOCdevkit/).
_base_ = ['../_base_/cascade_rcnn_voc.py', '../_base_/backbones/replknet.py']
model = _base_.backbone_cascade
optim_wrapper = _base_.backbone_optim_wrapper
