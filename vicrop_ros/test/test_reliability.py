"""
Exactly one answer per question under bad input and faults, over real DDS.

The node runs in this process (still over DDS: rclpy has no intra-process path) so that faults
can be injected around its real engine: a model exception, a CUDA out-of-memory error (simulated:
it cannot happen on a CPU) and an all-zero importance map.
"""

import threading
import time

from node_helpers import VicropClient, raw_image
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sample_data import random_image
from sensor_msgs.msg import CompressedImage, Image
import torch

from vicrop_interfaces.msg import Answer, Question
from vicrop_interfaces.srv import Ask
from vicrop_ros.core import SaliencyMap, Vicrop
from vicrop_ros.ros.node import VicropNode, load_engine

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(300)]


class ZeroMaps:
    """A model whose importance maps are all zero (its answers are the real model's)."""

    def __init__(self, model):
        self.model = model
        self.name, self.input_size, self.device = model.name, model.input_size, model.device

    def prepare(self, image, answers=True):
        prepared = self.model.prepare(image, answers)

        class Prepared:
            def saliency(self, question, config):
                real = prepared.saliency(question, config)
                return SaliencyMap(np.zeros_like(real.values), real.extent)

            def answer(self, question, crop, config, stop=None):
                return prepared.answer(question, crop, config, stop)

        return Prepared()


class FaultInjection(Vicrop):
    """The real engine, except for questions naming a fault: RAISE, OOM, ZEROMAP."""

    def __init__(self, engine: Vicrop):
        super().__init__(engine.model, engine.config, engine.reuse_frames)
        self.zero_maps = Vicrop(ZeroMaps(engine.model), engine.config)

    def __call__(self, image, question, on_stage=None, **overrides):
        if 'RAISE' in question:
            raise RuntimeError('injected failure in the model')
        if 'OOM' in question:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')
        if 'ZEROMAP' in question:
            return self.zero_maps(image, question, on_stage, **overrides)
        return super().__call__(image, question, on_stage, **overrides)


