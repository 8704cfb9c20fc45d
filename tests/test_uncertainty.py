"""mmlightbb.analysis.uncertainty: the bootstrap's mAP is mmdet's eval_map / pycocotools' COCOeval
on the drawn images, perfect detections give [1, 1], two seeds of one model are a tie while a
better model is ranked, and interleaved timing holds a latency ratio under a CPU-heavy neighbour
and is not slowed by the threads the previous side left spinning.
"""
import contextlib
import io
import json
import multiprocessing
import time

import numpy as np
import pytest
import torch

from mmlightbb.analysis import uncertainty as unc

CLASSES = ('wreck', 'mine', 'tyre')


def _boxes(rng, n, size=200):
    xy = rng.uniform(0, size - 60, (n, 2))
    wh = rng.uniform(15, 60, (n, 2))
    return np.hstack([xy, xy + wh]).astype(np.float32)


def make_truth(n_images=40, seed=0):
    """Ground truth of ``n_images``: 1-4 boxes of random classes each, a few ignored boxes."""
    rng = np.random.default_rng(seed)
    truth = []
    for i in range(n_images):
        k = int(rng.integers(1, 5))
        ign = int(rng.random() < 0.2)
        truth.append(dict(img_id=100 + i, gt_boxes=_boxes(rng, k),
                          gt_labels=rng.integers(0, len(CLASSES), k),
                          ign_boxes=_boxes(rng, ign), ign_labels=rng.integers(0, 3, ign)))
    return truth


def detect(truth, hit=0.7, false_pos=1.5, seed=0):
    """A simulated detector: finds each box with probability ``hit`` (jittered, higher scores),
    plus about ``false_pos`` random boxes per image (lower scores)."""
    rng = np.random.default_rng(seed)
    records = []
    for t in truth:
        found = rng.random(len(t['gt_boxes'])) < hit
        jitter = rng.normal(0, 3, (int(found.sum()), 4)).astype(np.float32)
        n_fp = int(rng.poisson(false_pos))
        boxes = np.vstack([t['gt_boxes'][found] + jitter, _boxes(rng, n_fp)])
        labels = np.concatenate([t['gt_labels'][found], rng.integers(0, 3, n_fp)])
        scores = np.concatenate([rng.uniform(0.4, 1.0, int(found.sum())),
                                 rng.uniform(0.05, 0.7, n_fp)]).astype(np.float32)
        records.append(dict(t, boxes=boxes.astype(np.float32), labels=labels, scores=scores))
    return records


def perfect(truth):
    return [dict(t, boxes=t['gt_boxes'], labels=t['gt_labels'],
                 scores=np.ones(len(t['gt_boxes']), np.float32)) for t in truth]


def saved(tmp_path, records, name='detections.npz'):
    path = str(tmp_path / name)
    unc.save_detections(path, records, len(CLASSES))
    return unc.load_detections(path)


def write_coco(tmp_path, truth):
    images, anns = [], []
    for t in truth:
        images.append(dict(id=t['img_id'], file_name=f"{t['img_id']}.png", width=200, height=200))
        for boxes, labels, crowd in ((t['gt_boxes'], t['gt_labels'], 0),
                                     (t['ign_boxes'], t['ign_labels'], 1)):
            for b, label in zip(boxes.tolist(), labels):
                w, h = b[2] - b[0], b[3] - b[1]
                anns.append(dict(id=len(anns) + 1, image_id=t['img_id'],
                                 category_id=int(label) + 1, bbox=[b[0], b[1], w, h],
                                 area=w * h, iscrowd=crowd))
    cats = [dict(id=i + 1, name=c) for i, c in enumerate(CLASSES)]
    path = tmp_path / 'test.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return str(path)


def _eval_map(records):
    """mmdet's eval_map exactly as VOCMetric calls it."""
    from mmdet.evaluation.functional import eval_map
    gts = [dict(bboxes=r['gt_boxes'], labels=r['gt_labels'], bboxes_ignore=r['ign_boxes'],
                labels_ignore=r['ign_labels']) for r in records]
    preds = [[np.hstack([r['boxes'][r['labels'] == c], r['scores'][r['labels'] == c, None]])
              for c in range(len(CLASSES))] for r in records]
    with contextlib.redirect_stdout(io.StringIO()):
        return eval_map(preds, gts, iou_thr=0.5, use_legacy_coordinate=True, nproc=1,
                        logger='silent')[0]


