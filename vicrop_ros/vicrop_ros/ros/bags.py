"""
Rosbag2 helpers on ``rosbags`` (pure Python; ``rosbag2_py`` is not needed).

The type store with the vicrop messages registered, and rclpy message classes for type names.
"""

import importlib
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from rosbags.typesys import Stores, get_types_from_msg, get_typestore


def typestore():
    """Return a ROS 2 Jazzy type store that also knows the vicrop_interfaces messages."""
    store = get_typestore(Stores.ROS2_JAZZY)
    share = Path(get_package_share_directory('vicrop_interfaces'))
    types = {}
    for path in sorted((share / 'msg').glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'vicrop_interfaces/msg/{path.stem}'))
    store.register(types)
    return store


def message_class(msgtype: str):
    """Return the rclpy message class for a type name such as 'sensor_msgs/msg/Image'."""
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)
