"""The Pascal VOC layout (SCTD's format): detection of the folder and the one VOC reader.

``voc``: ``Annotations/*.xml`` (Pascal VOC, SCTD's format) + an image folder (``JPEGImages/``,
``images/``, ...; any image extension; the xml's ``<filename>`` may be stale, the stem decides).
Splits from ``ImageSets/Main/{train,val,trainval,test}.txt`` when present: test = ``test.txt``
(training on ``trainval``, else ``train`` + ``val``) or else ``val.txt`` (training on ``train``).
Boxes follow mmdet's ``XMLDataset`` (1-based corners minus one); ``difficult`` objects are kept
as ``iscrowd=1`` (ignored by training and evaluation).

:func:`read_voc_xml_files`, :func:`voc_image_dir` and :func:`read_split_lists` are what
:mod:`mmlightbb.datasets.voc2coco` (one json per list file, class renaming) converts with too.
"""
import os.path as osp
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

from .common import DatasetError, _find_dir, _image, _ImageIndex, _listdir, _shown

IMG_DIR_CANDIDATES = ('JPEGImages', 'images', 'Images', 'img')


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


def read_voc_xml_files(xml_files: Sequence[str], img_dir: str, report: Dict[str, List[str]]
                       ) -> Tuple[Dict[str, Optional[dict]], List[Tuple[str, str]]]:
    """Read VOC xml files and find their images under ``img_dir``.

    Returns the image records (:func:`.common._image`; boxes in pixels, ``ignore`` = difficult,
    ``where`` = ``<xml name>#<object index>``) by xml stem, None for an xml whose image is not
    found (``report['missing_image']``), and the ``(file name, reason)`` of the xml files that do
    not parse, which each caller reports its own way. Objects without a name or a readable
    ``<bndbox>`` go to ``report['invalid_box']``.
    """
    index = _ImageIndex(img_dir)
    records: Dict[str, Optional[dict]] = {}
    malformed = []
    for xml_path in sorted(xml_files):
        name = osp.basename(xml_path)
        stem = osp.splitext(name)[0]
        try:
            rec = parse_voc_xml(xml_path)
        except (ET.ParseError, ValueError, OSError) as err:
            malformed.append((name, str(err)[:60]))
            continue
        path = None
        # the xml's <filename> is often stale (other extension, renamed file): stems decide
        for key in ([rec['filename'], osp.splitext(rec['filename'])[0]] if rec['filename']
                    else []) + [stem]:
            path = index.by_rel.get(key) or index.by_stem_rel.get(key)
            if path:
                break
        if path is None:
            report['missing_image'].append(f"{stem} ({rec['filename'] or 'no <filename>'})")
            records[stem] = None
            continue
        boxes = []
        for k, obj in enumerate(rec['objects']):
            where = f'{name}#{k}'
            if not obj['name']:
                report['invalid_box'].append(f'{where} (object without <name>)')
            elif obj['box'] is None:
                report['invalid_box'].append(f'{where} (unreadable bndbox)')
            else:
                boxes.append(dict(name=obj['name'], bbox=[v - 1 for v in obj['box']],
                                  ignore=obj['difficult'], where=where))
        records[stem] = _image(path, boxes, rec['width'], rec['height'])
    return records, malformed


def voc_image_dir(root: str) -> Optional[str]:
    """The image folder of a VOC folder: the first of :data:`IMG_DIR_CANDIDATES` (any case)."""
    return _find_dir(root, IMG_DIR_CANDIDATES)


def read_split_lists(split_dir: str, names: Optional[Sequence[str]] = None
                     ) -> Dict[str, List[str]]:
    """Image ids per list file of ``split_dir``: ``<name>.txt`` for each of ``names``
    (``FileNotFoundError`` for a missing one), else every list but the per-class ones
    (``ship_train.txt`` holds "<id> <flag>" pairs, not a split); {} without the folder."""
    if names is None:
        names = [f[:-4] for f in _listdir(split_dir) if f.endswith('.txt') and '_' not in f]
    lists = {}
    for name in names:
        path = osp.join(split_dir, f'{name}.txt')
        if not osp.isfile(path):
            raise FileNotFoundError(f'split file not found: {path}')
        with open(path) as f:
            lists[name] = [line.split()[0] for line in f if line.strip()]
    return lists


def _voc_ann_dir(root: str) -> Optional[str]:
    d = _find_dir(root, ('Annotations', ))
    if d is None:
        return None
    return d if (any(f.lower().endswith('.xml') for f in _listdir(d))
                 or not any(f.lower().endswith('.json') for f in _listdir(d))) else None


def _read_voc(root: str, report) -> Tuple[List[dict], Optional[Dict[str, List[int]]], str]:
    ann_dir = _voc_ann_dir(root)
    xml_files = sorted(f for f in _listdir(ann_dir) if f.lower().endswith('.xml'))
    if not xml_files:
        raise DatasetError(f'{ann_dir} holds no .xml annotation files; put one Pascal VOC xml per '
                           'image there (e.g. from labelImg or CVAT "Pascal VOC" export)')
    img_dir = voc_image_dir(root)
    if img_dir is None:
        raise DatasetError(f'{root} has Annotations/ but no image folder '
                           f"({', '.join(IMG_DIR_CANDIDATES)}); put the images in JPEGImages/")
    records, malformed = read_voc_xml_files([osp.join(ann_dir, f) for f in xml_files], img_dir,
                                            report)
    report['malformed_annotation'] += [f'{name} ({reason})' for name, reason in malformed]
    images, by_stem = [], {}
    for stem, rec in records.items():
        by_stem[stem] = None if rec is None else len(images)
        if rec is not None:
            images.append(rec)

    split_dir = osp.join(root, 'ImageSets', 'Main')
    lists = {name.lower(): ids for name, ids in read_split_lists(split_dir).items()}
    if not lists:
        return images, None, 'no split files'
    if 'test' in lists and ('trainval' in lists or 'train' in lists):
        test_names = ['test']
        train_names = ['trainval'] if 'trainval' in lists else [
            n for n in ('train', 'val') if n in lists]
    elif 'val' in lists and 'train' in lists:
        test_names, train_names = ['val'], ['train']
    else:
        raise DatasetError(
            f"{split_dir} has {_shown(sorted(f + '.txt' for f in lists))} but no pair of "
            'training and test lists (train.txt + val.txt, or trainval.txt/train.txt + test.txt); '
            'add the missing list, or remove ImageSets/Main to split at random with --split-seed')
    splits = {}
    for part, names in (('train', train_names), ('test', test_names)):
        ids, missing = [], []
        for n in names:
            for stem in lists[n]:
                if by_stem.get(stem) is None:
                    missing.append(stem)
                else:
                    ids.append(by_stem[stem])
        if missing:
            what = ('no image' if all(s in by_stem for s in missing) else
                    'no annotation file' if not any(s in by_stem for s in missing) else
                    'no annotation file or image')
            raise DatasetError(
                f"ImageSets/Main/{'+'.join(n + '.txt' for n in names)} names {len(missing)} "
                f"image(s) with {what} in {root}: {_shown(missing)}; add the files or remove "
                'those lines')
        splits[part] = list(dict.fromkeys(ids))
    split_desc = (f"split files ImageSets/Main/{'+'.join(n + '.txt' for n in train_names)} "
                  f"(train) and {'+'.join(n + '.txt' for n in test_names)} (test)")
    return images, splits, split_desc
