"""The colcon install is what ROS tools see: ament index entries, share files, console scripts."""

import json
from pathlib import Path
import shutil
import subprocess

from ament_index_python.packages import get_package_prefix, get_package_share_directory
import torch


def test_both_packages_are_in_the_ament_index():
    for package in ('vicrop_interfaces', 'vicrop_ros'):
        share = Path(get_package_share_directory(package))
        assert (share / 'package.xml').is_file()
    interfaces = Path(get_package_share_directory('vicrop_interfaces'))
    assert (interfaces / 'msg' / 'Answer.msg').is_file()
    assert (interfaces / 'action' / 'AskQuestion.action').is_file()


def test_console_script_is_where_ros2_run_looks():
    script = Path(get_package_prefix('vicrop_ros')) / 'lib' / 'vicrop_ros' / 'vicrop'
    assert script.is_file()
    assert shutil.which('vicrop') == str(script)


def test_vicrop_info_reports_versions_and_devices():
    result = subprocess.run(
        ['vicrop', 'info', '--json'], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(result.stdout)
    assert report['torch'] == torch.__version__
    assert report['cuda_available'] is torch.cuda.is_available()
    assert len(report['cuda_devices']) == torch.cuda.device_count()


def test_vicrop_without_command_explains_usage():
    result = subprocess.run(['vicrop'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'COMMAND' in result.stderr
