"""
What only DDS shows, with the node in this process and a gated fake engine.

Remaps and namespaces reaching the camera subscriptions, reliability ``auto`` following the
publishers, lost frames in ``/diagnostics``, 100 waiting service calls, cancel of a running goal,
NOT_READY while the model loads, a node with three named cameras. The engine is
:class:`intake_fakes.GatedEngine` (the model is not the point here); every wait is on a
condition.
"""

from contextlib import contextmanager
from pathlib import Path
import subprocess
import sys
import threading

from action_msgs.msg import GoalStatus
from builtin_interfaces.msg import Time
from intake_fakes import GatedEngine, rgb_image
from node_helpers import VicropClient, result_of, wait_until
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vicrop_interfaces.action import AskQuestion
from vicrop_interfaces.msg import Answer
from vicrop_interfaces.srv import Ask
from vicrop_ros.ros.node import VicropNode

RELIABLE = ReliabilityPolicy.RELIABLE
pytestmark = [pytest.mark.dds, pytest.mark.timeout(240)]


@contextmanager
def serving(context, name='vicrop', namespace='', make_engine=None, **parameters):
    """
    Yield a VicropNode called ``name`` spinning in ``context``, started as ``autostart`` does.

    ``parameters`` are node parameters ('head__topic' for 'head.topic'); the engine is a
    GatedEngine that answers at once unless a test clears ``node.engine.release``.
    """
    engine = GatedEngine()
    engine.release.set()
    overrides = [Parameter('model', value='gated')]
    overrides += [Parameter(key.replace('__', '.'), value=v) for key, v in parameters.items()]
    node = VicropNode(
        make_engine=make_engine or (lambda settings: engine), context=context,
        namespace=namespace, parameter_overrides=overrides,
        cli_args=['--ros-args', '-r', f'__node:={name}'],
    )  # fmt: skip
    node.engine = engine
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)
    executor.create_task(node.autostart)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        engine.release.set()
        node.close()
        executor.shutdown()
        spinner.join(timeout=10)
        node.destroy_node()


@contextmanager
def client_of(context, node_name: str):
    client = VicropClient(context, node_name=node_name, wrist_compressed=False)  # as the node
    try:
        yield client
    finally:
        client.close()


def small_image(frame_id='probe') -> Image:
    return rgb_image(np.zeros((8, 8, 3), np.uint8), frame_id)


def subscriptions_of(node, name: str, namespace: str = '/') -> dict[str, list[str]]:
    """Return the node's subscriptions as ``ros2 node info`` lists them ({} until discovered)."""
    try:
        return dict(node.get_subscriber_names_and_types_by_node(name, namespace))
    except Exception as error:  # rclpy's NodeNameNonExistentError is not importable by name
        if 'nonexistent node' in str(error):
            return {}
        raise


def test_camera_remaps_and_namespaces_reach_the_subscriptions():
    """A global ``-r /head_camera/image_raw:=/x``, as on the command line, and a namespace."""
    context = Context()
    rclpy.init(args=['vicrop', '--ros-args', '-r', '/head_camera/image_raw:=/x'], context=context)
    observer = rclpy.create_node('observer', context=context)
    try:
        with serving(context, 'vicrop_remapped'), serving(context, 'vicrop', 'robot1'):
            root_topics = {'/x', '/wrist_camera/image_raw'}
            spaced_topics = {'/robot1/head_camera/image_raw', '/robot1/wrist_camera/image_raw'}

            def listed():  # the cameras are on the companion node <name>_cameras
                root = subscriptions_of(observer, 'vicrop_remapped_cameras')
                spaced = subscriptions_of(observer, 'vicrop_cameras', '/robot1')
                questions = subscriptions_of(observer, 'vicrop', '/robot1')
                return (root_topics <= set(root) and spaced_topics <= set(spaced)
                        and '/robot1/vicrop/questions' in questions)  # fmt: skip

            wait_until(listed, what='the camera subscriptions')
            root = subscriptions_of(observer, 'vicrop_remapped_cameras')
            assert root['/x'] == ['sensor_msgs/msg/Image']
            assert '/head_camera/image_raw' not in root
    finally:
        observer.destroy_node()
        rclpy.shutdown(context=context)


def reliability_of_subscription(client, topic: str):
    """Return the reliability of the one subscription on ``topic`` (None while there is none)."""
    infos = client.node.get_subscriptions_info_by_topic(topic)
    return infos[0].qos_profile.reliability if len(infos) == 1 else None


