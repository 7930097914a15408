"""
Synthetic robot scenes with one small target and a one-word question about it.

A frame (640x480 or 1280x720, RGB) holds a shaded background, clutter that is none of the
target kinds (triangles, discs, bars, strokes) and one target of a chosen size: a white card
with a digit, a coloured cube, or a dial whose needle points up, right, down or left. Sizes run
from unreadable at a model's input resolution to easy, so that the same target can be read in a
crop and not in the whole frame: the situation ViCrop is for. Every scene is a pure function of
its seed.
"""

from dataclasses import dataclass
import enum
import math

import cv2
import numpy as np

from ..core.box import Box
from ..core.geometry import crop


class TargetKind(enum.Enum):
    """What the small target is, and so what is asked about it."""

    CARD = 'card'
    CUBE = 'cube'
    DIAL = 'dial'


QUESTIONS = {
    TargetKind.CARD: 'What digit is on the small card?',
    TargetKind.CUBE: 'What colour is the cube?',
    TargetKind.DIAL: 'Which way does the needle of the dial point?',
}
DIGITS = tuple('0123456789')
COLOURS = {  # name -> RGB
    'red': (215, 35, 35),
    'green': (40, 165, 60),
    'blue': (40, 80, 215),
    'yellow': (235, 205, 35),
    'purple': (135, 55, 165),
    'orange': (240, 135, 25),
}
# Wall and floor tones (RGB), each drawn with a small random shift per channel.
WALLS = {'grey': (150, 150, 150), 'beige': (190, 172, 138), 'blue': (108, 128, 170),
         'green': (118, 152, 112)}  # fmt: skip
FLOORS = {'grey': (118, 118, 118), 'brown': (128, 94, 66), 'red': (150, 84, 80)}
TONE_JITTER = 12  # grey levels, each way
DIRECTIONS = {'up': (0, -1), 'right': (1, 0), 'down': (0, 1), 'left': (-1, 0)}  # image x, y
ANSWERS = {
    TargetKind.CARD: DIGITS,
    TargetKind.CUBE: tuple(COLOURS),
    TargetKind.DIAL: tuple(DIRECTIONS),
}
FRAME_SIZES = ((640, 480), (1280, 720))  # (width, height)
DIGIT_SHARE = 0.55  # a card's digit is this fraction of the card's height


@dataclass(frozen=True)
class Scene:
    """One frame and its question: the answer and where the target is."""

    image: np.ndarray  # (height, width, 3) uint8 RGB
    question: str
    answer: str
    kind: TargetKind
    box: Box  # the target's bounds, frame pixels
    size_px: int  # the target's longest side, frame pixels
    description: str  # the room: 'a <wall> wall and a <floor> floor'


def render_scene(
    seed: int, kind: TargetKind, size_px: int, frame_size: tuple[int, int] = (640, 480)
) -> Scene:
    """
    Return the scene of ``seed``: a ``frame_size`` (width, height) frame with one target.

    ``size_px``: the target's longest side in frame pixels (at least 6, at most a third of the
    frame's height). The answer, the target's place and the clutter come from ``seed``.
    """
    width, height = frame_size
    if not 6 <= size_px <= height // 3:
        raise ValueError(f'target size {size_px} px is outside 6..{height // 3} for {frame_size}')
    rng = np.random.default_rng(seed)
    wall, floor = (str(rng.choice(list(tones))) for tones in (WALLS, FLOORS))
    image = _background(rng, width, height, WALLS[wall], FLOORS[floor])
    _clutter(rng, image, count=int(rng.integers(8, 20)))
    answer = str(rng.choice(ANSWERS[kind]))
    target_w, target_h = _target_extent(kind, size_px)
    margin = 4
    x0 = int(rng.integers(margin, width - target_w - margin))
    y0 = int(rng.integers(margin, height - target_h - margin))
    box = Box(x0, y0, x0 + target_w, y0 + target_h)
    {TargetKind.CARD: _card, TargetKind.CUBE: _cube, TargetKind.DIAL: _dial}[kind](
        image, box, answer
    )
    description = f'a {wall} wall and a {floor} floor'
    return Scene(image, QUESTIONS[kind], answer, kind, box, size_px, description)


def window_box(rng: np.random.Generator, scene: Scene, side: int, holding: bool) -> Box:
    """Return a square window on ``scene``'s frame, ``side`` pixels, holding the target or not."""
    height, width = scene.image.shape[:2]
    box = scene.box
    x0 = _window_start(rng, width, side, (box.x0, box.x1) if holding else None)
    y0 = _window_start(rng, height, side, (box.y0, box.y1) if holding else None)
    return Box(x0, y0, x0 + side, y0 + side)


def random_window(rng: np.random.Generator, scene: Scene, side: int, holding: bool) -> np.ndarray:
    """Return the pixels of :func:`window_box` (a view of the frame)."""
    return crop(scene.image, window_box(rng, scene, side, holding))


def _window_start(rng, length: int, side: int, span: tuple[int, int] | None) -> int:
    """Return a window's start on an axis of ``length``: anywhere, or so it holds ``span``."""
    low, high = 0, length - side
    if span is not None:
        low, high = max(low, span[1] - side), min(high, span[0])
    return int(rng.integers(low, max(low, high) + 1))


def _target_extent(kind: TargetKind, size_px: int) -> tuple[int, int]:
    """Return a target's (width, height) in pixels: a card is upright, cubes and dials square."""
    if kind is TargetKind.CARD:
        return max(4, round(size_px * 0.72)), size_px
    return size_px, size_px


