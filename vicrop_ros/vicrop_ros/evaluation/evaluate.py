"""
``vicrop eval``'s engine: answer a question set under each condition and score the answers.

A condition is how the final answer is made: ``none`` (the frame alone), a ViCrop method (the
frame and the crop its map chooses), or ``gt_crop`` (the frame and the crop the box search
chooses on a map that is 1 inside the ground-truth box: the "human crop" upper bound).

With ``attention``, each ``none`` answer also carries the attention ratio of every decoder layer
(:mod:`.attention_ratio`, the paper's Fig. 3), summarised for right and wrong answers.
"""

from collections.abc import Callable, Iterable, Sequence
import dataclasses
from dataclasses import asdict, dataclass
import itertools
import math
from pathlib import Path
import statistics
import time

import cv2
import numpy as np

from ..core.box import Box
from ..core.box_search import choose_box
from ..core.config import Method, VicropConfig
from ..core.geometry import crop, image_size
from ..core.pipeline import Vicrop, VisionLanguageModel
from .attention_ratio import attention_ratio
from .question_set import EvalQuestion
from .vqa_accuracy import vqa_accuracy

GT_CROP = 'gt_crop'
CONDITIONS = tuple(m.value for m in Method) + (GT_CROP,)  # 'none' first: the frame alone
# Target sizes as the model sees them (longest side, pixels at the model's input: size_px x base
# size / the frame's longer side) that start each bucket after the first: small (below 8 px a
# card's digit is under 5 px: unreadable in the whole frame), medium, large.
DEFAULT_BUCKET_EDGES = (8, 16)


@dataclass(frozen=True)
class Record:
    """One answer to one question under one condition, scored."""

    question_id: str
    condition: str
    prediction: str
    accuracy: float  # VQA accuracy in [0, 1]
    latency_ms: float  # the whole answer, from the decoded frame
    size_px: int | None
    kind: str | None
    box: tuple[int, int, int, int] | None  # the crop, frame pixels (XYXY); None: no crop
    # Per decoder layer, first to last: the attention ratio of the ground-truth box (``none``
    # records of an evaluation with ``attention``; nan where undefined); else None.
    attention_ratios: tuple[float, ...] | None = None
    # The target's longest side as the model sees the whole frame: pixels at its input (the
    # box search's base size) = size_px x base size / the frame's longer side. The size buckets
    # use it, so frames of any size compare. None without size_px.
    seen_px: float | None = None


