"""How far a comparison's numbers can be trusted: bootstrap intervals of mAP over the test images,
the spread over training seeds and over timing rounds, and the verdict of which differences hold.

Per-image detections (``detections.npz``, :func:`save_detections`): every test image's predicted
boxes, scores and labels and its ground truth as mmdet's ``VOCMetric`` sees it (``gt_instances``
and ``ignored_instances`` of the test data samples), in test-loader order. Nothing is pickled:
``np.load(allow_pickle=False)`` reads it.

Bootstrap (:func:`bootstrap_maps`, ``resamples`` draws of the test images with replacement, one
seeded generator, so that every run of a comparison gets the same draws and their differences can
be bootstrapped pairwise):

* VOC mAP50 (``pascal_voc/mAP``): each image's detections of each class are matched once with
  mmdet's own ``tpfp_default`` (IoU 0.5, legacy +1 coordinates, as ``VOCMetric``); a resample
  weighs each detection and ground-truth box by how often its image was drawn, then the
  precision/recall curve and its area are those of ``eval_map`` (``average_precision``, mode
  ``area``) on the resampled list -- tested equal to ``eval_map`` on the duplicated images.
* COCO mAP (``coco/bbox_mAP``): pycocotools' ``COCOeval.evaluate`` runs once on the test json (the
  ground truth ``CocoMetric`` uses); its per-image matches (``evalImgs``: all areas, 100
  detections per image) are weighed the same way and accumulated as ``COCOeval.accumulate`` does
  (101 recall points, 10 IoU thresholds) -- tested equal to ``COCOeval`` on the whole set.

The 95 % interval is the 2.5th..97.5th percentile of the resampled values (percentile bootstrap).
It holds the test-set noise only: another training seed moves a run further (see
:func:`map_difference`).

Verdict (:func:`compare_pair`, :func:`verdict`): within a head, the runs are ordered by FPS and
each pair of neighbours is judged on

* FPS: the median over timing rounds of the per-round latency ratio (rounds are paired when the
  runs were timed side by side, :mod:`.comparison.timing`), its 95 % bootstrap interval over
  rounds; the faster run is faster beyond noise when the interval excludes 1;
* mAP: the difference of the (seed-mean) mAPs, its 95 % paired bootstrap interval over the test
  images (both runs on the same draws); with several seeds on both sides, also Welch's t-test on
  the seeds' values (p < 0.05). A difference holds when every available test says so; else it is
  a tie.

A run whose mAP interval reaches 0 (lower bound <= 0, or every seed at 0 without an interval), or
whose mAP is under :data:`LEARNED_FLOOR`, did not learn: it is named as such (a speed-only row)
and never placed on the Pareto front or compared.
"""
import contextlib
import hashlib
import io
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmdet.evaluation.functional.mean_ap import tpfp_default
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import stats

from ..engine.fileio import atomic_write

DETECTIONS = 'detections.npz'
BOOTSTRAP = 'bootstrap.json'
LEVEL = 0.95
RESAMPLES = 1000
COCO_MAX_DETS = 100
_CHUNK = 4_000_000  # floats per bootstrap block (resamples x detections x IoUs), ~32 MB


# ------------------------------------------------------------------------ detections file
def detections_record(sample) -> dict:
    """The arrays :func:`save_detections` keeps of one test ``DetDataSample`` (boxes x1y1x2y2 in
    the original image, as the metrics get them)."""
    def arrays(instances, with_scores):
        def np_(value, dtype):
            value = getattr(value, 'tensor', value)  # mmdet's HorizontalBoxes
            return value.detach().float().cpu().numpy().astype(dtype) if hasattr(
                value, 'detach') else np.asarray(value, dtype)
        if instances is None or 'bboxes' not in instances:
            out = [np.zeros((0, 4), np.float32), np.zeros(0, np.int64)]
            return out + [np.zeros(0, np.float32)] if with_scores else out
        out = [np_(instances.bboxes, np.float32).reshape(-1, 4),
               np_(instances.labels, np.int64).reshape(-1)]
        return out + [np_(instances.scores, np.float32).reshape(-1)] if with_scores else out

    boxes, labels, scores = arrays(sample.get('pred_instances'), True)
    gt_boxes, gt_labels = arrays(sample.get('gt_instances'), False)
    ign_boxes, ign_labels = arrays(sample.get('ignored_instances'), False)
    return dict(img_id=int(sample.img_id), boxes=boxes, scores=scores, labels=labels,
                gt_boxes=gt_boxes, gt_labels=gt_labels, ign_boxes=ign_boxes,
                ign_labels=ign_labels)


