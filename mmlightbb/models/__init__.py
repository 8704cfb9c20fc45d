from . import backbones, layers  # noqa: F401  (importing registers the modules)

try:  # the backbones in mmpretrain's registry too, for ImageNet pre-training (configs/imagenet/)
    from . import mmpretrain_compat  # noqa: F401
except ImportError:  # mmpretrain, or the torchvision it imports, is not installed
    pass