@pytest.fixture(scope='module')
def served(ros_context, tiny_model_dir):
    overrides = [
        Parameter('model', value=str(tiny_model_dir('llava'))),
        Parameter('head.reliability', value='reliable'),
        Parameter('wrist.reliability', value='reliable'),
        Parameter('wrist.transport', value='compressed'),
        Parameter('max_pending', value=3),
        Parameter('max_image_age', value=5.0),
        Parameter('max_new_tokens', value=2),
        Parameter('max_question_length', value=200),
        Parameter('max_image_pixels', value=2_000_000),
    ]
    node = VicropNode(
        make_engine=lambda settings: FaultInjection(load_engine(settings)),
        context=ros_context,
        parameter_overrides=overrides,
    )
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    executor = MultiThreadedExecutor(num_threads=8, context=ros_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    client = VicropClient(ros_context)
    client.wait_until_ready()
    client.wait_for_matches()
    client.publish_frame('head', random_image(320, 240, seed=1), client.now(), 'head_optical')
    time.sleep(0.3)
    yield node, client
    client.close()
    executor.shutdown()
    spinner.join(timeout=5)
    node.close()
    node.destroy_node()


def image_request(question_id, image: Image, question='What is it?') -> Ask.Request:
    return Ask.Request(id=question_id, question=question, image=image)


def case_unsupported_encoding(client, node):
    image = raw_image(random_image(8, 4), client.now(), 'x')
    image.encoding, image.step = '32FC1', 8 * 4
    image.data = bytes(8 * 4 * 4)
    return client.call_ask(image_request('enc', image))


def case_data_length_mismatch(client, node):
    image = raw_image(random_image(8, 4), client.now(), 'x')
    image.data = bytes(10)
    return client.call_ask(image_request('length', image))


def case_zero_width(client, node):
    image = Image(width=0, height=4, encoding='rgb8', step=0, data=bytes(12))
    return client.call_ask(image_request('zero', image))


def case_over_pixel_limit(client, node):
    image = raw_image(np.zeros((1500, 1500, 3), np.uint8), client.now(), 'x')
    return client.call_ask(image_request('huge', image))


def case_corrupt_jpeg_on_the_camera(client, node):
    broken = CompressedImage(format='jpeg', data=b'\xff\xd8\xff' + bytes(200))
    broken.header.stamp, broken.header.frame_id = client.now(), 'wrist_broken'
    client.wrist.publish(broken)
    time.sleep(0.3)
    return client.call_ask(Ask.Request(id='jpeg', question='q?', camera='wrist'))


def case_empty_compressed_data(client, node):
    empty = CompressedImage(format='jpeg')
    empty.header.stamp, empty.header.frame_id = client.now(), 'wrist_empty'
    client.wrist.publish(empty)
    time.sleep(0.3)
    return client.call_ask(Ask.Request(id='nodata', question='q?', camera='wrist'))


def case_ask_with_malformed_image(client, node):
    image = raw_image(random_image(8, 4), client.now(), 'x')
    image.step = 5  # smaller than the row
    return client.call_ask(image_request('malformed', image))


def case_empty_question(client, node):
    return client.call_ask(Ask.Request(id='empty', question='  '))


def case_over_long_question(client, node):
    return client.call_ask(Ask.Request(id='long', question='why ' * 100))


def case_unknown_camera(client, node):
    return client.call_ask(Ask.Request(id='camera', question='q?', camera='tail'))


def case_unknown_method(client, node):
    return client.call_ask(Ask.Request(id='method', question='q?', method='sharpest'))


def case_duplicate_id_in_flight(client, node):
    slow = Question(id='dup', question='Where?', method='pure_grad')
    big = random_image(1600, 1200, seed=5)
    client.publish_frame('head', big, client.now(), 'head_big')
    time.sleep(0.3)
    client.ask_topic(slow)
    time.sleep(0.05)
    return client.call_ask(Ask.Request(id='dup', question='again?'))


def case_stamp_far_in_the_future(client, node):
    request = Ask.Request(id='future', question='q?')
    request.stamp.sec = client.now().sec + 3600
    return client.call_ask(request)


def case_no_frame_yet(client, node):
    # First of the cases: nothing has been published on the wrist camera yet.
    node.set_parameters([Parameter('default_camera', value='wrist')])
    try:
        return client.call_ask(Ask.Request(id='noframe', question='q?'))
    finally:
        node.set_parameters([Parameter('default_camera', value='head')])


def case_stale_frame(client, node):
    old = client.now()
    old.sec -= 600
    client.publish_frame('head', random_image(64, 48), old, 'head_old')
    time.sleep(0.3)
    return client.call_ask(Ask.Request(id='stale', question='q?', camera='head'))


def case_all_zero_attention_map(client, node):
    return client.call_ask(
        image_request('zeromap', raw_image(random_image(640, 480), client.now(), 'z'), 'ZEROMAP?')
    )


def case_model_exception(client, node):
    return client.call_ask(
        image_request('raise', raw_image(random_image(64, 48), client.now(), 'r'), 'RAISE?')
    )


def case_simulated_cuda_oom(client, node):
    warm = image_request('before-oom', raw_image(random_image(64, 48), client.now(), 'w'))
    assert client.call_ask(warm).status == Answer.OK and node._engine.kept_frames > 0
    answer = client.call_ask(
        image_request('oom', raw_image(random_image(64, 48), client.now(), 'o'), 'OOM?')
    )
    assert node._engine.kept_frames == 0  # kept prefixes are given back first
    return answer


def case_timeout(client, node):
    client.publish_frame('head', random_image(1600, 1200, seed=6), client.now(), 'head_big')
    time.sleep(0.3)
    client.ask_topic(Question(id='slow-timeout', question='Where?', method='pure_grad'))
    time.sleep(0.05)
    return client.call_ask(Ask.Request(id='timeout', question='q?', timeout=0.2))


def case_busy(client, node):
    client.publish_frame('head', random_image(1600, 1200, seed=7), client.now(), 'head_big')
    time.sleep(0.3)
    for index in range(4):
        client.ask_topic(Question(id=f'fill-{index}', question='Where?', method='pure_grad'))
    time.sleep(0.2)
    return client.call_ask(Ask.Request(id='busy', question='q?'))


def case_not_ready_while_inactive(client, node):
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    try:
        return client.call_ask(Ask.Request(id='inactive', question='q?'))
    finally:
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS


def case_invalid_parameter_mid_run(client, node):
    service = client.node.create_client(SetParameters, '/vicrop/set_parameters')
    assert service.wait_for_service(timeout_sec=30)
    value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0)
    future = service.call_async(
        SetParameters.Request(parameters=[ParameterMsg(name='timeout', value=value)])
    )
    while not future.done():
        time.sleep(0.01)
    client.node.destroy_client(service)
    result = future.result().results[0]
    assert not result.successful and 'timeout out of range' in result.reason
    return client.call_ask(
        image_request('after-param', raw_image(random_image(64, 48), client.now(), 'p'))
    )


