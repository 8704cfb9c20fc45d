"""Detection datasets in the folder layouts researchers have, converted to COCO json files.

Modules: :mod:`.common` (:class:`DatasetError`, the helpers and image records the readers share),
:mod:`.voc`, :mod:`.coco` and :mod:`.yolo` (one layout each: how it is recognised and read) and
:mod:`.prepare` (:func:`detect_layout`, :func:`read_dataset`, the split, the checks, the json
files and the summary).

:func:`prepare_dataset` reads a folder in one of three layouts, finds the classes and the split, and
writes ``train.json`` and ``test.json`` (COCO) to an output folder; the images stay where they are
(``file_name`` is relative to the dataset folder, which the config's ``data_root`` names). The json
files are what ``SonarDataset`` (any classes via ``metainfo``) and ``CocoMetric`` read.

Layouts (:func:`detect_layout` tells them apart, in this order): ``voc`` (Pascal VOC xml),
``coco`` (COCO json) and ``yolo`` (YOLO txt); each module's doc says what it reads.
"""
from .common import DatasetError
from .prepare import LAYOUTS, detect_layout, format_summary, prepare_dataset, read_dataset

__all__ = ['DatasetError', 'LAYOUTS', 'detect_layout', 'read_dataset', 'prepare_dataset',
           'format_summary']
