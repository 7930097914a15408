"""
The launch file and the parameter file.

``launch``/``launch_ros`` cannot be installed from PyPI, so the launch file is loaded with
recording stand-ins for them (always) and with the real packages where they are importable.
"""

import importlib.util
from pathlib import Path
import sys
import types

from ament_index_python.packages import get_package_prefix, get_package_share_directory
import pytest
import yaml

from vicrop_ros.ros.params import SPEC_BY_NAME, SPECS

SHARE = Path(get_package_share_directory('vicrop_ros'))
LAUNCH_FILE = SHARE / 'launch' / 'vicrop.launch.py'


class Recorded:
    """A stand-in that records how it was constructed."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    @property
    def name(self):
        return self.args[0]


def stand_in_modules() -> dict[str, types.ModuleType]:
    names = (
        'launch',
        'launch.actions',
        'launch.conditions',
        'launch.substitutions',
        'launch_ros',
        'launch_ros.actions',
        'launch_ros.parameter_descriptions',
    )
    modules = {name: types.ModuleType(name) for name in names}
    modules['launch'].LaunchDescription = type('LaunchDescription', (Recorded,), {})
    for action in ('DeclareLaunchArgument', 'SetEnvironmentVariable', 'OpaqueFunction'):
        setattr(modules['launch.actions'], action, type(action, (Recorded,), {}))
    modules['launch.conditions'].IfCondition = type('IfCondition', (Recorded,), {})
    modules['launch.substitutions'].LaunchConfiguration = LaunchConfiguration
    modules['launch_ros.actions'].Node = type('Node', (Recorded,), {})
    modules['launch_ros.parameter_descriptions'].ParameterValue = type(
        'ParameterValue', (Recorded,), {}
    )
    return modules


def load_launch_module():
    spec = importlib.util.spec_from_file_location('vicrop_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def stand_in_launch(monkeypatch):
    """Load the launch file over recording stand-ins of launch and launch_ros."""
    for name, module in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    module = load_launch_module()
    (entities,) = module.generate_launch_description().args
    declared = {
        e.args[0]: e.kwargs for e in entities if type(e).__name__ == 'DeclareLaunchArgument'
    }
    (opaque,) = [e for e in entities if type(e).__name__ == 'OpaqueFunction']

    def node_for(**given):
        """Return the Node action the launch file makes for these launch argument values."""
        values = {name: kwargs['default_value'] for name, kwargs in declared.items()} | given
        (node,) = opaque.kwargs['function'](types.SimpleNamespace(launch_configurations=values))
        return node

    return module, entities, declared, node_for


def test_launch_arguments_are_declared_for_node_parameters(stand_in_launch):
    module, entities, declared, node_for = stand_in_launch
    assert set(declared) >= {'model', 'method', 'device', 'dtype', 'params_file', 'namespace'}
    assert {'head_topic', 'head_transport', 'wrist_topic', 'wrist_transport'} <= set(declared)
    for argument, parameter, _ in module.PARAMETER_ARGUMENTS:
        assert parameter in SPEC_BY_NAME, f'{parameter} is not a node parameter'
        assert isinstance(SPEC_BY_NAME[parameter].default, str), f'{parameter} is not a string'
        assert declared[argument]['default_value'] == '', f'{argument} would override the file'
        assert 'params_file' in declared[argument]['description']
    assert Path(declared['params_file']['default_value']) == SHARE / 'config' / 'vicrop.yaml'
    node = node_for(namespace='robot1')
    assert node.kwargs['package'] == 'vicrop_ros' and node.kwargs['executable'] == 'vicrop_node'
    assert node.kwargs['namespace'] == 'robot1'
    executable = Path(get_package_prefix('vicrop_ros')) / 'lib' / 'vicrop_ros' / 'vicrop_node'
    assert executable.is_file(), 'vicrop_node is not an installed entry point'
    environment = [e for e in entities if type(e).__name__ == 'SetEnvironmentVariable']
    assert {e.args[0] for e in environment} == {
        'FASTRTPS_DEFAULT_PROFILES_FILE',  # Fast DDS 2.x, the Jazzy one
        'FASTDDS_DEFAULT_PROFILES_FILE',
    }
    for variable in environment:
        assert Path(variable.args[1]) == SHARE / 'config' / 'fastdds_shm.xml'
        assert Path(variable.args[1]).is_file()
        assert variable.kwargs['condition'].args[0].name == 'use_shm_profile'
    assert declared['use_shm_profile']['default_value'] == 'false'


def test_the_params_file_wins_unless_an_argument_is_given(stand_in_launch):
    _, _, declared, node_for = stand_in_launch
    default_file = declared['params_file']['default_value']
    assert node_for().kwargs['parameters'] == [default_file]  # nothing over the file
    assert node_for(params_file='/mine.yaml').kwargs['parameters'] == ['/mine.yaml']
    params_file, overrides = node_for(params_file='/mine.yaml', model='1.5').kwargs['parameters']
    assert params_file == '/mine.yaml'  # first: the given arguments come after it and win
    assert set(overrides) == {'model'}
    assert overrides['model'].args == ('1.5',) and overrides['model'].kwargs == {'value_type': str}


def real_launch_available() -> bool:
    try:
        import launch
        import launch_ros.actions  # noqa: F401
    except ImportError:
        return False
    return hasattr(launch, 'LaunchDescription')  # not a stray namespace package


LAUNCH_RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
arguments = dict(argument.split(':=', 1) for argument in sys.argv[2:])
service = LaunchService()
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments.items())]))
sys.exit(service.run())
"""


