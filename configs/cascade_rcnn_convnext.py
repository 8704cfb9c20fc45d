# Cascade R-CNN with ConvNeXt on side-scan sonar (data/sonar/).
_base_ = ['./_base_/cascade_rcnn_sonar.py', './_base_/backbones/convnext.py']
model = _base_.backbone_cascade
optim_wrapper = _base_.backbone_optim_wrapper
