"""Fixtures for tests over real DDS: an rclpy context per test."""

from collections.abc import Iterator

import pytest
import rclpy
from rclpy.context import Context


@pytest.fixture
def ros_context() -> Iterator[Context]:
    """Yield a fresh rclpy context, shut down after the test."""
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)
