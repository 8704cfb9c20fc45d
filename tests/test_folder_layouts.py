"""mmlightbb.datasets.folder_layouts: VOC, COCO and YOLO-txt folders -> COCO json, the split, the
classes, what is skipped, and one clear DatasetError for each bad input, on tiny folders of
each layout (helpers.make_samples, write_voc, write_coco, write_yolo).
"""
import json
import os
import os.path as osp

import pytest
from helpers import make_samples, write_coco, write_voc, write_yolo


@pytest.fixture(scope='module')
def fl():
    from mmlightbb.datasets import folder_layouts
    return folder_layouts


def _load(path):
    with open(path) as f:
        return json.load(f)


def _boxes_by_file(coco):
    files = {im['id']: im['file_name'] for im in coco['images']}
    cats = {c['id']: c['name'] for c in coco['categories']}
    out = {}
    for a in coco['annotations']:
        out.setdefault(osp.basename(files[a['image_id']]), []).append(
            (cats[a['category_id']], *[round(v) for v in a['bbox']]))
    return out


def test_voc_png_seeded_split_one_class(fl, tmp_path):
    samples = make_samples(10, ('ship', ))
    root = write_voc(str(tmp_path / 'voc'), samples)
    assert fl.detect_layout(root) == 'voc'
    s = fl.prepare_dataset(root, str(tmp_path / 'out'), val_ratio=0.3, split_seed=1)
    assert s['classes'] == ['ship'] and s['layout'] == 'voc'
    assert (s['train']['images'], s['test']['images']) == (7, 3)
    assert 'seeded random split (--split-seed 1' in s['split']
    train, test = _load(s['train']['file']), _load(s['test']['file'])
    names = {im['file_name'] for im in train['images']} | {im['file_name'] for im in test['images']}
    assert len(names) == 10 and all(n.startswith('JPEGImages/') and n.endswith('.png')
                                    for n in names)
    assert train['info']['image_root'] == root
    # boxes: VOC's 1-based corners minus one -> the drawn pixel box
    got = {**_boxes_by_file(train), **_boxes_by_file(test)}
    c, x1, y1, x2, y2 = samples[0][1][0]
    assert (c, x1, y1, x2 - x1, y2 - y1) in got['img_000.png']
    # the same seed gives the same split; another seed another one
    again = fl.prepare_dataset(root, str(tmp_path / 'out2'), val_ratio=0.3, split_seed=1)
    other = fl.prepare_dataset(root, str(tmp_path / 'out3'), val_ratio=0.3, split_seed=2)
    assert again['fingerprint'] == s['fingerprint'] != other['fingerprint']


def test_voc_split_files_and_classes(fl, tmp_path):
    samples = make_samples(8, ('ship', 'plane'), seed=3)
    root = write_voc(str(tmp_path / 'voc'), samples, ext='.bmp',
                     splits={'train': range(6), 'val': [6, 7]})
    s = fl.prepare_dataset(root, str(tmp_path / 'out'))
    assert s['split'].startswith('split files ImageSets/Main/train.txt (train) and val.txt')
    assert (s['train']['images'], s['test']['images']) == (6, 2)
    assert s['classes'] == ['plane', 'ship']  # VOC: sorted
    # --classes picks and orders; the other class is dropped and reported
    s2 = fl.prepare_dataset(root, str(tmp_path / 'out2'), classes=['ship'])
    assert s2['classes'] == ['ship'] and 'dropped_class' in s2['report']
    assert all(a['category_id'] == 1 for a in _load(s2['train']['file'])['annotations'])


def test_coco_train_val_jsons_multi_class(fl, tmp_path):
    classes = ('rect', 'disc', 'triangle')
    samples = make_samples(9, classes, seed=4)
    root = write_coco(str(tmp_path / 'coco'), samples, classes,
                      parts={'instances_train': range(6), 'instances_val': range(6, 9)})
    assert fl.detect_layout(root) == 'coco'
    s = fl.prepare_dataset(root, str(tmp_path / 'out'))
    assert s['classes'] == list(classes)  # the categories' order, ids remapped to 1..3
    assert (s['train']['images'], s['test']['images']) == (6, 3)
    assert 'instances_train.json (train)' in s['split']
    test = _load(s['test']['file'])
    c, x1, y1, x2, y2 = samples[6][1][0]
    assert (c, x1, y1, x2 - x1, y2 - y1) in _boxes_by_file(test)['0006.png']
    assert [c['id'] for c in test['categories']] == [1, 2, 3]


def test_coco_single_json_is_split(fl, tmp_path):
    root = write_coco(str(tmp_path / 'coco'), make_samples(5, ('a', 'b')), ('a', 'b'))
    s = fl.prepare_dataset(root, str(tmp_path / 'out'), val_ratio=0.2)
    assert (s['train']['images'], s['test']['images']) == (4, 1)


@pytest.mark.parametrize('names_file', ['classes.txt', 'obj.names', 'data.yaml'])
def test_yolo_flat_and_sub_splits(fl, tmp_path, names_file):
    classes = ('mine', 'rock-like')
    samples = make_samples(8, classes, seed=5)
    sub = {'train': range(6), 'val': [6, 7]} if names_file == 'data.yaml' else None
    root = write_yolo(str(tmp_path / 'yolo'), samples, classes, sub_splits=sub,
                      names_file=names_file)
    assert fl.detect_layout(root) == 'yolo'
    s = fl.prepare_dataset(root, str(tmp_path / 'out'), val_ratio=0.25)
    assert s['classes'] == list(classes) and names_file in s['class_names_source']
    if sub:
        assert s['split'] == 'sub-folders train (train) and val (test)'
    assert (s['train']['images'], s['test']['images']) == (6, 2)
    coco = {**_boxes_by_file(_load(s['train']['file'])),
            **_boxes_by_file(_load(s['test']['file']))}
    c, x1, y1, x2, y2 = samples[7][1][0]
    got = [b for b in coco['0007.jpg'] if b[0] == c]
    assert any(max(abs(g - e) for g, e in zip(b[1:], (x1, y1, x2 - x1, y2 - y1))) <= 1
               for b in got)


