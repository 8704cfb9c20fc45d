"""Compare backbones on your own dataset: YOLOX and Cascade R-CNN, mAP against FPS, one command.

    python tools/compare_backbones.py DATA --out work_dirs/cmp [--heads yolox cascade]
        [--backbones fasternet:t0 cspconvnext baseline ...] [--epochs 12] [--size 320]
        [--batch-size 8] [--device cpu|cuda] [--threads 2] [--pretrained fasternet:t0=CKPT]
        [--classes A B] [--split-seed 0] [--val-ratio 0.2] [--quick]
        [--precision fp32|bf16|fp16] [--backends pytorch onnxruntime openvino] [--int8]
        [--seeds 1] [--seed 0] [--bootstrap 1000] [--retime]
        [--parallel K] [--gpus-per-run N]
        [--launcher slurm [--partition P] [--time HH:MM:SS] [--slurm-args "..."] [--no-wait]]

DATA is a dataset folder in Pascal VOC (Annotations/*.xml + JPEGImages/, optional
ImageSets/Main/*.txt), COCO (annotations/*.json + images) or YOLO-txt layout (images/ + labels/,
class names in classes.txt, obj.names or data.yaml; optional images/{train,val} sub-splits). For
every head x backbone it trains on one schedule, tests (VOC mAP50, COCO mAP) and benchmarks the
deployed detector at the test scale; OUT/report/ gets compare.md, compare.json, map_vs_fps.png
and macs_vs_latency.png, OUT/<run>/<run>.py the config of each run (python tools/train.py runs
it as it is). --precision is that of every test and benchmark; --backends adds runtimes the
trained detector is timed in (one report row each) and tested in (the row's own mAP); --int8 adds
an INT8 row for each of those runtimes (calibrated on the training split). Run it again with the
same arguments after an interruption: finished runs are skipped, an unfinished one resumes from its last checkpoint; with
more --backends, finished runs are only timed in the new ones; with more --seeds, only the new
seeds are trained. Every mAP gets a 95 % bootstrap interval over the test images, the runs are
timed side by side after all training (--retime: again), and compare.md opens with the verdict of
which differences are outside the noise. --parallel trains K runs at once on disjoint cores or GPUs,
--gpus-per-run N trains each with N processes (torchrun; on CPU N gloo processes), --launcher
slurm submits each run as a Slurm job (README "On a cluster"); the runs are timed together where
the command runs, after all training. See the package
mmlightbb/analysis/comparison/ (plan.py, runs.py, job.py) and mmlightbb/analysis/detector_configs.py
(the schedules).
"""
import argparse
import os
import shlex
import sys

