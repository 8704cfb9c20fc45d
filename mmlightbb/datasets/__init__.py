"""Side-scan sonar data: ``SonarDataset``, a bit-depth-aware loader, a synthetic generator and a
Pascal VOC -> COCO converter (importing registers the dataset and the transform in mmdet)."""
from .sonar import LoadSonarImageFromFile, SonarDataset, to_bgr_uint8
from .synthetic_sonar import CLASSES as SONAR_CLASSES
from .synthetic_sonar import make_sonar_dataset, render_sonar_image
from .voc2coco import convert_voc, voc_to_coco

__all__ = [
    'SONAR_CLASSES', 'LoadSonarImageFromFile', 'SonarDataset', 'convert_voc', 'make_sonar_dataset',
    'render_sonar_image', 'to_bgr_uint8', 'voc_to_coco'
]