def save_detections(path: str, records: Sequence[dict], num_classes: int) -> None:
    """Write the records of :func:`detections_record` (in test order) as one ``.npz``; each kind
    of array is concatenated with the index of its image (``*_img``)."""
    out = dict(img_ids=np.array([r['img_id'] for r in records], np.int64),
               num_classes=np.array(num_classes))
    for kind, keys in (('det', ('boxes', 'scores', 'labels')), ('gt', ('gt_boxes', 'gt_labels')),
                       ('ign', ('ign_boxes', 'ign_labels'))):
        out[f'{kind}_img'] = np.concatenate(
            [np.full(len(r[keys[0]]), i, np.int64) for i, r in enumerate(records)] or
            [np.zeros(0, np.int64)])
        for key in keys:
            parts = [r[key] for r in records]
            out[key] = (np.concatenate(parts) if parts else
                        np.zeros((0, 4) if key.endswith('boxes') else 0))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **out)
    atomic_write(path, buffer.getvalue())  # never half a file


def load_detections(path: str) -> Dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def images_key(dets: dict) -> str:
    """A fingerprint of the test images and their order: runs with equal keys share the
    bootstrap's draws, so their differences are bootstrapped pairwise."""
    return hashlib.sha1(np.ascontiguousarray(dets['img_ids']).tobytes()).hexdigest()[:16]


def _by_image(img: np.ndarray, n: int) -> List[np.ndarray]:
    order = np.argsort(img, kind='stable')
    return np.split(order, np.searchsorted(img[order], np.arange(1, n)))


def _weighted_cumsum(weights: np.ndarray, img: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each row ``w`` of ``weights`` (resamples x images): the running sum over the
    detections of ``values * w[img]``, (resamples, T, detections) for ``values`` (T, detections).
    Computed as (resamples x images) @ (images x detections) products of each image's own
    running sum, over blocks of images (memory stays within :data:`_CHUNK` per block)."""
    n_thr, n_det = values.shape
    out = np.zeros((len(weights), n_thr, n_det))
    block = max(1, _CHUNK // max(n_det * n_thr, 1))
    for start in range(0, weights.shape[1], block):
        stop = min(start + block, weights.shape[1])
        cols = np.flatnonzero((img >= start) & (img < stop))
        if not len(cols):
            continue
        per_image = np.zeros((stop - start, n_thr, n_det))
        per_image[img[cols] - start, :, cols] = values[:, cols].T
        # one 2-D product (BLAS): (resamples x images) @ (images x T * detections)
        out += (np.ascontiguousarray(weights[:, start:stop], dtype=np.float64)
                @ np.cumsum(per_image, 2).reshape(stop - start, -1)).reshape(out.shape)
    return out


# --------------------------------------------------------------------------- VOC mAP50
def voc_matches(dets: dict, iou_thr: float = 0.5) -> List[dict]:
    """Per class: every detection's image, true/false positive (mmdet ``tpfp_default``, legacy
    coordinates, as ``VOCMetric``) in ``eval_map``'s score order, and each image's number of
    ground-truth boxes."""
    n = len(dets['img_ids'])
    det_of, gt_of, ign_of = (_by_image(dets[f'{k}_img'], n) for k in ('det', 'gt', 'ign'))
    classes = []
    for c in range(int(dets['num_classes'])):
        imgs, tps, fps, scores = [], [], [], []
        n_gt = np.zeros(n)
        for i in range(n):
            d = det_of[i][dets['labels'][det_of[i]] == c]
            g = gt_of[i][dets['gt_labels'][gt_of[i]] == c]
            ig = ign_of[i][dets['ign_labels'][ign_of[i]] == c]
            boxes = np.hstack([dets['boxes'][d], dets['scores'][d][:, None]])
            tp, fp = tpfp_default(boxes, dets['gt_boxes'][g], dets['ign_boxes'][ig], iou_thr,
                                  None, True)
            imgs.append(np.full(len(d), i))
            tps.append(tp[0])
            fps.append(fp[0])
            scores.append(dets['scores'][d])
            n_gt[i] = len(g)
        order = np.argsort(-np.concatenate(scores))  # as eval_map sorts the stacked detections
        classes.append(dict(img=np.concatenate(imgs)[order], tp=np.concatenate(tps)[order],
                            fp=np.concatenate(fps)[order], n_gt=n_gt,
                            score=np.concatenate(scores)[order]))
    return classes


def voc_map(matches: List[dict], weights: np.ndarray) -> np.ndarray:
    """VOC mAP (area under the interpolated P-R curve, mean over the classes with ground truth)
    of each row of ``weights`` (resamples x images: how often each image was drawn)."""
    weights = np.atleast_2d(weights).astype(np.float64)
    eps = np.finfo(np.float32).eps
    aps, valid = [], []
    for m in matches:
        n_gt = weights @ m['n_gt']
        ap = np.zeros(len(weights))
        if len(m['tp']):
            step = max(1, _CHUNK // (2 * len(m['tp'])))
            for s in range(0, len(weights), step):
                w = weights[s:s + step]
                tp, fp = _weighted_cumsum(w, m['img'], np.stack([m['tp'], m['fp']])).transpose(
                    1, 0, 2)
                recall = tp / np.maximum(n_gt[s:s + step, None], eps)
                precision = tp / np.maximum(tp + fp, eps)
                envelope = np.maximum.accumulate(precision[:, ::-1], 1)[:, ::-1]
                ap[s:s + step] = (np.diff(recall, axis=1, prepend=0) * envelope).sum(1)
        aps.append(ap)
        valid.append(n_gt > 0)
    aps, valid = np.array(aps), np.array(valid)
    count = valid.sum(0)
    return np.where(count > 0, (aps * valid).sum(0) / np.maximum(count, 1), 0.0)


def voc_class_aps(matches: List[dict]) -> List[Optional[float]]:
    """Each class's AP50 on the whole test set (None for a class without ground truth)."""
    ones = np.ones((1, len(matches[0]['n_gt']))) if matches else np.ones((1, 0))
    return [float(voc_map([m], ones)[0]) if m['n_gt'].sum() > 0 else None for m in matches]


