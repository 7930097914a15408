"""
``vicrop-load-test --robots N``: a fleet of robots, two cameras each, into one node.

    vicrop-load-test --robots 4 [--rate 1] [--skew 10] [--seconds 20] [--camera-size 640x480]
                     [--camera-rate 15] [--max-pending 16] [--burst 1] [--max-batch 4]
                     [--model DIR] [--json]

Starts ``vicrop_node`` with the cameras ``r1_head``, ``r1_wrist``, ... (topics
``/r<i>/head_camera/image_raw``, ...) and streams them all. It measures the node's CPU while the
streams run and nobody asks, then runs two phases of ``--seconds`` each: *balanced*, every
robot's planner asking at ``--rate`` Hz (its head and wrist cameras in turn; ``--burst`` questions
about the camera at once, as a behaviour tree checking several details of one scene), and
*skewed*, robot 1 asking ``--skew`` times as often. It prints per robot and phase: asked,
answered, busy, p50 and p95 latency of OK answers; each phase's OK answers per second; the
questions without exactly one answer; the node's RSS; and the others' p95 in the skewed phase
over the balanced one (the fair queue's effect). ``--max-batch`` sets the node's ``max_batch``
(1: batching off). Exit status 1 when a question did not get exactly one answer, or got one other
than OK/BUSY.
"""

import argparse
from collections import Counter
import json
from pathlib import Path
import tempfile
import threading
import time

import numpy as np
import psutil
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from vicrop_interfaces.msg import Answer, Question

from .jobs import STATUS_NAMES
from .load_test import (
    RELIABLE,
    camera_frames,
    parse_size,
    start_node,
    stream_frames,
    tear_down,
    use_dds_profile,
)  # fmt: skip
from .params import SPEC_BY_NAME

NODE = 'vicrop_fleet'
NODE_MAX_BATCH = SPEC_BY_NAME['max_batch'].default  # the node's own default
CAMERA_KINDS = ('head', 'wrist')


def camera_names(robots: int) -> list[tuple[str, str]]:
    """Return (camera name, topic) of every camera of ``robots`` robots: r1_head, r1_wrist, ..."""
    return [(f'r{robot}_{kind}', f'/r{robot}/{kind}_camera/image_raw')
            for robot in range(1, robots + 1) for kind in CAMERA_KINDS]  # fmt: skip


def fleet_parameters(robots: int, max_pending: int, max_batch: int = NODE_MAX_BATCH) -> str:
    """
    Return the node's params file (YAML text) for ``robots`` robots.

    ``max_pending`` in all, an equal share of it per camera: one robot cannot fill the queue.
    """
    cameras = camera_names(robots)
    lines = ['/**:', '  ros__parameters:',
             f'    cameras: [{", ".join(name for name, _ in cameras)}]',
             f'    max_pending: {max_pending}',
             f'    max_batch: {max_batch}',
             f'    max_pending_per_camera: {max(1, max_pending // len(cameras))}',
             '    max_new_tokens: 4',
             '    publish_saliency: false']  # fmt: skip
    lines += [f'    {name}: {{topic: {topic}}}' for name, topic in cameras]
    return '\n'.join(lines) + '\n'


BURST_QUESTIONS = ('What is on the table?', 'What colour is the cube?', 'What does the card say?',
                   'Which way does the needle point?')  # fmt: skip


def planner(robot: int, rate_hz: float, seconds: float, phase: str, questions, sent: dict,
            burst: int = 1) -> None:  # fmt: skip
    """
    Ask about robot ``robot``'s cameras in turn at ``rate_hz`` for ``seconds``.

    Each time, ``burst`` questions about the one camera are published at once.
    """
    start, index = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        camera = f'r{robot}_{CAMERA_KINDS[index % 2]}'
        for detail in range(burst):
            question_id = f'{phase}-r{robot}-{index}-{detail}'
            sent[question_id] = (phase, robot, time.monotonic())
            text = BURST_QUESTIONS[detail % len(BURST_QUESTIONS)]
            questions.publish(Question(id=question_id, question=text, camera=camera))
        index += 1
        time.sleep(max(0.0, start + index / rate_hz - time.monotonic()))


def robot_figures(sent: dict, answers: dict, phase: str, robot: int) -> dict:
    """Return asked, answered, busy and OK latency percentiles of one robot in one phase."""
    ids = [i for i, (p, r, _) in sent.items() if p == phase and r == robot]
    got = [answers[i] for i in ids if i in answers]
    statuses = Counter(STATUS_NAMES[a[0][0].status] for a in got)
    latencies = sorted((a[0][1] - sent[i][2]) * 1000 for i in ids if i in answers
                       for a in [answers[i]] if a[0][0].status == Answer.OK)  # fmt: skip
    return {
        'asked': len(ids),
        'answered': len(got),
        'busy': statuses.get('BUSY', 0),
        'ok_p50_ms': round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        'ok_p95_ms': round(float(np.percentile(latencies, 95)), 1) if latencies else None,
    }


