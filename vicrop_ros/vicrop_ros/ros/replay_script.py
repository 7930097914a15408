"""
The question script of ``vicrop-replay``, validated before anything is replayed, and the verdicts.

A script is YAML (a mapping with one key, ``questions``: a list) or JSONL (one question per line).
Every key, type and value is checked first: a mistake exits 2 naming ``file:line`` and the key,
instead of replaying a bag to report "0/0 passed". No ROS here.

A question passes only when it got exactly one answer, with status OK unless ``expect.status``
names the status it must have, and every other expectation and the golden report agree.
"""

from dataclasses import dataclass, field, replace
import json
from pathlib import Path

import yaml

from .jobs import STATUS_NAMES

STATUSES = tuple(STATUS_NAMES.values())  # the Answer status names, 'OK' first
STAMP_CHOICES = ('bag', 'newest')
# The answer fields the golden check compares: what a regression would change.
GOLDEN_KEYS = ('status', 'answer', 'box', 'image_stamp', 'frame_id')


class ScriptError(ValueError):
    """A script that cannot be replayed as written; the message names file:line and the key."""


@dataclass
class ScriptedQuestion:
    """One question of the script and what became of it."""

    at: float  # seconds after the bag's first message
    id: str  # as asked: the script's id, '<id>#<pass>' from the second --loop pass on
    question: str
    camera: str = ''
    method: str = ''
    stamp: str = 'bag'  # 'bag' (the bag time at ``at``) or 'newest'
    expect: dict = field(default_factory=dict)  # answer, region, status
    line: int = 0  # where the question starts in the script (1-based)
    sent_wall: float | None = None  # time.monotonic() when published
    answers: list = field(default_factory=list)  # (Answer, time.monotonic()) received
    script_id: str = ''  # the id in the script (golden entries are by it); '' = id

    def in_pass(self, number: int) -> 'ScriptedQuestion':
        """Return this question as asked in --loop pass ``number`` (1 = itself, unasked)."""
        if number == 1:
            return self
        return replace(self, id=f'{self.id}#{number}', script_id=self.id, answers=[])


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# key -> (check, what it must be); 'at' and 'question' are required.
QUESTION_KEYS = {
    'at': (lambda v: _number(v) and v >= 0, 'a number of seconds >= 0'),
    'question': (lambda v: isinstance(v, str) and v.strip() != '', 'a non-empty string'),
    'id': (lambda v: isinstance(v, str | int) and str(v) != '', 'a non-empty string'),
    'camera': (lambda v: isinstance(v, str), "a camera name, or '' for the default"),
    'method': (lambda v: isinstance(v, str), "a method name, or '' for the default"),
    'stamp': (lambda v: v in STAMP_CHOICES, f'one of {", ".join(STAMP_CHOICES)}'),
    'expect': (lambda v: isinstance(v, dict), 'a mapping'),
}
EXPECT_KEYS = {
    'answer': (lambda v: isinstance(v, str), 'a string the answer must contain'),
    'region': (
        lambda v: isinstance(v, list) and len(v) == 4 and all(map(_number, v)),
        'four numbers [x0, y0, x1, y1]',
    ),
    'status': (lambda v: v in STATUSES, f'one of {", ".join(STATUSES)}'),
}
REQUIRED = ('at', 'question')


