"""The vicrop node over real DDS with a tiny model: cameras, questions, answers, outputs."""

from pathlib import Path
import subprocess
import sys

from action_msgs.msg import GoalStatus
from node_helpers import VicropClient, result_of, start_node, stop_node, wait_until
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.time import Time
from sample_data import FAMILIES, random_image

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer, Question
from vicrop_interfaces.srv import Ask

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(240)]

NODE_PARAMS = (  # camera QoS as by default (reliability auto)
    'wrist.transport:=compressed',
    'max_image_age:=5.0',
    'frame_wait:=60.0',  # a question stamped at a frame waits for it, however slow the machine
    'max_pending:=16',  # ten questions wait for their frames at once
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


def at(question, stamp):
    """Return ``question`` (a Question or Ask request) stamped ``stamp``: about that frame."""
    if isinstance(question, Question):
        question.header.stamp = stamp
    else:
        question.stamp = stamp
    return question


def test_question_gets_one_answer_stamped_with_the_frame_used(client):
    head, wrist = random_image(640, 480, seed=1), random_image(320, 240, seed=2)
    head_stamp, wrist_stamp = client.now(), client.now()
    client.publish_frame('wrist', wrist, wrist_stamp, 'wrist_optical')
    client.publish_frame('head', head, head_stamp, 'head_optical')
    question = Question(id='first', question='What does the label say?', camera='head')
    client.ask_topic(at(question, head_stamp))
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
    wait_until(lambda: client.crop_boxes['first'], what='the crop box')  # other topics
    (box,) = client.crop_boxes['first']
    assert box.header == answer.header and box.roi == answer.crop and box.camera == 'head'

    def overlays():
        return [image for image in client.saliency if image.header == answer.header]

    wait_until(overlays, what='the saliency image')
    (overlay,) = overlays()
    assert (overlay.width, overlay.height, overlay.encoding) == (640, 480, 'bgr8')


def test_camera_selection_and_the_compressed_wrist_camera(client):
    head_stamp, wrist_stamp = client.now(), client.now()
    client.publish_frame('head', random_image(640, 480, seed=3), head_stamp, 'head_optical')
    client.publish_frame('wrist', random_image(320, 240, seed=4), wrist_stamp, 'wrist_optical')
    question = Question(id='wrist-q', question='Is the screw Phillips?', camera='wrist')
    client.ask_topic(at(question, wrist_stamp))
    question = Question(id='default-q', question='Is the screw Phillips?', camera='')
    client.ask_topic(at(question, head_stamp))
    answers = client.wait_answers(['wrist-q', 'default-q'])
    wrist = answers['wrist-q'][0]
    assert wrist.status == Answer.OK, wrist.error
    assert (wrist.camera, wrist.header.frame_id) == ('wrist', 'wrist_optical')
    assert (wrist.image_width, wrist.image_height) == (320, 240)  # decoded from JPEG
    default = answers['default-q'][0]
    assert (default.camera, default.header.frame_id) == ('head', 'head_optical')


def test_stamp_chooses_the_nearest_buffered_frame(client):
    now = stamp_seconds(client.now())
    stamps = [stamp_at(now + 1.0 + 0.3 * i) for i in range(4)]  # far from earlier frames
    for i, stamp in enumerate(stamps):
        client.publish_frame('head', random_image(160, 120, seed=10 + i), stamp, f'head_{i}')
    question = Question(id='at-stamp', question='What colour is the cap?', camera='head')
    question.header.stamp = stamp_at(stamp_seconds(stamps[2]) + 0.05)
    client.ask_topic(question)
    answer = client.wait_answers(['at-stamp'])['at-stamp'][0]
    assert answer.status == Answer.OK, answer.error
    assert answer.header.stamp == stamps[2] and answer.header.frame_id == 'head_2'
    # The newest frame is the latest stamp: later tests start once these are in the past.
    last = stamp_seconds(stamps[-1])
    wait_until(lambda: stamp_seconds(client.now()) > last, what='the last stamp to pass')


def test_ask_service_with_and_without_its_own_image(client):
    from node_helpers import raw_image

    stamp = client.now()
    client.publish_frame('head', random_image(640, 480, seed=6), stamp, 'head_optical')
    request = Ask.Request(
        id='svc-camera', question='What is on the shelf?', camera='head', method='grad_att'
    )
    answer = client.call_ask(at(request, stamp))
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


def run_goal(client, goal, stages: int):
    """Send ``goal``; return its result and feedback once ``stages`` feedbacks arrived."""
    feedback = []
    sent = client.on_spinner(lambda: client.action_client.send_goal_async(
        goal, feedback_callback=lambda m: feedback.append(m.feedback)))  # fmt: skip
    handle = result_of(sent)
    assert handle.accepted
    # rclpy's ActionClient forgets a goal's feedback callback once its result arrives: feedback
    # taken after the result is dropped. So the result is asked for after the feedback came.
    wait_until(lambda: len(feedback) >= stages, what='the feedback')
    result = result_of(client.on_spinner(handle.get_result_async))
    return result, feedback


def test_action_reports_each_stage(client):
    assert client.action_client.wait_for_server(timeout_sec=30)
    stamp = client.now()
    client.publish_frame('head', random_image(640, 480, seed=8), stamp, 'head_optical')
    goal = AskQuestion.Goal(id='goal-1', question='Which dial value?')
    result, feedback = run_goal(client, at(goal, stamp), stages=4)
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


def test_large_frames_from_a_reliable_camera_arrive_and_stamps_get_their_frame(client):
    """921 KB rgb8 frames at 10 Hz for 5 s, another process, default QoS: auto is reliable."""
    before = client.diagnostic_values('head camera', client.node.get_clock().now().nanoseconds)
    # Stamps later than any frame so far; the last question (4.6 s on) within max_image_age.
    start_ns = client.node.get_clock().now().nanoseconds + 300_000_000
    indices = range(1, 50, 5)
    requests = [Ask.Request(id=f'frame-q-{index}', question='What is it?', method='none',
                            stamp=Time(nanoseconds=start_ns + index * 100_000_000).to_msg())
                for index in indices]  # fmt: skip
    # Asked before the stream starts: each is decided when its frame arrives, however slowly
    # the model answers meanwhile.
    calls = [client.ask_client.call_async(request) for request in requests]
    publisher = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name('frame_publisher.py')),
         '/head_camera/image_raw', '50', '10', 'reliable', str(start_ns), '640x480'],
    )  # fmt: skip
    try:
        for index, request, call in zip(indices, requests, calls, strict=True):
            answer = result_of(call, timeout_s=120).answer
            assert answer.status == Answer.OK, answer.error
            assert answer.header.frame_id == f'frame-{index}'
            assert answer.header.stamp == request.stamp
        assert publisher.wait(timeout=120) == 0  # and every frame was acknowledged by the node
    finally:
        publisher.kill()
    after = client.diagnostic_values('head camera', client.node.get_clock().now().nanoseconds)
    received = int(after['frames_received']) - int(before['frames_received'])
    assert received >= 49, f'{received} of 50 frames received'  # at least 98 %
    assert after['subscribed_reliability'] == 'reliable' and after['frames_lost'] == '0'


