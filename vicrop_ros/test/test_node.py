"""The vicrop node over real DDS with a tiny model: cameras, questions, answers, outputs."""

import time

from action_msgs.msg import GoalStatus
from node_helpers import VicropClient, start_node, stop_node
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.time import Time
from sample_data import random_image

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer, Question
from vicrop_interfaces.srv import Ask

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(240)]

NODE_PARAMS = (
    'head.reliability:=reliable',
    'wrist.reliability:=reliable',
    'wrist.transport:=compressed',
    'max_pending:=2',
    'max_image_age:=5.0',
    'max_new_tokens:=4',
)


@pytest.fixture(scope='module')
def client(ros_context, tiny_model_dir):
    process = start_node(tiny_model_dir('llava'), *NODE_PARAMS)
    client = VicropClient(ros_context)
    try:
        client.wait_until_ready()
        client.wait_for_matches()
        yield client
    finally:
        client.close()
        stop_node(process)
    assert process.returncode == 0, 'the node did not exit cleanly'


def stamp_at(seconds: float):
    return Time(nanoseconds=int(seconds * 1e9)).to_msg()


def stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def publish_and_settle(client, camera, rgb, stamp, frame_id):
    client.publish_frame(camera, rgb, stamp, frame_id)
    time.sleep(0.3)


def test_question_gets_one_answer_stamped_with_the_frame_used(client):
    head, wrist = random_image(640, 480, seed=1), random_image(320, 240, seed=2)
    head_stamp, wrist_stamp = client.now(), client.now()
    client.publish_frame('wrist', wrist, wrist_stamp, 'wrist_optical')
    publish_and_settle(client, 'head', head, head_stamp, 'head_optical')
    client.ask_topic(Question(id='first', question='What does the label say?', camera='head'))
    answers = client.wait_answers(['first'])['first']
    assert len(answers) == 1
    answer = answers[0]
    assert answer.status == Answer.OK, answer.error
    assert answer.header.frame_id == 'head_optical' and answer.header.stamp == head_stamp
    assert (answer.camera, answer.method, answer.question) == (
        'head',
        'rel_att',
        'What does the label say?',
    )
    assert (answer.image_width, answer.image_height) == (640, 480)
    crop = answer.crop
    assert (
        crop.width > 0 and crop.x_offset + crop.width <= 640 and crop.y_offset + crop.height <= 480
    )
    assert answer.total_ms >= answer.answer_ms > 0
    (box,) = client.crop_boxes['first']
    assert box.header == answer.header and box.roi == answer.crop and box.camera == 'head'
    overlays = [image for image in client.saliency if image.header == answer.header]
    assert len(overlays) == 1
    assert (overlays[0].width, overlays[0].height, overlays[0].encoding) == (640, 480, 'bgr8')


def test_camera_selection_and_the_compressed_wrist_camera(client):
    head_stamp, wrist_stamp = client.now(), client.now()
    client.publish_frame('head', random_image(640, 480, seed=3), head_stamp, 'head_optical')
    publish_and_settle(
        client, 'wrist', random_image(320, 240, seed=4), wrist_stamp, 'wrist_optical'
    )
    client.ask_topic(Question(id='wrist-q', question='Is the screw Phillips?', camera='wrist'))
    client.ask_topic(Question(id='default-q', question='Is the screw Phillips?', camera=''))
    answers = client.wait_answers(['wrist-q', 'default-q'])
    wrist = answers['wrist-q'][0]
    assert wrist.status == Answer.OK, wrist.error
    assert (wrist.camera, wrist.header.frame_id) == ('wrist', 'wrist_optical')
    assert (wrist.image_width, wrist.image_height) == (320, 240)  # decoded from JPEG
    default = answers['default-q'][0]
    assert (default.camera, default.header.frame_id) == ('head', 'head_optical')


def test_stamp_chooses_the_nearest_buffered_frame(client):
    now = stamp_seconds(client.now())
    stamps = [stamp_at(now - 0.9 + 0.3 * i) for i in range(4)]
    for i, stamp in enumerate(stamps):
        client.publish_frame('head', random_image(160, 120, seed=10 + i), stamp, f'head_{i}')
    time.sleep(0.3)
    question = Question(id='at-stamp', question='What colour is the cap?', camera='head')
    question.header.stamp = stamp_at(stamp_seconds(stamps[2]) + 0.05)
    client.ask_topic(question)
    answer = client.wait_answers(['at-stamp'])['at-stamp'][0]
    assert answer.status == Answer.OK, answer.error
    assert answer.header.stamp == stamps[2] and answer.header.frame_id == 'head_2'


def test_stale_frames_are_refused(client):
    old = stamp_at(stamp_seconds(client.now()) - 60.0)
    publish_and_settle(client, 'wrist', random_image(160, 120), old, 'wrist_old')
    client.ask_topic(Question(id='stale-newest', question='Anything?', camera='wrist'))
    far = Question(id='stale-stamp', question='Anything?', camera='head')
    far.header.stamp = stamp_at(stamp_seconds(client.now()) - 3600.0)
    client.ask_topic(far)
    answers = client.wait_answers(['stale-newest', 'stale-stamp'])
    newest, stamped = answers['stale-newest'][0], answers['stale-stamp'][0]
    assert newest.status == Answer.STALE_IMAGE and 'old' in newest.error
    assert stamped.status == Answer.STALE_IMAGE and 'requested stamp' in stamped.error


