"""Pascal VOC xml folders (SCTD's format) to COCO json.

Malformed xml files, missing images, invalid boxes and (with a class list) unknown class names are
skipped and reported, never fatal. Boxes follow mmdet's ``XMLDataset``: 1-based VOC corners minus
one, ``difficult`` objects become ``iscrowd=1`` (ignored by training and by ``CocoMetric``), like
mmdet's ``tools/dataset_converters/pascal_voc.py``. Outputs are written to temporary files and
renamed into place only once every split has been converted.
"""
import json
import os
import os.path as osp
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import cv2

IMG_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')
IMG_DIR_CANDIDATES = ('JPEGImages', 'images', 'Images', 'img')


def new_report() -> Dict[str, list]:
    """Empty skip report: for each kind of problem, the names of the skipped items."""
    return dict(malformed_xml=[], missing_image=[], invalid_box=[], unknown_class=[],
                missing_xml=[])


def format_report(report: Dict[str, list], max_names: int = 10) -> str:
    """One line per kind of skipped item: count and (the first ``max_names``) names."""
    lines = []
    for kind, names in report.items():
        if names:
            shown = ', '.join(names[:max_names]) + (', ...' if len(names) > max_names else '')
            lines.append(f'skipped {len(names)} {kind.replace("_", " ")}: {shown}')
    return '\n'.join(lines)


def _text(node: Optional[ET.Element], tag: str) -> Optional[str]:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text and child.text.strip() else None


def parse_voc_xml(path: str) -> dict:
    """``filename``, ``width``, ``height`` (0 when absent) and ``objects`` (``name``,
    ``difficult``, ``box``: [xmin, ymin, xmax, ymax] or None when unreadable) of one VOC xml.

    Raises ``ET.ParseError`` or ``ValueError`` for a file that is not a VOC annotation.
    """
    root = ET.parse(path).getroot()
    if root.tag != 'annotation':
        raise ValueError(f'root element is <{root.tag}>, not <annotation>')

    def size(tag):
        try:
            return int(float(_text(root.find('size'), tag)))
        except (TypeError, ValueError):
            return 0

    objects = []
    for obj in root.findall('object'):
        try:
            box = [float(_text(obj.find('bndbox'), k)) for k in ('xmin', 'ymin', 'xmax', 'ymax')]
        except (TypeError, ValueError):
            box = None
        objects.append(dict(name=_text(obj, 'name'), difficult=_text(obj, 'difficult') == '1',
                            box=box))
    return dict(filename=_text(root, 'filename'), width=size('width'), height=size('height'),
                objects=objects)


def load_voc_annotations(xml_files: Sequence[str], report: Dict[str, list]) -> Dict[str, dict]:
    """Parsed xml files by stem; malformed ones go to ``report['malformed_xml']``."""
    records = {}
    for path in sorted(xml_files):
        try:
            records[osp.splitext(osp.basename(path))[0]] = parse_voc_xml(path)
        except (ET.ParseError, ValueError, OSError):
            report['malformed_xml'].append(osp.basename(path))
    return records


def _image_index(img_dir: str) -> Dict[str, str]:
    """File name -> file name and stem -> file name of the images in ``img_dir`` (an exact name
    wins over a stem; for a shared stem, the extension first in ``IMG_EXTS`` wins)."""
    files = sorted((f for f in os.listdir(img_dir) if osp.splitext(f)[1].lower() in IMG_EXTS),
                   key=lambda f: IMG_EXTS.index(osp.splitext(f)[1].lower()))
    index = {}
    for f in files:
        index.setdefault(osp.splitext(f)[0], f)
    index.update({f: f for f in files})
    return index


def _find_image(index: Dict[str, str], stem: str, record: dict) -> Optional[str]:
    # The xml's <filename> is often stale (other extension, renamed file): fall back to stems.
    name = record['filename']
    candidates = [name, osp.splitext(name)[0]] if name else []
    for key in candidates + [stem]:
        if key and key in index:
            return index[key]
    return None


def collect_classes(records: Dict[str, dict], rename: Optional[Dict[str, str]] = None) -> List[str]:
    """Sorted class names of all objects (after ``rename``)."""
    rename = rename or {}
    return sorted({rename.get(o['name'], o['name'])
                   for r in records.values() for o in r['objects'] if o['name']})