def best_f1_point(matches: List[dict], scores: Sequence[np.ndarray]) -> Optional[dict]:
    """Precision and recall of all classes together (IoU 0.5, as the VOC matches) when the
    detections scored at least the threshold of the best F1 are kept; None without ground
    truth."""
    n_gt = sum(m['n_gt'].sum() for m in matches)
    if n_gt == 0:
        return None
    score = np.concatenate(scores) if scores else np.zeros(0)
    tp = np.concatenate([m['tp'] for m in matches])
    fp = np.concatenate([m['fp'] for m in matches])  # a match of an ignored box is neither
    order = np.argsort(-score, kind='stable')
    if not len(order):
        return dict(score_threshold=None, precision=0.0, recall=0.0, f1=0.0)
    tp_sum = np.cumsum(tp[order])
    kept = np.cumsum(tp[order] + fp[order])
    precision, recall = tp_sum / np.maximum(kept, 1), tp_sum / n_gt
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    # a threshold keeps every detection of that score: only the last of equal scores counts
    last = np.r_[score[order][1:] != score[order][:-1], True]
    best = np.flatnonzero(last)[np.argmax(f1[last])]
    return dict(score_threshold=float(score[order][best]), precision=float(precision[best]),
                recall=float(recall[best]), f1=float(f1[best]))