def test_unknown_camera_and_method_are_bad_requests(client):
    client.ask_topic(Question(id='bad-camera', question='q?', camera='tail'))
    client.ask_topic(Question(id='bad-method', question='q?', method='sharpest'))
    answers = client.wait_answers(['bad-camera', 'bad-method'])
    camera, method = answers['bad-camera'][0], answers['bad-method'][0]
    assert camera.status == Answer.BAD_REQUEST and "unknown camera 'tail'" in camera.error
    assert method.status == Answer.BAD_REQUEST and "unknown method 'sharpest'" in method.error


def test_ask_service_with_and_without_its_own_image(client):
    from node_helpers import raw_image

    publish_and_settle(
        client, 'head', random_image(640, 480, seed=6), client.now(), 'head_optical'
    )
    request = Ask.Request(
        id='svc-camera', question='What is on the shelf?', camera='head', method='grad_att'
    )
    answer = client.call_ask(request)
    assert answer.status == Answer.OK, answer.error
    assert (answer.id, answer.camera, answer.method) == ('svc-camera', 'head', 'grad_att')
    stamp = stamp_at(123.5)
    request = Ask.Request(id='svc-image', question='What is on the shelf?', method='none')
    request.image = raw_image(random_image(200, 150, seed=7), stamp, 'gripper_optical')
    answer = client.call_ask(request)
    assert answer.status == Answer.OK, answer.error
    assert (answer.camera, answer.header.frame_id, answer.header.stamp) == (
        'image',
        'gripper_optical',
        stamp,
    )
    assert (answer.image_width, answer.image_height) == (200, 150)
    assert answer.crop.width == 0  # method none: no crop
    assert len(client.wait_answers(['svc-camera', 'svc-image'])['svc-image']) == 1


def run_goal(client, goal, cancel_after_s=None):
    feedback = []
    sent = client.action_client.send_goal_async(
        goal, feedback_callback=lambda m: feedback.append(m.feedback)
    )
    deadline = time.monotonic() + 60
    while not sent.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    handle = sent.result()
    assert handle.accepted
    if cancel_after_s is not None:
        time.sleep(cancel_after_s)
        handle.cancel_goal_async()
    result = handle.get_result_async()
    while not result.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)  # feedback travels beside the result
    return result.result(), feedback


def test_action_reports_each_stage(client):
    assert client.action_client.wait_for_server(timeout_sec=30)
    publish_and_settle(
        client, 'head', random_image(640, 480, seed=8), client.now(), 'head_optical'
    )
    result, feedback = run_goal(
        client, AskQuestion.Goal(id='goal-1', question='Which dial value?')
    )
    assert result.status == GoalStatus.STATUS_SUCCEEDED
    assert result.result.answer.status == Answer.OK and result.result.answer.id == 'goal-1'
    stages = [f.stage for f in feedback]
    assert stages == [
        AskQuestion.Feedback.QUEUED,
        AskQuestion.Feedback.SALIENCY,
        AskQuestion.Feedback.CROPPING,
        AskQuestion.Feedback.ANSWERING,
    ]
    assert [f.elapsed_ms for f in feedback] == sorted(f.elapsed_ms for f in feedback)


def test_goal_canceled_while_queued_ends_canceled(client):
    assert client.action_client.wait_for_server(timeout_sec=30)
    big = random_image(2400, 1800, seed=9)  # 6 tiles of pure-grad: keeps the worker busy
    publish_and_settle(client, 'head', big, client.now(), 'head_big')
    client.ask_topic(Question(id='slow', question='Where is the label?', method='pure_grad'))
    time.sleep(0.2)
    result, _ = run_goal(
        client, AskQuestion.Goal(id='goal-cancel', question='q?'), cancel_after_s=0.1
    )
    assert result.status == GoalStatus.STATUS_CANCELED
    answer = result.result.answer
    assert answer.status == Answer.CANCELED and 'queued' in answer.error
    answers = client.wait_answers(['slow', 'goal-cancel'])
    assert len(answers['goal-cancel']) == 1 and len(answers['slow']) == 1


def test_question_past_its_timeout_is_answered_timeout_once(client):
    big = random_image(2400, 1800, seed=14)
    publish_and_settle(client, 'head', big, client.now(), 'head_big')
    client.ask_topic(Question(id='slow-2', question='Where is the label?', method='pure_grad'))
    time.sleep(0.2)
    answer = client.call_ask(Ask.Request(id='hurry', question='Quick?', timeout=0.3))
    assert answer.status == Answer.TIMEOUT
    assert answer.error == 'not answered within 0.3 s (while waiting in the queue)'
    answers = client.wait_answers(['slow-2', 'hurry'], settle_s=1.0)
    assert len(answers['hurry']) == 1 and answers['slow-2'][0].status == Answer.OK


