"""The README's main-job command, end to end (demo bag, tiny model, node, replay)."""

import os
from pathlib import Path
import subprocess

import pytest

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(400)]
REPOSITORY = Path(__file__).resolve().parents[2]


def test_scripts_demo_prints_every_answer_and_writes_saliency(tmp_path):
    env = dict(os.environ, VICROP_DEMO_DIR=str(tmp_path / 'demo'))
    result = subprocess.run(
        [str(REPOSITORY / 'scripts' / 'demo'), '--out', str(tmp_path / 'out')],
        capture_output=True, text=True, timeout=380, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'RANDOM weights' in result.stdout
    for question_id in ('label', 'cube', 'dial', 'parts', 'screw'):
        assert f'] {question_id} (' in result.stdout
    assert '5/5 questions passed' in result.stdout
    assert len(list((tmp_path / 'out' / 'saliency').glob('*.png'))) == 5
