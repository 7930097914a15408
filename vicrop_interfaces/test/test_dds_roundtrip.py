"""The interfaces over real DDS: a topic across processes, the Ask service, the action."""

import json
from pathlib import Path
import subprocess
import sys
import threading

from action_msgs.msg import GoalStatus
from dds_helpers import spin_until
import pytest
from rclpy.action import ActionClient, ActionServer
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer, CropBox, Question
from vicrop_interfaces.srv import Ask

pytestmark = pytest.mark.dds

# Feedback is a topic: a subscription discovered a moment after the goal starts would miss the
# first stages. Transient-local history hands them over once the endpoints match.
FEEDBACK_QOS = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)

ANSWER_FIELDS = {
    'header': {
        'stamp': {'sec': 1700000000, 'nanosec': 123456789},
        'frame_id': 'head_camera_optical',
    },
    'id': 'q-42',
    'question': 'What does the small label say?',
    'answer': 'ACME 12V',
    'status': Answer.OK,
    'camera': 'head',
    'method': 'rel_att',
    'model': 'llava-hf/llava-1.5-7b-hf',
    'image_width': 1280,
    'image_height': 720,
    'crop': {'x_offset': 400, 'y_offset': 120, 'width': 336, 'height': 336},
    'crop_score': 0.75,
    'queue_wait_ms': 1.5,
    'saliency_ms': 20.25,
    'crop_ms': 0.5,
    'answer_ms': 180.0,
    'total_ms': 202.25,
}


def as_dict(message) -> dict:
    """Return the fields of ``message`` named in ANSWER_FIELDS, recursively, as plain values."""

    def pick(obj, template):
        return {
            name: pick(getattr(obj, name), sub) if isinstance(sub, dict) else getattr(obj, name)
            for name, sub in template.items()
        }

    return pick(message, ANSWER_FIELDS)


def test_constants_name_every_status_and_stage():
    statuses = [Answer.OK, Answer.NO_IMAGE, Answer.STALE_IMAGE, Answer.BAD_REQUEST, Answer.BUSY]
    statuses += [Answer.MODEL_ERROR, Answer.TIMEOUT, Answer.CANCELED, Answer.BAD_IMAGE]
    statuses += [Answer.NOT_READY]
    assert len(set(statuses)) == len(statuses)
    assert Answer.OK == 0
    stages = [AskQuestion.Feedback.QUEUED, AskQuestion.Feedback.SALIENCY]
    stages += [AskQuestion.Feedback.CROPPING, AskQuestion.Feedback.ANSWERING]
    assert stages == [0, 1, 2, 3]
    assert (Question.CAMERA_HEAD, Question.CAMERA_WRIST) == ('head', 'wrist')
    methods = {Question.METHOD_REL_ATT, Question.METHOD_GRAD_ATT, Question.METHOD_PURE_GRAD}
    assert methods | {Question.METHOD_NONE} == {'rel_att', 'grad_att', 'pure_grad', 'none'}
    assert CropBox().roi.width == 0


def test_answer_crosses_processes(ros_context):
    node = Node('answer_listener', context=ros_context)
    received: list[Answer] = []
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Answer, '/vicrop_test/answers', received.append, qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    publisher = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name('answer_publisher.py')),
            '/vicrop_test/answers',
            json.dumps(ANSWER_FIELDS),
        ]
    )
    try:
        assert spin_until(executor, lambda: bool(received)), 'no Answer arrived from the publisher'
        assert publisher.wait(timeout=30) == 0
    finally:
        publisher.kill()
        executor.shutdown()
        node.destroy_node()
    assert as_dict(received[0]) == ANSWER_FIELDS


