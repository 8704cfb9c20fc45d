"""Detection datasets in the folder layouts researchers have, converted to COCO json files.

Over 400 lines: the readers of three layouts share their validation and one-line errors here; a
split into one module per layout (voc / coco / yolo) is due.

:func:`prepare_dataset` reads a folder in one of three layouts, finds the classes and the split, and
writes ``train.json`` and ``test.json`` (COCO) to an output folder; the images stay where they are
(``file_name`` is relative to the dataset folder, which the config's ``data_root`` names). The json
files are what ``SonarDataset`` (any classes via ``metainfo``) and ``CocoMetric`` read.

Layouts (:func:`detect_layout` tells them apart, in this order):

* ``voc``: ``Annotations/*.xml`` (Pascal VOC, SCTD's format) + an image folder (``JPEGImages/``,
  ``images/``, ...; any image extension; the xml's ``<filename>`` may be stale, the stem decides).
  Splits from ``ImageSets/Main/{train,val,trainval,test}.txt`` when present: test = ``test.txt``
  (training on ``trainval``, else ``train`` + ``val``) or else ``val.txt`` (training on ``train``).
  Boxes follow mmdet's ``XMLDataset`` (1-based corners minus one); ``difficult`` objects are kept
  as ``iscrowd=1`` (ignored by training and evaluation), as in ``voc2coco``.
* ``coco``: ``annotations/*.json`` (or ``*.json`` at the top) + image folder(s). A json whose name
  holds ``train`` is the training set, one with ``val`` or ``test`` (and boxes) the test set; a
  single json is split. ``file_name`` entries are looked up under the folder, its ``images/``, a
  folder named like the json (``train2017/``) and, as a last resort, by unique base name.
* ``yolo``: ``images/`` + ``labels/`` (the label of ``images/a/b.jpg`` is ``labels/a/b.txt``; a
  ``.txt`` next to the image also counts), lines ``class cx cy w h`` normalised to 0..1 (polygon
  lines ``class x1 y1 x2 y2 ...`` give their bounding box). Sub-splits ``images/{train,val,test}``
  or Roboflow's ``{train,valid,test}/{images,labels}``, or darknet lists ``train.txt``/``val.txt``/
  ``test.txt`` of image paths. Class names from ``data.yaml`` (``names:`` list or ``{id: name}``),
  ``classes.txt``, ``obj.names`` or another ``*.names`` (in the folder or its labels folder); an
  image without a label file is a background image. Test split: ``val`` (``valid``) if present,
  else ``test``.

Without split files (or sub-splits) the images are split at random with a seed
(``val_ratio`` of them, at least one, go to the test set); the summary says which split was used.

Problems that leave the data usable are skipped and reported (malformed annotation files or
lines, boxes outside the image or empty, unknown class ids, unreadable or missing images that no
split file names); every image is decoded once here, so an unreadable one is left out of both
splits and counted instead of failing a run later. Problems that make the comparison meaningless
raise :class:`DatasetError` with one line naming the problem and the fix: a folder in no known
layout, no annotation files, no boxes, a split file naming images that do not exist, ``classes``
the annotations do not contain, a split without images or boxes.
"""
import glob
import hashlib
import json
import os
import os.path as osp
import random
import statistics
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import cv2

from .voc2coco import IMG_EXTS, IMG_DIR_CANDIDATES, parse_voc_xml

__all__ = ['DatasetError', 'LAYOUTS', 'detect_layout', 'read_dataset', 'prepare_dataset',
           'format_summary']

LAYOUTS = ('voc', 'coco', 'yolo')
IMAGE_EXTS = tuple(IMG_EXTS) + ('.webp', '.pgm', '.ppm')
TRAIN_NAMES = ('train', 'training')
VAL_NAMES = ('val', 'valid', 'validation')
TEST_NAMES = ('test', 'testing')
SPLIT_DIR_NAMES = TRAIN_NAMES + VAL_NAMES + TEST_NAMES
MAX_NAMES = 5  # names shown per problem


class DatasetError(ValueError):
    """The dataset folder cannot be used; the message is one line naming the problem and the fix."""


def _shown(names: Sequence[str], limit: int = MAX_NAMES) -> str:
    names = list(names)
    return ', '.join(names[:limit]) + (f', ... ({len(names)} in all)' if len(names) > limit
                                       else '')


