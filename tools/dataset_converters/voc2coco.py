"""Convert a Pascal VOC folder (e.g. SCTD) to COCO json, one file per split.

    python tools/dataset_converters/voc2coco.py data/SCTD [--out-dir data/SCTD/annotations] \
        [--img-dir JPEGImages] \
        [--splits train val] [--classes shipwreck aircraft victim] [--rename ship=shipwreck]

Splits come from ``ImageSets/Main/<split>.txt``; without split files every xml goes to
``all.json``. Malformed xml files, missing images and invalid boxes are skipped and reported.
"""
import argparse
import sys

from mmlightbb.datasets.voc2coco import convert_voc, format_report


def parse_args():
    parser = argparse.ArgumentParser(description='Convert Pascal VOC xml annotations to COCO json')
    parser.add_argument('voc_root', help='folder with Annotations/, the images and ImageSets/')
    parser.add_argument('--out-dir', help='output folder (default: <voc_root>/annotations)')
    parser.add_argument('--ann-dir', default='Annotations', help='xml folder under voc_root')
    parser.add_argument('--img-dir', help='image folder under voc_root (default: the first of '
                        'JPEGImages, images, Images, img that exists)')
    parser.add_argument('--split-dir', default='ImageSets/Main',
                        help='folder of <split>.txt id lists under voc_root')
    parser.add_argument('--splits', nargs='+', help='splits to convert (default: every '
                        '<split>.txt in --split-dir, or one "all" split without split files)')
    parser.add_argument('--classes', nargs='+',
                        help='class names in label order (default: all names found, sorted)')
    parser.add_argument('--rename', nargs='+', default=[], metavar='OLD=NEW',
                        help='rename classes of the xml files, e.g. ship=shipwreck')
    return parser.parse_args()


def main():
    args = parse_args()
    if any('=' not in item for item in args.rename):
        sys.exit(f'error: --rename takes OLD=NEW pairs, got {args.rename}')
    rename = dict(item.split('=', 1) for item in args.rename)
    try:
        result = convert_voc(args.voc_root, args.out_dir, args.ann_dir, args.img_dir,
                             args.split_dir, args.splits, args.classes, rename)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    if format_report(result['report']):
        print(format_report(result['report']))
    print(f'classes: {result["classes"]}')
    for split, info in result['splits'].items():
        print(f'{split}: {info["images"]} images, {info["annotations"]} boxes -> {info["file"]}')
    print(f"config: data_root='{args.voc_root}/', data_prefix=dict(img='{result['img_dir']}/'), "
          f"metainfo=dict(classes={tuple(result['classes'])})")


if __name__ == '__main__':
    main()