def test_the_bootstrap_mAP_is_eval_map_on_the_drawn_images(tmp_path):
    records = detect(make_truth())
    dets = saved(tmp_path, records)
    matches = unc.voc_matches(dets)
    assert unc.voc_map(matches, np.ones(len(records)))[0] == pytest.approx(_eval_map(records),
                                                                           abs=1e-6)
    weights = unc.resample_weights(len(records), resamples=5, seed=3)
    values = unc.voc_map(matches, weights)
    for w, value in zip(weights, values):
        drawn = [r for r, count in zip(records, w) for _ in range(count)]
        assert value == pytest.approx(_eval_map(drawn), abs=1e-6)


def test_the_bootstrap_coco_mAP_is_cocoeval(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    truth = make_truth()
    records = detect(truth, seed=1)
    ann_file = write_coco(tmp_path, truth)
    dets = saved(tmp_path, records)
    matches = unc.coco_matches(dets, ann_file, CLASSES)

    def cocoeval(img_ids):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(ann_file)
            res = [dict(image_id=r['img_id'], category_id=int(label) + 1,
                        bbox=[b[0], b[1], b[2] - b[0], b[3] - b[1]], score=float(s))
                   for r in records for b, label, s in zip(r['boxes'].astype(float).tolist(),
                                                           r['labels'], r['scores'])]
            ev = COCOeval(gt, gt.loadRes(res), 'bbox')
            ev.params.imgIds = img_ids
            ev.params.maxDets = [100, 300, 1000]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev.stats[0]

    ids = [t['img_id'] for t in truth]
    assert unc.coco_map(matches, np.ones(len(ids)))[0] == pytest.approx(cocoeval(ids), abs=1e-9)
    half = (np.arange(len(ids)) % 2).astype(float)  # a draw of every other image, once each
    assert unc.coco_map(matches, half)[0] == pytest.approx(cocoeval(ids[1::2]), abs=1e-9)


def test_perfect_detections_have_the_interval_1_1(tmp_path):
    truth = make_truth()
    ann_file = write_coco(tmp_path, truth)
    boot = unc.bootstrap_maps(saved(tmp_path, perfect(truth)), resamples=200, ann_file=ann_file,
                              classes=CLASSES)
    for metric in ('pascal_voc/mAP', 'coco/bbox_mAP'):
        assert boot[metric]['value'] == pytest.approx(1.0, abs=1e-9)
        assert boot[metric]['interval'] == pytest.approx([1.0, 1.0], abs=1e-9)
    assert boot['resamples'] == 200 and boot['images'] == len(truth)


def _row(tmp_path, name, records, seeds=None, head='yolox', fps=30.0):
    boot = unc.bootstrap_maps(saved(tmp_path, records, name + '.npz'), resamples=500)
    voc = boot['pascal_voc/mAP']
    return dict(name=name, label=name, head=head, map=voc['value'], map_interval=voc['interval'],
                map_samples=voc['samples'], images_key=boot['images_key'], map_seeds=seeds,
                fps=fps, paired_timing='t0', latency_samples=list(
                    1000 / fps * (1 + 0.05 * np.random.default_rng(len(name)).random(20))))


def test_two_seeds_of_one_model_are_a_tie_and_a_better_model_is_ranked(tmp_path):
    truth = make_truth(n_images=48)
    seed0 = _row(tmp_path, 'fasternet-seed0', detect(truth, seed=10))
    seed1 = _row(tmp_path, 'fasternet-seed1', detect(truth, seed=11), fps=30.0)
    assert seed0['map'] != seed1['map']  # different numbers ...
    pair = unc.compare_pair(seed1, seed0)
    assert pair['map']['holds'] is False and pair['statement'] is None  # ... but a tie
    better = _row(tmp_path, 'better', detect(truth, hit=0.98, false_pos=0.2, seed=12))
    pair = unc.compare_pair(better, seed0)
    assert pair['map']['holds'] and pair['map']['diff'] > 0
    assert pair['statement'] == 'better is more accurate than fasternet-seed0 at equal speed'
    # several seeds: the seeds' spread is a test too (Welch's t-test on their values)
    a = dict(seed0, map_seeds=[0.30, 0.32], map_samples=None)
    b = dict(seed1, map_seeds=[0.31, 0.29], map_samples=None)
    assert unc.map_difference(a, b)['holds'] is False
    c = dict(seed1, map=0.6, map_seeds=[0.60, 0.601], map_samples=None)
    assert unc.map_difference(c, a)['holds'] is True


def test_verdict_sentence_and_did_not_learn(tmp_path):
    truth = make_truth(n_images=48)
    slow = _row(tmp_path, 'convnext', detect(truth, seed=10), fps=10.0)
    fast = _row(tmp_path, 'fasternet', detect(truth, seed=11), fps=30.0)
    dead = _row(tmp_path, 'cspconvnext', [dict(t, boxes=np.zeros((0, 4), np.float32),
                                               labels=np.zeros(0, int),
                                               scores=np.zeros(0, np.float32)) for t in truth],
                fps=20.0)
    assert dead['map'] == 0 and unc.did_not_learn(dead) and not unc.did_not_learn(fast)
    # an interval above 0 is not enough: under the floor a row is speed-only
    barely = dict(fast, map=unc.LEARNED_FLOOR / 2, map_interval=[unc.LEARNED_FLOOR / 4,
                                                                  unc.LEARNED_FLOOR * 0.9])
    assert unc.did_not_learn(barely)
    out = unc.verdict([slow, fast, dead], {'yolox': 'YOLOX-s'})
    assert out['did_not_learn'] == ['cspconvnext']
    assert [(p['fast'], p['slow']) for p in out['pairs']] == [('fasternet', 'convnext')]
    ratio = out['pairs'][0]['fps']['ratio']
    assert 2.8 < ratio < 3.2
    assert out['sentence'] == (f'YOLOX-s: fasternet is faster than convnext ({ratio:.2f}x) at '
                               'equal mAP (did not learn: cspconvnext).')


def _work(n=160):
    """About 50 ms of one core: calls much shorter than a scheduler slice read mostly noise."""
    a = torch.randn(n, n)
    for _ in range(200):
        a = torch.tanh(a @ a / n)
    return a


def _burn(stop):
    x = 0
    while not stop.is_set():
        for i in range(20000):
            x += i * i


def test_interleaved_timing_holds_the_ratio_beside_a_cpu_heavy_process():
    """A model and the same model with a fixed extra cost in its forward (its work once more:
    2x) timed round-robin while another process burns a CPU: the measured ratio is within 10 %
    of 2."""
    from mmlightbb.analysis.benchmark import time_interleaved
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    stop = multiprocessing.Event()
    burner = multiprocessing.Process(target=_burn, args=(stop, ), daemon=True)
    burner.start()
    try:
        time.sleep(0.2)
        samples = time_interleaved({'model': _work, 'delayed': lambda: (_work(), _work())},
                                   iters=20, warmup=1)
    finally:
        stop.set()
        burner.join(5)
        torch.set_num_threads(threads)
    ratio = unc.fps_ratio(samples['model'], samples['delayed'], paired=True)
    assert ratio['ratio'] == pytest.approx(2.0, rel=0.10), ratio
    assert ratio['holds'] and ratio['paired']


def _spin_after_each_signal(go, stop, spin_ms):
    """What a runtime's worker threads do after a call returns: burn a core for ``spin_ms``."""
    while not stop.is_set():
        if go.wait(0.05):
            go.clear()
            end = time.perf_counter() + spin_ms / 1000
            while time.perf_counter() < end:
                pass


def _matmuls(n=256):
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    for _ in range(12):
        a = torch.tanh(a @ a / n)
    return a


@pytest.mark.slow
def test_a_side_is_timed_after_the_previous_sides_threads_stop_spinning():
    """A side whose call leaves a core spinning for 20 ms after it returns (as ONNX Runtime's
    pool does) and a 2-thread side timed round-robin: with the settle calls, the 2-thread side
    keeps its own latency; timed call for call (settle_ms=0) it is slowed, so the test can fail."""
    from mmlightbb.analysis.benchmark import time_interleaved
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    go, stop = multiprocessing.Event(), multiprocessing.Event()
    spinner = multiprocessing.Process(target=_spin_after_each_signal, args=(go, stop, 20),
                                      daemon=True)
    spinner.start()
    try:
        time.sleep(0.2)
        alone = np.median(time_interleaved({'work': _matmuls}, iters=30, warmup=3)['work'])
        sides = {'spinning': go.set, 'work': _matmuls}
        settled = np.median(time_interleaved(sides, iters=30, warmup=3)['work'])
        call_for_call = np.median(time_interleaved(sides, iters=30, warmup=3,
                                                   settle_ms=0)['work'])
    finally:
        stop.set()
        spinner.join(5)
        torch.set_num_threads(threads)
    assert settled / alone < 1.2, (alone, settled, call_for_call)
    assert call_for_call / alone > 1.3, (alone, settled, call_for_call)