def build_coco(records: Dict[str, dict], stems: Sequence[str], img_dir: str,
               classes: Sequence[str], report: Dict[str, list],
               rename: Optional[Dict[str, str]] = None) -> dict:
    """COCO dict of the images ``stems`` of ``records`` (in that order); skipped items go to
    ``report``."""
    rename = rename or {}
    index = _image_index(img_dir)
    images, annotations = [], []
    for stem in stems:
        record = records[stem]
        file_name = _find_image(index, stem, record)
        width, height = record['width'], record['height']
        if file_name is not None and (width <= 0 or height <= 0):
            # No usable <size> in the xml: read it from the image.
            img = cv2.imread(osp.join(img_dir, file_name), cv2.IMREAD_UNCHANGED)
            if img is None:
                file_name = None
            else:
                height, width = img.shape[:2]
        if file_name is None:
            report['missing_image'].append(f'{stem} ({record["filename"] or "no <filename>"})')
            continue
        image_id = len(images) + 1
        images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
        for k, obj in enumerate(record['objects']):
            name = rename.get(obj['name'], obj['name'])
            if name not in classes:
                report['unknown_class'].append(f'{stem}.xml#{k} ({name})')
                continue
            if obj['box'] is None:
                report['invalid_box'].append(f'{stem}.xml#{k} (unreadable bndbox)')
                continue
            x1, y1, x2, y2 = (v - 1 for v in obj['box'])
            x1, x2 = max(x1, 0), min(x2, width)
            y1, y2 = max(y1, 0), min(y2, height)
            if x2 <= x1 or y2 <= y1:
                report['invalid_box'].append(f'{stem}.xml#{k} ({obj["box"]} in {width}x{height})')
                continue
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=list(classes).index(name) + 1,
                                    bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                                    iscrowd=int(obj['difficult'])))
    return dict(images=images, annotations=annotations,
                categories=[dict(id=i + 1, name=n, supercategory='none')
                            for i, n in enumerate(classes)])


def voc_to_coco(xml_files: Sequence[str], img_dir: str, classes: Optional[Sequence[str]] = None,
                rename: Optional[Dict[str, str]] = None) -> Tuple[dict, Dict[str, list]]:
    """COCO dict of the given VOC xml files, and the report of what was skipped.

    ``classes`` defaults to every name found in the files (after ``rename``, sorted).
    """
    report = new_report()
    records = load_voc_annotations(xml_files, report)
    classes = list(classes) if classes else collect_classes(records, rename)
    coco = build_coco(records, sorted(records), img_dir, classes, report, rename)
    return coco, report


def _dump_tmp(obj, path: str) -> Tuple[str, str]:
    """Write json to a temporary file next to ``path`` (same file system: the rename into place
    is atomic); return (temporary file, path)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp',
                               dir=osp.dirname(osp.abspath(path)))
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f)
    except BaseException:
        os.remove(tmp)
        raise
    return tmp, path


def _split_ids(split_dir: str, splits: Optional[Sequence[str]]) -> Optional[Dict[str, List[str]]]:
    """Image ids per split from ``split_dir/<split>.txt``; None when there are no split files."""
    if splits is None:
        if not osp.isdir(split_dir):
            return None
        # Class-specific lists (``ship_train.txt``) hold "<id> <flag>" pairs: not splits.
        splits = sorted(f[:-4] for f in os.listdir(split_dir) if f.endswith('.txt') and
                        '_' not in f)
        if not splits:
            return None
    ids = {}
    for split in splits:
        path = osp.join(split_dir, f'{split}.txt')
        if not osp.isfile(path):
            raise FileNotFoundError(f'split file not found: {path}')
        with open(path) as f:
            ids[split] = [line.split()[0] for line in f if line.strip()]
    return ids


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
        img_dir = next((d for d in IMG_DIR_CANDIDATES if osp.isdir(osp.join(voc_root, d))), None)
        if img_dir is None:
            raise FileNotFoundError(f'no image folder ({", ".join(IMG_DIR_CANDIDATES)}) in '
                                    f'{voc_root}; pass img_dir (--img-dir)')
    img_path = osp.join(voc_root, img_dir)
    if not osp.isdir(img_path):
        raise FileNotFoundError(f'image folder not found: {img_path}')
    out_dir = out_dir or osp.join(voc_root, 'annotations')

    report = new_report()
    records = load_voc_annotations(
        [osp.join(ann_path, f) for f in os.listdir(ann_path) if f.lower().endswith('.xml')],
        report)
    ids = _split_ids(osp.join(voc_root, split_dir), splits) or {'all': sorted(records)}
    if classes:
        classes = list(classes)
    else:
        classes = collect_classes({s: records[s] for v in ids.values() for s in v if s in records},
                                  rename)
    malformed = {osp.splitext(name)[0] for name in report['malformed_xml']}
    for stems in ids.values():
        report['missing_xml'] += [s for s in stems if s not in records and s not in malformed]
    cocos = {split: build_coco(records, [s for s in stems if s in records], img_path, classes,
                               report, rename)
             for split, stems in ids.items()}
    # An image listed in two splits (train and trainval) is reported once.
    report = {kind: list(dict.fromkeys(names)) for kind, names in report.items()}
    for split, coco in cocos.items():
        if not coco['images']:
            raise ValueError(f'split {split!r}: no usable image, nothing written.\n'
                             f'{format_report(report)}')
        if not coco['annotations']:
            found = collect_classes(records)
            raise ValueError(f'split {split!r}: no valid box of the classes {classes} (names in '
                             f'the xml files: {found}), nothing written.\n{format_report(report)}')
    pending = []
    try:
        for split, coco in cocos.items():
            pending.append(_dump_tmp(coco, osp.join(out_dir, f'{split}.json')))
    except BaseException:
        for tmp, _ in pending:
            os.remove(tmp)
        raise
    for tmp, path in pending:
        os.replace(tmp, path)
    return dict(classes=classes, img_dir=img_dir, report=report,
                splits={split: dict(file=osp.join(out_dir, f'{split}.json'),
                                    images=len(coco['images']),
                                    annotations=len(coco['annotations']))
                        for split, coco in cocos.items()})
