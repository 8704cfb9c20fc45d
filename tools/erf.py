"""Effective receptive field maps of detector backbones (the RepLKNet paper's method; see
``mmlightbb/analysis/erf.py``).

    python tools/erf.py CONFIG [CONFIG ...] [--checkpoint CKPT [CKPT ...]] [--pretrained]
        [--images DIR] [--num-images 50] [--size 1024] [--out-dir work_dirs/erf] [--stage -1]
        [--mode abs|relu] [--seed 0]

Writes ``<config name>.png`` and ``.npy`` per backbone and ``erf.png`` (side by side) to
``--out-dir``, and prints the high-contribution area ratios (20/30/50/99 %). Without
``--checkpoint`` the backbones are randomly initialised (random BN statistics); ``--pretrained``
uses each config's ``init_cfg`` (e.g. ImageNet weights) instead. Without ``--images`` the images
are synthetic side-scan sonar made on the fly.
"""
import argparse
import sys

from mmlightbb.analysis.erf import run_erf


def parse_args():
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('configs', nargs='+', metavar='CONFIG', help='detector config file(s)')
    parser.add_argument('--checkpoint', nargs='+', metavar='CKPT',
                        help="one checkpoint per config ('none' = random init for that one)")
    parser.add_argument('--pretrained', action='store_true',
                        help="without a checkpoint, load the config's init_cfg (e.g. ImageNet) "
                        'instead of a random initialisation')
    parser.add_argument('--images', metavar='DIR',
                        help='folder of images (default: synthetic sonar images)')
    parser.add_argument('--num-images', type=int, default=50, help='images to average over')
    parser.add_argument('--size', type=int, default=1024, help='square input size (paper: 1024)')
    parser.add_argument('--out-dir', default='work_dirs/erf', help='where the PNG/NPY files go')
    parser.add_argument('--stage', type=int, default=-1,
                        help='which returned backbone map (index into its outputs; -1 = last)')
    parser.add_argument('--mode', choices=['abs', 'relu'], default='abs',
                        help="abs: |gradient|; relu: the official script's ReLUs")
    parser.add_argument('--seed', type=int, default=0, help='random init and synthetic images')
    return parser.parse_args()


def main():
    args = parse_args()
    checkpoints = None
    if args.checkpoint:
        checkpoints = [None if c.lower() == 'none' else c for c in args.checkpoint]
        if len(checkpoints) == 1 and len(args.configs) > 1:
            sys.exit('ERF: give one --checkpoint per config (use none for random init)')
    try:
        run_erf(args.configs, checkpoints, images=args.images, num_images=args.num_images,
                size=args.size, out_dir=args.out_dir, stage=args.stage, mode=args.mode,
                pretrained=args.pretrained, seed=args.seed)
    except ValueError as exc:
        sys.exit(str(exc))


if __name__ == '__main__':
    main()
