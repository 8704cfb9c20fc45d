"""INT8 accuracy measured in the runtime, on two datasets of different image statistics: a YOLOX
detector's VOC mAP50 (and COCO mAP) in PyTorch fp32 and as OpenVINO (NNCF) and ONNX Runtime (QDQ,
per-channel) INT8 graphs, with the paired bootstrap interval of each INT8 - fp32 difference.

    python benchmarks/int8_accuracy.py [--data sonar shapes] [--work-dir work_dirs/int8_accuracy]
        [--backbone fasternet:t2] [--epochs 8] [--size 160] [--num-train 96] [--num-val 48]
        [--threads 2] [--quick] [--out r.json]

* ``sonar``: the demo's synthetic side-scan sonar set (grey, speckle, acoustic shadows, three
  object classes; ``make_sonar_dataset``; with the defaults the demo's 96 train / 48 test
  images). More test images (``--num-val``) narrow every interval; the training images, and so
  the trained weights, stay the same.
* ``shapes``: a synthetic colour set made here (:func:`make_shapes_dataset`): three classes of
  flat-coloured shapes (box, ring, triangle), 1-4 per image and overlapping, on smooth colour
  fields with a gradient and fine noise, slightly blurred and JPEG-compressed -- three
  correlated colour channels, sharp edges and no speckle, where the sonar set is one grey
  channel repeated.

For each dataset the run is trained and tested by the comparison (``compare_backbones``: the
demo's YOLOX schedule, PyTorch fp32 test with per-image detections), or reused when its folder
holds it. Each runtime's INT8 graph is then calibrated on the training images only (never the
test images) through the config's test pipeline, tested with mmdet's test loop and metrics on
its own detections (``test_metrics-<runtime>-int8.json`` and its detections beside the run's),
and its difference to PyTorch fp32 gets a 95 % interval from the same bootstrap draws of the
test images for both (paired), so that a drop is judged against the test set's noise.
``--quick``: the ``shapes`` set at 64 px, 12 train / 8 test images, FasterNet-T0, 1 epoch (a smoke
test of the script, not a measurement). Accuracy-controlled quantization (``--max-drop``) is not
run here: NNCF validates it on the
config's test set, which would tune on the images the result is reported on.
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile

import cv2
import numpy as np

from mmlightbb.analysis.comparison import compare_backbones
from mmlightbb.analysis.comparison.runs import Clock, test_in_runtime
from mmlightbb.analysis.comparison.testset import write_bootstrap
from mmlightbb.analysis.export import input_shape
from mmlightbb.analysis.quantize import QuantizationSettings, find_images, link_annotated_images
from mmlightbb.analysis.uncertainty import RESAMPLES, map_difference
from mmlightbb.datasets import make_sonar_dataset
from mmlightbb.engine import last_complete_checkpoint, load_config

RUNTIMES = ('openvino', 'onnxruntime')
SHAPE_CLASSES = ('box', 'ring', 'triangle')


def _smooth_field(rng, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse noise resized up."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def render_shapes_image(rng, size: int):
    """(BGR uint8 image, [(class, x1, y1, x2, y2)]) of the ``shapes`` set (module doc)."""
    base = rng.uniform(40, 200, 3)
    img = np.stack([base[c] + 70 * (_smooth_field(rng, size, 4) - 0.5) for c in range(3)], -1)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    img += 30 * (np.cos(angle) * ramp[None, :, None] + np.sin(angle) * ramp[:, None, None])
    boxes = []
    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(0, len(SHAPE_CLASSES)))
        w, h = (int(v) for v in rng.integers(size // 8, size // 3, 2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        hue = int(rng.integers(0, 180))
        color = cv2.cvtColor(np.uint8([[[hue, 200, int(rng.integers(120, 256))]]]),
                             cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
        mask = np.zeros((size, size), np.uint8)
        if SHAPE_CLASSES[k] == 'box':
            cv2.rectangle(mask, (x, y), (x + w - 1, y + h - 1), 1, -1)
        elif SHAPE_CLASSES[k] == 'ring':
            cv2.ellipse(mask, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 1,
                        max(2, min(w, h) // 5))
        else:
            pts = np.array([[x, y + h - 1], [x + w - 1, y + h - 1], [x + w // 2, y]], np.int32)
            cv2.fillPoly(mask, [pts], 1)
        img[mask > 0] = color
        ys, xs = np.nonzero(mask)
        boxes.append((SHAPE_CLASSES[k], int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                      int(ys.max()) + 1))
    img = cv2.GaussianBlur(img + rng.normal(0, 6, img.shape), (3, 3), 0.7)
    ok, jpg = cv2.imencode('.jpg', img.clip(0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR), boxes


def make_shapes_dataset(root: str, num_train: int = 96, num_val: int = 48, size: int = 160,
                        seed: int = 0) -> str:
    """The ``shapes`` set in the COCO layout (annotations/{train,val}.json, images/{train,val}/),
    made once (kept when ``annotations/val.json`` exists)."""
    if osp.isfile(osp.join(root, 'annotations', 'val.json')):
        return root
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    cats = [dict(id=k + 1, name=c) for k, c in enumerate(SHAPE_CLASSES)]
    for split, num in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        images, anns = [], []
        for i in range(num):
            img, boxes = render_shapes_image(rng, size)
            name = f'{split}/{i:04d}.jpg'
            cv2.imwrite(osp.join(root, 'images', name), img)
            images.append(dict(id=i + 1, file_name=name, width=size, height=size))
            anns += [dict(id=len(anns) + 1, image_id=i + 1,
                          category_id=SHAPE_CLASSES.index(c) + 1,
                          bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                          iscrowd=0) for c, x1, y1, x2, y2 in boxes]
        with open(osp.join(root, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return root


def measure(name: str, data: str, args) -> dict:
    out = osp.join(args.work_dir, name)
    res = compare_backbones(data, out, heads=['yolox'], backbones=[args.backbone],
                            epochs=args.epochs, size=args.size, threads=args.threads,
                            device='cpu')
    job = res['runs'][0]
    run_dir, summary = job['dir'], res['data']
    source = dict(config=osp.join(run_dir, job['name'] + '.py'),
                  checkpoint=last_complete_checkpoint(run_dir))
    with open(osp.join(run_dir, 'bootstrap.json')) as f:
        fp32 = json.load(f)
    rows = [dict(dataset=name, side='pytorch fp32', voc=fp32['pascal_voc/mAP']['value'],
                 voc_interval=fp32['pascal_voc/mAP']['interval'],
                 coco=(fp32.get('coco/bbox_mAP') or {}).get('value'))]
    clock = Clock(print, f'int8 {name}')
    cfg = load_config(source['config'])
    shape = input_shape(cfg, None, source['config'])
    with tempfile.TemporaryDirectory(prefix='mmlightbb-int8-accuracy-') as tmp:
        # the training split only: calibration never sees the test images
        settings = QuantizationSettings(link_annotated_images(summary['train']['file'],
                                                              summary['root'], tmp))
        calibrated = len(find_images(settings.calib, settings.calib_images))
        for backend in RUNTIMES:
            metrics = test_in_runtime(run_dir, source, backend, 'int8', shape, args.threads,
                                      clock, job['name'], settings)
            boot = write_bootstrap(run_dir, RESAMPLES, summary['test']['file'], summary['classes'],
                                   backend, 'int8')
            diff = map_difference(*(dict(map=b['pascal_voc/mAP']['value'],
                                         map_samples=b['pascal_voc/mAP']['samples'],
                                         images_key=b['images_key']) for b in (boot, fp32)))
            rows.append(dict(dataset=name, side=f'{backend} int8',
                             voc=metrics['pascal_voc/mAP'],
                             voc_interval=boot['pascal_voc/mAP']['interval'],
                             coco=metrics.get('coco/bbox_mAP'), diff=diff['diff'],
                             diff_interval=diff['interval'], calibration_images=calibrated))
    return dict(dataset=name, data=summary['root'], run=run_dir, test_images=fp32['images'],
                rows=rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', nargs='+', choices=('sonar', 'shapes'),
                        default=['sonar', 'shapes'])
    parser.add_argument('--work-dir', default='work_dirs/int8_accuracy')
    parser.add_argument('--backbone', default='fasternet:t2')
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--size', type=int, default=160)
    parser.add_argument('--num-train', type=int, default=96, help='training images')
    parser.add_argument('--num-val', type=int, default=48, help='test images')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--quick', action='store_true',
                        help='a smoke test: shapes, 64 px, 12/8 images, fasternet:t0, 1 epoch')
    parser.add_argument('--out', help='write the results as JSON')
    args = parser.parse_args()
    if args.quick:
        args.data, args.size, args.num_train, args.num_val = ['shapes'], 64, 12, 8
        args.backbone, args.epochs = 'fasternet:t0', 1
    os.environ['CUDA_VISIBLE_DEVICES'] = ''
    results = []
    for name in args.data:
        root = osp.join(args.work_dir, f'data_{name}')
        if name == 'sonar':
            make_sonar_dataset(root, num_train=args.num_train, num_val=args.num_val,
                               size=args.size, seed=0)
        else:
            make_shapes_dataset(root, args.num_train, args.num_val, size=args.size)
        results.append(measure(name, root, args))
    print(f'\nINT8 accuracy, YOLOX + {args.backbone}, {args.epochs} epochs at {args.size} px; '
          'VOC mAP50 with the 95 % bootstrap interval over the test images; INT8 - fp32 with '
          'the paired interval (the same draws)')
    print('| dataset | test images | side | VOC mAP50 | interval | COCO mAP | INT8 - fp32 | '
          'paired interval |')
    print('|---|---|---|---|---|---|---|---|')
    for res in results:
        for r in res['rows']:
            diff = '-' if 'diff' not in r else f"{r['diff']:+.4f}"
            ci = '-' if r.get('diff_interval') is None else \
                f"[{r['diff_interval'][0]:+.4f}, {r['diff_interval'][1]:+.4f}]"
            coco = '-' if r['coco'] is None else f"{r['coco']:.4f}"
            print(f"| {res['dataset']} | {res['test_images']} | {r['side']} | {r['voc']:.4f} | "
                  f"[{r['voc_interval'][0]:.3f}, {r['voc_interval'][1]:.3f}] | {coco} | {diff} "
                  f'| {ci} |')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
