"""Helpers of tools/gpu/wheels.sh and tools/gpu/check.sh (docs/gpu.md). Most run before anything
is installed: the standard library only, plus the packaging module vendored in pip (the carried pip
wheel is on PYTHONPATH) for ``fit`` and ``make-venv``; ``probe``, ``smoke`` and ``bench`` import
the stack.

    kit.py repack WHEEL...                 recompress wheels with LZMA (~30 % smaller; pip reads it)
    kit.py fit [--strict] WHEEL...         the wheels this interpreter can install
    kit.py make-venv VENV REPO [--guard LOG]   the check's venv (see make_venv)
    kit.py probe [--cuda]                  the machine, as JSON
    kit.py smoke [--cuda]                  import the stack; run mmcv's nms/roi_align on CUDA vs CPU
    kit.py bench OUT_DIR [--cpu]           tools/benchmark.py for every backbone and YOLOX-T2
    kit.py build-info LOG ARCH JOBS NOTE   the build settings, first failing file and errors, as JSON
    kit.py report OUT_DIR                  report.json + report.md from what the steps left there
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
# What the GPU machine is taken to have (with their dependencies): the dry run hides the rest.
PROVIDED_ROOTS = ('torch', 'torchvision', 'numpy', 'pillow', 'onnx', 'onnxruntime')
# Host distributions that provide a carried one's modules: the dry run without gpu_wheels/ uses
# them (with the wheels, the venv's own copy comes first on sys.path).
STANDS_IN = {'opencv-python': 'opencv-python-headless'}


def normalize(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


# ----------------------------------------------------------------------------------------- wheels
def repack(paths):
    """Rewrite each wheel with LZMA compression (same members, attributes and RECORD)."""
    for path in paths:
        with zipfile.ZipFile(path) as src:
            infos = src.infolist()
            if all(info.compress_type == zipfile.ZIP_LZMA for info in infos):
                continue
            tmp = path + '.lzma'
            with zipfile.ZipFile(tmp, 'w') as dst:
                for info in infos:
                    dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_LZMA)
        os.replace(tmp, path)


def fit(paths, strict):
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename
    ours = set(sys_tags())
    misfits = [p for p in paths if not ours & parse_wheel_filename(os.path.basename(p))[3]]
    if strict and misfits:
        sys.exit(f"fit: {', '.join(map(os.path.basename, misfits))} cannot be installed by Python "
                 f'{sys.version.split()[0]} on this platform; run tools/gpu/wheels.sh for CPython '
                 '3.12 manylinux x86_64 (or set PYTHON to a 3.12 interpreter)')
    print('\n'.join(p for p in paths if p not in misfits))


# ------------------------------------------------------------------------------------------- venv
def host_sites():
    """The site-packages directories this interpreter sees (system, user, or its own venv's)."""
    return [p for p in dict.fromkeys(sys.path)
            if os.path.basename(p) in ('site-packages', 'dist-packages') and os.path.isdir(p)]


def make_venv(venv_dir, repo, guard_log):
    """A venv whose own site-packages takes the carried wheels and comes first; a ``.pth`` file
    then adds the repository and this interpreter's site-packages (torch and what else the machine
    has). Every process started with its python, subprocesses of the tests included, sees that
    whatever PYTHONPATH they are given.

    With ``guard_log`` (the dry run) it sees, instead of those site-packages, a copy made of
    symbolic links to what the GPU machine has too: the carried and the provided distributions
    (PROVIDED_ROOTS and their dependencies). The rest is absent, as it is there; the guard
    (guard.py) writes every import of it that was tried to ``guard_log``."""
    import sysconfig
    import venv
    venv.EnvBuilder(with_pip=False, clear=True, symlinks=True).create(venv_dir)
    site_dir = sysconfig.get_path('purelib', 'venv', vars={'base': venv_dir, 'platbase': venv_dir})
    sites = host_sites()
    if guard_log:
        shadow = os.path.join(venv_dir, 'gpu_machine_site')
        absent = shadow_site(sites, shadow)
        sites = [shadow]
        shutil.copy(os.path.join(HERE, 'guard.py'), os.path.join(site_dir, '_gpu_kit_guard.py'))
        with open(os.path.join(site_dir, '_gpu_kit_guard.pth'), 'w') as f:
            f.write('import _gpu_kit_guard\n')
        with open(os.path.join(site_dir, '_gpu_kit_guard.json'), 'w') as f:
            json.dump(dict(absent=absent, log=guard_log), f, indent=1)
    with open(os.path.join(site_dir, 'gpu_kit.pth'), 'w') as f:
        f.write(repo + '\n' + ''.join(f'import site; site.addsitedir({s!r})\n' for s in sites))
    print(site_dir)


def carried_names():
    """The pinned wheels, and mmcv (built from its carried source on the machine)."""
    with open(os.path.join(HERE, 'requirements.txt')) as f:
        return {'mmcv'} | {normalize(ln.split('==')[0]) for ln in f if ln.strip()[:1].isalnum()}


def shadow_site(sites, shadow):
    """Link into ``shadow`` the top-level entries (packages, modules, libraries, metadata) of the
    distributions in ``sites`` that the GPU machine has; return {top-level module: distribution}
    of those it lacks."""
    from importlib import metadata

    from pip._vendor.packaging.requirements import Requirement
    dists = {}
    for dist in metadata.distributions(path=sites):
        dists.setdefault(normalize(dist.metadata['Name']), dist)
    carried = carried_names()
    allowed = {n for n in dists if n in carried or STANDS_IN.get(n) in carried}
    todo = [r for r in PROVIDED_ROOTS if r in dists]
    while todo:  # PROVIDED_ROOTS and their dependencies
        name = todo.pop()
        allowed.add(name)
        for text in dists[name].requires or []:
            req = Requirement(text)
            dep = normalize(req.name)
            if (req.marker is None or req.marker.evaluate({'extra': ''})) and dep in dists \
                    and dep not in allowed:
                todo.append(dep)
    os.makedirs(shadow)
    absent = {}
    for name, dist in dists.items():
        tops = {f.parts[0] for f in dist.files or [] if f.parts[0] != '..'}
        for top in tops:
            if name in allowed and not os.path.lexists(os.path.join(shadow, top)):
                os.symlink(dist.locate_file(top), os.path.join(shadow, top))
            elif name not in allowed and top.split('.')[0].isidentifier():
                absent.setdefault(top.split('.')[0], name)
    return absent


# ------------------------------------------------------------------------------ probe and smoke
def probe(cuda):
    """Python, torch, CUDA, the GPU, nvcc, gcc, cores. With ``cuda``: exit 1 without a GPU."""
    info = dict(python=sys.version.split()[0], executable=sys.executable, cores=os.cpu_count(),
                cpu=_cpu_name())
    for tool, args in (('nvcc', ['--version']), ('gcc', ['--version'])):
        try:
            out = subprocess.run([tool, *args], capture_output=True, text=True).stdout
            info[tool] = [ln for ln in out.splitlines() if ln.strip()][-1 if tool == 'nvcc' else 0]
        except (OSError, IndexError):
            info[tool] = None
    try:
        import torch
    except ImportError as err:
        info['torch'] = None
        print(json.dumps(info, indent=1))
        sys.exit(f'probe: {sys.executable} has no torch ({err}); set PYTHON to the interpreter '
                 'that has it')
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability='%d.%d' % (props.major, props.minor),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpus=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported())
    print(json.dumps(info, indent=1))
    if cuda and not info['cuda_available']:
        sys.exit(f'probe: torch {torch.__version__} sees no CUDA device; on a machine without a '
                 'GPU run: bash tools/gpu/check.sh OUT_DIR --cpu-dry-run')


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            return next(ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name'))
    except (OSError, StopIteration):
        return None


def smoke(cuda):
    """Import the stack (printing where each package comes from); with ``cuda`` mmcv's compiled
    nms and roi_align on CUDA give the CPU's results."""
    import cv2
    import mmcv
    import mmdet
    import mmdet.models  # noqa: F401  (imports mmcv.ops)
    import mmengine
    import torch
    from mmcv import ops

    import mmlightbb
    for module in (torch, mmcv, mmengine, mmdet, cv2, mmlightbb):
        print(f'{module.__name__} {module.__version__} {os.path.dirname(module.__file__)}')
    print(f'mmcv ops: compiled with {ops.get_compiler_version()}, CUDA '
          f'{ops.get_compiling_cuda_version()}')
    if not cuda:
        return
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + 8 + torch.rand(300, 2, generator=g) * 60], 1)
    scores = torch.rand(300, generator=g)
    keep_cpu = ops.nms(boxes, scores, 0.5)[1]
    keep_cuda = ops.nms(boxes.cuda(), scores.cuda(), 0.5)[1].cpu()
    assert torch.equal(keep_cpu, keep_cuda), 'mmcv nms: CUDA keeps other boxes than the CPU'
    feats = torch.rand(2, 16, 32, 32, generator=g)
    rois = torch.cat([torch.randint(0, 2, (50, 1), generator=g).float(), boxes[:50] / 8], 1)
    align = ops.RoIAlign((7, 7), 1.0, sampling_ratio=2, aligned=True)
    diff = (align(feats, rois) - align(feats.cuda(), rois.cuda()).cpu()).abs().max().item()
    assert diff < 1e-4, f'mmcv roi_align: CUDA differs from the CPU by {diff}'
    print(f'mmcv ops on {torch.cuda.get_device_name()}: nms keeps the CPU\'s {len(keep_cpu)} '
          f'boxes, roi_align within {diff:.1e} of the CPU')


