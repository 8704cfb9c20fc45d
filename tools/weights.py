"""The official ImageNet weights that
``init_cfg=dict(type='Pretrained', checkpoint='mmlightbb://NAME')`` loads by name.

    python tools/weights.py list [--family FasterNet]  # name, arch, params, top-1, source, URL
    python tools/weights.py info NAME                   # every field of one entry
    python tools/weights.py download NAME [NAME ...]    # into the cache now (before going offline)

Files are cached in ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME/hub/checkpoints). Entries
marked "manual download" must be fetched by hand from the page shown and saved there under the
file name shown.
"""
import argparse
import os.path as osp
from dataclasses import fields

from mmlightbb.engine.downloads import PretrainedWeightsError, cache_dir, cached_path, fetch_weights
from mmlightbb.models.pretrained import PRETRAINED, SCHEME, get_weights

COLUMNS = ('name', 'family', 'arch', 'trained on', 'res', 'params M', 'top-1', 'cached',
           'source', 'URL')


def _short_source(entry) -> str:
    first = entry.source.split(' ')[0]
    return first.split('github.com/')[-1].split('/blob/')[0] if 'github.com/' in first else first


def rows(family=None):
    for entry in PRETRAINED.values():
        if family and entry.family.lower() != family.lower():
            continue
        yield (entry.name, entry.family, entry.arch, entry.trained_on, str(entry.resolution),
               f'{entry.params_m:.2f}', '-' if entry.top1 is None else f'{entry.top1:.2f}',
               'yes' if osp.isfile(cached_path(entry)) else 'no', _short_source(entry),
               entry.url or f'manual download: {entry.manual_url}')


def print_table(family=None) -> None:
    table = [COLUMNS, *rows(family)]
    if len(table) == 1:
        raise SystemExit(f'error: no weights for family {family!r}; families: '
                         f'{sorted({e.family for e in PRETRAINED.values()})}')
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    for row in table:
        print('  '.join(c.ljust(w) for c, w in zip(row, widths)) + '  ' + row[-1])
    print(f'\nparams: the classification form with a 1000-class head; top-1: published ImageNet-1k '
          f'(%; "-" for a 22k/73M-class pre-training checkpoint). Use a name as '
          f"init_cfg=dict(type='Pretrained', checkpoint='{SCHEME}NAME'). Cache: {cache_dir()}")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='The official ImageNet weights that mmlightbb:// names load')
    sub = parser.add_subparsers(dest='command', required=True)
    list_parser = sub.add_parser('list', help='print the weight table')
    list_parser.add_argument('--family', help='only this backbone class, e.g. FasterNet')
    info = sub.add_parser('info', help='every field of one entry')
    info.add_argument('name')
    download = sub.add_parser('download', help='download into the cache now')
    download.add_argument('names', nargs='+', metavar='NAME')
    args = parser.parse_args(argv)
    try:
        if args.command == 'list':
            print_table(args.family)
        elif args.command == 'info':
            entry = get_weights(args.name)
            for f in fields(entry):
                print(f'{f.name}: {getattr(entry, f.name)}')
            print(f'cache file: {cached_path(entry)}')
        else:
            for name in args.names:
                print(f'{name}: {fetch_weights(name)}')
    except (KeyError, PretrainedWeightsError) as err:
        raise SystemExit(f'error: {err.args[0]}') from None


if __name__ == '__main__':
    main()
