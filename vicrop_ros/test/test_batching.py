"""Questions about one frame answered as one batch: every answer and map is the one alone."""

import numpy as np
import pytest
from sample_data import FAMILIES, random_image

from vicrop_ros.core import BadQuestion, Canceled, Vicrop, VicropConfig

pytestmark = pytest.mark.slow
QUESTIONS = (
    'What does the small label say?',
    'Which colour is the cap?',
    'How many screws are there?',
    'Is the door open?',
)


def crops_of(image: np.ndarray) -> list[np.ndarray | None]:
    """Return a crop per question: windows of different sizes and places, and none (NONE)."""
    return [image[100:300, 250:450], image[0:160, 0:160], None, image[200:480, 300:580]]


def answered_alone(model, image, questions, crops, config) -> list[str]:
    """Return each question's answer asked alone, with a fresh preparation of the image."""
    pairs = zip(questions, crops, strict=True)
    return [model.prepare(image).answer(question, crop, config) for question, crop in pairs]


@pytest.mark.parametrize('family', FAMILIES)
def test_batched_answers_are_token_identical_to_each_question_alone(family, tiny_model):
    model = tiny_model(family)
    image, config = random_image(640, 480, seed=41), VicropConfig(max_new_tokens=10)
    crops = crops_of(image)
    batched = model.prepare(image).answers(QUESTIONS, crops, config)
    alone = answered_alone(model, image, QUESTIONS, crops, config)
    assert batched == alone
    assert all(isinstance(answer, str) and answer for answer in batched)


@pytest.mark.parametrize('method', ['rel_att', 'grad_att', 'pure_grad'])
@pytest.mark.parametrize('family', FAMILIES)
def test_batched_maps_equal_each_question_alone(family, method, tiny_model):
    model = tiny_model(family)
    image, config = random_image(400, 300, seed=42), VicropConfig(method=method)
    batched = model.prepare(image).saliencies(QUESTIONS[:3], config)
    for question, together in zip(QUESTIONS[:3], batched, strict=True):
        alone = model.prepare(image).saliency(question, config)
        assert together.extent == alone.extent
        np.testing.assert_allclose(together.values, alone.values, rtol=1e-4, atol=1e-9)


def stop_after(checks: int):
    """Return a stop check that turns true on its ``checks + 1``-th call."""
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > checks

    return stop


@pytest.mark.parametrize('family', ['llava', 'instructblip'])  # a shared batch, and one by one
def test_a_row_stopped_while_decoding_is_canceled_and_the_others_answer(family, tiny_model):
    model = tiny_model(family)
    image, config = random_image(640, 480, seed=43), VicropConfig(max_new_tokens=10)
    crops = crops_of(image)[:3]
    stops = [None, stop_after(1), None]  # the second row stops after its first token
    answers = model.prepare(image).answers(QUESTIONS[:3], crops, config, stops)
    alone = answered_alone(model, image, QUESTIONS[:3], crops, config)
    assert isinstance(answers[1], Canceled)
    assert [answers[0], answers[2]] == [alone[0], alone[2]]


class CountingModel:
    """The real adapter, counting the images it prepares."""

    def __init__(self, model):
        self.model, self.name, self.input_size = model, model.name, model.input_size
        self.prepared = 0

    def prepare(self, image, answers=True):
        self.prepared += 1
        return self.model.prepare(image, answers)

    def question_problem(self, question, size, config):
        return self.model.question_problem(question, size, config)


@pytest.mark.parametrize(('width', 'height', 'prepared'), [(640, 480, 1), (1400, 500, 3)])
def test_the_engine_prepares_the_frame_once_and_gives_each_question_its_own_result(
    tiny_model, width, height, prepared
):
    counting = CountingModel(tiny_model('llava'))
    config = VicropConfig(max_new_tokens=6)
    image = random_image(width, height, seed=44)
    questions = [QUESTIONS[0], '   ', QUESTIONS[1], QUESTIONS[2]]
    stages = []
    outcomes = Vicrop(counting, config).answer_batch(image, questions, on_stage=stages.append)
    assert counting.prepared == prepared  # the frame once (and each tile of a wide one once)
    assert stages == ['saliency', 'cropping', 'answering']
    assert isinstance(outcomes[1], BadQuestion) and 'empty' in str(outcomes[1])
    plain = Vicrop(tiny_model('llava'), config)
    for question, outcome in zip(questions, outcomes, strict=True):
        if question.strip():
            alone = plain(image, question)
            assert (outcome.answer, outcome.box) == (alone.answer, alone.box)
            np.testing.assert_allclose(outcome.saliency, alone.saliency, rtol=1e-4, atol=1e-9)


def test_a_question_stopped_before_a_stage_is_canceled_there(tiny_model):
    engine = Vicrop(tiny_model('llava'), VicropConfig(max_new_tokens=4))
    image = random_image(320, 240, seed=45)
    outcomes = engine.answer_batch(image, QUESTIONS[:3], [None, stop_after(1), lambda: True])
    assert isinstance(outcomes[2], Canceled) and 'before the saliency stage' in str(outcomes[2])
    assert isinstance(outcomes[1], Canceled) and 'before the cropping stage' in str(outcomes[1])
    assert outcomes[0].answer == engine(image, QUESTIONS[0]).answer