def _background(
    rng: np.random.Generator, width: int, height: int, wall: tuple, floor: tuple
) -> np.ndarray:
    """
    Return a floor-and-wall background: the two tones (RGB, shifted a little), a horizon, noise.

    The noise is the sum of a random byte's two nibbles, less 15: triangular, standard deviation
    6.5 grey levels, and cheap enough for a trainer that draws thousands of HD frames.
    """
    shift = rng.integers(-TONE_JITTER, TONE_JITTER + 1, (2, 3))
    wall, floor = np.asarray(wall) + shift[0], np.asarray(floor) + shift[1]
    horizon = int(rng.uniform(0.3, 0.6) * height)
    rows = np.arange(height)[:, None, None]
    tones = (np.where(rows < horizon, wall, floor) * (1.0 - 0.25 * rows / height)).astype(np.int16)
    noise = np.frombuffer(rng.bytes(height * width * 3), np.uint8).reshape(height, width, 3)
    image = (noise & 15).astype(np.int16) + (noise >> 4) - 15 + tones  # tones: (height, 1, 3)
    return image.clip(0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """
    Draw ``count`` distractors that are none of the target kinds, in muted colours.

    Muted: a grey level of 40 to 200 with each channel shifted by at most 25, so no distractor
    has a cube's saturated colour or a card's white.
    """
    height, width = image.shape[:2]
    scale = height / 480
    for _ in range(count):
        grey, tint = int(rng.integers(40, 201)), rng.integers(-25, 26, 3)
        colour = tuple(int(c) for c in (grey + tint).clip(0, 255))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.uniform(10, 70) * scale)
        shape = int(rng.integers(0, 4))
        if shape == 0:  # a triangle
            points = np.array([[x, y - size], [x - size, y + size], [x + size, y + size]])
            cv2.fillPoly(image, [points.astype(np.int32)], colour)
        elif shape == 1:  # a disc without a needle
            cv2.circle(image, (x, y), size // 2, colour, -1, cv2.LINE_AA)
        elif shape == 2:  # a long bar, never square
            angle = rng.uniform(0, math.pi)
            end = (int(x + 3 * size * math.cos(angle)), int(y + 3 * size * math.sin(angle)))
            cv2.line(image, (x, y), end, colour, max(2, size // 6), cv2.LINE_AA)
        else:  # scribbled strokes, like wires or text far away
            points = np.cumsum(rng.integers(-size // 2 - 1, size // 2 + 2, (6, 2)), axis=0)
            cv2.polylines(image, [(points + (x, y)).astype(np.int32)], False, colour, 1)


def _card(image: np.ndarray, box: Box, digit: str) -> None:
    """Draw a white label card with a dark border and ``digit`` in its middle (DIGIT_SHARE)."""
    cv2.rectangle(image, (box.x0, box.y0), (box.x1 - 1, box.y1 - 1), (245, 245, 240), -1)
    cv2.rectangle(image, (box.x0, box.y0), (box.x1 - 1, box.y1 - 1), (60, 60, 60), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), _ = cv2.getTextSize(digit, font, 1.0, 2)
    scale = DIGIT_SHARE * box.height / text_h
    thickness = max(1, round(scale * 2))
    (text_w, text_h), _ = cv2.getTextSize(digit, font, scale, thickness)
    origin = (box.x0 + (box.width - text_w) // 2, box.y0 + (box.height + text_h) // 2)
    cv2.putText(image, digit, origin, font, scale, (15, 15, 15), thickness, cv2.LINE_AA)


def _cube(image: np.ndarray, box: Box, colour_name: str) -> None:
    """Draw a cube seen from above the front: a front face, a lighter top, a darker side."""
    colour = np.array(COLOURS[colour_name], np.float64)
    depth = max(1, box.width // 4)
    face = Box(box.x0, box.y0 + depth, box.x1 - depth, box.y1)
    top = np.array(
        [
            [box.x0, face.y0],
            [box.x0 + depth, box.y0],
            [box.x1, box.y0],
            [face.x1, face.y0],
        ]
    )
    side = np.array(
        [[face.x1, face.y0], [box.x1, box.y0], [box.x1, box.y1 - depth], [face.x1, box.y1]]
    )

    def tone(factor: float) -> tuple[int, ...]:
        return tuple(int(c) for c in (colour * factor).clip(0, 255))

    cv2.fillPoly(image, [top.astype(np.int32)], tone(1.15))
    cv2.fillPoly(image, [side.astype(np.int32)], tone(0.65))
    cv2.rectangle(image, (face.x0, face.y0), (face.x1 - 1, face.y1 - 1), tone(1.0), -1)


def _dial(image: np.ndarray, box: Box, direction: str) -> None:
    """Draw a round gauge, light with a dark rim, and a red needle towards ``direction``."""
    centre = (box.x0 + box.width // 2, box.y0 + box.height // 2)
    radius = max(2, box.width // 2)
    cv2.circle(image, centre, radius, (235, 235, 225), -1, cv2.LINE_AA)
    cv2.circle(image, centre, radius, (40, 40, 40), max(1, radius // 8), cv2.LINE_AA)
    dx, dy = DIRECTIONS[direction]
    tip = (centre[0] + round(dx * radius * 0.8), centre[1] + round(dy * radius * 0.8))
    cv2.line(image, centre, tip, (200, 20, 20), max(1, radius // 5), cv2.LINE_AA)
    cv2.circle(image, centre, max(1, radius // 6), (40, 40, 40), -1, cv2.LINE_AA)
