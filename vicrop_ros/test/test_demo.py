"""The README's main-job command, end to end (demo bag, demo model, node, replay)."""

import os
from pathlib import Path
import re
import subprocess

import pytest

pytestmark = [pytest.mark.dds, pytest.mark.slow, pytest.mark.timeout(400)]
REPOSITORY = Path(__file__).resolve().parents[2]


def test_scripts_demo_answers_with_the_demo_model_and_writes_saliency(tmp_path):
    env = dict(os.environ, VICROP_DEMO_DIR=str(tmp_path / 'demo'))
    result = subprocess.run(
        [str(REPOSITORY / 'scripts' / 'demo'), '--out', str(tmp_path / 'out')],
        capture_output=True, text=True, timeout=380, env=env,
    )  # fmt: skip
    # 1: some answer or crop is not what the script expects (the demo model is a toy).
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert 'the default model is vicrop-demo' in result.stdout
    for question_id in ('card', 'cube', 'dial', 'wrist_card', 'wrist_cube'):
        assert f'] {question_id} (' in result.stdout
    # Each question is checked against its true answer and target (the README gives the count).
    assert re.search(r'\d/5 questions passed', result.stdout), result.stdout
    assert result.stdout.count('-> OK:') == 5  # one answer each, none an error
    assert len(list((tmp_path / 'out' / 'saliency').glob('*.png'))) == 5
