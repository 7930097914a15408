"""
Launch the vicrop node.

    ros2 launch vicrop_ros vicrop.launch.py model:=llava-hf/llava-1.5-7b-hf method:=rel_att

Every parameter is in ``params_file`` (default: the package's ``config/vicrop.yaml``); the launch
arguments below override their parameter from that file. ``use_shm_profile:=true`` sets the
shipped Fast DDS shared-memory profile for large images (give it to the camera drivers too).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# (launch argument, node parameter, default, description); defaults match config/vicrop.yaml.
PARAMETER_ARGUMENTS = (
    ('model', 'model', 'llava-hf/llava-1.5-7b-hf', 'Model id or save_pretrained directory.'),
    ('method', 'method', 'rel_att', 'Default method: rel_att, grad_att, pure_grad or none.'),
    ('device', 'device', 'auto', "'auto', 'cpu', 'cuda' or 'cuda:N'."),
    ('dtype', 'dtype', 'auto', "'auto', 'float32', 'bfloat16' or 'float16'."),
    ('head_topic', 'head.topic', '/head_camera/image_raw', 'Head camera image topic.'),
    ('head_transport', 'head.transport', 'raw', "Head camera: 'raw' or 'compressed'."),
    ('wrist_topic', 'wrist.topic', '/wrist_camera/image_raw', 'Wrist camera image topic.'),
    ('wrist_transport', 'wrist.transport', 'raw', "Wrist camera: 'raw' or 'compressed'."),
)


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
        DeclareLaunchArgument(argument, default_value=default, description=description)
        for argument, _, default, description in PARAMETER_ARGUMENTS
    ]
    overrides = {
        parameter: LaunchConfiguration(argument)
        for argument, parameter, _, _ in PARAMETER_ARGUMENTS
    }
    node = Node(
        package='vicrop_ros',
        executable='vicrop_node',
        name='vicrop',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=[LaunchConfiguration('params_file'), overrides],
    )
    # Fast DDS 2.x (Jazzy) reads FASTRTPS_..., Fast DDS 3.x (Kilted and later) FASTDDS_...
    shm_profile = [
        SetEnvironmentVariable(
            variable,
            os.path.join(share, 'config', 'fastdds_shm.xml'),
            condition=IfCondition(LaunchConfiguration('use_shm_profile')),
        )
        for variable in ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')
    ]
    return LaunchDescription([*arguments, *shm_profile, node])
