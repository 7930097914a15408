"""Prefix sharing is exact: the same maps and the same answers as computing everything afresh."""

import numpy as np
import pytest
from sample_data import random_image
import torch

from vicrop_ros.core import VicropConfig
from vicrop_ros.models.registry import FAMILIES as FAMILY_LIST

pytestmark = pytest.mark.slow
QUESTION = 'What does the small label say?'


SHARING = [f.name for f in FAMILY_LIST if f.adapter.shares_prefix]  # every family that shares


@pytest.fixture(params=SHARING)
def sharing(request, tiny_model):
    """Return the tiny model of a family that shares the prefix."""
    model = tiny_model(request.param)
    assert type(model).shares_prefix
    return model


def without_prefix(model, function):
    type(model).shares_prefix = False
    try:
        return function()
    finally:
        type(model).shares_prefix = True


@pytest.mark.parametrize('method', ['rel_att', 'grad_att'])
def test_maps_from_the_shared_prefix_equal_the_plain_computation(sharing, method):
    image, config = random_image(640, 480, seed=21), VicropConfig(method=method)
    shared = sharing.prepare(image)
    image_tokens = sharing.image_tokens(640, 480)
    assert shared.prefix is not None and shared.prefix.length > image_tokens  # system + image
    fast = shared.saliency(QUESTION, config).values
    plain = without_prefix(
        sharing, lambda: sharing.prepare(image).saliency(QUESTION, config).values
    )
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize('with_crop', [True, False])
def test_answers_continued_from_the_prefix_are_token_identical(sharing, with_crop):
    image, config = random_image(640, 480, seed=22), VicropConfig(max_new_tokens=12)
    crop = image[100:300, 250:450] if with_crop else None
    shared = sharing.prepare(image)
    shared.saliency(QUESTION, VicropConfig())  # the attention passes must not disturb the prefix
    fast = shared.answer(QUESTION, crop, config)
    plain = without_prefix(sharing, lambda: sharing.prepare(image).answer(QUESTION, crop, config))
    assert fast == plain and fast


def test_one_prefix_serves_several_questions(sharing):
    image, config = random_image(320, 240, seed=23), VicropConfig()
    shared = sharing.prepare(image)
    first = shared.saliency(QUESTION, config).values
    shared.saliency('Which colour is the cap?', config)
    again = shared.saliency(QUESTION, config).values
    # The second pass runs the question alone (its generic row is kept): a batch of one sums in
    # another order than the first batch of two, so equal up to float rounding.
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-7)


def test_filling_the_cache_computes_every_key_and_value_but_not_the_last_layers_output(sharing):
    from transformers import DynamicCache

    image = random_image(320, 240, seed=24)
    view = sharing.model_view(image)[0]
    inputs = sharing.encode([[view]], [sharing.prompt(QUESTION, 1)])
    text_config = sharing.model.config.get_text_config()
    full, filled = DynamicCache(config=text_config), DynamicCache(config=text_config)
    with torch.no_grad():
        sharing.model.model(**inputs, cache=full, use_cache=True)
    calls = []  # layers whose MLP ran during the fill
    hooks = [
        layer.mlp.register_forward_hook(lambda *_, index=index: calls.append(index))
        for index, layer in enumerate(sharing.decoder_layers)
    ]
    try:
        sharing.fill_cache(filled, dict(inputs))
    finally:
        for hook in hooks:
            hook.remove()
    depth = len(sharing.decoder_layers)
    assert calls == list(range(depth - 1))  # all but the last layer
    assert len(filled.layers) == depth
    for ours, reference in zip(filled.layers, full.layers, strict=True):
        torch.testing.assert_close(ours.keys, reference.keys)
        torch.testing.assert_close(ours.values, reference.values)


def test_a_saliency_only_image_computes_the_prefix_as_deep_as_each_method_reads(sharing):
    image = random_image(320, 240, seed=25)
    depth = len(sharing.decoder_layers)
    answered = sharing.prepare(image)
    tile = sharing.prepare(image, answers=False)
    assert answered.prefix.depth == depth and tile.prefix is None
    tile.saliency(QUESTION, VicropConfig(method='pure_grad'))
    assert tile.prefix is None  # pure-grad runs whole prompts with the pixels
    for method, layers in (('rel_att', sharing.attention_layer(VicropConfig()) + 1),
                           ('grad_att', depth)):  # fmt: skip
        config = VicropConfig(method=method)
        shallow = tile.saliency(QUESTION, config).values
        assert tile.prefix.depth == layers
        full = answered.saliency(QUESTION, config).values
        np.testing.assert_allclose(shallow, full, rtol=1e-4, atol=1e-9)
    assert layers == depth > sharing.attention_layer(VicropConfig()) + 1
    config = VicropConfig(max_new_tokens=6)
    assert tile.answer(QUESTION, None, config) == answered.answer(QUESTION, None, config)
