# YOLOX with CSPConvNeXt on COCO 2017 (data/coco/).
_base_ = ['../_base_/yolox_coco.py', '../_base_/backbones/cspconvnext.py']
model = _base_.backbone_yolox
optim_wrapper = _base_.backbone_optim_wrapper
