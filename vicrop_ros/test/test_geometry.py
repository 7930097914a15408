"""Tiles, crops, map projection and stitching, and the preprocessing extents."""

from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import pytest

from vicrop_ros.core import Box, SaliencyMap, crop, project_to_image, select_box, tile_boxes
from vicrop_ros.core.geometry import centre_crop_extent, pad_to_square, tile_count_limit


@given(st.integers(1, 6000), st.integers(1, 6000), st.integers(64, 2048))
def test_tiles_cover_the_image_exactly_within_the_threshold_or_the_area_limit(
    width, height, threshold
):
    tiles = tile_boxes((width, height), threshold)
    limit = tile_count_limit((width, height), threshold)
    coverage = np.zeros((height, width), np.uint8)
    for tile in tiles:
        assert tile.width > 0 and tile.height > 0
        coverage[tile.slices()] += 1
    assert (coverage == 1).all()
    assert len(tiles) <= limit
    within = all(t.width <= threshold and t.height <= threshold for t in tiles)
    assert within or len(tiles) == limit  # longer tiles only where the area limit cut the count


def test_tall_and_wide_images_tile_as_expected():
    assert tile_boxes((500, 2000), 1024) == [Box(0, 0, 500, 1000), Box(0, 1000, 500, 2000)]
    assert tile_boxes((3000, 800), 1024) == [
        Box(0, 0, 1000, 800),
        Box(1000, 0, 2000, 800),
        Box(2000, 0, 3000, 800),
    ]
    assert tile_boxes((1024, 1024), 1024) == [Box(0, 0, 1024, 1024)]
    assert len(tile_boxes((1280, 720), 1024)) == 2  # frames of usual shapes: by side, as before


def test_a_long_thin_strip_is_tiled_by_its_area():
    assert tile_boxes((20000, 20), 1024) == [Box(0, 0, 10000, 20), Box(10000, 0, 20000, 20)]
    assert len(tile_boxes((20, 20000), 1024)) == 2
    assert len(tile_boxes((33_177_600, 1), 1024)) == 127  # the most any allowed frame gets


@pytest.mark.parametrize('size', [(500, 2000), (3000, 800)])
def test_stitched_tile_maps_put_a_hot_spot_back_in_place(size):
    """A hot cell in one tile's map ends up at the same source pixel on the stitched grid."""
    width, height = size
    hot_x, hot_y = int(width * 0.8), int(height * 0.7)  # lies in the last tile on the long axis
    maps = []
    for tile in tile_boxes(size, 1024):
        values = np.full((24, 24), 0.01, np.float32)
        if tile.contains(hot_x, hot_y):
            col = int((hot_x - tile.x0) / tile.width * 24)
            row = int((hot_y - tile.y0) / tile.height * 24)
            values[row, col] = 1.0
        maps.append(
            SaliencyMap(values, (0.0, 0.0, tile.width, tile.height)).shifted(tile.x0, tile.y0)
        )
    grid = project_to_image(maps, size)
    rows, cols = grid.shape
    assert abs(rows / cols - height / width) < 0.05  # cells stay square-ish on the full image
    row, col = np.unravel_index(np.argmax(grid), grid.shape)
    cell_w, cell_h = width / cols, height / rows
    assert col * cell_w - cell_w <= hot_x < (col + 2) * cell_w
    assert row * cell_h - cell_h <= hot_y < (row + 2) * cell_h
    box = select_box(grid, size, 336)
    assert box.is_inside(*size) and box.contains(hot_x, hot_y)


def test_a_padded_tile_does_not_overwrite_its_neighbour():
    """
    A padded tile's map speaks for its tile only.

    LLaVA pads each 640x720 tile of a 1280x720 frame to 720x720: its map's extent reaches 40 px
    into the next tile. The right tile's padding (a spurious peak, as in attention over padding)
    must not replace the left tile's own cells there, nor win the box.
    """
    size = (1280, 720)
    left, right = tile_boxes(size, 1024)
    assert (left.width, right.x0) == (640, 640)
    values = np.full((16, 16), 0.01, np.float32)
    hot_left = values.copy()
    hot_left[8, 14] = 1.0  # x 585-630 of the left tile: inside it, near its right edge
    spurious = values.copy()
    spurious[8, 0] = 50.0  # x 600-645: the right tile's padding, over the left tile
    maps = [SaliencyMap(m, (-40.0, 0.0, 680.0, 720.0), (0.0, 0.0, 640.0, 720.0)).shifted(t.x0, 0)
            for m, t in ((hot_left, left), (spurious, right))]  # fmt: skip
    assert maps[1].bounds == (640.0, 0.0, 1280.0, 720.0)
    grid = project_to_image(maps, size)
    row, col = np.unravel_index(np.argmax(grid), grid.shape)
    cell = size[0] / grid.shape[1]
    assert grid.max() == 1.0 and 585 <= (col + 0.5) * cell < 630 and row == grid.shape[0] // 2
    unbounded = [SaliencyMap(m.values, m.extent) for m in maps]  # what was done before
    assert project_to_image(unbounded, size).max() == 50.0


def test_projection_of_a_centre_crop_leaves_the_unseen_sides_empty():
    extent = centre_crop_extent((640, 480), 336, (336, 336))
    assert extent == pytest.approx((80.0, 0.0, 560.0, 480.0))
    grid = project_to_image([SaliencyMap(np.ones((24, 24), np.float32), extent)], (640, 480))
    assert grid.shape == (24, 32)
    assert (grid[:, :4] == 0).all() and (grid[:, -4:] == 0).all() and (grid[:, 4:-4] == 1).all()


def test_pad_to_square_extent_reaches_past_the_image():
    image = np.zeros((100, 300, 3), np.uint8)
    square, extent = pad_to_square(image, (1, 2, 3))
    assert square.shape == (300, 300, 3)
    assert extent == (0.0, -100.0, 300.0, 200.0)
    assert (square[0, 0] == (1, 2, 3)).all() and (square[150, 150] == 0).all()
    grid = project_to_image([SaliencyMap(np.ones((24, 24), np.float32), extent)], (300, 100))
    assert grid.shape == (8, 24) and (grid == 1).all()


def test_crop_is_the_boxed_pixels_and_rejects_boxes_outside():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    assert (crop(image, Box(2, 1, 5, 4)) == image[1:4, 2:5]).all()
    with pytest.raises(ValueError, match='outside'):
        crop(image, Box(0, 0, 8, 5))


def test_box_validates_its_fields():
    with pytest.raises(ValueError):
        Box(5, 0, 4, 1)
    with pytest.raises(TypeError):
        Box(0.5, 0, 4, 1)
    assert Box(1, 2, 4, 6).as_xyxy() == (1, 2, 4, 6) and Box(1, 2, 4, 6).area == 12
