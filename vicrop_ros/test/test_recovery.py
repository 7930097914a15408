"""Load, restarts and a model that fails to load, over real DDS with the node as a process."""

import json
import os
from pathlib import Path
import signal
import subprocess

from node_helpers import VicropClient, raw_image, result_of, start_node, stop_node
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sample_data import random_image

from vicrop_interfaces.msg import Answer
from vicrop_interfaces.srv import Ask

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(300)]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def test_load_every_question_gets_exactly_one_ok_or_busy(tiny_model_dir):
    """A 3-second soak of the load test script (the full one: vicrop-load-test --soak 600)."""
    result = subprocess.run(
        ['vicrop-load-test', '--soak', '3', '--report-every', '1', '--rate', '20',
         '--max-pending', '2', '--json', '--model', str(tiny_model_dir('llava'))],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures['answered'] == 60 and figures['missing'] == 0 and figures['duplicates'] == 0
    assert set(figures['statuses']) <= {'OK', 'BUSY'} and figures['statuses'].get('OK', 0) > 0
    assert figures['statuses'].get('BUSY', 0) > 0  # 20 Hz is more than the model keeps up with
    assert figures['node_rss_end_mb'] < figures['node_rss_start_mb'] + 500
    assert len(figures['rss_series_mb']) >= 2  # a report each second while asking
    assert 'node RSS' in result.stderr


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


def start_logged(tmp_path, *arguments: str) -> tuple[subprocess.Popen, Path]:
    """Start ``vicrop_node`` with ``arguments`` after ``--ros-args``, its output in a file."""
    log = tmp_path / 'node.log'
    with log.open('w') as output:
        process = subprocess.Popen(
            ['vicrop_node', '--ros-args', *arguments], stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return process, log


def exit_code(process: subprocess.Popen, timeout_s: float = 60.0) -> int:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError('the node did not exit') from None


def test_signals_end_the_node_cleanly_and_a_failed_load_is_logged_once(ros_context, tmp_path):
    """A node whose model cannot load stays up; SIGINT, SIGINT again, SIGTERM: exit 0."""
    name, signals = 'vicrop_signals', ('SIGINT', 'SIGINT', 'SIGTERM')
    process, log = start_logged(
        tmp_path, '-r', f'__node:={name}', '-p', f'model:={tmp_path / "no_such_model"}'
    )
    client = VicropClient(ros_context, node_name=name)
    try:
        assert client.ask_client.wait_for_service(timeout_sec=90)
        answer = client.call_ask(Ask.Request(question='q?'), resend_s=3.0)
        while 'is loading' in answer.error:
            answer = client.call_ask(Ask.Request(question='q?'), resend_s=3.0)
        assert answer.status == Answer.NOT_READY and 'is not a directory' in answer.error
        assert process.poll() is None  # up, serving errors
        for name in signals:
            os.killpg(process.pid, getattr(signal, name))
        code = exit_code(process)
    finally:
        client.close()
        stop_node(process)
    text = log.read_text()
    assert code == 0, text
    assert text.count('cannot load model') == 1 and 'Traceback' not in text


def test_lifecycle_shutdown_answers_and_ends_the_process(ros_context, tiny_model_dir, tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    process, log = start_logged(
        tmp_path, '-r', '__node:=vicrop_shutdown', '-p', f'model:={tiny_model_dir("llava")}'
    )
    client = VicropClient(ros_context, node_name='vicrop_shutdown')
    try:
        client.wait_until_ready()
        service = client.node.create_client(ChangeState, '/vicrop_shutdown/change_state')
        assert service.wait_for_service(timeout_sec=60)
        request = ChangeState.Request(
            transition=Transition(id=Transition.TRANSITION_ACTIVE_SHUTDOWN)
        )
        response = result_of(service.call_async(request))
        code = exit_code(process)
    finally:
        client.close()
        stop_node(process)
    assert response.success
    assert code == 0, log.read_text()
    assert 'Traceback' not in log.read_text()
