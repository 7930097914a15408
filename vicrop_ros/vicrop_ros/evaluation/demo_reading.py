"""
The demo model's first stage: teach its vision tower to read the targets, before any text.

A model trained from scratch end to end on question and answer pairs learns the answers' prior
and ignores the image for thousands of steps (seen: chance accuracy after 1600 steps of batch 8).
So the vision tower first learns alone, as LLaVA's own vision tower was pretrained before it
met a language model: a linear head on the mean of the patch features LLaVA feeds its projector
(the layer ``vision_feature_layer``) classifies a target's answer (a digit, a colour, a
direction) from a close-up or a ViCrop-sized crop. The head is thrown away afterwards. A vision
step costs a small part of a full step, so this stage sees many more targets in its minutes.
"""

from collections.abc import Callable
import math
import time

import numpy as np
import torch

from .scenes import ANSWERS, FRAME_SIZES, TargetKind, random_window, render_scene

# Every answer of every target kind: the classes of the reading head.
ANSWER_CLASSES = tuple(answer for kind in TargetKind for answer in ANSWERS[kind])
READING_SIZES_PX = (16, 150)  # targets' longest side, frame pixels (log-uniform)


class LossLog:
    """A training stage's loss: the mean of every 50 steps kept and logged with the time."""

    every = 50

    def __init__(self, steps: int, name: str, log: Callable[[str], None], start: float):
        """Log as ``name`` for a stage of ``steps`` steps; ``start``: perf_counter at its start."""
        self.steps, self.name, self.log, self.start = steps, name, log, start
        self.means: list[dict] = []  # {'step': n, 'loss': mean of the steps since the last}
        self._window: list[float] = []

    def add(self, step: int, loss: float) -> None:
        """Take step ``step``'s (0-based) loss; keep and log the mean every 50 and at the end."""
        self._window.append(loss)
        if (step + 1) % self.every and step + 1 != self.steps:
            return
        self.means.append(
            {'step': step + 1, 'loss': round(sum(self._window) / len(self._window), 4)}
        )
        self._window = []
        self.log(f'{self.name} {step + 1}/{self.steps}: loss {self.means[-1]["loss"]:.3f}, '
                 f'{time.perf_counter() - self.start:.0f} s')  # fmt: skip


def reading_example(rng: np.random.Generator, input_size: int) -> tuple[np.ndarray, int]:
    """
    Return (image, class index) of one reading example: a square crop holding a target.

    Half are close-ups (1.1 to 3 times the target's size), half ViCrop-sized windows (1 to 2
    times ``input_size`` frame pixels), so the tower reads targets at the sizes a crop shows.
    """
    kind = list(TargetKind)[int(rng.integers(len(TargetKind)))]
    frame_size = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    low, high = READING_SIZES_PX[0], min(READING_SIZES_PX[1], frame_size[1] // 3)
    size = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    scene = render_scene(int(rng.integers(2**31)), kind, size, frame_size)
    if rng.random() < 0.5:
        side = round(size * rng.uniform(1.1, 3.0))
    else:
        side = round(input_size * rng.uniform(1.0, 2.0))
    side = min(max(side, size + 2), frame_size[1])
    return random_window(rng, scene, side, True), ANSWER_CLASSES.index(scene.answer)


def pretrain_vision(
    adapter,
    steps: int,
    batch: int,
    learning_rate: float,
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> list[dict]:
    """
    Train ``adapter``'s vision tower to read targets; return the loss every 50 steps.

    The tower's features are those LLaVA projects (``vision_feature_layer``, CLS dropped); the
    head is a fresh linear layer, dropped after. Linear warm-up over 50 steps, then constant.
    """
    tower = adapter.model.model.vision_tower
    layer = adapter.model.config.vision_feature_layer
    head = torch.nn.Linear(tower.config.hidden_size, len(ANSWER_CLASSES))
    parameters = list(tower.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    image_processor = adapter.processor.image_processor
    losses = LossLog(steps, 'vision step', log, time.perf_counter())
    for step in range(steps):
        for group in optimizer.param_groups:
            group['lr'] = learning_rate * min(1.0, (step + 1) / 50)
        examples = [reading_example(rng, adapter.input_size) for _ in range(batch)]
        pixels = image_processor(
            [adapter.model_view(image)[0] for image, _ in examples], return_tensors='pt'
        )['pixel_values']
        labels = torch.tensor([label for _, label in examples])
        features = tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:]
        loss = torch.nn.functional.cross_entropy(head(features.mean(dim=1)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        losses.add(step, loss.item())
    return losses.means