@pytest.mark.dds
@pytest.mark.skipif(not real_launch_available(), reason='launch/launch_ros are not installed')
def test_the_real_launch_gives_file_values_and_typed_string_arguments(ros_context, tmp_path):
    """With the real launch packages: file values stand, a given argument wins, as a string."""
    import os
    import signal
    import subprocess
    import time

    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    document = yaml.safe_load((SHARE / 'config' / 'vicrop.yaml').read_text())
    mine = document['/**']['ros__parameters']
    mine.update(method='grad_att', device='cpu', autostart=False)
    mine['head']['topic'] = '/robot/head/image'
    params_file = tmp_path / 'mine.yaml'
    params_file.write_text(yaml.safe_dump(document))
    process = subprocess.Popen(
        [sys.executable, '-c', LAUNCH_RUNNER, str(LAUNCH_FILE), f'params_file:={params_file}',
         'model:=1.5', 'namespace:=launched'],
        start_new_session=True,
    )  # fmt: skip
    node = rclpy.create_node('launch_checker', context=ros_context)
    names = ['model', 'method', 'device', 'head.topic', 'wrist.topic']
    try:
        client = node.create_client(GetParameters, '/launched/vicrop/get_parameters')
        assert client.wait_for_service(timeout_sec=60), 'the launched node did not come up'
        future = client.call_async(GetParameters.Request(names=names))
        executor = SingleThreadedExecutor(context=ros_context)
        rclpy.spin_until_future_complete(node, future, executor, timeout_sec=30)
        values = dict(zip(names, future.result().values, strict=True))
    finally:
        node.destroy_node()
        os.killpg(process.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert values['model'].type == ParameterType.PARAMETER_STRING
    assert values['model'].string_value == '1.5'  # given: wins over the file, as a string
    assert values['method'].string_value == 'grad_att'  # not given: the file's value
    assert values['device'].string_value == 'cpu'
    assert values['head.topic'].string_value == '/robot/head/image'
    assert values['wrist.topic'].string_value == 'wrist_camera/image_raw'


def flatten(tree: dict, prefix: str = '') -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def test_parameter_file_holds_every_parameter_with_its_default():
    document = yaml.safe_load((SHARE / 'config' / 'vicrop.yaml').read_text())
    values = flatten(document['/**']['ros__parameters'])
    assert set(values) == {spec.name for spec in SPECS}
    for spec in SPECS:
        assert values[spec.name] == spec.default, spec.name
    text = (SHARE / 'config' / 'vicrop.yaml').read_text()
    for spec in SPECS:  # each parameter has a comment line right above it
        key = spec.name.split('.')[-1]
        lines = text.splitlines()
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f'{key}:'))
        assert lines[index - 1].strip().startswith('#'), f'{spec.name} has no comment'