def load_script(path: Path) -> list[ScriptedQuestion]:
    """Read and validate a YAML or JSONL script; return its questions sorted by ``at``."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ScriptError(f'{path}: cannot read the script: {error}') from None
    entries = _jsonl_entries(path, text) if path.suffix == '.jsonl' else _yaml_entries(path, text)
    questions = []
    for index, (line, entry) in enumerate(entries):
        where = f'{path}:{line}: question {index + 1}'
        _check_keys(where, entry, QUESTION_KEYS)
        missing = [key for key in REQUIRED if key not in entry]
        if missing:
            raise ScriptError(f'{where}: missing key {missing[0]!r} (required: at, question)')
        _check_keys(f'{where}: expect', entry.get('expect') or {}, EXPECT_KEYS)
        questions.append(ScriptedQuestion(
            at=float(entry['at']), id=str(entry.get('id', f'q{index}')),
            question=entry['question'], camera=entry.get('camera', ''),
            method=entry.get('method', ''), stamp=entry.get('stamp', 'bag'),
            expect=dict(entry.get('expect') or {}), line=line,
        ))  # fmt: skip
    seen = {}
    for question in questions:
        if question.id in seen:
            raise ScriptError(
                f'{path}:{question.line}: id {question.id!r} is used twice '
                f'(first at line {seen[question.id]})'
            )
        seen[question.id] = question.line
    return sorted(questions, key=lambda q: q.at)


def _check_keys(where: str, entry, keys: dict) -> None:
    """Raise ScriptError for a non-mapping, an unknown key or a value of the wrong kind."""
    if not isinstance(entry, dict):
        raise ScriptError(f'{where}: must be a mapping of keys, got {type(entry).__name__}')
    for key, value in entry.items():
        if key not in keys:
            raise ScriptError(f'{where}: unknown key {key!r} (allowed: {", ".join(keys)})')
        check, must_be = keys[key]
        if not check(value):
            raise ScriptError(f'{where}: {key!r} must be {must_be}, got {value!r}')


def _yaml_entries(path: Path, text: str) -> list[tuple[int, object]]:
    """Return (line, question) of a YAML script; errors name the line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, 'problem_mark', None)
        line = f':{mark.line + 1}' if mark is not None else ''
        raise ScriptError(f'{path}{line}: not valid YAML: {error}') from None
    if not isinstance(document, dict) or not isinstance(root, yaml.MappingNode):
        raise ScriptError(f'{path}:1: the script must be a mapping with a "questions" list')
    unknown = [key for key in document if key != 'questions']
    if unknown:
        raise ScriptError(f'{path}:1: unknown key {unknown[0]!r} (the script has "questions")')
    questions = document.get('questions')
    if not isinstance(questions, list):
        raise ScriptError(f'{path}:1: "questions" must be a list of questions')
    (node,) = [value for key, value in root.value if key.value == 'questions']
    return [
        (item.start_mark.line + 1, entry)
        for item, entry in zip(node.value, questions, strict=True)
    ]


def _jsonl_entries(path: Path, text: str) -> list[tuple[int, object]]:
    """Return (line, question) of a JSONL script; errors name the line."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise ScriptError(f'{path}:{number}: not valid JSON: {error}') from None
    return entries


def verdict(entry: dict, scripted: ScriptedQuestion, golden: dict | None) -> list[str]:
    """
    Return why the question failed (empty: it passed), from its report ``entry``.

    ``golden``: the questions of an earlier report by id, or None for no golden check.
    """
    failures = []
    received = entry.get('answers_received', 0)
    if received == 0:
        return ['no answer']
    if received > 1:
        failures.append(f'{received} answers for one question')
    wanted = scripted.expect.get('status', 'OK')
    if entry['status'] != wanted:
        said = f' ({entry["error"]})' if entry.get('error') else ''
        failures.append(f'status {entry["status"]}{said}, expected {wanted}')
    expected_answer = scripted.expect.get('answer')
    if expected_answer is not None and expected_answer.lower() not in entry['answer'].lower():
        failures.append(f'answer {entry["answer"]!r} does not contain {expected_answer!r}')
    region, box = scripted.expect.get('region'), entry.get('box')
    if region is not None and not (box and box[0] <= region[0] and box[1] <= region[1]
                                   and region[2] <= box[2] and region[3] <= box[3]):  # fmt: skip
        failures.append(f'crop {box} does not contain the expected region {region}')
    if golden is not None:
        reference = golden.get(scripted.script_id or scripted.id)
        if reference is None:
            failures.append('not in the golden report')
        else:
            diff = {k: (reference.get(k), entry.get(k)) for k in GOLDEN_KEYS
                    if reference.get(k) != entry.get(k)}  # fmt: skip
            if diff:
                failures.append(f'differs from the golden report: {diff}')
    return failures
