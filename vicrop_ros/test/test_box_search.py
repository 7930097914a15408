"""select_box against a brute-force transliteration of the paper's rule, and its edge cases."""

import numpy as np
import pytest

from vicrop_ros.core import DEFAULT_SCALES, Box, choose_box, select_box


def brute_force_box(att_map, image_size, bbox_size, ratios=DEFAULT_SCALES):
    """Apply the reference rule with loops (cell-by-cell sums), keeping the scale per window."""
    width, height = image_size
    rows, cols = att_map.shape
    block_w, block_h = width / cols, height / rows
    candidates = []  # (difference, ratio, x, y, nx, ny)
    for ratio in ratios:
        nx = max(1, min(int(bbox_size * ratio / block_w), cols))
        ny = max(1, min(int(bbox_size * ratio / block_h), rows))
        if cols - nx < 1 and rows - ny < 1:
            if ratio == ratios[0]:
                return Box(0, 0, width, height)
            continue
        sliding = np.zeros((rows - ny + 1, cols - nx + 1))
        best, best_pos = -np.inf, (0, 0)
        for x in range(cols - nx + 1):
            for y in range(rows - ny + 1):
                total = sum(
                    float(att_map[j, i]) for j in range(y, y + ny) for i in range(x, x + nx)
                )
                sliding[y, x] = total
                if total > best:
                    best, best_pos = total, (x, y)
        x, y = best_pos
        adjacent = []
        if x > 0:
            adjacent.append(sliding[y, x - 1])
        if x < sliding.shape[1] - 1:
            adjacent.append(sliding[y, x + 1])
        if y > 0:
            adjacent.append(sliding[y - 1, x])
        if y < sliding.shape[0] - 1:
            adjacent.append(sliding[y + 1, x])
        candidates.append(((best - np.mean(adjacent)) / (nx * ny), ratio, x, y, nx, ny))
    chosen = max(range(len(candidates)), key=lambda i: (candidates[i][0], -i))
    _, ratio, x, y, nx, ny = candidates[chosen]
    half = int(bbox_size * ratio // 2)
    cx = int(x * block_w + block_w * nx / 2)
    cy = int(y * block_h + block_h * ny / 2)
    cx = half if cx < half else cx
    cy = half if cy < half else cy
    cx = width - half if cx > width - half else cx
    cy = height - half if cy > height - half else cy
    return Box(max(0, cx - half), max(0, cy - half), min(width, cx + half), min(height, cy + half))


def random_case(rng):
    rows, cols = int(rng.integers(1, 25)), int(rng.integers(1, 25))
    kind = rng.integers(3)
    if kind == 0:
        att_map = rng.random((rows, cols))
    elif kind == 1:  # peaked: one hot blob on a low background
        att_map = rng.random((rows, cols)) * 0.1
        att_map[rng.integers(rows), rng.integers(cols)] += 5.0
    else:  # sparse, with exact ties of zeros
        att_map = rng.random((rows, cols)) * (rng.random((rows, cols)) < 0.2)
    size = (int(rng.integers(40, 3000)), int(rng.integers(40, 3000)))
    base = int(rng.choice([224, 336, 448]))
    return att_map.astype(np.float32), size, base


def test_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(400):
        att_map, size, base = random_case(rng)
        if att_map.max() == att_map.min():
            continue  # flat maps: whole image by design, tested below
        assert select_box(att_map, size, base) == brute_force_box(att_map, size, base), (
            size,
            base,
        )
        checked += 1
    assert checked > 350


@pytest.mark.parametrize('size', [(100, 80), (336, 336), (300, 1000), (5000, 200), (2000, 1500)])
def test_box_lies_inside_the_image(size):
    rng = np.random.default_rng(7)
    for _ in range(30):
        box = select_box(rng.random((24, 24)), size, 336)
        assert box.is_inside(*size) and box.area > 0


def test_small_image_gives_the_whole_image():
    att_map = np.zeros((24, 24))
    att_map[3, 5] = 1.0
    assert select_box(att_map, (300, 200), 336) == Box(0, 0, 300, 200)


def test_flat_map_gives_the_whole_image():
    assert select_box(np.ones((24, 24)), (1920, 1080), 336) == Box(0, 0, 1920, 1080)


def test_box_is_centred_on_a_hot_spot():
    att_map = np.full((24, 24), 0.01)
    att_map[18, 4] = 1.0  # cell centre at x = 4.5 * 80 = 360, y = 18.5 * 50 = 925
    box = select_box(att_map, (1920, 1200), 336)
    assert box.contains(360, 925)
    assert box.width <= 2 * 336 and box.height <= 2 * 336


def test_sharper_scale_wins():
    # A hot square 6x6 cells (480 px at 80 px/cell) is framed best by the largest window.
    att_map = np.zeros((24, 24))
    att_map[8:14, 8:14] = 1.0
    choice = choose_box(att_map, (1920, 1920), 336)
    brute = brute_force_box(att_map, (1920, 1920), 336)
    assert choice.box == brute
    assert choice.scale > 1.0
    # A single hot cell is framed best by the smallest window.
    point = np.zeros((24, 24))
    point[12, 12] = 1.0
    assert choose_box(point, (1920, 1920), 336).scale == 1.0


def test_rejects_non_finite_maps():
    with pytest.raises(ValueError, match='finite'):
        select_box(np.array([[1.0, np.nan]]), (100, 100), 10)