def test_yolo_roboflow_layout_background_and_skips(fl, tmp_path):
    classes = ('wreck', )
    samples = make_samples(6, classes, seed=6)
    root = tmp_path / 'rf'
    for split, ids in (('train', range(4)), ('valid', [4, 5])):
        write_yolo(str(root / split), [samples[i] for i in ids], classes, names_file=None)
    (root / 'data.yaml').write_text("train: ../train/images\nval: ../valid/images\nnc: 1\n"
                                    "names: ['wreck']\n")
    (root / 'train' / 'labels' / '0000.txt').write_text('0 0.5 0.5 0.2 0.2\nbad line\n'
                                                       '3 0.5 0.5 0.1 0.1\n0 40 40 10 10\n')
    os.remove(root / 'train' / 'labels' / '0001.txt')  # no label file: a background image
    (root / 'train' / 'images' / 'broken.jpg').write_bytes(b'not a jpeg')
    s = fl.prepare_dataset(str(root), str(tmp_path / 'out'))
    assert s['split'] == 'sub-folders train (train) and valid (test)'
    assert s['train']['images'] == 4 and s['test']['images'] == 2  # broken.jpg left out
    rep = s['report']
    assert len(rep['malformed_annotation']) == 2  # "bad line" and pixel coordinates
    assert len(rep['unknown_class']) == 1 and 'class id 3' in rep['unknown_class'][0]
    assert rep['unreadable_image'] == [osp.join('train', 'images', 'broken.jpg')]
    lines = fl.format_summary(s)
    assert any(line.startswith('skipped 1 unreadable image(s): train/images/broken.jpg')
               for line in lines)


def test_yolo_without_names_uses_ids_or_classes_option(fl, tmp_path):
    samples = make_samples(4, ('a', 'b'), seed=7)
    root = write_yolo(str(tmp_path / 'y'), samples, ('a', 'b'), names_file=None)
    s = fl.prepare_dataset(root, str(tmp_path / 'o1'))
    assert s['classes'] == ['class0', 'class1'] and 'none found' in s['class_names_source']
    s = fl.prepare_dataset(root, str(tmp_path / 'o2'), classes=['a', 'b'])
    assert s['classes'] == ['a', 'b']


# ------------------------------------------------------------------------------ bad inputs
def _error(fl, root, out, **kw):
    with pytest.raises(fl.DatasetError) as info:
        fl.prepare_dataset(str(root), str(out), **kw)
    msg = str(info.value)
    assert '\n' not in msg
    return msg


def test_bad_inputs(fl, tmp_path):
    out = tmp_path / 'out'
    # neither layout
    (tmp_path / 'misc').mkdir()
    (tmp_path / 'misc' / 'notes.md').write_text('hi')
    msg = _error(fl, tmp_path / 'misc', out)
    assert 'is in none of the known layouts' in msg and 'notes.md' in msg
    assert 'dataset folder not found' in _error(fl, tmp_path / 'nope', out)
    # no annotations
    (tmp_path / 'emptyvoc' / 'Annotations').mkdir(parents=True)
    (tmp_path / 'emptyvoc' / 'JPEGImages').mkdir()
    assert 'holds no .xml annotation files' in _error(fl, tmp_path / 'emptyvoc', out)
    # no boxes
    samples = [(img, []) for img, _ in make_samples(4)]
    root = write_voc(str(tmp_path / 'noboxes'), samples)
    assert 'the annotations hold no boxes' in _error(fl, root, out)
    # a split file naming missing images
    root = write_voc(str(tmp_path / 'split'), make_samples(4), splits={'train': [0, 1, 2],
                                                                       'val': [3]})
    with open(osp.join(root, 'ImageSets', 'Main', 'val.txt'), 'a') as f:
        f.write('img_999\n')
    msg = _error(fl, root, out)
    assert 'ImageSets/Main/val.txt names 1 image(s) with no annotation file' in msg
    assert 'img_999' in msg
    os.remove(osp.join(root, 'JPEGImages', 'img_001.png'))
    msg = _error(fl, root, out)
    assert 'train.txt names 1 image(s) with no image' in msg and 'img_001' in msg
    # COCO json naming a missing image
    root = write_coco(str(tmp_path / 'cm'), make_samples(3), ('rect', ))
    os.remove(osp.join(root, 'images', '0001.png'))
    assert "names 1 image(s) that are not in" in _error(fl, root, out)
    # fewer test images than the batch
    root = write_voc(str(tmp_path / 'small'), make_samples(6))
    msg = _error(fl, root, out, min_test_images=4)
    assert 'the test split has 1 image(s), fewer than the batch size 4' in msg
    assert '--val-ratio' in msg and '--batch-size' in msg
    # classes the annotations do not contain
    msg = _error(fl, root, out, classes=['rect', 'mine'])
    assert "--classes names mine, which the annotations" in msg and "['rect']" in msg
    # test split without boxes
    samples = make_samples(4)
    samples[3] = (samples[3][0], [])
    root = write_voc(str(tmp_path / 'nobox_test'), samples, splits={'train': [0, 1, 2],
                                                                    'val': [3]})
    assert 'the test split has no box' in _error(fl, root, out)
