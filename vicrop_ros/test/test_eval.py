"""``vicrop eval``: scoring by condition and target size, the ground-truth crop, the command."""

import json
import subprocess

import pytest

from vicrop_ros.core.box import Box
from vicrop_ros.core.config import DEFAULT_SCALES
from vicrop_ros.evaluation.evaluate import (
    Record,
    format_summary,
    oracle_box,
    size_bucket,
    summarize,
)


@pytest.mark.parametrize(
    ('size', 'bucket'),
    [(5, '<16'), (15.9, '<16'), (16, '16-31'), (31.5, '16-31'), (32, '32-63'), (64, '>=64'),
     (None, 'unknown')],
)  # fmt: skip
def test_targets_fall_into_size_buckets_by_their_longest_side(size, bucket):
    assert size_bucket(size, (16, 32, 64)) == bucket


def record(question_id, condition, accuracy, seen, latency=10.0, kind='card'):
    """Return a Record with only the fields the summary reads set (``seen``: seen_px)."""
    return Record(question_id, condition, 'x', accuracy, latency, 4 * seen, kind, None,
                  seen_px=seen)  # fmt: skip


def test_the_summary_gives_accuracy_per_condition_and_size_bucket():
    records = [
        record('a', 'none', 0.0, 10), record('a', 'rel_att', 1.0, 10, 30.0),
        record('b', 'none', 0.0, 12), record('b', 'rel_att', 0.3, 12, 50.0),
        record('c', 'none', 1.0, 80, kind='cube'), record('c', 'rel_att', 1.0, 80, 40.0, 'cube'),
    ]  # fmt: skip
    summary = summarize(records, (16, 64))
    assert summary['questions'] == 3
    none, rel_att = summary['conditions']['none'], summary['conditions']['rel_att']
    assert none['accuracy'] == pytest.approx(33.3) and rel_att['accuracy'] == pytest.approx(76.7)
    assert none['accuracy_by_size'] == {'<16': 0.0, '>=64': 100.0}
    assert rel_att['accuracy_by_size'] == {'<16': 65.0, '>=64': 100.0}
    assert rel_att['count_by_size'] == {'<16': 2, '>=64': 1}
    assert rel_att['median_latency_ms'] == 40.0
    assert rel_att['accuracy_by_kind'] == {'card': 65.0, 'cube': 100.0}
    assert 'rel_att  by kind: card 65.0, cube 100.0' in format_summary(summary)


@pytest.mark.parametrize(
    'truth', [Box(300, 200, 320, 230), Box(0, 0, 12, 12), Box(600, 440, 640, 480)]
)
def test_the_ground_truth_crop_holds_the_box_with_a_vicrop_crops_context(truth):
    box = oracle_box(truth, (640, 480), 224, DEFAULT_SCALES)
    assert box.x0 <= truth.x0 and box.y0 <= truth.y0 and box.x1 >= truth.x1 and box.y1 >= truth.y1
    assert min(box.width, box.height) >= 224  # at least the smallest ViCrop window


def test_vicrop_eval_scores_every_condition_on_a_synthetic_set(tiny_model_dir, tmp_path):
    records_path = tmp_path / 'records.json'
    command = ['vicrop', 'eval', '--model', str(tiny_model_dir('llava')), '--synthetic', '3',
               '--sizes', '12,48', '--conditions', 'none,rel_att,gt_crop', '--max-new-tokens',
               '2', '--device', 'cpu', '--records', str(records_path), '--json']  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary['questions'] == 3 and list(summary['conditions']) == [
        'none',
        'rel_att',
        'gt_crop',
    ]
    for figures in summary['conditions'].values():
        assert 0.0 <= figures['accuracy'] <= 100.0 and figures['median_latency_ms'] > 0
        assert sum(figures['count_by_size'].values()) == 3
    assert '3/3 questions' in result.stderr  # the progress lines
    records = json.loads(records_path.read_text())
    assert len(records) == 9
    assert all((r['box'] is None) == (r['condition'] == 'none') for r in records)
    # The tiny LLaVA's input is 336 px: a 12 px target of a 640x480 frame is seen at 6.3 px.
    assert {(r['size_px'], r['seen_px']) for r in records} == {(12, 6.3)}


@pytest.mark.parametrize(
    ('arguments', 'message'),
    [
        (['--synthetic', '1', '--conditions', 'none,zoom'], "unknown condition 'zoom'"),
        ([], 'give --questions FILE or --synthetic N'),
        (['--questions', 'missing.json'], 'cannot read the question set'),
    ],
)
def test_vicrop_eval_refuses_bad_input_with_a_reason(tiny_model_dir, arguments, message):
    command = ['vicrop', 'eval', '--model', str(tiny_model_dir('llava')), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr
