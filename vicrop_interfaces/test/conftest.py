"""Fixtures for tests over real DDS: an rclpy context per test and a bounded spin helper."""

from collections.abc import Callable, Iterator
import time

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import Executor


@pytest.fixture
def ros_context() -> Iterator[Context]:
    """Yield a fresh rclpy context, shut down after the test."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


def spin_until(executor: Executor, done: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Spin ``executor`` until ``done()`` or ``timeout_s`` seconds pass; return ``done()``."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return done()
