"""Side-scan sonar data: synthetic generator, SonarDataset, image loading, VOC -> COCO."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mmlightbb.datasets import (SONAR_CLASSES, SonarDataset, convert_voc, make_sonar_dataset,
                                render_sonar_image, to_bgr_uint8, voc_to_coco)
from mmlightbb.datasets.synthetic_sonar import _occluded

from helpers import REPO

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True)]


def files_bytes(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(osp.join(dirpath, name), 'rb') as f:
                out[osp.relpath(osp.join(dirpath, name), root)] = f.read()
    return out


def scenes(seed, num, size=256):
    return [render_sonar_image(np.random.default_rng([seed, 0, i]), size) for i in range(num)]


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('sonar') / 'synth')
    make_sonar_dataset(out, num_train=6, num_val=3, size=128, seed=0)
    return out


def build_dataset(**kwargs):
    from mmengine.registry import init_default_scope
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    return DATASETS.build(dict(type='SonarDataset', **{'pipeline': PIPELINE, **kwargs}))


# ----------------------------------------------------------------------------- generator


def test_generator_is_deterministic(tmp_path, synth):
    again = str(tmp_path / 'again')
    make_sonar_dataset(again, num_train=6, num_val=3, size=128, seed=0)
    assert files_bytes(again) == files_bytes(synth)
    other = str(tmp_path / 'other')
    make_sonar_dataset(other, num_train=6, num_val=3, size=128, seed=1)
    a, b = files_bytes(synth), files_bytes(other)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.startswith('images'))


def test_splits_and_coco_json(synth):
    for split, num in (('train', 6), ('val', 3)):
        coco = COCO(osp.join(synth, 'annotations', f'{split}.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(SONAR_CLASSES)
        assert len(coco.getImgIds()) == num
        for img in coco.loadImgs(coco.getImgIds()):
            assert img['file_name'].startswith(split)
            pixels = cv2.imread(osp.join(synth, 'images', img['file_name']), cv2.IMREAD_UNCHANGED)
            assert pixels.shape == (128, 128) and pixels.dtype == np.uint8  # 8-bit single channel
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann['bbox']
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
    with open(osp.join(synth, 'meta.json')) as f:
        assert json.load(f)['num_val'] == 3


def test_json_boxes_are_the_targets_and_clutter_is_not_annotated(synth):
    coco = COCO(osp.join(synth, 'annotations', 'train.json'))
    num_rocks = 0
    for i in range(6):
        scene = render_sonar_image(np.random.default_rng([0, 0, i]), 128)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[i + 1]))
        assert [a['bbox'] for a in anns] == [t['bbox'] for t in scene['targets']]
        assert [SONAR_CLASSES[a['category_id'] - 1] for a in anns] == \
            [t['category'] for t in scene['targets']]
        for cx, cy in scene['clutter']:
            num_rocks += 1
            assert not any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in
                           (a['bbox'] for a in anns))
    assert num_rocks > 0


def test_nadir_band_is_darker_than_the_seabed():
    for scene in scenes(3, 6):
        img, alt = scene['image'].astype(np.float32), scene['altitude']
        cols = np.abs(np.arange(256) + 0.5 - 128)[None]
        nadir = img[cols < 0.8 * alt[:, None]].mean()
        seabed = img[cols > 1.5 * alt[:, None]].mean()
        assert nadir < 0.5 * seabed, (nadir, seabed)


def test_shadows_are_dark_and_point_away_from_the_track():
    checked = set()
    for scene in scenes(4, 12):
        img = scene['image'].astype(np.float32)
        for t in scene['targets']:
            if t['shadow'].sum() < 5:  # a victim seen steeply: hardly any shadow
                continue
            assert img[t['shadow']].mean() < 0.6 * img[t['mask']].mean(), t['category']
            shadow_x = np.nonzero(t['shadow'])[1].mean()
            object_x = np.nonzero(t['mask'])[1].mean()
            assert (shadow_x < object_x) if t['side'] == 'port' else (shadow_x > object_x)
            checked.add((t['category'], t['side']))
    assert {c for c, _ in checked} == set(SONAR_CLASSES)
    assert {s for _, s in checked} == {'port', 'starboard'}


def test_shadow_length_grows_with_range_and_height():
    def shadow_length(x0, height, alt=20.0):
        z = np.zeros((1, 200), np.float32)
        z[0, x0:x0 + 3] = height
        hidden = _occluded(z, np.array([alt], np.float32))[0]
        return int(hidden[x0 + 3:].sum())

    assert shadow_length(80, 4) == pytest.approx((82.5 * 4) / (20 - 4), abs=1.5)
    assert shadow_length(40, 4) < shadow_length(80, 4) < shadow_length(80, 8)
    assert shadow_length(80, 0.0) == 0


def test_box_shadow_option_boxes_object_and_shadow():
    scene = render_sonar_image(np.random.default_rng([0, 0, 2]), 256, box_shadow=True)
    for t in scene['targets']:
        x, y, w, h = t['bbox']
        ys, xs = np.nonzero(t['mask'] | t['shadow'])
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_make_dataset_skips_same_settings_and_never_leaves_partial_data(tmp_path, monkeypatch):
    out = str(tmp_path / 'ds')
    make_sonar_dataset(out, num_train=2, num_val=1, size=64)
    stamp = os.stat(osp.join(out, 'meta.json')).st_mtime_ns
    assert make_sonar_dataset(out, num_train=2, num_val=1, size=64)['skipped']
    assert os.stat(osp.join(out, 'meta.json')).st_mtime_ns == stamp
    # Other settings replace our dataset.
    summary = make_sonar_dataset(out, num_train=3, num_val=1, size=64)
    assert not summary['skipped'] and len(os.listdir(osp.join(out, 'images'))) == 4
    # An interrupted run leaves neither a dataset nor temporary folders.
    calls = []

    def flaky_imwrite(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return cv2.imwrite(*args)

    monkeypatch.setattr('mmlightbb.datasets.synthetic_sonar.cv2.imwrite', flaky_imwrite)
    with pytest.raises(KeyboardInterrupt):
        make_sonar_dataset(str(tmp_path / 'cut'), num_train=3, num_val=1, size=64)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ['ds']
    # A folder that is not ours is never replaced.
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep')
    with pytest.raises(FileExistsError, match='meta.json'):
        make_sonar_dataset(str(tmp_path / 'mine'), num_train=1, num_val=1, size=64)


def test_make_sonar_dataset_cli(tmp_path):
    out = str(tmp_path / 'cli')
    cmd = [sys.executable, 'tools/make_sonar_dataset.py', '--out', out, '--num-train', '2',
           '--num-val', '1', '--size', '64', '--seed', '5']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'train: 2 images' in proc.stdout and osp.isfile(osp.join(out, 'annotations/val.json'))


# ----------------------------------------------------------------------------- SonarDataset


def test_sonar_dataset_loads_the_synthetic_set(synth):
    ds = build_dataset(data_root=synth, ann_file='annotations/val.json',
                       data_prefix=dict(img='images/'))
    assert isinstance(ds, SonarDataset) and len(ds) == 3
    assert ds.metainfo['classes'] == SONAR_CLASSES
    coco = COCO(osp.join(synth, 'annotations', 'val.json'))
    for i in range(len(ds)):
        item = ds[i]
        assert item['img'].shape == (128, 128, 3) and item['img'].dtype == np.uint8
        x, y, w, h = np.array([a['bbox'] for a in coco.loadAnns(coco.getAnnIds(
            imgIds=[item['img_id']]))]).reshape(-1, 4).T
        assert np.allclose(item['gt_bboxes'].numpy(), np.stack([x, y, x + w, y + h], 1))


def test_config_metainfo_overrides_the_classes(synth):
    ds = build_dataset(data_root=synth, ann_file='annotations/train.json',
                       data_prefix=dict(img='images/'), metainfo=dict(classes=('victim', )))
    labels = [inst['bbox_label'] for info in ds.data_list for inst in info['instances']]
    assert ds.metainfo['classes'] == ('victim', ) and set(labels) <= {0}


def write_coco_images(root, images):
    """A one-box COCO set of the given {file name: pixels} images."""
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    entries, anns = [], []
    for i, (name, pixels) in enumerate(images.items()):
        assert cv2.imwrite(osp.join(root, 'images', name), pixels)
        entries.append(dict(id=i + 1, file_name=name, width=pixels.shape[1],
                            height=pixels.shape[0]))
        anns.append(dict(id=i + 1, image_id=i + 1, category_id=1, bbox=[4, 4, 10, 10], area=100,
                         iscrowd=0))
    with open(osp.join(root, 'ann.json'), 'w') as f:
        json.dump(dict(images=entries, annotations=anns,
                       categories=[dict(id=1, name='shipwreck')]), f)


def test_gray_png_16bit_tif_and_bmp_load_as_3_channel_uint8(tmp_path):
    gray = render_sonar_image(np.random.default_rng(0), 64)['image']
    twelve_bit = (gray.astype(np.uint16) * 16)  # 12-bit sonar samples in a 16-bit file
    write_coco_images(str(tmp_path), {'a.png': gray, 'b.tif': twelve_bit, 'c.bmp': gray,
                                      'd.tiff': gray})
    stock = build_dataset(data_root=str(tmp_path), ann_file='ann.json',
                          data_prefix=dict(img='images/'))
    imgs = {osp.basename(stock[i]['img_path']): stock[i]['img'] for i in range(len(stock))}
    for img in imgs.values():
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    for name in ('a.png', 'c.bmp', 'd.tiff'):
        assert np.array_equal(imgs[name][..., 0], gray)
    # The stock loader keeps the high byte only: 12-bit data comes out nearly black ...
    assert imgs['b.tif'].max() <= 15
    # ... LoadSonarImageFromFile scales it by its bit depth.
    sonar = build_dataset(data_root=str(tmp_path), ann_file='ann.json',
                          data_prefix=dict(img='images/'),
                          pipeline=[dict(type='LoadSonarImageFromFile'),
                                    dict(type='LoadAnnotations', with_bbox=True)])
    for i in range(len(sonar)):
        img = sonar[i]['img']
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert np.abs(img[..., 0].astype(int) - gray).max() <= 1


def test_to_bgr_uint8_bit_depths_and_channels():
    assert to_bgr_uint8(np.full((2, 2), 4095, np.uint16))[0, 0].tolist() == [255] * 3
    assert to_bgr_uint8(np.full((2, 2), 4095, np.uint16), bit_depth=16)[0, 0, 0] == 16
    assert to_bgr_uint8(np.full((2, 2), 0.5, np.float32))[0, 0, 0] == 255
    bgra = np.dstack([np.full((2, 2), v, np.uint8) for v in (1, 2, 3, 4)])
    assert to_bgr_uint8(bgra)[0, 0].tolist() == [1, 2, 3]


def test_missing_files_name_the_path_and_how_to_get_the_data(tmp_path, synth):
    with pytest.raises(FileNotFoundError) as e:
        build_dataset(data_root=str(tmp_path), ann_file='annotations/train.json',
                      data_prefix=dict(img='images/'))
    assert 'annotations/train.json' in str(e.value)
    assert 'make_sonar_dataset.py' in str(e.value) and 'voc2coco.py' in str(e.value)
    with pytest.raises(FileNotFoundError, match='no_such_dir'):
        build_dataset(data_root=synth, ann_file='annotations/train.json',
                      data_prefix=dict(img='no_such_dir/'))


def test_classes_matching_no_annotation_raise(synth):
    with pytest.raises(ValueError) as e:
        build_dataset(data_root=synth, ann_file='annotations/train.json',
                      data_prefix=dict(img='images/'), metainfo=dict(classes=('wreck', 'plane')))
    msg = str(e.value)
    assert "('wreck', 'plane')" in msg and all(c in msg for c in ('shipwreck', 'aircraft'))


# ----------------------------------------------------------------------------- voc2coco


def write_xml(path, filename, objects, size=(32, 24)):
    size_xml = (f'<size><width>{size[0]}</width><height>{size[1]}</height><depth>1</depth></size>'
                if size else '')
    objs = ''.join(
        f'<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>'
        f'<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>'
        for n, b, d in objects)
    fname = f'<filename>{filename}</filename>' if filename else ''
    with open(path, 'w') as f:
        f.write(f'<annotation>{fname}{size_xml}{objs}</annotation>')


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / 'SCTD'
    for d in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (root / d).mkdir(parents=True)
    img = np.full((24, 32), 90, np.uint8)
    ann, imgs = root / 'Annotations', root / 'JPEGImages'
    cv2.imwrite(str(imgs / 'a.jpg'), img)
    write_xml(ann / 'a.xml', 'a.jpg', [('ship', (2, 3, 12, 13), False),
                                       ('human', (20, 5, 25, 9), True)])
    cv2.imwrite(str(imgs / 'b.png'), img)  # the xml says b.jpg
    write_xml(ann / 'b.xml', 'b.jpg', [('plane', (1, 1, 30, 20), False)])
    cv2.imwrite(str(imgs / 'c.tif'), img.astype(np.uint16) * 256)
    write_xml(ann / 'c.xml', None, [('ship', (5, 5, 40, 30), False)], size=None)  # clipped
    (ann / 'd.xml').write_text('<annotation><object><name>ship</name>')  # malformed
    write_xml(ann / 'e.xml', 'e.jpg', [('ship', (2, 2, 8, 8), False)])  # no image
    cv2.imwrite(str(imgs / 'f.bmp'), img)
    write_xml(ann / 'f.xml', 'f.bmp', [('ship', (12, 3, 6, 9), False),  # xmax < xmin
                                       ('human', (3, 3, 9, 20), False)])
    (root / 'ImageSets/Main/train.txt').write_text('a\nb\nc\nd\n')
    (root / 'ImageSets/Main/val.txt').write_text('e\nf\ng\n')
    (root / 'ImageSets/Main/ship_train.txt').write_text('a  1\nb -1\n')  # per class: not a split
    return str(root)


def test_voc2coco_converts_splits_and_reports_what_it_skips(voc):
    result = convert_voc(voc)
    assert result['classes'] == ['human', 'plane', 'ship'] and set(result['splits']) == {
        'train', 'val'}
    report = result['report']
    assert report['malformed_xml'] == ['d.xml'] and report['missing_xml'] == ['g']
    assert report['missing_image'] == ['e (e.jpg)'] and len(report['invalid_box']) == 1
    train = COCO(osp.join(voc, 'annotations', 'train.json'))
    files = {i['file_name']: i for i in train.loadImgs(train.getImgIds())}
    assert set(files) == {'a.jpg', 'b.png', 'c.tif'}
    assert (files['c.tif']['width'], files['c.tif']['height']) == (32, 24)  # read from the image
    boxes = {(train.loadImgs(a['image_id'])[0]['file_name'], a['category_id']): a
             for a in train.loadAnns(train.getAnnIds())}
    assert boxes[('a.jpg', 3)]['bbox'] == [1, 2, 10, 10]  # mmdet's XMLDataset convention
    assert boxes[('a.jpg', 1)]['iscrowd'] == 1  # difficult
    assert boxes[('c.tif', 3)]['bbox'] == [4, 4, 28, 20]  # clipped to the image
    val = COCO(osp.join(voc, 'annotations', 'val.json'))
    assert [i['file_name'] for i in val.loadImgs(val.getImgIds())] == ['f.bmp']
    assert len(val.getAnnIds()) == 1


def test_voc2coco_classes_rename_and_loading_with_sonar_dataset(voc):
    coco, report = voc_to_coco(
        sorted(osp.join(voc, 'Annotations', f) for f in os.listdir(osp.join(voc, 'Annotations'))),
        osp.join(voc, 'JPEGImages'), classes=SONAR_CLASSES,
        rename=dict(ship='shipwreck', plane='aircraft', human='victim'))
    assert [c['name'] for c in coco['categories']] == list(SONAR_CLASSES)
    assert len(coco['annotations']) == 5 and not report['unknown_class']
    with open(osp.join(voc, 'all.json'), 'w') as f:
        json.dump(coco, f)
    ds = build_dataset(data_root=voc, ann_file='all.json', data_prefix=dict(img='JPEGImages/'))
    for i in range(len(ds)):
        assert ds[i]['img'].ndim == 3 and ds[i]['img'].shape[2] == 3
    _, report = voc_to_coco([osp.join(voc, 'Annotations', 'a.xml')], osp.join(voc, 'JPEGImages'),
                            classes=['ship'])
    assert report['unknown_class'] == ['a.xml#1 (human)']


def test_voc2coco_failure_keeps_existing_output(voc, monkeypatch):
    out = osp.join(voc, 'annotations')
    convert_voc(voc)
    before = files_bytes(out)
    with pytest.raises(ValueError, match='no valid box'):
        convert_voc(voc, classes=['submarine'])
    assert files_bytes(out) == before
    # A crash while writing the second split replaces neither file and leaves no temp file.
    import mmlightbb.datasets.voc2coco as v2c
    real_dump, calls = json.dump, []

    def failing_dump(obj, f):
        calls.append(1)
        if len(calls) == 2:
            raise OSError('disk full')
        real_dump(obj, f)

    monkeypatch.setattr(v2c.json, 'dump', failing_dump)
    with pytest.raises(OSError, match='disk full'):
        convert_voc(voc, rename=dict(ship='shipwreck'))
    assert files_bytes(out) == before


def test_voc2coco_cli(voc):
    proc = subprocess.run([sys.executable, 'tools/dataset_converters/voc2coco.py', voc, '--splits', 'train',
                           '--rename', 'ship=shipwreck'], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'skipped 1 malformed xml: d.xml' in proc.stdout
    assert "'shipwreck'" in proc.stdout and osp.isfile(osp.join(voc, 'annotations/train.json'))
    proc = subprocess.run([sys.executable, 'tools/dataset_converters/voc2coco.py', voc, '--classes', 'whale'],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and 'no valid box' in proc.stderr
