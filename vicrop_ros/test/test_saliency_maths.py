"""The saliency maths: finite ratios, gradient weighting, the high-pass mask, pure-grad pooling."""

import numpy as np
import pytest
import torch

from vicrop_ros.core import SaliencyMap
from vicrop_ros.core.saliency import (
    gradient_weighted_attention,
    high_pass_mask,
    pixel_gradient_ratio,
    safe_ratio,
)


def test_ratio_is_finite_where_the_denominator_is_zero():
    question = torch.tensor([0.3, 0.2, 0.5])
    generic = torch.tensor([0.0, 0.5, 0.5])
    ratio = safe_ratio(question, generic, epsilon=1e-3)
    assert torch.isfinite(ratio).all()
    assert ratio[0] > ratio[1] and ratio[0] > ratio[2]  # zero generic attention -> largest ratio
    assert ratio[1] == pytest.approx(0.2 / (0.5 + 1e-3 * (1 / 3 + 1 / 3)), rel=1e-5)
    assert torch.isfinite(safe_ratio(question, torch.zeros(3), 1e-3)).all()
    assert (safe_ratio(torch.zeros(3), torch.zeros(3), 1e-3) == 0).all()


def test_gradient_weighting_keeps_only_positive_gradients():
    attention = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    gradient = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    assert gradient_weighted_attention(attention, gradient).tolist() == pytest.approx(
        [(0.5 + 0.4) / 2, (0.0 + 0.4) / 2]
    )


def test_high_pass_mask_marks_detail_not_flat_regions():
    image = torch.zeros(3, 64, 64)
    image[:, 8:24, 36:60] = torch.rand(3, 16, 24)  # texture in the top-right
    mask = high_pass_mask(image)
    assert mask.shape == (64, 64)
    assert mask[10:22, 40:56].float().mean() > 0.9
    assert mask[40:, :30].sum() == 0


def test_pixel_gradient_ratio_pools_to_the_patch_grid():
    gradient = torch.zeros(3, 28, 42)
    gradient[:, 14:, 28:] = 1.0
    generic = torch.ones(3, 28, 42)
    mask = torch.ones(28, 42, dtype=torch.bool)
    result = pixel_gradient_ratio(gradient, generic, mask, patch_size=14, epsilon=1e-3)
    assert result.shape == (2, 3)
    assert np.unravel_index(int(result.argmax()), (2, 3)) == (1, 2)
    assert torch.isfinite(pixel_gradient_ratio(gradient, 0 * generic, mask, 14, 1e-3)).all()


def test_saliency_map_rejects_non_finite_values():
    with pytest.raises(ValueError, match='non-finite'):
        SaliencyMap(np.array([[np.inf]]), (0, 0, 1, 1))