FAMILIES = ('convnext', 'cspconvnext', 'fasternet', 'replknet', 'parameternet')


def bench(out_dir, cpu):
    """tools/benchmark.py --deploy, in this one process (its imports and CUDA start once): each
    family's backbone at 640, then YOLOX + FasterNet-T2's whole test_step, fp32 and fp16; with
    ``cpu`` only FasterNet-T2's backbone and YOLOX at 64, fp32, one iteration. Returns the number
    of failed runs."""
    import runpy
    import traceback
    common = (['--device', 'cpu', '--shape', '64', '64', '--warmup', '0', '--iters', '1'] if cpu
              else ['--device', 'cuda', '--shape', '640', '640', '--warmup', '10', '--iters', '50'])
    runs = [(f'yolox_{f}', ['--backbone-only']) for f in (('fasternet', ) if cpu else FAMILIES)]
    runs.append(('yolox_fasternet', []))
    failed = 0
    for config, mode in runs:
        for precision in ('fp32', ) if cpu else ('fp32', 'fp16'):
            name = f"{config}_{'backbone' if mode else 'test_step'}_{precision}"
            sys.argv = ['tools/benchmark.py', f'configs/{config}.py', *common, *mode, '--deploy',
                        '--precision', precision, '--out', os.path.join(out_dir, name + '.json')]
            print('==', ' '.join(sys.argv), flush=True)
            try:
                runpy.run_path(sys.argv[0], run_name='__main__')
            except SystemExit as exc:
                failed += exc.code not in (None, 0)
                print(exc.code, file=sys.stderr)
            except Exception:  # noqa: BLE001  (one failed run leaves the others to run)
                failed += 1
                traceback.print_exc()
    return failed


