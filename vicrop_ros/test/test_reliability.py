"""
The bad-input suite: hostile and careless requests against a real node process over DDS.

Each case sends one bad request and checks its one answer (status and a specific reason), then
that a good question is answered and the process is alive. The decoding rules themselves are in
test_images.py and the request checks in test_intake.py; here is what only the running node
shows: nothing a client sends kills it or goes unanswered.
"""

import os
import signal
import subprocess
import time

from action_msgs.msg import GoalStatus
from builtin_interfaces.msg import Time
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from node_helpers import VicropClient, raw_image, result_of, start_node, stop_node, wait_until
import numpy as np
import pytest
from sample_data import jpeg_claiming, png_claiming, random_image
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer, Question
from vicrop_interfaces.srv import Ask

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(240)]
NAME = 'vicrop_bad_input'
GOOD = random_image(48, 32, seed=3)


@pytest.fixture(scope='module')
def served(ros_context, tiny_model_dir):
    process = start_node(
        tiny_model_dir('llava'), 'max_new_tokens:=2', 'wrist.transport:=compressed',
        'max_pending:=8', 'timeout:=120.0', 'max_image_age:=3600.0', name=NAME,
    )  # fmt: skip
    client = VicropClient(ros_context, node_name=NAME)
    try:
        client.wait_until_ready()
        client.wait_for_matches()
        yield client, process
    finally:
        client.close()
        stop_node(process)


def good_request(job_id: str) -> Ask.Request:
    request = Ask.Request(id=job_id, question='What is it?', method='none')
    request.image = raw_image(GOOD, Time(), 'good')
    return request


def assert_still_serving(client, process, after: str) -> None:
    answer = client.call_ask(good_request(f'good-after-{after}'))
    assert answer.status == Answer.OK, answer
    assert process.poll() is None, 'the node died'


def padded(rgb: np.ndarray, padding: int, encoding: str = 'rgb8') -> Image:
    """Return ``rgb`` as an Image of ``encoding`` with ``padding`` junk bytes after each row."""
    pixels = {
        'rgb8': rgb,
        'bgra8': np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)]),
        'mono8': rgb[..., 0],
    }[encoding]
    rows = np.ascontiguousarray(pixels).reshape(rgb.shape[0], -1)
    msg = raw_image(rgb, Time(), 'padded')
    msg.encoding, msg.step = encoding, rows.shape[1] + padding
    msg.data = np.pad(rows, ((0, 0), (0, padding)), constant_values=0xAB).tobytes()
    return msg


def ask_fields(**fields) -> Ask.Request:
    request = good_request('')
    for key, value in fields.items():
        setattr(request, key, value)
    return request


def image_with(**fields) -> Image:
    msg = raw_image(GOOD, Time(), 'bad')
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


