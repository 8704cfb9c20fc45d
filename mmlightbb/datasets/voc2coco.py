"""Pascal VOC xml folders (SCTD's format) to COCO json, one file per split list.

A front end of :mod:`.folder_layouts`: the xml files are read by its VOC reader
(:func:`~.folder_layouts.voc.read_voc_xml_files`) and the json written by its
:func:`~.folder_layouts.prepare.to_coco`, after :func:`~.folder_layouts.prepare.decode_images`.
What is added here: every list file of ``ImageSets/Main`` (or those named) becomes its own json
(``all.json`` without lists), the folders can be named, classes renamed, and ``file_name`` is
relative to the image folder.

Malformed xml files, missing or unreadable images, invalid boxes and (with a class list) unknown
class names are skipped and reported, never fatal. Boxes follow mmdet's ``XMLDataset``: 1-based
VOC corners minus one, clipped to the image; ``difficult`` objects become ``iscrowd=1`` (ignored by
training and by ``CocoMetric``), like mmdet's ``tools/dataset_converters/pascal_voc.py``. The json
files are written together (:func:`~mmlightbb.engine.fileio.atomic_files`) once every split has
been converted: a failure leaves the previous ones as they were.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from ..engine.fileio import atomic_files
from .folder_layouts.prepare import decode_images, to_coco
from .folder_layouts.voc import (IMG_DIR_CANDIDATES, read_split_lists, read_voc_xml_files,
                                 voc_image_dir)


def new_report() -> Dict[str, list]:
    """Empty skip report: for each kind of problem, the names of the skipped items."""
    return dict(malformed_xml=[], missing_image=[], unreadable_image=[], invalid_box=[],
                unknown_class=[], missing_xml=[])


def format_report(report: Dict[str, list], max_names: int = 10) -> str:
    """One line per kind of skipped item: count and (the first ``max_names``) names."""
    lines = []
    for kind, names in report.items():
        if names:
            shown = ', '.join(names[:max_names]) + (', ...' if len(names) > max_names else '')
            lines.append(f'skipped {len(names)} {kind.replace("_", " ")}: {shown}')
    return '\n'.join(lines)


def _read(xml_files: Sequence[str], img_dir: str, rename: Optional[Dict[str, str]],
          report: Dict[str, list]) -> Dict[str, Optional[dict]]:
    """Image records by xml stem (None: no image), class names renamed."""
    records, malformed = read_voc_xml_files(xml_files, img_dir, report)
    report['malformed_xml'] += [name for name, _ in malformed]
    rename = rename or {}
    for record in filter(None, records.values()):
        for box in record['boxes']:
            box['name'] = rename.get(box['name'], box['name'])
    return records


def _convert(images: List[dict], splits: Dict[str, List[int]], img_dir: str,
             classes: Optional[Sequence[str]], report: Dict[str, list], source: str
             ) -> Tuple[List[str], Dict[str, dict]]:
    """(classes, COCO dict per split) of ``images`` (each image decoded once, whatever the number of
    splits naming it); ``classes`` defaults to every name found, sorted."""
    readable = set(decode_images(images, img_dir, report))
    found = sorted({box['name'] for i in readable for box in images[i]['boxes']})
    classes = list(classes) if classes else found
    for i in sorted(readable):
        report['unknown_class'] += [f"{box['where']} ({box['name']})"
                                    for box in images[i]['boxes'] if box['name'] not in classes]
    return classes, {split: to_coco(images, [i for i in ids if i in readable], classes, img_dir,
                                    f'{split} split of {source} (mmlightbb voc2coco)')
                     for split, ids in splits.items()}


def voc_to_coco(xml_files: Sequence[str], img_dir: str, classes: Optional[Sequence[str]] = None,
                rename: Optional[Dict[str, str]] = None) -> Tuple[dict, Dict[str, list]]:
    """COCO dict of the given VOC xml files, and the report of what was skipped.

    ``classes`` defaults to every name found in the files (after ``rename``, sorted).
    """
    report = new_report()
    images = [r for r in _read(xml_files, img_dir, rename, report).values() if r is not None]
    _, cocos = _convert(images, {'all': list(range(len(images)))}, img_dir, classes, report,
                        img_dir)
    return cocos['all'], report


def convert_voc(voc_root: str, out_dir: Optional[str] = None, ann_dir: str = 'Annotations',
                img_dir: Optional[str] = None, split_dir: str = 'ImageSets/Main',
                splits: Optional[Sequence[str]] = None, classes: Optional[Sequence[str]] = None,
                rename: Optional[Dict[str, str]] = None) -> dict:
    """Convert a VOC folder to ``<out_dir>/<split>.json`` (one per split file, else ``all.json``).

    Folders are relative to ``voc_root``; ``img_dir`` defaults to the first of
    ``IMG_DIR_CANDIDATES`` that exists, ``out_dir`` to ``<voc_root>/annotations``. The classes are
    shared by all splits. Nothing is written when a split ends up with no image or no box.

    Returns:
        dict: ``classes``, ``img_dir`` (relative to ``voc_root``), ``report`` (skipped items) and
        ``splits`` (split -> ``file``, ``images``, ``annotations``).
    """
    ann_path = osp.join(voc_root, ann_dir)
    if not osp.isdir(ann_path):
        raise FileNotFoundError(f'annotation folder not found: {ann_path}')
    if img_dir is None:
        found_dir = voc_image_dir(voc_root)
        if found_dir is None:
            raise FileNotFoundError(f'no image folder ({", ".join(IMG_DIR_CANDIDATES)}) in '
                                    f'{voc_root}; pass img_dir (--img-dir)')
        img_dir = osp.relpath(found_dir, voc_root)
    img_path = osp.join(voc_root, img_dir)
    if not osp.isdir(img_path):
        raise FileNotFoundError(f'image folder not found: {img_path}')
    out_dir = out_dir or osp.join(voc_root, 'annotations')

    report = new_report()
    records = _read([osp.join(ann_path, f) for f in os.listdir(ann_path)
                     if f.lower().endswith('.xml')], img_path, rename, report)
    lists = read_split_lists(osp.join(voc_root, split_dir), splits) or {'all': sorted(records)}
    malformed = {osp.splitext(name)[0] for name in report['malformed_xml']}
    stems = []  # the images of all splits, each once
    for ids in lists.values():
        report['missing_xml'] += [s for s in ids if s not in records and s not in malformed]
        stems += [s for s in ids if records.get(s) is not None]
    stems = list(dict.fromkeys(stems))
    position = {stem: i for i, stem in enumerate(stems)}
    classes, cocos = _convert(
        [records[s] for s in stems],
        {split: list(dict.fromkeys(position[s] for s in ids if s in position))
         for split, ids in lists.items()},
        img_path, classes, report, voc_root)
    # a stem missing from two lists (train and trainval) is reported once
    report = {kind: list(dict.fromkeys(names)) for kind, names in report.items()}
    for split, coco in cocos.items():
        if not coco['images']:
            raise ValueError(f'split {split!r}: no usable image, nothing written.\n'
                             f'{format_report(report)}')
        if not coco['annotations']:
            found = sorted({box['name'] for r in filter(None, records.values())
                            for box in r['boxes']})
            raise ValueError(f'split {split!r}: no valid box of the classes {classes} (names in '
                             f'the xml files: {found}), nothing written.\n{format_report(report)}')
    files = {split: osp.join(out_dir, f'{split}.json') for split in cocos}
    with atomic_files(*files.values()) as temps:
        for tmp, coco in zip(temps, cocos.values()):
            with open(tmp, 'w') as f:
                json.dump(coco, f)
    return dict(classes=classes, img_dir=img_dir, report=report,
                splits={split: dict(file=files[split], images=len(coco['images']),
                                    annotations=len(coco['annotations']))
                        for split, coco in cocos.items()})