def test_reliability_auto_follows_the_publishers(ros_context):
    topic = '/auto_camera/image'
    with (
        serving(ros_context, 'vicrop_auto', head__topic=topic),
        client_of(ros_context, 'vicrop_auto') as client,
    ):
        client.wait_until_ready()
        reliable = client.node.create_publisher(
            Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        )
        wait_until(lambda: reliability_of_subscription(client, topic) == RELIABLE,
                   what='a reliable subscription')  # fmt: skip
        best_effort = client.node.create_publisher(
            Image, topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        wait_until(
            lambda: reliability_of_subscription(client, topic) == ReliabilityPolicy.BEST_EFFORT,
            what='a best-effort subscription',
        )
        wait_until(lambda: best_effort.get_subscription_count() == 1, what='the match')
        stamp = client.now()
        frame = small_image('from_best_effort')
        frame.header.stamp = stamp
        best_effort.publish(frame)
        request = Ask.Request(id='auto', question='q?', camera='head', stamp=stamp, method='none')
        answer = client.call_ask(request)
        assert answer.status == Answer.OK and answer.header.frame_id == 'from_best_effort'
        client.node.destroy_publisher(best_effort)
        wait_until(lambda: reliability_of_subscription(client, topic) == RELIABLE,
                   what='reliable again')  # fmt: skip
        client.node.destroy_publisher(reliable)


def test_frames_lost_by_a_best_effort_subscription_are_in_diagnostics(ros_context):
    """Forced loss: 1280x720 frames as fast as possible from another process, best effort."""
    topic, count = '/lossy_camera/image', 40
    with serving(ros_context, 'vicrop_lossy', head__topic=topic,
                 head__reliability='best_effort') as node, client_of(
        ros_context, 'vicrop_lossy'
    ) as client:  # fmt: skip
        client.wait_until_ready()
        publisher = subprocess.run(
            [sys.executable, str(Path(__file__).with_name('frame_publisher.py')), topic,
             str(count), '1000', 'best_effort', '1', '1280x720'],
            timeout=120,
        )  # fmt: skip
        assert publisher.returncode == 0
        node.camera_node.drain()  # else the next diagnostics that drain come within 10 s
        values = client.diagnostic_values('head camera', client.node.get_clock().now().nanoseconds)
        if int(values['frames_received']) == count:
            pytest.skip('the forced-loss setup lost no frame this time')
        lost = int(values['frames_lost'])
        assert values['level'] == b'\x01'  # WARN
        assert values['message'].startswith(f'{lost} frames lost: ')
        assert "reliability 'auto' or 'reliable'" in values['message']


def test_a_hundred_waiting_service_calls_hold_no_thread_and_each_get_one_answer(ros_context):
    calls = 100
    with serving(ros_context, 'vicrop_many', max_pending=calls, timeout=600.0) as node, client_of(
        ros_context, 'vicrop_many'
    ) as client:  # fmt: skip
        client.wait_until_ready()
        node.engine.release.clear()  # the first question holds the worker
        futures = [
            client.ask_client.call_async(
                Ask.Request(id=f'many-{i}', question='q?', image=small_image())
            )  # fmt: skip
            for i in range(calls)
        ]
        wait_until(lambda: node.waiting_callers == calls, what='every call to wait')
        ticks = len(client.diagnostics)
        wait_until(lambda: len(client.diagnostics) >= ticks + 3, what='diagnostics meanwhile')
        queued = client.diagnostic_values('questions')
        assert int(queued['queue_depth']) == calls - 1 and int(queued['in_flight']) == calls
        node.engine.release.set()
        answers = [result_of(future).answer for future in futures]
        assert [a.id for a in answers] == [f'many-{i}' for i in range(calls)]
        assert {a.status for a in answers} == {Answer.OK}
        client.wait_answers([f'many-{i}' for i in range(calls)])
        assert all(len(client.answers[f'many-{i}']) == 1 for i in range(calls))


def send_goal(client, goal):
    handle = result_of(client.on_spinner(lambda: client.action_client.send_goal_async(goal)))
    assert handle.accepted
    return handle


def test_cancel_of_a_running_goal_ends_it_canceled_and_a_queued_one_at_once(ros_context):
    with serving(ros_context, 'vicrop_cancel') as node, client_of(
        ros_context, 'vicrop_cancel'
    ) as client:  # fmt: skip
        client.wait_until_ready()
        assert client.action_client.wait_for_server(timeout_sec=60)
        node.engine.release.clear()
        running = send_goal(client, AskQuestion.Goal(id='running', question='q?',
                                                     image=small_image()))  # fmt: skip
        wait_until(node.engine.started.is_set, what='the goal to run')
        queued = send_goal(client, AskQuestion.Goal(id='queued', question='q?',
                                                    image=small_image()))  # fmt: skip
        wait_until(lambda: len(node.intake.queue) == 1, what='the second goal to queue')
        result_of(client.on_spinner(queued.cancel_goal_async))
        result = result_of(client.on_spinner(queued.get_result_async))
        assert result.status == GoalStatus.STATUS_CANCELED
        assert result.result.answer.error == 'canceled by the caller while queued'
        assert node.engine.started.is_set()  # the running goal still runs
        result_of(client.on_spinner(running.cancel_goal_async))
        result = result_of(client.on_spinner(running.get_result_async))
        assert result.status == GoalStatus.STATUS_CANCELED
        answer = result.result.answer
        assert answer.status == Answer.CANCELED and 'canceled by the caller' in answer.error
        client.wait_answers(['running', 'queued'])
        assert len(client.answers['running']) == len(client.answers['queued']) == 1
        assert node.engine.calls == 1  # the queued goal never reached the engine


def test_questions_while_the_model_loads_get_not_ready_at_once_then_the_load_error(ros_context):
    loading = threading.Event()
    may_finish = threading.Event()

    def slow_failing_load(settings):
        loading.set()
        may_finish.wait()
        raise OSError(f'{settings.model} is not a directory')

    with serving(ros_context, 'vicrop_loading', make_engine=slow_failing_load), client_of(
        ros_context, 'vicrop_loading'
    ) as client:  # fmt: skip
        wait_until(loading.is_set, what='the load to start')
        assert client.ask_client.wait_for_service(timeout_sec=60)
        request = Ask.Request(id='early', question='q?', image=small_image())
        answer = client.call_ask(request, resend_s=5.0)
        assert not may_finish.is_set()  # answered while the load still runs
        assert answer.status == Answer.NOT_READY and "the model 'gated' is loading" in answer.error
        may_finish.set()

        def failed():
            request.id = ''
            return 'cannot load model' in client.call_ask(request).error

        wait_until(failed, what='the load error')
        answer = client.call_ask(request)
        assert answer.status == Answer.NOT_READY
        assert answer.error == (
            "the node is unconfigured: cannot load model 'gated': gated is not a directory"
        )
        model = client.diagnostic_values('model', client.node.get_clock().now().nanoseconds)
        assert model['level'] == b'\x02' and 'gated is not a directory' in model['message']


def test_a_camera_that_dies_and_comes_back_is_picked_up(ros_context):
    topic = '/flaky_camera/image'
    with serving(ros_context, 'vicrop_flaky', head__topic=topic, max_image_age=0.5), client_of(
        ros_context, 'vicrop_flaky'
    ) as client:  # fmt: skip
        client.wait_until_ready()
        qos_profile = QoSProfile(depth=5, reliability=RELIABLE)

        def frame_and_question(publisher, frame_id):
            stamp = client.now()
            frame = small_image(frame_id)
            frame.header.stamp = stamp
            wait_until(lambda: publisher.get_subscription_count() == 1, what='the camera match')
            publisher.publish(frame)
            request = Ask.Request(question='q?', camera='head', stamp=stamp, method='none')
            return stamp, client.call_ask(request)

        camera = client.node.create_publisher(Image, topic, qos_profile)
        stamp, before = frame_and_question(camera, 'before')
        client.node.destroy_publisher(camera)  # the camera driver dies
        clock = client.node.get_clock()
        wait_until(lambda: clock.now().nanoseconds - (stamp.sec * 10**9 + stamp.nanosec) > 6e8,
                   what='the last frame to age')  # fmt: skip
        during = client.call_ask(Ask.Request(question='q?', camera='head', method='none'))
        camera = client.node.create_publisher(Image, topic, qos_profile)
        _, after = frame_and_question(camera, 'after')
    assert before.status == Answer.OK and before.header.frame_id == 'before'
    assert during.status == Answer.STALE_IMAGE and 'newest head frame is' in during.error
    assert after.status == Answer.OK and after.header.frame_id == 'after'


def test_frames_of_an_old_timeline_are_dropped_when_sim_time_jumps_back(ros_context):
    """A bag replayed again: its stamps start over, the frames kept from the first run go."""
    from rosgraph_msgs.msg import Clock

    topic = '/replayed_camera/image'
    with serving(ros_context, 'vicrop_jump', head__topic=topic, use_sim_time=True,
                 frame_wait=0.1) as node, client_of(
        ros_context, 'vicrop_jump'
    ) as client:  # fmt: skip
        client.wait_until_ready()
        clock = client.node.create_publisher(Clock, '/clock', QoSProfile(depth=1))
        camera = client.node.create_publisher(
            Image, topic, QoSProfile(depth=5, reliability=RELIABLE)
        )
        wait_until(lambda: camera.get_subscription_count() == 1, what='the camera match')

        def run_clock_to(seconds: int):
            def reached():
                clock.publish(Clock(clock=Time(sec=seconds)))
                return node.get_clock().now().nanoseconds == seconds * 10**9

            wait_until(reached, what=f'the node clock at {seconds} s')

        def ask_newest(job_id: str) -> Answer:
            return client.call_ask(Ask.Request(id=job_id, question='q?', camera='head',
                                               method='none'))  # fmt: skip

        run_clock_to(100)
        frame = small_image('first_run')
        frame.header.stamp = Time(sec=100)
        camera.publish(frame)
        first = ask_newest('first')
        run_clock_to(50)  # the bag starts again
        again = ask_newest('again')
    assert first.status == Answer.OK and first.header.frame_id == 'first_run'
    assert again.status == Answer.NO_IMAGE, again  # not the frame stamped 50 s ahead


def test_one_drain_takes_every_frame_waiting_in_dds(ros_context):
    """Frames acknowledged by the camera subscription are all in the buffer after one drain."""
    topic, count = '/burst_camera/image', 20
    with serving(ros_context, 'vicrop_drain', head__topic=topic) as node, client_of(
        ros_context, 'vicrop_drain'
    ) as client:  # fmt: skip
        client.wait_until_ready()
        camera = client.node.create_publisher(
            Image, topic, QoSProfile(depth=count, reliability=RELIABLE)
        )
        buffer = node.camera_node.cameras.get('head').buffer
        wait_until(lambda: reliability_of_subscription(client, topic) == RELIABLE,
                   what='a reliable subscription')  # fmt: skip
        for index in range(count):
            frame = small_image(f'burst-{index}')
            frame.header.stamp = client.now()
            camera.publish(frame)
        assert camera.wait_for_all_acked(Duration(seconds=60))  # all in the node's DDS history
        node.camera_node.drain()
        assert buffer.received == count


def test_a_node_with_three_named_cameras_answers_on_each(ros_context):
    """The ``cameras`` parameter: three cameras of any names, each with its own topic."""
    names = ('left', 'right', 'top')
    topics = {name: f'/three/{name}/image' for name in names}
    with serving(
        ros_context, 'vicrop_three', cameras=list(names), default_camera='top',
        **{f'{name}__topic': topic for name, topic in topics.items()},
    ) as node, client_of(ros_context, 'vicrop_three') as client:  # fmt: skip
        client.wait_until_ready()
        publishers = {
            name: client.node.create_publisher(
                Image, topic, QoSProfile(depth=5, reliability=RELIABLE)
            )
            for name, topic in topics.items()
        }
        for publisher in publishers.values():
            wait_until(
                lambda p=publisher: p.get_subscription_count() == 1, what='the camera match'
            )
        answers = {}
        for name, publisher in publishers.items():
            frame = small_image(f'{name}_optical')
            frame.header.stamp = client.now()
            publisher.publish(frame)
            request = Ask.Request(id=f'on-{name}', question='q?', camera=name,
                                  stamp=frame.header.stamp, method='none')  # fmt: skip
            answers[name] = client.call_ask(request)
        default = client.call_ask(Ask.Request(question='q?', method='none'))
        unknown = client.call_ask(Ask.Request(question='q?', camera='head', method='none'))
        subscribed = subscriptions_of(node.camera_node.node, 'vicrop_three_cameras')
    for name in names:
        assert answers[name].status == Answer.OK, answers[name].error
        assert answers[name].camera == name
        assert answers[name].header.frame_id == f'{name}_optical'
    assert default.status == Answer.OK and default.camera == 'top'
    assert unknown.status == Answer.BAD_REQUEST
    assert "unknown camera 'head'; use left, right, top" in unknown.error
    assert set(subscribed) >= set(topics.values())


def test_a_bad_cameras_list_stops_the_node_at_start_with_the_reason(ros_context):
    from vicrop_ros.ros.params import SettingsError

    with pytest.raises(SettingsError, match="camera name 'image' is reserved"):
        VicropNode(
            make_engine=lambda settings: GatedEngine(), context=ros_context,
            parameter_overrides=[Parameter('cameras', value=['head', 'image'])],
        )  # fmt: skip
    with pytest.raises(SettingsError, match=r'default_camera must be one of the cameras \(left\)'):
        VicropNode(
            make_engine=lambda settings: GatedEngine(), context=ros_context,
            parameter_overrides=[Parameter('cameras', value=['left']),
                                 Parameter('default_camera', value='head')],
        )  # fmt: skip
