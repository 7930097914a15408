"""Load, restarts and a model that fails to load, over real DDS with the node as a process."""

import json
import os
import signal
import subprocess
import time

from node_helpers import VicropClient, raw_image, start_node, stop_node
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sample_data import random_image
from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer
from vicrop_interfaces.srv import Ask

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(300)]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def test_load_every_question_gets_exactly_one_ok_or_busy():
    """A shortened run of the load test script (the full run: vicrop-load-test, 200 questions)."""
    result = subprocess.run(
        ['vicrop-load-test', '--questions', '60', '--rate', '20', '--max-pending', '2', '--json'],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures['answered'] == 60 and figures['missing'] == 0 and figures['duplicates'] == 0
    assert set(figures['statuses']) <= {'OK', 'BUSY'} and figures['statuses'].get('OK', 0) > 0
    assert figures['statuses'].get('BUSY', 0) > 0  # 20 Hz is more than the model keeps up with
    assert figures['node_rss_end_mb'] < figures['node_rss_start_mb'] + 500


def ask_head(client, question_id):
    return client.call_ask(Ask.Request(id=question_id, question='What is there?', camera='head'))


def test_camera_that_dies_and_comes_back_is_picked_up(ros_context, tiny_model_dir):
    process = start_node(tiny_model_dir('llava'), 'head.reliability:=reliable',
                         'max_image_age:=0.5', 'max_new_tokens:=2', name='vicrop_cam')  # fmt: skip
    client = VicropClient(ros_context, node_name='vicrop_cam')
    try:
        client.wait_until_ready()
        camera = client.node.create_publisher(Image, '/head_camera/image_raw', RELIABLE)
        while camera.get_subscription_count() == 0:
            time.sleep(0.05)
        camera.publish(raw_image(random_image(160, 120), client.now(), 'before'))
        time.sleep(0.3)
        before = ask_head(client, 'before')
        client.node.destroy_publisher(camera)  # the camera driver dies
        time.sleep(1.0)
        during = ask_head(client, 'during')
        camera = client.node.create_publisher(Image, '/head_camera/image_raw', RELIABLE)
        deadline = time.monotonic() + 30
        while camera.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        camera.publish(raw_image(random_image(160, 120), client.now(), 'after'))
        time.sleep(0.3)
        after = ask_head(client, 'after')
    finally:
        client.close()
        stop_node(process)
    assert before.status == Answer.OK and before.header.frame_id == 'before'
    assert during.status == Answer.STALE_IMAGE
    assert after.status == Answer.OK and after.header.frame_id == 'after'


def test_node_killed_and_restarted_serves_the_same_client(ros_context, tiny_model_dir):
    params = ('max_new_tokens:=2',)
    process = start_node(tiny_model_dir('llava'), *params, name='vicrop_crash')
    client = VicropClient(ros_context, node_name='vicrop_crash')
    request = Ask.Request(question='What is it?')
    request.image = raw_image(random_image(96, 64), client.now(), 'probe')
    try:
        client.wait_until_ready()
        request.id = 'before-crash'
        first = client.call_ask(request)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        process = start_node(tiny_model_dir('llava'), *params, name='vicrop_crash')
        client.wait_until_ready()  # no manual step: discovery reconnects the same client
        request.id = 'after-crash'
        second = client.call_ask(request)
        answers = client.wait_answers(['after-crash'])
    finally:
        client.close()
        stop_node(process)
    assert first.status == Answer.OK and second.status == Answer.OK
    assert len(answers['after-crash']) == 1  # the topic subscription reconnected too


def test_model_that_fails_to_load_leaves_the_node_unconfigured_and_serving_errors(
    ros_context, tmp_path
):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    log = tmp_path / 'node.log'
    with log.open('w') as output:
        process = subprocess.Popen(
            ['vicrop_node', '--ros-args', '-r', '__node:=vicrop_broken',
             '-p', f'model:={tmp_path / "no_such_model"}'],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    client = VicropClient(ros_context, node_name='vicrop_broken')
    arrays = []
    client.node.create_subscription(DiagnosticArray, '/diagnostics', arrays.append, 10)
    try:
        assert client.ask_client.wait_for_service(timeout_sec=90)
        first = client.call_ask(Ask.Request(id='broken', question='q?'), resend_s=3.0)
        answer = first
        while 'is loading' in answer.error:  # NOT_READY at once while loading, then the reason
            answer = client.call_ask(Ask.Request(question='q?'), resend_s=3.0)
        deadline = time.monotonic() + 10
        while not arrays and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.5)  # a few diagnostics periods: the node must stay up, not loop
        alive = process.poll() is None
    finally:
        client.close()
        stop_node(process)
    assert alive
    assert first.status == Answer.NOT_READY
    assert answer.status == Answer.NOT_READY and 'unconfigured' in answer.error
    assert 'cannot load model' in answer.error and 'is not a directory' in answer.error
    model = [s for a in arrays for s in a.status if s.name.endswith('vicrop_broken: model')]
    assert model and model[-1].level == DiagnosticStatus.ERROR
    assert 'cannot load model' in model[-1].message and 'is not a directory' in model[-1].message
    text = log.read_text()
    assert text.count('cannot load model') == 1 and 'Traceback' not in text
