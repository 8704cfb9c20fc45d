# YOLOX with CSPConvNeXt on Pascal VOC 07+12 (data/VOCdevkit/).
_base_ = ['../_base_/yolox_voc.py', '../_base_/backbones/cspconvnext.py']
model = _base_.backbone_yolox
optim_wrapper = _base_.backbone_optim_wrapper
