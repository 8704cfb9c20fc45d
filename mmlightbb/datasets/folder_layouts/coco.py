"""The COCO layout: detection of the folder (its json files) and its reader.

``coco``: ``annotations/*.json`` (or ``*.json`` at the top) + image folder(s). A json whose name
holds ``train`` is the training set, one with ``val`` or ``test`` (and boxes) the test set; a
single json is split. ``file_name`` entries are looked up under the folder, its ``images/``, a
folder named like the json (``train2017/``) and, as a last resort, by unique base name.
"""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional, Tuple

from .common import (TEST_NAMES, TRAIN_NAMES, VAL_NAMES, DatasetError, _find_dir, _image,
                     _ImageIndex, _shown)


def _coco_jsons(root: str) -> List[str]:
    """Json files that look like COCO detection annotations (a dict with ``images``)."""
    ann = _find_dir(root, ('annotations', ))
    candidates = sorted(glob.glob(osp.join(ann, '*.json'))) if ann else []
    candidates += sorted(glob.glob(osp.join(root, '*.json')))
    found = []
    for path in candidates:
        try:
            with open(path, 'rb') as f:
                head = f.read(1 << 16)
        except OSError:
            continue
        if head.lstrip()[:1] == b'{' and b'"images"' in _read_bytes(path, head):
            found.append(path)
    return found


def _read_bytes(path: str, head: bytes) -> bytes:
    if len(head) < 1 << 16:
        return head
    with open(path, 'rb') as f:
        return f.read()


def _coco_role(path: str) -> Optional[str]:
    name = osp.basename(path).lower()
    if 'train' in name:
        return 'train'
    if any(k in name for k in ('val', 'test')):
        return 'test'
    return None


def _read_coco(root: str, report) -> Tuple[List[dict], Optional[Dict[str, List[int]]], str]:
    jsons = []
    for path in _coco_jsons(root):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            raise DatasetError(f'{path} is not valid JSON ({str(err)[:80]}); fix or replace it')
        if not isinstance(data, dict) or not isinstance(data.get('images'), list):
            continue
        jsons.append((path, data))
    with_boxes = [(p, d) for p, d in jsons if d.get('annotations')]
    if not with_boxes:
        raise DatasetError(
            f"{root}: no COCO json with annotations ({_shown([osp.basename(p) for p, _ in jsons])}"
            ' has an empty or no "annotations" list); export the boxes in COCO format')
    if len(with_boxes) == 1:
        chosen = {None: with_boxes[0]}
    else:
        roles = {}
        for p, d in with_boxes:
            roles.setdefault(_coco_role(p), []).append((p, d))
        for role in ('train', 'test'):  # instances_*.json next to keypoints/captions files
            if len(roles.get(role, [])) > 1:
                inst = [x for x in roles[role] if osp.basename(x[0]).startswith('instances')]
                if len(inst) == 1:
                    roles[role] = inst
        if len(roles.get('train', [])) != 1 or len(roles.get('test', [])) != 1:
            raise DatasetError(
                f'{root}: cannot tell the training and test json apart among '
                f"{_shown([osp.basename(p) for p, _ in with_boxes])}; name them train.json and "
                'val.json (or keep a single json and let the command split it)')
        chosen = {'train': roles['train'][0], 'test': roles['test'][0]}
    index = _ImageIndex(root)
    images, splits, order = [], {}, []
    for role, (path, data) in chosen.items():
        stem = osp.splitext(osp.basename(path))[0]
        short = stem[len('instances_'):] if stem.startswith('instances_') else stem
        bases = ['', 'images', short, f'images/{short}', 'JPEGImages']
        if role:
            bases += [n for n in (TRAIN_NAMES if role == 'train' else VAL_NAMES + TEST_NAMES)]
            bases += [f'images/{n}' for n in (TRAIN_NAMES if role == 'train'
                                              else VAL_NAMES + TEST_NAMES)]
        cats = {c.get('id'): str(c.get('name')) for c in data.get('categories', [])
                if isinstance(c, dict)}
        for cat_id in sorted(cats, key=lambda k: (not isinstance(k, int), str(k).zfill(12))):
            if cats[cat_id] not in order:
                order.append(cats[cat_id])
        by_id, missing, ids = {}, [], []
        for img in data['images']:
            if not isinstance(img, dict) or 'file_name' not in img or 'id' not in img:
                report['malformed_annotation'].append(f'{osp.basename(path)}: image entry '
                                                      f'{str(img)[:40]}')
                continue
            found = index.find(str(img['file_name']), bases)
            if found is None:
                missing.append(str(img['file_name']))
                continue
            by_id[img['id']] = len(images)
            ids.append(len(images))
            images.append(_image(found, [], int(img.get('width') or 0),
                                 int(img.get('height') or 0)))
        if missing:
            raise DatasetError(
                f'{osp.relpath(path, root)} names {len(missing)} image(s) that are not in {root}: '
                f'{_shown(missing)}; add the files, or remove their entries (and annotations) '
                'from the json')
        for k, ann in enumerate(data['annotations']):
            where = f'{osp.basename(path)}#annotation {ann.get("id", k)}'
            try:
                x, y, w, h = (float(v) for v in ann['bbox'])
                target = images[by_id[ann['image_id']]]
            except (KeyError, TypeError, ValueError):
                report['malformed_annotation'].append(where)
                continue
            name = cats.get(ann.get('category_id'))
            if name is None:
                report['unknown_class'].append(f"{where} (category_id {ann.get('category_id')})")
                continue
            target['boxes'].append(dict(name=str(name), bbox=[x, y, x + w, y + h],
                                        ignore=bool(ann.get('iscrowd', 0)), where=where))
        if role:
            splits[role] = ids
    if len(chosen) == 1:
        return images, None, 'no split files', order
    names = {r: osp.relpath(p, root) for r, (p, _) in chosen.items()}
    return images, splits, f"{names['train']} (train) and {names['test']} (test)", order