def test_burst_over_max_pending_gets_busy_and_one_answer_each(client):
    publish_and_settle(
        client, 'head', random_image(640, 480, seed=12), client.now(), 'head_optical'
    )
    ids = [f'burst-{i}' for i in range(10)]
    for question_id in ids:
        client.ask_topic(Question(id=question_id, question='How many screws?'))
    answers = client.wait_answers(ids, timeout_s=120, settle_s=1.0)
    assert all(len(answers[i]) == 1 for i in ids)
    statuses = [answers[i][0].status for i in ids]
    assert set(statuses) <= {Answer.OK, Answer.BUSY}
    assert statuses.count(Answer.BUSY) >= 1 and statuses.count(Answer.OK) >= 3
    busy = next(answers[i][0] for i in ids if answers[i][0].status == Answer.BUSY)
    assert 'max_pending' in busy.error


def set_parameter(client, name, value: ParameterValue):
    service = client.node.create_client(SetParameters, '/vicrop/set_parameters')
    assert service.wait_for_service(timeout_sec=30)
    future = service.call_async(
        SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    )
    deadline = time.monotonic() + 30
    while not future.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.node.destroy_client(service)
    return future.result().results[0]


def test_invalid_parameter_values_are_rejected_with_a_reason(client):
    string = ParameterType.PARAMETER_STRING
    result = set_parameter(client, 'method', ParameterValue(type=string, string_value='sharpest'))
    assert not result.successful and 'method must be one of' in result.reason
    result = set_parameter(
        client,
        'max_pending',
        ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=0),
    )
    assert not result.successful
    result = set_parameter(client, 'model', ParameterValue(type=string, string_value='/other'))
    assert not result.successful and 'read-only' in result.reason
    result = set_parameter(client, 'method', ParameterValue(type=string, string_value='none'))
    assert result.successful
    publish_and_settle(
        client, 'head', random_image(320, 240, seed=13), client.now(), 'head_optical'
    )
    answer = client.call_ask(Ask.Request(id='after-params', question='Still there?'))
    assert answer.status == Answer.OK and answer.method == 'none'
    set_parameter(client, 'method', ParameterValue(type=string, string_value='rel_att'))


def test_no_frame_yet_is_no_image(ros_context, tiny_model_dir):
    """A fresh node (own name, nothing published to its cameras) answers NO_IMAGE."""
    process = start_node(
        tiny_model_dir('llava'), 'head.topic:=/nowhere/image', name='vicrop_empty'
    )
    client = VicropClient(ros_context, node_name='vicrop_empty')
    try:
        client.wait_until_ready()
        answer = client.call_ask(
            Ask.Request(id='nothing', question='What is there?', camera='head')
        )
    finally:
        client.close()
        stop_node(process)
    assert answer.status == Answer.NO_IMAGE
    assert answer.error == 'no frame received on the head camera yet'


def change_state(client, node_name, transition_id):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    service = client.node.create_client(ChangeState, f'/{node_name}/change_state')
    assert service.wait_for_service(timeout_sec=30)
    future = service.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    deadline = time.monotonic() + 60
    while not future.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.node.destroy_client(service)
    return future.result().success


def test_lifecycle_without_autostart_loads_on_configure(ros_context, tiny_model_dir):
    """With the shipped params file and autostart false: NOT_READY until configured+activated."""
    from ament_index_python.packages import get_package_share_directory
    from lifecycle_msgs.msg import Transition
    from node_helpers import raw_image

    params_file = f'{get_package_share_directory("vicrop_ros")}/config/vicrop.yaml'
    process = start_node(tiny_model_dir('qwen2_5_vl'), 'autostart:=false', 'max_new_tokens:=2',
                         name='vicrop_managed', params_file=params_file)  # fmt: skip
    client = VicropClient(ros_context, node_name='vicrop_managed')
    request = Ask.Request(id='managed', question='What is it?')
    request.image = raw_image(random_image(160, 120), client.now(), 'probe')
    try:
        assert client.ask_client.wait_for_service(timeout_sec=90)
        before = client.call_ask(request, resend_s=3.0)  # NOT_READY: repeating is harmless
        assert change_state(client, 'vicrop_managed', Transition.TRANSITION_CONFIGURE)
        assert change_state(client, 'vicrop_managed', Transition.TRANSITION_ACTIVATE)
        request.id = 'managed-2'
        active = client.call_ask(request)
        assert change_state(client, 'vicrop_managed', Transition.TRANSITION_DEACTIVATE)
        assert change_state(client, 'vicrop_managed', Transition.TRANSITION_CLEANUP)
        request.id = 'managed-3'
        after = client.call_ask(request)
    finally:
        client.close()
        stop_node(process)
    assert before.status == Answer.NOT_READY and 'unconfigured' in before.error
    assert active.status == Answer.OK, active.error
    assert active.model.endswith('tiny_qwen2_5_vl0')
    assert after.status == Answer.NOT_READY
