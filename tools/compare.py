"""Accuracy vs speed of several work dirs: Markdown table + mAP-vs-FPS (Pareto front) and
MACs-vs-latency plots; see ``mmlightbb/analysis/compare.py`` for where each number comes from.

    python tools/compare.py RUN_DIR [RUN_DIR ...] --out OUT_DIR [--metric pascal_voc/mAP]
        [--names NAME ...]

Each RUN_DIR is a work dir with the test results of tools/test.py (or val entries from training)
and ``benchmark.json`` from ``tools/benchmark.py CONFIG --out RUN_DIR/benchmark.json``.
"""
import argparse


def parse_args():
    parser = argparse.ArgumentParser(description='Compare mAP and speed of several runs')
    parser.add_argument('run_dirs', nargs='+', metavar='RUN_DIR', help='work dirs to compare')
    parser.add_argument('--out', required=True, metavar='OUT_DIR',
                        help='where compare.md/.json, map_vs_fps.png, macs_vs_latency.png go')
    parser.add_argument('--metric', help='metric key, e.g. pascal_voc/mAP (default: the first '
                        'of pascal_voc/mAP, coco/bbox_mAP_50, coco/bbox_mAP a run has)')
    parser.add_argument('--names', nargs='+', help='one display name per RUN_DIR '
                        '(default: the dir names)')
    return parser.parse_args()


def main():
    args = parse_args()
    from mmlightbb.analysis.compare import run_compare
    try:
        result, paths = run_compare(args.run_dirs, args.out, args.names, args.metric)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f'error: {err}') from None
    with open(paths['compare.md']) as f:
        print(f.read(), end='')
    print('written: ' + ', '.join(paths.values()))


if __name__ == '__main__':
    main()
