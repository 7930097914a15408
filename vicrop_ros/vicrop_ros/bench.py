"""
``vicrop bench``: ViCrop timed side by side with plain answers and the reference-style pipeline.

For each method it measures, on the same images and question, medians over repeats:

* ``plain_one_image``: one answer from the full image (no map, no crop);
* ``plain_two_image``: the final two-image answer (image + crop) computed from scratch;
* ``vicrop``: the whole ViCrop answer with its stages (prepare, saliency, crop, answer);
* ``reference``: the reference code's way (all-layer eager attention, question and generic
  question as two separate passes with autograd on, a baseline answer, then the two-image
  answer), shared by the methods.

Ratios: ``overhead_ratio`` = (saliency + crop) / (prepare + answer): what the map and box add to
the final answer's own work (the shared prefix is work the answer needs anyway);
``overhead_vs_plain_two_image`` = (vicrop total - plain two-image) / plain two-image;
``speedup_vs_reference`` = reference / vicrop total. No ROS imports: runs on any machine with
torch and transformers.
"""

from dataclasses import dataclass
import statistics
import time

import numpy as np
import torch

from .core import Box, SaliencyMap, Vicrop, VicropConfig, crop, project_to_image, select_box
from .core.geometry import image_size
from .core.saliency import safe_ratio
from .models.base import HfVisionLanguageModel
from .models.loader import locate

QUESTION = 'What does the small label on the bottle say?'
# Questions a planner asks together about one scene (``--batch``): QUESTION first.
BATCH_QUESTIONS = (
    QUESTION,
    'Which colour is the cap of the small bottle?',
    'How many screws hold the cover plate?',
    'Is the valve handle open or closed?',
    'What number does the dial show?',
    'Which way does the arrow on the box point?',
    'Is the cable plugged into the socket?',
    'What is written on the warning sign?',
)


def timed(device: torch.device, function, *args, **kwargs) -> tuple[float, object]:
    """
    Call ``function(*args, **kwargs)``; return (milliseconds it took on ``device``, its result).

    On CUDA, queued work is waited for before and after (kernels run asynchronously).
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function(*args, **kwargs)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000.0, result


def reference_answer(eager: HfVisionLanguageModel, image: np.ndarray, question: str,
                     config: VicropConfig) -> tuple[str, Box]:  # fmt: skip
    """
    Answer the way the reference code does (rel-att); return (answer, box in image px).

    ``eager``: the model loaded with eager attention and trainable parameters
    (:func:`load_eager_twin`), as the reference loads it. Two separate full passes (question,
    generic question) return every layer's attention with autograd recording the graph over
    the parameters (the reference never disables it); the map comes from one layer, then the
    box, a baseline answer without the crop, and the two-image answer.
    """
    view, extent = eager.model_view(image)
    layer = eager.attention_layer(config)
    maps = []
    for text in (question, config.generic_question):
        prompt = eager.prompt(eager.format_question(text, config), 1)
        inputs = eager.encode([[view]], [prompt])
        with torch.enable_grad():
            output = eager.model(**inputs, output_attentions=True)
        attention = output.attentions[layer][0, :, -1].detach()  # (heads, keys)
        positions = inputs['input_ids'][0] == eager.image_token_id
        per_token = attention[:, positions].float().mean(0)  # (image tokens,)
        maps.append(eager.token_grid(per_token, inputs, 0, inputs['input_ids'][0]))
        del output
    ratio = safe_ratio(maps[0], maps[1], config.epsilon).cpu().numpy()
    grid = project_to_image([SaliencyMap(ratio, extent)], image_size(image))
    box = select_box(grid, image_size(image), eager.input_size)
    eager.generate_answer([view], question, config)  # the reference's baseline answer
    crop_view = eager.model_view(crop(image, box))[0]
    return eager.generate_answer([view, crop_view], question, config), box


@dataclass
class Timing:
    """Repeated measurements of one quantity, in milliseconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        """Return the median."""
        return statistics.median(self.samples)