HEADS = ('yolox', 'cascade')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='backbones: convnext, cspconvnext, fasternet, replknet, parameternet (mmlightbb), '
        'cspdarknet (YOLOX), resnet and mobilenetv2 (mmdet), each optionally :ARCH (e.g. '
        "fasternet:t0, resnet:18, cspdarknet:tiny, mobilenetv2:0.5); 'baseline' = cspdarknet:s "
        'for yolox and resnet:50 for cascade (--quick: cspdarknet:tiny / resnet:18); '
        "rtmdet:tiny = mmdet's whole RTMDet-tiny detector as a row of the yolox runs.")
    parser.add_argument('data', metavar='DATA', help='dataset folder (VOC, COCO or YOLO layout)')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='output folder: data/ (COCO json), one folder per run, report/')
    parser.add_argument('--heads', nargs='+', default=None, metavar='HEAD',
                        help=f'detector heads to compare (default: {" ".join(HEADS)})')
    parser.add_argument('--backbones', '--archs', nargs='+', default=None, metavar='BACKBONE',
                        help='backbones as family[:arch] (default: every mmlightbb family at its '
                        'default arch + baseline; --quick: fasternet:t0 cspconvnext:e-mini '
                        'parameternet:ghostnet baseline rtmdet:tiny)')
    parser.add_argument('--epochs', type=int, help='training epochs of every run (default 12, '
                        'or enough for 300 iterations on a small set; --quick: 4, or enough for '
                        '120 iterations)')
    parser.add_argument('--cascade-epochs', type=int,
                        help='epochs of the Cascade R-CNN runs if not --epochs (0: timed '
                        'only: built with their initial weights, not trained or tested)')
    parser.add_argument('--size', type=int, help='image size (multiple of 32): training, test and '
                        'benchmark scale (default: the median image side rounded up to 32, '
                        'within 128..640; --quick: at most 160)')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='training and test batch (default 8)')
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        help='default: cuda if available, else cpu')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads for training and benchmark (default: all cores)')
    parser.add_argument('--pretrained', nargs='+', default=[], metavar='BACKBONE=CKPT',
                        help='backbone weights: a file or a named download, e.g. '
                        'fasternet:t2=mmlightbb://fasternet_t2 or resnet:50=torchvision://resnet50 '
                        '(python tools/weights.py list; default: from scratch)')
    parser.add_argument('--classes', nargs='+', help='use only these classes, in this order '
                        '(default: every annotated class; YOLO sets without a names file: the '
                        'names of class ids 0, 1, ...)')
    parser.add_argument('--split-seed', type=int, default=0,
                        help='seed of the random split when DATA has no split files (default 0)')
    parser.add_argument('--val-ratio', type=float, default=0.2,
                        help='share of images in the test split when DATA has no split files '
                        '(default 0.2)')
    parser.add_argument('--bench-iters', type=int, default=20,
                        help='timed benchmark iterations per run (default 20)')
    # no argparse choices: the library names the fix in one error line, as for --heads
    parser.add_argument('--precision', default='fp32', metavar='{fp32,bf16,fp16}',
                        help='precision of every test (mAP) and benchmark: fp32 (default); bf16 '
                        'autocast on CPUs with avx512_bf16/amx_bf16 (elsewhere fp32, with a '
                        'warning); fp16 autocast, CUDA only. Part of a run\'s settings')
    parser.add_argument('--backends', nargs='+', default=['pytorch'], metavar='BACKEND',
                        help='pytorch (always timed), onnxruntime, openvino: time the trained '
                        'YOLOX detector exported with box decoding and NMS in these runtimes too '
                        '(CPU; one benchmark-<backend>-<precision>.json each; a detector that '
                        'does not export, e.g. Cascade R-CNN, gets a note). Adding one to a '
                        'finished comparison times its runs without training them again')
    parser.add_argument('--int8', action='store_true',
                        help='also quantize each runtime of --backends to INT8 (OpenVINO: NNCF; '
                        'ONNX Runtime: QDQ per-channel), calibrated on the training images, and '
                        'time and test it there: one more row per runtime. Added to a finished '
                        'comparison, it only quantizes, times and tests')
    parser.add_argument('--seeds', type=int, default=1,
                        help='train every run this many times, with seeds SEED..SEED+N-1 (default '
                        '1); the report gives the mean, standard deviation and every seed\'s mAP. '
                        'More seeds on a finished comparison train only the new ones')
    parser.add_argument('--seed', type=int, default=0,
                        help='the first training seed (default 0; a run of seed 0 keeps the plain '
                        'folder name, seed S > 0 adds _seedS)')
    parser.add_argument('--bootstrap', type=int, default=1000, metavar='N',
                        help='resamples of the test images behind each mAP\'s 95 %% interval '
                        '(default 1000; from the saved detections, no retraining)')
    parser.add_argument('--retime', action='store_true',
                        help='time every finished run side by side again (after any training; '
                        'nothing is retrained)')
    parser.add_argument('--parallel', type=int, default=1, metavar='K',
                        help='train K runs at once on this machine, each on its own cores (CPU) '
                        'or GPUs (default 1: one after another in this process)')
    parser.add_argument('--gpus-per-run', type=int, default=1, metavar='N',
                        help='train each run with N processes, one per GPU (torchrun, or srun '
                        'under --launcher slurm; on CPU N gloo processes); default 1')
    parser.add_argument('--launcher', default='local', metavar='{local,slurm}',
                        help='local (default) or slurm: one Slurm job per unfinished run '
                        '(sbatch), followed until all have ended; the same command again '
                        'collects, resubmits failed or cancelled runs (they resume) and never '
                        'submits a run twice while its job is pending or running')
    parser.add_argument('--partition', help='Slurm partition of the jobs (default: the '
                        "cluster's default)")
    parser.add_argument('--time', dest='time_limit', metavar='HH:MM:SS',
                        help='Slurm time limit of each job')
    parser.add_argument('--slurm-args', default='', metavar='"ARGS"',
                        help='more sbatch options for every job, e.g. "--account=A --qos=Q"')
    parser.add_argument('--no-wait', action='store_true',
                        help='with --launcher slurm: submit and return; run the same command '
                        'again to follow the jobs and write the report')
    parser.add_argument('--quick', action='store_true',
                        help='a preset for a 2-core CPU: size <= 160, 4 epochs (at least 120 '
                        'iterations), the small archs and baselines')
    args = parser.parse_args(argv)
    pretrained = {}
    for item in args.pretrained:
        key, sep, path = item.partition('=')
        if not sep or not key or not path:
            parser.error(f'--pretrained {item!r}: use BACKBONE=CHECKPOINT, e.g. '
                         'fasternet:t0=weights/fasternet_t0.pth')
        pretrained[key] = path
    args.pretrained = pretrained
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # before torch is imported: train on the CPU
    from mmlightbb.analysis.comparison import (ComparisonError, ComparisonSettings,
                                               RunFailures, compare_backbones)
    from mmlightbb.analysis.detector_configs import ConfigError
    from mmlightbb.datasets import DatasetError
    epochs_by_head = None if args.cascade_epochs is None else {'cascade': args.cascade_epochs}
    try:
        settings = ComparisonSettings(
            heads=args.heads or HEADS, backbones=args.backbones, epochs=args.epochs,
            size=args.size, batch_size=args.batch_size, device=args.device,
            threads=args.threads, pretrained=args.pretrained, split_seed=args.split_seed,
            val_ratio=args.val_ratio, classes=args.classes, quick=args.quick,
            epochs_by_head=epochs_by_head, bench_iters=args.bench_iters,
            precision=args.precision, backends=args.backends, int8=args.int8, seeds=args.seeds,
            seed=args.seed,
            bootstrap=args.bootstrap, retime=args.retime, launcher=args.launcher,
            parallel=args.parallel, gpus_per_run=args.gpus_per_run, partition=args.partition,
            time_limit=args.time_limit, slurm_args=shlex.split(args.slurm_args),
            wait=not args.no_wait)
        compare_backbones(args.data, args.out, settings)
    except (ComparisonError, ConfigError, DatasetError, RunFailures) as err:
        raise SystemExit(f'error: {err}') from None
    except KeyboardInterrupt:
        print(f'\ninterrupted: run the same command again to go on (finished runs are kept, '
              f'the current one resumes from its last checkpoint in {args.out})', file=sys.stderr)
        raise SystemExit(130)


if __name__ == '__main__':
    main()
