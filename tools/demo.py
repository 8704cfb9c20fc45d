"""The main job: train, test and benchmark YOLOX with every backbone on synthetic sonar (CPU).

    python tools/demo.py [--work-dir work_dirs/demo] [--data data/sonar_synth] [--epochs 8]
        [--size 160] [--runs yolox_fasternet yolox_s_cspdarknet ...]

``make demo`` runs it with the defaults (about 20 minutes on 2 cores); see
``mmlightbb/analysis/pipeline.py`` for what each step does.
"""
import argparse
import os.path as osp

from mmlightbb.analysis.pipeline import DEMO_RUNS, run_demo

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))  # DEMO_RUNS' configs are relative to it


def parse_args():
    names = [name for name, _ in DEMO_RUNS]
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo', help='one sub-dir per run + report/')
    parser.add_argument('--data', default='data/sonar_synth',
                        help='synthetic sonar dataset (generated here when absent)')
    parser.add_argument('--epochs', type=int, default=8, help='training epochs of every run')
    parser.add_argument('--size', type=int, default=160, help='image, training and test size')
    parser.add_argument('--num-train', type=int, default=96, help='training images')
    parser.add_argument('--num-val', type=int, default=48, help='test images')
    parser.add_argument('--bench-iters', type=int, default=20, help='timed benchmark iterations')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--runs', nargs='+', choices=names, default=names, metavar='RUN',
                        help=f'subset of the runs ({", ".join(names)})')
    args = parser.parse_args()
    for name in ('epochs', 'size', 'num_train', 'num_val', 'bench_iters', 'threads'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


def main():
    args = parse_args()
    runs = [(name, osp.join(REPO, config)) for name, config in DEMO_RUNS if name in args.runs]
    run_demo(args.work_dir, args.data, runs, args.epochs, args.size, args.num_train,
             args.num_val, args.bench_iters, args.threads)


if __name__ == '__main__':
    main()
