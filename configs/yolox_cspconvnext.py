# YOLOX with CSPConvNeXt on side-scan sonar (data/sonar/).
_base_ = ['./_base_/yolox_sonar.py', './_base_/backbones/cspconvnext.py']
model = _base_.backbone_yolox
optim_wrapper = _base_.backbone_optim_wrapper