def bench_images(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Synthetic camera-like frames: a plain scene with a small bright label at varying places."""
    rng = np.random.default_rng(0)
    width, height = size
    images = []
    for _ in range(count):
        image = np.full((height, width, 3), rng.integers(60, 160, 3), np.uint8)
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 20))
        image[Box(x, y, x + 40, y + 20).slices()] = 235
        image[Box(x + 5, y + 8, x + 35, y + 12).slices()] = 20
        images.append(image)
    return images


def run_bench(model: HfVisionLanguageModel, eager: HfVisionLanguageModel | None,
              methods: list[str], images: list[np.ndarray], repeats: int, warmup: int,
              max_new_tokens: int) -> dict:  # fmt: skip
    """
    Measure every method (and the reference when ``eager`` is given); return the figures.

    Each round runs the reference and then every method on the same image, back to back, so
    that a machine whose speed drifts during the run slows both sides of each ratio alike.
    """
    device = model.device
    config = VicropConfig(max_new_tokens=max_new_tokens)
    vicrop = Vicrop(model, config)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    stage_names = ('prepare', 'saliency', 'crop', 'answer', 'total')
    reference = Timing([])
    stages = {m: {stage: Timing([]) for stage in stage_names} for m in methods}
    plain_one = {m: Timing([]) for m in methods}
    plain_two = {m: Timing([]) for m in methods}
    for index in range(warmup + repeats):
        image, measured = images[index % len(images)], index >= warmup
        if eager is not None:
            ms, _ = timed(device, reference_answer, eager, image, QUESTION, config)
            if measured:
                reference.samples.append(ms)
        for method in methods:
            result = vicrop(image, QUESTION, method=method)
            view = model.model_view(image)[0]
            views = [view]
            if result.box is not None:
                views.append(model.model_view(crop(image, result.box))[0])
            one, _ = timed(device, model.generate_answer, [view], QUESTION, config)
            two, _ = timed(device, model.generate_answer, views, QUESTION, config)
            if not measured:
                continue
            for stage, timing in stages[method].items():
                timing.samples.append(result.timings_ms[stage])
            plain_one[method].samples.append(one)
            plain_two[method].samples.append(two)
    figures = {}
    for method in methods:
        medians = {f'{stage}_ms': round(t.median, 2) for stage, t in stages[method].items()}
        answer_work = medians['prepare_ms'] + medians['answer_ms']
        plain = plain_two[method].median
        entry = medians | {
            'plain_one_image_ms': round(plain_one[method].median, 2),
            'plain_two_image_ms': round(plain, 2),
            'overhead_ratio': round(
                (medians['saliency_ms'] + medians['crop_ms']) / answer_work, 4),
            'overhead_vs_plain_two_image': round((medians['total_ms'] - plain) / plain, 4),
        }  # fmt: skip
        if reference.samples:
            entry['reference_ms'] = round(reference.median, 2)
            entry['speedup_vs_reference'] = round(reference.median / medians['total_ms'], 3)
        figures[method] = entry
    peak = {}
    if device.type == 'cuda':
        peak['cuda_peak_mb'] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return {'methods': figures, **peak}


def run_batch_bench(
    model: HfVisionLanguageModel,
    methods: list[str],
    images: list[np.ndarray],
    batch: int,
    repeats: int,
    warmup: int,
    max_new_tokens: int,
) -> dict:
    """
    Time ``batch`` questions about one frame three ways; return the medians (ms) and ratios.

    ``one``: the first question alone on a fresh frame; ``one_by_one``: all of them in turn,
    the frame's preparation reused (``reuse_frames``, a node with ``max_batch`` 1);
    ``batched``: all of them as one :meth:`Vicrop.answer_batch` (a node with ``max_batch`` >=
    ``batch``). Each round runs the three back to back on the same image.
    """
    if not 1 <= batch <= len(BATCH_QUESTIONS):
        raise ValueError(f'--batch must be 1 to {len(BATCH_QUESTIONS)}, got {batch}')
    device = model.device
    config = VicropConfig(max_new_tokens=max_new_tokens)
    questions = list(BATCH_QUESTIONS[:batch])
    figures = {}
    for method in methods:
        timings = {name: Timing([]) for name in ('one', 'one_by_one', 'batched')}
        for index in range(warmup + repeats):
            image = images[index % len(images)]
            one, _ = timed(device, Vicrop(model, config), image, QUESTION, method=method)
            in_turn, _ = timed(device, _in_turn, Vicrop(model, config, reuse_frames=1), image,
                               questions, method)  # fmt: skip
            together, outcomes = timed(device, Vicrop(model, config).answer_batch, image,
                                       questions, method=method)  # fmt: skip
            failed = [o for o in outcomes if isinstance(o, Exception)]
            if failed:
                raise RuntimeError(f'a batched question failed: {failed[0]}')
            if index >= warmup:
                for name, ms in (('one', one), ('one_by_one', in_turn), ('batched', together)):
                    timings[name].samples.append(ms)
        medians = {f'{name}_ms': round(t.median, 1) for name, t in timings.items()}
        figures[method] = medians | {
            'batched_vs_one': round(medians['batched_ms'] / medians['one_ms'], 3),
            'one_by_one_vs_one': round(medians['one_by_one_ms'] / medians['one_ms'], 3),
        }
    return {'batch': batch, 'methods': figures}


def _in_turn(vicrop: Vicrop, image: np.ndarray, questions: list[str], method: str) -> list:
    """Answer ``questions`` about ``image`` one after another; return the results."""
    return [vicrop(image, question, method=method) for question in questions]


def format_batch_table(figures: dict) -> str:
    """Return the ``--batch`` figures as a fixed-width table."""
    n = figures['batch']
    lines = [f'method     {"one":>10}{f"{n} in turn":>12}{f"{n} batched":>12}'
             f'{"turn/one":>10}{"batch/one":>10}']  # fmt: skip
    for method, entry in figures['methods'].items():
        lines.append(f'{method:<11}{entry["one_ms"]:>10.0f}{entry["one_by_one_ms"]:>12.0f}'
                     f'{entry["batched_ms"]:>12.0f}{entry["one_by_one_vs_one"]:>10.2f}'
                     f'{entry["batched_vs_one"]:>10.2f}')  # fmt: skip
    return '\n'.join(lines)


def format_table(figures: dict) -> str:
    """Return the figures as a fixed-width table."""
    columns = ('prepare_ms', 'saliency_ms', 'crop_ms', 'answer_ms', 'total_ms',
               'plain_two_image_ms', 'reference_ms', 'overhead_ratio',
               'overhead_vs_plain_two_image', 'speedup_vs_reference')  # fmt: skip
    short = ('prepare', 'saliency', 'crop', 'answer', 'total', 'plain 2-img', 'reference',
             'overhead', 'vs plain', 'speedup')  # fmt: skip
    lines = ['method     ' + ''.join(f'{name:>12}' for name in short)]
    for method, entry in figures['methods'].items():
        cells = ''.join(f'{entry.get(c, float("nan")):>12.4g}' for c in columns)
        lines.append(f'{method:<11}{cells}')
    return '\n'.join(lines)


def load_eager_twin(model: HfVisionLanguageModel) -> HfVisionLanguageModel:
    """
    Load ``model``'s checkpoint again the reference's way: eager attention everywhere.

    The parameters stay trainable, as ``from_pretrained`` leaves them and the reference keeps
    them, so its attention passes record the autograd graph over the whole model.
    """
    source, offline = locate(model.name)
    eager = (
        model.transformers_class()
        .from_pretrained(
            source, attn_implementation='eager', dtype=model.model.dtype, local_files_only=offline
        )
        .to(model.device)
    )
    twin = type(model)(model.name, eager, model.processor)
    twin.model.requires_grad_(True)
    return twin