# ------------------------------------------------------------------------------------ build log
def build_info(log_path, arch, jobs, compat):
    """The build's settings, the first object ninja reports FAILED, the first compiler error line
    and up to 20 distinct error lines of its log."""
    failed, errors = None, []
    with open(log_path, errors='replace') as f:
        for line in f:
            line = line.strip()
            match = re.search(r'FAILED: (\S+)', line)
            if match and failed is None:
                failed = re.sub(r'^.*?/(mmcv/ops/)', r'\1', match.group(1))
            elif re.search(r'\berror\b\s?:|fatal error|nvcc fatal', line, re.I) \
                    and not line.startswith('[') and len(line) < 2000 and line not in errors:
                errors.append(line)
    return dict(arch=arch, jobs=jobs, compat=compat, failed_object=failed,
                first_error=errors[0] if errors else None, errors=errors[:20])


# --------------------------------------------------------------------------------------- report
RESULT = re.compile(r'^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b')
SUMMARY = re.compile(r'^(FAILED|ERROR) (tests/\S+)(?: - (.*))?$')
SKIP = re.compile(r'^SKIPPED \[(\d+)\] \S+: (.*)$')


def pytest_results(log_path):
    if not os.path.isfile(log_path):
        return None
    outcomes, failures, skips = {}, {}, {}
    with open(log_path, errors='replace') as f:
        for line in f:
            line = line.rstrip('\n')
            if RESULT.match(line):
                test, outcome = RESULT.match(line).groups()
                outcomes[test] = outcome.lower()
            elif SUMMARY.match(line):
                kind, test, reason = SUMMARY.match(line).groups()
                failures[test] = (reason or kind)[:500]
            elif SKIP.match(line):
                count, reason = SKIP.match(line).groups()
                skips[reason] = skips.get(reason, 0) + int(count)
    counts = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return dict(counts=counts, outcomes=outcomes, failures=failures, skip_reasons=skips)


