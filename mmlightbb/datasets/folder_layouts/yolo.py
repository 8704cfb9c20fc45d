"""The YOLO txt layout (also Roboflow's and darknet's): detection of the folder and its reader.

``yolo``: ``images/`` + ``labels/`` (the label of ``images/a/b.jpg`` is ``labels/a/b.txt``; a
``.txt`` next to the image also counts), lines ``class cx cy w h`` normalised to 0..1 (polygon
lines ``class x1 y1 x2 y2 ...`` give their bounding box). Sub-splits ``images/{train,val,test}``
or Roboflow's ``{train,valid,test}/{images,labels}``, or darknet lists ``train.txt``/``val.txt``/
``test.txt`` of image paths. Class names from ``data.yaml`` (``names:`` list or ``{id: name}``),
``classes.txt``, ``obj.names`` or another ``*.names`` (in the folder or its labels folder); an
image without a label file is a background image. Test split: ``val`` (``valid``) if present,
else ``test``.
"""
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import yaml

from .common import (IMAGE_EXTS, SPLIT_DIR_NAMES, TEST_NAMES, TRAIN_NAMES, VAL_NAMES,
                     DatasetError, _find_dir, _image, _ImageIndex, _is_image, _listdir, _shown,
                     _walk_images)


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
