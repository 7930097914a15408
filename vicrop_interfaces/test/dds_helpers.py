"""Helpers for tests over real DDS."""

from collections.abc import Callable
import time

from rclpy.executors import Executor


def spin_until(executor: Executor, done: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Spin ``executor`` until ``done()`` or ``timeout_s`` seconds pass; return ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return done()
