"""Rosbag replay into the node: one answer per scripted question, determinism, bag time."""

import json
from pathlib import Path
import subprocess

from node_helpers import start_node, stop_node
import pytest
import yaml

from vicrop_ros.ros.demo_bag import START_NS, WRIST_TOPIC, write_demo_bag

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(300)]
RATE_HZ = 30.0
SIZES = {'head': (320, 240), 'wrist': (640, 360)}  # width, height


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """Write a small demo bag (2 s, 30 Hz, sqlite3 storage) and its question script."""
    out = tmp_path_factory.mktemp('demo')
    bag, script = write_demo_bag(out, seconds=2.0, rate_hz=RATE_HZ, storage='sqlite3',
                                 head_size=SIZES['head'], wrist_size=SIZES['wrist'],
                                 expectations=False)  # fmt: skip
    return bag, script


@pytest.fixture(scope='module')
def sim_time_node(tiny_model_dir):
    process = start_node(
        tiny_model_dir('llava'),
        'use_sim_time:=true',
        f'wrist.topic:={WRIST_TOPIC}',
        'wrist.transport:=compressed',
        'head.reliability:=reliable',
        'wrist.reliability:=reliable',
        'max_new_tokens:=3',
        'max_pending:=8',
        name='vicrop_replay_target',
    )
    yield '/vicrop_replay_target'
    stop_node(process)


def replay(bag, script, node, *extra, timeout=240):
    command = ['vicrop-replay', str(bag), '--script', str(script), '--node', node, '--clock']
    return subprocess.run(
        command + [str(e) for e in extra], capture_output=True, text=True, timeout=timeout
    )


def read_report(path: Path) -> tuple[dict, dict]:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    questions = {e['id']: e for e in entries if e['kind'] == 'question'}
    (summary,) = [e for e in entries if e['kind'] == 'summary']
    return questions, summary


def frame_stamps() -> set[str]:
    stamps = set()
    for index in range(int(2.0 * RATE_HZ)):
        ns = START_NS + int(index * 1e9 / RATE_HZ)
        stamps.add(f'{ns // 10**9}.{ns % 10**9:09d}')
    return stamps


def test_replay_answers_every_question_once_with_bag_stamps(demo, sim_time_node, tmp_path):
    bag, script = demo
    report, out_bag = tmp_path / 'report.jsonl', tmp_path / 'outputs'
    saliency, page = tmp_path / 'saliency', tmp_path / 'report.html'
    result = replay(bag, script, sim_time_node, '--report', report, '--out-bag', out_bag,
                    '--saliency-dir', saliency, '--html', page)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    questions, summary = read_report(report)
    scripted = yaml.safe_load(script.read_text())['questions']
    assert set(questions) == {q['id'] for q in scripted}
    stamps = frame_stamps()
    for entry in questions.values():
        assert entry['answers_received'] == 1 and entry['status'] == 'OK', entry
        assert entry['image_stamp'] in stamps  # the stamp of a frame from the bag
        seconds = float(entry['image_stamp']) - START_NS / 1e9
        assert abs(seconds - entry['at']) <= 1 / RATE_HZ  # the frame at the question's time
        # The frame used and the node's stage timings are in the report.
        assert entry['camera_used'] == entry['camera']
        assert entry['image_size'] == list(SIZES[entry['camera']])
        timings = entry['timings_ms']
        assert set(timings) == {'queue_wait', 'saliency', 'crop', 'answer', 'total'}
        assert timings['total'] >= timings['answer'] > 0
    html = page.read_text()
    assert all(f'<tr id="{question_id}" class="passed">' in html for question_id in questions)
    assert html.count('src="data:image/png;base64,') == len(questions)  # each with its saliency
    assert summary['messages'] == 2 * int(2.0 * RATE_HZ)
    assert summary['rate_requested'] == 1.0 and summary['rate_achieved'] > 0
    assert sorted(p.stem for p in saliency.glob('*.png')) == sorted(questions)
    assert (out_bag / 'metadata.yaml').is_file()
    from rosbags.highlevel import AnyReader

    with AnyReader([out_bag]) as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
    assert topics[f'{sim_time_node}/answers'] == len(questions)


def test_replay_is_deterministic_and_the_golden_check_catches_a_change(
    demo, sim_time_node, tmp_path, vicrop_replay
):
    """Also the example of the user-facing fixture (README: regression tests with rosbags)."""
    bag, script = demo
    first = vicrop_replay(bag, script, node=sim_time_node)
    assert first.passed, first.explain()
    second = vicrop_replay(bag, script, node=sim_time_node, golden=first.report)
    assert second.passed, second.explain()
    for key in ('answer', 'box', 'image_stamp', 'status'):
        assert {i: e[key] for i, e in first.questions.items()} == {
            i: e[key] for i, e in second.questions.items()
        }

    planted = tmp_path / 'planted.jsonl'
    lines = first.report.read_text().splitlines()
    entry = json.loads(lines[0])
    entry['box'] = [0, 0, 1, 1]
    planted.write_text('\n'.join([json.dumps(entry), *lines[1:]]) + '\n')
    changed = vicrop_replay(bag, script, node=sim_time_node, golden=planted)
    assert changed.returncode == 1 and not changed.passed
    assert 'differs from the golden report' in changed.explain()
    assert f'  {entry["id"]}: ' in changed.explain()  # the failed question, named


def test_stale_checks_use_bag_time_with_sim_time(demo, sim_time_node, tmp_path):
    """The bag is from 2023: fresh by /clock, so 'newest' is OK; after the bag it goes stale."""
    bag, _ = demo
    script = tmp_path / 'clock.jsonl'
    script.write_text('\n'.join(json.dumps(q) for q in [
        {'at': 1.0, 'id': 'fresh', 'camera': 'head', 'question': 'q?', 'stamp': 'newest'},
        {'at': 4.0, 'id': 'stale', 'camera': 'head', 'question': 'q?', 'stamp': 'newest'},
    ]) + '\n')  # fmt: skip
    report = tmp_path / 'report.jsonl'
    replay(bag, script, sim_time_node, '--report', report)
    questions, _ = read_report(report)
    assert questions['fresh']['status'] == 'OK', questions['fresh']
    assert questions['stale']['status'] == 'STALE_IMAGE'
    assert 'old (max_image_age 1.000 s)' in questions['stale']['error']


def test_failed_expectations_and_bad_scripts_exit_non_zero(demo, sim_time_node, tmp_path):
    bag, _ = demo
    script = tmp_path / 'expect.yaml'
    script.write_text(yaml.safe_dump({'questions': [
        {'at': 0.5, 'id': 'label', 'camera': 'head', 'question': 'What does the label say?',
         'expect': {'answer': 'zzz-not-an-answer'}},
    ]}))  # fmt: skip
    result = replay(bag, script, sim_time_node)
    assert result.returncode == 1
    assert "does not contain 'zzz-not-an-answer'" in result.stdout
    broken = tmp_path / 'broken.yaml'
    broken.write_text(yaml.safe_dump({'questions': [{'id': 'x'}]}))
    result = replay(bag, broken, sim_time_node)
    assert result.returncode == 2 and "missing key 'at' (required: at, question)" in result.stderr


