"""
Choosing the crop box from a saliency map: the adaptive multi-scale rule of ViCrop.

For each scale r, a window of side ``base_size * r`` source pixels, expressed in whole grid cells,
slides over the map with a stride of one cell; the window with the largest sum wins for that scale,
and its sharpness is (that sum - the mean of its up-to-4 neighbouring window sums) / window cells.
The sharpest scale wins and the box is a square of side ``base_size * r`` centred on its window,
moved to stay inside the image. Window sums come from a summed-area table, not loops.

Differences from the reference code, on purpose: the chosen scale is remembered with its window
(the reference indexes the scale list by the position among non-skipped scales, which is wrong once
a scale was skipped), a window is at least one cell, and a flat map (no information) selects the
whole image.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .box import Box

DEFAULT_SCALES = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


@dataclass(frozen=True)
class BoxChoice:
    """The chosen box with how it was chosen."""

    box: Box  # in source-image pixels
    scale: float  # the chosen r; 0.0 when the whole image was chosen
    score: float  # sharpness of the chosen window (map units per cell); 0.0 for the whole image


def window_sums(saliency: np.ndarray, window_rows: int, window_cols: int) -> np.ndarray:
    """
    Return the sum of every ``window_rows`` x ``window_cols`` window of ``saliency``.

    ``saliency``: (rows, cols). Result: (rows - window_rows + 1, cols - window_cols + 1); entry
    [y, x] sums ``saliency[y:y + window_rows, x:x + window_cols]``.
    """
    table = np.zeros((saliency.shape[0] + 1, saliency.shape[1] + 1), np.float64)
    table[1:, 1:] = saliency.astype(np.float64).cumsum(0).cumsum(1)
    h, w = window_rows, window_cols
    return table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]


def _sharpest_window(sums: np.ndarray) -> tuple[int, int, float]:
    """Return (x, y, max - mean of neighbours) of the best window; ties go to the smallest x, y."""
    # argmax over the transpose: the first maximum in x-major order, as the reference's loops.
    x, y = divmod(int(np.argmax(sums.T)), sums.shape[0])
    peak = sums[y, x]
    neighbours = [sums[y, x + dx] if 0 <= x + dx < sums.shape[1] else None for dx in (-1, 1)] + [
        sums[y + dy, x] if 0 <= y + dy < sums.shape[0] else None for dy in (-1, 1)
    ]
    present = [n for n in neighbours if n is not None]
    return x, y, float(peak - np.mean(present))


def choose_box(
    saliency: np.ndarray,
    image_size: tuple[int, int],
    base_size: int,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> BoxChoice:
    """
    Choose the crop box for ``saliency`` by the adaptive multi-scale rule (see module docstring).

    ``saliency``: (rows, cols), finite, on a grid whose cells tile the whole image
    (:func:`~vicrop_ros.core.saliency.project_to_image`). ``image_size``: (width, height) pixels.
    ``base_size``: window side at scale 1 in source pixels (the model's input resolution).
    ``scales``: increasing. When the smallest scale's window already covers the whole grid, the
    image is small: the whole image is chosen. Larger scales whose window covers the whole grid
    are skipped.
    """
    saliency = np.asarray(saliency)
    if saliency.ndim != 2 or saliency.size == 0 or not np.isfinite(saliency).all():
        raise ValueError('saliency must be a non-empty 2-D array of finite values')
    width, height = image_size
    whole = BoxChoice(Box.whole(width, height), 0.0, 0.0)
    rows, cols = saliency.shape
    if saliency.max() == saliency.min():
        return whole
    cell_w, cell_h = width / cols, height / rows
    best: tuple[float, float, int, int, int, int] | None = None  # score, r, x, y, cols, rows
    for index, scale in enumerate(scales):
        window_cols = max(1, min(int(base_size * scale / cell_w), cols))
        window_rows = max(1, min(int(base_size * scale / cell_h), rows))
        if window_cols >= cols and window_rows >= rows:
            if index == 0:
                return whole
            continue
        x, y, difference = _sharpest_window(window_sums(saliency, window_rows, window_cols))
        score = difference / (window_cols * window_rows)
        if best is None or score > best[0]:
            best = (score, scale, x, y, window_cols, window_rows)
    score, scale, x, y, window_cols, window_rows = best
    half = int(base_size * scale // 2)
    centre_x = _clamp(int(x * cell_w + cell_w * window_cols / 2), half, width - half)
    centre_y = _clamp(int(y * cell_h + cell_h * window_rows / 2), half, height - half)
    box = Box(
        max(0, centre_x - half),
        max(0, centre_y - half),
        min(width, centre_x + half),
        min(height, centre_y + half),
    )
    return BoxChoice(box, float(scale), float(score))


def _clamp(value: int, low: int, high: int) -> int:
    """Clamp ``value`` to at least ``low``, then to at most ``high`` (``high`` wins if below)."""
    return min(max(value, low), high)


def select_box(
    saliency: np.ndarray,
    image_size: tuple[int, int],
    base_size: int,
    scales: Sequence[float] = DEFAULT_SCALES,
) -> Box:
    """Return the crop box of :func:`choose_box`, in source-image pixels."""
    return choose_box(saliency, image_size, base_size, scales).box
