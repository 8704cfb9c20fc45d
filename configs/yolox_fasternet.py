# YOLOX with FasterNet on side-scan sonar (data/sonar/).
_base_ = ['./_base_/yolox_sonar.py', './_base_/backbones/fasternet.py']
model = _base_.backbone_yolox
optim_wrapper = _base_.backbone_optim_wrapper
