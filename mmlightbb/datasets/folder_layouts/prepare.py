"""Any layout to COCO json: :func:`detect_layout`, :func:`read_dataset` (one of the readers of
:mod:`.voc`, :mod:`.coco` and :mod:`.yolo`, then every image decoded once), the split, the checks,
:func:`prepare_dataset` (the json files) and :func:`format_summary`.

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
import hashlib
import json
import os
import os.path as osp
import random
import statistics
from typing import Dict, List, Optional, Sequence

import cv2

from ...engine.fileio import atomic_write
from .coco import _coco_jsons, _read_coco
from .common import MAX_NAMES, DatasetError, _listdir, _shown
from .voc import _read_voc, _voc_ann_dir
from .yolo import _read_yolo, _yolo_pairs

LAYOUTS = ('voc', 'coco', 'yolo')


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
        'Move the files into one of these layouts (docs/comparison.md)')


def _new_report() -> Dict[str, List[str]]:
    return dict(malformed_annotation=[], invalid_box=[], unknown_class=[], missing_image=[],
                unreadable_image=[], dropped_class=[])


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
    keep = decode_images(images, root, report)
    remap = {old: new for new, old in enumerate(keep)}
    images = [images[i] for i in keep]
    if splits is not None:
        splits = {k: [remap[i] for i in v if i in remap] for k, v in splits.items()}
    return dict(root=root, layout=layout, images=images, splits=splits, split_source=desc,
                class_names_source=names_src, class_order=list(order), report=report)


def decode_images(images: Sequence[dict], root: str, report: Dict[str, List[str]]) -> List[int]:
    """Decode every image once: its true size (for YOLO's normalised boxes, missing VOC sizes),
    its boxes clipped to it (under a pixel wide or high: ``report['invalid_box']``), in place.
    Returns the indices of the readable images; the others go to ``report['unreadable_image']``
    (path relative to ``root``), to be left out of every split."""
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
    return keep


# ------------------------------------------------------------------------------ conversion
def to_coco(images: Sequence[dict], ids: Sequence[int], classes: Sequence[str], root: str,
            description: str) -> dict:
    """COCO dict of ``images[ids]`` (``file_name`` relative to ``root``); boxes of other classes
    are left out."""
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
    return dict(info=dict(description=description, image_root=root),
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
    atomic_write(path, text)
    return True


def prepare_dataset(root: str, out_dir: str, classes: Optional[Sequence[str]] = None,
                    val_ratio: float = 0.2, split_seed: int = 0, min_test_images: int = 1,
                    min_train_images: int = 1, layout: Optional[str] = None) -> dict:
    """Convert a dataset folder to ``out_dir/train.json`` + ``out_dir/test.json`` (COCO).

    Args:
        root: the dataset folder (VOC, COCO or YOLO layout, see the package doc).
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
        coco = to_coco(images, splits[part], classes, root,
                       f'{part} split of {root} (mmlightbb prepare_dataset)')
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
