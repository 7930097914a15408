"""
``vicrop-dds-latency``: camera-to-subscriber latency of large images, with and without a profile.

    vicrop-dds-latency [--size 1280x720] [--rate 30] [--seconds 5] [--profile FILE] [--json]

For each combination of QoS reliability (RELIABLE, BEST_EFFORT) and Fast DDS profile (the default
transports, and ``--profile``, default the shipped shared-memory profile), a separate publisher
process sends bgr8 frames at ``--rate`` Hz and this process measures, per received frame, the
latency from the header stamp (set just before publishing) to the callback, and the share of
frames lost. Both processes run on this machine, so they share one clock.
"""

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from .qos import shm_profile_path, with_dds_profile

TOPIC = '/vicrop_dds_latency/image'
# Fast DDS 2.x (Jazzy) reads the first, Fast DDS 3.x (Kilted and later) the second.


def publish(args: argparse.Namespace) -> int:
    """Run the publisher process: wait for the subscriber, send the frames, exit."""
    rclpy.init()
    try:
        node = rclpy.create_node('vicrop_dds_latency_publisher')
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy[args.reliability])
        publisher = node.create_publisher(Image, TOPIC, qos)
        width, height = (int(v) for v in args.size.split('x'))
        frame = Image(height=height, width=width, encoding='bgr8', step=width * 3)
        frame.data = (
            np.random.default_rng(0).integers(0, 256, width * height * 3, np.uint8).tobytes()
        )
        deadline = time.monotonic() + 30
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        period, start = 1.0 / args.rate, time.monotonic()
        for index in range(int(args.seconds * args.rate)):
            frame.header.frame_id = str(index)
            frame.header.stamp = node.get_clock().now().to_msg()
            publisher.publish(frame)
            time.sleep(max(0.0, start + (index + 1) * period - time.monotonic()))
        time.sleep(0.5)
        return 0
    finally:
        rclpy.try_shutdown()


def measure(args: argparse.Namespace, reliability: str, profile: str | None) -> dict:
    """Run one publisher process against a subscription here; return latency and loss."""
    env = with_dds_profile(dict(os.environ), profile)
    # This process's participant must use the same profile: measure in a child of our own.
    command = [sys.executable, '-m', 'vicrop_ros.ros.dds_latency', '--subscribe',
               '--reliability', reliability, '--size', args.size, '--rate', str(args.rate),
               '--seconds', str(args.seconds)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f'measurement failed: {result.stderr[-2000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def subscribe(args: argparse.Namespace) -> int:
    """Run the measuring process: start a publisher child, receive, print one JSON line."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('vicrop_dds_latency_subscriber', context=context)
    latencies, seen = [], set()

    def receive(msg: Image) -> None:
        now = node.get_clock().now().nanoseconds
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((now - sent) / 1e6)
        seen.add(msg.header.frame_id)

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy[args.reliability])
    node.create_subscription(Image, TOPIC, receive, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    publisher = subprocess.run(
        [sys.executable, '-m', 'vicrop_ros.ros.dds_latency', '--publish',
         '--reliability', args.reliability, '--size', args.size, '--rate', str(args.rate),
         '--seconds', str(args.seconds)], timeout=120,
    )  # fmt: skip
    time.sleep(0.5)
    executor.shutdown()
    spinner.join(timeout=5)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    sent = int(args.seconds * args.rate)
    print(json.dumps({
        'received': len(seen), 'sent': sent, 'lost_pct': round(100 * (1 - len(seen) / sent), 1),
        'median_ms': round(float(np.median(latencies)), 2) if latencies else None,
        'p95_ms': round(float(np.percentile(latencies, 95)), 2) if latencies else None,
        'publisher_rc': publisher.returncode,
    }))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """Measure every combination and print a table (or JSON)."""
    parser = argparse.ArgumentParser(
        prog='vicrop-dds-latency', description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument('--size', default='1280x720')
    parser.add_argument('--rate', type=float, default=30.0)
    parser.add_argument('--seconds', type=float, default=5.0)
    parser.add_argument('--profile', help='Fast DDS XML profile (default: the shipped SHM one)')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--reliability', default='RELIABLE', help=argparse.SUPPRESS)
    parser.add_argument('--publish', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--subscribe', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        return publish(args)
    if args.subscribe:
        return subscribe(args)
    profile = args.profile or shm_profile_path()
    rows = {}
    for reliability in ('RELIABLE', 'BEST_EFFORT'):
        for name, path in (('default transports', None), (Path(profile).name, profile)):
            rows[f'{reliability} / {name}'] = measure(args, reliability, path)
    if args.json:
        print(json.dumps({'size': args.size, 'rate_hz': args.rate, 'rows': rows}))
    else:
        print(f'{args.size} bgr8 at {args.rate:g} Hz for {args.seconds:g} s, two processes')
        for name, row in rows.items():
            print(f"{name:<36} median {row['median_ms']} ms  p95 {row['p95_ms']} ms  "
                  f"lost {row['lost_pct']} %")  # fmt: skip
    return 0


if __name__ == '__main__':
    sys.exit(main())
