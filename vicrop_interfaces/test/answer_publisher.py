"""
Publish one vicrop_interfaces/Answer, given as JSON on the command line, to a subscriber.

Run as a separate process by test_dds_roundtrip.py:  python answer_publisher.py TOPIC JSON
Waits (at most 20 s) for a subscriber, publishes the message a few times, and exits 0; exits 1
when no subscriber appeared.
"""

import json
import sys
import time

import rclpy

from vicrop_interfaces.msg import Answer


def fill(message, values: dict) -> None:
    """Set ``message``'s fields from ``values``, recursing into nested messages."""
    for name, value in values.items():
        if isinstance(value, dict):
            fill(getattr(message, name), value)
        else:
            setattr(message, name, value)


def main() -> int:
    """Publish the Answer described by argv[2] on topic argv[1]."""
    topic, payload = sys.argv[1], json.loads(sys.argv[2])
    rclpy.init()
    try:
        node = rclpy.create_node('answer_publisher')
        publisher = node.create_publisher(Answer, topic, 10)
        deadline = time.monotonic() + 20.0
        while publisher.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.05)
        message = Answer()
        fill(message, payload)
        for _ in range(5):
            publisher.publish(message)
            time.sleep(0.1)
        return 0
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
