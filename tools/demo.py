"""The main job: every backbone with YOLOX and Cascade R-CNN, trained, tested and benchmarked on
synthetic side-scan sonar (CPU), compared in one table and plot.

    python tools/demo.py [--work-dir work_dirs/demo] [--data data/sonar_synth] [--epochs 8]
        [--cascade-epochs 0] [--size 160] [--heads yolox cascade] [--backbones fasternet ...]
        [--precision fp32|bf16|fp16] [--backends pytorch onnxruntime openvino] [--int8]
        [--seeds 1] [--retime]

``make demo`` runs it with the defaults (about 20 minutes on 2 cores). It is
``tools/compare_backbones.py`` on the synthetic set (made when absent); see
``mmlightbb/analysis/pipeline.py``. Run it again after an interruption: finished runs are kept.
"""
import argparse
import os


def parse_args():
    from mmlightbb.analysis.pipeline import DEMO_CASCADE_EPOCHS, DEMO_EPOCHS, DEMO_SIZE
    parser = argparse.ArgumentParser(description=' '.join(__doc__.split('\n\n')[0].split()))
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='one sub-dir per run, data/ and report/')
    parser.add_argument('--data', default='data/sonar_synth',
                        help='synthetic sonar dataset (generated here when absent)')
    parser.add_argument('--epochs', type=int, default=DEMO_EPOCHS,
                        help=f'training epochs of the YOLOX runs (default {DEMO_EPOCHS})')
    parser.add_argument('--cascade-epochs', type=int, default=DEMO_CASCADE_EPOCHS,
                        help=f'training epochs of the Cascade R-CNN runs (default '
                        f'{DEMO_CASCADE_EPOCHS}: timed only, not trained or tested)')
    parser.add_argument('--size', type=int, default=DEMO_SIZE,
                        help='image, training, test and benchmark size')
    parser.add_argument('--num-train', type=int, default=96, help='training images')
    parser.add_argument('--num-val', type=int, default=48, help='test images')
    parser.add_argument('--bench-iters', type=int, default=20, help='timed benchmark iterations')
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--heads', nargs='+', default=['yolox', 'cascade'], metavar='HEAD',
                        help='yolox and/or cascade')
    parser.add_argument('--backbones', nargs='+', metavar='BACKBONE',
                        help='family[:arch] or baseline (default: the five mmlightbb backbones '
                        'and each head\'s baseline)')
    parser.add_argument('--precision', default='fp32', metavar='{fp32,bf16,fp16}',
                        help='precision of every test and benchmark (default fp32; bf16 on CPUs '
                        'with avx512_bf16/amx_bf16, elsewhere fp32 with a warning; fp16 is CUDA '
                        'only, and the demo runs on the CPU)')
    parser.add_argument('--backends', nargs='+', default=['pytorch'], metavar='BACKEND',
                        help='pytorch (always), onnxruntime, openvino: runtimes the trained YOLOX '
                        'detectors are timed in too (Cascade R-CNN rows get a note)')
    parser.add_argument('--int8', action='store_true',
                        help='an INT8 row for each runtime of --backends too, calibrated on the '
                        'training images, timed and tested in that runtime')
    parser.add_argument('--seeds', type=int, default=1,
                        help='train every run this many times (seeds 0..N-1; default 1): the '
                        'report gives mean, standard deviation and every seed\'s mAP')
    parser.add_argument('--retime', action='store_true',
                        help='time every finished run side by side again')
    args = parser.parse_args()
    for name in ('num_train', 'num_val'):  # the rest is checked by ComparisonSettings
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


def main():
    os.environ['CUDA_VISIBLE_DEVICES'] = ''  # the demo measures the CPU (before torch is imported)
    args = parse_args()
    from mmlightbb.analysis.comparison import ComparisonError, RunFailures
    from mmlightbb.analysis.detector_configs import ConfigError
    from mmlightbb.analysis.pipeline import demo_settings, run_demo
    from mmlightbb.datasets import DatasetError
    try:
        settings = demo_settings(
            heads=args.heads, backbones=args.backbones, epochs=args.epochs,
            epochs_by_head={'cascade': args.cascade_epochs}, size=args.size,
            bench_iters=args.bench_iters, threads=args.threads, precision=args.precision,
            backends=args.backends, int8=args.int8, seeds=args.seeds, retime=args.retime)
        run_demo(settings, args.work_dir, args.data, args.num_train, args.num_val)
    except (ComparisonError, ConfigError, DatasetError, RunFailures) as err:
        raise SystemExit(f'error: {err}') from None


if __name__ == '__main__':
    main()
