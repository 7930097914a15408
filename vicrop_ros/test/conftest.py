"""Shared fixtures: tiny random models of each family, built once per test session."""

from collections.abc import Callable
from pathlib import Path

from hypothesis import settings
import pytest

# The user-facing replay fixture (vicrop_replay), loaded as a robot team's conftest would.
pytest_plugins = ['vicrop_ros.testing.replay_fixture']

# Hypothesis fails an example that takes over 200 ms by default: a timing assertion, which a
# busy machine turns red. Property tests here assert results only.
settings.register_profile('vicrop', deadline=None)
settings.load_profile('vicrop')


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory) -> Callable[[str], Path]:
    """Return a function family -> directory of that family's tiny model (built on first use)."""
    from vicrop_ros.testing.tiny import make_tiny_model

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = make_tiny_model(family, tmp_path_factory.mktemp(f'tiny_{family}'))
        return built[family]

    return get


@pytest.fixture(scope='session')
def tiny_model(tiny_model_dir) -> Callable[[str], object]:
    """Return a function family -> that tiny model loaded with ``load_model`` (CPU, float32)."""
    from vicrop_ros.models.loader import load_model

    loaded: dict[str, object] = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_model(str(tiny_model_dir(family)), device='cpu', dtype='float32')
        return loaded[family]

    return get


@pytest.fixture(scope='module')
def ros_context():
    """Yield a fresh rclpy context for one test module, shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)
