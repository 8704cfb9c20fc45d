"""Synthetic side-scan sonar (SSS) detection data: seeded waterfall images with COCO boxes.

Image model. Rows are pings along track, columns are slant range; port is on the left, starboard on
the right, the tow fish track runs down the middle.

* Each side's scene lives on a ground-range grid: sediment patches, sand ripples and a gentle
  relief (a height field), plus targets and rocks (height and reflectivity).
* It is lit from the sonar at altitude ``a``, which drifts slowly along track. Shading is
  Lambert-like relative to flat ground, so faces turned to the sonar are bright. Points that the
  ping's line of sight cannot reach return no echo: an object of height ``h`` at ground range
  ``x`` casts a shadow away from the track, ``x * h / (a - h)`` long.
* The scene is then mapped to slant range ``r = sqrt(x**2 + a**2)``. There is no echo before
  ``r = a``, so the water column is a dark nadir band whose width follows the altitude.
* Then the sonar's own effects: an imperfect time-varying gain (bright first returns near nadir,
  a fall-off at far range, port and starboard unbalanced), ping-to-ping gain jitter, a noise floor
  (shadows are dark, not black), multiplicative gamma speckle, along-track beam blur that grows with
  range, and a soft-saturating 8-bit display mapping.

Targets are the public SCTD classes. ``shipwreck``: a long hull with a superstructure, often
broken in two. ``aircraft``: fuselage, wings and tailplane, sometimes with a wing missing.
``victim``: a small body with a head. All have random orientations. Rocks are clutter with short
shadows and are not annotated.

Boxes. SCTD does not document its box convention, so this is our choice: a box covers the object
(its footprint, which carries the highlight) and NOT its shadow. The shadow's length depends on the
range and the altitude, not on the object, and the footprint is what tells the classes apart.
``box_shadow=True`` (``--box-shadow``) boxes the object and its shadow instead.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
import time
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .sonar import SonarDataset

CLASSES = SonarDataset.METAINFO['classes']  # the SCTD classes the sonar configs train on
# Bump when the rendered images change, so that existing datasets are regenerated.
GENERATOR_VERSION = 1


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], cells: int,
                  octaves: int = 3) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise: bicubic-upsampled random grids, ``cells`` across the
    longer side for the coarsest octave."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    for octave in range(octaves):
        c = cells * 2**octave
        grid = rng.standard_normal((max(2, c * h // max(h, w)) + 1,
                                    max(2, c * w // max(h, w)) + 1)).astype(np.float32)
        out += 0.5**octave * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return (out - out.mean()) / (out.std() + 1e-6)


def _rotated_grid(half: float, theta: float) -> Tuple[np.ndarray, np.ndarray]:
    """Object-frame coordinates (u along the object, v across) of a square window of pixels."""
    n = int(np.ceil(half)) + 1
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float32)
    c, s = np.cos(theta), np.sin(theta)
    return xx * c + yy * s, yy * c - xx * s


def _dome(d2: np.ndarray) -> np.ndarray:
    """Height profile ``sqrt(1 - d2)`` of a rounded body, ``d2`` the squared normalised distance."""
    return np.sqrt(np.clip(1 - d2, 0, None))


def _hull(u, v, length, beam, height):
    t = u / (length / 2)
    # Rounded stern, bow tapering over its front 40%.
    half_w = beam / 2 * _dome(t**6) * np.where(t > 0.6, 1 - (t - 0.6) / 0.4 * 0.8, 1)
    h = height * _dome((v / np.maximum(half_w, 1e-3))**2) * (np.abs(t) < 1)
    bridge = (np.abs(u + 0.1 * length) < 0.1 * length) & (np.abs(v) < 0.3 * beam)
    return h + 0.5 * height * bridge


def _shipwreck(rng, s):
    length = rng.uniform(40, 90) * s
    beam, height = rng.uniform(0.14, 0.22) * length, rng.uniform(3, 7) * s
    u, v = _rotated_grid(0.55 * length, rng.uniform(0, 2 * np.pi))
    h = _hull(u, v, length, beam, height)
    if rng.random() < 0.5:  # broken in two: the aft part drops and twists about the break
        cut, gap = rng.uniform(-0.2, 0.2) * length, rng.uniform(0.03, 0.08) * length
        delta = rng.uniform(-0.45, 0.45)
        c, sn = np.cos(delta), np.sin(delta)
        u2 = (u - cut) * c + v * sn + cut
        v2 = v * c - (u - cut) * sn
        aft = _hull(u2, v2, length, beam, height) * rng.uniform(0.5, 0.9)
        h = np.where(u > cut + gap / 2, h, 0) + np.where(u2 < cut - gap / 2, aft, 0)
    ribs = 1 + 0.35 * np.sin(u * 2 * np.pi / rng.uniform(4, 7) / s)  # frames and deck fittings
    return h, rng.uniform(1.8, 3.0) * ribs


def _aircraft(rng, s):
    length = rng.uniform(26, 46) * s
    span, chord = rng.uniform(0.8, 1.1) * length, rng.uniform(0.13, 0.2) * length
    width, height = rng.uniform(0.09, 0.13) * length, rng.uniform(1.5, 3) * s
    u, v = _rotated_grid(0.6 * max(length, span), rng.uniform(0, 2 * np.pi))
    t = u / (length / 2)
    half_w = width / 2 * _dome(t**6)
    h = height * _dome((v / np.maximum(half_w, 1e-3))**2) * (np.abs(t) < 1)
    reach = np.full(u.shape, span / 2, np.float32)
    if rng.random() < 0.3:  # one wing broken off near the root
        side = rng.choice([-1, 1])
        reach = np.where(side * v > 0, span / 2 * rng.uniform(0.15, 0.4), reach)
    sweep = rng.uniform(0, 0.4)
    taper = 1 - 0.5 * np.abs(v) / (span / 2)
    wing = (np.abs(u - 0.1 * length + sweep * np.abs(v)) < chord / 2 * taper) & (np.abs(v) < reach)
    tail = (np.abs(u + 0.42 * length + sweep * np.abs(v)) < chord / 3) & (np.abs(v) < 0.18 * span)
    plate = 0.3 * height * (wing | tail)
    return np.maximum(h, plate), rng.uniform(1.8, 3.0)


def _victim(rng, s):
    length = rng.uniform(9, 15) * s
    width, height = rng.uniform(0.25, 0.35) * length, rng.uniform(1.0, 1.6) * s
    u, v = _rotated_grid(0.6 * length, rng.uniform(0, 2 * np.pi))
    body = _dome(((u + 0.1 * length) / (0.4 * length))**2 + (v / (width / 2))**2)
    head = _dome(((u - 0.38 * length) / (0.12 * length))**2 + (v / (0.12 * length))**2)
    return height * np.maximum(body, 0.8 * head), rng.uniform(2.0, 3.2)


def _rock(rng, s):
    ra, rb = rng.uniform(1.5, 4.5, 2) * s
    u, v = _rotated_grid(2.2 * max(ra, rb), rng.uniform(0, np.pi))
    h = rng.uniform(0.6, 2.2) * s * np.exp(-((u / ra)**2 + (v / rb)**2)**1.5)
    return np.where(h > 0.05 * s, h, 0), rng.uniform(1.5, 3.0)


_MAKERS = dict(shipwreck=_shipwreck, aircraft=_aircraft, victim=_victim)


def _paste(z, refl, h, r, cy, cx) -> Tuple[slice, slice, np.ndarray]:
    """Put an object (height ``h``, reflectivity ``r``: scalar or per pixel) centred at (cy, cx)
    on the seabed, clipped to the field; return the field's slices and the pasted heights."""
    (H, W), (ph, pw) = z.shape, h.shape
    y0, x0 = cy - ph // 2, cx - pw // 2
    fy, fx = slice(max(y0, 0), min(y0 + ph, H)), slice(max(x0, 0), min(x0 + pw, W))
    py, px = slice(fy.start - y0, fy.stop - y0), slice(fx.start - x0, fx.stop - x0)
    hp = h[py, px]
    z[fy, fx] += hp
    refl[fy, fx] = np.where(hp > 0, np.broadcast_to(r, h.shape)[py, px], refl[fy, fx])
    return fy, fx, hp


