"""Test data shared by the engine tests: the model families and reproducible images."""

import numpy as np

FAMILIES = ('llava', 'instructblip', 'qwen2_5_vl')


def random_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Return a reproducible random HWC uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