def oracle_box(truth: Box, size: tuple[int, int], base_size: int, scales) -> Box:
    """
    Return the crop the box search chooses when the map is 1 inside ``truth`` and 0 elsewhere.

    The map has one cell per pixel of ``size`` (width, height) at a quarter of the resolution,
    so the crop has the sizes and the context a ViCrop crop has.
    """
    width, height = size
    cell = 4
    grid = np.zeros((-(-height // cell), -(-width // cell)), np.float32)
    rows = slice(truth.y0 // cell, -(-truth.y1 // cell))  # cells the box touches
    cols = slice(truth.x0 // cell, -(-truth.x1 // cell))
    grid[rows, cols] = 1.0
    return choose_box(grid, size, base_size, scales).box


def read_rgb(path) -> np.ndarray:
    """Return the image file at ``path`` as HWC uint8 RGB; raise ValueError saying why not."""
    if not Path(path).is_file():
        raise ValueError(f'image file not found: {path}')
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot decode image file: {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_conditions(conditions: Iterable[str]) -> list[str]:
    """Return ``conditions`` as a list; raise ValueError naming the first unknown one."""
    conditions = list(conditions)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f'unknown condition {unknown[0]!r}; expected some of {CONDITIONS}')
    return conditions


def evaluate(
    model: VisionLanguageModel,
    questions: Sequence[EvalQuestion],
    conditions: Iterable[str],
    config: VicropConfig,
    progress: Callable[[int, int], None] | None = None,
    attention: bool = False,
) -> list[Record]:
    """
    Answer every question under every condition; return one Record each.

    No preparation is kept between answers, so each latency is that of a question alone.
    ``progress(done, total)`` is called after each question. ``attention``: give each ``none``
    record of a question with a ground-truth box its attention ratios (not timed). Raises
    ValueError for an unknown condition, ``gt_crop`` on a question without a ground-truth box,
    or ``attention`` without the ``none`` condition.
    """
    conditions = check_conditions(conditions)
    if attention and Method.NONE.value not in conditions:
        raise ValueError("attention ratios go with the 'none' answers: add the none condition")
    vicrop = Vicrop(model, config)
    records = []
    for done, question in enumerate(questions, 1):
        image = read_rgb(question.image_path)
        for condition in conditions:
            record = _answer(vicrop, question, image, condition)
            if attention and condition == Method.NONE.value and question.box is not None:
                ratios = layer_attention_ratios(model, image, question, config)
                record = dataclasses.replace(record, attention_ratios=ratios)
            records.append(record)
        if progress is not None:
            progress(done, len(questions))
    return records


def layer_attention_ratios(
    model: VisionLanguageModel, image: np.ndarray, question: EvalQuestion, config: VicropConfig
) -> tuple[float, ...]:
    """Return the attention ratio of ``question.box`` at each decoder layer, first to last."""
    prepared = model.prepare(image, answers=False)
    size = (image.shape[1], image.shape[0])
    layers = prepared.attention_by_layer(question.question, config)
    return tuple(round(attention_ratio([m], question.box, size), 4) for m in layers)


def _answer(vicrop: Vicrop, question: EvalQuestion, image: np.ndarray, condition: str) -> Record:
    """Answer ``question`` about ``image`` under ``condition``; return the scored Record."""
    start = time.perf_counter()
    if condition == GT_CROP:
        if question.box is None:
            raise ValueError(f'question {question.question_id} has no gt_box for gt_crop')
        height, width = image.shape[:2]
        box = oracle_box(question.box, (width, height), vicrop.base_size(), vicrop.config.scales)
        prepared = vicrop.model.prepare(image)
        prediction = prepared.answer(question.question, crop(image, box), vicrop.config)
    else:
        result = vicrop(image, question.question, method=Method(condition))
        prediction, box = result.answer, result.box
    latency = (time.perf_counter() - start) * 1000
    seen = None
    if question.size_px is not None:
        seen = round(question.size_px * vicrop.base_size() / max(image_size(image)), 2)
    return Record(
        question_id=question.question_id,
        condition=condition,
        prediction=prediction,
        accuracy=vqa_accuracy(prediction, question.answers),
        latency_ms=round(latency, 2),
        size_px=question.size_px,
        kind=question.kind,
        box=None if box is None else box.as_xyxy(),
        seen_px=seen,
    )


def size_bucket(size: float | None, edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> str:
    """Return the bucket of a target of ``size`` (px): '<8', '8-15', ..., '>=16', or 'unknown'."""
    if size is None:
        return 'unknown'
    if size < edges[0]:
        return f'<{edges[0]}'
    for low, high in itertools.pairwise(edges):
        if low <= size < high:
            return f'{low}-{high - 1}'
    return f'>={edges[-1]}'


def summarize(records: Sequence[Record], edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> dict:
    """
    Return the figures of ``records``: per condition, accuracy and latency.

    Per condition: the accuracy in %, overall, by size bucket (the target's size as the model
    sees it, ``Record.seen_px``; with each bucket's count) and, where records name the target's
    kind (synthetic sets), by kind; and the median latency in ms; and the number of questions.
    """
    conditions = list(dict.fromkeys(r.condition for r in records))
    summary = {'questions': len({r.question_id for r in records}), 'conditions': {}}
    for condition in conditions:
        rows = [r for r in records if r.condition == condition]
        buckets: dict[str, list[float]] = {}
        for row in sorted(rows, key=lambda r: (r.seen_px is None, r.seen_px or 0)):
            buckets.setdefault(size_bucket(row.seen_px, edges), []).append(row.accuracy)
        summary['conditions'][condition] = {
            'accuracy': _percent([r.accuracy for r in rows]),
            'accuracy_by_size': {name: _percent(values) for name, values in buckets.items()},
            'count_by_size': {name: len(values) for name, values in buckets.items()},
            'median_latency_ms': round(statistics.median(r.latency_ms for r in rows), 1),
        }
        kinds: dict[str, list[float]] = {}
        for row in rows:
            if row.kind is not None:
                kinds.setdefault(row.kind, []).append(row.accuracy)
        if kinds:
            summary['conditions'][condition]['accuracy_by_kind'] = {
                kind: _percent(values) for kind, values in sorted(kinds.items())
            }
    attention = attention_summary(records)
    if attention:
        summary['attention_ratio_by_layer'] = attention
    return summary


def attention_summary(records: Sequence[Record]) -> dict:
    """
    Return the median attention ratio per layer of right and of wrong ``none`` answers.

    ``{'right': [per layer], 'wrong': [...], 'count_right': n, 'count_wrong': n}``, an answer
    being right at VQA accuracy >= 0.5; nan ratios are left out. The median, not the mean: a
    ratio's denominator can be near 0 (a layer that attends to one spot), and one such answer
    would make the mean. Empty when no record has ratios.
    """
    rows = [r for r in records if r.attention_ratios is not None]
    if not rows:
        return {}
    summary = {}
    for name, chosen in (('right', [r for r in rows if r.accuracy >= 0.5]),
                         ('wrong', [r for r in rows if r.accuracy < 0.5])):  # fmt: skip
        layers = zip(*(r.attention_ratios for r in chosen), strict=True)
        summary[name] = [_finite_median(values) for values in layers]
        summary[f'count_{name}'] = len(chosen)
    return summary


def _finite_median(values) -> float | None:
    """Return the median of the finite ``values``, 3 decimals; None if there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return round(statistics.median(finite), 3) if finite else None


def _percent(values: Sequence[float]) -> float:
    """Return the mean of accuracies in [0, 1] as a percentage, one decimal."""
    return round(100 * sum(values) / len(values), 1)


def record_dicts(records: Sequence[Record]) -> list[dict]:
    """Return the records as JSON-ready dicts."""
    return [asdict(r) for r in records]


def format_summary(summary: dict) -> str:
    """Return the summary as a table: a row per condition, accuracy (%) per size bucket."""
    conditions = summary['conditions']
    buckets = list(dict.fromkeys(b for c in conditions.values() for b in c['accuracy_by_size']))
    counts = {b: max(c['count_by_size'].get(b, 0) for c in conditions.values()) for b in buckets}
    header = ['condition', 'all', *(f'{b} px ({counts[b]})' for b in buckets), 'median ms']
    rows = [header]
    for name, figures in conditions.items():
        by_size = figures['accuracy_by_size']
        rows.append([name, f'{figures["accuracy"]:.1f}',
                     *(f'{by_size[b]:.1f}' if b in by_size else '-' for b in buckets),
                     f'{figures["median_latency_ms"]:.0f}'])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ['  '.join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    for name, figures in conditions.items():
        if 'accuracy_by_kind' in figures:
            kinds = ', '.join(f'{k} {v:.1f}' for k, v in figures['accuracy_by_kind'].items())
            lines.append(f'{name.rjust(widths[0])}  by kind: {kinds}')
    return '\n'.join(lines) + f'\nquestions: {summary["questions"]} (VQA accuracy, %)'
