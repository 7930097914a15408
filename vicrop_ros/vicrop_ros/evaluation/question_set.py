"""
Question sets in the TextVQA format: read one, or write a synthetic one.

A set is a JSON file ``{"dataset_name": ..., "data": [entry, ...]}`` as TextVQA publishes it. An
entry has ``question_id``, ``question``, ``answers`` (the ten human answers; a synthetic set
repeats its one ground truth), and the image as ``image_path`` (relative to the file) or as
TextVQA's ``image_id`` (``<image_id>.jpg`` in an images directory). Optional: ``gt_box``
``[x0, y0, x1, y1]`` in image pixels (the ground-truth crop, the "human crop" upper bound),
``target_size_px`` (the target's longest side, for the size buckets) and ``kind``.
"""

from dataclasses import dataclass
import json
from pathlib import Path

import cv2

from ..core.box import Box
from .scenes import FRAME_SIZES, TargetKind, render_scene

REFERENCE_FRAME = FRAME_SIZES[0]  # synthetic sets' sizes are for this (width, height)


@dataclass(frozen=True)
class EvalQuestion:
    """One question of a set, with where its image is and what counts as right."""

    question_id: str
    image_path: Path
    question: str
    answers: tuple[str, ...]
    box: Box | None = None  # the ground-truth region, image pixels
    size_px: int | None = None  # the target's longest side, image pixels
    kind: str | None = None


def load_question_set(
    path: str | Path, images_dir: str | Path | None = None
) -> list[EvalQuestion]:
    """
    Read a TextVQA-format set; raise ValueError naming the entry and field that are wrong.

    ``images_dir``: where ``<image_id>.jpg`` files are, for entries without ``image_path``
    (default: an ``images`` directory beside the file).
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f'cannot read the question set {path}: {error}') from None
    entries = document.get('data') if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{path}: expected an object with a "data" list (the TextVQA format)')
    base = Path(images_dir) if images_dir else path.parent / 'images'
    return [_entry(path, index, entry, base) for index, entry in enumerate(entries)]


def _entry(path: Path, index: int, entry, images_dir: Path) -> EvalQuestion:
    """Return entry ``index`` of the set at ``path`` as an EvalQuestion."""
    where = f'{path}: entry {index}'
    if not isinstance(entry, dict):
        raise ValueError(f'{where} is not an object')
    question = entry.get('question')
    answers = entry.get('answers')
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f'{where}: "question" must be a non-empty string')
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) for a in answers)
    ):
        raise ValueError(f'{where}: "answers" must be a non-empty list of strings')
    if 'image_path' in entry:
        image = path.parent / str(entry['image_path'])
    elif 'image_id' in entry:
        image = images_dir / f'{entry["image_id"]}.jpg'
    else:
        raise ValueError(f'{where}: needs "image_path" or "image_id"')
    box = None
    if entry.get('gt_box') is not None:
        values = entry['gt_box']
        if not (isinstance(values, list) and len(values) == 4):
            raise ValueError(f'{where}: "gt_box" must be [x0, y0, x1, y1]')
        try:
            box = Box(*(int(round(float(v))) for v in values))
        except (TypeError, ValueError) as error:
            raise ValueError(f'{where}: "gt_box" {values}: {error}') from None
    size = entry.get('target_size_px')
    return EvalQuestion(
        question_id=str(entry.get('question_id', index)),
        image_path=image,
        question=question,
        answers=tuple(answers),
        box=box,
        size_px=None if size is None else int(size),
        kind=entry.get('kind'),
    )


def write_synthetic_set(
    out_dir: str | Path, count: int, seed: int, sizes: tuple[int, ...]
) -> Path:
    """
    Write ``count`` synthetic scenes and their TextVQA-format set to ``out_dir``; return its path.

    Scene i uses seed ``seed * 1_000_003 + i``, target kind i mod 3, size ``sizes[i // 3 mod
    len(sizes)]`` (so every kind meets every size) and the frame sizes in turn. Sizes are for a
    640x480 frame and grow with a frame's height (a 1280x720 frame's are 1.5 times larger), so
    both frame sizes show the same range of targets to a model. Images are PNG (lossless: a
    small digit survives) under ``out_dir/images``.
    """
    out = Path(out_dir)
    (out / 'images').mkdir(parents=True, exist_ok=True)
    kinds = list(TargetKind)
    data = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        size = sizes[(i // len(kinds)) % len(sizes)]
        frame = FRAME_SIZES[(i // (len(kinds) * len(sizes))) % len(FRAME_SIZES)]
        scaled = round(size * frame[1] / REFERENCE_FRAME[1])
        scene = render_scene(seed * 1_000_003 + i, kind, scaled, frame)
        name = f'images/{seed}_{i:05d}.png'
        cv2.imwrite(str(out / name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
        data.append(
            {
                'question_id': f'{seed}_{i:05d}',
                'image_path': name,
                'question': scene.question,
                'answers': [scene.answer] * 10,
                'gt_box': list(scene.box.as_xyxy()),
                'target_size_px': scene.size_px,
                'kind': kind.value,
            }
        )
    path = out / 'questions.json'
    path.write_text(json.dumps({'dataset_name': 'vicrop-synthetic', 'data': data}, indent=1))
    return path