ASK_CASES = {
    'timeout-inf': (ask_fields(timeout=float('inf')), Answer.BAD_REQUEST, 'the timeout inf'),
    'timeout-1e10': (ask_fields(timeout=1e10), Answer.BAD_REQUEST, 'over the limit of 3600 s'),
    'timeout-nan': (ask_fields(timeout=float('nan')), Answer.BAD_REQUEST, 'the timeout nan'),
    'timeout-negative': (ask_fields(timeout=-3.0), Answer.BAD_REQUEST, 'the timeout -3.0'),
    'stamp-nanosec': (
        ask_fields(stamp=Time(sec=1, nanosec=4_000_000_000)),
        Answer.BAD_REQUEST,
        'nanosec 4000000000',
    ),  # fmt: skip
    'stamp-negative': (ask_fields(stamp=Time(sec=-1)), Answer.BAD_REQUEST, 'negative sec (-1)'),
    'empty': (ask_fields(question=''), Answer.BAD_REQUEST, 'the question is empty'),
    'zero-width': (
        ask_fields(question='\u200b\u200c\u200d'),
        Answer.BAD_REQUEST,
        'nothing visible in it',
    ),  # fmt: skip
    'too-long': (ask_fields(question='why ' * 600), Answer.BAD_REQUEST, '2400 > 2000 characters'),
    'too-many-tokens': (
        ask_fields(question='\U0001f916' * 2000),  # 2000 characters, thousands of tokens
        Answer.BAD_REQUEST,
        'the question is too long for the model: its prompt would be',
    ),
    'camera': (
        ask_fields(image=Image(), camera='tail'),
        Answer.BAD_REQUEST,
        "unknown camera 'tail'",
    ),  # fmt: skip
    'method': (ask_fields(method='sharpest'), Answer.BAD_REQUEST, "unknown method 'sharpest'"),
    'image-zero': (
        ask_fields(image=image_with(width=0)),
        Answer.BAD_IMAGE,
        "the request's image: image has zero size",
    ),  # fmt: skip
    'image-short': (
        ask_fields(image=image_with(data=b'\x00' * 10)),
        Answer.BAD_IMAGE,
        'image data has 10 bytes',
    ),  # fmt: skip
    'image-step': (
        ask_fields(image=image_with(step=100)),
        Answer.BAD_IMAGE,
        'image step 100 is smaller than a row of 48 rgb8 pixels (144 bytes)',
    ),
    'image-encoding': (
        ask_fields(image=image_with(encoding='foo8')),
        Answer.BAD_IMAGE,
        "cannot decode image encoding 'foo8'",
    ),  # fmt: skip
    'stamp-future': (
        ask_fields(image=Image(), camera='head', stamp=Time(sec=2_000_000_000)),
        Answer.BAD_REQUEST,
        's in the future (max_image_age',
    ),
    'control-characters': (
        ask_fields(question='\x00\x01\x7f'),
        Answer.BAD_REQUEST,
        'nothing visible in it',
    ),  # fmt: skip
    'image-mono8-step': (
        ask_fields(image=image_with(encoding='mono8', step=40, data=bytes(40 * 32))),
        Answer.BAD_IMAGE,
        'image step 40 is smaller than a row of 48 mono8 pixels (48 bytes)',
    ),
    'image-rgb16-step': (
        ask_fields(image=image_with(encoding='rgb16', step=144, data=bytes(144 * 32))),
        Answer.BAD_IMAGE,
        'image step 144 is smaller than a row of 48 rgb16 pixels (288 bytes)',
    ),
    'image-float': (
        ask_fields(image=image_with(encoding='32FC1', step=192, data=bytes(192 * 32))),
        Answer.BAD_IMAGE,
        "cannot decode image encoding '32FC1'",
    ),
    'image-huge': (
        ask_fields(image=Image(width=30000, height=30000, encoding='rgb8', step=90000)),
        Answer.BAD_IMAGE,
        'image of 30000x30000 pixels is over the limit',
    ),  # fmt: skip
}


@pytest.mark.parametrize('case', sorted(ASK_CASES))
def test_a_bad_ask_gets_one_answer_with_the_reason_and_the_node_lives_on(served, case):
    client, process = served
    request, status, reason = ASK_CASES[case]
    request.id = f'bad-{case}'
    answer = client.call_ask(request)
    assert answer.status == status and reason in answer.error, answer
    assert_still_serving(client, process, case)
    assert len(client.wait_answers([request.id])[request.id]) == 1


@pytest.mark.parametrize('encoding', ['rgb8', 'bgra8', 'mono8'])
@pytest.mark.parametrize('padding', [1, 64])
def test_row_padded_images_are_answered_about_the_right_size(served, encoding, padding):
    client, process = served
    request = good_request(f'padded-{encoding}-{padding}')
    request.image = padded(GOOD, padding, encoding)
    answer = client.call_ask(request)
    assert answer.status == Answer.OK, answer
    assert (answer.image_width, answer.image_height) == (48, 32)


def test_special_tokens_typed_in_a_question_are_answered_as_text(served):
    client, process = served
    request = good_request('typed-image-tokens')
    request.question, request.method = 'What do <image> and <image><image> mean?', 'rel_att'
    answer = client.call_ask(request)
    assert answer.status == Answer.OK, answer
    assert process.poll() is None