def write_robot_bag(path: Path, ros1: bool = False) -> Path:
    """
    Write a bag as robots record them (rosbag2 mcap, or a ROS 1 .bag).

    The head camera, a camera nobody subscribes to, and a topic of a message type not installed.
    """
    import numpy as np
    from rosbags.rosbag1 import Writer as Ros1Writer
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_JAZZY)
    battery = 'spot_msgs/msg/BatteryState'
    store.register(get_types_from_msg('float32 charge_percentage\nstring status', battery))
    names = ('sensor_msgs/msg/Image', 'std_msgs/msg/Header', 'builtin_interfaces/msg/Time')
    image, header, time_type = (store.types[name] for name in names)
    serialize = store.serialize_ros1 if ros1 else store.serialize_cdr
    rng = np.random.default_rng(5)
    writer = (
        Ros1Writer(path) if ros1 else Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    )
    with writer:
        kind = image.__msgtype__
        head = writer.add_connection('/head_camera/image_raw', kind, typestore=store)
        rear = writer.add_connection('/rear_camera/image_raw', kind, typestore=store)
        power = writer.add_connection('/spot/battery', battery, typestore=store)
        for index in range(30):
            ns = START_NS + index * 33_333_333
            stamp = time_type(sec=ns // 10**9, nanosec=ns % 10**9)
            extra = {'seq': index} if ros1 else {}
            pixels = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            for connection, frame_id in ((head, 'head_optical'), (rear, 'rear_optical')):
                message = image(
                    header=header(stamp=stamp, frame_id=frame_id, **extra), height=120,
                    width=160, encoding='rgb8', is_bigendian=0, step=480, data=pixels.reshape(-1),
                )  # fmt: skip
                writer.write(connection, ns, serialize(message, image.__msgtype__))
            state = store.types[battery](charge_percentage=80.0, status='ok')
            writer.write(power, ns, serialize(state, battery))
    return path


@pytest.mark.parametrize('ros1', [False, True], ids=['rosbag2', 'ros1'])
def test_bags_as_robots_record_them_replay(sim_time_node, tmp_path, ros1):
    bag = write_robot_bag(tmp_path / ('robot.bag' if ros1 else 'robot'), ros1)
    script = tmp_path / 'robot.yaml'
    script.write_text(yaml.safe_dump({'questions': [
        {'at': 0.5, 'id': 'head', 'camera': 'head', 'question': 'What is it?', 'method': 'none'},
    ]}))  # fmt: skip
    result = replay(bag, script, sim_time_node, '--report', tmp_path / 'report.jsonl')
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'skipping /rear_camera/image_raw: the node does not subscribe' in result.stderr
    assert (
        'skipping /spot/battery: type spot_msgs/msg/BatteryState is not installed' in result.stderr
    )
    questions, _ = read_report(tmp_path / 'report.jsonl')
    assert questions['head']['status'] == 'OK' and questions['head']['frame_id'] == 'head_optical'


def test_the_same_bag_at_rates_01_1_and_10_gives_identical_reports(demo, sim_time_node, tmp_path):
    """
    Stamped questions get the same frames, answers and boxes at every rate.

    'newest' asks for the node's newest frame as a live robot does: which one depends on when
    the node's reader takes the last frames (seen: the 1.633 s or 1.833 s frame at rate 1 for a
    question at 1.9 s), so it is only checked to be answered, from a frame of the bag.
    """
    bag, script = demo
    scripted = yaml.safe_load(script.read_text())['questions']
    # An early question (before most frames), one stamped after the last frame but one (asked
    # after the bag's end, where lockstep holds bag time still as well), and 'newest'.
    scripted += [
        {'at': 0.0, 'id': 'first-frame', 'camera': 'head', 'question': 'What is it?'},
        {'at': 1.96, 'id': 'last-frame', 'camera': 'wrist', 'question': 'What is it?'},
        {'at': 1.8, 'id': 'newest', 'camera': 'wrist', 'question': 'What is it?',
         'stamp': 'newest'},
    ]  # fmt: skip
    script = tmp_path / 'rates.yaml'
    script.write_text(yaml.safe_dump({'questions': scripted}))
    reports = {}
    for rate in (0.1, 1.0, 10.0):
        report = tmp_path / f'rate-{rate}.jsonl'
        result = replay(bag, script, sim_time_node, '--rate', rate, '--report', report)
        assert result.returncode == 0, result.stdout + result.stderr
        keys = ('status', 'answer', 'box', 'image_stamp', 'frame_id')
        reports[rate] = {i: tuple(e[k] for k in keys) for i, e in read_report(report)[0].items()}
        newest = reports[rate].pop('newest')
        assert newest[0] == 'OK' and newest[3] in frame_stamps()
    assert reports[0.1] == reports[1.0] == reports[10.0]
    assert {entry[0] for entry in reports[1.0].values()} == {'OK'}
    last = START_NS + int((int(2.0 * RATE_HZ) - 1) * 1e9 / RATE_HZ)
    assert reports[1.0]['last-frame'][3] == f'{last // 10**9}.{last % 10**9:09d}'


def test_header_time_answers_a_bag_recorded_far_from_its_header_stamps(tmp_path, sim_time_node):
    """A recorder's clock 1e7 s off the cameras': header time answers, bag time goes stale."""
    bag, script = write_demo_bag(tmp_path, seconds=2.0, rate_hz=RATE_HZ, bag_offset_s=1e7,
                                 head_size=SIZES['head'], wrist_size=SIZES['wrist'],
                                 expectations=False)  # fmt: skip
    header, bag_time = tmp_path / 'header.jsonl', tmp_path / 'bag.jsonl'
    result = replay(bag, script, sim_time_node, '--report', header)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'the header stamps are -10000000.000 s from bag time' in result.stderr
    questions, _ = read_report(header)
    stamps = frame_stamps()
    assert all(e['status'] == 'OK' and e['image_stamp'] in stamps for e in questions.values())

    result = replay(bag, script, sim_time_node, '--report', bag_time, '--time', 'bag')
    assert result.returncode == 1
    assert {e['status'] for e in read_report(bag_time)[0].values()} == {'STALE_IMAGE'}


def test_a_window_of_the_bag_played_twice_asks_its_questions_in_each_pass(
    demo, sim_time_node, tmp_path
):
    bag, script = demo
    report = tmp_path / 'window.jsonl'
    result = replay(bag, script, sim_time_node, '--report', report, '--start', 0.9,
                    '--duration', 0.7, '--loop', 2)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'leaving out card: at 0.5 s is outside the played window' in result.stderr
    questions, summary = read_report(report)
    assert sorted(questions) == ['cube', 'cube#2', 'dial', 'dial#2']
    in_window = [i for i in range(int(2.0 * RATE_HZ)) if 0.9e9 <= int(i * 1e9 / RATE_HZ) <= 1.6e9]
    assert summary['messages'] == 2 * 2 * len(in_window)  # 2 cameras, 2 passes
    # Every pass is answered from frames of the window (the node drops its kept frames when the
    # clock jumps back; before the companion read /clock itself, it could see that jump after
    # the new pass's first frames and drop them too: cube#2 got the 1.1 s frame, cube 1.0 s).
    for entry in questions.values():
        assert entry['status'] == 'OK', entry
        assert 0.9 <= float(entry['image_stamp']) - START_NS / 1e9 <= 1.6 + 1e-6, entry
