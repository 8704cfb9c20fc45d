"""The Pascal VOC layout (SCTD's format): detection of the folder and its reader.

``voc``: ``Annotations/*.xml`` (Pascal VOC, SCTD's format) + an image folder (``JPEGImages/``,
``images/``, ...; any image extension; the xml's ``<filename>`` may be stale, the stem decides).
Splits from ``ImageSets/Main/{train,val,trainval,test}.txt`` when present: test = ``test.txt``
(training on ``trainval``, else ``train`` + ``val``) or else ``val.txt`` (training on ``train``).
Boxes follow mmdet's ``XMLDataset`` (1-based corners minus one); ``difficult`` objects are kept
as ``iscrowd=1`` (ignored by training and evaluation), as in ``voc2coco``.
"""
import os.path as osp
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

from ..voc2coco import IMG_DIR_CANDIDATES, parse_voc_xml
from .common import DatasetError, _find_dir, _image, _ImageIndex, _listdir, _shown


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
    img_dir = _find_dir(root, IMG_DIR_CANDIDATES)
    if img_dir is None:
        raise DatasetError(f'{root} has Annotations/ but no image folder '
                           f"({', '.join(IMG_DIR_CANDIDATES)}); put the images in JPEGImages/")
    index = _ImageIndex(img_dir)
    images, by_stem = [], {}
    for name in xml_files:
        stem = osp.splitext(name)[0]
        try:
            rec = parse_voc_xml(osp.join(ann_dir, name))
        except (ET.ParseError, ValueError, OSError) as err:
            report['malformed_annotation'].append(f'{name} ({str(err)[:60]})')
            continue
        path = None
        for key in ([rec['filename'], osp.splitext(rec['filename'])[0]] if rec['filename']
                    else []) + [stem]:
            hits = ([index.by_rel.get(key)] + [index.by_stem_rel.get(key)])
            path = next((h for h in hits if h), None)
            if path:
                break
        if path is None:
            report['missing_image'].append(f"{stem} ({rec['filename'] or 'no <filename>'})")
            by_stem[stem] = None
            continue
        boxes = []
        for k, obj in enumerate(rec['objects']):
            where = f'{name}#{k}'
            if not obj['name']:
                report['malformed_annotation'].append(f'{where} (object without <name>)')
            elif obj['box'] is None:
                report['invalid_box'].append(f'{where} (unreadable bndbox)')
            else:
                boxes.append(dict(name=obj['name'], bbox=[v - 1 for v in obj['box']],
                                  ignore=obj['difficult'], where=where))
        by_stem[stem] = len(images)
        images.append(_image(path, boxes, rec['width'], rec['height']))

    split_dir = osp.join(root, 'ImageSets', 'Main')
    lists = {}
    if osp.isdir(split_dir):
        for f in _listdir(split_dir):  # class lists (ship_train.txt) are not splits
            if f.endswith('.txt') and '_' not in f:
                with open(osp.join(split_dir, f)) as fh:
                    lists[f[:-4].lower()] = [ln.split()[0] for ln in fh if ln.strip()]
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
