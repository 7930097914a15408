"""
A pytest fixture for robot teams' regression tests: ``vicrop_replay(bag, script)``.

Load it in a ``conftest.py`` with ``pytest_plugins = ['vicrop_ros.testing.replay_fixture']``,
start the node the way the robot does (``use_sim_time:=true``), then::

    def test_the_kitchen_bag_still_reads_the_labels(vicrop_replay):
        run = vicrop_replay('bags/kitchen', 'bags/kitchen_questions.yaml', node='/vicrop',
                            golden='bags/kitchen_golden.jsonl')
        assert run.passed, run.explain()

The fixture runs the real ``vicrop-replay`` command (so the test checks exactly what CI and a
person at the terminal see), with ``--clock``, a JSONL report and an HTML report in the test's
temporary directory, and returns a :class:`ReplayRun` with the parsed report. No ROS import here.
"""

from dataclasses import dataclass
import itertools
import json
from pathlib import Path
import subprocess

import pytest

EXIT_MEANINGS = {0: 'every question passed', 1: 'a regression', 2: 'a usage or input error'}


@dataclass(frozen=True)
class ReplayRun:
    """What one ``vicrop-replay`` run gave: its exit status, output and parsed report."""

    returncode: int  # 0 passed, 1 a regression, 2 a usage or input error
    stdout: str
    stderr: str
    questions: dict  # report entries by question id
    summary: dict  # the report's summary line ({} when the run stopped before it)
    report: Path  # the JSONL report (pass it as golden= to a later run)
    html: Path  # the self-contained HTML report

    @property
    def passed(self) -> bool:
        """Return True when the run exited 0: every question passed."""
        return self.returncode == 0

    def explain(self) -> str:
        """Return what went wrong, for an assertion message: failed questions, or the error."""
        meaning = EXIT_MEANINGS.get(self.returncode, 'an unexpected exit status')
        lines = [f'vicrop-replay exited {self.returncode} ({meaning}); report: {self.html}']
        for question_id, entry in self.questions.items():
            if entry['failures']:
                lines.append(f'  {question_id}: {"; ".join(entry["failures"])}')
        if not self.questions:
            lines.append(self.stderr.strip() or self.stdout.strip())
        return '\n'.join(lines)


def run_replay(bag, script, out_dir: Path, node: str = '/vicrop', golden=None, args=(),
               timeout: float = 600.0) -> ReplayRun:  # fmt: skip
    """
    Run ``vicrop-replay BAG --script SCRIPT --node NODE --clock`` with reports in ``out_dir``.

    ``args``: further command-line arguments (e.g. ``('--rate', '2', '--remap', 'a:=b')``);
    ``timeout``: seconds before the run is killed (a hung node fails the test, not the suite).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report, html = out_dir / 'report.jsonl', out_dir / 'report.html'
    command = ['vicrop-replay', str(bag), '--script', str(script), '--node', node, '--clock',
               '--report', str(report), '--html', str(html)]  # fmt: skip
    if golden is not None:
        command += ['--golden', str(golden)]
    done = subprocess.run(
        command + [str(a) for a in args], capture_output=True, text=True, timeout=timeout
    )
    entries = []
    if report.is_file():
        entries = [json.loads(line) for line in report.read_text().splitlines() if line]
    questions = {e['id']: e for e in entries if e['kind'] == 'question'}
    summary = next((e for e in entries if e['kind'] == 'summary'), {})
    return ReplayRun(done.returncode, done.stdout, done.stderr, questions, summary, report, html)


@pytest.fixture
def vicrop_replay(tmp_path):
    """Return ``run(bag, script, node='/vicrop', golden=None, args=(), timeout=600)``."""
    runs = itertools.count(1)

    def run(bag, script, **options) -> ReplayRun:
        return run_replay(bag, script, tmp_path / f'replay-{next(runs)}', **options)

    return run