def bench_rows(out_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, 'bench', '*.json')), key=os.path.getmtime):
        with open(path) as f:
            res = json.load(f)
        s = res['settings']
        rows.append(dict(
            config=os.path.basename(s['config']), mode=s['mode'], precision=s['precision'],
            input='x'.join(map(str, s['input_hw'])), device=s['device'], deploy=s['deploy'],
            median_ms=round(res['latency_ms']['median'], 3), fps=round(res['fps'], 1),
            deploy_max_rel_diff=(res['deploy_check'] or {}).get('max_rel_diff'),
            gpu=res['hardware']['gpu']))
    return rows


def read_json(path):
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


def report(out_dir):
    """Write report.json and report.md; exit 1 unless every step ran and passed."""
    meta = read_json(os.path.join(out_dir, 'meta.json')) or {}
    steps = []
    if os.path.isfile(os.path.join(out_dir, 'steps.tsv')):
        with open(os.path.join(out_dir, 'steps.tsv')) as f:
            for line in f:
                name, status, wall, rc, note = line.rstrip('\n').split('\t')
                steps.append(dict(name=name, status=status, wall_s=float(wall), rc=int(rc),
                                  log=f'logs/{name}.log', note=note))
    guard_log = os.path.join(out_dir, 'logs', 'guard.log')
    hidden = None
    if meta.get('mode') == 'cpu-dry-run':
        lines = open(guard_log).read().splitlines() if os.path.isfile(guard_log) else []
        hidden = sorted({tuple(ln.split('\t')[:2]) for ln in lines})
    bad = [s['name'] for s in steps if s['status'] not in ('ok', 'not run')]
    rep = dict(schema_version=1, **meta, ok=bool(steps) and not bad, problems=bad,
               probe=read_json(os.path.join(out_dir, 'probe.json')), steps=steps,
               build=read_json(os.path.join(out_dir, 'build_cuda.json')),
               build_cpu_ops=read_json(os.path.join(out_dir, 'build_cpu.json')),
               tests=pytest_results(os.path.join(out_dir, 'logs', 'tests.log')),
               benchmark=bench_rows(out_dir),
               hidden_imports=None if hidden is None else [
                   dict(module=m, distribution=d) for m, d in hidden])
    with open(os.path.join(out_dir, 'report.json'), 'w') as f:
        json.dump(rep, f, indent=1)
    with open(os.path.join(out_dir, 'report.md'), 'w') as f:
        f.write(markdown(rep))
    print(f"check: {'OK' if rep['ok'] else 'NOT OK: ' + '; '.join(rep['problems'])} "
          f"({os.path.join(out_dir, 'report.md')})")
    return 0 if rep['ok'] else 1


