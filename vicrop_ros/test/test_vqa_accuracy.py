"""The VQA accuracy and its answer normalisation, on cases worked out by hand."""

import pytest

from vicrop_ros.evaluation.vqa_accuracy import normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    ('given', 'compared'),
    [
        ('The Cat.', 'cat'),  # case, article, final period
        ('  a red\tcup\n', 'red cup'),  # whitespace and an article
        ('Two', '2'),  # number words as digits
        ('none', '0'),
        ('ten past nine', '10 past 9'),
        ('3,000', '3000'),  # a comma inside a number goes, nothing is split
        ('3.5', '3.5'),  # a period before a digit stays
        ('e.g.', 'eg'),
        ('coca-cola', 'coca cola'),  # a mark joining two words becomes a space
        ('yes , no', 'yes no'),  # a mark beside a space goes
        ('yes!', 'yes'),
        ('dont', "don't"),  # a contraction without its apostrophe
        ("couldnt've", "couldn't've"),  # ... or without one of two
        ("isn't", "isn't"),
        ('an apple', 'apple'),
        ('theatre', 'theatre'),  # an article only as a whole word
    ],
)
def test_answers_are_normalised_as_the_vqa_evaluation_does(given, compared):
    assert normalize_answer(given) == compared


@pytest.mark.parametrize(
    ('matching', 'accuracy'),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_ten_answers_score_min_matches_over_three_averaged_leave_one_out(matching, accuracy):
    # Of ten subsets of nine: those leaving out a matching answer see matching - 1 matches.
    answers = ['stop'] * matching + ['exit'] * (10 - matching)
    assert vqa_accuracy('STOP.', answers) == pytest.approx(accuracy)


def test_one_ground_truth_answer_scores_one_or_zero():
    assert vqa_accuracy('Seven', ['7']) == 1.0
    assert vqa_accuracy('1', ['7']) == 0.0


def test_a_question_without_answers_is_refused():
    with pytest.raises(ValueError, match='at least one human answer'):
        vqa_accuracy('7', [])
