"""
The demo model: a small LLaVA-1.5 trained from scratch on synthetic scenes, answering for real.

The architecture is the real ``LlavaForConditionalGeneration`` (a CLIP vision tower, LLaVA's
projector, a Llama decoder) at DEMO_SHAPE, with a tokenizer trained in code on the scenes'
questions and answers. Its input is DEMO_INPUT_SIZE pixels square, so a 640x480 frame is seen
3.3x smaller and a 1280x720 frame 6.7x smaller: the smallest targets cannot be read in the whole
frame, and can in a crop near native resolution. That is the situation ViCrop is for.

Each training example is one of (see :func:`training_example`): a close-up of the target (most
examples early on: a model from scratch learns to read before it learns to find); the frame
alone, or the tile of a large frame that holds the target; the frame and a crop that holds the
target (the two-image prompt ViCrop sends); the frame and a crop elsewhere; the generic question
(answered with the room's description). A grounding loss (:func:`grounding_loss`) teaches one
decoder layer to look at the target when asked about it, and away from it when asked the
generic question: the layer the model's maps are read from. Training is seeded: the same seed
and steps give the same weights on the same torch build.
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
import json
import math
from pathlib import Path
import time

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.utils import logging as transformers_logging

from ..core.box import Box
from ..core.config import VicropConfig
from ..models.attention import AttentionProbe, probing
from ..models.base import CHECKPOINT_LAYER_KEY, HfVisionLanguageModel
from ..models.loader import load_model
from ..testing.hub_layout import write_hub_layout
from ..testing.recipes import llava as llava_recipe
from ..testing.text import Tower, VisionTextSize
from .demo_reading import LossLog, pretrain_vision, reading_view, target_patches
from .scenes import (
    ANSWERS,
    FLOORS,
    FRAME_SIZES,
    QUESTIONS,
    WALLS,
    TargetKind,
    random_window,
    render_scene,
)

DEMO_INPUT_SIZE = 192  # the CLIP input side, pixels
DEMO_PATCH_SIZE = 12  # 16 x 16 patches: 256 image tokens per image
DEMO_SHAPE = VisionTextSize(Tower(128, 4, 4, 512), Tower(256, 4, 4, 768))
# The generic question's answer is the scene's description: the room's wall and floor.
GENERIC_ANSWERS = tuple(f'a {wall} wall and a {floor} floor' for wall in WALLS for floor in FLOORS)
# Training targets: the longest side in frame pixels, drawn log-uniformly in this range; during
# the curriculum (TrainSettings.curriculum_steps) the smallest size falls from
# CURRICULUM_START_PX, and close-ups give way to ViCrop's prompts (see training_example).
TRAIN_SIZES_PX = (12, 150)
CURRICULUM_START_PX = 64
CLOSE_UP_SHARE = 0.1  # close-ups after the curriculum
VISION_LR_SCALE = 0.1  # the vision tower's learning rate in the second stage, relative
# How often each other example kind is drawn.
EXAMPLE_MIX = {'frame': 0.25, 'tile': 0.1, 'frame_and_target_crop': 0.35,
               'frame_and_other_crop': 0.2, 'generic': 0.1}  # fmt: skip


@dataclass(frozen=True)
class TrainSettings:
    """How the demo model is trained. Defaults: the committed model."""

    vision_steps: int = 2000  # the reading stage (demo_reading), batch vision_batch
    vision_batch: int = 32
    steps: int = 2500  # then the whole model on question and answer pairs
    batch: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    curriculum_steps: int = 600  # steps from close-ups and large targets to the full mix
    seed: int = 0
    threads: int = 2  # torch CPU threads
    save_every: int = 500  # steps between saves of the weights so far (0: at the end only)
    # The grounding loss's weight (0: none) and its decoder layer, which becomes the model's
    # attention layer (vicrop_attention_layer): see grounding_loss.
    grounding: float = 1.0
    grounding_layer: int = 2


def demo_corpus() -> list[str]:
    """Return the texts the demo tokenizer learns from: every prompt and answer it will see."""
    template = HfVisionLanguageModel.question_template  # LLaVA's short-answer format
    questions = list(QUESTIONS.values()) + [VicropConfig().generic_question]
    texts = [f'USER: <image>\n{template.format(question=question)} ASSISTANT: {answer}'
             for question in questions
             for answer in (*ANSWERS[TargetKind.CARD], *GENERIC_ANSWERS)]  # fmt: skip
    texts += [f' {a}' for kind in TargetKind for a in ANSWERS[kind]]
    return texts + list(GENERIC_ANSWERS)


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


@dataclass(frozen=True)
class TrainingExample:
    """One prompt and its answer, and where the target is in its first image."""

    images: list[np.ndarray]  # HWC uint8 RGB, in prompt order
    question: str
    answer: str
    box: Box | None = None  # the target, pixels of images[0] (None: not known)
    about_target: bool = True  # the question asks about the target (False: the generic one)


def training_example(rng: np.random.Generator, progress: float = 1.0) -> TrainingExample:
    """
    Return one training example, ``progress`` into the curriculum.

    The scene: a random kind, frame size and target size (log-uniform from the smallest size to
    TRAIN_SIZES_PX[1]; the smallest falls from CURRICULUM_START_PX to TRAIN_SIZES_PX[0] as
    ``progress`` goes from 0 to 1). The example is a close-up (one image: a square around the
    target, 1.1 to 1.6 times its size at first, to 3 times at the end) with probability
    max(CLOSE_UP_SHARE, 1 - progress), so the model learns to read before it must find (a
    looser close-up from the start does not get it reading); else of a kind drawn by
    EXAMPLE_MIX: the frame alone; the tile of a large frame that holds the target (the view a
    saliency pass of such a frame sees; the frame itself when it is not tiled); the frame and a
    square crop of side 1 to 2 times DEMO_INPUT_SIZE frame pixels (as ViCrop's box search makes
    them) that holds the whole target, or lies anywhere; the generic question about the frame.
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
        image, box = reading_view(rng, scene, 'close_up', DEMO_INPUT_SIZE)
        return TrainingExample([image], scene.question, scene.answer, box)
    kinds = list(EXAMPLE_MIX)
    example = kinds[int(rng.choice(len(kinds), p=list(EXAMPLE_MIX.values())))]
    if example == 'generic':
        generic = VicropConfig().generic_question
        return TrainingExample([scene.image], generic, scene.description, scene.box, False)
    if example in ('frame', 'tile'):
        image, box = reading_view(rng, scene, example, DEMO_INPUT_SIZE)
        return TrainingExample([image], scene.question, scene.answer, box)
    side = min(int(DEMO_INPUT_SIZE * rng.uniform(1.0, 2.0)), height)
    holding = example == 'frame_and_target_crop'
    images = [scene.image, random_window(rng, scene, side, holding)]
    return TrainingExample(images, scene.question, scene.answer, scene.box)


