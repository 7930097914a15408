"""
The demo model's first stage: teach its vision tower to find and read the targets, per patch.

A model trained from scratch end to end on question and answer pairs learns the answers' prior
and ignores the image for thousands of steps (seen: chance accuracy after 1600 steps of batch 8).
So the vision tower first learns alone, as LLaVA's own vision tower was pretrained before it
met a language model. Two linear heads read each patch feature LLaVA feeds its projector (the
layer ``vision_feature_layer``): what is under the patch (background or a target kind) and,
under a target, its answer (a digit, a colour, a direction). Per patch, not pooled: a pooled
head lets the tower spread what it read over every token, and then the language model never
needs to look at the target. The heads are thrown away afterwards.

The views are those the node shows the model: whole frames (the final answer's first image),
the tiles of a large frame (its saliency passes), ViCrop-sized windows holding the target (the
crop) and close-ups.
"""

from collections.abc import Callable
import math
import time

import numpy as np
import torch

from ..core.box import Box
from ..core.config import VicropConfig
from ..core.geometry import Extent, crop, tile_boxes
from .scenes import ANSWERS, FRAME_SIZES, Scene, TargetKind, render_scene, window_box

# Every answer of every target kind: the classes of the answer head.
ANSWER_CLASSES = tuple(answer for kind in TargetKind for answer in ANSWERS[kind])
BACKGROUND = 0  # the kind head's class for a patch without a target; kind i is class i + 1
READING_SIZES_PX = (10, 150)  # targets' longest side, frame pixels (log-uniform)
# How often each view is drawn: the frame, a tile of it (a frame wider than TILE_THRESHOLD is
# mapped per tile), a ViCrop window of 1 to 2 input sides holding the target, a close-up.
READING_VIEWS = {'frame': 0.3, 'tile': 0.2, 'window': 0.3, 'close_up': 0.2}
TILE_THRESHOLD = VicropConfig().tile_threshold  # the engine's default
TARGET_SHARE = 0.25  # a patch is the target's when they overlap by this share of the smaller


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


