"""The replay script's schema and the verdicts, without a node: what makes a run pass or fail."""

import pytest

from vicrop_ros.ros import replay
from vicrop_ros.ros.replay_script import ScriptedQuestion, ScriptError, load_script, verdict

GOOD = """questions:
  - at: 0.5
    id: label
    camera: head
    question: What does the label say?
  - at: 1.0
    question: Is the gripper empty?
    expect:
      status: BAD_IMAGE
"""


def write(tmp_path, text: str, name: str = 'script.yaml'):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_script_loads_with_its_lines_and_expectations(tmp_path):
    first, second = load_script(write(tmp_path, GOOD))
    assert (first.id, first.line, first.camera) == ('label', 2, 'head')
    assert (second.id, second.line, second.expect) == ('q1', 6, {'status': 'BAD_IMAGE'})


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        (GOOD.replace('    question: What', '    questoin: What'),
         "script.yaml:2: question 1: unknown key 'questoin' (allowed: at, question, id,"),
        (GOOD.replace('at: 0.5', 'at: soon'),
         "script.yaml:2: question 1: 'at' must be a number of seconds >= 0, got 'soon'"),
        (GOOD.replace('      status: BAD_IMAGE', '      status: FINE'),
         "script.yaml:6: question 2: expect: 'status' must be one of OK, NO_IMAGE,"),
        (GOOD.replace('    expect:\n      status: BAD_IMAGE\n', '    expect:\n      answr: x\n'),
         "script.yaml:6: question 2: expect: unknown key 'answr'"),
        (GOOD.replace('    question: Is the gripper empty?\n', ''),
         "script.yaml:6: question 2: missing key 'question' (required: at, question)"),
        ('question:\n  - at: 1\n', "script.yaml:1: unknown key 'question' (the script has"),
        ('questions:\n  - at: [1\n', 'script.yaml:3: not valid YAML'),
        ('questions: 3\n', 'script.yaml:1: "questions" must be a list of questions'),
        (GOOD.replace('id: label', 'id: q1'), "script.yaml:6: id 'q1' is used twice (first at"),
    ],
    ids=['misspelled-key', 'wrong-type', 'unknown-status', 'expect-key', 'missing-question',
         'top-level-key', 'yaml-syntax', 'not-a-list', 'duplicate-id'],
)  # fmt: skip
def test_a_bad_script_is_refused_naming_the_line_and_the_key(tmp_path, text, message):
    with pytest.raises(ScriptError) as refused:
        load_script(write(tmp_path, text))
    assert message in str(refused.value)


def test_jsonl_scripts_name_the_line_too(tmp_path):
    text = '{"at": 0.1, "question": "a?"}\n\n{"at": 0.2, "question": "b?", "camra": "head"}\n'
    with pytest.raises(ScriptError, match=r"script.jsonl:3: question 2: unknown key 'camra'"):
        load_script(write(tmp_path, text, 'script.jsonl'))


def test_a_bad_script_exits_2_before_anything_is_replayed(tmp_path, capsys):
    script = write(tmp_path, GOOD.replace('question: What', 'questoin: What'))
    code = replay.main([str(tmp_path / 'no-such-bag'), '--script', str(script)])
    assert code == 2
    assert "unknown key 'questoin'" in capsys.readouterr().err


def test_a_malformed_remap_exits_2_with_the_expected_form(tmp_path, capsys):
    script = write(tmp_path, GOOD)
    code = replay.main(['bag', '--script', str(script), '--remap', '/cam=/head'])
    assert code == 2
    assert "--remap '/cam=/head': expected FROM:=TO" in capsys.readouterr().err


def entry(status='OK', **fields) -> dict:
    """Return a report entry of one answered question."""
    base = {'answers_received': 1, 'status': status, 'error': '', 'answer': 'ACME label',
            'box': [0, 0, 10, 10], 'image_stamp': '1.000000000',
            'frame_id': 'head_optical'}  # fmt: skip
    return base | fields


def question(**expect) -> ScriptedQuestion:
    return ScriptedQuestion(at=0.0, id='q', question='What?', expect=expect)


@pytest.mark.parametrize('status', ['BUSY', 'NO_IMAGE', 'STALE_IMAGE', 'TIMEOUT', 'MODEL_ERROR'])
def test_any_status_but_ok_fails_a_question_that_expects_none(status):
    failures = verdict(entry(status, error='why'), question(), None)
    assert failures == [f'status {status} (why), expected OK']


def test_an_expected_status_passes_and_ok_then_fails():
    assert verdict(entry('BAD_IMAGE'), question(status='BAD_IMAGE'), None) == []
    assert verdict(entry('OK'), question(status='BAD_IMAGE'), None) == [
        'status OK, expected BAD_IMAGE'
    ]


def test_no_answer_and_two_answers_fail():
    assert verdict({'answers_received': 0, 'status': None}, question(), None) == ['no answer']
    assert '2 answers for one question' in verdict(entry(answers_received=2), question(), None)


@pytest.mark.parametrize(
    ('key', 'value'),
    [('frame_id', 'wrist_optical'), ('image_stamp', '1.033333333'), ('box', [1, 0, 11, 10]),
     ('answer', 'ACNE label'), ('status', 'BUSY')],
)  # fmt: skip
def test_golden_catches_a_change_in_every_compared_field(key, value):
    golden = {'q': entry()}
    assert verdict(entry(), question(), golden) == []
    failures = verdict(
        entry(**{key: value}), question(status=entry(**{key: value})['status']), golden
    )
    assert len(failures) == 1 and f"'{key}'" in failures[0] and 'golden' in failures[0]


def test_saliency_images_of_one_frame_go_to_their_own_questions():
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from vicrop_interfaces.msg import Answer

    header = Header(frame_id='head_optical')
    header.stamp.sec = 7

    def answered(question_id: str, received: float, boxed: bool = True) -> ScriptedQuestion:
        answer = Answer(id=question_id, header=header)
        answer.crop.width = 10 if boxed else 0
        scripted = ScriptedQuestion(at=0.0, id=question_id, question='What?')
        scripted.answers.append((answer, received))
        return scripted

    questions = [answered('late', 2.0), answered('plain', 1.5, False), answered('early', 1.0)]
    images = [Image(header=header, width=1), Image(header=header, width=2)]
    matched = replay.match_saliency(questions, images)
    assert {k: v.width for k, v in matched.items()} == {'early': 1, 'late': 2}
