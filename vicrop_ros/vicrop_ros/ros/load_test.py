"""
``vicrop-load-test`` and ``vicrop-idle-cpu``: a vicrop node under camera streams and questions.

    vicrop-load-test [--model DIR] [--questions 200] [--rate 20] [--max-pending 2]
                     [--head 1280x720] [--wrist 640x480] [--camera-rate 30] [--json]
                     [--soak SECONDS [--report-every 30]] [--dds-profile shm|default]

Starts ``vicrop_node`` (a tiny random LLaVA unless ``--model`` is given), publishes both cameras at
``--camera-rate`` Hz, sends ``--questions`` Questions at ``--rate`` Hz, and reports: answered,
busy, other statuses, questions with no answer or more than one, p50/p95 latency of OK answers,
and the node's resident memory at the start and the end. Exit status 1 when a question did not
get exactly one answer, or got one other than OK/BUSY. ``--soak 600`` asks at ``--rate`` for
ten minutes and prints the node's RSS and the answer counts every 30 s. Both ends use the
shipped shared-memory Fast DDS profile unless ``--dds-profile default`` (docs/performance.md:
reliable large frames over UDP stall for seconds at a time under load).

    vicrop-load-test --robots 4 [--skew 10] [--seconds 20] ...

A fleet: N robots with two cameras each into one node, balanced and then with one robot asking
``--skew`` times as often (:mod:`.fleet_load_test`).

    vicrop-idle-cpu [--seconds 10] [--head 1280x720] [--wrist 640x480] [--camera-rate 30] [--json]
                    [--dds-profile shm|default]

Streams the two cameras into a node that gets no question and reports its CPU use (percent of one
core) and the frames it received: ingestion must cost little while nobody asks.
"""

import argparse
from collections import Counter
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer, Question

from .jobs import STATUS_NAMES
from .qos import FASTDDS_PROFILE_VARIABLES, shm_profile_path, with_dds_profile

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def parse_size(text: str) -> tuple[int, int]:
    """Parse WIDTHxHEIGHT."""
    width, height = text.lower().split('x')
    return int(width), int(height)


def camera_frames(size: tuple[int, int], count: int, frame_id: str) -> list[Image]:
    """Pre-built rgb8 frames (random pixels), reused in turn so publishing costs no rendering."""
    width, height = size
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        msg = Image(height=height, width=width, encoding='rgb8', step=width * 3)
        msg.header.frame_id = frame_id
        msg.data = rng.integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
        frames.append(msg)
    return frames


def stream_frames(
    node, publisher, frames, rate_hz: float, stop: threading.Event, gaps: list[float]
) -> None:
    """
    Publish ``frames`` in turn at ``rate_hz`` until ``stop`` is set.

    ``gaps`` gets the longest time between two publish calls so far, in seconds (one entry,
    updated): a camera that stalled is told apart from frames the node did not get.
    """
    period, index, next_time = 1.0 / rate_hz, 0, time.monotonic()
    last = None
    gaps[:] = [0.0]
    while not stop.is_set():
        frame = frames[index % len(frames)]
        frame.header.stamp = node.get_clock().now().to_msg()
        now = time.monotonic()
        if last is not None:
            gaps[0] = max(gaps[0], now - last)
        last = now
        publisher.publish(frame)
        index += 1
        next_time += period
        time.sleep(max(0.0, next_time - time.monotonic()))


def start_streams(
    node, head, wrist, args: argparse.Namespace, stop: threading.Event
) -> dict[str, list[float]]:
    """
    Stream the head and wrist cameras (sizes and rate from ``args``) until ``stop`` is set.

    Returns each camera's longest gap between publishes so far (see stream_frames).
    """
    gaps = {}
    for name, publisher, size in (('head', head, args.head), ('wrist', wrist, args.wrist)):
        frames = camera_frames(parse_size(size), 4, f'{name}_optical')
        gaps[name] = [0.0]
        threading.Thread(
            target=stream_frames,
            args=(node, publisher, frames, args.camera_rate, stop, gaps[name]),
            daemon=True,
        ).start()  # fmt: skip
    return gaps


def use_dds_profile(choice: str) -> str | None:
    """
    Point this process and the node it starts at the Fast DDS profile ``choice`` names.

    'shm': the shipped shared-memory profile (what the README advises for large frames on one
    machine); 'default': Fast DDS's own transports (UDP for frames over its 512 KB segments).
    Must run before rclpy.init in this process. Returns the profile path, or None.
    """
    profile = shm_profile_path() if choice == 'shm' else None
    for variable in FASTDDS_PROFILE_VARIABLES:
        os.environ.pop(variable, None)
    os.environ.update(with_dds_profile({}, profile))
    return profile