@pytest.mark.parametrize('size', [(20000, 20), (20, 20000)], ids=['wide', 'tall'])
def test_long_thin_images_are_answered(served, size):
    client, process = served
    width, height = size
    request = good_request(f'thin-{width}x{height}')
    request.image = raw_image(random_image(width, height, seed=4), Time(), 'thin')
    answer = client.call_ask(request)
    assert answer.status == Answer.OK, answer
    assert (answer.image_width, answer.image_height) == size
    assert_still_serving(client, process, f'thin-{width}x{height}')


COMPRESSED_CASES = {
    'jpeg-30000': (jpeg_claiming(30000, 30000), 'claims more than'),
    'jpeg-65000': (jpeg_claiming(65000, 65000), 'claims more than'),
    'png-20000': (png_claiming(20000, 20000), 'claims more than'),
    'jpeg-9000': (jpeg_claiming(9000, 9000), 'image of 9000x9000 pixels is over the limit'),
    'garbage': (b'\x00not an image', 'cannot read the compressed image header'),
    'empty': (b'', 'compressed image has no data'),
    'truncated': (jpeg_claiming(16, 16)[:40], 'cannot read the compressed image header'),
}


TOPIC_CASES = {
    'empty': (Question(question=' '), 'the question is empty'),
    'camera': (Question(question='q?', camera='tail'), "unknown camera 'tail'"),
    'method': (Question(question='q?', method='sharpest'), "unknown method 'sharpest'"),
    'nanosec': (
        Question(question='q?', header=Header(stamp=Time(sec=1, nanosec=2_000_000_000))),
        'nanosec 2000000000',
    ),  # fmt: skip
}


@pytest.mark.parametrize('case', sorted(TOPIC_CASES))
def test_a_bad_question_on_the_topic_gets_one_answer_with_the_reason(served, case):
    client, process = served
    question, reason = TOPIC_CASES[case]
    question.id = f'topic-{case}'
    client.ask_topic(question)
    (answer,) = client.wait_answers([question.id])[question.id]
    assert answer.status == Answer.BAD_REQUEST and reason in answer.error, answer
    assert_still_serving(client, process, f'topic-{case}')


@pytest.mark.parametrize(
    ('timeout', 'reason'), [(float('inf'), 'the timeout inf'), (-1.0, 'the timeout -1.0')]
)
def test_a_bad_goal_is_aborted_with_the_reason(served, timeout, reason):
    client, process = served
    assert client.action_client.wait_for_server(timeout_sec=60)
    goal = AskQuestion.Goal(id=f'goal-timeout-{timeout}', question='q?', timeout=timeout)
    goal.image = raw_image(GOOD, Time(), 'goal')
    handle = result_of(client.on_spinner(lambda: client.action_client.send_goal_async(goal)))
    result = result_of(client.on_spinner(handle.get_result_async))
    assert result.status == GoalStatus.STATUS_ABORTED
    answer = result.result.answer
    assert answer.status == Answer.BAD_REQUEST and reason in answer.error, answer
    assert_still_serving(client, process, f'goal-{timeout}')


@pytest.mark.parametrize('case', sorted(COMPRESSED_CASES))
def test_compressed_bombs_from_a_camera_are_bad_image(served, case):
    client, process = served
    data, reason = COMPRESSED_CASES[case]
    stamp = client.now()
    frame = CompressedImage(format='jpeg', data=data)
    frame.header.stamp, frame.header.frame_id = stamp, case
    client.wrist.publish(frame)
    request = Ask.Request(id=f'bomb-{case}', question='q?', camera='wrist', stamp=stamp)
    answer = client.call_ask(request)
    assert answer.status == Answer.BAD_IMAGE, answer
    assert answer.error.startswith('the wrist camera frame: ') and reason in answer.error
    assert_still_serving(client, process, case)