CASES = [
    (case_no_frame_yet, Answer.NO_IMAGE, 'no frame received on the wrist camera yet'),
    (case_unsupported_encoding, Answer.BAD_IMAGE, "cannot decode image encoding '32FC1'"),
    (case_data_length_mismatch, Answer.BAD_IMAGE, 'expected step x height'),
    (case_zero_width, Answer.BAD_IMAGE, 'zero size (0x4)'),
    (case_over_pixel_limit, Answer.BAD_IMAGE, 'over the limit of 2000000 pixels'),
    (case_corrupt_jpeg_on_the_camera, Answer.BAD_IMAGE, 'corrupt data'),
    (case_empty_compressed_data, Answer.BAD_IMAGE, 'compressed image has no data'),
    (case_ask_with_malformed_image, Answer.BAD_IMAGE, 'step 5 is smaller than its width 8'),
    (case_empty_question, Answer.BAD_REQUEST, 'the question is empty'),
    (case_over_long_question, Answer.BAD_REQUEST, 'too long (400 > 200 characters'),
    (case_unknown_camera, Answer.BAD_REQUEST, "unknown camera 'tail'"),
    (case_unknown_method, Answer.BAD_REQUEST, "unknown method 'sharpest'"),
    (case_duplicate_id_in_flight, Answer.BAD_REQUEST, "a question with id 'dup' is in flight"),
    (case_stamp_far_in_the_future, Answer.BAD_REQUEST, 's in the future'),
    (case_stale_frame, Answer.STALE_IMAGE, 'newest head frame is'),
    (case_all_zero_attention_map, Answer.OK, ''),
    (case_model_exception, Answer.MODEL_ERROR, 'RuntimeError: injected failure in the model'),
    (case_simulated_cuda_oom, Answer.MODEL_ERROR, 'out of GPU memory'),
    (case_timeout, Answer.TIMEOUT, 'not answered within 0.2 s'),
    (case_busy, Answer.BUSY, 'questions are already waiting (max_pending)'),
    (case_not_ready_while_inactive, Answer.NOT_READY, 'the node is inactive'),
    (case_invalid_parameter_mid_run, Answer.OK, ''),
]


@pytest.mark.parametrize(
    ('case', 'status', 'reason'), CASES, ids=[c[0].__name__[5:] for c in CASES]
)
def test_bad_input_gets_one_clear_answer_and_the_node_goes_on(served, case, status, reason):
    node, client = served
    answer = case(client, node)
    assert answer.status == status, (answer.status, answer.error)
    assert reason in answer.error
    if status != Answer.OK:
        assert answer.error
    assert len(client.wait_answers([answer.id], settle_s=0.3)[answer.id]) == 1
    if answer.id == 'zeromap':  # a flat map gives no place to zoom: the whole frame is used
        assert (answer.crop.x_offset, answer.crop.y_offset) == (0, 0)
        assert (answer.crop.width, answer.crop.height) == (640, 480) and answer.crop_score == 0
    # Whatever happened, the node serves the next good question.
    deadline = time.monotonic() + 60
    while len(node.intake.queue) and time.monotonic() < deadline:  # let queued work finish
        time.sleep(0.05)
    good = Ask.Request(id=f'good-after-{answer.id}', question='What is it?')
    good.image = raw_image(random_image(96, 64), client.now(), 'good')
    followed = client.call_ask(good)
    assert followed.status == Answer.OK, followed.error


def test_diagnostics_report_queue_depth_and_camera_age(served):
    from diagnostic_msgs.msg import DiagnosticArray

    node, client = served
    arrays = []
    subscription = client.node.create_subscription(
        DiagnosticArray, '/diagnostics', arrays.append, 10
    )
    client.publish_frame('head', random_image(1600, 1200, seed=8), client.now(), 'head_big')
    time.sleep(0.3)
    for index in range(4):
        client.ask_topic(Question(id=f'diag-{index}', question='Where?', method='pure_grad'))
    deadline = time.monotonic() + 10
    seen_depths = set()
    while time.monotonic() < deadline and not seen_depths - {0}:
        time.sleep(0.1)
        for array in arrays:
            for status in array.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name.endswith(': questions'):
                    seen_depths.add(int(values['queue_depth']))
    client.node.destroy_subscription(subscription)
    assert seen_depths - {0}, 'the queue depth never showed the waiting questions'
    latest = {status.name.split(': ')[-1]: status for status in arrays[-1].status}
    assert set(latest) >= {'model', 'questions', 'head camera', 'wrist camera'}
    head = {kv.key: kv.value for kv in latest['head camera'].values}
    assert 0.0 <= float(head['age_s']) < 5.0 and head['topic'] == '/head_camera/image_raw'
    model = {kv.key: kv.value for kv in latest['model'].values}
    assert model['state'] == 'active' and model['device'] == 'cpu'
    assert int({kv.key: kv.value for kv in latest['questions'].values}['answers_OK']) > 0
    client.wait_answers([f'diag-{i}' for i in range(4)], timeout_s=120)