@dataclass
class TrainingBatch:
    """The model inputs of a batch of examples, and where each prompt's target is."""

    inputs: dict  # the processor's batch with ``labels`` (the answer tokens only)
    last_prompt: torch.Tensor  # (batch,) the position of each prompt's last token
    first_image: torch.Tensor  # (batch, tokens) bool: the first image's tokens
    target: torch.Tensor  # (batch, tokens) bool: those of them on the target (none: no box)
    one_image: torch.Tensor  # (batch,) bool: the prompt shows one image
    about_target: torch.Tensor  # (batch,) bool: the question asks about the target


def training_batch(adapter, examples: Sequence[TrainingExample], config: VicropConfig):
    """
    Return the TrainingBatch of ``examples``.

    Each image goes through the adapter's model view (the square padding the node uses), and
    each prompt is the adapter's own prompt for the question, so training sees what the node
    sends. The target's tokens are the first image's patches that hold its box
    (:func:`~.demo_reading.target_patches`).
    """
    tokenizer = adapter.processor.tokenizer
    grid = adapter.input_size // adapter.patch_size
    images, texts, answer_lengths, held = [], [], [], []
    for example in examples:
        views = [adapter.model_view(image) for image in example.images]
        images.append([view for view, _ in views])
        prompt = adapter.prompt(adapter.format_question(example.question, config), len(views))
        completion = f' {example.answer}{tokenizer.eos_token}'
        texts.append(prompt + completion)
        answer_lengths.append(len(tokenizer(completion, add_special_tokens=False)['input_ids']))
        no_box = np.zeros((grid, grid), bool)
        box = example.box
        held.append(no_box if box is None else target_patches(box, views[0][1], grid))
    inputs = adapter.encode(images, texts)
    ids = inputs['input_ids']
    labels = torch.full_like(ids, -100)
    lengths = inputs['attention_mask'].sum(dim=1).tolist()  # right padding: tokens come first
    for row, (length, answer) in enumerate(zip(lengths, answer_lengths, strict=True)):
        tail = slice(length - answer, length)
        labels[row, tail] = ids[row, tail]
    inputs['labels'] = labels
    image = ids == adapter.image_token_id
    first_image = image & (image.cumsum(dim=1) <= grid * grid)  # (batch, tokens)
    target = torch.zeros_like(first_image)
    target[first_image] = torch.from_numpy(np.stack(held).reshape(-1))
    last_prompt = torch.tensor(lengths) - torch.tensor(answer_lengths) - 1
    one_image = image.sum(dim=1) == grid * grid
    about = torch.tensor([example.about_target for example in examples])
    return TrainingBatch(inputs, last_prompt, first_image, target, one_image, about)


