"""
Dependencies point inward: ros -> models -> core.

``core/`` may import only the standard library, numpy, torch and ``vicrop_ros.core``;
``models/`` may import anything except ROS (rclpy, message/interface packages),
``vicrop_ros.ros`` and the test models of ``vicrop_ros.testing``; ``testing/`` (test-model
recipes) and ``evaluation/`` (accuracy, question sets) anything except ROS and ``vicrop_ros.ros``.
"""

import ast
from pathlib import Path
import re
import sys

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / 'vicrop_ros'
CORE_THIRD_PARTY = {'numpy', 'torch'}
ROS_MODULE = re.compile(
    r'^(rclpy|rosidl\w*|rcl_interfaces|ament_index_python|launch\w*'
    r'|\w+_msgs|\w+_srvs|\w+_interfaces)$'
)


def imported_modules(source: str, module: str) -> list[str]:
    """
    Return the absolute names of every module ``source`` imports, anywhere in the file.

    ``module`` is the dotted name of the file itself (``vicrop_ros.core.box``), used to resolve
    relative imports.
    """
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.')[: -node.level]
                names.append('.'.join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module)
    return names


def violations(source: str, module: str) -> list[str]:
    """Return the imports of ``source`` (file of dotted ``module``) that break its layer rule."""
    layer = module.split('.')[1] if module.count('.') >= 1 else ''
    found = []
    for name in imported_modules(source, module):
        top = name.split('.')[0]
        if layer == 'core':
            ok = (
                top in sys.stdlib_module_names
                or top in CORE_THIRD_PARTY
                or name == 'vicrop_ros.core'
                or name.startswith('vicrop_ros.core.')
            )
        elif layer in ('models', 'testing', 'evaluation'):
            outward = ('vicrop_ros.ros',) + (('vicrop_ros.testing',) if layer == 'models' else ())
            ok = not ROS_MODULE.match(top) and not any(
                name == banned or name.startswith(banned + '.') for banned in outward
            )
        else:
            ok = True
        if not ok:
            found.append(f'{module} imports {name}')
    return found


def package_modules(layer: str) -> list[tuple[Path, str]]:
    """Return (file, dotted module name) for every Python file of ``vicrop_ros/<layer>/``."""
    files = sorted((PACKAGE_DIR / layer).rglob('*.py'))
    root = PACKAGE_DIR.parent
    return [(f, '.'.join(f.relative_to(root).with_suffix('').parts)) for f in files]


@pytest.mark.parametrize('layer', ['core', 'models', 'testing', 'evaluation'])
def test_layer_imports_point_inward(layer):
    modules = package_modules(layer)
    assert modules, f'no modules found under {layer}/'
    found = [v for path, name in modules for v in violations(path.read_text(), name)]
    assert found == []


@pytest.mark.parametrize(
    ('module', 'source'),
    [
        ('vicrop_ros.core.box', 'import rclpy'),
        ('vicrop_ros.core.box', 'from transformers import AutoModel'),
        ('vicrop_ros.core.box', 'from sensor_msgs.msg import Image'),
        ('vicrop_ros.core.box', 'import cv2'),
        ('vicrop_ros.core.box', 'from ..models import llava'),
        ('vicrop_ros.core.box', 'from vicrop_ros.ros.node import VicropNode'),
        ('vicrop_ros.core.sub.deep', 'from ...ros import node'),
        ('vicrop_ros.models.llava', 'import rclpy.node'),
        ('vicrop_ros.models.llava', 'from vicrop_interfaces.msg import Answer'),
        ('vicrop_ros.models.llava', 'def load():\n    from std_msgs.msg import Header\n'),
        ('vicrop_ros.models.llava', 'from ..ros import node'),
        ('vicrop_ros.models.llava', 'from ..testing.tiny import make_tiny_model'),
        ('vicrop_ros.testing.recipes.llava', 'import rclpy'),
        ('vicrop_ros.evaluation.scenes', 'from ..ros import node'),
    ],
)
def test_checker_catches_planted_violation(module, source):
    assert len(violations(source, module)) == 1


@pytest.mark.parametrize(
    ('module', 'source'),
    [
        (
            'vicrop_ros.core.box',
            'import numpy as np\nimport torch.nn.functional as F\nimport math',
        ),
        (
            'vicrop_ros.core.box',
            'from .geometry import Box\nfrom vicrop_ros.core import select_box',
        ),
        (
            'vicrop_ros.models.llava',
            'import transformers\nfrom ..core import Box\nimport PIL.Image',
        ),
        ('vicrop_ros.ros.node', 'import rclpy\nfrom ..models import load_model'),
        ('vicrop_ros.testing.recipes.qwen2_5_vl', 'from ...models.qwen2_5_vl import Adapter'),
    ],
)
def test_checker_allows_inward_imports(module, source):
    assert violations(source, module) == []
