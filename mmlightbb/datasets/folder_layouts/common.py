"""What the readers of all three layouts share: :class:`DatasetError`, the one-line lists of names,
the file helpers, the image records and :class:`_ImageIndex` (finding an annotated image file)."""
import os
import os.path as osp
from typing import List, Optional, Sequence

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.pgm', '.ppm')
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