def set_parameter(client, name, value: ParameterValue):
    service = client.node.create_client(SetParameters, '/vicrop/set_parameters')
    assert service.wait_for_service(timeout_sec=30)
    future = service.call_async(
        SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    )
    response = result_of(future)
    client.node.destroy_client(service)
    return response.results[0]


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
    stamp = client.now()
    client.publish_frame('head', random_image(320, 240, seed=13), stamp, 'head_optical')
    answer = client.call_ask(at(Ask.Request(id='after-params', question='Still there?'), stamp))
    assert answer.status == Answer.OK and answer.method == 'none'
    set_parameter(client, 'method', ParameterValue(type=string, string_value='rel_att'))


def change_state(client, node_name, transition_id):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    service = client.node.create_client(ChangeState, f'/{node_name}/change_state')
    assert service.wait_for_service(timeout_sec=30)
    future = service.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    response = result_of(future)
    client.node.destroy_client(service)
    return response.success


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


@pytest.mark.parametrize('family', [f for f in FAMILIES if f != 'llava'])  # llava: above
def test_every_family_answers_an_ask_through_the_node(ros_context, tiny_model_dir, family):
    from node_helpers import raw_image

    name = f'vicrop_{family}'
    process = start_node(tiny_model_dir(family), 'max_new_tokens:=2', name=name)
    client = VicropClient(ros_context, node_name=name)
    request = Ask.Request(id=f'{family}-ask', question='What is on the <image> label?')
    request.image = raw_image(random_image(160, 120, seed=61), client.now(), 'probe')
    try:
        client.wait_until_ready()
        answer = client.call_ask(request)
    finally:
        client.close()
        stop_node(process)
    assert answer.status == Answer.OK, answer.error
    assert answer.method == 'rel_att' and answer.crop.width > 0
