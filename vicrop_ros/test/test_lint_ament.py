"""ament's own linters (the ones with PyPI wheels), as a ROS 2 build farm would run them."""

from pathlib import Path
import subprocess
import sys

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


# In a subprocess: the linters fork workers, which must not inherit this process's DDS threads.
@pytest.mark.linter
@pytest.mark.parametrize('linter', ['ament_flake8', 'ament_pep257'])
def test_ament_linter(linter):
    command = [sys.executable, '-m', f'{linter}.main', str(PACKAGE_ROOT)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, f'{linter}:\n{result.stdout}\n{result.stderr}'