def grounding_loss(weights: torch.Tensor, batch: TrainingBatch) -> torch.Tensor:
    """
    Return how far the prompts' attention is from where it belongs: -log of a share, mean.

    ``weights``: (batch, heads, tokens), the last prompt position's attention at the grounded
    layer; the share is taken of the head mean's mass on the first image. A question about the
    target should look at it (share: on the target's tokens); the generic question, a general
    description of the room, should not (share: off them). Only one-image prompts with a known
    target count: the prompts a map is read from.
    """
    attention = weights.mean(dim=1)  # (batch, tokens)
    on_image = (attention * batch.first_image).sum(dim=1).clamp(min=1e-12)
    on_target = (attention * batch.target).sum(dim=1) / on_image
    share = torch.where(batch.about_target, on_target, 1.0 - on_target)
    taught = batch.target.any(dim=1) & batch.one_image
    if not taught.any():
        return attention.sum() * 0.0
    return -(share[taught] + 1e-6).log().mean()


# The settings the reading stage depends on: a cached stage must have been made with them.
READING_SETTINGS = ('vision_steps', 'vision_batch', 'learning_rate', 'seed')


def reading_stage(adapter, settings: TrainSettings, rng: np.random.Generator, log,
                  cache: Path | None = None) -> list[dict]:  # fmt: skip
    """
    Run the reading stage (:func:`~.demo_reading.pretrain_vision`); return its losses.

    With ``cache``: a file written by an earlier run with the same reading settings (and
    input) is taken instead (the tower's weights, and ``rng``'s and torch's states after the
    stage, so the answering stage goes on exactly as after a run); a missing file is written.
    For trying answering stages without redoing the reading one. Raises ValueError for a cache
    of other settings.
    """
    tower = adapter.model.model.vision_tower
    key = {name: getattr(settings, name) for name in READING_SETTINGS}
    key |= {'input_size': adapter.input_size, 'patch_size': adapter.patch_size}
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=True)
        if saved['settings'] != key:
            raise ValueError(f'{cache} holds a reading stage of {saved["settings"]}, not {key}')
        tower.load_state_dict(saved['tower'])
        rng.bit_generator.state = saved['rng']
        torch.set_rng_state(saved['torch_rng'])
        log(f'reading stage taken from {cache}')
        return saved['vision_loss']
    losses = pretrain_vision(
        adapter, settings.vision_steps, settings.vision_batch, settings.learning_rate, rng, log
    )
    if cache is not None:
        torch.save({'settings': key, 'tower': tower.state_dict(), 'rng': rng.bit_generator.state,
                    'torch_rng': torch.get_rng_state(), 'vision_loss': losses}, cache)  # fmt: skip
    return losses


def train_demo_model(
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    log: Callable[[str], None] = print,
    reading_cache: str | Path | None = None,
) -> Path:
    """
    Train the demo model from scratch and save it in the llava-hf layout at ``out_dir``.

    First the vision tower alone learns to read (:mod:`.demo_reading`), then the whole model
    learns to answer. Weights are saved in float16 (half the size; the model loads in float32).
    Also written: ``training.json`` (the settings, both stages' loss every 50 steps, the wall
    time). ``reading_cache``: see :func:`reading_stage`. Returns ``out_dir``.
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
    cache = None if reading_cache is None else Path(reading_cache)
    cached = cache is not None and cache.is_file()
    vision_losses = reading_stage(adapter, settings, rng, log, cache)
    reading_s = time.perf_counter() - start
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
    grounded = adapter.decoder_layers[settings.grounding_layer].self_attn
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group['lr'] = settings.learning_rate * group['scale'] * _schedule(step, settings)
        progress = step / settings.curriculum_steps if settings.curriculum_steps else 1.0
        batch = training_batch(
            adapter, [training_example(rng, progress) for _ in range(settings.batch)], config
        )
        with probing(AttentionProbe(grounded, batch.last_prompt)) as probe:
            loss = adapter.model(**batch.inputs).loss
        if settings.grounding:
            loss = loss + settings.grounding * grounding_loss(probe.weights, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapter.model.parameters(), 1.0)
        optimizer.step()
        losses.add(step, loss.item())
        if settings.save_every and (step + 1) % settings.save_every == 0:
            adapter.model.save_pretrained(out_dir)  # loadable (float32) while training goes on
    adapter.model.eval()
    setattr(adapter.model.config, CHECKPOINT_LAYER_KEY, settings.grounding_layer)
    adapter.model.to(torch.float16).save_pretrained(out_dir)
    record = {
        'settings': asdict(settings),
        'parameters': sum(p.numel() for p in adapter.model.parameters()),
        'wall_time_s': round(time.perf_counter() - start, 1),
        'reading_stage': {'from_cache': cached, 'wall_time_s': round(reading_s, 1)},
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