# ----------------------------------------------------------------------------- COCO mAP
def coco_matches(dets: dict, ann_file: str, classes: Sequence[str]) -> Optional[List[dict]]:
    """Per category: pycocotools' per-image matches (``COCOeval.evaluate`` on ``ann_file``, all
    areas, the 100 best detections per image) in ``accumulate``'s score order; None without a
    single detection (``CocoMetric`` then reports no COCO mAP)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
    by_name = {c['name']: c['id'] for c in gt.loadCats(gt.getCatIds())}
    cat_ids = [by_name[c] for c in classes]
    boxes = dets['boxes'].astype(np.float64)
    results = [dict(image_id=int(dets['img_ids'][i]), category_id=cat_ids[int(label)],
                    bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]], score=float(score))
               for i, b, score, label in zip(dets['det_img'], boxes.tolist(), dets['scores'],
                                             dets['labels'])]
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), 'bbox')
        ev.params.catIds = cat_ids
        ev.params.imgIds = [int(i) for i in dets['img_ids']]
        ev.params.maxDets = [100, 300, 1000]  # as CocoMetric
        ev.evaluate()
    img_ids = ev.params.imgIds  # sorted by evaluate()
    position = {int(i): k for k, i in enumerate(dets['img_ids'])}
    n_img, n_area = len(img_ids), len(ev.params.areaRng)
    out = []
    for k in range(len(cat_ids)):
        imgs, scores, tps, fps = [], [], [], []
        n_gt = np.zeros(len(dets['img_ids']))
        for j, img_id in enumerate(img_ids):
            e = ev.evalImgs[k * n_area * n_img + j]  # area 'all'
            if e is None:
                continue
            i = position[img_id]
            matched = e['dtMatches'][:, :COCO_MAX_DETS] > 0
            ignored = e['dtIgnore'][:, :COCO_MAX_DETS].astype(bool)
            tps.append(matched & ~ignored)
            fps.append(~matched & ~ignored)
            scores.append(np.asarray(e['dtScores'][:COCO_MAX_DETS]))
            imgs.append(np.full(len(scores[-1]), i))
            n_gt[i] += np.count_nonzero(np.asarray(e['gtIgnore']) == 0)
        if scores:
            order = np.argsort(-np.concatenate(scores), kind='mergesort')
            out.append(dict(img=np.concatenate(imgs)[order],
                            tp=np.concatenate(tps, 1)[:, order].astype(np.float64),
                            fp=np.concatenate(fps, 1)[:, order].astype(np.float64),
                            n_gt=n_gt))
        else:
            out.append(dict(img=np.zeros(0, int), tp=np.zeros((10, 0)), fp=np.zeros((10, 0)),
                            n_gt=n_gt))
    return out


def coco_map(matches: List[dict], weights: np.ndarray) -> np.ndarray:
    """COCO mAP@[.5:.95] (``stats[0]``) of each row of ``weights`` (resamples x images)."""
    weights = np.atleast_2d(weights).astype(np.float64)
    rec_thrs = np.linspace(0, 1, 101)
    eps = np.spacing(1)
    total, count = np.zeros(len(weights)), np.zeros(len(weights))
    for m in matches:
        n_gt = weights @ m['n_gt']
        value = np.zeros(len(weights))
        n_thr, n_det = m['tp'].shape
        if n_det:
            step = max(1, _CHUNK // (2 * n_det * n_thr))
            for s in range(0, len(weights), step):
                w = weights[s:s + step]
                both = _weighted_cumsum(w, m['img'], np.concatenate([m['tp'], m['fp']]))
                tp, fp = both[:, :n_thr], both[:, n_thr:]
                recall = tp / np.maximum(n_gt[s:s + step, None, None], eps)
                precision = np.maximum.accumulate((tp / (tp + fp + eps))[..., ::-1], 2)[..., ::-1]
                rows = recall.reshape(-1, n_det)
                idx = np.array([np.searchsorted(row, rec_thrs, side='left') for row in rows])
                flat = precision.reshape(-1, n_det)
                q = np.where(idx < n_det, np.take_along_axis(
                    flat, np.minimum(idx, n_det - 1), 1), 0.0)
                value[s:s + step] = q.reshape(len(w), -1).mean(1)
        has = n_gt > 0
        total += np.where(has, value, 0)
        count += has
    return np.where(count > 0, total / np.maximum(count, 1), -1.0)


# ---------------------------------------------------------------------------- bootstrap
def resample_weights(n_images: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples x images) counts of each image in ``resamples`` draws with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_images, size=(resamples, n_images))
    flat = (idx + n_images * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n_images).reshape(resamples, n_images)


def interval(samples, level: float = LEVEL) -> List[float]:
    """The percentile interval of ``samples`` at ``level``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(np.asarray(samples, float), [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_maps(dets: dict, resamples: int = RESAMPLES, seed: int = 0,
                   ann_file: Optional[str] = None,
                   classes: Optional[Sequence[str]] = None) -> dict:
    """The bootstrap of VOC mAP50 and (with ``ann_file`` and ``classes``) COCO mAP over the test
    images of ``dets`` (see the module doc): ``{metric: {value, interval, samples}}`` plus what
    was drawn."""
    n = len(dets['img_ids'])
    weights = resample_weights(n, resamples, seed)
    ones = np.ones((1, n))
    out = dict(resamples=resamples, seed=seed, level=LEVEL, images=n, images_key=images_key(dets),
               method='percentile bootstrap over the test images (drawn with replacement)')
    voc = voc_matches(dets)
    out.update(class_ap50=voc_class_aps(voc),
               best_f1=best_f1_point(voc, [m['score'] for m in voc]))
    metrics = [('pascal_voc/mAP', voc, voc_map)]
    if ann_file is not None:
        metrics.append(('coco/bbox_mAP', coco_matches(dets, ann_file, classes), coco_map))
    for name, matches, fn in metrics:
        if matches is None:
            out[name] = None
            continue
        samples = fn(matches, weights)
        out[name] = dict(value=float(fn(matches, ones)[0]), interval=interval(samples),
                         samples=[round(float(v), 6) for v in samples])
    return out


# ------------------------------------------------------------------------------ verdict
def seed_stats(values: Sequence[float]) -> dict:
    """Mean, standard deviation (n - 1; 0 for one value) and every value."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
           if len(values) > 1 else 0.0)
    return dict(mean=mean, std=std, values=values)


def latency_stats(samples_ms: Sequence[float]) -> dict:
    """Median and inter-quartile range of latency (ms) and of FPS (1000 / latency)."""
    q1, median, q3 = np.percentile(np.asarray(samples_ms, float), [25, 50, 75])
    return dict(latency_ms=dict(median=float(median), iqr=[float(q1), float(q3)]),
                fps=dict(median=1000.0 / median, iqr=[1000.0 / q3, 1000.0 / q1]))


# Under this mAP a detector finds almost nothing, whatever its interval says: one epoch of Cascade
# R-CNN on the demo reached 0.0009 with an interval just above 0 (0.0002-0.004), which is no
# ground for ranking it by accuracy.
LEARNED_FLOOR = 0.01


def did_not_learn(row: dict) -> bool:
    """Whether a row's mAP is indistinguishable from 0 or under :data:`LEARNED_FLOOR` (see the
    module doc)."""
    if row.get('map') is None:
        return False
    if row['map'] < LEARNED_FLOOR:
        return True
    ci = row.get('map_interval')
    if ci is not None:
        return ci[0] <= 0
    return all(v <= 0 for v in row.get('map_seeds') or [row['map']])


def fps_ratio(fast_ms: Sequence[float], slow_ms: Sequence[float], paired: bool,
              resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """How many times faster ``fast`` is: median latency ratio slow / fast with its bootstrap
    interval over timing rounds (per-round ratios when ``paired``, else each side drawn alone)."""
    a, b = np.asarray(fast_ms, float), np.asarray(slow_ms, float)
    rng = np.random.default_rng(seed)
    if paired and len(a) == len(b):
        ratios = b / a
        draws = rng.integers(0, len(ratios), size=(resamples, len(ratios)))
        samples = np.median(ratios[draws], 1)
        value = float(np.median(ratios))
    else:
        da = rng.integers(0, len(a), size=(resamples, len(a)))
        db = rng.integers(0, len(b), size=(resamples, len(b)))
        samples = np.median(b[db], 1) / np.median(a[da], 1)
        value = float(np.median(b) / np.median(a))
    low, high = interval(samples)
    return dict(ratio=value, interval=[low, high], holds=low > 1 or high < 1, paired=bool(
        paired and len(a) == len(b)))


def map_difference(a: dict, b: dict) -> dict:
    """mAP of ``a`` minus that of ``b`` (rows with ``map``, optional ``map_samples`` -- the
    bootstrap of their seed-mean on the same draws when ``images_key`` is equal -- and
    ``map_seeds``) with the tests of the module doc; ``holds`` is True when the difference is
    outside the noise of every test available, None when there is no test at all."""
    diff = a['map'] - b['map']
    out = dict(diff=diff, interval=None, p_seeds=None, tests=[])
    if a.get('map_samples') is not None and b.get('map_samples') is not None and \
            a.get('images_key') == b.get('images_key'):
        d = np.asarray(a['map_samples']) - np.asarray(b['map_samples'])
        out['interval'] = interval(d)
        out['tests'].append(out['interval'][0] > 0 or out['interval'][1] < 0)
    sa, sb = a.get('map_seeds') or [], b.get('map_seeds') or []
    if len(sa) > 1 and len(sb) > 1:
        p = stats.ttest_ind(sa, sb, equal_var=False).pvalue
        out['p_seeds'] = None if p is None or math.isnan(p) else float(p)
        out['tests'].append(out['p_seeds'] is not None and out['p_seeds'] < 1 - LEVEL)
    out['holds'] = all(out['tests']) if out['tests'] else None
    return out


def compare_pair(fast: dict, slow: dict) -> dict:
    """The verdict on two neighbours (``fast`` has the higher median FPS): rows as
    :func:`map_difference` reads them plus ``latency_samples`` and ``paired_timing`` (the key of
    the side-by-side timing both were in, or None)."""
    paired = fast.get('paired_timing') is not None and \
        fast.get('paired_timing') == slow.get('paired_timing')
    if min(len(fast.get('latency_samples') or ()), len(slow.get('latency_samples') or ())) >= 3:
        speed = fps_ratio(fast['latency_samples'], slow['latency_samples'], paired)
    else:  # no timing rounds to tell the noise: the FPS ratio is not judged
        speed = dict(ratio=fast['fps'] / slow['fps'], interval=None, holds=None, paired=False)
    acc = map_difference(fast, slow)
    faster = speed['holds'] and speed['ratio'] > 1
    better = acc['holds'] and acc['diff'] > 0
    worse = acc['holds'] and acc['diff'] < 0
    a, b = fast['label'], slow['label']
    if faster and better:
        text = f'{a} is faster ({speed["ratio"]:.2f}x) and more accurate than {b}'
    elif faster and worse:
        text = f'{a} is faster ({speed["ratio"]:.2f}x) but less accurate than {b}'
    elif faster:
        text = f'{a} is faster than {b} ({speed["ratio"]:.2f}x) at equal mAP'
    elif better or worse:
        hi, lo = (a, b) if better else (b, a)
        text = f'{hi} is more accurate than {lo} at equal speed'
    else:
        text = None
    return dict(fast=fast['name'], slow=slow['name'], head=fast.get('head'), fps=speed,
                map=acc, faster=bool(faster), map_holds=bool(acc['holds']), statement=text)


def verdict(rows: Sequence[dict], head_names: Optional[Dict[str, str]] = None) -> dict:
    """Pairs of FPS neighbours within each head among the rows that learned (see the module
    doc), the rows that did not learn, and one sentence with the conclusion the data supports.
    ``rows`` are one per run (a label, ``head``, ``fps``, and what :func:`compare_pair` reads)."""
    head_names = head_names or {}
    pairs, not_learned, sentences = [], [], []
    heads = list(dict.fromkeys(r.get('head') for r in rows))
    for head in heads:
        mine = [r for r in rows if r.get('head') == head and r.get('fps') is not None
                and r.get('map') is not None]
        lost = [r for r in mine if did_not_learn(r)]
        not_learned += [r['name'] for r in lost]
        learned = sorted((r for r in mine if not did_not_learn(r)), key=lambda r: -r['fps'])
        head_pairs = [compare_pair(f, s) for f, s in zip(learned, learned[1:])]
        pairs += head_pairs
        said = [p['statement'] for p in head_pairs if p['statement']]
        ties = len(head_pairs) - len(said)
        name = head_names.get(head, head or 'all runs')
        if said:
            tail = '; the other differences are within noise' if ties else ''
            part = '; '.join(said) + tail
        elif head_pairs:
            part = 'no difference between neighbours is outside the noise'
        elif learned:
            part = f"only {learned[0]['label']} learned" if lost else 'one run'
        elif mine:
            part = 'no run learned'
        else:  # e.g. timed-only runs (0 epochs)
            part = 'no run has an mAP (speeds only)'
        if lost:
            part += ' (did not learn: ' + ', '.join(r['label'] for r in lost) + ')'
        sentences.append(f'{name}: {part}' if len(heads) > 1 or head else part)
    sentence = '. '.join(s[0].upper() + s[1:] for s in sentences) + '.' if sentences else \
        'No run has both an mAP and an FPS.'
    return dict(pairs=pairs, did_not_learn=not_learned, sentence=sentence)