def target_patches(box: Box, extent: Extent, grid: int) -> np.ndarray:
    """
    Return (grid, grid) bool: the patches of a square model input that hold ``box``.

    ``extent``: the rectangle of the view's source that the input shows (pixels, as
    ``model_view`` returns it); ``box`` in the same pixels. A patch holds the box when they
    overlap by TARGET_SHARE of the smaller of the two; a box smaller than that everywhere
    gets the patch under its centre.
    """
    x0, y0, x1, y1 = extent
    cell_w, cell_h = (x1 - x0) / grid, (y1 - y0) / grid
    lows_x, lows_y = x0 + cell_w * np.arange(grid), y0 + cell_h * np.arange(grid)  # (grid,)
    overlap_x = (np.minimum(box.x1, lows_x + cell_w) - np.maximum(box.x0, lows_x)).clip(0)
    overlap_y = (np.minimum(box.y1, lows_y + cell_h) - np.maximum(box.y0, lows_y)).clip(0)
    overlap = overlap_y[:, None] * overlap_x[None, :]  # (rows, cols)
    held = overlap >= TARGET_SHARE * min(box.area, cell_w * cell_h)
    if not held.any():
        col = int(np.clip(((box.x0 + box.x1) / 2 - x0) // cell_w, 0, grid - 1))
        row = int(np.clip(((box.y0 + box.y1) / 2 - y0) // cell_h, 0, grid - 1))
        held[row, col] = True
    return held


def reading_view(rng: np.random.Generator, scene: Scene, view: str, input_size: int):
    """
    Return (image, box): ``view`` of ``scene`` and the target's box in that image's pixels.

    ``view``: a READING_VIEWS name. Tiles and windows hold the whole target, or as much of it
    as the tile the target's centre lies in.
    """
    height, width = scene.image.shape[:2]
    box = scene.box
    if view == 'frame':
        return scene.image, box
    if view == 'tile':
        centre_x, centre_y = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        tile = next(t for t in tile_boxes((width, height), TILE_THRESHOLD)
                    if t.contains(centre_x, centre_y))  # fmt: skip
        inside = Box(max(box.x0, tile.x0), max(box.y0, tile.y0),
                     min(box.x1, tile.x1), min(box.y1, tile.y1))  # fmt: skip
        return crop(scene.image, tile), inside.shifted(-tile.x0, -tile.y0)
    size = max(box.width, box.height)
    if view == 'window':
        side = round(input_size * rng.uniform(1.0, 2.0))
    else:
        side = round(size * rng.uniform(1.1, 3.0))
    side = min(max(side, size + 2), height)
    window = window_box(rng, scene, side, holding=True)
    return crop(scene.image, window), box.shifted(-window.x0, -window.y0)


def reading_example(
    rng: np.random.Generator, model_view: Callable, input_size: int, grid: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """
    Return (model input, target patches, kind class, answer class) of one reading example.

    ``model_view``: the adapter's (image -> (square input, extent)); target patches: (grid,
    grid) bool (:func:`target_patches`); kind class: 1 + the kind's index (BACKGROUND is 0);
    answer class: the index in ANSWER_CLASSES. The scene's kind, frame size and target size
    (log-uniform in READING_SIZES_PX) and the view come from ``rng``.
    """
    kind = list(TargetKind)[int(rng.integers(len(TargetKind)))]
    frame_size = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    low, high = READING_SIZES_PX[0], min(READING_SIZES_PX[1], frame_size[1] // 3)
    size = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
    scene = render_scene(int(rng.integers(2**31)), kind, size, frame_size)
    names = list(READING_VIEWS)
    view = names[int(rng.choice(len(names), p=list(READING_VIEWS.values())))]
    image, box = reading_view(rng, scene, view, input_size)
    square, extent = model_view(image)
    held = target_patches(box, extent, grid)
    kind_class = 1 + list(TargetKind).index(kind)
    return square, held, kind_class, ANSWER_CLASSES.index(scene.answer)


def pretrain_vision(
    adapter,
    steps: int,
    batch: int,
    learning_rate: float,
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> list[dict]:
    """
    Train ``adapter``'s vision tower to find and read targets per patch; return the losses.

    The features are those LLaVA projects (``vision_feature_layer``, CLS dropped). Loss: the
    kind head's cross-entropy, averaged over the background patches and over the target's
    patches separately (a target holds a few of the 256 patches), plus the answer head's over the
    target's patches. Linear warm-up over 50 steps, then constant. Returns the mean loss of
    every 50 steps.
    """
    tower = adapter.model.model.vision_tower
    layer = adapter.model.config.vision_feature_layer
    grid = adapter.input_size // adapter.patch_size
    hidden = tower.config.hidden_size
    kind_head = torch.nn.Linear(hidden, 1 + len(TargetKind))
    answer_head = torch.nn.Linear(hidden, len(ANSWER_CLASSES))
    parameters = [*tower.parameters(), *kind_head.parameters(), *answer_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.01)
    image_processor = adapter.processor.image_processor
    losses = LossLog(steps, 'vision step', log, time.perf_counter())
    for step in range(steps):
        for group in optimizer.param_groups:
            group['lr'] = learning_rate * min(1.0, (step + 1) / 50)
        examples = [
            reading_example(rng, adapter.model_view, adapter.input_size, grid)
            for _ in range(batch)
        ]
        images, patches, kind_classes, answer_classes = zip(*examples, strict=True)
        pixels = image_processor(list(images), return_tensors='pt')['pixel_values']
        features = tower(pixels, output_hidden_states=True).hidden_states[layer]
        features = features[:, 1:]  # (batch, patches, hidden)
        held = torch.tensor(np.stack([p.reshape(-1) for p in patches]))  # (batch, patches)
        answers = torch.tensor(answer_classes)[:, None].expand_as(held)
        kinds = torch.where(held, torch.tensor(kind_classes)[:, None], BACKGROUND)
        kind_loss = torch.nn.functional.cross_entropy(
            kind_head(features).flatten(0, 1), kinds.flatten(), reduction='none'
        ).view_as(held)
        answer_loss = torch.nn.functional.cross_entropy(answer_head(features[held]), answers[held])
        loss = kind_loss[~held].mean() + kind_loss[held].mean() + answer_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        losses.add(step, loss.item())
    return losses.means
