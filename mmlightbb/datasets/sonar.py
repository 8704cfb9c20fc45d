"""Side-scan sonar detection dataset (COCO format) and an image loader for any bit depth."""
import logging
import os.path as osp
from typing import List, Optional

import cv2
import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS, TRANSFORMS
from mmengine import fileio
from mmengine.logging import print_log

GET_DATA_HINT = (
    'Make the synthetic set there with `python tools/make_sonar_dataset.py --out {root}` '
    "(it writes annotations/train.json, annotations/val.json and images/), or convert SCTD "
    '(Pascal VOC xml) to COCO json with `python tools/dataset_converters/voc2coco.py data/SCTD '
    '--out-dir '
    '{root}annotations` (see docs/configs.md), or point data_root at your data.')


@DATASETS.register_module()
class SonarDataset(CocoDataset):
    """Side-scan sonar targets in COCO format; the SCTD classes unless the config's ``metainfo``
    gives others.

    Category names in the json must match ``classes`` exactly (mmdet drops the others). A missing
    annotation file or image folder, or a json none of whose annotated categories is in
    ``classes``, raises an error that says how to fix it instead of failing later with an empty
    dataset ("need at least one array to concatenate", mmdet#9610).
    """

    METAINFO = dict(classes=('shipwreck', 'aircraft', 'victim'),
                    palette=[(220, 20, 60), (0, 130, 255), (255, 190, 0)])

    def load_data_list(self) -> List[dict]:
        self._check_paths()
        data_list = super().load_data_list()
        self._check_categories()
        return data_list

    def _is_local(self, path: str) -> bool:
        return self.backend_args is None and '://' not in path

    def _get_data_hint(self) -> str:
        root = self.data_root or 'data/sonar'
        return GET_DATA_HINT.format(root=root.rstrip('/') + '/')

    def _check_paths(self) -> None:
        if self._is_local(self.ann_file) and not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'{type(self).__name__}: annotation file not found: '
                                    f'{self.ann_file!r}. ' + self._get_data_hint())
        img_dir = self.data_prefix.get('img', '')
        if img_dir and self._is_local(img_dir) and not osp.isdir(img_dir):
            raise FileNotFoundError(f'{type(self).__name__}: image folder not found: {img_dir!r} '
                                    '(data_root + data_prefix.img). ' + self._get_data_hint())

    def _check_categories(self) -> None:
        annotated = {cat_id for cat_id, img_ids in self.cat_img_map.items() if img_ids}
        dropped = annotated - set(self.cat_ids)
        if not dropped:
            return
        categories = fileio.load(self.ann_file, backend_args=self.backend_args)['categories']
        names = {c['id']: c['name'] for c in categories}
        json_names = [names[i] for i in sorted(annotated)]
        classes = tuple(self.metainfo['classes'])
        if dropped == annotated:
            raise ValueError(
                f'{type(self).__name__}: none of the annotated categories in {self.ann_file!r} '
                f'{json_names} is one of the classes {classes}, so no annotation would be loaded. '
                'Set metainfo=dict(classes=...) to the json\'s category names (exact spelling, '
                'keep the trailing comma for one class) in every dataset of the config, or rename '
                'the categories (tools/dataset_converters/voc2coco.py --rename OLD=NEW).')
        print_log(f'{type(self).__name__}: annotations of categories '
                  f'{[names[i] for i in sorted(dropped)]} in {self.ann_file!r} are not in the '
                  f'classes {classes} and are ignored.', logger='current', level=logging.WARNING)


