"""
``vicrop-make-demo-bag``: a rosbag2 of synthetic head and wrist camera streams with small details.

The head camera (raw ``sensor_msgs/Image``, rgb8) pans over three spots of a cluttered room, each
with one small target: a card with a digit, a coloured cube, a dial; the wrist camera
(``sensor_msgs/CompressedImage``, JPEG) moves between a card and a cube. The scenes are those of
:mod:`vicrop_ros.evaluation.scenes`, the demo model's training distribution (but seeds it never
saw). A question script (YAML) for ``vicrop-replay`` is written beside the bag, each question
expecting the true answer and a crop that holds the target.
"""

import argparse
from dataclasses import dataclass
from functools import cache
import math
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
import yaml

from ..evaluation.scenes import Scene, TargetKind, render_scene
from .bags import typestore

HEAD_TOPIC = '/head_camera/image_raw'
WRIST_TOPIC = '/wrist_camera/image_raw/compressed'
START_NS = 1_700_000_000_000_000_000  # bag time of the first frame (2023-11-14 22:13:20 UTC)


@dataclass(frozen=True)
class View:
    """What a camera sees until ``until_s`` (bag seconds): one scene, asked about at ``ask_s``."""

    until_s: float
    ask_s: float
    question_id: str
    seed: int
    kind: TargetKind
    size_px: int  # the target's longest side at the reference frame size, pixels
    method: str | None = None  # the question's method; None: the node's default


# Each camera's views in turn (the last lasts to the end). Sizes are for 640x480 (head) and
# 1280x720 (wrist) and scale with the frame: too small to read in the whole frame at the demo
# model's 192 px input, readable in a crop.
HEAD_VIEWS = (
    View(0.75, 0.5, 'card', 101, TargetKind.CARD, 22),
    View(1.25, 1.0, 'cube', 102, TargetKind.CUBE, 12),
    View(math.inf, 1.5, 'dial', 103, TargetKind.DIAL, 24),
)
WRIST_VIEWS = (
    View(2.25, 2.0, 'wrist_card', 201, TargetKind.CARD, 40),
    View(math.inf, 2.5, 'wrist_cube', 202, TargetKind.CUBE, 20, method='grad_att'),
)
CAMERA_VIEWS = {'head': (HEAD_VIEWS, (640, 480)), 'wrist': (WRIST_VIEWS, (1280, 720))}
SWAY_PX = 3  # the sway's amplitude per 640 pixels of frame width


@cache
def view_scene(camera: str, view: View, frame_size: tuple[int, int]) -> Scene:
    """Return the scene of ``view`` rendered at ``frame_size`` (width, height)."""
    reference = CAMERA_VIEWS[camera][1]
    size = max(6, round(view.size_px * frame_size[1] / reference[1]))
    return render_scene(view.seed, view.kind, size, frame_size)


def view_at(camera: str, seconds: float) -> View:
    """Return the view ``camera`` shows ``seconds`` after the bag's start."""
    return next(v for v in CAMERA_VIEWS[camera][0] if seconds < v.until_s)


def camera_frame(camera: str, frame_size: tuple[int, int], index: int, rate_hz: float):
    """
    Return (HWC uint8 RGB frame, its scene) of ``camera`` for frame ``index``.

    A slow sway of a few pixels (the robot is never quite still) makes consecutive frames
    differ; the target moves with it, so the scene's box is off by at most that much.
    """
    scene = view_scene(camera, view_at(camera, index / rate_hz), frame_size)
    shift = round(_sway(frame_size) * math.sin(index / 15))
    return np.roll(scene.image, shift, axis=1), scene


def _sway(frame_size: tuple[int, int]) -> int:
    """Return the sway's amplitude in pixels for a frame of ``frame_size`` (width, height)."""
    return round(SWAY_PX * frame_size[0] / 640)


def questions(frame_sizes: dict[str, tuple[int, int]], seconds: float) -> list[dict]:
    """Return the script's questions: each view's, with its answer and target region."""
    entries = []
    for camera, (views, _) in CAMERA_VIEWS.items():
        for view in views:
            if view.ask_s >= seconds:
                continue
            scene = view_scene(camera, view, frame_sizes[camera])
            entry = {'at': view.ask_s, 'id': view.question_id, 'camera': camera,
                     'question': scene.question}  # fmt: skip
            if view.method:
                entry['method'] = view.method
            box, sway = scene.box, _sway(frame_sizes[camera])
            region = [max(0, box.x0 - sway), box.y0, min(frame_sizes[camera][0], box.x1 + sway),
                      box.y1]  # fmt: skip
            entry['expect'] = {'answer': scene.answer, 'region': region}
            entries.append(entry)
    return sorted(entries, key=lambda e: e['at'])


