"""Later questions about the same pixels reuse the frame's preparation, and nothing changes."""

import numpy as np
import pytest
from sample_data import random_image

from vicrop_ros.core import Vicrop, VicropConfig

pytestmark = pytest.mark.slow
FAMILIES = ['llava', 'qwen2_5_vl', 'instructblip']
QUESTIONS = ('What does the small label say?', 'Which colour is the cap?')


class CountingModel:
    """The real adapter, recording the size of every image it prepares."""

    def __init__(self, model):
        self.model, self.name, self.input_size = model, model.name, model.input_size
        self.prepared = []  # (height, width) of each prepared image, in order
        self.answers = []  # whether each prepared image was to be answered

    def prepare(self, image, answers=True):
        self.prepared.append(image.shape[:2])
        self.answers.append(answers)
        return self.model.prepare(image, answers)

    def question_problem(self, question, size, config):
        return self.model.question_problem(question, size, config)


@pytest.mark.parametrize('family', FAMILIES)
def test_generic_grid_is_kept_and_later_maps_equal_a_fresh_computation(family, tiny_model):
    model = tiny_model(family)
    image, config = random_image(400, 300, seed=31), VicropConfig()
    batches = []  # batch size of each pass through the first decoder layer
    hook = model.decoder_layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(
            (args[0] if args else kwargs['hidden_states']).shape[0]
        ),
        with_kwargs=True,
    )
    try:
        kept = model.prepare(image)
        kept.saliency(QUESTIONS[0], config)
        second = kept.saliency(QUESTIONS[1], config).values
    finally:
        hook.remove()
    prefix_pass = [1] if type(model).shares_prefix else []
    assert batches == prefix_pass + [2, 1]  # the second question runs its own row only
    fresh = model.prepare(image).saliency(QUESTIONS[1], config).values
    np.testing.assert_allclose(second, fresh, rtol=1e-4, atol=1e-9)


def test_vicrop_reuses_a_frame_only_for_the_same_pixels(tiny_model):
    model = CountingModel(tiny_model('llava'))
    config = VicropConfig(max_new_tokens=4)
    reusing, plain = Vicrop(model, config, reuse_frames=2), Vicrop(tiny_model('llava'), config)
    image = random_image(400, 300, seed=32)
    for question in QUESTIONS:
        ours, expected = reusing(image, question), plain(image, question)
        assert ours.answer == expected.answer and ours.box == expected.box
        np.testing.assert_allclose(ours.saliency, expected.saliency, rtol=1e-4, atol=1e-9)
    assert len(model.prepared) == 1
    reusing(image.copy(), QUESTIONS[0])  # equal pixels in another array: still the same frame
    assert len(model.prepared) == 1
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    reusing(changed, QUESTIONS[0])
    assert len(model.prepared) == 2 and reusing.kept_frames == 2
    reusing(random_image(400, 300, seed=33), QUESTIONS[0])  # a third frame: the first goes
    assert len(model.prepared) == 3 and reusing.kept_frames == 2
    reusing(image, QUESTIONS[0])
    assert len(model.prepared) == 4
    reusing.forget_frames()
    assert reusing.kept_frames == 0


def test_tiles_of_a_large_frame_are_reused_too(tiny_model):
    model = CountingModel(tiny_model('llava'))
    reusing = Vicrop(model, VicropConfig(max_new_tokens=2, tile_threshold=256), reuse_frames=1)
    image = random_image(600, 300, seed=34)
    first = reusing(image, QUESTIONS[0])
    assert len(first.maps) > 1 and len(model.prepared) == 1 + len(first.maps)
    assert model.answers == [True] + [False] * len(first.maps)  # tiles only get a map
    reusing(image, QUESTIONS[1])
    assert len(model.prepared) == 1 + len(first.maps)


def test_without_reuse_every_question_prepares_its_frame(tiny_model):
    model = CountingModel(tiny_model('llava'))
    engine = Vicrop(model, VicropConfig(max_new_tokens=2))
    image = random_image(320, 240, seed=35)
    engine(image, QUESTIONS[0])
    engine(image, QUESTIONS[1])
    assert len(model.prepared) == 2 and engine.kept_frames == 0