def add_dds_profile_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--dds-profile`` (see use_dds_profile)."""
    parser.add_argument(
        '--dds-profile', choices=('shm', 'default'), default='shm',
        help="'shm' (default): the shipped shared-memory profile for the node and the cameras; "
        "'default': Fast DDS's own transports (large frames over UDP)",
    )  # fmt: skip


def start_node(
    model: str | None,
    scratch: Path,
    *params: str,
    name: str = 'vicrop_load',
    params_file: Path | None = None,
) -> subprocess.Popen:
    """
    Start the node ``name`` (a tiny random LLaVA in ``scratch`` unless ``model`` is given).

    ``params``: ``name:=value`` each; ``params_file``: a YAML file read first.
    """
    if model is None:
        from ..testing.tiny import make_tiny_model

        model = str(make_tiny_model('llava', scratch / 'tiny_llava'))
    command = ['vicrop_node', '--ros-args', '-r', f'__node:={name}']
    if params_file is not None:
        command += ['--params-file', str(params_file)]
    command += ['-p', f'model:={model}']
    for param in params:
        command += ['-p', param]  # fmt: skip
    return subprocess.Popen(command, start_new_session=True)


def stop_node(process: subprocess.Popen) -> None:
    """Stop the node (SIGINT, then wait)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=20)


def tear_down(stop, executor, spinner, node, node_process, scratch) -> None:
    """Stop the streams and this process's ROS side, then the node; remove ``scratch``."""
    stop.set()
    executor.shutdown()
    spinner.join(timeout=5)
    context = node.context
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    stop_node(node_process)
    scratch.cleanup()


def run(args: argparse.Namespace) -> dict:
    """Run the load test and return its figures."""
    use_dds_profile(args.dds_profile)
    scratch = tempfile.TemporaryDirectory(prefix='vicrop-load-')
    node_process = start_node(
        args.model, Path(scratch.name), f'max_pending:={args.max_pending}', 'max_new_tokens:=4',
        'publish_saliency:=false',
    )  # fmt: skip
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('vicrop_load_test', context=context)
    answers: dict[str, list[tuple[Answer, float]]] = {}
    node.create_subscription(
        Answer, '/vicrop_load/answers',
        lambda a: answers.setdefault(a.id, []).append((a, time.monotonic())), RELIABLE,
    )  # fmt: skip
    questions = node.create_publisher(Question, '/vicrop_load/questions', RELIABLE)
    head = node.create_publisher(Image, '/head_camera/image_raw', RELIABLE)
    wrist = node.create_publisher(Image, '/wrist_camera/image_raw', RELIABLE)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    stop = threading.Event()
    try:
        deadline = time.monotonic() + args.wait
        while any(p.get_subscription_count() == 0 for p in (questions, head, wrist)):
            if time.monotonic() > deadline or node_process.poll() is not None:
                raise RuntimeError('the vicrop node did not come up')
            time.sleep(0.1)
        gaps = start_streams(node, head, wrist, args, stop)
        time.sleep(2.0)  # frames flowing, model warm enough to start
        process = psutil.Process(node_process.pid)
        rss_start = process.memory_info().rss
        sent: dict[str, float] = {}
        period = 1.0 / args.rate
        start = time.monotonic()
        rss_series = []  # (seconds since the first question, RSS MB) every --report-every s
        next_report = start + args.report_every
        for index in range(args.questions):
            question_id = f'load-{index}'
            camera = 'head' if index % 2 == 0 else 'wrist'
            sent[question_id] = time.monotonic()
            questions.publish(
                Question(id=question_id, question='What is on the table?', camera=camera)
            )
            if args.soak and time.monotonic() >= next_report:
                next_report += args.report_every
                rss_series.append(_progress(start, process, index + 1, answers))
            time.sleep(max(0.0, start + (index + 1) * period - time.monotonic()))
        send_s = time.monotonic() - start
        deadline = time.monotonic() + args.timeout
        while len(answers) < args.questions and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # duplicates would arrive now
        rss_end = process.memory_info().rss
        cpu_s = sum(process.cpu_times()[:2])
    finally:
        tear_down(stop, executor, spinner, node, node_process, scratch)
    statuses = Counter(STATUS_NAMES[a[0][0].status] for a in answers.values())
    latencies = sorted((a[0][1] - sent[i]) * 1000 for i, a in answers.items()
                       if a[0][0].status == Answer.OK and i in sent)  # fmt: skip
    return {
        'questions': args.questions,
        'question_rate_hz': round(args.questions / send_s, 2),
        'answered': len(answers),
        'missing': args.questions - len([i for i in sent if i in answers]),
        'duplicates': sum(len(a) > 1 for a in answers.values()),
        'statuses': dict(statuses),
        'ok_latency_p50_ms': round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        'ok_latency_p95_ms': round(float(np.percentile(latencies, 95)), 1) if latencies else None,
        'node_rss_start_mb': round(rss_start / 2**20, 1),
        'node_rss_end_mb': round(rss_end / 2**20, 1),
        'node_cpu_s': round(cpu_s, 1),
        'cameras': f'{args.head} + {args.wrist} at {args.camera_rate} Hz',
        'dds_profile': args.dds_profile,
        # The longest pause of each camera's publisher: a STALE_IMAGE is honest only after one.
        'publish_gap_max_ms': {name: round(gap[0] * 1000, 1) for name, gap in gaps.items()},
        **({'rss_series_mb': rss_series} if args.soak else {}),
    }


