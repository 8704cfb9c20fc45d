"""The benchmark's outputs: the table printed by ``tools/benchmark.py`` and the JSON file (its
schema is in the package doc)."""
import json

__all__ = ['format_table', 'dump_json']


def format_table(res: dict) -> str:
    """The table; every number line ends with input size ("real HxW" with real images), batch,
    threads, device, deploy, channels_last and dtype; with a profile, one line per category.
    ``channels_last`` is ``on`` (--channels-last), ``auto`` (the backbone ran channels_last by
    itself), ``mixed`` (some of its convs did) or ``off``."""
    s = res['settings']
    layout = res['timed_model'].get('backbone_layout')
    channels_last = ('on' if s['channels_last'] else
                     {'channels_last': 'auto', 'mixed': 'mixed'}.get(layout, 'off'))
    ctx = (f"| {'real ' if s['real_images'] else ''}{s['input_hw'][0]}x{s['input_hw'][1]} "
           f"b{s['batch_size']} "
           f"threads={s['threads']} {s['device']} "
           f"deploy={'on' if s['deploy'] else 'off'} "
           f"channels_last={channels_last} {s['dtype']}"
           + (f" backend={s['backend']}" if s.get('backend', 'pytorch') != 'pytorch' else ''))
    lat = res['latency_ms']
    rows = [(f'latency {k}', f"{lat[k]:.3f} ms") for k in ('median', 'mean', 'p90', 'min',
                                                             'max', 'std')]
    rows.append(('FPS (images/s)', f"{res['fps']:.2f}"))
    rows.append(('params (model)', f"{res['params']['model'] / 1e6:.3f} M"))
    rows.append(('params (backbone)', f"{res['params']['backbone'] / 1e6:.3f} M"))
    rows.append(('backbone MACs/image', f"{res['macs']['backbone_per_image'] / 1e9:.4f} G"))
    rows.append(('backbone FLOPs/image', f"{res['flops']['backbone_per_image'] / 1e9:.4f} G"))
    if res['achieved_gflops'] is not None:
        rows.append(('achieved GFLOP/s', f"{res['achieved_gflops']:.2f}"))
    rows.append(('fp32 matmul peak GFLOP/s', f"{res['peak']['matmul_gflops']:.2f}"))
    if res['peak']['share'] is not None:
        rows.append(('share of peak', f"{100 * res['peak']['share']:.2f} %"))
    if res['deploy_check'] is not None:
        rows.append(('deploy max rel diff', f"{res['deploy_check']['max_rel_diff']:.3e}"))
        if res['deploy_check']['neck_max_rel_diff'] is not None:
            rows.append(('deploy max rel diff (neck)',
                         f"{res['deploy_check']['neck_max_rel_diff']:.3e}"))
    pc = res.get('precision_check')
    if pc is not None:
        rows.append((f"{s['precision']} vs fp32 max rel diff", f"{pc['max_rel_diff']:.3e}"))
    ec = res.get('export_check')
    if ec is not None:
        rows.append((f"{s['backend']} vs PyTorch max rel diff", _diff_cell(ec['max_rel_diff'])))
        if s['precision'] != 'fp32':
            rows.append((f"{s['backend']} fp32 vs PyTorch max rel diff",
                         _diff_cell(ec['fp32_max_rel_diff'])))
    prof = res['profile']
    if prof is not None:
        groups = ([('', prof['categories'])] if 'categories' in prof else
                  [('kernel ', prof['by_precision']), ('', prof['by_type'])])  # OpenVINO
        for prefix, entries in groups:
            for cat, entry in entries.items():
                rows.append((f'profile {prefix}{cat}', f"{entry['ms_per_iter']:.3f} ms "
                             f"{100 * entry['share']:5.1f} %"))
        rows.append(('profile ops / wall', f"{prof['op_ms_per_iter']:.3f} / "
                     f"{prof['wall_ms_per_iter']:.3f} ms"))
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"timed unit ({s['mode']}): {res['timed_unit']}",
             f"warm-up {s['warmup']} (discarded), timed {s['iters']}; "
             f"torch threads {s['threads']}; MACs: {res['macs']['counter']}"]
    if s.get('precision_note') and s['precision_note'] != s['precision']:
        lines.append(f"precision: {s['precision_note']}")
    if prof is not None:
        lines.append(f"profile: {prof['time']} per operator type over {prof['iters']} extra "
                     'iterations after the timed ones (not in the latency numbers); ms per '
                     'iteration and share of the profiled op time')
    lines += [f'{name:<{width}}  {value:>{vwidth}}  {ctx}' for name, value in rows]
    return '\n'.join(lines)


def _diff_cell(diff) -> str:
    return 'n/a: other output shapes (number of detections)' if diff is None else f'{diff:.3e}'


def dump_json(res: dict, path: str):
    with open(path, 'w') as f:
        json.dump(res, f, indent=2)
