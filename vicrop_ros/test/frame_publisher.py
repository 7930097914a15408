"""
A camera driver in its own process (large frames cross DDS between processes only that way).

    python frame_publisher.py TOPIC COUNT RATE_HZ RELIABILITY START_NS [WIDTHxHEIGHT]

Publishes COUNT rgb8 frames on TOPIC at RATE_HZ with RELIABILITY ('reliable' or 'best_effort'),
frame i stamped START_NS + i / RATE_HZ seconds with frame_id 'frame-i', once a subscriber
matched; a reliable publisher then waits until every frame is acknowledged. Exit 0 when done.
"""

import sys
import time

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def main() -> int:
    topic, count, rate, reliability, start_ns = sys.argv[1:6]
    width, height = map(int, (sys.argv[6] if len(sys.argv) > 6 else '640x480').split('x'))
    count, rate, start_ns = int(count), float(rate), int(start_ns)
    policy = (
        ReliabilityPolicy.RELIABLE if reliability == 'reliable' else ReliabilityPolicy.BEST_EFFORT
    )
    rclpy.init()
    node = rclpy.create_node('frame_publisher')
    publisher = node.create_publisher(Image, topic, QoSProfile(depth=10, reliability=policy))
    while publisher.get_subscription_count() == 0:
        time.sleep(0.01)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8).tobytes()
    message = Image(height=height, width=width, encoding='rgb8', step=width * 3, data=pixels)
    first = time.monotonic()
    for index in range(count):
        stamp_ns = start_ns + int(index * 1e9 / rate)
        message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        message.header.frame_id = f'frame-{index}'
        time.sleep(max(0.0, first + index / rate - time.monotonic()))  # the camera's rate
        publisher.publish(message)
    if policy == ReliabilityPolicy.RELIABLE:
        publisher.wait_for_all_acked(Duration(seconds=60))
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