def to_bgr_uint8(img: np.ndarray, bit_depth: Optional[int] = None) -> np.ndarray:
    """A decoded image of any depth and channel count as a 3-channel uint8 (BGR) image.

    Integer images deeper than 8 bits are scaled by ``2**bit_depth - 1``; with ``bit_depth=None``
    by the smallest depth (at least 8 bits) that holds the image's maximum, e.g. 12 bits for sonar
    data stored in 16-bit files. Float images are scaled by their maximum.
    """
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.integer):
            depth = bit_depth or max(8, int(img.max()).bit_length())
            scale = 255 / (2**depth - 1)
        else:
            scale = 255 / max(float(img.max()), 1e-12)
        img = np.clip(np.round(img.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


UNREADABLE_HINT = (
    'Replace the file with a good copy, or delete it and its entry in the annotation file. '
    'Val/test pipelines stop here on purpose (a smaller test set gives a wrong mAP); a training '
    'pipeline can skip such images with LoadSonarImageFromFile(ignore_empty=True).')


class UnreadableImageError(OSError):
    """An image file that cannot be read or decoded (truncated, corrupt, not an image)."""


@TRANSFORMS.register_module()
class LoadSonarImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that keeps the contrast of 16-bit (and float) sonar images and says
    which file is unreadable.

    The stock loader already returns 3-channel uint8 for gray png, tif and bmp files, but it
    decodes with ``cv2.IMREAD_COLOR``, which keeps only the high byte of a 16-bit image: 12-bit
    sonar data (0..4095) comes out nearly black (0..15). This loader decodes the file unchanged
    and scales it with :func:`to_bgr_uint8`. Set ``bit_depth`` (e.g. 12) for the same scale on
    every image; by default each image's depth is inferred from its maximum.

    A missing or undecodable image (truncated copy, zero bytes, not an image) raises an error
    naming the file (``FileNotFoundError`` / :class:`UnreadableImageError`), which is what
    val/test pipelines need: a silently smaller test set would report a wrong mAP. Training
    pipelines set ``ignore_empty=True`` (mmcv's flag): the image is then skipped with a warning
    naming it and the number of distinct unreadable images this process has met, and mmengine's
    ``BaseDataset`` draws another index (train mode only; in test mode it refuses ``None``).

    Args:
        bit_depth (int, optional): bits per sample of integer images. Defaults to None.
        **kwargs: the arguments of ``LoadImageFromFile`` (``color_type`` is ignored: the output
            is always 3-channel; ``ignore_empty`` skips unreadable images with a warning).
    """

    def __init__(self, bit_depth: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bit_depth = bit_depth
        self._skipped = set()  # unreadable files already reported

    def transform(self, results: dict) -> Optional[dict]:
        filename = results['img_path']
        try:
            img = self._read(filename)
        except (FileNotFoundError, UnreadableImageError) as err:
            if not self.ignore_empty:
                raise type(err)(f'{err} {UNREADABLE_HINT}') from None
            if filename not in self._skipped:  # once per file, not once per epoch
                self._skipped.add(filename)
                print_log(f'{type(self).__name__} (ignore_empty=True) skipped an image: {err} '
                          f'{len(self._skipped)} unreadable image(s) so far in this process; '
                          'training goes on with the others.', logger='current',
                          level=logging.WARNING)
            return None
        img = to_bgr_uint8(img, self.bit_depth)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def _read(self, filename: str) -> np.ndarray:
        """The decoded image; FileNotFoundError or UnreadableImageError naming the file."""
        try:
            img_bytes = fileio.get(filename, backend_args=self.backend_args)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'image not found: {filename!r} (data_root + data_prefix.img + file_name in the '
                'annotation file).') from None
        except OSError as err:  # a directory, no permission, ...
            raise UnreadableImageError(f'cannot read image {filename!r} ({err}).') from None
        try:
            img = mmcv.imfrombytes(img_bytes, flag='unchanged', backend=self.imdecode_backend)
        except Exception as err:  # cv2 raises on an empty buffer, other backends on bad data
            img, reason = None, f'{type(err).__name__}: {str(err).strip()[:120]}'
        else:
            reason = 'the decoder returned nothing'
        if img is None:
            raise UnreadableImageError(
                f'cannot decode image {filename!r} ({len(img_bytes)} bytes; {reason}): it is '
                'truncated, corrupt or not an image.')
        return img

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(bit_depth={self.bit_depth}, to_float32={self.to_float32}, '
                f'ignore_empty={self.ignore_empty})')
