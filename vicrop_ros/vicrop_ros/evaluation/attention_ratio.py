"""
The attention ratio: how much more a model looks at the ground-truth box than elsewhere.

The paper's Fig. 3 measure, per decoder layer: the mean attention inside the box over the mean
attention of every same-size box elsewhere in the image. Above 1, the layer points at the detail,
whether or not the answer is right.
"""

from collections.abc import Sequence
import math

import numpy as np

from ..core.box import Box
from ..core.box_search import window_sums
from ..core.saliency import SaliencyMap, project_to_image


def box_cells(box: Box, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[slice, slice]:
    """
    Return (rows, cols) slices of the cells of ``grid`` whose centres lie in ``box``.

    ``grid``: (rows, cols) tiling ``image_size`` (width, height) pixels. A box smaller than a cell
    gets the one cell under its centre.
    """
    rows, cols = grid
    width, height = image_size
    return (
        _span(box.y0, box.y1, height / rows, rows),
        _span(box.x0, box.x1, width / cols, cols),
    )


def _span(low: float, high: float, cell: float, count: int) -> slice:
    """Return the cells (of side ``cell``) whose centres lie in [low, high); at least one."""
    first = max(0, math.ceil(low / cell - 0.5))
    end = min(count, math.ceil(high / cell - 0.5))
    if end <= first:
        first = min(count - 1, max(0, int((low + high) / 2 / cell)))
        end = first + 1
    return slice(first, end)


def attention_ratio(maps: Sequence[SaliencyMap], box: Box, image_size: tuple[int, int]) -> float:
    """
    Return the mean attention inside ``box`` over that of the same-size boxes elsewhere.

    ``maps``: one layer's attention (tiles allowed), extents in image pixels; ``box`` in image
    pixels; ``image_size``: (width, height). "Elsewhere": every window of the box's rows and
    columns of cells that shares no cell with it. Returns nan if there is no such window or
    their mean attention is 0.
    """
    grid = project_to_image(maps, image_size)
    rows, cols = box_cells(box, grid.shape, image_size)
    height, width = rows.stop - rows.start, cols.stop - cols.start
    inside = float(grid[rows, cols].mean())
    means = window_sums(grid, height, width) / (height * width)  # [y, x]: window at (x, y)
    ys, xs = np.indices(means.shape)
    overlaps = (xs < cols.stop) & (xs + width > cols.start)
    overlaps &= (ys < rows.stop) & (ys + height > rows.start)
    others = means[~overlaps]
    if others.size == 0 or others.mean() <= 0:
        return math.nan
    return inside / float(others.mean())