def write_demo_bag(
    out_dir: Path,
    seconds: float = 3.0,
    rate_hz: float = 30.0,
    head_size: tuple[int, int] = (640, 480),
    wrist_size: tuple[int, int] = (1280, 720),
    storage: str = 'mcap',
    bag_offset_s: float = 0.0,
    expectations: bool = True,
) -> tuple[Path, Path]:
    """
    Write the bag to ``out_dir/bag`` and the question script to ``out_dir/questions.yaml``.

    ``bag_offset_s``: bag time minus header stamps (a recorder whose clock differs from the
    cameras'); 0 records each message at its header stamp. ``expectations``: each question
    expects the true answer and a crop holding the target (False: only exactly one OK answer,
    for models that cannot read, such as the random test models).
    """
    store = typestore()
    image_type = store.types['sensor_msgs/msg/Image']
    compressed_type = store.types['sensor_msgs/msg/CompressedImage']
    header_type = store.types['std_msgs/msg/Header']
    time_type = store.types['builtin_interfaces/msg/Time']
    out_dir.mkdir(parents=True, exist_ok=True)
    bag_path = out_dir / 'bag'
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(bag_path, version=9, storage_plugin=plugin) as writer:
        head = writer.add_connection(HEAD_TOPIC, 'sensor_msgs/msg/Image', typestore=store)
        wrist = writer.add_connection(
            WRIST_TOPIC, 'sensor_msgs/msg/CompressedImage', typestore=store
        )
        for index in range(int(seconds * rate_hz)):
            stamp_ns = START_NS + int(index * 1e9 / rate_hz)
            stamp = time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
            rgb, _ = camera_frame('head', head_size, index, rate_hz)
            message = image_type(
                header=header_type(stamp=stamp, frame_id='head_camera_optical'),
                height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', is_bigendian=0,
                step=rgb.shape[1] * 3, data=rgb.reshape(-1),
            )  # fmt: skip
            bag_ns = stamp_ns + int(bag_offset_s * 1e9)
            writer.write(head, bag_ns, store.serialize_cdr(message, image_type.__msgtype__))
            wrist_rgb, _ = camera_frame('wrist', wrist_size, index, rate_hz)
            jpeg = cv2.imencode('.jpg', cv2.cvtColor(wrist_rgb, cv2.COLOR_RGB2BGR))[1]
            message = compressed_type(
                header=header_type(stamp=stamp, frame_id='wrist_camera_optical'),
                format='jpeg', data=jpeg.reshape(-1),
            )  # fmt: skip
            writer.write(wrist, bag_ns, store.serialize_cdr(message, compressed_type.__msgtype__))
    asked = questions({'head': head_size, 'wrist': wrist_size}, seconds)
    if not expectations:
        asked = [{k: v for k, v in entry.items() if k != 'expect'} for entry in asked]
    script = out_dir / 'questions.yaml'
    script.write_text(
        '# Questions for vicrop-replay: at = seconds after the first message of the bag.\n'
        + yaml.safe_dump({'questions': asked}, sort_keys=False)
    )
    return bag_path, script


def main(argv: list[str] | None = None) -> int:
    """Write the demo bag and its question script."""
    parser = argparse.ArgumentParser(
        prog='vicrop-make-demo-bag', description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument('out', help='directory to write (bag/ and questions.yaml)')
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--rate', type=float, default=30.0, help='frames per second per camera')
    parser.add_argument('--head-size', default='640x480', help='WIDTHxHEIGHT of the head camera')
    parser.add_argument(
        '--wrist-size', default='1280x720', help='WIDTHxHEIGHT of the wrist camera'
    )
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    args = parser.parse_args(argv)

    def size(text: str) -> tuple[int, int]:
        width, height = text.lower().split('x')
        return int(width), int(height)

    bag, script = write_demo_bag(
        Path(args.out), args.seconds, args.rate, size(args.head_size), size(args.wrist_size),
        args.storage,
    )  # fmt: skip
    print(f'bag: {bag}\nquestions: {script}')
    return 0