def run(args: argparse.Namespace) -> dict:
    """Run the fleet load test and return its figures."""
    use_dds_profile(args.dds_profile)
    scratch = tempfile.TemporaryDirectory(prefix='vicrop-fleet-')
    params = Path(scratch.name) / 'fleet.yaml'
    params.write_text(fleet_parameters(args.robots, args.max_pending, args.max_batch))
    node_process = start_node(args.model, Path(scratch.name), name=NODE, params_file=params)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('vicrop_fleet_load_test', context=context)
    answers: dict[str, list[tuple[Answer, float]]] = {}
    node.create_subscription(
        Answer, f'/{NODE}/answers',
        lambda a: answers.setdefault(a.id, []).append((a, time.monotonic())), RELIABLE,
    )  # fmt: skip
    questions = node.create_publisher(Question, f'/{NODE}/questions', RELIABLE)
    cameras = [node.create_publisher(Image, topic, RELIABLE)
               for _, topic in camera_names(args.robots)]  # fmt: skip
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    stop = threading.Event()
    sent: dict[str, tuple[str, int, float]] = {}
    phase_start: dict[str, float] = {}
    try:
        deadline = time.monotonic() + args.wait
        while any(p.get_subscription_count() == 0 for p in [questions, *cameras]):
            if time.monotonic() > deadline or node_process.poll() is not None:
                raise RuntimeError('the vicrop node did not come up')
            time.sleep(0.1)
        frames = camera_frames(parse_size(args.camera_size), 4, 'fleet_optical')
        for publisher in cameras:
            streaming = (node, publisher, frames, args.camera_rate, stop, [0.0])
            threading.Thread(target=stream_frames, args=streaming, daemon=True).start()
        time.sleep(3.0)  # past start-up: frames flowing
        process = psutil.Process(node_process.pid)
        cpu_start, wall_start = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cpu = (sum(process.cpu_times()[:2]) - cpu_start) / (time.monotonic() - wall_start)
        rss_start = process.memory_info().rss
        for phase, skew in (('balanced', 1.0), ('skewed', args.skew)):
            phase_start[phase] = time.monotonic()
            planners = [
                threading.Thread(target=planner, args=(
                    robot, args.rate * (skew if robot == 1 else 1.0), args.seconds, phase,
                    questions, sent, args.burst))
                for robot in range(1, args.robots + 1)
            ]  # fmt: skip
            for thread in planners:
                thread.start()
            for thread in planners:
                thread.join()
            deadline = time.monotonic() + args.timeout
            while any(i not in answers for i in list(sent)) and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(1.0)  # duplicates would arrive now
        rss_end = process.memory_info().rss
    finally:
        tear_down(stop, executor, spinner, node, node_process, scratch)
    robots = range(1, args.robots + 1)
    phases = {phase: {f'r{robot}': robot_figures(sent, answers, phase, robot) for robot in robots}
              for phase in ('balanced', 'skewed')}  # fmt: skip
    others = [f'r{robot}' for robot in robots if robot != 1]

    def others_p95(phase: str) -> float | None:
        values = [phases[phase][r]['ok_p95_ms'] for r in others]
        return None if None in values or not values else max(values)

    balanced, skewed = others_p95('balanced'), others_p95('skewed')
    statuses = Counter(STATUS_NAMES[a[0][0].status] for a in answers.values())
    throughput = {phase: phase_throughput(sent, answers, phase, start)
                  for phase, start in phase_start.items()}  # fmt: skip
    return {
        'burst': args.burst,
        'max_batch': args.max_batch,
        'ok_per_s': throughput,
        'robots': args.robots,
        'cameras': f'{2 * args.robots} x {args.camera_size} at {args.camera_rate:g} Hz',
        'rate_hz': args.rate,
        'skew': args.skew,
        'phases': phases,
        'others_p95_ms': {'balanced': balanced, 'skewed': skewed},
        'others_p95_ratio': round(skewed / balanced, 2) if balanced and skewed else None,
        'missing': len([i for i in sent if i not in answers]),
        'duplicates': sum(len(a) > 1 for a in answers.values()),
        'statuses': dict(statuses),
        'idle_cpu_pct_of_one_core': round(100 * idle_cpu, 1),
        'node_rss_start_mb': round(rss_start / 2**20, 1),
        'node_rss_end_mb': round(rss_end / 2**20, 1),
        'dds_profile': args.dds_profile,
    }


def phase_throughput(sent: dict, answers: dict, phase: str, start: float) -> float | None:
    """Return the OK answers of ``phase`` per second, from its start to its last OK answer."""
    done = [answers[i][0][1] for i, (p, _, _) in sent.items()
            if p == phase and i in answers and answers[i][0][0].status == Answer.OK]  # fmt: skip
    return round(len(done) / (max(done) - start), 2) if done else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fleet options (used with ``--robots``)."""
    fleet = parser.add_argument_group('fleet (--robots N)')
    fleet.add_argument('--robots', type=int, default=0, help='robots with two cameras each')
    fleet.add_argument('--skew', type=float, default=10.0,
                       help='robot 1 asks this many times as often when skewed')  # fmt: skip
    fleet.add_argument('--seconds', type=float, default=20.0, help='length of each phase')
    fleet.add_argument('--idle-seconds', type=float, default=5.0,
                       help='window of the idle CPU measurement')  # fmt: skip
    fleet.add_argument('--camera-size', default='640x480', help='every camera WIDTHxHEIGHT')
    fleet.add_argument('--burst', type=int, default=1,
                       help='questions a planner asks at once about one camera')  # fmt: skip
    fleet.add_argument('--max-batch', type=int, default=NODE_MAX_BATCH,
                       help="the node's max_batch (1: no batching)")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the fleet test, print the figures; 0 only if every question got one OK/BUSY."""
    figures = run(args)
    if args.json:
        print(json.dumps(figures))
    else:
        print(json.dumps(figures, indent=1))
    unexpected = set(figures['statuses']) - {'OK', 'BUSY'}
    return 1 if figures['missing'] or figures['duplicates'] or unexpected else 0
