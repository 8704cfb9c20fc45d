"""map_vs_fps.png and macs_vs_latency.png (matplotlib, Agg)."""
from typing import Dict, List, Optional

import numpy as np

from .result import fit_group
from .rows import variant

def _panels(rows: List[dict]) -> List[List[dict]]:
    """The rows of one panel each: one per head when the heads' FPS differ by 10x or more (one
    scale would squeeze the slow head against the axis), else all in one."""
    heads = list(dict.fromkeys(r.get('head') for r in rows))
    if len(heads) > 1:
        medians = [float(np.median([r['fps'] for r in rows if r.get('head') == h]))
                   for h in heads]
        if max(medians) >= 10 * min(medians):
            return [[r for r in rows if r.get('head') == h] for h in heads]
    return [rows]


def plot_map_vs_fps(path: str, rows: List[dict]):
    """mAP vs FPS: a marker per row with its 95 % mAP interval (else the seeds' standard
    deviation) and FPS inter-quartile range as error bars, named in the legend (no labels to
    overlap); the runs that did not learn hollow and grey; the Pareto front of the others."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = _panels(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), dpi=100,
                             squeeze=False)
    colors = plt.get_cmap('tab10').colors
    markers = {'yolox': 'o', 'cascade': 's'}
    metrics = sorted({r['metric'] for r in rows})
    for ax, panel in zip(axes[0], panels):
        heads = {r.get('head') for r in panel}
        for k, r in enumerate(panel):
            x, y = r['fps'], r['map']
            ci, std, iqr = r.get('map_interval'), r.get('map_std'), r.get('fps_iqr')
            yerr = ([[max(y - ci[0], 0)], [max(ci[1] - y, 0)]] if ci else
                    [[std], [std]] if std else None)
            xerr = [[max(x - iqr[0], 0)], [max(iqr[1] - x, 0)]] if iqr else None
            label = (r['label'] + variant(r) + (f" ({r['head']})" if len(heads) > 1 else '')
                     + (' - did not learn' if r['did_not_learn'] else ''))
            color = 'tab:gray' if r['did_not_learn'] else colors[k % len(colors)]
            ax.errorbar([x], [y], yerr=yerr, xerr=xerr, fmt=markers.get(r.get('head'), 'D'),
                        color=color, ecolor=color, elinewidth=1, capsize=3, zorder=3,
                        markerfacecolor='none' if r['did_not_learn'] else color, label=label)
        front = sorted((r['fps'], r['map']) for r in panel if r['pareto'])
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], color='tab:red', alpha=0.5,
                    linestyle='--', zorder=2, label='Pareto front (runs that learned)')
        if not panel:
            ax.text(0.5, 0.5, 'no run has both numbers', ha='center', va='center',
                    transform=ax.transAxes)
        title = 'mAP vs FPS' + ('' if len(panels) == 1 else f" ({panel[0].get('head')})")
        ax.set(title=title, xlabel='FPS (median over timing rounds; bars: IQR)',
               ylabel=f"mAP ({', '.join(metrics) or 'none'}; bars: 95 % interval)")
        ax.grid(True, alpha=0.3)
        if panel:
            ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, bbox_inches='tight')
    plt.close(fig)


def plot_macs_vs_latency(path: str, rows: List[dict], per_group: Dict[str, Optional[float]]):
    """Backbone GMACs vs median latency of the timed ``rows``, one colour and one least-squares
    line through 0 (``per_group``: {:func:`.result.fit_group`: ms per GMAC}) per head, backend
    and precision."""
    _plot(path, 'Backbone MACs vs latency', 'backbone GMACs / image',
          'median latency (ms / batch)', rows, lambda r: r['backbone_macs'] / 1e9,
          lambda r: r['latency_ms'], group=fit_group, line_k=per_group)


def _plot(path: str, title: str, xlabel: str, ylabel: str, rows: List[dict], xkey, ykey,
          group, line_k=None):
    """Scatter ``rows`` in one colour per ``group(row)`` (a legend when there are several), each
    point labelled with its backbone (or name) and variant; ``line_k``: {group: slope} lines
    through the origin in their group's colour."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    xs, ys = [xkey(r) for r in rows], [ykey(r) for r in rows]
    groups = list(dict.fromkeys(group(r) for r in rows))
    heads = {r.get('head') for r in rows}
    colors = ['tab:blue', 'tab:green', 'tab:orange', 'tab:purple', 'tab:brown']
    for k, name in enumerate(groups):
        pts = [(x, y) for r, x, y in zip(rows, xs, ys) if group(r) == name]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colors[k % len(colors)],
                   zorder=3, label=name if name and len(groups) > 1 else None)
    if len(groups) > 1:
        ax.legend()
    for name, line in (line_k or {}).items():
        if line is None or not xs:
            continue
        top = max(xs) * 1.1
        color = (colors[groups.index(name) % len(colors)] if name in groups and len(groups) > 1
                 else 'tab:gray')
        ax.plot([0, top], [0, line * top], color=color, linestyle='--',
                label=f"{'' if name == 'all' else name + ': '}{line:.3f} ms / GMAC "
                '(fit through 0)')
        ax.legend()
    if not rows:
        ax.text(0.5, 0.5, 'no run has both numbers', ha='center', va='center',
                transform=ax.transAxes)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    labels = [((r.get('backbone') if r.get('head') and len(heads) > 1 else r['name'])
               or r['name']) + variant(r) for r in rows]
    _label_points(ax, xs, ys, labels)
    fig.savefig(path)
    plt.close(fig)


def _label_points(ax, xs, ys, labels, fontsize: int = 8):
    """Label each point beside it, moving a label up or down by whole lines until it overlaps
    no label placed before (points from left to right), so that close points stay readable."""
    ax.figure.canvas.draw()  # the final limits: display coordinates are valid from here
    line = fontsize * 1.4 * ax.figure.dpi / 72
    placed = []  # (x0, y0, x1, y1) in display pixels
    for i in sorted(range(len(xs)), key=lambda k: (xs[k], ys[k])):
        px, py = ax.transData.transform((xs[i], ys[i]))
        width = 0.6 * fontsize * len(labels[i]) * ax.figure.dpi / 72
        for step in [0] + [d * k for k in range(1, 12) for d in (1, -1)]:
            box = (px + 5, py + 5 + step * line, px + 5 + width, py + 5 + (step + 1) * line)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                break
        placed.append(box)
        ax.annotate(labels[i], (xs[i], ys[i]), textcoords='offset pixels',
                    xytext=(box[0] - px, box[1] - py), fontsize=fontsize,
                    arrowprops=dict(arrowstyle='-', color='0.6', lw=0.5) if step else None)