@pytest.mark.parametrize(
    'transition',
    [Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_CONFIGURE, 99],
    ids=['activate-while-active', 'configure-while-active', 'unknown-id'],
)
def test_a_lifecycle_transition_the_node_cannot_take_is_refused(served, transition):
    client, process = served
    service = client.node.create_client(ChangeState, f'/{NAME}/change_state')
    try:
        assert service.wait_for_service(timeout_sec=60)
        response = result_of(service.call_async(
            ChangeState.Request(transition=Transition(id=transition))))  # fmt: skip
    finally:
        client.node.destroy_client(service)
    assert not response.success
    assert_still_serving(client, process, f'transition-{transition}')


def test_questions_without_an_id_get_distinct_made_up_ids(served):
    client, _ = served
    before = set(client.answers)
    for _ in range(3):
        client.ask_topic(Question(question='', camera='head'))  # empty: answered at once
    wait_until(lambda: len(set(client.answers) - before) >= 3, what='three answers')
    made_up = set(client.answers) - before
    assert len(made_up) == 3 and all(i.startswith(f'{NAME}-') for i in made_up)


def test_a_burst_of_500_questions_and_100_asks_gets_one_answer_each(served):
    client, _ = served
    topic_ids = [f'burst-q{i}' for i in range(500)]
    ask_ids = [f'burst-a{i}' for i in range(100)]
    client.head.publish(raw_image(GOOD, client.now(), 'burst'))  # fresh for the whole test
    for question_id in topic_ids:
        question = Question(id=question_id, question='What is it?', camera='head')
        client.ask_topic(question)
    futures = [client.ask_client.call_async(good_request(i)) for i in ask_ids]
    responses = [result_of(future, timeout_s=180).answer for future in futures]
    answers = client.wait_answers(topic_ids + ask_ids, timeout_s=180)
    assert [r.id for r in responses] == ask_ids
    for question_id, received in answers.items():
        assert len(received) == 1, (question_id, received)
    statuses = [answers[i][0].status for i in topic_ids] + [r.status for r in responses]
    assert set(statuses) == {Answer.OK, Answer.BUSY}  # 8 may wait (max_pending), the rest: BUSY


def test_sigterm_answers_the_questions_in_flight_and_exits_0(ros_context, tiny_model_dir):
    """Three goals queued or running (a slow answer: 400 tokens), then SIGTERM."""
    name = 'vicrop_sigterm'
    process = start_node(tiny_model_dir('llava'), 'max_new_tokens:=400', name=name)
    client = VicropClient(ros_context, node_name=name)
    try:
        client.wait_until_ready()
        assert client.action_client.wait_for_server(timeout_sec=60)
        reached: set[int] = set()  # goals with feedback: queued (or further) in the node
        handles = []
        for index in range(3):
            goal = AskQuestion.Goal(id=f'inflight-{index}', question='q?', method='none')
            goal.image = raw_image(GOOD, Time(), 'inflight')
            handles.append(result_of(client.on_spinner(
                lambda goal=goal, i=index: client.action_client.send_goal_async(
                    goal, feedback_callback=lambda _: reached.add(i)))))  # fmt: skip
        wait_until(lambda: len(reached) == 3, what='every goal in the node')
        pending = [client.on_spinner(handle.get_result_async) for handle in handles]
        signalled = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        code = process.wait(timeout=60)
        print(f'exit {time.monotonic() - signalled:.2f} s after SIGTERM')  # a figure, not a limit
        answers = client.wait_answers([f'inflight-{i}' for i in range(3)])
        results = [result_of(future) for future in pending]  # sent before the node exited
    except subprocess.TimeoutExpired:
        raise AssertionError('the node did not exit after SIGTERM') from None
    finally:
        client.close()
        stop_node(process)
    assert code == 0
    for index in range(3):
        (answer,) = answers[f'inflight-{index}']
        assert answer.status in (Answer.OK, Answer.NOT_READY), answer
        if answer.status == Answer.NOT_READY:
            assert answer.error == 'the node is shutting down'
    assert all(r.status in (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_ABORTED)
               for r in results)  # fmt: skip
