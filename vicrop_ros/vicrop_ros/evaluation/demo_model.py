"""
The demo model: a small LLaVA-1.5 trained from scratch on synthetic scenes, answering for real.

The architecture is the real ``LlavaForConditionalGeneration`` (a CLIP vision tower, LLaVA's
projector, a Llama decoder) at DEMO_SHAPE, with a tokenizer trained in code on the scenes'
questions and answers. Its input is DEMO_INPUT_SIZE pixels square, so a 640x480 frame is seen
4x smaller and a 1280x720 frame 8x smaller: the smallest targets cannot be read in the whole
frame, and can in a crop near native resolution. That is the situation ViCrop is for.

Each training example is one of (see :func:`training_example`): a close-up of the target (most
examples early on: a model from scratch learns to read before it learns to find); the frame
alone; the frame and a crop that holds the target (the two-image prompt ViCrop sends); the frame
and a crop elsewhere; the generic question. Training is seeded: the same seed and steps give
the same weights on the same torch build.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
import json
import math
from pathlib import Path
import time

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.utils import logging as transformers_logging

from ..core.config import VicropConfig
from ..models.base import HfVisionLanguageModel
from ..models.loader import load_model
from ..testing.hub_layout import write_hub_layout
from ..testing.recipes import llava as llava_recipe
from ..testing.text import Tower, VisionTextSize
from .demo_reading import LossLog, pretrain_vision
from .scenes import ANSWERS, FRAME_SIZES, QUESTIONS, TargetKind, random_window, render_scene

DEMO_INPUT_SIZE = 160  # the CLIP input side, pixels
DEMO_PATCH_SIZE = 16  # 10 x 10 patches: 100 image tokens per image
DEMO_SHAPE = VisionTextSize(Tower(128, 4, 4, 512), Tower(256, 4, 4, 768))
GENERIC_ANSWER = 'a room with objects'
# Training targets: the longest side in frame pixels, drawn log-uniformly in this range; during
# the curriculum (TrainSettings.curriculum_steps) the smallest size falls from
# CURRICULUM_START_PX, and close-ups give way to ViCrop's prompts (see training_example).
TRAIN_SIZES_PX = (12, 150)
CURRICULUM_START_PX = 64
CLOSE_UP_SHARE = 0.1  # close-ups after the curriculum
VISION_LR_SCALE = 0.1  # the vision tower's learning rate in the second stage, relative
# How often each other example kind is drawn.
EXAMPLE_MIX = {'frame': 0.35, 'frame_and_target_crop': 0.45, 'frame_and_other_crop': 0.1,
               'generic': 0.1}  # fmt: skip


@dataclass(frozen=True)
class TrainSettings:
    """How the demo model is trained. Defaults: the committed model."""

    vision_steps: int = 1500  # the reading stage (demo_reading), batch vision_batch
    vision_batch: int = 32
    steps: int = 2500  # then the whole model on question and answer pairs
    batch: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    curriculum_steps: int = 600  # steps from close-ups and large targets to the full mix
    seed: int = 0
    threads: int = 2  # torch CPU threads
    save_every: int = 500  # steps between saves of the weights so far (0: at the end only)


def demo_corpus() -> list[str]:
    """Return the texts the demo tokenizer learns from: every prompt and answer it will see."""
    template = HfVisionLanguageModel.question_template  # LLaVA's short-answer format
    questions = list(QUESTIONS.values()) + [VicropConfig().generic_question]
    texts = [f'USER: <image>\n{template.format(question=question)} ASSISTANT: {answer}'
             for question in questions
             for answer in (*ANSWERS[TargetKind.CARD], GENERIC_ANSWER)]  # fmt: skip
    texts += [f' {a}' for kind in TargetKind for a in ANSWERS[kind]]
    return texts + ['{question}', GENERIC_ANSWER]


def build_demo_model(seed: int):
    """Return (model, processor) of the untrained demo model, its weights set by ``seed``."""
    model_class, config, processor = llava_recipe.build_shape(
        DEMO_SHAPE, DEMO_INPUT_SIZE, DEMO_PATCH_SIZE, demo_corpus()
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    tokenizer = processor.tokenizer
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model, processor


def training_example(
    rng: np.random.Generator, progress: float = 1.0
) -> tuple[list[np.ndarray], str, str]:
    """
    Return (images, question, answer) of one training example, ``progress`` into the curriculum.

    The scene: a random kind, frame size and target size (log-uniform from the smallest size to
    TRAIN_SIZES_PX[1]; the smallest falls from CURRICULUM_START_PX to TRAIN_SIZES_PX[0] as
    ``progress`` goes from 0 to 1). The example is a close-up (one image: a square around the
    target, 1.1 to 1.6 times its size at first, to 3 times at the end) with probability
    max(CLOSE_UP_SHARE, 1 - progress), so the model learns to read before it must find (a
    looser close-up from the start does not get it reading); else of a kind drawn by
    EXAMPLE_MIX: the frame alone; the frame and a square crop of side 1 to 2 times
    DEMO_INPUT_SIZE frame pixels (as ViCrop's box search makes them) that holds the whole
    target, or lies anywhere; the generic question about the frame.
    """
    progress = min(max(progress, 0.0), 1.0)
    kind = list(TargetKind)[int(rng.integers(len(TargetKind)))]
    frame_size = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    width, height = frame_size
    smallest = CURRICULUM_START_PX + progress * (TRAIN_SIZES_PX[0] - CURRICULUM_START_PX)
    high = min(TRAIN_SIZES_PX[1], height // 3)
    size = int(round(math.exp(rng.uniform(math.log(smallest), math.log(high)))))
    scene = render_scene(int(rng.integers(2**31)), kind, size, frame_size)
    if rng.random() < max(CLOSE_UP_SHARE, 1.0 - progress):
        side = min(max(size + 2, round(size * rng.uniform(1.1, 1.6 + 1.4 * progress))), height)
        return [random_window(rng, scene, side, holding=True)], scene.question, scene.answer
    kinds = list(EXAMPLE_MIX)
    example = kinds[int(rng.choice(len(kinds), p=list(EXAMPLE_MIX.values())))]
    if example == 'generic':
        return [scene.image], VicropConfig().generic_question, GENERIC_ANSWER
    if example == 'frame':
        return [scene.image], scene.question, scene.answer
    side = min(int(DEMO_INPUT_SIZE * rng.uniform(1.0, 2.0)), height)
    holding = example == 'frame_and_target_crop'
    return [scene.image, random_window(rng, scene, side, holding)], scene.question, scene.answer


def training_batch(adapter, examples, config: VicropConfig) -> dict:
    """
    Return the model inputs of ``examples`` with ``labels``: the answer tokens only.

    Each image goes through the adapter's model view (the square padding the node uses), and
    each prompt is the adapter's own prompt for the question, so training sees what the node
    sends.
    """
    tokenizer = adapter.processor.tokenizer
    images, texts, answer_lengths = [], [], []
    for frames, question, answer in examples:
        images.append([adapter.model_view(frame)[0] for frame in frames])
        prompt = adapter.prompt(adapter.format_question(question, config), len(frames))
        completion = f' {answer}{tokenizer.eos_token}'
        texts.append(prompt + completion)
        answer_lengths.append(len(tokenizer(completion, add_special_tokens=False)['input_ids']))
    inputs = adapter.encode(images, texts)
    labels = torch.full_like(inputs['input_ids'], -100)
    lengths = inputs['attention_mask'].sum(dim=1).tolist()  # right padding: tokens come first
    for row, (length, answer) in enumerate(zip(lengths, answer_lengths, strict=True)):
        tail = slice(length - answer, length)
        labels[row, tail] = inputs['input_ids'][row, tail]
    inputs['labels'] = labels
    return inputs


def train_demo_model(
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    log: Callable[[str], None] = print,
) -> Path:
    """
    Train the demo model from scratch and save it in the llava-hf layout at ``out_dir``.

    First the vision tower alone learns to read (:mod:`.demo_reading`), then the whole model
    learns to answer. Weights are saved in float16 (half the size; the model loads in float32).
    Also written: ``training.json`` (the settings, both stages' loss every 50 steps, the wall
    time). Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model, processor = build_demo_model(settings.seed)
    transformers_logging.disable_progress_bar()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    write_hub_layout(llava_recipe.HUB, out_dir)
    adapter = load_model(str(out_dir), device='cpu')
    adapter.model.requires_grad_(True)
    adapter.model.train()
    config = VicropConfig()
    rng = np.random.default_rng(settings.seed)
    start = time.perf_counter()
    vision_losses = pretrain_vision(
        adapter, settings.vision_steps, settings.vision_batch, settings.learning_rate, rng, log
    )
    # The tower that now reads moves slowly, so the random decoder's first gradients don't undo it.
    tower = list(adapter.model.model.vision_tower.parameters())
    in_tower = {id(p) for p in tower}
    rest = [p for p in adapter.model.parameters() if id(p) not in in_tower]
    optimizer = torch.optim.AdamW(
        [{'params': tower, 'scale': VISION_LR_SCALE}, {'params': rest, 'scale': 1.0}],
        lr=settings.learning_rate,
        weight_decay=0.01,
    )
    losses = LossLog(settings.steps, 'step', log, start)
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group['lr'] = settings.learning_rate * group['scale'] * _schedule(step, settings)
        progress = step / settings.curriculum_steps if settings.curriculum_steps else 1.0
        batch = training_batch(
            adapter, [training_example(rng, progress) for _ in range(settings.batch)], config
        )
        loss = adapter.model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.model.parameters(), 1.0)
        optimizer.step()
        losses.add(step, loss.item())
        if settings.save_every and (step + 1) % settings.save_every == 0:
            adapter.model.save_pretrained(out_dir)  # loadable (float32) while training goes on
    adapter.model.eval()
    adapter.model.to(torch.float16).save_pretrained(out_dir)
    record = {
        'settings': asdict(settings),
        'parameters': sum(p.numel() for p in adapter.model.parameters()),
        'wall_time_s': round(time.perf_counter() - start, 1),
        'torch': torch.__version__,
        'vision_loss': vision_losses,
        'loss': losses.means,
    }
    (out_dir / 'training.json').write_text(json.dumps(record, indent=1) + '\n')
    return out_dir


def _schedule(step: int, settings: TrainSettings) -> float:
    """Return the learning-rate factor at ``step``: a linear warm-up, then a cosine to 10 %."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))
