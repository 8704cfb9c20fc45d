"""Side-scan sonar data: ``SonarDataset``, a bit-depth-aware loader, a synthetic generator, a
Pascal VOC -> COCO converter and :func:`prepare_dataset` (VOC, COCO or YOLO-txt folders -> COCO
json with a split) (importing registers the dataset and the transform in mmdet)."""
from .sonar import LoadSonarImageFromFile, SonarDataset, to_bgr_uint8
from .synthetic_sonar import CLASSES as SONAR_CLASSES
from .synthetic_sonar import make_sonar_dataset, render_sonar_image
from .folder_layouts import DatasetError, detect_layout, format_summary, prepare_dataset
from .voc2coco import convert_voc, voc_to_coco

__all__ = [
    'SONAR_CLASSES', 'DatasetError', 'LoadSonarImageFromFile', 'SonarDataset', 'convert_voc',
    'detect_layout', 'format_summary', 'make_sonar_dataset', 'prepare_dataset',
    'render_sonar_image', 'to_bgr_uint8', 'voc_to_coco'
]
