"""The attention ratio of a ground-truth box (the paper's Fig. 3) and the per-layer maps."""

import math

import numpy as np
import pytest

from vicrop_ros.core.box import Box
from vicrop_ros.core.config import Method, VicropConfig
from vicrop_ros.core.saliency import SaliencyMap
from vicrop_ros.evaluation.attention_ratio import attention_ratio, box_cells
from vicrop_ros.evaluation.evaluate import Record, attention_summary


def test_a_box_covers_the_cells_whose_centres_it_holds_and_at_least_one():
    # 640x480 on a 12 x 16 grid: 40 px cells.
    assert box_cells(Box(40, 80, 120, 160), (12, 16), (640, 480)) == (slice(2, 4), slice(1, 3))
    assert box_cells(Box(50, 90, 58, 98), (12, 16), (640, 480)) == (slice(2, 3), slice(1, 2))
    assert box_cells(Box(630, 470, 640, 480), (12, 16), (640, 480)) == (
        slice(11, 12),
        slice(15, 16),
    )


def test_even_attention_has_ratio_one_and_attention_on_the_box_more():
    even = SaliencyMap(np.ones((12, 16), np.float32), (0.0, 0.0, 640.0, 480.0))
    box = Box(200, 160, 280, 240)  # cells rows 4-5, cols 5-6
    assert attention_ratio([even], box, (640, 480)) == pytest.approx(1.0)
    peaked = np.ones((12, 16), np.float32)
    peaked[4:6, 5:7] = 9.0
    ratio = attention_ratio([SaliencyMap(peaked, even.extent)], box, (640, 480))
    # Windows elsewhere that share no cell with the box see only ones.
    assert ratio == pytest.approx(9.0)
    assert attention_ratio([SaliencyMap(peaked, even.extent)], Box(0, 0, 80, 80), (640, 480)) < 1


def test_a_padded_maps_cells_outside_the_image_are_not_elsewhere():
    # A 640x480 frame padded to a square: the map's extent reaches 80 px above and below.
    values = np.zeros((16, 16), np.float32)
    values[2:14] = 1.0  # the image rows; the padding rows hold no attention
    values[7, 7] = 5.0
    padded = SaliencyMap(values, (0.0, -80.0, 640.0, 560.0))
    ratio = attention_ratio([padded], Box(280, 200, 320, 240), (640, 480))
    assert ratio == pytest.approx(5.0)  # the 191 other image cells hold 1, the padding 0


def test_no_window_elsewhere_gives_nan():
    whole = SaliencyMap(np.ones((4, 4), np.float32), (0.0, 0.0, 64.0, 64.0))
    assert math.isnan(attention_ratio([whole], Box(0, 0, 64, 64), (64, 64)))


def test_the_summary_takes_median_ratios_per_layer_for_right_and_wrong_answers():
    def record(accuracy, ratios):
        return Record('q', 'none', 'x', accuracy, 1.0, 10, 'card', None, ratios)

    records = [record(1.0, (1.0, 3.0)), record(1.0, (2.0, math.nan)), record(1.0, (900.0, 1.0)),
               record(0.0, (4.0, 5.0)),
               Record('q', 'rel_att', 'x', 1.0, 1.0, 10, 'card', (0, 0, 1, 1))]  # fmt: skip
    assert attention_summary(records) == {
        'right': [2.0, 2.0],  # medians: one runaway ratio does not make the figure
        'count_right': 3,
        'wrong': [4.0, 5.0],
        'count_wrong': 1,
    }
    assert attention_summary(records[4:]) == {}


def test_per_layer_attention_is_what_rel_att_divides(tiny_model):
    """At rel-att's layer, question attention / generic attention is the rel-att map itself."""
    model = tiny_model('llava')
    image = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    config = VicropConfig(method=Method.REL_ATT, attention_layer=2)
    prepared = model.prepare(image)
    layers = prepared.attention_by_layer('what is it?', config)
    generic = prepared.attention_by_layer(config.generic_question, config)
    assert len(layers) == len(model.decoder_layers)
    assert all(m.extent == layers[0].extent for m in layers)
    question, reference = layers[2].values, generic[2].values
    floor = config.epsilon * (reference.mean() + question.mean())
    expected = question / (reference + floor)
    rel_att = prepared.saliency('what is it?', config)
    assert np.allclose(rel_att.values, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(layers[1].values, layers[2].values)
