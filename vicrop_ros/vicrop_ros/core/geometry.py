"""
Image geometry: crops, high-resolution tiles, and where a model's input lies on the source image.

Images are numpy arrays, HWC uint8 RGB, origin top-left. Sizes are (width, height) in pixels.
An *extent* is (x0, y0, x1, y1), floats, in source-image pixels: the rectangle of the source image
that a model's preprocessed input shows (see :class:`~vicrop_ros.core.saliency.SaliencyMap`).
"""

import math

import numpy as np

from .box import Box

Extent = tuple[float, float, float, float]


def image_size(image: np.ndarray) -> tuple[int, int]:
    """Return (width, height) of an HWC image."""
    return (int(image.shape[1]), int(image.shape[0]))


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """Return the pixels of ``image`` (HWC) inside ``box`` (a view, not a copy)."""
    width, height = image_size(image)
    if not box.is_inside(width, height) or box.area == 0:
        raise ValueError(
            f'crop box {box.as_xyxy()} is empty or outside the {width}x{height} image'
        )
    return image[box.slices()]


# A tile holds at least threshold² / TILE_AREA_SHARE pixels: a long thin strip is not cut into a
# tile per threshold of its length (a 20000x20 frame: 2 tiles, not 20 model passes).
TILE_AREA_SHARE = 4


def tile_count_limit(size: tuple[int, int], tile_threshold: int) -> int:
    """Return the most tiles an image of ``size`` (width, height) is cut into: by its area."""
    width, height = size
    return max(1, math.ceil(TILE_AREA_SHARE * width * height / tile_threshold**2))


def tile_boxes(size: tuple[int, int], tile_threshold: int) -> list[Box]:
    """
    Split an image into the fewest near-equal tiles whose sides are at most ``tile_threshold``.

    ``size``: (width, height). Returns the tiles row-major; they cover the image exactly without
    overlap. An image within the threshold is one tile. Works for any aspect ratio (a 500x2000
    image gives two 500x1000 tiles). The count never exceeds :func:`tile_count_limit`, which
    only a strip thinner than about a quarter of the threshold reaches: it is cut along its
    length into that many tiles, longer than the threshold (20000x20 at 1024: two 10000x20).
    So the model passes grow with the pixels, at most ceil(4 x max_image_pixels / threshold²).
    """
    width, height = size
    if width < 1 or height < 1 or tile_threshold < 1:
        raise ValueError(f'cannot tile a {width}x{height} image with threshold {tile_threshold}')
    cols, rows = math.ceil(width / tile_threshold), math.ceil(height / tile_threshold)
    limit = tile_count_limit(size, tile_threshold)
    if cols * rows > limit:  # only a thin strip: one row or one column of tiles
        cols, rows = (limit, 1) if rows == 1 else (1, limit)
    xs = [round(i * width / cols) for i in range(cols + 1)]
    ys = [round(j * height / rows) for j in range(rows + 1)]
    return [Box(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(rows) for i in range(cols)]


def resize_shortest_edge_size(size: tuple[int, int], shortest_edge: int) -> tuple[int, int]:
    """Return the (width, height) after resizing so the short side is ``shortest_edge`` (CLIP)."""
    width, height = size
    short, long = min(width, height), max(width, height)
    new_long = int(shortest_edge * long / short)
    return (shortest_edge, new_long) if width <= height else (new_long, shortest_edge)


def centre_crop_extent(
    size: tuple[int, int], shortest_edge: int, crop_size: tuple[int, int]
) -> Extent:
    """
    Return the source rectangle a resize-shortest-edge + centre-crop preprocessing keeps.

    ``size``: source (width, height); ``crop_size``: (width, height) of the crop, in resized
    pixels. This is CLIP's (and llava-hf's default) preprocessing: on a non-square image the
    model sees only the centre, which the saliency map must be mapped back onto.
    """
    width, height = size
    resized_w, resized_h = resize_shortest_edge_size(size, shortest_edge)
    crop_w, crop_h = crop_size
    left, top = (resized_w - crop_w) // 2, (resized_h - crop_h) // 2
    scale_x, scale_y = resized_w / width, resized_h / height
    return (left / scale_x, top / scale_y, (left + crop_w) / scale_x, (top + crop_h) / scale_y)


def pad_to_square(image: np.ndarray, fill: tuple[int, int, int]) -> tuple[np.ndarray, Extent]:
    """
    Pad ``image`` (HWC) with ``fill`` to a centred square, as LLaVA-1.5 was trained.

    Returns the square image and its extent on the source image (reaching past it on the padded
    axis), so that a map over the square maps back onto the source.
    """
    width, height = image_size(image)
    side = max(width, height)
    left, top = (side - width) // 2, (side - height) // 2
    square = np.empty((side, side, image.shape[2]), image.dtype)
    square[...] = np.asarray(fill, image.dtype)
    square[Box(left, top, left + width, top + height).slices()] = image
    return square, (float(-left), float(-top), float(side - left), float(side - top))


def whole_image_extent(size: tuple[int, int]) -> Extent:
    """Return the extent of a preprocessing that resizes the whole image (BLIP, Qwen2.5-VL)."""
    return (0.0, 0.0, float(size[0]), float(size[1]))