def _progress(start: float, process, sent: int, answers: dict) -> tuple[float, float]:
    """Print one soak progress line (to stderr); return (seconds, node RSS in MB)."""
    seconds, rss_mb = time.monotonic() - start, process.memory_info().rss / 2**20
    statuses = Counter(STATUS_NAMES[a[0][0].status] for a in list(answers.values()))
    print(f'{seconds:6.0f} s  node RSS {rss_mb:7.1f} MB  sent {sent}  answered {len(answers)}  '
          f'{dict(statuses)}', file=sys.stderr, flush=True)  # fmt: skip
    return round(seconds, 1), round(rss_mb, 1)


def main(argv: list[str] | None = None) -> int:
    """Run, print the figures, and return 0 only if every question got exactly one OK/BUSY."""
    parser = argparse.ArgumentParser(
        prog='vicrop-load-test', description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument('--model', help='model id or directory (default: a tiny random LLaVA)')
    parser.add_argument('--questions', type=int, default=200)
    parser.add_argument('--rate', type=float, help='questions per second (default 20; fleet: '
                        'per robot, 1)')  # fmt: skip
    parser.add_argument('--max-pending', type=int, help='default 2; fleet: 16')
    parser.add_argument('--head', default='1280x720', help='head camera WIDTHxHEIGHT')
    parser.add_argument('--wrist', default='640x480', help='wrist camera WIDTHxHEIGHT')
    parser.add_argument('--camera-rate', type=float, help='frames per second (default 30; '
                        'fleet: 15)')  # fmt: skip
    parser.add_argument('--timeout', type=float, default=120.0, help='seconds to wait for answers')
    parser.add_argument('--wait', type=float, default=120.0, help='seconds to wait for the node')
    parser.add_argument(
        '--soak', type=float, default=0.0,
        help='seconds to keep asking at --rate (replaces --questions); prints the node RSS and '
        'the answer counts every --report-every seconds',
    )  # fmt: skip
    parser.add_argument('--report-every', type=float, default=30.0, help='soak report period')
    add_dds_profile_argument(parser)
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    from . import fleet_load_test  # it imports this module

    fleet_load_test.add_arguments(parser)
    args = parser.parse_args(argv)
    fleet = args.robots > 0
    args.rate = args.rate or (1.0 if fleet else 20.0)
    args.max_pending = args.max_pending or (16 if fleet else 2)
    args.camera_rate = args.camera_rate or (15.0 if fleet else 30.0)
    if fleet:
        return fleet_load_test.main(args)
    if args.soak:
        args.questions = max(1, int(args.soak * args.rate))
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f'{key:>20}: {value}')
    unexpected = set(figures['statuses']) - {'OK', 'BUSY'}
    return 1 if figures['missing'] or figures['duplicates'] or unexpected else 0


if __name__ == '__main__':
    sys.exit(main())


def idle_main(argv: list[str] | None = None) -> int:
    """Measure the node's CPU use while two cameras stream and nobody asks anything."""
    parser = argparse.ArgumentParser(prog='vicrop-idle-cpu', description='Node CPU while idle.')
    parser.add_argument('--seconds', type=float, default=10.0, help='measuring window')
    parser.add_argument('--head', default='1280x720', help='head camera WIDTHxHEIGHT')
    parser.add_argument('--wrist', default='640x480', help='wrist camera WIDTHxHEIGHT')
    parser.add_argument('--camera-rate', type=float, default=30.0, help='frames per second')
    parser.add_argument('--model', help='model id or directory (default: a tiny random LLaVA)')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    add_dds_profile_argument(parser)
    args = parser.parse_args(argv)
    use_dds_profile(args.dds_profile)
    scratch = tempfile.TemporaryDirectory(prefix='vicrop-idle-')
    node_process = start_node(args.model, Path(scratch.name))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('vicrop_idle_cpu', context=context)
    head = node.create_publisher(Image, '/head_camera/image_raw', RELIABLE)
    wrist = node.create_publisher(Image, '/wrist_camera/image_raw', RELIABLE)
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 120
        while head.get_subscription_count() == 0 or wrist.get_subscription_count() == 0:
            if time.monotonic() > deadline or node_process.poll() is not None:
                raise RuntimeError('the vicrop node did not come up')
            time.sleep(0.1)
        start_streams(node, head, wrist, args, stop)
        time.sleep(3.0)  # past start-up
        process = psutil.Process(node_process.pid)
        cpu_start, wall_start = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(args.seconds)
        cpu_s, wall_s = sum(process.cpu_times()[:2]) - cpu_start, time.monotonic() - wall_start
    finally:
        stop.set()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        stop_node(node_process)
        scratch.cleanup()
    figures = {
        'cameras': f'{args.head} + {args.wrist} at {args.camera_rate:g} Hz (rgb8, raw)',
        'dds_profile': args.dds_profile,
        'window_s': round(wall_s, 1),
        'node_cpu_pct_of_one_core': round(100 * cpu_s / wall_s, 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f'{key:>26}: {value}')
    return 0