def _is_image(name: str) -> bool:
    return osp.splitext(name)[1].lower() in IMAGE_EXTS


def _listdir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _find_dir(root: str, names: Sequence[str]) -> Optional[str]:
    """The first sub-folder of ``root`` whose name is one of ``names`` (case-insensitive)."""
    entries = {e.lower(): e for e in _listdir(root) if osp.isdir(osp.join(root, e))}
    for name in names:
        if name.lower() in entries:
            return osp.join(root, entries[name.lower()])
    return None


def _walk_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursive, sorted), hidden folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        found += [osp.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
    return found


# -------------------------------------------------------------------------------- detection
def _voc_ann_dir(root: str) -> Optional[str]:
    d = _find_dir(root, ('Annotations', ))
    if d is None:
        return None
    return d if (any(f.lower().endswith('.xml') for f in _listdir(d))
                 or not any(f.lower().endswith('.json') for f in _listdir(d))) else None


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


def _yolo_pairs(root: str) -> List[Tuple[str, Optional[str], Optional[str]]]:
    """(images folder, labels folder or None, split name or None) of a YOLO folder."""
    images, labels = _find_dir(root, ('images', )), _find_dir(root, ('labels', ))
    if images:
        subs = [e for e in _listdir(images) if osp.isdir(osp.join(images, e))
                and e.lower() in SPLIT_DIR_NAMES]
        if subs and not any(_is_image(f) for f in _listdir(images)):
            return [(osp.join(images, s), osp.join(labels, s) if labels else None, s.lower())
                    for s in subs]
        return [(images, labels, None)]
    pairs = []
    for e in _listdir(root):  # Roboflow: train/images + train/labels, valid/..., test/...
        sub = osp.join(root, e)
        if e.lower() in SPLIT_DIR_NAMES and osp.isdir(sub) and _find_dir(sub, ('images', )):
            pairs.append((_find_dir(sub, ('images', )), _find_dir(sub, ('labels', )), e.lower()))
    if pairs:
        return pairs
    if any(_is_image(f) for f in _listdir(root)):  # darknet: a.jpg + a.txt side by side
        return [(root, None, None)]
    return []


def detect_layout(root: str) -> str:
    """'voc', 'coco' or 'yolo' for a dataset folder; :class:`DatasetError` if it is none."""
    if not osp.isdir(root):
        raise DatasetError(f'dataset folder not found: {root!r}; pass the folder that holds '
                           'Annotations/ (Pascal VOC), annotations/*.json (COCO) or images/ + '
                           'labels/ (YOLO)')
    if _voc_ann_dir(root):
        return 'voc'
    if _coco_jsons(root):
        return 'coco'
    pairs = _yolo_pairs(root)
    if pairs and any(lbl for _, lbl, _ in pairs):
        return 'yolo'
    if pairs and any(f.lower().endswith('.txt') and not f.lower().startswith(('classes', 'train',
                                                                              'val', 'test'))
                     for f in _listdir(pairs[0][0])):
        return 'yolo'
    entries = _listdir(root)
    raise DatasetError(
        f'{root} is in none of the known layouts: Pascal VOC (Annotations/*.xml + JPEGImages/), '
        'COCO (annotations/*.json + an image folder) or YOLO (images/ + labels/*.txt + '
        f"classes.txt or data.yaml); it holds {_shown(entries) if entries else 'nothing'}. "
        'Move the files into one of these layouts (README, "Your own data")')


# --------------------------------------------------------------------------------- records
def _new_report() -> Dict[str, List[str]]:
    return dict(malformed_annotation=[], invalid_box=[], unknown_class=[], missing_image=[],
                unreadable_image=[], dropped_class=[])


def _image(path: str, boxes: List[dict], width: int = 0, height: int = 0) -> dict:
    """One image record: abs ``path``, ``width``/``height`` as annotated (0: unknown) and
    ``boxes`` ({``name``, ``bbox`` [x1, y1, x2, y2] in pixels, ``ignore``, ``where``})."""
    return dict(path=osp.abspath(path), width=width, height=height, boxes=boxes)


class _ImageIndex:
    """The image files under a folder, by relative path, by path without extension and by
    base name (a base name shared by several files is ambiguous and not used)."""

    def __init__(self, root: str, folders: Sequence[str] = ()):
        self.root = root
        files = []
        for folder in folders or [root]:
            files += _walk_images(folder)
        self.by_rel = {osp.relpath(f, root).replace(os.sep, '/'): f for f in files}
        self.by_stem_rel = {}
        self.by_base, self.by_stem = {}, {}
        for f in sorted(files, key=lambda p: IMAGE_EXTS.index(osp.splitext(p)[1].lower())):
            rel = osp.relpath(f, root).replace(os.sep, '/')
            self.by_stem_rel.setdefault(osp.splitext(rel)[0], f)
            base = osp.basename(f)
            self.by_base.setdefault(base, []).append(f)
            self.by_stem.setdefault(osp.splitext(base)[0], []).append(f)

    def find(self, name: str, bases: Sequence[str] = ('', )) -> Optional[str]:
        name = name.replace('\\', '/')
        if osp.isabs(name) and osp.isfile(name):
            return name
        for base in bases:
            rel = osp.normpath(osp.join(base, name)).replace(os.sep, '/')
            if rel in self.by_rel:
                return self.by_rel[rel]
        matches = self.by_base.get(osp.basename(name), [])
        return matches[0] if len(matches) == 1 else None


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


def _yolo_class_names(root: str, label_dirs: Sequence[str]) -> Tuple[Optional[List[str]], str]:
    """Class names by id from data.yaml / classes.txt / obj.names / *.names, and the source."""
    folders = [root] + [d for d in label_dirs if d]
    for d in list(folders):
        parent = osp.dirname(d.rstrip('/'))
        if parent not in folders and osp.commonpath([parent, root]) == root:
            folders.append(parent)
    for folder in folders:
        for name in ('data.yaml', 'dataset.yaml', 'data.yml') + tuple(
                f for f in _listdir(folder) if f.endswith(('.yaml', '.yml'))):
            path = osp.join(folder, name)
            if not osp.isfile(path):
                continue
            try:
                import yaml
                with open(path) as f:
                    data = yaml.safe_load(f)
            except Exception as err:  # noqa: BLE001 (any parse error: say which file)
                raise DatasetError(f'{path} is not valid YAML ({str(err).splitlines()[0][:80]}); '
                                   'fix it or write the class names to classes.txt instead')
            names = data.get('names') if isinstance(data, dict) else None
            if isinstance(names, dict):
                try:
                    ids = sorted(int(k) for k in names)
                except ValueError:
                    raise DatasetError(f'{path}: names: keys must be class ids 0..N-1')
                names = [str(names.get(i, names.get(str(i)))) for i in range(max(ids) + 1)]
            if isinstance(names, list) and names:
                return [str(n) for n in names], osp.relpath(path, root)
    for folder in folders:
        files = [f for f in ('classes.txt', 'obj.names', 'classes.names') if
                 osp.isfile(osp.join(folder, f))]
        files += [f for f in _listdir(folder) if f.endswith('.names') and f not in files]
        for f in files:
            with open(osp.join(folder, f)) as fh:
                names = [ln.strip() for ln in fh if ln.strip()]
            if names:
                return names, osp.relpath(osp.join(folder, f), root)
    return None, ''


def _label_path(img: str, images_dir: str, labels_dir: Optional[str]) -> Optional[str]:
    stem = osp.splitext(img)[0]
    if labels_dir:
        cand = osp.join(labels_dir, osp.relpath(stem, images_dir) + '.txt')
        if osp.isfile(cand):
            return cand
    return stem + '.txt' if osp.isfile(stem + '.txt') else None


def _parse_yolo_line(line: str) -> Tuple[int, List[float]]:
    """(class id, [x1, y1, x2, y2] normalised) of a label line; ValueError if malformed."""
    parts = line.split()
    if len(parts) < 5:
        raise ValueError('fewer than 5 values')
    cls_f = float(parts[0])
    if cls_f != int(cls_f) or cls_f < 0:
        raise ValueError(f'class {parts[0]} is not an id')
    vals = [float(v) for v in parts[1:]]
    if len(vals) in (4, 5):  # cx cy w h [confidence]
        cx, cy, w, h = vals[:4]
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    elif len(vals) >= 6 and len(vals) % 2 == 0:  # polygon x1 y1 x2 y2 ...
        xs, ys = vals[0::2], vals[1::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
    else:
        raise ValueError(f'{len(vals)} coordinates')
    if any(v < -0.01 or v > 1.01 for v in box):
        raise ValueError('coordinates are not normalised to 0..1')
    return int(cls_f), box


def _read_list(path: str, root: str, index: _ImageIndex) -> Tuple[List[str], List[str]]:
    """Images (found, missing) named by a darknet list file."""
    found, missing = [], []
    with open(path) as f:
        for line in f:
            name = line.strip()
            if not name:
                continue
            hit = index.find(name, ('', osp.relpath(osp.dirname(path), root)))
            (found if hit else missing).append(hit or name)
    return found, missing


def _read_yolo(root: str, report, classes: Optional[Sequence[str]]):
    pairs = _yolo_pairs(root)
    names, names_src = _yolo_class_names(root, [lbl for _, lbl, _ in pairs])
    if names is None and classes:
        names, names_src = list(classes), '--classes (by class id)'
    all_images = [(img, imgs_dir, lbls, split) for imgs_dir, lbls, split in pairs
                  for img in _walk_images(imgs_dir)
                  if not (lbls is None and imgs_dir == root and osp.dirname(img) != root)]
    if not all_images:
        raise DatasetError(f'{root}: no images in {_shown([p for p, _, _ in pairs])}; put the '
                           'images in images/ and the labels in labels/')
    images, label_files, seen_ids = [], 0, set()
    for img, imgs_dir, lbls, split in all_images:
        label = _label_path(img, imgs_dir, lbls)
        boxes = []
        if label is not None:
            label_files += 1
            rel = osp.relpath(label, root)
            with open(label, errors='replace') as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        cls, box = _parse_yolo_line(line)
                    except ValueError as err:
                        report['malformed_annotation'].append(f'{rel}:{n} ({err})')
                        continue
                    seen_ids.add(cls)
                    if names is not None and cls >= len(names):
                        report['unknown_class'].append(
                            f'{rel}:{n} (class id {cls}; {names_src} has {len(names)} names)')
                        continue
                    boxes.append(dict(name=names[cls] if names else f'class{cls}', bbox=box,
                                      ignore=False, where=f'{rel}:{n}', normalised=True))
        images.append(_image(img, boxes))
        images[-1]['split'] = split
    if label_files == 0:
        raise DatasetError(f'{root}: no YOLO label files (labels/*.txt, one per image, lines '
                           f'"class cx cy w h") for any of the {len(images)} images; export the '
                           'labels in YOLO format')
    if names is None:
        names_src = (f'none found (no data.yaml, classes.txt or obj.names): classes named '
                     f'class0..class{max(seen_ids) if seen_ids else 0} by id; give the names '
                     'with --classes or a classes.txt')
    # splits: darknet list files, else the sub-split folders
    index = _ImageIndex(root)
    by_path = {im['path']: i for i, im in enumerate(images)}
    lists = {}
    for f in _listdir(root):
        stem, ext = osp.splitext(f)
        if ext.lower() == '.txt' and stem.lower() in SPLIT_DIR_NAMES and not any(
                osp.isfile(osp.join(root, stem + e)) for e in IMAGE_EXTS):
            with open(osp.join(root, f)) as fh:
                first = fh.readline().split()
            if first and not _is_number_line(first):
                lists[stem.lower()] = osp.join(root, f)
    splits, desc = None, 'no split files'
    if lists:
        train_keys = [k for k in lists if k in TRAIN_NAMES]
        test_keys = ([k for k in lists if k in VAL_NAMES] or [k for k in lists if k in TEST_NAMES])
        if not train_keys or not test_keys:
            names = _shown([osp.basename(p) for p in lists.values()])
            raise DatasetError(f'{root} has the list file(s) {names} '
                               'but not both a training (train.txt) and a test list (val.txt or '
                               'test.txt); add the missing one or remove the lists to split at '
                               'random with --split-seed')
        splits = {}
        for part, keys in (('train', train_keys), ('test', test_keys)):
            ids = []
            for key in keys:
                found, missing = _read_list(lists[key], root, index)
                missing += [p for p in found if osp.abspath(p) not in by_path]
                if missing:
                    raise DatasetError(
                        f'{osp.basename(lists[key])} names {len(missing)} image(s) that are not '
                        f'in {root}: {_shown(missing)}; fix the paths (relative to the dataset '
                        'folder) or remove those lines')
                ids += [by_path[osp.abspath(p)] for p in found]
            splits[part] = list(dict.fromkeys(ids))
        desc = (f"list files {'+'.join(osp.basename(lists[k]) for k in train_keys)} (train) and "
                f"{'+'.join(osp.basename(lists[k]) for k in test_keys)} (test)")
    elif any(im['split'] for im in images):
        present = sorted({im['split'] for im in images if im['split']})
        test_set = ([s for s in present if s in VAL_NAMES] or [s for s in present
                                                               if s in TEST_NAMES])
        train_set = [s for s in present if s in TRAIN_NAMES]
        if not test_set or not train_set:
            raise DatasetError(f'{root}: the sub-split folders {present} lack a training (train/) '
                               'or a test (val/ or test/) folder; add it, or put all images in '
                               'images/ (and labels in labels/) to split at random')
        splits = {'train': [i for i, im in enumerate(images) if im['split'] in train_set],
                  'test': [i for i, im in enumerate(images) if im['split'] in test_set]}
        desc = f"sub-folders {'+'.join(train_set)} (train) and {'+'.join(test_set)} (test)"
    return images, splits, desc, names or [], names_src


def _is_number_line(parts: Sequence[str]) -> bool:
    try:
        [float(p) for p in parts]
        return True
    except ValueError:
        return False


def _imread_quiet(path: str):
    """cv2.imread (unchanged depth) without OpenCV's own log lines for a broken file: an
    unreadable image is reported once, in the summary."""
    log = getattr(getattr(cv2, 'utils', None), 'logging', None)
    if log is None:
        return cv2.imread(path, cv2.IMREAD_UNCHANGED)
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        return cv2.imread(path, cv2.IMREAD_UNCHANGED)
    finally:
        log.setLogLevel(level)


def read_dataset(root: str, classes: Optional[Sequence[str]] = None, layout: Optional[str] = None
                 ) -> dict:
    """Read a dataset folder: ``layout``, ``images`` (records with pixel boxes, unreadable and
    empty boxes already skipped), ``splits`` (``{'train': [i], 'test': [i]}`` or None),
    ``split_source``, ``class_names_source`` and ``report`` (skipped items by kind)."""
    root = osp.abspath(root)
    layout = layout or detect_layout(root)
    if layout not in LAYOUTS:
        raise DatasetError(f'unknown layout {layout!r}; use one of {LAYOUTS}')
    report = _new_report()
    names_src, order = 'the annotations', []
    if layout == 'voc':
        images, splits, desc = _read_voc(root, report)
    elif layout == 'coco':
        images, splits, desc, order = _read_coco(root, report)
        names_src = 'the json categories'
    else:
        images, splits, desc, order, names_src = _read_yolo(root, report, classes)
        if not order:  # no names: class<id>, by id
            order = sorted({b['name'] for im in images for b in im['boxes']},
                           key=lambda n: int(n[5:]))
    # Decode every image once: its true size (for YOLO's normalised boxes, missing VOC sizes) and
    # whether it is readable; unreadable ones are left out of both splits.
    keep = []
    for i, im in enumerate(images):
        img = _imread_quiet(im['path'])
        if img is None or img.size == 0:
            report['unreadable_image'].append(osp.relpath(im['path'], root))
            continue
        height, width = img.shape[:2]
        im['width'], im['height'] = width, height
        boxes = []
        for b in im['boxes']:
            x1, y1, x2, y2 = b['bbox']
            if b.pop('normalised', False):
                x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
            x1, y1, x2, y2 = max(x1, 0.), max(y1, 0.), min(x2, float(width)), min(y2, float(height))
            if x2 - x1 < 1 or y2 - y1 < 1:
                report['invalid_box'].append(f"{b['where']} ({[round(v, 1) for v in b['bbox']]} "
                                             f'in {width}x{height})')
                continue
            b['bbox'] = [x1, y1, x2, y2]
            boxes.append(b)
        im['boxes'] = boxes
        keep.append(i)
    remap = {old: new for new, old in enumerate(keep)}
    images = [images[i] for i in keep]
    if splits is not None:
        splits = {k: [remap[i] for i in v if i in remap] for k, v in splits.items()}
    return dict(root=root, layout=layout, images=images, splits=splits, split_source=desc,
                class_names_source=names_src, class_order=list(order), report=report)


# ------------------------------------------------------------------------------ conversion
def _to_coco(images: Sequence[dict], ids: Sequence[int], classes: Sequence[str], root: str,
             split: str) -> dict:
    cat = {n: i + 1 for i, n in enumerate(classes)}
    out_images, anns = [], []
    for i in ids:
        im = images[i]
        image_id = len(out_images) + 1
        out_images.append(dict(id=image_id, file_name=osp.relpath(im['path'], root).replace(
            os.sep, '/'), width=im['width'], height=im['height']))
        for b in im['boxes']:
            if b['name'] not in cat:
                continue
            x1, y1, x2, y2 = b['bbox']
            anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=cat[b['name']],
                             bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2),
                                   round(y2 - y1, 2)],
                             area=round((x2 - x1) * (y2 - y1), 2), iscrowd=int(b['ignore'])))
    return dict(info=dict(description=f'{split} split of {root} (mmlightbb prepare_dataset)',
                          image_root=root),
                images=out_images, annotations=anns,
                categories=[dict(id=i + 1, name=n, supercategory='none')
                            for i, n in enumerate(classes)])


