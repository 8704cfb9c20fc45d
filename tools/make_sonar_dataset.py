"""Write the synthetic side-scan sonar detection dataset (COCO json, 8-bit gray png).

    python tools/make_sonar_dataset.py --out data/sonar_synth --num-train 200 --num-val 50 \
        --size 256 --seed 0

Does nothing when ``--out`` already holds a dataset made with the same settings. See
``mmlightbb/datasets/synthetic_sonar.py`` for the image model and the box convention.
"""
import argparse

from mmlightbb.datasets.synthetic_sonar import make_sonar_dataset


def parse_args():
    parser = argparse.ArgumentParser(description='Make a synthetic side-scan sonar dataset')
    parser.add_argument('--out', default='data/sonar_synth', help='output folder')
    parser.add_argument('--num-train', type=int, default=200, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='validation images')
    parser.add_argument('--size', type=int, default=256, help='image side (even, >= 64)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--box-shadow', action='store_true',
                        help='box each object together with its acoustic shadow')
    return parser.parse_args()


def main():
    args = parse_args()
    summary = make_sonar_dataset(args.out, args.num_train, args.num_val, args.size, args.seed,
                                 args.box_shadow)
    if summary['skipped']:
        print(f'{summary["out"]} already holds this dataset ({summary["settings"]}); nothing to do')
        return
    for split, counts in summary['splits'].items():
        print(f'{split}: {counts["images"]} images, {counts["boxes"]} boxes -> '
              f'{summary["out"]}/annotations/{split}.json')
    print(f'images in {summary["out"]}/images/, settings in {summary["out"]}/meta.json '
          f'({summary["seconds"]:.1f} s)')


if __name__ == '__main__':
    main()
