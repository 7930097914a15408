"""Synthetic scenes and TextVQA-format question sets: deterministic, targets where they say."""

import json
from pathlib import Path

import numpy as np
import pytest

from vicrop_ros.evaluation.question_set import load_question_set, write_synthetic_set
from vicrop_ros.evaluation.scenes import ANSWERS, QUESTIONS, TargetKind, render_scene


@pytest.mark.parametrize('kind', list(TargetKind))
def test_a_scene_is_a_function_of_its_seed(kind):
    first, again = render_scene(7, kind, 30), render_scene(7, kind, 30)
    other = render_scene(8, kind, 30)
    assert np.array_equal(first.image, again.image)
    assert (first.answer, first.box) == (again.answer, again.box)
    assert not np.array_equal(first.image, other.image)


@pytest.mark.parametrize('kind', list(TargetKind))
@pytest.mark.parametrize('frame_size', [(640, 480), (1280, 720)])
def test_the_target_is_drawn_inside_its_box_at_its_size(kind, frame_size):
    scene = render_scene(3, kind, 40, frame_size)
    width, height = frame_size
    assert scene.image.shape == (height, width, 3) and scene.image.dtype == np.uint8
    box = scene.box
    assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height
    assert max(box.width, box.height) == scene.size_px == 40
    assert scene.question == QUESTIONS[kind] and scene.answer in ANSWERS[kind]
    # The target's pixels are what the kind draws: a white card, a saturated cube, a light dial.
    inside = scene.image[box.slices()].reshape(-1, 3).astype(int)
    if kind is TargetKind.CUBE:
        assert (inside.max(axis=1) - inside.min(axis=1) > 100).mean() > 0.5
    else:
        assert (inside.min(axis=1) > 200).mean() > 0.3


def test_every_answer_of_a_kind_occurs():
    answers = {render_scene(seed, TargetKind.CARD, 20).answer for seed in range(200)}
    assert answers == set(ANSWERS[TargetKind.CARD])


def test_a_target_size_outside_the_frame_is_refused():
    with pytest.raises(ValueError, match='outside 6..160'):
        render_scene(0, TargetKind.DIAL, 200, (640, 480))


def test_a_written_synthetic_set_loads_back(tmp_path):
    path = write_synthetic_set(tmp_path, count=7, seed=2, sizes=(12, 48))
    questions = load_question_set(path)
    assert len(questions) == 7
    assert [q.kind for q in questions[:3]] == [k.value for k in TargetKind]
    assert [q.size_px for q in questions] == [12, 12, 12, 48, 48, 48, 18]  # 1280x720: x 1.5
    for question in questions:
        assert question.image_path.is_file()
        assert len(question.answers) == 10 and len(set(question.answers)) == 1
        assert max(question.box.width, question.box.height) == question.size_px


@pytest.mark.parametrize(
    ('document', 'message'),
    [
        ({'questions': []}, 'a "data" list'),
        ({'data': [{'question': 'Q?', 'answers': ['a'], 'image_id': 'x'}, 5]}, 'entry 1 is not'),
        ({'data': [{'question': '', 'answers': ['a'], 'image_id': 'x'}]}, '"question" must'),
        ({'data': [{'question': 'Q?', 'answers': [], 'image_id': 'x'}]}, '"answers" must'),
        ({'data': [{'question': 'Q?', 'answers': ['a']}]}, '"image_path" or "image_id"'),
        (
            {'data': [{'question': 'Q?', 'answers': ['a'], 'image_id': 'x', 'gt_box': [1, 2]}]},
            '"gt_box" must be',
        ),
        (
            {
                'data': [
                    {'question': 'Q?', 'answers': ['a'], 'image_id': 'x', 'gt_box': [9, 0, 1, 5]}
                ]
            },
            'negative size',
        ),
    ],
)
def test_a_malformed_set_is_refused_with_the_entry_and_field(tmp_path, document, message):
    path = tmp_path / 'set.json'
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message):
        load_question_set(path)


def test_textvqa_image_ids_resolve_in_the_images_directory(tmp_path):
    path = tmp_path / 'val.json'
    entry = {
        'question_id': 34602,
        'image_id': '003a8ae2ef43b901',
        'question': 'what is the brand?',
        'answers': ['nokia'] * 10,
    }
    path.write_text(json.dumps({'dataset_name': 'textvqa', 'data': [entry]}))
    (question,) = load_question_set(path, images_dir=tmp_path / 'train_images')
    assert question.image_path == tmp_path / 'train_images' / '003a8ae2ef43b901.jpg'
    assert question.question_id == '34602' and question.box is None


def test_the_documented_example_set_loads():
    example = Path(__file__).resolve().parents[2] / 'docs' / 'examples' / 'textvqa_format.json'
    by_id, by_path = load_question_set(example)
    assert by_id.image_path == example.parent / 'images' / '0054c91397f2fe05.jpg'
    assert by_path.image_path == example.parent / 'frames' / 'shelf_wrist_0031.png'
    assert by_id.box.as_xyxy() == (412, 218, 446, 240) and by_path.size_px == 72
    assert len(by_id.answers) == len(by_path.answers) == 10
