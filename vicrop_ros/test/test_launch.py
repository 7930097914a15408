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
    )
    modules = {name: types.ModuleType(name) for name in names}
    modules['launch'].LaunchDescription = type('LaunchDescription', (Recorded,), {})
    modules['launch.actions'].DeclareLaunchArgument = type(
        'DeclareLaunchArgument', (Recorded,), {}
    )
    modules['launch.actions'].SetEnvironmentVariable = type(
        'SetEnvironmentVariable', (Recorded,), {}
    )
    modules['launch.conditions'].IfCondition = type('IfCondition', (Recorded,), {})
    modules['launch.substitutions'].LaunchConfiguration = LaunchConfiguration
    modules['launch_ros.actions'].Node = type('Node', (Recorded,), {})
    return modules


def load_launch_module():
    spec = importlib.util.spec_from_file_location('vicrop_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_arguments_reach_declared_node_parameters(monkeypatch):
    for name, module in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    description = load_launch_module().generate_launch_description()
    (entities,) = description.args
    declared = {
        e.args[0]: e.kwargs for e in entities if type(e).__name__ == 'DeclareLaunchArgument'
    }
    (node,) = [e for e in entities if type(e).__name__ == 'Node']
    assert set(declared) >= {'model', 'method', 'device', 'dtype', 'params_file', 'namespace'}
    assert {'head_topic', 'head_transport', 'wrist_topic', 'wrist_transport'} <= set(declared)

    assert node.kwargs['package'] == 'vicrop_ros' and node.kwargs['executable'] == 'vicrop_node'
    executable = Path(get_package_prefix('vicrop_ros')) / 'lib' / 'vicrop_ros' / 'vicrop_node'
    assert executable.is_file(), 'vicrop_node is not an installed entry point'
    assert node.kwargs['namespace'].name == 'namespace'

    params_file, overrides = node.kwargs['parameters']
    assert params_file.name == 'params_file'
    assert Path(declared['params_file']['default_value']) == SHARE / 'config' / 'vicrop.yaml'
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
    used = {'params_file', 'namespace', 'use_shm_profile'}
    for parameter, configuration in overrides.items():
        assert parameter in SPEC_BY_NAME, f'{parameter} is not a node parameter'
        argument = configuration.name
        assert argument in declared, f'{argument} is used but not declared'
        assert declared[argument]['default_value'] == str(SPEC_BY_NAME[parameter].default)
        assert declared[argument]['description']
        used.add(argument)
    assert used == set(declared), f'declared but unused: {set(declared) - used}'


def test_launch_file_with_the_real_launch_packages():
    pytest.importorskip('launch')
    pytest.importorskip('launch_ros')
    description = load_launch_module().generate_launch_description()
    names = {argument.name for argument in description.get_launch_arguments()}
    assert {'model', 'method', 'device', 'dtype', 'params_file', 'namespace'} <= names


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
