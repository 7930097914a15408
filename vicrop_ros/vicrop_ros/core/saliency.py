"""
Saliency maps: importance over a grid of cells laid on the source image, and their maths.

A model's map lives on its own patch grid (e.g. 24x24 for LLaVA-1.5's default 336 px input), which
covers some rectangle of the source image that depends on the preprocessing (a centre crop covers
part of the image, padding to a square covers more than the image). :class:`SaliencyMap` carries
that rectangle, so :func:`project_to_image` can put one or several maps (high-resolution tiles)
onto one grid aligned with the source image, where the box search runs.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SaliencyMap:
    """
    Importance of each cell of a regular grid that spans ``extent`` of the source image.

    ``values``: (rows, cols) float32, finite, >= 0; row-major, row 0 at the top.
    ``extent``: (x0, y0, x1, y1) in source-image pixels (floats), the rectangle the grid covers. It
    may reach past the image (padding) or cover only part of it (centre crop).
    ``bounds``: (x0, y0, x1, y1) in source-image pixels, the image the model was shown (a tile
    of a large frame, without its padding): the map speaks only for that. None: its extent.
    """

    values: np.ndarray  # (rows, cols)
    extent: tuple[float, float, float, float]
    bounds: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        """Check the shape, the values and the extent."""
        if self.values.ndim != 2 or min(self.values.shape) < 1:
            raise ValueError(f'a saliency map is 2-D and non-empty, got shape {self.values.shape}')
        if not np.isfinite(self.values).all():
            raise ValueError('the saliency map has non-finite values')
        x0, y0, x1, y1 = self.extent
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f'empty saliency extent {self.extent}')

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the grid."""
        return self.values.shape

    @property
    def cell_size(self) -> tuple[float, float]:
        """(width, height) of one cell in source-image pixels."""
        x0, y0, x1, y1 = self.extent
        rows, cols = self.values.shape
        return ((x1 - x0) / cols, (y1 - y0) / rows)

    def shifted(self, dx: float, dy: float) -> 'SaliencyMap':
        """Return the map with its extent and bounds moved by (dx, dy) pixels (tile to image)."""

        def moved(box):
            return None if box is None else (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)

        return SaliencyMap(self.values, moved(self.extent), moved(self.bounds))


def project_to_image(
    maps: Sequence[SaliencyMap], image_size: tuple[int, int], cell_size: float | None = None
) -> np.ndarray:
    """
    Put saliency maps onto one grid aligned with the whole source image.

    ``image_size`` is (width, height) in pixels. The result has (rows, cols) =
    (round(height / cell), round(width / cell)), at least 1 each, so its cells tile the image
    exactly; ``cell_size`` defaults to the smallest cell side among ``maps``. Each output cell
    takes the value of the map cell under its centre, from the map whose bounds hold that
    centre (a padded tile's extent reaches into its neighbour, its bounds do not); cells no map
    covers are 0. Bounds must not overlap (tiles); where they do, the later map wins.

    One map that spans exactly the whole image already tiles it: it is returned as it is (a
    Qwen map, whose cells are not square, keeps its rows and columns), unless ``cell_size``
    asks for another grid.
    """
    if not maps:
        raise ValueError('no saliency maps to project')
    width, height = image_size
    if cell_size is None and len(maps) == 1 and maps[0].extent == (0.0, 0.0, width, height):
        return maps[0].values.astype(np.float32)
    cell = cell_size or min(min(m.cell_size) for m in maps)
    rows, cols = max(1, round(height / cell)), max(1, round(width / cell))
    centres_x = (np.arange(cols) + 0.5) * (width / cols)  # (cols,)
    centres_y = (np.arange(rows) + 0.5) * (height / rows)  # (rows,)
    out = np.zeros((rows, cols), np.float32)
    for m in maps:
        x0, y0, _, _ = m.extent
        cell_w, cell_h = m.cell_size
        map_rows, map_cols = m.grid
        col = np.floor((centres_x - x0) / cell_w).astype(
            int
        )  # (cols,) map column under each centre
        row = np.floor((centres_y - y0) / cell_h).astype(int)  # (rows,)
        col_ok, row_ok = (col >= 0) & (col < map_cols), (row >= 0) & (row < map_rows)
        if m.bounds is not None:
            bx0, by0, bx1, by1 = m.bounds
            col_ok &= (centres_x >= bx0) & (centres_x < bx1)
            row_ok &= (centres_y >= by0) & (centres_y < by1)
        out[np.ix_(row_ok, col_ok)] = m.values[np.ix_(row[row_ok], col[col_ok])]
    return out


def safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor, epsilon: float) -> torch.Tensor:
    """
    Return numerator / denominator, elementwise, finite wherever the inputs are finite and >= 0.

    The denominator gets ``epsilon`` times the mean of both inputs added (plus the smallest normal
    float): scale-free, so maps of tiny gradients and of attention behave alike, and a zero
    denominator gives a large but finite ratio (at most about 1 / epsilon times the numerator over
    its mean).
    """
    floor = epsilon * (denominator.mean() + numerator.mean()) + torch.finfo(torch.float32).tiny
    return numerator / (denominator + floor)


def gradient_weighted_attention(attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """
    Return grad-att: head mean of attention times the positive part of its gradient.

    Both inputs: (heads, tokens), the attention of the last prompt position to the image tokens
    and d(decision)/d(that attention). Result: (tokens,), >= 0.
    """
    return (attention.float() * gradient.float().clamp(min=0)).mean(0)


def pixel_gradient_ratio(
    gradient: torch.Tensor,
    generic_gradient: torch.Tensor,
    mask: torch.Tensor,
    patch_size: int,
    epsilon: float,
) -> torch.Tensor:
    """
    Return the pure-grad map: pixel-gradient norm ratio, masked and pooled to patches.

    ``gradient``, ``generic_gradient``: (channels, H, W), d(decision)/d(pixel values) at the
    model's input resolution. ``mask``: (H, W) bool, the high-pass mask (:func:`high_pass_mask`).
    The channel-wise L2 norms are divided with :func:`safe_ratio`, multiplied by the mask and
    mean-pooled over ``patch_size`` blocks. Result: (H // patch_size, W // patch_size).
    """
    ratio = safe_ratio(gradient.float().norm(dim=0), generic_gradient.float().norm(dim=0), epsilon)
    masked = ratio * mask.float()
    return torch.nn.functional.avg_pool2d(masked[None, None], patch_size)[0, 0]


def high_pass_mask(image: torch.Tensor, median_size: int = 7) -> torch.Tensor:
    """
    Return where an image has more fine detail than its median: the pure-grad mask.

    ``image``: (channels, H, W) float at the model's input resolution. High-pass = image minus its
    3x3 blur by the binomial kernel [1, 2, 1] / 4 per axis (edges replicated): the kernel OpenCV's
    ``GaussianBlur`` uses for a 3x3 window with sigma 0, whose nominal sigma is 0.8; the kernel's
    own standard deviation is 0.71 px. Then the L2 norm over channels and a ``median_size`` median
    filter (zero padding). Result: (H, W) bool, true above the median of the filtered map.
    """
    channels = image.shape[0]
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float32) / 4
    kernel = (taps[:, None] * taps[None, :]).expand(channels, 1, 3, 3)
    padded = torch.nn.functional.pad(image.float()[None], (1, 1, 1, 1), mode='replicate')
    blurred = torch.nn.functional.conv2d(padded, kernel, groups=channels)[0]
    detail = (image.float() - blurred).norm(dim=0)  # (H, W)
    half = median_size // 2
    windows = torch.nn.functional.pad(detail, (half, half, half, half)).unfold(0, median_size, 1)
    windows = windows.unfold(1, median_size, 1)  # (H, W, k, k)
    filtered = windows.reshape(*detail.shape, -1).median(dim=-1).values
    return filtered > filtered.median()
