"""
PNG plots of a ``vicrop eval`` summary (matplotlib, no screen needed).

Accuracy by target size, one line per condition (the paper's Table 1 as a figure), and the
attention ratio by decoder layer for right and wrong answers (its Fig. 3).
"""

from pathlib import Path

ACCURACY_PLOT = 'accuracy_by_size.png'
ATTENTION_PLOT = 'attention_ratio_by_layer.png'


def _pyplot():
    """Return matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def write_plots(summary: dict, out_dir: str | Path, title: str = '') -> list[Path]:
    """
    Write the plots ``summary`` has data for into ``out_dir``; return their paths.

    ``summary``: :func:`~vicrop_ros.evaluation.evaluate.summarize`'s result. The attention plot
    is written only when the summary has attention ratios.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_accuracy_plot(summary, out / ACCURACY_PLOT, title)]
    if summary.get('attention_ratio_by_layer'):
        paths.append(_attention_plot(summary['attention_ratio_by_layer'], out / ATTENTION_PLOT,
                                     title))  # fmt: skip
    return paths


def _accuracy_plot(summary: dict, path: Path, title: str) -> Path:
    """Plot accuracy (%) against the size bucket, a line per condition."""
    plt = _pyplot()
    conditions = summary['conditions']
    buckets = list(dict.fromkeys(b for c in conditions.values() for b in c['accuracy_by_size']))
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, figures in conditions.items():
        by_size = figures['accuracy_by_size']
        shown = [b for b in buckets if b in by_size]
        axes.plot([buckets.index(b) for b in shown], [by_size[b] for b in shown], marker='o',
                  label=name)  # fmt: skip
    axes.set_xticks(range(len(buckets)), [f'{b} px' for b in buckets])
    axes.set_xlabel('target size as the model sees it (longest side, px at its input)')
    axes.set_ylabel('VQA accuracy (%)')
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(title or f'accuracy by target size ({summary["questions"]} questions)')
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _attention_plot(ratios: dict, path: Path, title: str) -> Path:
    """
    Plot the attention ratio against the decoder layer, for right and wrong answers.

    The ratio axis is linear up to 1 (no more attention in the box than elsewhere: the dashed
    line) and logarithmic above, so a median of 0 and one of thousands both show.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    layer_count = 0
    for name in ('right', 'wrong'):
        values = ratios.get(name) or []
        layer_count = max(layer_count, len(values))
        layers = [i for i, v in enumerate(values) if v is not None]
        if layers:
            axes.plot(layers, [values[i] for i in layers], marker='o',
                      label=f'{name} answers ({ratios[f"count_{name}"]})')  # fmt: skip
    axes.axhline(1.0, color='grey', linestyle='--', linewidth=1)
    axes.set_yscale('symlog', linthresh=1.0)
    axes.set_ylim(bottom=0.0)  # a ratio is never negative
    axes.set_xticks(range(layer_count))
    axes.set_xlabel('decoder layer (0-based)')
    axes.set_ylabel('attention ratio, median (in box / elsewhere)')
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(title or 'attention to the ground-truth box, by layer')
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