def _occluded(z: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """Pixels of a ground-range height field hidden from a sonar at altitude ``alt`` (per row).

    A point at ground range x is seen under the depression slope ``(a - z) / x``; it is hidden
    when a nearer point is seen under a smaller one (it sticks out above the line of sight).
    """
    x = np.arange(z.shape[1], dtype=np.float32) + 0.5
    slope = (alt[:, None] - z) / x
    hidden = np.zeros(z.shape, bool)
    hidden[:, 1:] = slope[:, 1:] > np.minimum.accumulate(slope, axis=1)[:, :-1] + 1e-5
    return hidden


def _render_side(rng, H, N, alt, s, names, num_rocks):
    """Echo strength of one side on its ground-range grid, its targets (class ``names``, placed
    without overlap) with their footprint and shadow masks, and its rocks' centres (y, x)."""
    z = (rng.uniform(0.5, 2.0) * s * _smooth_noise(rng, (H, N), 2)).astype(np.float32)
    refl = np.exp(0.3 * _smooth_noise(rng, (H, N), 3) + 0.12 * _smooth_noise(rng, (H, N), 24, 2))
    # Sand ripples in patches; slightly asymmetric crests, gently warped.
    yy, xx = np.mgrid[0:H, 0:N].astype(np.float32)
    wavelength, phi = rng.uniform(5, 11) * s, rng.uniform(0, np.pi)
    phase = (2 * np.pi * (xx * np.cos(phi) + yy * np.sin(phi)) / wavelength +
             2.5 * _smooth_noise(rng, (H, N), 3))
    patch = np.clip(1.5 * _smooth_noise(rng, (H, N), 2) + rng.uniform(-1, 1.5), 0, 1)
    z += rng.uniform(0.1, 0.3) * s * patch * (np.sin(phase) + 0.3 * np.sin(2 * phase))

    x_hi = np.sqrt(N**2 - alt.max()**2) - 2  # farthest ground range still inside the image
    x_lo = alt.max()  # nearer targets would be squeezed against the nadir band
    targets, taken = [], []  # taken: row bands (y0, y1) in use; each target owns its rows
    margin = int(6 * s)
    for name in names:
        for _ in range(20):
            h, r = _MAKERS[name](rng, s)
            ys, xs = np.nonzero(h > 0)
            c = h.shape[0] // 2
            lo_x, hi_x = x_lo + c - xs.min(), x_hi + c - xs.max() - 1
            lo_y, hi_y = c - ys.min() + 1, H - 2 - (ys.max() - c)
            if lo_x >= hi_x or lo_y >= hi_y:
                continue
            cy, cx = int(rng.integers(lo_y, hi_y)), int(rng.integers(lo_x, hi_x))
            band = (cy - c + ys.min() - margin, cy - c + ys.max() + margin)
            if all(band[1] < y0 or band[0] > y1 for y0, y1 in taken):
                break
        else:
            continue  # no room left on this side
        taken.append(band)
        fy, fx, hp = _paste(z, refl, h, r, cy, cx)
        footprint = np.zeros((H, N), bool)
        footprint[fy, fx] = hp > 0
        # The target alone on flat ground: its shadow, not the seabed's or a rock's.
        alone = np.zeros((H, N), np.float32)
        alone[fy, fx] = hp
        rows = slice(fy.start, fy.stop)
        shadow = np.zeros((H, N), bool)
        shadow[rows] = _occluded(alone[rows], alt[rows]) & ~footprint[rows]
        targets.append(dict(category=name, footprint=footprint, shadow=shadow))

    rocks = []
    for _ in range(num_rocks):
        h, r = _rock(rng, s)
        c = h.shape[0] // 2
        cy, cx = int(rng.integers(0, H)), int(rng.integers(int(x_lo), int(x_hi)))
        # Clutter stays clear of the targets, so no annotated box contains a rock.
        if any(o['footprint'][max(cy - c - 3, 0):cy + c + 4, max(cx - c - 3, 0):cx + c + 4].any()
               for o in targets):
            continue
        _paste(z, refl, h, r, cy, cx)
        rocks.append((cy, cx))

    x = np.arange(N, dtype=np.float32) + 0.5
    a = alt[:, None]
    dzdy, dzdx = np.gradient(z)
    cos_inc = (x * dzdx + a - z) / (np.sqrt(x**2 + (a - z)**2) * np.sqrt(1 + dzdx**2 + dzdy**2))
    cos_flat = a / np.sqrt(x**2 + a**2)
    shade = np.clip(cos_inc / cos_flat, 0, 6) * ~_occluded(z, alt)
    return (refl * shade).astype(np.float32), targets, rocks


def _to_slant(field: np.ndarray, alt: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Resample a ground-range field (H, N) onto slant range; nothing before the first return."""
    H, N = field.shape
    r = np.arange(N, dtype=np.float32) + 0.5
    ground = np.sqrt(np.clip(r**2 - alt[:, None]**2, 0, None)) - 0.5
    map_x = np.where(r > alt[:, None], ground, -10).astype(np.float32)
    map_y = np.repeat(np.arange(H, dtype=np.float32)[:, None], N, axis=1)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.remap(field, map_x, map_y, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _bbox(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
            float(ys.max() + 1 - ys.min())]


def render_sonar_image(rng: np.random.Generator, size: int = 256,
                       box_shadow: bool = False) -> dict:
    """Render one ``size`` x ``size`` side-scan waterfall image.

    Returns a dict: ``image`` (uint8, H x W), ``altitude`` (per row, in pixels: the nadir gap is
    ``W/2 - altitude .. W/2 + altitude``), ``targets`` (list of dicts with ``category``, ``bbox``
    (COCO xywh), ``side`` ('port'/'starboard') and full-image ``mask`` / ``shadow`` boolean arrays)
    and ``clutter`` (rock centres as (x, y) image pixels, not annotated).
    """
    assert size % 2 == 0 and size >= 64, f'size must be even and >= 64, got {size}'
    H, N, s = size, size // 2, size / 256
    alt = rng.uniform(14, 26) * s * (1 + 0.08 * _smooth_noise(rng, (H, 1), 3, 2)[:, 0])
    num_targets = rng.choice(4, p=[0.05, 0.6, 0.25, 0.1])
    names = [CLASSES[i] for i in rng.integers(0, len(CLASSES), num_targets)]
    sides = rng.integers(0, 2, num_targets)
    image = np.zeros((H, 2 * N), np.float32)
    targets, clutter = [], []
    for side in (0, 1):  # 0: port (drawn mirrored, range grows to the left), 1: starboard
        echo, objects, rocks = _render_side(rng, H, N, alt, s,
                                            [n for n, sd in zip(names, sides) if sd == side],
                                            int(rng.poisson(rng.uniform(2, 10))))
        r = np.arange(N, dtype=np.float32) + 0.5
        a = alt[:, None]
        # Imperfect TVG: over-bright first returns, far-range fall-off, side imbalance.
        gain = (rng.uniform(0.8, 1.2) * (1 + rng.uniform(0.3, 1.0) * np.exp(-(r - a) / (0.1 * N)))
                * (1 - rng.uniform(0.2, 0.6) * (r / N)**2))
        looks = rng.uniform(1.5, 4)
        speckle = np.sqrt(rng.standard_gamma(looks, (H, N), dtype=np.float32) / looks)
        floor = rng.uniform(0.08, 0.18) * np.sqrt(
            rng.standard_gamma(1.0, (H, N), dtype=np.float32))
        amp = _to_slant(echo, alt) * gain * speckle + floor
        # Beam spreading: along-track blur that grows with range.
        weight = (r / N)**1.5
        amp = (1 - weight) * amp + weight * cv2.blur(amp, (1, 5))
        amp = cv2.GaussianBlur(amp, (3, 1), 0.6)
        flip = (lambda m: m[:, ::-1]) if side == 0 else (lambda m: m)
        cols = slice(0, N) if side == 0 else slice(N, 2 * N)
        image[:, cols] = flip(amp)
        for cy, cx in rocks:
            col = int(np.sqrt((cx + 0.5)**2 + alt[cy]**2))  # ground -> slant range
            if col < N:
                clutter.append((N - 1 - col if side == 0 else N + col, cy))
        for obj in objects:
            full = {}
            for key in ('footprint', 'shadow'):
                m = np.zeros((H, 2 * N), bool)
                m[:, cols] = flip(_to_slant(obj[key].astype(np.uint8), alt, nearest=True) > 0)
                full[key] = m
            box_mask = full['footprint'] | full['shadow'] if box_shadow else full['footprint']
            targets.append(dict(category=obj['category'], bbox=_bbox(box_mask),
                                side=('port', 'starboard')[side], mask=full['footprint'],
                                shadow=full['shadow']))
    ping = 1 + 0.04 * rng.standard_normal((H, 1)).astype(np.float32)  # ping-to-ping gain jitter
    image *= ping
    # Display mapping: the median seabed echo lands mid-grey, highlights saturate softly.
    off_track = np.abs(np.arange(2 * N) + 0.5 - N)[None]
    seabed = image[off_track > 1.2 * alt[:, None]]
    k = np.arctanh(rng.uniform(0.3, 0.42)) / np.median(seabed)
    image = np.round(255 * np.tanh(k * image)).astype(np.uint8)
    return dict(image=image, altitude=alt, targets=targets, clutter=clutter)


def _split_to_coco(out_dir: str, split: str, num: int, size: int, seed: int,
                   box_shadow: bool) -> dict:
    images, annotations = [], []
    for i in range(num):
        # One stream per image: a split's images do not depend on the other split's length.
        rng = np.random.default_rng([seed, ('train', 'val').index(split), i])
        scene = render_sonar_image(rng, size, box_shadow)
        name = f'{split}_{i:05d}.png'
        cv2.imwrite(osp.join(out_dir, 'images', name), scene['image'])
        images.append(dict(id=i + 1, file_name=name, width=size, height=size))
        for t in scene['targets']:
            w, h = t['bbox'][2:]
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                    category_id=CLASSES.index(t['category']) + 1,
                                    bbox=t['bbox'], area=w * h, iscrowd=0))
    return dict(
        info=dict(description=f'mmlightbb synthetic side-scan sonar, {split} split',
                  version=str(GENERATOR_VERSION)),
        images=images, annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory='target') for i, n in enumerate(CLASSES)])


def _read_meta(out: str) -> Optional[dict]:
    try:
        with open(osp.join(out, 'meta.json')) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def make_sonar_dataset(out: str, num_train: int = 200, num_val: int = 50, size: int = 256,
                       seed: int = 0, box_shadow: bool = False) -> dict:
    """Write a synthetic SSS detection dataset to ``out`` unless it already holds one made with the
    same settings.

    Layout: ``images/{train,val}_NNNNN.png`` (8-bit gray), ``annotations/{train,val}.json`` (COCO)
    and ``meta.json`` (the settings). The dataset is built in a temporary folder next to ``out`` and
    renamed into place, so an interrupted run never leaves a partial dataset. Returns a summary.
    """
    out = osp.abspath(out)
    settings = dict(generator_version=GENERATOR_VERSION, num_train=num_train, num_val=num_val,
                    size=size, seed=seed, box_shadow=box_shadow)
    if _read_meta(out) == settings:
        return dict(out=out, skipped=True, settings=settings)
    if osp.exists(out) and _read_meta(out) is None and (not osp.isdir(out) or os.listdir(out)):
        raise FileExistsError(f'{out} exists and is not a dataset made by make_sonar_dataset '
                              '(no meta.json); choose another --out or remove it')
    start = time.perf_counter()
    parent = osp.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.tmp-', dir=parent)
    try:
        os.makedirs(osp.join(tmp, 'images'))
        os.makedirs(osp.join(tmp, 'annotations'))
        counts = {}
        for split, num in (('train', num_train), ('val', num_val)):
            coco = _split_to_coco(tmp, split, num, size, seed, box_shadow)
            with open(osp.join(tmp, 'annotations', f'{split}.json'), 'w') as f:
                json.dump(coco, f)
            counts[split] = dict(images=len(coco['images']), boxes=len(coco['annotations']))
        with open(osp.join(tmp, 'meta.json'), 'w') as f:  # written last: marks a complete dataset
            json.dump(settings, f, indent=2)
        if osp.exists(out):  # an older dataset of ours (other settings): swap it out
            old = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.old-', dir=parent)
            os.replace(out, osp.join(old, 'data'))
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, out)
            except OSError:
                # Another process finished the same dataset first: keep theirs.
                if _read_meta(out) != settings:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dict(out=out, skipped=False, settings=settings, splits=counts,
                seconds=time.perf_counter() - start)
