"""
Launch the vicrop node.

    ros2 launch vicrop_ros vicrop.launch.py model:=llava-hf/llava-1.5-7b-hf method:=rel_att

Every parameter comes from ``params_file`` (default: the package's ``config/vicrop.yaml``). The
launch arguments below override their parameter only when given (their default, empty, means
"as in params_file"), and always as strings (``model:=1.5`` is the model "1.5").
``use_shm_profile:=true`` sets the shipped Fast DDS shared-memory profile for large images (give
it to the camera drivers too). Camera topics can also be remapped: see the README.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

# (launch argument, node parameter, description): string parameters a launch line often sets.
PARAMETER_ARGUMENTS = (
    ('model', 'model', 'Model id or save_pretrained directory.'),
    ('method', 'method', 'Default method: rel_att, grad_att, pure_grad or none.'),
    ('device', 'device', "'auto', 'cpu', 'cuda' or 'cuda:N'."),
    ('dtype', 'dtype', "'auto', 'float32', 'bfloat16' or 'float16'."),
    ('head_topic', 'head.topic', 'Head camera image topic.'),
    ('head_transport', 'head.transport', "Head camera: 'raw' or 'compressed'."),
    ('head_reliability', 'head.reliability', "Head camera: 'auto', 'reliable', 'best_effort'."),
    ('wrist_topic', 'wrist.topic', 'Wrist camera image topic.'),
    ('wrist_transport', 'wrist.transport', "Wrist camera: 'raw' or 'compressed'."),
    ('wrist_reliability', 'wrist.reliability', "Wrist camera: 'auto', 'reliable', 'best_effort'."),
)
NOT_GIVEN = ''  # the default of every argument above: keep the params_file value


def node_parameters(params_file: str, arguments: dict[str, str]) -> list:
    """
    Return the node's ``parameters``: the file, then the given arguments (later entries win).

    ``arguments`` maps launch argument names to their values; empty ones are left out, so the
    file decides. Values stay strings (no YAML typing of '1.5' or 'true').
    """
    overrides = {
        parameter: ParameterValue(arguments[argument], value_type=str)
        for argument, parameter, _ in PARAMETER_ARGUMENTS
        if arguments.get(argument, NOT_GIVEN) != NOT_GIVEN
    }
    return [params_file, overrides] if overrides else [params_file]


def _vicrop_node(context) -> list:
    """Make the node action from the launch arguments' values (an OpaqueFunction)."""
    values = context.launch_configurations
    return [
        Node(
            package='vicrop_ros',
            executable='vicrop_node',
            name='vicrop',
            namespace=values.get('namespace', ''),
            output='screen',
            emulate_tty=True,
            parameters=node_parameters(values['params_file'], values),
        )
    ]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and start ``vicrop_node`` with them."""
    share = get_package_share_directory('vicrop_ros')
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=os.path.join(share, 'config', 'vicrop.yaml'),
            description='YAML file with every vicrop parameter.',
        ),
        DeclareLaunchArgument('namespace', default_value='', description='Node namespace.'),
        DeclareLaunchArgument(
            'use_shm_profile',
            default_value='false',
            description='Use config/fastdds_shm.xml (shared memory, 32 MB segments) for DDS.',
        ),
    ]
    arguments += [
        DeclareLaunchArgument(
            argument,
            default_value=NOT_GIVEN,
            description=f'{description} Empty: as in params_file.',
        )
        for argument, _, description in PARAMETER_ARGUMENTS
    ]
    # Fast DDS 2.x (Jazzy) reads FASTRTPS_..., Fast DDS 3.x (Kilted and later) FASTDDS_...
    shm_profile = [
        SetEnvironmentVariable(
            variable,
            os.path.join(share, 'config', 'fastdds_shm.xml'),
            condition=IfCondition(LaunchConfiguration('use_shm_profile')),
        )
        for variable in ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')
    ]
    return LaunchDescription([*arguments, *shm_profile, OpaqueFunction(function=_vicrop_node)])