def _write_if_changed(obj: dict, path: str) -> bool:
    """Write ``obj`` as json atomically unless the file already holds exactly it."""
    text = json.dumps(obj, sort_keys=True)
    if osp.isfile(path):
        with open(path) as f:
            if f.read() == text:
                return False
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def prepare_dataset(root: str, out_dir: str, classes: Optional[Sequence[str]] = None,
                    val_ratio: float = 0.2, split_seed: int = 0, min_test_images: int = 1,
                    min_train_images: int = 1, layout: Optional[str] = None) -> dict:
    """Convert a dataset folder to ``out_dir/train.json`` + ``out_dir/test.json`` (COCO).

    Args:
        root: the dataset folder (VOC, COCO or YOLO layout, see the module doc).
        out_dir: where the json files and ``dataset.json`` (this summary) go.
        classes: keep only these classes, in this order (default: every annotated class, in the
            order of the class list (COCO categories, YOLO names) or sorted (VOC)); a name the
            annotations do not contain is an error.
        val_ratio, split_seed: the seeded random split when the folder has none.
        min_test_images, min_train_images: fewer images in a split is an error (e.g. the batch
            size: a batch larger than the test set cannot be filled).

    Returns:
        dict (also written to ``out_dir/dataset.json``): ``root``, ``layout``, ``classes``,
        ``class_names_source``, ``split`` (how the split was made), ``train``/``test``
        (``file``, ``images``, ``boxes``, ``per_class``), ``image_size`` (median width and
        height), ``report`` (skipped items by kind), ``fingerprint`` (hash of both json files).
    """
    if not 0 < val_ratio < 1:
        raise DatasetError(f'--val-ratio must be between 0 and 1 (the share of images in the test '
                           f'split), got {val_ratio}')
    data = read_dataset(root, classes, layout)
    root, images, report = data['root'], data['images'], data['report']
    if not images:
        raise DatasetError(f'{root}: no readable image ({len(report["unreadable_image"])} '
                           f'unreadable, {len(report["missing_image"])} missing); check the files')
    counts: Dict[str, int] = {}
    for im in images:
        for b in im['boxes']:
            counts[b['name']] = counts.get(b['name'], 0) + 1
    if not counts:
        problems = '; '.join(f'{len(v)} {k.replace("_", " ")}' for k, v in report.items() if v)
        raise DatasetError(f'{root}: the annotations hold no boxes ({len(images)} images'
                           f"{'; skipped: ' + problems if problems else ''}); annotate objects "
                           'first (empty label files and xml files without <object> are '
                           'background images)')
    # the class list's order (COCO categories by id, YOLO names by id), else sorted (VOC)
    order = data['class_order']
    found = [c for c in order if c in counts] + sorted(c for c in counts if c not in order)
    if classes:
        classes = [str(c) for c in classes]
        unknown = [c for c in classes if c not in counts]
        if unknown:
            raise DatasetError(f"--classes names {_shown(unknown)}, which the annotations of "
                               f'{root} do not contain; the annotated classes are {found} '
                               '(exact spelling; leave --classes out to use all of them)')
        if len(set(classes)) != len(classes):
            raise DatasetError(f'--classes names a class twice: {classes}')
        dropped = [c for c in found if c not in classes]
        for c in dropped:
            report['dropped_class'].append(f'{c} ({counts[c]} boxes; not in --classes)')
    else:
        classes = found
    # split
    if data['splits'] is None:
        order = sorted(range(len(images)), key=lambda i: images[i]['path'])
        random.Random(split_seed).shuffle(order)
        n_test = max(1, int(round(val_ratio * len(images))))
        if len(images) < 2:
            raise DatasetError(f'{root} has {len(images)} usable image; a comparison needs at '
                               'least one training and one test image')
        n_test = min(n_test, len(images) - 1)
        splits = {'test': sorted(order[:n_test]), 'train': sorted(order[n_test:])}
        split_desc = (f'seeded random split (--split-seed {split_seed}, --val-ratio {val_ratio}: '
                      f'{n_test} of {len(images)} images in the test split)')
    else:
        splits, split_desc = data['splits'], data['split_source']
    os.makedirs(out_dir, exist_ok=True)
    summary = dict(root=root, layout=data['layout'], classes=list(classes),
                   class_names_source=data['class_names_source'], split=split_desc)
    texts = []
    for part, minimum, opt in (('train', min_train_images, 'training'),
                               ('test', min_test_images, 'test')):
        coco = _to_coco(images, splits[part], classes, root, part)
        n_img = len(coco['images'])
        n_box = sum(1 for a in coco['annotations'] if not a['iscrowd'])
        if n_img < minimum:
            fix = ('raise --val-ratio or lower --batch-size' if part == 'test' else
                   'lower --val-ratio or --batch-size')
            raise DatasetError(f'the {opt} split has {n_img} image(s), fewer than the batch size '
                               f'{minimum} ({split_desc}); {fix}, or add images')
        if n_box == 0:
            raise DatasetError(f'the {opt} split has no box of the classes {list(classes)} '
                               f'({n_img} images; {split_desc}); put annotated images in it or '
                               'use a random split (--split-seed) by removing the split files')
        path = osp.join(out_dir, f'{part}.json')
        _write_if_changed(coco, path)
        texts.append(json.dumps(coco, sort_keys=True))
        per_class = {c: 0 for c in classes}
        for a in coco['annotations']:
            if not a['iscrowd']:
                per_class[classes[a['category_id'] - 1]] += 1
        summary[part] = dict(file=osp.abspath(path), images=n_img, boxes=n_box,
                             per_class=per_class)
    summary['image_size'] = dict(
        width=int(statistics.median(im['width'] for im in images)),
        height=int(statistics.median(im['height'] for im in images)))
    summary['report'] = {k: v for k, v in report.items() if v}
    summary['fingerprint'] = hashlib.sha1('\n'.join(texts).encode()).hexdigest()[:16]
    _write_if_changed(summary, osp.join(out_dir, 'dataset.json'))
    return summary


def format_summary(summary: dict, max_names: int = MAX_NAMES) -> List[str]:
    """Lines describing a :func:`prepare_dataset` result (what was found and what was skipped)."""
    tr, te = summary['train'], summary['test']
    lines = [f"dataset: {summary['root']} ({summary['layout']} layout), "
             f"{len(summary['classes'])} classes {summary['classes']} "
             f"(names from {summary['class_names_source']})",
             f"split: {summary['split']}: train {tr['images']} images / {tr['boxes']} boxes, "
             f"test {te['images']} images / {te['boxes']} boxes; median image "
             f"{summary['image_size']['width']}x{summary['image_size']['height']}"]
    for kind, names in summary['report'].items():
        lines.append(f'skipped {len(names)} {kind.replace("_", " ")}(s): '
                     f'{_shown(names, max_names)}')
    return lines