def markdown(rep):
    p = rep['probe'] or {}
    lines = [f"# GPU check: {'OK' if rep['ok'] else 'NOT OK'} ({rep.get('mode')})", '',
             f"{rep.get('started')}, commit {rep.get('commit')}, budget {rep.get('budget_s')} s. "
             f"{p.get('gpu') or 'no GPU'} (capability {p.get('capability')}), torch "
             f"{p.get('torch')} (CUDA {p.get('torch_cuda')}), nvcc: {p.get('nvcc')}, gcc: "
             f"{p.get('gcc')}, Python {p.get('python')}, {p.get('cores')} cores ({p.get('cpu')}).",
             '', '| step | status | wall s | note |', '|---|---|---|---|']
    lines += [f"| {s['name']} | {s['status']} | {s['wall_s']:.0f} | {s['note']} |"
              for s in rep['steps']]
    if rep['problems']:
        lines += ['', 'Problems: ' + '; '.join(rep['problems'])]
    for title, build in (('mmcv build', rep['build']),
                         ('mmcv build, CPU ops only (the fallback)', rep['build_cpu_ops'])):
        if build:
            lines += ['', f'## {title}', '', f"`TORCH_CUDA_ARCH_LIST={build['arch']}` "
                      f"`MAX_JOBS={build['jobs']}`; {build['compat']}."]
            if build['first_error']:
                lines += ['', f"First failing object: `{build['failed_object']}`", '', '```',
                          *build['errors'], '```']
    tests = rep['tests']
    if tests:
        lines += ['', '## pytest -m cuda', '', ', '.join(f'{n} {k}' for k, n in
                                                         sorted(tests['counts'].items())) or
                  'no test result (see logs/tests.log)']
        lines += [f'- FAILED `{t}`: {r}' for t, r in tests['failures'].items()]
        lines += [f'- skipped x{n}: {r}' for r, n in tests['skip_reasons'].items()]
    if rep['benchmark']:
        lines += ['', '## Benchmark (tools/benchmark.py --deploy)', '',
                  '| config | timed | precision | input | device | median ms | FPS | deploy diff |',
                  '|---|---|---|---|---|---|---|---|']
        lines += [f"| {r['config']} | {r['mode']} | {r['precision']} | {r['input']} | "
                  f"{r['gpu'] or r['device']} | {r['median_ms']} | {r['fps']} | "
                  f"{r['deploy_max_rel_diff']} |" for r in rep['benchmark']]
    if rep['hidden_imports'] is not None:
        lines += ['', '## Imports the GPU machine could not satisfy (dry run)', '', 'Tried by the '
                  'code and hidden from the dry run (an optional import inside try/except or a '
                  'find_spec probe is harmless; a needed one fails its step above):', '']
        lines += [f"- `{b['module']}` ({b['distribution']})" for b in rep['hidden_imports']] \
            or ['- none']
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='cmd', required=True)
    sub.add_parser('repack').add_argument('wheels', nargs='+')
    p = sub.add_parser('fit')
    p.add_argument('--strict', action='store_true')
    p.add_argument('wheels', nargs='+')
    p = sub.add_parser('make-venv')
    p.add_argument('venv')
    p.add_argument('repo')
    p.add_argument('--guard', metavar='LOG')
    for name in ('probe', 'smoke'):
        sub.add_parser(name).add_argument('--cuda', action='store_true')
    p = sub.add_parser('build-info')
    for name in ('log', 'arch', 'jobs', 'compat'):
        p.add_argument(name)
    sub.add_parser('report').add_argument('out_dir')
    p = sub.add_parser('bench')
    p.add_argument('out_dir')
    p.add_argument('--cpu', action='store_true')
    args = parser.parse_args()
    if args.cmd == 'repack':
        repack(args.wheels)
    elif args.cmd == 'fit':
        fit(args.wheels, args.strict)
    elif args.cmd == 'make-venv':
        make_venv(args.venv, args.repo, args.guard)
    elif args.cmd == 'probe':
        probe(args.cuda)
    elif args.cmd == 'smoke':
        smoke(args.cuda)
    elif args.cmd == 'bench':
        sys.exit(bench(args.out_dir, args.cpu))
    elif args.cmd == 'build-info':
        print(json.dumps(build_info(args.log, args.arch, args.jobs, args.compat), indent=1))
    else:
        sys.exit(report(args.out_dir))


if __name__ == '__main__':
    main()