class EchoServer(Node):
    """A real Ask service and AskQuestion action server that answer by echoing the request."""

    STAGES = (
        AskQuestion.Feedback.QUEUED,
        AskQuestion.Feedback.SALIENCY,
        AskQuestion.Feedback.CROPPING,
        AskQuestion.Feedback.ANSWERING,
    )

    def __init__(self, context):
        super().__init__('echo_server', context=context)
        self.create_service(Ask, '/vicrop_test/ask', self._ask)
        self._action = ActionServer(
            self,
            AskQuestion,
            '/vicrop_test/ask_question',
            self._execute,
            feedback_pub_qos_profile=FEEDBACK_QOS,
        )

    @staticmethod
    def answer_for(request) -> Answer:
        answer = Answer()
        answer.id = request.id
        answer.question = request.question
        answer.answer = f'echo: {request.question}'
        answer.camera = request.camera or 'image'
        answer.method = request.method
        answer.header.stamp = request.stamp
        answer.header.frame_id = request.image.header.frame_id
        answer.image_width = request.image.width
        answer.image_height = request.image.height
        answer.crop.width = sum(request.image.data)  # proves the pixels arrived
        answer.total_ms = request.timeout * 1000.0
        return answer

    def _ask(self, request, response):
        response.answer = self.answer_for(request)
        return response

    def _execute(self, goal_handle):
        for stage in self.STAGES:
            feedback = AskQuestion.Feedback(stage=stage, elapsed_ms=float(10 * stage))
            goal_handle.publish_feedback(feedback)
        goal_handle.succeed()
        return AskQuestion.Result(answer=self.answer_for(goal_handle.request))


@pytest.fixture
def echo_server(ros_context):
    server = EchoServer(ros_context)
    executor = MultiThreadedExecutor(context=ros_context)
    executor.add_node(server)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield server
    executor.shutdown()
    server.destroy_node()
    thread.join(timeout=5)


def small_image() -> Image:
    image = Image(height=2, width=3, encoding='rgb8', step=9)
    image.header.frame_id = 'wrist_camera_optical'
    image.data = bytes(range(18))
    return image


def test_ask_service_round_trip(ros_context, echo_server):
    client_node = Node('ask_client', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(client_node)
    client = client_node.create_client(Ask, '/vicrop_test/ask')
    try:
        assert client.wait_for_service(timeout_sec=20.0)
        request = Ask.Request(id='s-1', question='Is the screw Phillips?', method='grad_att')
        request.stamp.sec = 77
        request.image = small_image()
        request.timeout = 2.5
        future = client.call_async(request)
        assert spin_until(executor, future.done)
        answer = future.result().answer
    finally:
        executor.shutdown()
        client_node.destroy_node()
    assert answer.id == 's-1'
    assert answer.answer == 'echo: Is the screw Phillips?'
    assert (answer.camera, answer.method) == ('image', 'grad_att')
    assert answer.header.stamp.sec == 77
    assert answer.header.frame_id == 'wrist_camera_optical'
    assert (answer.image_width, answer.image_height) == (3, 2)
    assert answer.crop.width == sum(range(18))
    assert answer.total_ms == pytest.approx(2500.0)


def test_ask_question_action_with_feedback(ros_context, echo_server):
    client_node = Node('action_client', context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(client_node)
    client = ActionClient(
        client_node,
        AskQuestion,
        '/vicrop_test/ask_question',
        feedback_sub_qos_profile=FEEDBACK_QOS,
    )
    feedback: list[AskQuestion.Feedback] = []
    try:
        assert client.wait_for_server(timeout_sec=20.0)
        goal = AskQuestion.Goal(id='a-7', question='Which number is on the dial?', camera='wrist')
        sent = client.send_goal_async(
            goal, feedback_callback=lambda m: feedback.append(m.feedback)
        )
        assert spin_until(executor, sent.done)
        goal_handle = sent.result()
        assert goal_handle.accepted
        # rclpy's ActionClient forgets a goal's feedback callback once its result arrives
        # (feedback taken after the result is dropped): ask for the result after the feedback.
        spin_until(executor, lambda: len(feedback) == len(EchoServer.STAGES), timeout_s=60.0)
        result = goal_handle.get_result_async()
        assert spin_until(executor, result.done)
    finally:
        executor.shutdown()
        client_node.destroy_node()
    assert result.result().status == GoalStatus.STATUS_SUCCEEDED
    answer = result.result().result.answer
    assert (answer.id, answer.camera) == ('a-7', 'wrist')
    assert answer.answer == 'echo: Which number is on the dial?'
    assert [f.stage for f in feedback] == list(EchoServer.STAGES)
    assert [f.elapsed_ms for f in feedback] == [0.0, 10.0, 20.0, 30.0]
